"""The module panel's Qt widgets, for tests of the widget's slots (slicer-core has no Qt).

Stands for what ``slicer.util.loadUI(path)`` and ``slicer.util.childWidgetVariables(widget)`` give the module in
Slicer: one object per named widget of the Qt Designer file, reached as ``ui.<objectName>``, with the Qt properties
PythonQt exposes as attributes (``text``, ``enabled``, ``visible``, ``checked``, ``value``, ``toolTip``...) and the
few methods and signals the slots use. What it reproduces of Qt:

- ``connect("clicked(bool)", slot)`` connects a slot to a signal by its signature; a signal calls its slots in order,
  unless ``blockSignals(True)`` is in force (which returns the previous state); as PythonQt does
  (``PythonQtSignalTarget::call``), a Python slot gets only as many of the signal's arguments as it accepts;
- ``QComboBox``: ``addItem(text, data)`` on an empty box makes item 0 current and emits ``currentIndexChanged(int)``;
  ``setCurrentIndex`` emits only when the index changes; ``clear()`` of a non-empty box emits it with -1;
  ``findData`` / ``findText`` give -1 when absent; ``currentData`` / ``currentText`` of no item are None / "";
  setting ``currentText`` selects the matching item;
- a push button's ``click()`` emits ``clicked(bool)``; setting a check box's ``checked`` emits ``toggled(bool)``
  when it changes;
- layouts (``QHBoxLayout(parent)`` sets the parent's layout, ``QFormLayout.addRow``, ``count``, ``takeAt``).

Nothing is drawn and nothing is sized: what the tests check is what the slots write into the widgets and which
Logic calls they make. :func:`qt_classes` gives the widget classes ``DiffDefAtlasModuleLib/ConditionPanel.py``
creates (``qt.QWidget``...), for a test to set on the :mod:`.qt` shim.
"""

from __future__ import annotations

import inspect
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from types import SimpleNamespace


class Widget:
    """Any Qt widget of the panel (the class name is kept in ``className``)."""

    def __init__(self, *args, objectName: str = "", className: str = "QWidget") -> None:
        self.objectName, self.className = objectName, className
        self.text, self.toolTip = "", ""
        self.enabled, self.visible = True, True
        self.value, self.minimum, self.maximum, self.decimals = 0.0, 0.0, 99.0, 2
        self.singleStep, self.tracking, self.directory = 1.0, True, ""
        self.scene = None
        self._checked = False
        self._items: list[tuple[str, object]] = []
        self._current = -1
        self._layout: Layout | None = None
        self._blocked = False
        self._slots: dict[str, list] = {}

    # signals
    def connect(self, signature: str, slot) -> None:
        self._slots.setdefault(signature, []).append(slot)

    def emit(self, signature: str, *args) -> None:
        if not self._blocked:
            for slot in list(self._slots.get(signature, [])):
                slot(*args[:_accepted(slot, len(args))])

    def blockSignals(self, block: bool) -> bool:
        previous, self._blocked = self._blocked, bool(block)
        return previous

    def click(self) -> None:
        if self.enabled:
            self.emit("clicked(bool)", False)

    # check box
    @property
    def checked(self) -> bool:
        return self._checked

    @checked.setter
    def checked(self, value: bool) -> None:
        if bool(value) != self._checked:
            self._checked = bool(value)
            self.emit("toggled(bool)", self._checked)

    # combo box
    def clear(self) -> None:
        had = bool(self._items)
        self._items, self._current = [], -1
        if had:
            self.emit("currentIndexChanged(int)", -1)

    def addItem(self, text: str, data=None) -> None:
        self._items.append((str(text), data))
        if self._current == -1:
            self.setCurrentIndex(0)

    def count(self) -> int:
        return len(self._items)

    def findData(self, data) -> int:
        return next((i for i, (_, d) in enumerate(self._items) if d == data), -1)

    def findText(self, text: str) -> int:
        return next((i for i, (t, _) in enumerate(self._items) if t == text), -1)

    def setCurrentIndex(self, index: int) -> None:
        index = int(index) if 0 <= int(index) < len(self._items) else -1
        if index != self._current:
            self._current = index
            self.emit("currentIndexChanged(int)", index)

    @property
    def currentIndex(self) -> int:
        return self._current

    @property
    def currentData(self):
        return self._items[self._current][1] if self._current >= 0 else None

    @property
    def currentText(self) -> str:
        return self._items[self._current][0] if self._current >= 0 else ""

    @currentText.setter
    def currentText(self, text: str) -> None:
        if self.findText(text) >= 0:
            self.setCurrentIndex(self.findText(text))

    # spin boxes
    def setRange(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum

    # containers
    def layout(self) -> "Layout":
        if self._layout is None:
            self._layout = Layout(self)
        return self._layout

    def setMRMLScene(self, scene) -> None:
        self.scene = scene

    def deleteLater(self) -> None:
        self.visible = False


def _accepted(slot, available: int) -> int:
    """How many positional arguments ``slot`` takes, at most ``available``."""
    parameters = inspect.signature(slot).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return available
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return min(available, len(positional))


class Layout:
    """A Qt layout: the widgets added, in order (``addRow(label, widget)`` adds the widget)."""

    def __init__(self, parent: Widget | None = None) -> None:
        self.items: list[Widget] = []
        if parent is not None:
            parent._layout = self

    def addWidget(self, widget: Widget, *args) -> None:
        self.items.append(widget)

    def addRow(self, label, widget: Widget) -> None:
        self.items.append(widget)

    def setContentsMargins(self, *margins) -> None:
        pass

    def count(self) -> int:
        return len(self.items)

    def takeAt(self, index: int):
        widget = self.items.pop(index)
        return SimpleNamespace(widget=lambda: widget)


def designer_widgets(ui_file: Path) -> tuple[Widget, SimpleNamespace]:
    """The top widget of a Qt Designer file and ``childWidgetVariables`` of it: every named ``<widget>``."""
    root = ElementTree.parse(ui_file).getroot()
    widgets = [Widget(objectName=w.get("name", ""), className=w.get("class", "")) for w in root.iter("widget")]
    top = widgets[0]
    return top, SimpleNamespace(**{w.objectName: w for w in widgets[1:] if w.objectName})


def qt_classes() -> dict:
    """The ``qt`` / ``ctk`` widget classes the condition panel creates, all :class:`Widget` or :class:`Layout`."""

    def widget_class(name: str):
        return type(name, (Widget,), {"__init__": lambda self, *args: Widget.__init__(self, className=name)})

    classes = {name: widget_class(name) for name in ("QWidget", "QCheckBox", "QLabel", "QComboBox", "ctkSliderWidget")}
    classes["QHBoxLayout"] = Layout
    return classes
