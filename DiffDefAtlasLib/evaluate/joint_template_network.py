"""Conditional template network trained jointly with registration, as in Dalca et al. (2019) and AtlasMorph.

:mod:`.template_network` regresses known template-to-subject velocity fields. This variant sees only the subjects'
*images* and their conditions, as Dalca et al. do:

- the decoder (:class:`~.template_network.ConditionalTemplateDecoder`, started at the identity) maps the conditions
  ``c`` to a velocity; the atlas is the template warped by ``exp(v_c)``;
- each step takes the conditions of one training subject, draws ``neighbours`` subjects with probabilities given by
  a Gaussian of their distance to them in normalised condition space (as the MP stage does) and registers each one
  (moving) to the atlas (fixed) with the registration network, which starts from the bundled weights and is trained
  along with the decoder;
- the loss is the registration network's own training loss (masked LNCC, lambda-weighted smoothness and its priors),
  plus ``centrality`` times the squared norm of the neighbours' mean displacement (Dalca's mean-deformation
  penalty, taken per neighbourhood because the template is conditional), plus a first-difference smoothness penalty
  on the decoder's output.

The loss is measured on the registration network's coarse field grid, as the network was trained. Weights are cached
under the user cache (:func:`~DiffDefAtlasLib.population.cache.cache_root`), keyed by the images, the conditions,
the settings and the starting registration weights; never in the repository.

Example:
    >>> method = train_joint_template_network(images, template, mask, conditions, specs, grid)  # doctest: +SKIP
    >>> method.displacement({"age": 70, "sex": "F"}, grid).shape  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, cast

import numpy as np
import torch

from ..spatial import Grid, integrate_velocity, warp_image
from ..conditions.space import normalise_raw
from .template_network import ConditionalTemplateDecoder, ConditionalTemplateNetwork, TemplateNetworkSettings, first_difference_penalty
from ..population.cache import cache_root
from ..register.engine import prepare_network_inputs
from ..register.losses import LossConfig, RegistrationLoss
from ..register.train import coarse_pair_loss
from ..train.morphology import draw_neighbours

if TYPE_CHECKING:
    from ..register.network import RegistrationNetwork


@dataclass(frozen=True)
class JointTemplateSettings:
    """Decoder size (as :class:`~.template_network.TemplateNetworkSettings`), neighbourhood and schedule."""

    steps: int = 300
    neighbours: int = 8
    sigma: float = 0.1
    learning_rate: float = 2e-3
    registration_learning_rate: float = 1e-4
    centrality: float = 1.0
    smoothness: float = 0.05
    channels: tuple[int, ...] = (16, 8)
    hidden: int = 64
    output_stride: int = 2
    integration_steps: int = 7
    seed: int = 0

    def decoder_settings(self) -> TemplateNetworkSettings:
        return TemplateNetworkSettings(channels=self.channels, hidden=self.hidden, output_stride=self.output_stride, seed=self.seed)


class JointTemplateObjective(torch.nn.Module):
    """The joint loss for one target condition and its neighbours; :meth:`forward` returns the loss terms."""

    template: torch.Tensor
    template_mask: torch.Tensor

    def __init__(self, decoder: ConditionalTemplateDecoder, registration: torch.nn.Module, template: torch.Tensor, template_mask: torch.Tensor, grid: Grid, settings: JointTemplateSettings, loss_config=None) -> None:

        super().__init__()
        self.decoder = decoder
        self.registration = registration
        self.register_buffer("template", template.float())
        self.register_buffer("template_mask", template_mask.float())
        self.grid = grid
        self.settings = settings
        self.criterion = RegistrationLoss(loss_config or LossConfig())

    def atlas(self, point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(offset at the decoder's resolution, atlas image, atlas mask)`` for normalised conditions ``(1, C)``."""
        offset = self.decoder.offset(point)
        u = integrate_velocity(self.decoder.expand(offset), self.grid, steps=self.settings.integration_steps)
        image = warp_image(self.template, u, self.grid)
        with torch.no_grad():
            mask = (warp_image(self.template_mask, u, self.grid) > 0.5).float()
        return offset, image, mask

    def forward(self, point: torch.Tensor, subjects: torch.Tensor) -> dict[str, torch.Tensor]:

        offset, atlas, mask = self.atlas(point)
        n = subjects.shape[0]
        fixed, masks = atlas.expand(n, *atlas.shape[1:]), mask.expand(n, *mask.shape[1:])
        fixed_in, moving_in = prepare_network_inputs(fixed, subjects, masks, self.grid)
        registration_loss, _, displacement, coarse_mask = coarse_pair_loss(cast("RegistrationNetwork", self.registration), self.criterion, fixed_in, moving_in, masks, self.grid)
        inside = coarse_mask[:1]
        centrality = (displacement.mean(dim=0, keepdim=True).pow(2).sum(dim=1, keepdim=True) * inside).sum() / inside.sum().clamp_min(1.0)
        smooth = first_difference_penalty(offset)
        loss = registration_loss + self.settings.centrality * centrality + self.settings.smoothness * smooth
        return {"loss": loss, "registration": registration_loss.detach(), "centrality": centrality.detach(), "smooth": smooth.detach()}


def _digest(images: torch.Tensor, points: np.ndarray, registration: torch.nn.Module, settings: JointTemplateSettings, grid: Grid) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images.numpy(), dtype=np.float32).data)
    digest.update(np.ascontiguousarray(points, dtype=np.float64).data)
    for name, tensor in sorted(registration.state_dict().items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensor.detach().cpu().numpy()).data)
    digest.update(json.dumps([dataclasses.asdict(settings), grid.affine.tolist(), list(grid.shape)]).encode())
    return digest.hexdigest()[:16]


def train_joint_template_network(
    images: torch.Tensor,
    template: torch.Tensor,
    template_mask: torch.Tensor,
    conditions: dict[str, np.ndarray],
    specs: Sequence[Any],
    grid: Grid,
    registration: torch.nn.Module | None = None,
    loss_config=None,
    settings: JointTemplateSettings | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
) -> ConditionalTemplateNetwork:
    """Train (or load from the cache) a conditional template jointly with the registration network.

    ``images`` ``(N, 1, *grid.shape)`` are the training subjects on the template's grid, ``template`` and
    ``template_mask`` ``(1, 1, *grid.shape)``, ``conditions`` raw values per condition name (categorical as index,
    NaN where unknown; subjects missing one of ``specs`` are left out). ``registration`` defaults to the bundled
    network of the grid's dimension, and ``loss_config`` to the loss on its model card; the network is copied, never
    changed in place. Returns the decoder as an atlas method.
    """
    settings = settings or JointTemplateSettings()
    if registration is None:
        from ..register import load_registration_network, read_model_card
        from ..register.losses import LossConfig

        registration = load_registration_network(grid.spatial_dims, "cpu")
        loss_config = loss_config or LossConfig.from_dict(read_model_card(grid.spatial_dims)["loss"])
    raw = np.stack([np.asarray(conditions[s.name], dtype=np.float64) for s in specs], axis=1)
    keep = np.all(np.isfinite(raw), axis=1)
    points = normalise_raw(specs, raw[keep])
    images = images[torch.from_numpy(keep)].float()
    torch.manual_seed(settings.seed)
    zero = torch.zeros(1, grid.spatial_dims, *grid.shape)
    decoder = ConditionalTemplateDecoder(len(specs), zero, settings.decoder_settings())
    info: dict[str, Any] = {"subjects": int(keep.sum()), "settings": dataclasses.asdict(settings), "conditions": [s.name for s in specs], "trained": "jointly with registration"}
    path = cache_root(cache_dir) / "evaluate" / f"joint_template_network-{_digest(images, points, registration, settings, grid)}.safetensors"
    method = ConditionalTemplateNetwork(decoder, specs, grid, info)
    method.name = "template-network (joint)"
    method.description = "conditional template network trained jointly with registration (Dalca et al. 2019: images only)"
    if cache and path.is_file():
        from safetensors.torch import load_file

        decoder.load_state_dict(load_file(str(path)))
        info["cached"] = str(path.name)
        return method
    network = copy.deepcopy(registration).train()
    for parameter in network.parameters():
        parameter.requires_grad_(True)
    objective = JointTemplateObjective(decoder.train(), network, template, template_mask, grid, settings, loss_config)
    optimiser = torch.optim.Adam(
        [{"params": decoder.parameters(), "lr": settings.learning_rate}, {"params": network.parameters(), "lr": settings.registration_learning_rate}]
    )
    rng = np.random.default_rng(settings.seed)
    started = time.perf_counter()
    history: list[dict[str, float]] = []
    for _ in range(settings.steps):
        target = int(rng.integers(len(points)))
        chosen = draw_neighbours(points, target, settings.neighbours, settings.sigma, rng)
        terms = objective(torch.from_numpy(points[target : target + 1]).float(), images[torch.from_numpy(chosen)])
        optimiser.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimiser.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    decoder.eval()
    tail = history[-20:]
    info.update({"train_seconds": round(time.perf_counter() - started, 1), "final_losses": {k: float(np.mean([h[k] for h in tail])) for k in tail[0]} if tail else {}})
    if cache:
        from safetensors.torch import save_file

        from ..atomic import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, str(tmp), metadata={"info": json.dumps(info)})
    return method
