"""Entry point of ``diffdef-atlas``: subcommands, one-line errors, ``--debug`` for tracebacks."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from .. import __version__
from ..errors import DiffDefInputError

#: Subcommand name -> (module, add-arguments function, run function, help). Modules import lazily, so
#: ``diffdef-atlas --help`` stays fast and one broken optional part cannot break the others.
SUBCOMMANDS: dict[str, tuple[str, str, str, str]] = {
    "analyze": ("DiffDefAtlasLib.cli.analyze", "add_analyze_arguments", "run_analyze", "Jacobian, folding and smoothness of a displacement field"),
    "template": ("DiffDefAtlasLib.cli.template", "add_template_arguments", "run_template", "export the bundled MNI ICBM152 template, labels and volumes"),
    "models": ("DiffDefAtlasLib.generate.cli", "add_models_arguments", "run_models", "list the bundled generators and their conditions"),
    "generate": ("DiffDefAtlasLib.generate.cli", "add_generate_arguments", "run_generate", "generate a conditional atlas"),
    "sweep": ("DiffDefAtlasLib.generate.cli", "add_sweep_arguments", "run_sweep", "generate atlases along one condition (montage, GIF, volumes.csv)"),
    "train": ("DiffDefAtlasLib.train.cli", "add_train_arguments", "run_train", "train a generator stage (autoencoder, diffusion, mp, export, registration)"),
}


def _load(name: str) -> tuple[Callable, Callable]:
    module_name, add_name, run_name, _ = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    return getattr(module, add_name), getattr(module, run_name)


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser with every subcommand (or only ``commands``)."""
    parser = argparse.ArgumentParser(prog="diffdef-atlas", description="Conditional brain atlases from diffusion-generated deformation fields.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands or SUBCOMMANDS:
        add, _ = _load(name)
        command_parser = sub.add_parser(name, help=SUBCOMMANDS[name][3], description=SUBCOMMANDS[name][3])
        command_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
        add(command_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``diffdef-atlas``; returns the exit status (0 success, 2 bad input, 3 cancelled/interrupted, 1 other)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([command] if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _, run = _load(args.command)
    debug = getattr(args, "debug", False)
    try:
        return int(run(args) or 0)
    except DiffDefInputError as error:
        if debug:
            raise
        print(f"diffdef-atlas {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffdef-atlas {args.command}: interrupted; files already written are complete", file=sys.stderr)
        return 3
    except MemoryError:
        if debug:
            raise
        print(f"diffdef-atlas {args.command}: error: out of memory; try a smaller image or --device cpu", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
