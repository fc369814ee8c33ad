"""Show a slot's error to the user and let the slot go on to report it."""

import logging

import slicer


class ErrorDisplay:
    """Context manager for the widget's slots: ``with ErrorDisplay(message) as outcome: ...``, then ``outcome.failed``.

    ``slicer.util.tryWithErrorDisplay`` shows the error (a message box with the traceback, or only the log in testing
    mode) and then re-raises it (Slicer's ``Base/Python/slicer/util.py``), so in a slot nothing after the failed step
    runs: a status line stays at "Generating...", and an error in ``setup()`` stops the module panel from being built.
    This shows the error the same way, logs it, and swallows it, so the slot can say what failed.
    """

    def __init__(self, message: str, waitCursor: bool = True) -> None:
        self.message = message
        self.waitCursor = waitCursor
        self.failed = False
        self.error = None
        self._display = None

    def __enter__(self) -> "ErrorDisplay":
        self._display = slicer.util.tryWithErrorDisplay(self.message, waitCursor=self.waitCursor)
        self._display.__enter__()
        return self

    def __exit__(self, excType, excValue, traceback) -> bool:
        if excType is None:
            self._display.__exit__(None, None, None)
            return False
        if not issubclass(excType, Exception):  # KeyboardInterrupt, SystemExit: not ours to swallow
            return False
        try:
            self._display.__exit__(excType, excValue, traceback)
        except Exception:  # tryWithErrorDisplay re-raises what it has shown
            pass
        self.failed, self.error = True, excValue
        logging.error(f"{self.message} {excValue}", exc_info=(excType, excValue, traceback))
        return True
