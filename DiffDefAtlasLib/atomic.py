"""Atomic file writing: write to a temporary file in the same folder, then rename over the target."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _suffix(path: Path) -> str:
    """Full suffix such as ``.nii.gz`` (file formats are chosen by it)."""
    return "".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename, on error it is removed.

    An interrupted run therefore never leaves a truncated file under the final name.

    Example:
        >>> with atomic_path("out.txt") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("done")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{_suffix(path)}", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
