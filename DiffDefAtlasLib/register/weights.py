"""Bundled registration weights: safetensors files with a JSON model card (architecture, training data, metrics, and
the ``weights`` entry of :mod:`DiffDefAtlasLib.bundles`).

Layout: ``Resources/models/registration3d/`` and ``registration2d/``, each holding ``model_card.json`` and the
weights file it names. The card is the single source of truth for the architecture, the working-grid spacing and
the measured accuracy.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..atomic import atomic_path
from ..bundles import CARD_FILE, read_card, verified_weights, weights_entry, write_card
from ..errors import DiffDefInputError
from .network import NetworkConfig, RegistrationNetwork
from ..device import select_device
from ..resources import resources_dir

CARD_NAME = CARD_FILE


def model_folder(spatial_dims: int = 3) -> Path:
    """The bundled model folder for ``spatial_dims`` (2 or 3)."""
    if spatial_dims not in (2, 3):
        raise DiffDefInputError(f"registration model: expected spatial_dims 2 or 3, found {spatial_dims}")
    return resources_dir() / "models" / f"registration{spatial_dims}d"


def read_model_card(spatial_dims: int = 3, folder: str | Path | None = None) -> dict:
    """The parsed model card of a registration model.

    Example:
        >>> read_model_card(3)["network"]["spatial_dims"]  # doctest: +SKIP
        3
    """
    folder = Path(folder) if folder is not None else model_folder(spatial_dims)
    path = folder / CARD_NAME
    if not path.is_file():
        raise DiffDefInputError(f"{path}: registration model card not found (train and export a model first)")
    return read_card(path, "registration model card")


@lru_cache(maxsize=4)
def _verified_state(folder: str) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    card = read_model_card(folder=folder)
    path = verified_weights(folder, card, "registration weights")
    try:
        return card, load_file(str(path))
    except Exception as error:  # safetensors raises SafetensorError for files that are not safetensors
        raise DiffDefInputError(f"{path}: not a readable safetensors file ({error})") from error


def load_registration_network(spatial_dims: int = 3, device="cpu", folder: str | Path | None = None) -> RegistrationNetwork:
    """The bundled, frozen registration network (eval mode, no gradients for its parameters) on ``device``.

    The weights' sha256 is checked against the model card. Gradients still flow to the *inputs*, so the network can
    sit inside another model's loss.

    Example:
        >>> net = load_registration_network(3, device="cpu")  # doctest: +SKIP
        >>> displacement, velocity, lam = net.predict_displacement(moving, fixed, working_grid())  # doctest: +SKIP
    """
    import torch

    folder = Path(folder) if folder is not None else model_folder(spatial_dims)
    card, state = _verified_state(str(folder.resolve()))
    config = NetworkConfig.from_dict(card["network"])
    if config.spatial_dims != spatial_dims:
        raise DiffDefInputError(f"{folder}: model is {config.spatial_dims}D, expected {spatial_dims}D")
    network = RegistrationNetwork(config)
    network.load_state_dict(state)
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    device = select_device(device) if isinstance(device, str) else torch.device(device)
    return network.to(device)


def save_registration_network(network: RegistrationNetwork, folder: str | Path, card: dict) -> Path:
    """Write ``registration{n}d.safetensors`` and ``model_card.json`` (with its sha256) into ``folder``, atomically.

    ``card`` holds the descriptive fields (training data, metrics...); architecture, weights file and checksum are
    filled in here.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"registration{network.config.spatial_dims}d.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    with atomic_path(folder / name) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    card = dict(card)
    card["network"] = network.config.to_dict()
    card["weights"] = weights_entry(folder / name)
    write_card(folder, card)
    _verified_state.cache_clear()
    return folder / CARD_NAME
