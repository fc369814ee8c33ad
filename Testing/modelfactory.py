"""A tiny untrained 2D generator saved like a bundled model, shared by the generator tests."""

from __future__ import annotations

from pathlib import Path

import torch

from DiffDefAtlasLib.generate import save_model
from DiffDefAtlasLib.generate.networks import build_generator_network
from DiffDefAtlasLib.imageio import write_image
from DiffDefAtlasLib.train.data import synthetic_fields
from DiffDefAtlasLib.train.recipes import draft_card


def build_tiny_model(folder: Path, steps: int = 4) -> Path:
    """Random-weight 2D generator (synthetic recipe: age 40-80, sex F/M) with its template files, card and sha256."""
    fields = synthetic_fields(16, 2, shape=(24, 32), seed=0)
    card, files = draft_card("synthetic2d", fields)
    card.name = "tiny2d"
    card.sampling["steps"] = steps
    torch.manual_seed(0)
    network = build_generator_network(card)
    for filename, volume in files.items():
        write_image(volume, folder / filename)
    save_model(card, network, folder)
    return folder
