"""Progress, one protocol: every long step takes a ``progress(fraction, message)`` callback; the command line wraps
it, printing ``PROGRESS <fraction> <message>`` lines for a parent process that asked for them (the Slicer module
sets :data:`PROGRESS_ENV`) and plain lines for a person otherwise. The parent reads fractions, never wording, so
rewording a message cannot break a progress bar.

Example:
    >>> format_progress(0.42, "refining")
    'PROGRESS 0.420 refining'
    >>> parse_progress("PROGRESS 0.420 refining")
    Progress(fraction=0.42, message='refining')
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable, Mapping

#: A long step's progress callback: ``progress(fraction in [0, 1], message)``.
ProgressCallback = Callable[[float, str], None]

PROGRESS_PREFIX = "PROGRESS"
#: Set (to "1") in a child's environment by :func:`library_environment`: the command line then prints progress lines.
PROGRESS_ENV = "DIFFDEF_ATLAS_PROGRESS_LINES"

@dataclass(frozen=True)
class Progress:
    """One parsed progress report: ``fraction`` in [0, 1] and an optional free-text ``message``."""

    fraction: float
    message: str = ""


def format_progress(fraction: float, message: str = "") -> str:
    """The progress line a child process prints (and flushes) so the Slicer module can show a progress bar.

    Example:
        >>> format_progress(1.5)
        'PROGRESS 1.000'
    """
    fraction = min(1.0, max(0.0, float(fraction)))
    line = f"{PROGRESS_PREFIX} {fraction:.3f}"
    message = " ".join(str(message).split())
    return f"{line} {message}" if message else line


def parse_progress(line: str) -> Progress | None:
    """Parse a ``PROGRESS <fraction> [message]`` line; any other line (log output) gives ``None``.

    Fractions are clamped to [0, 1]; a malformed number gives ``None`` rather than an error, because the line may be
    ordinary log text that happens to start with the word.

    Example:
        >>> parse_progress("PROGRESS 0.5")
        Progress(fraction=0.5, message='')
        >>> parse_progress("loading model") is None
        True
    """
    parts = line.strip().split(maxsplit=2)
    if len(parts) < 2 or parts[0] != PROGRESS_PREFIX:
        return None
    try:
        fraction = float(parts[1])
    except ValueError:
        return None
    if fraction != fraction:  # NaN
        return None
    return Progress(min(1.0, max(0.0, fraction)), parts[2] if len(parts) > 2 else "")


def progress_reporter(stream=None, environ: Mapping[str, str] | None = None) -> Callable[..., None] | None:
    """For the command line: a ``progress(fraction, message="")`` callback that prints progress lines to ``stream``
    (default stdout, flushed), or ``None`` unless the parent process asked for them through :data:`PROGRESS_ENV`.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> progress_reporter(out, {PROGRESS_ENV: "1"})(0.5, "warping")
        >>> out.getvalue().splitlines()
        ['PROGRESS 0.500 warping']
    """
    environ = os.environ if environ is None else environ
    if environ.get(PROGRESS_ENV, "") in ("", "0"):
        return None

    def report(fraction: float, message: str = "") -> None:
        target = stream if stream is not None else sys.stdout
        target.write(format_progress(fraction, message) + "\n")
        target.flush()

    return report


def command_progress(stream=None, environ: Mapping[str, str] | None = None) -> ProgressCallback:
    """The command line's progress callback: ``PROGRESS`` lines when the parent process asked for them
    (:func:`progress_reporter`), otherwise one plain line per report (``  42% affine alignment``) on ``stream``
    (default stdout).

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> command_progress(out, {})(0.42, "affine alignment")
        >>> out.getvalue()
        '  42% affine alignment\n'
    """
    lines = progress_reporter(stream, environ)
    if lines is not None:
        return lines

    def plain(fraction: float, message: str = "") -> None:
        target = stream if stream is not None else sys.stdout
        target.write(f"{min(1.0, max(0.0, float(fraction))):5.0%} {message}".rstrip() + "\n")
        target.flush()

    return plain
