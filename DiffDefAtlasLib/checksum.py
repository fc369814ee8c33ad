"""SHA-256 checksums of files (model cards, caches)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file's bytes, read in chunks.

    Example:
        >>> file_sha256(__file__) == file_sha256(__file__)
        True
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str | None, what: str = "file") -> Path:
    """Refuse a missing file, a card without a checksum, or a file whose SHA-256 differs from ``expected``.

    Raises :class:`~DiffDefAtlasLib.errors.DiffDefInputError` naming the file; ``what`` says what it is
    (e.g. "weights of model 'brain3d'").

    Example:
        >>> verify_sha256(__file__, file_sha256(__file__)).name
        'checksum.py'
    """
    from .errors import DiffDefInputError

    path = Path(path)
    if not path.is_file():
        raise DiffDefInputError(f"{path}: {what} not found")
    if not expected:
        raise DiffDefInputError(f"{path}: the card holds no sha256 for this {what}, so it cannot be verified")
    found = file_sha256(path)
    if found != expected:
        raise DiffDefInputError(f"{path}: checksum mismatch (sha256 expected {expected[:12]}..., found {found[:12]}...); the {what} is damaged or altered")
    return path
