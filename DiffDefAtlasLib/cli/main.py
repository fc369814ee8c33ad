"""Entry point of ``diffdef-atlas``: subcommands, one-line errors, ``--debug`` for tracebacks."""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import warnings
from typing import Callable, Sequence

from .. import __version__
from ..errors import DiffDefInputError

#: Subcommand name -> (module, add-arguments function, run function, help). Modules import lazily, so
#: ``diffdef-atlas --help`` stays fast and one broken optional part cannot break the others.
SUBCOMMANDS: dict[str, tuple[str, str, str, str]] = {
    "analyze": ("DiffDefAtlasLib.cli.analyze", "add_analyze_arguments", "run_analyze", "Jacobian, folding and smoothness of a displacement field"),
    "prepare": ("DiffDefAtlasLib.data.prepare_cli", "add_prepare_arguments", "run_prepare", "preprocess a cohort onto the template's working grid (cache, failure report)"),
    "template": ("DiffDefAtlasLib.cli.template", "add_template_arguments", "run_template", "export the bundled MNI ICBM152 template, labels and volumes"),
    "models": ("DiffDefAtlasLib.generate.cli", "add_models_arguments", "run_models", "list the bundled generators and their conditions"),
    "generate": ("DiffDefAtlasLib.generate.cli", "add_generate_arguments", "run_generate", "generate a conditional atlas"),
    "sweep": ("DiffDefAtlasLib.generate.cli", "add_sweep_arguments", "run_sweep", "generate atlases along one condition (montage, GIF, volumes.csv)"),
    "register": ("DiffDefAtlasLib.register.cli", "add_register_arguments", "run_register", "register a scan to an atlas (affine + learned diffeomorphic, optional refinement)"),
    "train": ("DiffDefAtlasLib.train.cli", "add_train_arguments", "run_train", "train a generator stage (autoencoder, diffusion, mp, export)"),
    "train-registration": ("DiffDefAtlasLib.register.train_cli", "add_train_registration_arguments", "run_train_registration", "train and export the registration network (2D or 3D, resumable)"),
    "evaluate": ("DiffDefAtlasLib.evaluate.cli", "add_evaluate_arguments", "run_evaluate", "compare Diff-Def with baselines on a test cohort (metrics.csv, report.md, figures)"),
    "benchmark": ("DiffDefAtlasLib.benchmark.cli", "add_benchmark_arguments", "run_benchmark", "time generation, registration and training (median, spread, peak memory)"),
}


def _load(name: str) -> tuple[Callable, Callable]:
    module_name, add_name, run_name, _ = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    return getattr(module, add_name), getattr(module, run_name)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse with the promise of one stderr line: a usage error is ``PROG: error: MESSAGE (see PROG -h)``, exit 2
    (argparse prints the whole usage block first). Subcommand parsers are made of the same class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def build_parser(commands: Sequence[str] | None = None, *, load: bool = True) -> argparse.ArgumentParser:
    """The argument parser with every subcommand (or only ``commands``).

    With ``load=False`` the subcommands are listed without their options, so ``--help`` and ``--version`` do not
    import torch.
    """
    parser = OneLineArgumentParser(prog="diffdef-atlas", description="Conditional brain atlases from diffusion-generated deformation fields.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands or SUBCOMMANDS:
        command_parser = sub.add_parser(name, help=SUBCOMMANDS[name][3], description=SUBCOMMANDS[name][3])
        command_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
        if load:
            add, _ = _load(name)
            add(command_parser)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Show warnings (CPU fallback, extrapolation...) as one plain line on stderr."""
    print(f"diffdef-atlas: warning: {message}", file=sys.stderr if file is None else file)


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (a multi-line message is joined with "; ").

    Example:
        >>> one_line(ValueError("first\\nsecond"))
        'first; second'
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def _interrupt_on_sigterm():
    """Treat SIGTERM (``kill``, SLURM, Slicer's Cancel) like Ctrl-C: a KeyboardInterrupt, so partial results are
    cleaned up and the one-line "interrupted" message is printed. Returns the previous handler."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        return None


#: The line printed when memory runs out (``docs/reliability.md``).
OUT_OF_MEMORY = "out of memory; try a smaller image or --device cpu"


def is_out_of_memory(error: BaseException) -> bool:
    """True for torch's allocation failures, which are ``RuntimeError`` on the CPU and not ``MemoryError``.

    Example:
        >>> is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
        True
    """
    text = str(error)
    return isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError" or (
        isinstance(error, RuntimeError) and ("DefaultCPUAllocator" in text or "can't allocate memory" in text))


def _itk_warning_display(show: bool) -> bool:
    """Turn SimpleITK's global warning display on or off; returns the previous setting (True without SimpleITK)."""
    try:
        import SimpleITK as sitk
    except ImportError:
        return True
    previous = bool(sitk.ProcessObject.GetGlobalWarningDisplay())
    sitk.ProcessObject.SetGlobalWarningDisplay(bool(show))
    return previous


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``diffdef-atlas``; returns the exit status (0 success, 2 bad input, 3 cancelled/interrupted, 1 other).

    Every failure is reported as one line on stderr; ``--debug`` shows the full traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in SUBCOMMANDS:
        parser = build_parser([command])
    else:  # no subcommand: help, version or an unknown name; the options of the subcommands are not needed
        parser = build_parser(load=False)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _, run = _load(args.command)
    debug = getattr(args, "debug", False)
    prefix = f"diffdef-atlas {args.command}"
    previous_showwarning = warnings.showwarning
    if not debug:
        warnings.showwarning = _one_line_warning
    previous_sigterm = _interrupt_on_sigterm()
    itk_warnings = _itk_warning_display(debug)  # ITK writes its warnings as multi-line blocks on stderr
    try:
        return int(run(args) or 0)
    except DiffDefInputError as error:
        if debug:
            raise
        print(f"{prefix}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted; nothing half-written was left (an earlier result folder is unchanged, caches keep their completed items)", file=sys.stderr)
        return 3
    except MemoryError:
        if debug:
            raise
        print(f"{prefix}: error: {OUT_OF_MEMORY}", file=sys.stderr)
        return 1
    except OSError as error:  # disk full, permission denied, a vanished file...
        if debug:
            raise
        where = f"{error.filename}: " if getattr(error, "filename", None) else ""
        if error.errno == errno.ENAMETOOLONG:  # a path given on the command line (or its staging folder): bad input
            print(f"{prefix}: error: {where}{error.strerror}; choose a shorter name", file=sys.stderr)
            return 2
        print(f"{prefix}: error: {where}{error.strerror or one_line(error)}", file=sys.stderr)
        return 1
    except Exception as error:  # a bug: one line here, the traceback with --debug
        if debug:
            raise
        if is_out_of_memory(error):
            print(f"{prefix}: error: {OUT_OF_MEMORY}", file=sys.stderr)
            return 1
        print(f"{prefix}: internal error: {type(error).__name__}: {one_line(error)} (run again with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = previous_showwarning
        _itk_warning_display(itk_warnings)
        if previous_sigterm is not None:
            import signal

            signal.signal(signal.SIGTERM, previous_sigterm)


if __name__ == "__main__":
    sys.exit(main())
