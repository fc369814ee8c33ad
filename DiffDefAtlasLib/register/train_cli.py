"""``diffdef-atlas train-registration``: train the registration networks (3D on the 2 mm template grid, 2D on OASIS
axial slices) and export them. The trainer works on label and image pairs, not on deformation fields, so it is a
command of its own beside the generator's ``train``.

Usage (resumable: run the same command again to continue from the checkpoint in --work):

    diffdef-atlas train-registration --dims 3 --work WORKDIR --minutes 60 --export Resources/models/registration3d
    diffdef-atlas train-registration --dims 2 --work WORKDIR --minutes 15 --export Resources/models/registration2d
    diffdef-atlas train-registration --dims 3 --work WORKDIR --export-only --export Resources/models/registration3d

``--uniform-lambda`` trains the ablation with a constant λ (no λ head) under a separate checkpoint name;
``--lambda-value`` sets that constant (default 0.5, the prior's mode; e.g. the mean λ the spatially varying model learns).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from ..errors import DiffDefInputError
from .losses import LossConfig
from .network import NetworkConfig
from .train import TrainConfig, network_from_checkpoint, train_registration
from .weights import save_registration_network
from ..data.oasis import load_oasis_slice, oasis_cohort
from ..imageio import read_image, write_image
from ..imaging.intensity import normalise_intensity
from .training_data import OasisPairSampler, TemplatePairSampler, cache_subjects, load_cached, oasis_template_2d

TRAINING_DATA = {
    3: [
        "16 SynthSeg training label maps (BBillot/SynthSeg, Apache-2.0) and 16 BrainWeb crisp models (McConnell BIC): "
        "T1-like images synthesised from the labels at every draw (SynthSeg style: random per-label Gaussians, blur, "
        "bias field, noise, skull kept), Dice-supervised with the labels mapped to CSF/GM/WM/lateral ventricles",
        "6 IXI T1 volumes (N4, skull-stripped; IXI, CC BY-SA 3.0), similarity only",
        "every moving image randomly deformed by a smooth diffeomorphism; 30% of the time the template too",
        "fixed image: MNI ICBM152 2009a symmetric template at 2 mm (80x96x80), brain-masked loss",
        "held out: FreeSurfer bert, the VoxelMorph test subject, the last 4 SynthSeg maps, the last 4 BrainWeb models",
    ],
    2: [
        "OASIS-1 axial slices (120 training subjects of the fixed age-stratified split), 1 mm, 176x208, similarity only",
        "each slice randomly deformed by a smooth diffeomorphism and gamma-augmented",
        "fixed image: mean of the intensity-normalised training slices (template2d.nii.gz beside the weights)",
        "held out: the 30 OASIS validation subjects",
    ],
}


def network_config(dims: int, uniform: bool, lambda_value: float = 0.5) -> NetworkConfig:
    """The bundled architecture; ``lambda_value`` is the constant λ of the uniform ablation (the λ head's initial value otherwise)."""
    if dims == 3:
        return NetworkConfig(spatial_dims=3, channels=(16, 32, 32, 32), working_spacing_mm=2.0, velocity_scale_mm=4.0, spatially_varying=not uniform,
                             lambda_init=lambda_value)
    return NetworkConfig(spatial_dims=2, channels=(16, 32, 32, 32), working_spacing_mm=1.0, velocity_scale_mm=2.0, spatially_varying=not uniform,
                         lambda_init=lambda_value)


def sampler_3d(work: Path, seed: int, wait_for_cache: bool = True, template_fraction: float = 0.0):

    if wait_for_cache:
        paths = cache_subjects(work / "cache3d", log=lambda m: print(m, flush=True))
    else:  # train on what is cached so far; subjects cached meanwhile by another process join as they appear
        paths = sorted(p for p in (work / "cache3d").glob("*.npz") if not p.name.startswith("."))
    sampler = TemplatePairSampler(load_cached(paths), seed=seed, template_fraction=template_fraction)
    sampler.watch(work / "cache3d")
    return sampler


def sampler_2d(export: Path | None, work: Path, seed: int):

    ids = [s.subject_id for s in oasis_cohort("axial", "train").subjects]
    folder = export if export is not None else work
    path = folder / "template2d.nii.gz"
    if not path.is_file():
        write_image(oasis_template_2d(ids), path)
    template = read_image(path)
    mask = template.array > 0.1
    slices = [normalise_intensity(torch.as_tensor(load_oasis_slice(i, "axial").array)[None, None])[0, 0].numpy() for i in ids]
    return OasisPairSampler(slices, template, mask, seed=seed)


def add_train_registration_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``diffdef-atlas train-registration``."""
    parser.add_argument("--dims", type=int, choices=(2, 3), default=3)
    parser.add_argument("--work", type=Path, required=True, help="folder for the data cache and the checkpoint")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-time budget of this run")
    parser.add_argument("--iterations", type=int, default=100000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior-weight", type=float, default=LossConfig().prior_weight, help="weight of the λ prior term")
    parser.add_argument("--uniform-lambda", action="store_true", help="ablation: constant λ, no λ head")
    parser.add_argument("--lambda-value", type=float, default=0.5, help="the constant λ of --uniform-lambda (default 0.5)")
    parser.add_argument("--export", type=Path, help="write safetensors + model card into this folder when done")
    parser.add_argument("--export-only", action="store_true")
    parser.add_argument("--no-wait-for-cache", action="store_true", help="3D: start on the subjects cached so far")
    parser.add_argument("--velocity-smoothing", type=float, default=None, help="export: velocity_smoothing_voxels written into the card (inference only)")
    parser.add_argument("--template-fraction", type=float, default=0.0, help="3D: share of pairs whose moving image is the deformed template")
    return parser


def run_train_registration(args: argparse.Namespace) -> int:
    """Train (resuming from the checkpoint in ``--work``) and, with ``--export``, write safetensors + model card."""
    if args.minutes <= 0 or args.iterations < 1 or args.lr <= 0 or args.threads < 1:
        raise DiffDefInputError("--minutes, --iterations, --lr and --threads must be positive")
    if args.export_only and args.export is None:
        raise DiffDefInputError("--export-only needs --export FOLDER")
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    suffix = "_uniform" if args.uniform_lambda else ""
    checkpoint = args.work / f"checkpoint{args.dims}d{suffix}.pt"
    loss_config = LossConfig(dice_weight=1.0 if args.dims == 3 else 0.0, prior_weight=args.prior_weight)
    if not args.export_only:
        t0 = time.time()
        sampler = sampler_3d(args.work, args.seed, not args.no_wait_for_cache, args.template_fraction) if args.dims == 3 else sampler_2d(args.export, args.work, args.seed)
        print(f"data ready in {time.time() - t0:.0f} s", flush=True)
        train_registration(
            sampler, network_config(args.dims, args.uniform_lambda, args.lambda_value),
            TrainConfig(iterations=args.iterations, minutes=args.minutes, learning_rate=args.lr, seed=args.seed),
            checkpoint, loss_config, log=lambda m: print(m, flush=True),
        )
    if args.export is not None:
        if not checkpoint.is_file():
            raise DiffDefInputError(f"{checkpoint}: no checkpoint to export; train first (without --export-only)")
        network, state = network_from_checkpoint(checkpoint)
        if args.velocity_smoothing is not None:
            network.config = dataclasses.replace(network.config, velocity_smoothing_voxels=args.velocity_smoothing)
        data = list(TRAINING_DATA[args.dims])
        if args.template_fraction > 0:
            data.append(f"{args.template_fraction:.0%} of the pairs (in the continued run that added them): the template itself as the moving image, "
                        "deformed by 0 to 3 mm, Dice-supervised with its own labels; half of them with a bright shell outside the brain "
                        "(starting 2-6 mm out, 4-8 mm thick)")
        card = {
            "name": f"DiffDefAtlas registration {args.dims}D" + (f" (uniform λ = {args.lambda_value:g} ablation)" if args.uniform_lambda else ""),
            "task": "atlas registration: moving scan -> template; SVF by scaling and squaring; spatially varying λ (Chen et al.)",
            "loss": json.loads(state["loss_config"]),
            "training": {
                "data": data,
                "iterations": int(state["iteration"]),
                "wall_minutes": round(float(state["elapsed_s"]) / 60, 1),
                "hardware": f"CPU, {torch.get_num_threads()} thread(s)",
                "optimiser": f"Adam, lr {args.lr}, batch 1",
                "command": f"diffdef-atlas train-registration --dims {args.dims} --work WORKDIR --minutes {args.minutes:g}"
                + (" --uniform-lambda" if args.uniform_lambda else "")
                + (f" --lambda-value {args.lambda_value:g}" if args.lambda_value != 0.5 else "")
                + (f" --template-fraction {args.template_fraction:g}" if args.template_fraction > 0 else ""),
                "last_log": json.loads(state["history"])[-1:] if state["history"] else [],
            },
            "input": "moving and fixed on the working grid, intensity-normalised (99th percentile -> 1), masked by the fixed brain mask dilated by 8 mm",
            "metrics": {},
        }
        folder = args.export if not args.uniform_lambda else args.work / f"export{args.dims}d_uniform"
        print(save_registration_network(network, folder, card))
    return 0
