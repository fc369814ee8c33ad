"""``qt`` for the module's Logic: a ``QTimer`` and the constants ``slicer.util`` refers to.

Stands for Qt's timer as the job launcher uses it: ``setInterval``, ``timeout.connect``, ``start``, ``stop``,
``isActive``. Qt fires an active timer from its event loop once its interval has passed; here the event loop is
``slicer.app.processEvents()`` (:mod:`.application`), which calls :func:`fire_due_timers`, so a test drives a
background job exactly as Slicer's GUI does, by processing events until the job is done.
"""

from __future__ import annotations

import time
import weakref
from types import SimpleNamespace

_active: "weakref.WeakSet[QTimer]" = weakref.WeakSet()


class _Signal:
    """A Qt signal: ``connect`` a slot, ``emit`` calls the slots in order."""

    def __init__(self) -> None:
        self._slots: list = []

    def connect(self, slot) -> None:
        self._slots.append(slot)

    def disconnect(self, slot=None) -> None:
        self._slots = [] if slot is None else [s for s in self._slots if s is not slot]

    def emit(self, *args) -> None:
        for slot in list(self._slots):
            slot(*args)


class QTimer:
    """Repeating timer (Qt's default, ``singleShot`` false) with an interval in milliseconds."""

    def __init__(self, parent=None) -> None:
        self.timeout = _Signal()
        self._interval_s = 0.0
        self._due = 0.0
        self.singleShot_ = False

    def setInterval(self, msec: int) -> None:
        self._interval_s = msec / 1000.0

    def interval(self) -> int:
        return int(self._interval_s * 1000)

    def start(self, msec: int | None = None) -> None:
        if msec is not None:
            self.setInterval(msec)
        self._due = time.monotonic() + self._interval_s
        _active.add(self)

    def stop(self) -> None:
        _active.discard(self)

    def isActive(self) -> bool:
        return self in _active

    @staticmethod
    def singleShot(msec: int, slot) -> None:
        timer = QTimer()
        timer.singleShot_ = True
        timer.timeout.connect(slot)
        _keep.add(timer)
        timer.start(msec)


_keep: set = set()  # single-shot timers have no owner; Qt keeps them alive until they fire


def fire_due_timers() -> int:
    """Fire every active timer whose interval has passed (what Qt's event loop does); the number fired."""
    now, fired = time.monotonic(), 0
    for timer in list(_active):
        if timer.isActive() and now >= timer._due:
            timer._due = now + timer._interval_s
            if timer.singleShot_:
                timer.stop()
                _keep.discard(timer)
            timer.timeout.emit()
            fired += 1
    return fired


# the constants slicer.util names on its paths that the Logic reaches (message boxes in testing mode, wait cursor)
Qt = SimpleNamespace(WaitCursor=3, ArrowCursor=0)
QMessageBox = SimpleNamespace(Ok=0x400, Cancel=0x400000, Yes=0x4000, No=0x10000, NoButton=0, Critical=3, Question=4,
                              Warning=2, Information=1)
