"""Conditional template network, after Dalca et al. (2019) and AtlasMorph: attributes -> velocity-field decoder.

Dalca et al. learn a decoder from attributes to a template, trained jointly with a registration network so that the
template registers well to the subjects with those attributes. Here the subjects' template-to-subject velocity fields
are already known (population model samples in 3D, instance-optimised OASIS fits in 2D), so the decoder regresses
them directly: an MLP maps the normalised conditions to a coarse feature map, transposed-resolution convolution blocks
upsample it to half the velocity grid's resolution, linear interpolation brings it to the velocity grid, and the output is added to the training mean velocity. The loss is the mean squared
error to the subjects' velocities (the log-Euclidean analogue of their registration loss, without image similarity)
plus a first-difference smoothness penalty. It trains in about a minute on a CPU; weights are cached as safetensors
under the user cache (:func:`~DiffDefAtlasLib.population.cache.cache_root`), never in the repository.

Example:
    >>> from DiffDefAtlasLib.train.data import synthetic_fields
    >>> fields = synthetic_fields(16, 2, shape=(16, 16), seed=0)
    >>> method = train_template_network(fields, TemplateNetworkSettings(steps=5), cache=False)
    >>> tuple(method.velocity({"age": 60, "sex": "F"}).shape)
    (1, 2, 16, 16)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, cast

import numpy as np
import torch
from torch import nn

from ..spatial import Grid
from .methods import VelocityMethod
from ..conditions.space import normalise_raw, normalised_conditions
from ..population.cache import cache_root


@dataclass(frozen=True)
class TemplateNetworkSettings:
    """Decoder size and training schedule."""

    steps: int = 300
    batch_size: int = 4
    learning_rate: float = 2e-3
    smoothness: float = 0.05
    channels: tuple[int, ...] = (16, 8)
    hidden: int = 64
    output_stride: int = 2
    seed: int = 0


class ConditionalTemplateDecoder(nn.Module):
    """Normalised conditions ``(B, C)`` -> velocity ``(B, ndim, *shape)`` (mm), the training mean plus a learned offset."""

    mean_velocity: torch.Tensor

    def __init__(self, n_conditions: int, mean_velocity: torch.Tensor, settings: TemplateNetworkSettings) -> None:
        super().__init__()
        ndim = mean_velocity.shape[1]
        self.shape = tuple(mean_velocity.shape[2:])
        levels = len(settings.channels)
        self.coarse = tuple(int(math.ceil(s / (settings.output_stride * 2**levels))) for s in self.shape)
        self.mode = "trilinear" if ndim == 3 else "bilinear"
        conv = nn.Conv3d if ndim == 3 else nn.Conv2d
        first = settings.channels[0]
        self.mlp = nn.Sequential(
            nn.Linear(n_conditions, settings.hidden), nn.LeakyReLU(0.2),
            nn.Linear(settings.hidden, settings.hidden), nn.LeakyReLU(0.2),
            nn.Linear(settings.hidden, first * math.prod(self.coarse)),
        )
        blocks: list[nn.Module] = []
        previous = first
        for channels in settings.channels:
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), conv(previous, channels, 3, padding=1), nn.LeakyReLU(0.2)]
            previous = channels
        self.decoder = nn.Sequential(*blocks)
        self.head = conv(previous, ndim, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        assert self.head.bias is not None
        nn.init.zeros_(self.head.bias)
        self.register_buffer("mean_velocity", mean_velocity.float())
        self.first = first

    def offset(self, conditions: torch.Tensor) -> torch.Tensor:
        """The learned offset from the mean velocity at the decoder's own (coarser) resolution."""
        x = self.mlp(conditions).view(conditions.shape[0], self.first, *self.coarse)
        return self.head(self.decoder(x))

    def coarsen(self, fields: torch.Tensor) -> torch.Tensor:
        """Fields on the velocity grid averaged down to the decoder's resolution (the training targets)."""
        pool = nn.functional.adaptive_avg_pool3d if len(self.shape) == 3 else nn.functional.adaptive_avg_pool2d
        return pool(fields, tuple(s * 2 ** (len(self.decoder) // 3) for s in self.coarse))

    def expand(self, offset: torch.Tensor) -> torch.Tensor:
        """The velocity on the grid for an :meth:`offset`: interpolated (the offset is predicted at ``output_stride``
        times the velocity spacing, so it is smooth) and added to the mean velocity."""
        return self.mean_velocity + nn.functional.interpolate(offset, size=self.shape, mode=self.mode, align_corners=False)

    def forward(self, conditions: torch.Tensor) -> torch.Tensor:
        return self.expand(self.offset(conditions))


def first_difference_penalty(field: torch.Tensor) -> torch.Tensor:
    """Mean squared first difference of a field ``(B, ndim, *shape)`` along every spatial axis (per voxel^2)."""
    n = field.dim() - 2
    return cast(torch.Tensor, sum(torch.diff(field, dim=2 + axis).pow(2).mean() for axis in range(n))) / n


class ConditionalTemplateNetwork(VelocityMethod):
    """A trained :class:`ConditionalTemplateDecoder` as an atlas method."""

    name = "template-network"

    def __init__(self, decoder: ConditionalTemplateDecoder, specs: Sequence[Any], velocity_grid: Grid, info: dict | None = None) -> None:
        super().__init__(velocity_grid)
        self.decoder = decoder.eval()
        self.specs = list(specs)
        self.info = info or {}
        self.description = "conditional template network (Dalca et al. 2019 style: conditions -> velocity decoder, regressed on training fields)"

    @torch.no_grad()
    def velocity(self, conditions: Mapping[str, Any]) -> torch.Tensor:
        point = normalised_conditions(self.specs, conditions)
        # an unset condition takes the middle of its range (the decoder has no "unset" input)
        point = np.where(np.isfinite(point), point, 0.5)
        return self.decoder(torch.from_numpy(point).float()[None])


def _fields_digest(fields, specs: Sequence[Any], settings: TemplateNetworkSettings) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(fields.velocities, dtype=np.float32).data)
    for spec in specs:
        digest.update(np.ascontiguousarray(fields.conditions[spec.name], dtype=np.float64).data)
    digest.update(json.dumps([dataclasses.asdict(settings), [s.name for s in specs], fields.grid.affine.tolist()]).encode())
    return digest.hexdigest()[:16]


def train_template_network(
    fields,
    settings: TemplateNetworkSettings | None = None,
    condition_names: Sequence[str] | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
) -> ConditionalTemplateNetwork:
    """Train (or load from the cache) the decoder on a :class:`~DiffDefAtlasLib.train.data.FieldSet`.

    Subjects missing one of the used conditions are left out. The cache file name is a hash of the fields, the
    conditions and the settings, so other data retrains.
    """
    settings = settings or TemplateNetworkSettings()
    specs = [s for s in fields.specs if condition_names is None or s.name in condition_names]
    raw = np.stack([np.asarray(fields.conditions[s.name], dtype=np.float64) for s in specs], axis=1)
    keep = np.all(np.isfinite(raw), axis=1)
    points = torch.from_numpy(normalise_raw(specs, raw[keep])).float()
    velocities = torch.from_numpy(np.asarray(fields.velocities, dtype=np.float32)[keep])
    torch.manual_seed(settings.seed)
    mean = velocities.mean(0, keepdim=True)
    decoder = ConditionalTemplateDecoder(len(specs), mean, settings)
    path = cache_root(cache_dir) / "evaluate" / f"template_network-{_fields_digest(fields, specs, settings)}.safetensors"
    info: dict[str, Any] = {"subjects": int(keep.sum()), "settings": dataclasses.asdict(settings), "conditions": [s.name for s in specs]}
    if cache and path.is_file():
        from safetensors.torch import load_file

        decoder.load_state_dict(load_file(str(path)))
        info["cached"] = str(path.name)
        return ConditionalTemplateNetwork(decoder, specs, fields.grid, info)
    # the loss is taken at the decoder's resolution (targets averaged down): the same optimum for smooth fields, and
    # no full-resolution backward pass
    with torch.no_grad():
        targets = torch.cat([decoder.coarsen(velocities[i : i + 32] - mean) for i in range(0, len(velocities), 32)])
    del velocities
    optimiser = torch.optim.Adam(decoder.parameters(), lr=settings.learning_rate)
    generator = torch.Generator().manual_seed(settings.seed)
    started = time.perf_counter()
    losses = []
    decoder.train()
    for step in range(settings.steps):
        index = torch.randint(0, len(points), (min(settings.batch_size, len(points)),), generator=generator)
        prediction = decoder.offset(points[index])
        mse = (prediction - targets[index]).pow(2).mean()
        loss = mse + settings.smoothness * first_difference_penalty(prediction)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(mse.detach()))
    decoder.eval()
    info.update({"train_seconds": round(time.perf_counter() - started, 1), "final_mse": float(np.mean(losses[-20:])) if losses else None})
    if cache:
        from safetensors.torch import save_file

        from ..atomic import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, str(tmp), metadata={"info": json.dumps(info)})
    return ConditionalTemplateNetwork(decoder, specs, fields.grid, info)
