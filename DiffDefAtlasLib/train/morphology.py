"""Morphology preservation (the Diff-Def loss) as a fine-tuning stage.

For a target condition ``c`` (the conditions of a random training subject) the atlas is generated as at inference
(DDIM from the temperature-0 start, no gradient), then decoded *with* gradient: latent -> autoencoder decoder ->
velocity -> scaling and squaring on the working grid -> template warped. ``N`` training subjects are drawn with
probabilities given by a Gaussian of their distance to ``c`` in normalised condition space (sigma configurable); each
subject's image is the template warped by that subject's own deformation (``template(x + exp(v_i)(x))``). The frozen
registration network registers every subject (moving) to the atlas (fixed), on inputs prepared as the registration
engine prepares them (:func:`~DiffDefAtlasLib.register.engine.prepare_network_inputs`, with the template's label mask
warped by the atlas). The loss is the squared norm of the mean displacement, plus a bending-energy term on the atlas
velocity:

    L = mean_x | (1/N) sum_i (d_i(x) - d_0(x)) |^2 + smoothness * bending(v_atlas)

``d_0`` is the atlas registered to itself. A learned network need not return zero there: the first bundled 3D network
moved the template onto itself by 1.54 mm on average (the current one by 0.45 mm), and its neighbourhood means carried
that offset (about 1.6 mm whether the atlas was the exact conditional mean or not). Subtracting ``d_0`` leaves the part caused by the neighbours, so the loss
is exactly zero when every neighbour equals the atlas. Neighbours are drawn with probabilities proportional to their
Gaussian weights, so their plain mean estimates the weighted mean (weighting them again would square the weights).
Conditions a subject lacks (e.g. an unmeasured ventricle volume) are left out of the distance when the target lacks
them too; a subject lacking a condition the target sets is never drawn.

Only the decoder is fine-tuned (the encoder, the latent UNet and the registration network stay frozen). On CPU this
is what fits in the budget: one decoder pass and N + 1 registrations per step. A centred atlas has neighbours whose
registrations to it average to zero displacement.

Example:
    >>> weights = gaussian_weights(np.array([[0.0], [0.1], [1.0]]), np.array([0.0]), sigma=0.1)
    >>> [round(float(w), 3) for w in weights]
    [1.0, 0.607, 0.0]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..conditions.space import condition_weights, gaussian_weights, normalised_condition_space  # noqa: F401 (gaussian_weights: the docstring's example)
from ..errors import DiffDefInputError
from ..spatial import integrate_velocity, resample_displacement, warp_image, warp_labels
from .data import FieldSet
from .stages import StageSettings, assemble_network, condition_arrays, load_draft, run_stage, save_draft, stage_record
from .ddp import cleanup, init_distributed
from ..generate.atlas import Generator, template_images
from ..register.engine import prepare_network_inputs


@dataclass
class MorphologySettings:
    """Neighbourhood and loss settings of the MP stage."""

    neighbours: int = 16
    sigma: float = 0.1
    smoothness: float = 1.0
    sampling_steps: int | None = None  # DDIM steps of the target atlases; None: the card's sampling default
    subtract_self_registration: bool = True  # d_i - d_0 (see the module docstring); False: the plain d_i


def draw_neighbours(space: np.ndarray, target: int, count: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``count`` subjects drawn without replacement with probabilities proportional to their Gaussian weights
    around subject ``target`` in normalised condition ``space`` (``(N, C)``, NaN where unset; see
    :func:`~DiffDefAtlasLib.conditions.space.condition_weights`). The target itself is never drawn. With fewer
    than ``count`` subjects of non-zero weight they are drawn with replacement.

    Example:
        >>> space = np.array([[0.0], [0.05], [0.5], [1.0]])
        >>> sorted(draw_neighbours(space, 0, 1, 0.1, np.random.default_rng(0)).tolist())
        [1]
    """
    w = condition_weights(space, space[target], sigma)
    w[target] = 0.0
    if not w.sum() > 0:
        raise DiffDefInputError(f"training subject {target} has no neighbours within sigma {sigma} in condition space")
    nonzero = int(np.count_nonzero(w > 0))
    return rng.choice(len(w), size=count, replace=nonzero < count, p=w / w.sum())


class MorphologyObjective(nn.Module):
    """The MP loss for a batch of target conditions; only ``network.autoencoder.decoder`` (and its post-quant conv)
    receive gradients."""

    network: Any  # the VelocityGenerator (decode_velocity)
    registration: Any  # the frozen RegistrationNetwork (predict_displacement)
    template_work: torch.Tensor
    template_mask: torch.Tensor

    def __init__(self, network: nn.Module, registration: nn.Module, card, template_work: torch.Tensor, settings: MorphologySettings, template_mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.network = network
        self.registration = registration
        self.card = card
        self.register_buffer("template_work", template_work)
        self.register_buffer("template_mask", (template_work > 0).float() if template_mask is None else template_mask.float())
        self.settings = settings
        self.velocity_grid = card.grid("velocity")
        self.working_grid = card.grid("working")
        for name, parameter in self.network.named_parameters():
            parameter.requires_grad_(name.startswith("autoencoder.decoder") or name.startswith("autoencoder.post_quant_conv"))
        for parameter in self.registration.parameters():
            parameter.requires_grad_(False)

    def atlas_velocity(self, latent: torch.Tensor, values: torch.Tensor | None = None, present: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder output in mm, cropped to the velocity grid, for the target conditions (network values)."""
        return self.network.decode_velocity(latent, float(self.card.velocity_scale), values, present)

    def atlas(self, latents: torch.Tensor, values: torch.Tensor | None = None, present: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(velocity, displacement, image)`` of the atlases of ``latents``, with gradient to the decoder."""
        steps = int(self.card.sampling.get("integration_steps", 7))
        velocity = self.atlas_velocity(latents, values, present)  # (B, ndim, *coarse)
        v_work = resample_displacement(velocity, self.velocity_grid, self.working_grid)
        u_atlas = integrate_velocity(v_work, self.working_grid, steps=steps)
        image = warp_image(self.template_work.expand(latents.shape[0], *self.template_work.shape[1:]), u_atlas, self.working_grid)
        return velocity, u_atlas, image

    def neighbour_displacements(self, atlas: torch.Tensor, u_atlas: torch.Tensor, subjects: torch.Tensor) -> torch.Tensor:
        """Each subject ``(B, N, 1, *shape)`` registered to its atlas, minus the atlas registered to itself when
        ``subtract_self_registration`` is set: ``(B, N, ndim, *shape)``."""
        batch, n = subjects.shape[:2]
        with torch.no_grad():
            mask = warp_image(self.template_mask.expand(batch, *self.template_mask.shape[1:]), u_atlas, self.working_grid) > 0.5
        moving, fixed, masks = subjects.flatten(0, 1), atlas.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
        if self.settings.subtract_self_registration:
            moving, fixed, masks = torch.cat([moving, atlas]), torch.cat([fixed, atlas]), torch.cat([masks, mask])
        fixed_in, moving_in = prepare_network_inputs(fixed, moving, masks, self.working_grid)
        displacement, _, _ = self.registration.predict_displacement(moving_in, fixed_in, self.working_grid)
        neighbours = displacement[: batch * n].view(batch, n, *displacement.shape[1:])
        if self.settings.subtract_self_registration:
            neighbours = neighbours - displacement[batch * n :].unsqueeze(1)
        return neighbours

    def forward(self, latents: torch.Tensor, subjects: torch.Tensor, weights: torch.Tensor, values: torch.Tensor | None = None, present: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        from monai.losses import BendingEnergyLoss

        velocity, u_atlas, atlas = self.atlas(latents, values, present)
        displacement = self.neighbour_displacements(atlas, u_atlas, subjects)
        batch, n = subjects.shape[:2]
        w = weights / weights.sum(dim=1, keepdim=True)
        mean = (w.view(batch, n, *([1] * (displacement.dim() - 2))) * displacement).sum(dim=1)
        mp = mean.pow(2).sum(dim=1).mean()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence")  # inside MONAI's loss
            smooth = BendingEnergyLoss()(velocity) / float(min(self.velocity_grid.spacing)) ** 4
        return {"loss": mp + self.settings.smoothness * smooth, "mean_displacement_sq": mp, "bending": smooth}


def subject_images(fields: FieldSet, card, template_work: torch.Tensor, index: np.ndarray) -> torch.Tensor:
    """Images of training subjects ``index``: the template warped by each subject's deformation exp(v_i)."""
    velocity_grid, working = card.grid("velocity"), card.grid("working")
    steps = int(card.sampling.get("integration_steps", 7))
    with torch.no_grad():
        v = torch.from_numpy(np.asarray(fields.velocities[index], dtype=np.float32))
        u = integrate_velocity(resample_displacement(v, velocity_grid, working), working, steps=steps)
        return warp_image(template_work.expand(len(index), *template_work.shape[1:]), u, working)


def template_on_working_grid(card, mask: bool = False) -> torch.Tensor:
    """The model's template intensities resampled to its working grid ``(1, 1, *shape)``; with ``mask``, its label
    mask instead (labels > 0, nearest neighbour), as float 0/1."""
    images = template_images(card)
    volume = images.labels if mask else images.image
    working = card.grid("working")
    tensor = torch.from_numpy(np.array(volume.array, dtype=np.uint8 if mask else np.float32))[None, None]
    if volume.grid != working:
        identity = torch.zeros(1, working.spatial_dims, *working.shape)
        tensor = warp_labels(tensor, identity, working, moving_grid=volume.grid) if mask else warp_image(tensor, identity, working, moving_grid=volume.grid)
    return (tensor > 0).float() if mask else tensor


def train_morphology(
    fields: FieldSet,
    settings: StageSettings,
    mp: MorphologySettings | None = None,
    registration: nn.Module | None = None,
) -> dict[str, Any]:
    """Stage 3: fine-tune the decoder with the morphology-preservation loss (see the module docstring).

    ``registration`` defaults to the bundled frozen network (:func:`DiffDefAtlasLib.register.load_registration_network`).
    """
    mp = mp or MorphologySettings()
    context = init_distributed(settings.device)
    try:
        card = load_draft(settings.work_dir)
        # Generate target latents with the network *before* fine-tuning (the decoder is what changes).
        network = assemble_network(settings.work_dir, card, use_mp=False)
        card_for_sampling = card
        if registration is None:
            try:
                from ..register import load_registration_network

                registration = load_registration_network(card.spatial_dims, "cpu")
            except (ImportError, FileNotFoundError, DiffDefInputError) as error:
                raise DiffDefInputError(f"the MP stage needs the frozen registration network ({error})") from None
        template_work = template_on_working_grid(card)
        values, present = condition_arrays(fields, card)
        space = normalised_condition_space(values, card)
        space[~present.numpy()] = np.nan  # unset conditions are left out of distances (condition_weights)
        sampler = Generator(card_for_sampling, network, torch.device("cpu"))
        objective = MorphologyObjective(network, registration, card, template_work, mp, template_on_working_grid(card, mask=True))
        rng_latents: dict[int, torch.Tensor] = {}
        sampling_steps = int(card.sampling.get("steps", 10) if mp.sampling_steps is None else mp.sampling_steps)

        def target_latent(i: int) -> torch.Tensor:
            if i not in rng_latents:
                with torch.no_grad():
                    rng_latents[i] = sampler.sample_latent(values[i].numpy(), present[i].numpy(), 0, sampling_steps, float(card.sampling.get("guidance", 1.0)), 0.0)[0]
            return rng_latents[i]

        def make_batch(step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            targets = rng.integers(0, len(fields), settings.batch_size)
            latents, images, weights = [], [], []
            for t in targets:
                chosen = draw_neighbours(space, int(t), mp.neighbours, mp.sigma, rng)
                latents.append(target_latent(int(t)))
                images.append(subject_images(fields, card, template_work, chosen))
                weights.append(torch.ones(len(chosen)))  # drawn in proportion to the weights: a plain mean
            return {"latents": torch.stack(latents), "subjects": torch.stack(images), "weights": torch.stack(weights),
                    "values": values[targets], "present": present[targets]}

        result = run_stage("mp", objective, make_batch, settings, context)
        if context.is_main:
            card = load_draft(settings.work_dir)
            card.training.setdefault("stages", {})["mp"] = {
                **stage_record(result, settings),
                "neighbours": mp.neighbours,
                "sigma": mp.sigma,
                "smoothness": mp.smoothness,
                "subtract_self_registration": mp.subtract_self_registration,
                "trainable": "autoencoder decoder",
                "registration": getattr(registration, "card_name", type(registration).__name__),
            }
            save_draft(card, settings.work_dir)
        return result
    finally:
        cleanup(context)
