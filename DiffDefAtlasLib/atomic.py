"""Atomic file writing: write to a temporary file in the same folder, then rename over the target."""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _suffix(path: Path) -> str:
    """Full suffix such as ``.nii.gz`` (file formats are chosen by it)."""
    return "".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix


def _create_temporary(path: Path) -> Path:
    """Create an empty, uniquely named temporary file beside ``path``.

    It is opened with mode 0o666 so that the user's umask applies, as for any file the user creates (``mkstemp``
    would make every output readable by its owner only).
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.part{_suffix(path)}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path.parent}: cannot create a temporary file for {path.name}")


def _flush_to_disk(path: Path) -> None:
    """fsync a finished temporary file, so that after a power cut the renamed file holds its full content."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:  # some file systems do not support it
        pass
    finally:
        os.close(handle)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename, on error it is removed.

    An interrupted run therefore never leaves a truncated file under the final name, and a previous file of that
    name stays intact until the new one is complete.

    Example:
        >>> with atomic_path("out.txt") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("done")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        yield tmp
        _flush_to_disk(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
