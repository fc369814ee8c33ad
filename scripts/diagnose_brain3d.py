"""Where does brain3d lose the ventricles' age effect? Score one part of the pipeline at a time against the
population model's exact conditional mean (``evaluate_brain3d``'s 10 conditions and metrics).

Each row of the table "Where the ventricle trend is lost" in docs/generator.md is one call:

    python scripts/diagnose_brain3d.py lowpass --block-mm 8          # the exact mean averaged over 8 mm blocks
    python scripts/diagnose_brain3d.py autoencoder --work WORK       # the exact mean through WORK's autoencoder
    python scripts/diagnose_brain3d.py trend --model DIR             # a model's fitted trend alone, no diffusion
    python scripts/diagnose_brain3d.py draws --samples 16            # velocity mean of population draws
    python scripts/diagnose_brain3d.py noise-averaged --samples 16   # one-step estimate averaged over start latents
    python scripts/diagnose_brain3d.py guidance --scale 1.25         # one-step atlas, classifier-free guidance
    python scripts/diagnose_brain3d.py guidance --scale 2 --only age # guidance on one condition alone

``--model`` picks the generator (default: the bundled brain3d); ``--json FILE`` keeps the per-condition figures.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F


def lowpass(block_mm: float):
    """The exact mean's deviation from the intercept averaged over blocks of ``block_mm`` and interpolated back."""
    from DiffDefAtlasLib.population import load_population_model

    population = load_population_model()
    factor = int(round(block_mm / min(population.grid.spacing)))
    base = torch.from_numpy(np.array(population.intercept))[None]
    shape = tuple(population.grid.shape)

    def velocity(age: float, sex: str) -> torch.Tensor:
        deviation = torch.from_numpy(population.mean_velocity(age, sex))[None] - base
        padded = F.pad(deviation, [p for s in reversed(shape) for p in (0, (-s) % factor)], mode="replicate")
        smooth = F.interpolate(F.avg_pool3d(padded, factor), scale_factor=factor, mode="trilinear", align_corners=False)
        return smooth[..., : shape[0], : shape[1], : shape[2]] + base

    return velocity


def autoencoder(work: str):
    """The exact mean encoded (posterior mean) and decoded by the newest autoencoder checkpoint of a work folder."""
    from DiffDefAtlasLib.population import load_population_model
    from DiffDefAtlasLib.generate.networks import autoencoder_factor
    from DiffDefAtlasLib.train.stages import pad_fields, load_draft, load_trained_autoencoder

    from DiffDefAtlasLib.conditions.resolve import encode_conditions
    from DiffDefAtlasLib.generate.trend import is_fitted, trend_velocity

    population = load_population_model()
    card = load_draft(work)
    network = load_trained_autoencoder(work, card)
    intercept = torch.from_numpy(np.load(f"{work}/field_mean.npy"))
    maps = torch.from_numpy(np.load(f"{work}/trend_maps.npy")) if is_fitted(card.trend) else None
    scale = float(card.velocity_scale)
    factor = autoencoder_factor(card.autoencoder)

    def baseline(age: float, sex: str) -> torch.Tensor:
        """What the autoencoder codes around: the mean field, or the trend at these conditions."""
        values, present = encode_conditions(card, {"age": age, "sex": sex})
        return trend_velocity(card.trend, card.condition_names, intercept, maps, torch.from_numpy(values)[None], torch.from_numpy(present)[None])

    def velocity(age: float, sex: str) -> torch.Tensor:
        mean = baseline(age, sex)
        x = (torch.from_numpy(population.mean_velocity(age, sex))[None] - mean) / scale
        mu, _ = network.encode(pad_fields(x, factor))
        decoded = network.decode_stage_2_outputs(mu)[..., : x.shape[2], : x.shape[3], : x.shape[4]]
        return decoded * scale + mean

    return velocity


def draws(generator, samples: int, steps: int | None):
    """The plain mean of ``samples`` decoded population draws (temperature 1, seeds 0..samples-1)."""
    def velocity(age: float, sex: str) -> torch.Tensor:
        conditions = {"age": age, "sex": sex}
        return torch.stack([generator.sample_velocity(conditions, seed=k, steps=steps, temperature=1.0) for k in range(samples)]).mean(0)

    return velocity


def noise_averaged(generator, samples: int):
    """The one-step estimate averaged over ``samples`` start latents drawn at temperature 1 (instead of the zero
    latent), then decoded once: by the tower property the mean of E[z | z_T, c] over z_T is E[z | c]."""
    from DiffDefAtlasLib.conditions.resolve import encode_conditions, resolve_conditions
    from DiffDefAtlasLib.generate.sampling import ddim_sample, initial_latent

    def velocity(age: float, sex: str) -> torch.Tensor:
        values, present = encode_conditions(generator.card, resolve_conditions(generator.card, {"age": age, "sex": sex}, False))
        start = torch.cat([initial_latent((1, *generator.card.latent_shape), k, 1.0) for k in range(samples)])
        v = torch.as_tensor(values)[None].expand(samples, -1)
        p = torch.as_tensor(present)[None].expand(samples, -1)
        latent = ddim_sample(generator.denoise, start, v, p, steps=1, scheduler_settings=generator.card.scheduler)
        return generator.decode(latent.mean(0, keepdim=True) / float(generator.card.latent_scale), values, present)

    return velocity


def guidance(generator, scale: float, only: str | None):
    """The one-step atlas with classifier-free guidance ``scale``; with ``only``, the unconditional branch drops that
    condition alone (the others stay set in both branches)."""
    from DiffDefAtlasLib.conditions.resolve import encode_conditions, resolve_conditions
    from DiffDefAtlasLib.generate.sampling import ddim_sample

    names = list(generator.card.condition_names)

    def denoiser(latent, t, values, present):
        conditional = generator.denoise(latent, t, values, present)
        dropped = torch.zeros_like(present) if only is None else present.clone()
        if only is not None:
            dropped[:, names.index(only)] = False
        unconditional = generator.denoise(latent, t, values, dropped)
        return unconditional + scale * (conditional - unconditional)

    def velocity(age: float, sex: str) -> torch.Tensor:
        values, present = encode_conditions(generator.card, resolve_conditions(generator.card, {"age": age, "sex": sex}, False))
        start = torch.zeros((1, *generator.card.latent_shape))
        steps = int(generator.card.sampling.get("steps", 1))
        latent = ddim_sample(denoiser, start, torch.as_tensor(values)[None], torch.as_tensor(present)[None], steps=steps, scheduler_settings=generator.card.scheduler)
        return generator.decode(latent / float(generator.card.latent_scale), values, present)

    return velocity


def trend(generator):
    """A model's fitted conditional-mean trend alone: the atlas without the diffusion model's residual."""
    from DiffDefAtlasLib.conditions.resolve import encode_conditions, resolve_conditions

    def velocity(age: float, sex: str) -> torch.Tensor:
        values, present = encode_conditions(generator.card, resolve_conditions(generator.card, {"age": age, "sex": sex}, False))
        return generator.network.mean_velocity(1, torch.as_tensor(values)[None], torch.as_tensor(present)[None])

    return velocity


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("lowpass", "autoencoder", "draws", "noise-averaged", "guidance", "atlas", "trend"))
    parser.add_argument("--block-mm", type=float, default=8.0, help="lowpass: block size in mm (a multiple of 4)")
    parser.add_argument("--work", help="autoencoder: training work folder")
    parser.add_argument("--model", default="brain3d", help="draws, guidance, atlas, trend: generator name or folder")
    parser.add_argument("--samples", type=int, default=16, help="draws, noise-averaged: number of start latents")
    parser.add_argument("--steps", type=int, default=None, help="draws: DDIM steps (default: the card's sample_steps)")
    parser.add_argument("--scale", type=float, default=1.25, help="guidance: guidance scale")
    parser.add_argument("--only", default=None, help="guidance: the one condition to guide on")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the full result here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from DiffDefAtlasLib.generate.bundled import load_generator
    from DiffDefAtlasLib.evaluate.generators import score_against_population_mean

    integrate = None
    if args.what == "lowpass":
        source = lowpass(args.block_mm)
    elif args.what == "autoencoder":
        if not args.work:
            parser.error("autoencoder needs --work")
        source = autoencoder(args.work)
    else:
        generator = load_generator(args.model, "cpu")
        integrate = generator.velocity_to_displacement
        if args.what == "draws":
            source = draws(generator, args.samples, args.steps)
        elif args.what == "noise-averaged":
            source = noise_averaged(generator, args.samples)
        elif args.what == "guidance":
            source = guidance(generator, args.scale, args.only)
        elif args.what == "trend":
            source = trend(generator)
        else:
            source = lambda age, sex: generator.sample_velocity({"age": age, "sex": sex})  # noqa: E731
    with torch.no_grad():
        result = score_against_population_mean(source, integrate=integrate)
    summary = {k: v for k, v in result.items() if k != "conditions"}
    print(json.dumps({"what": args.what, **{k: v for k, v in vars(args).items() if k not in ("what", "json")}, **summary}, indent=1))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(result, stream, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
