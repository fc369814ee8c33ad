"""The benchmark suites. Each returns a plain dict: ``timing`` (seconds, see :class:`~.timing.Timing`), memory, settings.

- :func:`generation_latency`: one atlas (DDIM -> decoder -> integration -> warped template) on ``device``;
- :func:`registration_latency`: a template-aligned synthetic subject (the template warped by a random smooth
  deformation) registered with :func:`~DiffDefAtlasLib.register.register_to_atlas` (learned, and learned + refinement);
- :func:`training_throughput`: optimiser steps of the autoencoder, diffusion and MP objectives at the model's sizes;
- :func:`grid_latency`: integration + template warp of one generated velocity on working grids of several spacings.

Example:
    >>> report = generation_latency("brain3d", repeats=3)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .timing import measure, memory_figures
from ..generate import load_generator
from ..generate.atlas import template_images
from ..generate.bundled import resolve_model
from ..generate.networks import autoencoder_factor, build_generator_network
from ..imageio import Volume
from ..register import register_to_atlas
from ..spatial import integrate_velocity, resample_displacement, warp_image
from ..train.stages import AutoencoderObjective, DiffusionObjective, pad_fields


def _sync(device: torch.device):
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None


def generation_latency(model: str = "brain3d", device: str = "cpu", repeats: int = 5, steps: int | None = None) -> dict[str, Any]:
    """Median time of ``Generator.generate`` (seed varies per call) and of its stages; the first call is reported apart."""
    generator = load_generator(model, device)
    conditions = {"age": generator.card.condition("age").default or 60.0} if "age" in generator.card.condition_names else {}
    if generator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stages: dict[str, list[float]] = {}
    seed = [0]

    def run() -> None:
        result = generator.generate(conditions, seed=seed[0], steps=steps)
        seed[0] += 1
        for key, value in result.summary["timings_s"].items():
            stages.setdefault(key, []).append(value)

    timing = measure(run, repeats, warmup=1, synchronize=_sync(generator.device))
    return {
        "model": generator.name,
        "device": str(generator.device),
        "steps": int(steps or generator.card.sampling.get("steps", 25)),
        "output_grid": list(generator.output_grid.shape),
        "timing": timing.as_dict(),
        "stage_median_s": {k: round(float(np.median(v[1:] or v)), 5) for k, v in stages.items()},
        **memory_figures(str(generator.device)),
    }


def _synthetic_subject(spatial_dims: int, seed: int = 0):
    """A template-aligned test subject: the template warped by a smooth random deformation; returns (subject, template, mask)."""
    if spatial_dims == 3:
        from ..template import load_template

        template = load_template("2mm")
        image, mask = template.t1, template.brain_mask
    else:
        from ..population.oasis2d import load_oasis_template

        image, mask, _ = load_oasis_template()
    grid = image.grid
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn((1, spatial_dims, *[max(2, s // 16) for s in grid.shape]), generator=generator) * 2.0
    mode = "trilinear" if spatial_dims == 3 else "bilinear"
    velocity = torch.nn.functional.interpolate(coarse, size=grid.shape, mode=mode, align_corners=True)
    with torch.no_grad():
        u = integrate_velocity(velocity, grid)
        warped = warp_image(torch.from_numpy(np.array(image.array, np.float32))[None, None], u, grid)
    return Volume(warped[0, 0].numpy(), image.affine), image, mask


def registration_latency(spatial_dims: int = 3, repeats: int = 5, refine: int = 50, device: str = "cpu") -> dict[str, Any]:
    """Latency of registering a synthetic subject to the template: learned network only, and with ``refine`` Adam steps."""
    subject, template, mask = _synthetic_subject(spatial_dims)
    out: dict[str, Any] = {"spatial_dims": spatial_dims, "grid": list(template.grid.shape), "device": device, "refine_steps": refine}
    for name, steps in (("learned", 0), (f"learned+refine{refine}", refine)):
        if name != "learned" and refine <= 0:
            continue
        timing = measure(lambda: register_to_atlas(subject, template, atlas_mask=mask, refine=steps, device=device), repeats, warmup=1)
        out[name] = timing.as_dict()
    out.update(memory_figures(device))
    return out


def training_throughput(model: str = "brain3d", steps: int = 3, stages: Sequence[str] = ("autoencoder", "diffusion", "mp"), batch_sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """Seconds per optimiser step and samples per second of each training stage's objective, on CPU, random data of
    the model's shapes (the cost does not depend on the values). The MP stage uses the frozen registration network."""
    card = resolve_model(model)
    torch.manual_seed(0)
    network = build_generator_network(card)
    recorded = card.training.get("stages", {})
    sizes = {stage: int((batch_sizes or {}).get(stage) or recorded.get(stage, {}).get("batch_size") or 2) for stage in stages}
    velocity_shape = tuple(card.grid("velocity").shape)
    n = card.spatial_dims
    latent_shape = tuple(card.latent_shape)
    n_conditions = len(card.conditions)
    out: dict[str, Any] = {"model": card.name, "device": "cpu", "steps": steps, "threads": torch.get_num_threads()}

    def run_steps(objective: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        parameters = [p for p in objective.parameters() if p.requires_grad]
        optimiser = torch.optim.Adam(parameters, lr=1e-6)

        def step() -> None:
            loss = objective(**batch)["loss"]
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

        return measure(step, steps, warmup=1)

    for stage in stages:
        b = sizes[stage]
        if stage == "autoencoder":
            fields = pad_fields(torch.randn(b, n, *velocity_shape), autoencoder_factor(card.autoencoder))
            timing = run_steps(AutoencoderObjective(network.autoencoder, 1e-6), {"fields": fields, "noise": torch.randn(b, *latent_shape)})
        elif stage == "diffusion":
            objective = DiffusionObjective(network.unet, card.scheduler)
            batch = {
                "latents": torch.randn(b, *latent_shape), "noise": torch.randn(b, *latent_shape),
                "timesteps": torch.randint(0, 1000, (b,)), "values": torch.zeros(b, n_conditions), "present": torch.ones(b, n_conditions, dtype=torch.bool),
            }
            timing = run_steps(objective, batch)
        elif stage == "mp":
            from ..register import load_registration_network
            from ..train.morphology import MorphologyObjective, MorphologySettings, template_on_working_grid

            settings = MorphologySettings()
            mp_objective = MorphologyObjective(network, load_registration_network(n, "cpu"), card, template_on_working_grid(card), settings)
            working = tuple(card.grid("working").shape)
            batch = {"latents": torch.randn(b, *latent_shape), "subjects": torch.rand(b, settings.neighbours, 1, *working), "weights": torch.ones(b, settings.neighbours)}
            timing = run_steps(mp_objective, batch)
        else:
            raise ValueError(f"unknown training stage {stage!r}; expected autoencoder, diffusion or mp")
        out[stage] = {"batch_size": b, "timing": timing.as_dict(), "samples_per_s": round(b / timing.median, 4)}
    out.update(memory_figures("cpu"))
    return out


def grid_latency(model: str = "brain3d", spacings: Sequence[float] = (3.0, 2.0, 1.5), repeats: int = 3, device: str = "cpu") -> dict[str, Any]:
    """Integration of one generated velocity plus the template warp on working grids of ``spacings`` (mm) over the
    model's working field of view; ratios are relative to the model's own working spacing when it is among them."""
    generator = load_generator(model, device)
    card = generator.card
    working = generator.working_grid
    velocity = generator.sample_velocity({}, steps=2)
    images = template_images(card)
    image = torch.from_numpy(np.array(images.image.array, np.float32))[None, None].to(generator.device)
    steps = int(card.sampling.get("integration_steps", 7))
    fov = np.array(working.shape) * np.array(working.spacing)
    rows: list[dict[str, Any]] = []
    for spacing in spacings:
        grid = working.resized(tuple(max(4, int(round(f / spacing))) for f in fov))

        def run() -> None:
            with torch.no_grad():
                v = resample_displacement(velocity, generator.velocity_grid, grid)
                u = integrate_velocity(v, grid, steps=steps)
                warp_image(image, u, grid, moving_grid=images.image.grid)

        timing = measure(run, repeats, warmup=1, synchronize=_sync(generator.device))
        rows.append({"spacing_mm": float(spacing), "grid": list(grid.shape), "voxels": int(np.prod(grid.shape)), "timing": timing.as_dict()})
    own = min(rows, key=lambda r: abs(r["spacing_mm"] - float(working.spacing[0])))
    for row in rows:
        row["ratio_to_%gmm" % own["spacing_mm"]] = round(row["timing"]["median"] / own["timing"]["median"], 3)
    return {"model": card.name, "device": str(generator.device), "rows": rows, **memory_figures(str(generator.device))}
