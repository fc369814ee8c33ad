"""The user cache folder for fitted fields (never inside the repository).

``DIFFDEF_ATLAS_CACHE`` overrides the default ``~/.cache/diffdef-atlas`` (``$XDG_CACHE_HOME/diffdef-atlas`` when set).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: ``cache_dir`` when given, else ``DIFFDEF_ATLAS_CACHE``, else ``~/.cache/diffdef-atlas``.

    Example:
        >>> cache_root("my_cache").name
        'my_cache'
    """
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("DIFFDEF_ATLAS_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "diffdef-atlas"


def settings_key(settings: dict) -> str:
    """A short stable hash of JSON-serialisable settings (used in cache file names).

    Example:
        >>> settings_key({"a": 1}) == settings_key({"a": 1})
        True
    """
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
