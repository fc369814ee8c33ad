"""Bundled generators: finding them, verifying and loading their weights, and the one-call :func:`generate_atlas`.

Models live in ``Resources/models/<name>/`` as ``model_card.json`` + ``model.safetensors`` (no pickle). The weights'
sha256 is checked against the card at every load.

Example:
    >>> [card.name for card in list_models()]  # doctest: +SKIP
    ['brain3d', 'oasis2d']
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..atomic import atomic_path
from ..bundles import file_sha256, weights_entry
from ..errors import DiffDefInputError
from ..resources import resources_dir
from .atlas import AtlasResult, Generator
from .model_card import CARD_FILE, ModelCard, is_generator_card, verify_weights
from .networks import build_generator_network

WEIGHTS_FILE = "model.safetensors"


def models_dir() -> Path:
    """``Resources/models``: the folder of the bundled generators."""
    return resources_dir() / "models"


def list_models() -> list[ModelCard]:
    """Model cards of the bundled generators, sorted by name.

    Example:
        >>> all(card.spatial_dims in (2, 3) for card in list_models())
        True
    """
    folder = models_dir()
    if not folder.is_dir():
        return []
    cards = []
    for path in sorted(folder.glob(f"*/{CARD_FILE}")):
        if is_generator_card(path):  # registration and population models live beside the generators
            cards.append(ModelCard.load(path))
    return cards


def resolve_model(name: str | Path) -> ModelCard:
    """The card of a bundled model ``name``, or of a model folder given as a path."""
    if not isinstance(name, (str, Path)) or not str(name).strip():
        raise DiffDefInputError(f"model: expected a bundled model name or a model folder, found {name!r}")
    path = Path(name)
    if (path / CARD_FILE).is_file():
        return ModelCard.load(path)
    candidate = models_dir() / str(name) / CARD_FILE
    if candidate.is_file() and is_generator_card(candidate):
        return ModelCard.load(candidate)
    available = ", ".join(card.name for card in list_models()) or "none"
    raise DiffDefInputError(f"model {str(name)!r}: no such bundled model or model folder; available: {available}")


def record_template_checksums(card: ModelCard, folder: str | Path) -> ModelCard:
    """Put the sha256 of a file template (``card.template["kind"] == "files"``, images in ``folder``) into the
    card, so they are checked at load like the weights; a card with the bundled MNI template is left as it is."""
    if (card.template or {}).get("kind") == "files":
        names = [card.template[key] for key in ("image", "labels") if card.template.get(key)]
        present = [name for name in names if (Path(folder) / name).is_file()]  # a missing one is refused at load
        card.template = {**card.template, "sha256": {name: file_sha256(Path(folder) / name) for name in present}}
    return card


def save_model(card: ModelCard, network: torch.nn.Module, folder: str | Path) -> ModelCard:
    """Write ``network``'s weights (safetensors, float32) and the card with their sha256 and size into ``folder``.

    A template given as files (``card.template["kind"] == "files"``) must already be in ``folder``: their sha256
    go into the card as well."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in network.state_dict().items()}
    target = folder / WEIGHTS_FILE
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={"model": card.name, "format": "pt"})
    card.weights = weights_entry(target)
    record_template_checksums(card, folder)
    card.save(folder)
    return card


def load_network(card: ModelCard) -> torch.nn.Module:
    """Verify the weights file, then build the network from the card and load the weights (strict)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = verify_weights(card)
    network = build_generator_network(card)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise DiffDefInputError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise DiffDefInputError(f"{path}: weights do not match the network described by the model card ({first})") from None
    return network


@lru_cache(maxsize=4)
def _load_cached(card_path: str, sha256: str, device: str) -> Generator:
    card = ModelCard.load(card_path)
    return Generator(card, load_network(card), torch.device(device))


def load_generator(name: str | Path = "brain3d", device: str | torch.device = "auto") -> Generator:
    """Load a bundled generator (or a model folder) on ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``); cached per process.

    Example:
        >>> generator = load_generator("brain3d", "cpu")  # doctest: +SKIP
    """
    from ..device import select_device

    card = resolve_model(name)
    resolved_device = select_device(str(device))
    return _load_cached(str(card.path), str(card.weights.get("sha256", "")), str(resolved_device))


def generate_atlas(
    model: str,
    conditions: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    steps: int | None = None,
    device: str = "auto",
    allow_extrapolation: bool = False,
    guidance: float | None = None,
    temperature: float | None = None,
) -> AtlasResult:
    """Generate the atlas of ``model`` for ``conditions``; unset conditions are marginalised out.

    On CUDA, running out of GPU memory falls back to the CPU with a warning.

    Example:
        >>> result = generate_atlas("brain3d", {"age": 72, "sex": "F"}, seed=0, device="cpu")  # doctest: +SKIP
        >>> result.atlas.array.shape  # doctest: +SKIP
        (159, 191, 159)
    """
    from ..device import run_with_cpu_fallback, select_device

    def run(dev: torch.device) -> AtlasResult:
        generator = load_generator(model, dev)
        return generator.generate(
            conditions, seed=seed, steps=steps, guidance=guidance, temperature=temperature, allow_extrapolation=allow_extrapolation
        )

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*native grid_sample.*")
        return run_with_cpu_fallback(run, select_device(device))


def sample_variability(
    model: str,
    conditions: Mapping[str, Any] | None,
    samples: int,
    *,
    seed: int = 0,
    steps: int | None = None,
    device: str = "auto",
    allow_extrapolation: bool = False,
    guidance: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean displacement and its standard-deviation map over ``samples`` draws at temperature 1 (see
    :meth:`Generator.variability`); running out of GPU memory falls back to the CPU with a warning.

    Example:
        >>> mean, std = sample_variability("brain3d", {"age": 72}, 8, device="cpu")  # doctest: +SKIP
    """
    from ..device import run_with_cpu_fallback, select_device

    def run(dev: torch.device) -> tuple[np.ndarray, np.ndarray]:
        return load_generator(model, dev).variability(
            conditions, samples, seed=seed, steps=steps, guidance=guidance, allow_extrapolation=allow_extrapolation
        )

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*native grid_sample.*")
        return run_with_cpu_fallback(run, select_device(device))
