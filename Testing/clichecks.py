"""Assertions on what a command printed, shared by the command-line tests."""

from __future__ import annotations


def one_error_line(capsys, code: int, *needles: str, status: int | None = None) -> str:
    """Assert a failed run (status != 0, or exactly ``status``) that printed exactly one stderr line holding every
    needle and no traceback; return the line."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 if status is None else code == status, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def installed_command() -> str | None:
    """The ``diffdef-atlas`` console script of the running interpreter's environment (the one ``pip install -e .``
    put beside ``python``, found even when the venv is not activated), else the one on ``PATH``, else None."""
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "diffdef-atlas"
    return str(beside) if beside.is_file() else shutil.which("diffdef-atlas")
