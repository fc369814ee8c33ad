"""Model bundles, one format: a folder with ``model_card.json`` (what the model is, its data and metrics) and a
safetensors weights file that the card's ``weights`` entry describes as ``{"file", "sha256", "bytes"}``.

The generator (:mod:`DiffDefAtlasLib.generate.model_card`), the registration network
(:mod:`DiffDefAtlasLib.register.weights`) and the population model (:mod:`DiffDefAtlasLib.population.model`) read
and write their cards here: :func:`weights_entry` records a weights file, :func:`verified_weights` checks it
(present, the recorded size, the recorded SHA-256) before anything loads it. A card that is missing, not JSON or
not an object is refused with its file and the parse error.

Example:
    >>> card = read_card("Resources/models/brain3d")  # doctest: +SKIP
    >>> card["model_type"]  # doctest: +SKIP
    'diffdef-generator'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic
from .checksum import file_sha256, verify_sha256
from .errors import DiffDefInputError

#: The card's file name in every model folder.
CARD_FILE = "model_card.json"

__all__ = ["CARD_FILE", "card_path", "file_sha256", "read_card", "verified_weights", "verify_sha256", "weights_entry", "write_card"]


def card_path(folder_or_file: str | Path) -> Path:
    """``model_card.json`` of a model folder, or the card file itself."""
    path = Path(folder_or_file)
    return path / CARD_FILE if path.is_dir() or not path.suffix else path


def read_card(folder_or_file: str | Path, what: str = "model card") -> dict[str, Any]:
    """The parsed card of a model folder (or card file); a missing file, invalid JSON or a non-object is a
    :class:`~DiffDefAtlasLib.errors.DiffDefInputError` naming the file (``what`` says which kind of card)."""
    path = card_path(folder_or_file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DiffDefInputError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DiffDefInputError(f"{path}: cannot read the {what} ({error})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DiffDefInputError(f"{path}: the {what} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise DiffDefInputError(f"{path}: the {what} must be a JSON object, found {type(data).__name__}")
    return data


def write_card(folder: str | Path, card: dict[str, Any], indent: int = 2) -> Path:
    """Write ``card`` as ``model_card.json`` into ``folder``, atomically."""
    path = Path(folder) / CARD_FILE
    write_text_atomic(path, json.dumps(card, indent=indent) + "\n")
    return path


def weights_entry(path: str | Path) -> dict[str, Any]:
    """The card's ``weights`` entry for the weights file at ``path``: its name (beside the card), SHA-256 and size."""
    path = Path(path)
    return {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size}


def verified_weights(folder: str | Path, card: dict[str, Any], what: str = "weights") -> Path:
    """The weights file that ``card["weights"]`` names in ``folder``, after checking it.

    A card without a ``weights`` object, a missing file, a size other than the recorded ``bytes`` (a truncated
    copy) or a SHA-256 other than the recorded one is a :class:`~DiffDefAtlasLib.errors.DiffDefInputError` naming
    the file; ``what`` says whose weights they are (e.g. "weights of model 'brain3d'").
    """
    entry = card.get("weights")
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise DiffDefInputError(f"{card_path(folder)}: the card has no weights entry {{\"file\", \"sha256\", \"bytes\"}} for its {what}")
    path = Path(folder) / entry["file"]
    if not path.is_file():
        raise DiffDefInputError(f"{path}: {what} not found")
    size, recorded = path.stat().st_size, entry.get("bytes")
    if recorded is not None and (not isinstance(recorded, int) or isinstance(recorded, bool) or size != recorded):
        raise DiffDefInputError(f"{path}: expected {entry['bytes']} bytes, found {size} (truncated or replaced file)")
    return verify_sha256(path, entry.get("sha256"), what)
