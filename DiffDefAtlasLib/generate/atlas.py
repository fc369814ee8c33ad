"""From conditions to an atlas: latent diffusion -> velocity -> diffeomorphic displacement -> warped template.

Pipeline (3D ``brain3d``): DDIM in the latent -> autoencoder decoder -> velocity on the 4 mm grid -> resampled to the
2 mm working grid -> scaling and squaring -> displacement ``u`` -> resampled to the 1 mm template grid ->
``atlas(x) = template(x + u(x))`` and nearest-neighbour labels. The map is the exponential of a smooth velocity field,
so it is diffeomorphic by construction.

Example:
    >>> from DiffDefAtlasLib.generate import load_generator  # doctest: +SKIP
    >>> result = load_generator("brain3d").generate({"age": 72, "sex": "F"}, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, cast

import numpy as np
import torch

from ..checksum import verify_sha256
from ..errors import DiffDefInputError, QualityCheckError
from ..imageio import Volume, read_image
from ..metrics import label_volumes
from ..spatial import (
    Grid,
    folding_mask,
    folding_ratio,
    integrate_velocity,
    jacobian_determinant,
    resample_displacement,
    vector_length,
    warp_image,
    warp_labels,
)
from ..conditions.resolve import encode_conditions, extrapolated_conditions, resolve_conditions
from .model_card import ModelCard
from .sampling import ddim_sample, initial_latent


@dataclass
class AtlasResult:
    """One generated atlas and everything derived from it.

    Attributes:
        atlas: the template warped by ``displacement`` (1 mm for 3D).
        labels: template labels warped (nearest; 0 background, 1 CSF, 2 GM, 3 WM, 4 lateral ventricles in 3D).
        displacement: ``(ndim, *shape)`` RAS mm on ``grid``: ``atlas(x) = template(x + u(x))``.
        grid: the grid of ``displacement``, ``atlas``, ``labels``, ``jacobian`` and ``folding``.
        jacobian: det of the Jacobian of ``x -> x + u(x)``.
        folding: 1 where ``det J <= 0`` (uint8).
        velocity: the generated stationary velocity field ``(ndim, *coarse_shape)``, RAS mm, on ``velocity_grid``.
        velocity_grid: the coarse grid of ``velocity``.
        summary: conditions, seed, steps, device, timings, folding ratios, volumes (mL; mm^2 in 2D).
    """

    atlas: Volume
    labels: Volume
    displacement: np.ndarray
    grid: Grid
    jacobian: Volume
    folding: Volume
    velocity: np.ndarray
    velocity_grid: Grid
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputField:
    """The generated map on the output grid: displacement ``(1, ndim, *shape)`` and det J ``(1, *shape)``, with det J
    on the working grid and its folding ratios (the figures the summary reports)."""

    displacement: torch.Tensor
    jacobian: torch.Tensor
    jacobian_working: torch.Tensor
    folding_ratios: dict[str, float]


@dataclass
class WarpedTemplate:
    """The template image and labels warped into the atlas, the folding mask (uint8) and the label names."""

    atlas: np.ndarray
    labels: np.ndarray
    folding: np.ndarray
    label_names: dict[int, str]


@dataclass(frozen=True)
class TemplateImages:
    """What a model warps: intensity image, label map (and label names) on the model's output grid."""

    image: Volume
    labels: Volume
    label_names: dict[int, str]


#: Largest classifier-free guidance scale accepted (1 = plain conditional; the bundled cards use 1-3).
MAX_GUIDANCE = 20.0
#: Largest initial-noise scale accepted (0 = the sub-population's centre, 1 = one random member).
MAX_TEMPERATURE = 3.0
#: Most DDIM steps accepted: the schedulers are trained with 1000 timesteps.
MAX_STEPS = 1000


def check_sampling_settings(steps: int | None, guidance: float | None, temperature: float | None) -> None:
    """Refuse a non-finite or out-of-range sampling setting with one line (``None`` means "the card's default").

    Example:
        >>> check_sampling_settings(None, float("nan"), None)
        Traceback (most recent call last):
        ...
        DiffDefAtlasLib.errors.DiffDefInputError: guidance: expected a finite number from 0 to 20, found nan
    """
    import math

    for name, value, high in (("guidance", guidance, MAX_GUIDANCE), ("temperature", temperature, MAX_TEMPERATURE)):
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DiffDefInputError(f"{name}: expected a number, found {value!r}") from None
        if not math.isfinite(number) or not 0.0 <= number <= high:
            raise DiffDefInputError(f"{name}: expected a finite number from 0 to {high:g}, found {value}")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, (int, float, np.integer)) or not float(steps).is_integer():
            raise DiffDefInputError(f"steps: expected a whole number of DDIM steps, found {steps!r}")
        if not 1 <= int(steps) <= MAX_STEPS:
            raise DiffDefInputError(f"steps: expected 1 to {MAX_STEPS} DDIM steps, found {steps}")


#: What ``jacobian.nii.gz`` holds, for ``summary.json``.
JACOBIAN_MEANING = ("det J of the stored map x -> x + u(x) (atlas to template): below 1 where a structure is larger in"
                    " the atlas than in the template, above 1 where it is smaller, <= 0 where the map folds")
#: Largest seed accepted: torch's generators take 64-bit unsigned seeds.
MAX_SEED = 2**64 - 1


def check_seed(seed: Any) -> int:
    """The seed as an int, or one line refusing it: a whole number from 0 to 2**64 - 1. torch would map a negative
    seed onto a large one (-1 gives the atlas of 2**64 - 1), so negative seeds are refused rather than aliased.

    Example:
        >>> check_seed(-1)
        Traceback (most recent call last):
        ...
        DiffDefAtlasLib.errors.DiffDefInputError: seed: expected a whole number from 0 to 2**64 - 1, found -1
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise DiffDefInputError(f"seed: expected a whole number from 0 to 2**64 - 1, found {seed!r}")
    return int(seed)


def check_finite_field(field: torch.Tensor, what: str) -> None:
    """Refuse a generated field with NaN or infinite values before anything is written (a result check, exit 2)."""
    bad = int((~torch.isfinite(field)).sum())
    if bad:
        raise QualityCheckError(
            f"{what}: {bad} of {field.numel()} values are NaN or infinite; nothing was written "
            "(check the model files and the sampling settings)"
        )


@lru_cache(maxsize=4)
def _template_images_cached(card_path: str, kind: str, image: str, labels: str, digests: tuple[tuple[str, str], ...] = ()) -> TemplateImages:
    if kind == "mni152":
        from ..template import LABEL_NAMES, load_template

        template = load_template("1mm")
        return TemplateImages(template.t1, template.labels, dict(LABEL_NAMES))
    from pathlib import Path

    folder = Path(card_path).parent
    expected = dict(digests)
    for name in filter(None, (image, labels)):
        verify_sha256(folder / name, expected.get(name), "template file")
    image_volume = read_image(folder / image, dtype=np.float32)
    labels_volume = read_image(folder / labels, dtype=np.uint8) if labels else Volume(np.zeros(image_volume.array.shape, np.uint8), image_volume.affine)
    return TemplateImages(image_volume, labels_volume, {})


def template_images(card: ModelCard) -> TemplateImages:
    """The images a model warps: the bundled MNI template (``{"kind": "mni152"}``) or files beside the card."""
    entry = card.template or {"kind": "mni152"}
    kind = entry.get("kind", "mni152")
    if kind not in ("mni152", "files"):
        raise DiffDefInputError(f"model card '{card.name}': unknown template kind {kind!r}")
    digests = tuple(sorted((entry.get("sha256") or {}).items()))
    images = _template_images_cached(str(card.path), kind, entry.get("image", ""), entry.get("labels", ""), digests)
    if kind == "files" and entry.get("label_names"):
        images = TemplateImages(images.image, images.labels, {int(k): v for k, v in entry["label_names"].items()})
    return images


class Generator:
    """A loaded generator: model card, networks and device. Build it with :func:`~.bundled.load_generator`."""

    def __init__(self, card: ModelCard, network, device: torch.device) -> None:
        self.card = card
        self.network = network.eval().to(device)
        self.device = torch.device(device)
        self.velocity_grid = card.grid("velocity")
        self.working_grid = card.grid("working")
        self.output_grid = card.grid("output")

    @property
    def name(self) -> str:
        """The model name."""
        return self.card.name

    def __repr__(self) -> str:
        return f"Generator({self.card.name!r}, {self.card.spatial_dims}D, conditions={self.card.condition_names}, device={self.device})"

    # ------------------------------------------------------------------ stages
    def _settings(self, steps: int | None, guidance: float | None, temperature: float | None) -> tuple[int, float, float]:
        """Resolve unset settings from the card. The atlas (temperature 0) uses ``steps``; a draw from the population
        (temperature > 0) uses ``sample_steps`` when the card names it: a one-step atlas is the denoiser's
        conditional-mean estimate, but one step from noise would give that same mean instead of a member."""
        sampling = self.card.sampling
        check_sampling_settings(steps, guidance, temperature)
        guidance = float(sampling.get("guidance", 1.0) if guidance is None else guidance)
        temperature = float(sampling.get("temperature", 0.0) if temperature is None else temperature)
        if steps is None:
            steps = sampling.get("sample_steps", sampling.get("steps", 25)) if temperature > 0 else sampling.get("steps", 25)
        return int(steps), guidance, temperature

    def denoise(self, latent: torch.Tensor, t: torch.Tensor, values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """One UNet evaluation (the denoiser used by the sampler)."""
        return self.network.unet(latent, t, values, present)

    def sample_latent(self, values: np.ndarray, present: np.ndarray, seed: int, steps: int, guidance: float, temperature: float) -> torch.Tensor:
        """DDIM from the seeded start latent; returns ``(1, C, *latent)`` (unscaled, as the decoder wants it)."""
        seed = check_seed(seed)
        shape = (1, *self.card.latent_shape)
        start = initial_latent(shape, seed, temperature).to(self.device)
        v = torch.as_tensor(values, device=self.device)[None]
        p = torch.as_tensor(present, device=self.device)[None]
        latent = ddim_sample(self.denoise, start, v, p, steps=steps, guidance=guidance, scheduler_settings=self.card.scheduler)
        return latent / float(self.card.latent_scale)

    def decode(self, latent: torch.Tensor, values: np.ndarray | None = None, present: np.ndarray | None = None) -> torch.Tensor:
        """Latent -> velocity field ``(B, ndim, *velocity_shape)`` in RAS mm, for the encoded conditions the latent
        was sampled for (:func:`~.conditions.encode_conditions`; a model with a trend adds its conditional mean)."""
        if values is None or present is None:
            return self.network.decode_velocity(latent, float(self.card.velocity_scale))
        batch = latent.shape[0]
        v = torch.as_tensor(values, device=self.device).reshape(batch, -1)
        p = torch.as_tensor(present, device=self.device).reshape(batch, -1)
        return self.network.decode_velocity(latent, float(self.card.velocity_scale), v, p)

    def velocity_to_displacement(self, velocity: torch.Tensor, grid: Grid | None = None) -> torch.Tensor:
        """Integrate a velocity field on the working grid; return the displacement on ``grid`` (default: output grid)."""
        steps = int(self.card.sampling.get("integration_steps", 7))
        v = resample_displacement(velocity, self.velocity_grid, self.working_grid)
        u = integrate_velocity(v, self.working_grid, steps=steps)
        grid = self.output_grid if grid is None else grid
        return u if grid == self.working_grid else resample_displacement(u, self.working_grid, grid)

    @torch.no_grad()
    def sample_velocity(
        self,
        conditions: Mapping[str, Any] | None = None,
        *,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        temperature: float | None = None,
        allow_extrapolation: bool = False,
    ) -> torch.Tensor:
        """The generated velocity ``(1, ndim, *velocity_shape)`` (RAS mm) for ``conditions``."""
        resolved = resolve_conditions(self.card, conditions, allow_extrapolation)
        values, present = encode_conditions(self.card, resolved)
        steps, guidance, temperature = self._settings(steps, guidance, temperature)
        return self.decode(self.sample_latent(values, present, seed, steps, guidance, temperature), values, present)

    # ------------------------------------------------------------------ products
    @torch.no_grad()
    def generate(
        self,
        conditions: Mapping[str, Any] | None = None,
        *,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        temperature: float | None = None,
        allow_extrapolation: bool = False,
    ) -> AtlasResult:
        """Generate the atlas for ``conditions`` (unset conditions are marginalised out).

        Example:
            >>> result = load_generator("brain3d").generate({"age": 70})  # doctest: +SKIP
            >>> result.summary["volumes_ml"]["lateral_ventricles"]  # doctest: +SKIP
        """
        timings: dict[str, float] = {}
        start = time.perf_counter()
        resolved = resolve_conditions(self.card, conditions, allow_extrapolation)
        values, present = encode_conditions(self.card, resolved)
        steps, guidance, temperature = self._settings(steps, guidance, temperature)
        latent = self.sample_latent(values, present, seed, steps, guidance, temperature)
        timings["sampling_s"] = time.perf_counter() - start

        mark = time.perf_counter()
        velocity = self.decode(latent, values, present)
        check_finite_field(velocity, f"model '{self.name}': the generated velocity field")
        timings["decoding_s"] = time.perf_counter() - mark

        mark = time.perf_counter()
        field = self.output_field(velocity)
        timings["integration_s"] = time.perf_counter() - mark

        mark = time.perf_counter()
        warped = self.warp_template(field)
        timings["warping_s"] = time.perf_counter() - mark
        timings["total_s"] = time.perf_counter() - start

        settings = {"seed": int(seed), "steps": steps, "guidance": guidance, "temperature": temperature}
        summary = self.atlas_summary(resolved, settings, field, warped, timings)
        grid = self.output_grid
        return AtlasResult(
            atlas=Volume(warped.atlas.astype(np.float32), grid.affine),
            labels=Volume(warped.labels.astype(np.uint8), grid.affine),
            displacement=field.displacement[0].cpu().numpy().astype(np.float32),
            grid=grid,
            jacobian=Volume(field.jacobian[0].float().cpu().numpy(), grid.affine),
            folding=Volume(warped.folding, grid.affine),
            velocity=velocity[0].float().cpu().numpy(),
            velocity_grid=self.velocity_grid,
            summary=summary,
        )

    def output_field(self, velocity: torch.Tensor) -> OutputField:
        """Integrate ``velocity`` on the working grid and resample the displacement and det J to the output grid.

        det J is computed on the working grid, where the field is integrated; the output grid gets it by linear
        resampling (the output displacement is itself the linear resampling of the working one).
        """
        u_work = self.velocity_to_displacement(velocity, self.working_grid)
        check_finite_field(u_work, f"model '{self.name}': the generated displacement field")
        jac_work = jacobian_determinant(u_work, self.working_grid)
        grid = self.output_grid
        if grid == self.working_grid:
            u, jac = u_work, jac_work
        else:
            u = resample_displacement(u_work, self.working_grid, grid)
            jac = resample_displacement(jac_work[:, None], self.working_grid, grid)[:, 0]
        return OutputField(u.float(), jac, jac_work, folding_ratio(jac_work))

    def warp_template(self, field: OutputField) -> WarpedTemplate:
        """The model's template image and labels warped by the output displacement, and the folding mask."""
        grid = self.output_grid
        images = template_images(self.card)
        if images.image.grid != grid:
            entry = self.card.template or {}
            source = cast(Path, self.card.path).parent / entry["image"] if entry.get("kind") == "files" else "bundled MNI template"
            found = images.image.grid
            raise DiffDefInputError(
                f"{source}: template is {found.spatial_dims}D {'x'.join(map(str, found.shape))} but model '{self.name}' "
                f"is {self.card.spatial_dims}D on a {'x'.join(map(str, grid.shape))} grid"
            )
        u = field.displacement
        image = torch.from_numpy(np.array(images.image.array, dtype=np.float32))[None, None].to(u.device)
        labels = torch.from_numpy(np.array(images.labels.array, dtype=np.uint8))[None, None].to(u.device)
        return WarpedTemplate(
            atlas=warp_image(image, u, grid)[0, 0].cpu().numpy(),
            labels=warp_labels(labels, u, grid)[0, 0].cpu().numpy(),
            folding=folding_mask(field.jacobian[0]).to(torch.uint8).cpu().numpy(),
            label_names=dict(images.label_names),
        )

    def _jacobian_grid_words(self) -> str:
        work = self.working_grid
        where = f"computed on the working grid {'x'.join(map(str, work.shape))} ({', '.join(f'{v:g}' for v in work.spacing)} mm)"
        if work == self.output_grid:
            return where + ", which is the output grid"
        return (where + ", where the field is integrated, and linearly resampled to the output grid (analyze of"
                " displacement.nii.gz computes it on the output grid, and differs where u varies fast)")

    def atlas_summary(self, resolved: dict, settings: dict[str, Any], field: OutputField, warped: WarpedTemplate, timings: dict[str, float]) -> dict[str, Any]:
        """``summary.json`` of one atlas: model, conditions, sampling settings, device, grid, timings, folding,
        displacement size and the label volumes (mL; mm^2 in 2D)."""
        grid = self.output_grid
        norm = vector_length(field.displacement[0].float())
        summary: dict[str, Any] = {
            "model": self.name,
            "conditions": resolved,
            "unset_conditions": [n for n in self.card.condition_names if n not in resolved],
            "extrapolated": extrapolated_conditions(self.card, resolved),  # {} when all are within the trained range
            **settings,
            "device": str(self.device),
            "grid_shape": list(grid.shape),
            "spacing_mm": list(grid.spacing),
            "timings_s": {k: round(v, 4) for k, v in timings.items()},
            "folding_ratio_nonpositive": field.folding_ratios["nonpositive"],
            "folding_ratio_negative": field.folding_ratios["negative"],
            "folding_ratio_grid": "working",
            "jacobian": JACOBIAN_MEANING + "; " + self._jacobian_grid_words(),
            "detj_min": float(field.jacobian_working.min()),
            "detj_max": float(field.jacobian_working.max()),
            "displacement_mean_norm_mm": float(norm.mean()),
            "displacement_max_norm_mm": float(norm.max()),
        }
        volumes = label_volumes(warped.labels, grid, warped.label_names, decimals=4)
        if volumes:
            summary["volumes_ml" if grid.spatial_dims == 3 else "areas_mm2"] = volumes
        return summary

    @torch.no_grad()
    def variability(
        self,
        conditions: Mapping[str, Any] | None,
        samples: int,
        *,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        temperature: float = 1.0,
        allow_extrapolation: bool = False,
        grid: Grid | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Population variability: ``samples`` draws (seeds ``seed .. seed + samples - 1`` at ``temperature``).

        Returns the mean displacement ``(ndim, *shape)`` and its standard deviation ``(*shape)`` (root of the summed
        per-component variances, mm) on ``grid`` (default: the output grid).
        """
        if samples < 2:
            raise DiffDefInputError(f"samples: expected at least 2 samples for a standard deviation, found {samples}")
        resolved = resolve_conditions(self.card, conditions, allow_extrapolation)
        values, present = encode_conditions(self.card, resolved)
        steps, guidance, temperature = self._settings(steps, guidance, temperature)
        mean = None
        m2 = None
        for k in range(samples):
            latent = self.sample_latent(values, present, seed + k, steps, guidance, temperature)
            u = self.velocity_to_displacement(self.decode(latent, values, present), grid)[0].double()
            check_finite_field(u, f"model '{self.name}': sample {k + 1}'s displacement field")
            if mean is None:
                mean, m2 = torch.zeros_like(u), torch.zeros_like(u)
            assert m2 is not None
            delta = u - mean
            mean += delta / (k + 1)
            m2 += delta * (u - mean)
        assert mean is not None and m2 is not None
        std = torch.sqrt((m2 / (samples - 1)).sum(0))
        return mean.float().cpu().numpy(), std.float().cpu().numpy()
