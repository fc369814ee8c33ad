"""Result folders of the commands: their file names, checked, built beside their target and swapped in whole;
`summary.json` writing; and the one naming rule of an atlas (:func:`atlas_stem`).
"""

from __future__ import annotations

import json
import math
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from .atomic import staged_folder, write_text_atomic
from .errors import DiffDefInputError
from .provenance import environment_info


#: Every result folder of the library holds this file; ``--overwrite`` replaces only folders that do.
SUMMARY_NAME = "summary.json"

#: The files of an atlas folder (``generate``; each step of a ``sweep`` holds ``atlas`` and ``labels``), by key.
ATLAS_FILES = {
    "atlas": "atlas.nii.gz",
    "labels": "labels.nii.gz",
    "displacement": "displacement.nii.gz",
    "displacement_itk": "displacement_itk.nii.gz",
    "jacobian": "jacobian.nii.gz",
    "folding": "folding.nii.gz",
    "preview": "preview.png",
    "displacement_mean": "displacement_mean.nii.gz",
    "displacement_std": "displacement_std.nii.gz",
    "summary": SUMMARY_NAME,
}
#: The files of a registration folder (``register``); ``lambda`` and ``labels`` only when there is one.
REGISTER_FILES = {
    "warped": "warped.nii.gz",
    "displacement": "displacement.nii.gz",
    "displacement_itk": "displacement_itk.nii.gz",
    "jacobian": "jacobian.nii.gz",
    "lambda": "lambda.nii.gz",
    "labels": "labels.nii.gz",
    "summary": SUMMARY_NAME,
}
#: The files of a ``sweep`` folder besides one atlas folder per step.
SWEEP_FILES = {"montage": "montage.png", "gif": "sweep.gif", "volumes": "volumes.csv", "summary": SUMMARY_NAME}
#: The Slicer export writes ``<stem><suffix>`` into a folder the user chose.
EXPORT_SUFFIXES = {
    "atlas": "_atlas.nii.gz",
    "labels": "_labels.nii.gz",
    "displacement": "_displacement.nii.gz",
    "jacobian": "_jacobian.nii.gz",
    "folding": "_folding.nii.gz",
    "summary": "_summary.json",
}


def format_number(value: float | None) -> str:
    """Short text for a number: ``72`` not ``72.0``, ``0.25`` as is."""
    if value is None:
        return "?"
    value = float(value)
    return str(int(round(value))) if abs(value - round(value)) < 1e-9 else f"{value:g}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(text)).strip("-") or "x"


def seed_with_effect(seed: Any, summary: Mapping[str, Any] | None) -> int | None:
    """``seed`` when it changed the atlas (a draw at temperature above 0), else ``None``: at temperature 0 every
    seed gives the same atlas, so names leave it out.

    Example:
        >>> seed_with_effect(3, {"temperature": 0.0}), seed_with_effect(3, {"temperature": 1.0})
        (None, 3)
    """
    try:
        temperature = float((summary or {}).get("temperature") or 0.0)
        return int(seed) if temperature > 0 else None
    except (TypeError, ValueError):
        return None


def atlas_stem(model: str, conditions: Mapping[str, Any], seed: int | None = None) -> str:
    """The one naming rule of an atlas: model, conditions (sorted) and, when it has an effect, the seed (see
    :func:`seed_with_effect`); safe on every file system. Export file stems and Slicer node names both use it.

    Example:
        >>> atlas_stem("brain3d", {"sex": "F", "age": 72.0}), atlas_stem("brain3d", {"age": 72.0}, seed=3)
        ('brain3d_age-72_sex-F', 'brain3d_age-72_seed-3')
    """
    parts = [_slug(model)]
    for name in sorted(conditions):
        value = conditions[name]
        text = format_number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        parts.append(f"{_slug(name)}-{_slug(text)}")
    if seed is not None:
        parts.append(f"seed-{int(seed)}")
    return "_".join(parts)


def check_output_dir(path: str | Path, overwrite: bool = False, *, whole: bool = True) -> Path:
    """Refuse an output path that is a file, or a non-empty folder without ``overwrite``; create nothing.

    With ``overwrite`` a non-empty folder is replaced as a whole when the new result is complete, so it must be a
    result folder of this tool (it holds ``summary.json``): a folder of other files is never replaced.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DiffDefInputError(f"{path}: output path exists and is not a folder")
    above = next(parent for parent in path.absolute().parents if parent.exists())
    if not above.is_dir():
        raise DiffDefInputError(f"{path}: {above} is a file, not a folder; choose another --out")
    if not os.access(above, os.W_OK | os.X_OK):
        raise DiffDefInputError(f"{path}: cannot create files in {above} (permission denied); choose another --out")
    _check_name_length(path, above)
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise DiffDefInputError(f"{path}: output folder is not empty; pass --overwrite to replace it")
        if whole and not (path / SUMMARY_NAME).is_file():
            raise DiffDefInputError(
                f"{path}: --overwrite replaces a whole result folder, and this one has no {SUMMARY_NAME} "
                "(it is not a diffdef-atlas result); choose another --out"
            )
    return path


def _check_name_length(path: Path, above: Path) -> None:
    """Refuse an output folder whose name is too long for the file system once the staging marks are added
    (``.NAME.partial-PID.XXXXXX``, ``.NAME.replaced-PID.XXXXXX``): it would fail only after the computation."""
    try:
        limit = int(os.pathconf(above, "PC_NAME_MAX"))
    except (OSError, ValueError):
        limit = 255
    extra = len(os.fsencode(f"..replaced-{os.getpid()}.ffffff"))
    length = len(os.fsencode(path.absolute().name))
    if length + extra > limit:
        raise DiffDefInputError(f"{path}: the output folder's name is {length} bytes long; at most {limit - extra} are allowed here")


@contextmanager
def result_folder(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Check ``path`` (:func:`check_output_dir`), then yield a staging folder beside it that replaces it as a whole
    once the block completes (:func:`~DiffDefAtlasLib.atomic.staged_folder`). An interrupted or failed run leaves
    the previous result as it was."""
    target = check_output_dir(path, overwrite)
    with staged_folder(target) as staging:
        yield staging


def prepare_output_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Create the output folder of a command that writes file by file: with ``overwrite`` its files replace those
    of the same name, one atomic rename at a time (``evaluate``, whose tables are resumable)."""
    path = check_output_dir(path, overwrite, whole=False)
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
