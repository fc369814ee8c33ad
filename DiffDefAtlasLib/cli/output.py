"""Output folders and ``summary.json`` files shared by the subcommands."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..atomic import write_text_atomic
from ..errors import DiffDefInputError
from ..provenance import environment_info


def prepare_output_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Create the output folder; refuse a non-empty existing one unless ``overwrite`` is set.

    Nothing is deleted: with ``overwrite`` the files of the new run replace those of the same name, one atomic
    rename at a time.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DiffDefInputError(f"{path}: output path exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise DiffDefInputError(f"{path}: output folder is not empty; pass --overwrite to replace its files")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_summary(path: str | Path, summary: dict, device: str | None = None) -> dict:
    """Add provenance (versions, device, peak RSS) to ``summary`` and write it atomically as strict JSON.

    NaN and infinite numbers become ``null`` (JSON has no NaN).

    Example:
        >>> write_summary("out/summary.json", {"dice": float("nan")}, device="cpu")["dice"] is None  # doctest: +SKIP
        True
    """
    full = _strict(dict(summary))
    full["environment"] = environment_info(device)
    write_text_atomic(path, json.dumps(full, indent=2, sort_keys=False, allow_nan=False) + "\n")
    return full


def _strict(value):
    """``value`` with numpy types, paths and tuples made JSON-ready and non-finite floats replaced by ``None``."""
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _strict(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"summary value not JSON serialisable: {type(value).__name__}")


def format_summary(summary: dict, indent: str = "  ") -> str:
    """Human-readable lines for the scalar entries of a summary."""
    lines = []
    for key, value in summary.items():
        if isinstance(value, float):
            lines.append(f"{indent}{key}: {value:.6g}")
        elif isinstance(value, (int, str)):
            lines.append(f"{indent}{key}: {value}")
    return "\n".join(lines)
