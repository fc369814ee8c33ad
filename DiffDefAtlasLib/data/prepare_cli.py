"""``diffdef-atlas prepare --cohort cohort.csv --out CACHE``: preprocess a cohort onto the working grid.

Registered by :mod:`DiffDefAtlasLib.cli.main` through :func:`add_prepare_arguments` and :func:`run_prepare`.
Exit status: 0 when every subject is prepared (or cached), 1 when some failed (they are listed), 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys

from .measure import VOLUME_KEYS
from .preprocess import SKULL_STRIP_MODES
from ..progress import progress_reporter
from .prepare import prepare_cohort


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``prepare`` subcommand."""
    parser.add_argument("--cohort", required=True, help="cohort CSV (subject_id, image, optional labels, conditions)")
    parser.add_argument("--out", required=True, help="output (cache) folder; re-runs skip finished subjects")
    parser.add_argument("--n4", action="store_true", help="N4 bias-field correction before registration")
    parser.add_argument("--skull-strip", choices=SKULL_STRIP_MODES, default="auto",
                        help="mask scans with the registered template brain: auto (scans that still have a skull), yes, no")
    parser.add_argument("--labels-convention", default="auto", choices=("auto", "diffdef", "fast", "aseg", "synthseg", "brainweb"),
                        help="label ids of the cohort's label files (auto: guessed from the ids present)")
    parser.add_argument("--add-measured", nargs="+", default=[], choices=VOLUME_KEYS, metavar="NAME",
                        help=f"add measured volumes as conditions (one of: {', '.join(VOLUME_KEYS)})")
    parser.add_argument("--extra-condition", action="append", default=[], metavar="NAME",
                        help="declare an extra numeric condition column (repeatable)")
    parser.add_argument("--ignore-column", action="append", default=[], metavar="NAME",
                        help="ignore a column of the cohort table, e.g. site (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_prepare(args: argparse.Namespace) -> int:
    """Run ``prepare``; prints a summary and the failures, returns the exit status."""
    lines = progress_reporter()  # PROGRESS lines for a parent process; a person gets the progress bar instead

    def on_progress(fraction: float, message: str) -> None:
        if lines is not None:
            lines(fraction, message)

    report = prepare_cohort(
        args.cohort,
        args.out,
        n4=args.n4,
        skull_strip=args.skull_strip,
        progress=not args.no_progress and lines is None,
        labels_convention=args.labels_convention,
        add_measured=args.add_measured,
        extra_conditions={name: "numeric" for name in args.extra_condition},
        ignore_columns=args.ignore_column,
        on_progress=on_progress,
    )
    print(report.summary(), file=sys.stdout if report.ok else sys.stderr)
    if report.csv_path is not None:
        print(f"Wrote {report.csv_path}")
    return 0 if report.ok else 1
