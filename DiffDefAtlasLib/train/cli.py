"""``diffdef-atlas train --stage autoencoder|diffusion|mp|export --model NAME --work DIR``.

The registration network has its own command, ``diffdef-atlas train-registration``.

Each stage resumes from the newest checkpoint in ``--work``; run it again to continue after an interruption.
Several GPUs: ``torchrun --nproc_per_node=N -m DiffDefAtlasLib.cli.main train ...``.

Example:
    diffdef-atlas train --stage autoencoder --model brain3d --work work/brain3d --max-minutes 20
    diffdef-atlas train --stage diffusion --model brain3d --work work/brain3d
    diffdef-atlas train --stage export --model brain3d --work work/brain3d
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..device import DEVICE_CHOICES
from ..imageio import write_image
from .recipes import RECIPES, cached_fields, draft_card, recipe
from .stages import StageSettings, export_model, train_autoencoder, train_diffusion

STAGES = ("autoencoder", "diffusion", "mp", "export")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``diffdef-atlas train``."""
    parser.add_argument("--stage", required=True, choices=STAGES, help="training stage (export writes the bundled model)")
    parser.add_argument("--model", default="brain3d", choices=sorted(RECIPES), help="which model to train")
    parser.add_argument("--work", required=True, help="work folder: cached fields, checkpoints, loss logs")
    parser.add_argument("--steps", type=int, default=None, help="total optimisation steps of the stage (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, default=None, help="global batch size (default: the recipe's)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's)")
    parser.add_argument("--subjects", type=int, default=None, help="training fields to draw from the population model")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop after this wall time (checkpointed; run again to continue)")
    parser.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    parser.add_argument("--export-to", default=None, help="export: model folder to write (default Resources/models/MODEL)")
    parser.add_argument("--no-mp", action="store_true", help="export: leave out the morphology-preservation fine-tuning")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice; 1 on a shared machine)")
    parser.add_argument("--neighbours", type=int, default=16, help="mp: training subjects registered to each atlas")
    parser.add_argument("--sigma", type=float, default=0.1, help="mp: Gaussian width in normalised condition space")
    parser.add_argument("--smoothness", type=float, default=1.0, help="mp: weight of the bending energy of the atlas velocity")
    parser.add_argument("--keep-self-registration", action="store_true", help="mp: do not subtract the atlas registered to itself (the plain loss)")
    parser.add_argument("--autoencoder-channels", default=None,
                        help="autoencoder: channels per level, comma-separated (default 8,16,16: 4x downsampling; 8,16 gives 2x, a finer latent)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> int:
    """Run one training stage."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    r = recipe(args.model)
    work = Path(args.work)

    fields = cached_fields(args.model, work, args.subjects, args.seed)
    card, files = draft_card(args.model, fields)
    for filename, volume in files.items():  # the template beside the draft card (the MP stage warps it)
        if not (work / filename).is_file():
            write_image(volume, work / filename)
    if args.stage == "export":
        from ..resources import resources_dir

        folder = Path(args.export_to) if args.export_to else resources_dir() / "models" / args.model
        for filename, volume in files.items():
            write_image(volume, folder / filename)
        card = export_model(work, folder, use_mp=not args.no_mp)
        print(f"Exported {card.name} to {folder} ({card.weights['bytes'] / 1e6:.1f} MB, sha256 {card.weights['sha256'][:12]}...)")
        return 0
    defaults = r.defaults.get(args.stage, {})
    settings = StageSettings(
        work_dir=work,
        steps=args.steps or defaults.get("steps", 100),
        batch_size=args.batch_size or defaults.get("batch_size", 4),
        learning_rate=args.lr or defaults.get("learning_rate", 1e-3),
        device=args.device,
        mixed_precision=not args.no_amp,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        max_minutes=args.max_minutes,
        progress=not args.quiet,
    )
    if args.stage == "autoencoder":
        if args.autoencoder_channels:
            from .stages import with_autoencoder_channels

            card = with_autoencoder_channels(card, [int(c) for c in str(args.autoencoder_channels).split(",") if c.strip()])
        result = train_autoencoder(fields, settings, card)
    elif args.stage == "diffusion":
        result = train_diffusion(fields, settings)
    else:
        from .morphology import MorphologySettings, train_morphology

        result = train_morphology(fields, settings, MorphologySettings(args.neighbours, args.sigma, args.smoothness, subtract_self_registration=not args.keep_self_registration))
    state = "stopped early (run again to continue)" if result["stopped_early"] else "done"
    print(f"{args.stage}: step {result['step']}/{settings.steps} {state}; {result['seconds']:.0f} s this run; last losses {result['losses'][-1] if result['losses'] else '-'}")
    return 0
