"""``diffdef-atlas evaluate``: score Diff-Def against baselines on a test cohort; writes metrics.csv, report.md, figures.

Built-in cohorts make the report reproducible:

- ``--cohort population3d`` (``--model brain3d``): the 3D population model with its exact conditional-mean truth;
- ``--cohort oasis-validation`` (``--model oasis2d``): the 30 held-out OASIS-1 axial slices (needs ../shared/data);
- ``--cohort TEST.csv``: a cohort table (``subject_id,image,labels,age,sex``) of template-aligned held-out scans.

Example:
    diffdef-atlas evaluate --model brain3d --cohort population3d --out eval3d
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import DiffDefInputError
from ..data.cohort import read_cohort
from ..generate import load_generator
from ..imageio import Volume, read_image
from ..imaging.resampling import resample
from ..register import load_registration_network
from ..results import prepare_output_dir, write_summary
from .figures import write_figures
from .heldout import evaluate_heldout
from .methods import DiffDefMethod, TemplateBaseline
from .report import summary_dict, write_report


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DiffDefInputError(f"expected comma-separated numbers, found {text!r}") from None


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``evaluate`` subcommand."""
    parser.add_argument("--model", default="brain3d", help="bundled generator name or model folder (default brain3d)")
    parser.add_argument("--cohort", default="population3d", help="population3d, oasis-validation, or a cohort CSV of held-out scans")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--ages", type=_floats, default=None, help="comma-separated target ages (default: 30,40,50,60,70 in 3D; 65,75,85 in 2D)")
    parser.add_argument("--sexes", default="F,M", help="comma-separated target sexes (default F,M)")
    parser.add_argument("--methods", default=None, help="comma-separated subset of the method names to run (default: all)")
    parser.add_argument("--neighbours", type=int, default=16, help="population3d: subjects per condition for centrality (default 16)")
    parser.add_argument("--sigma", type=float, default=0.15, help="held-out cohorts: Gaussian width of the centrality weights, normalised condition units")
    parser.add_argument("--network-steps", type=int, default=300, help="training steps of the conditional template network (cached)")
    parser.add_argument("--training-subjects", type=int, default=300, help="population3d: subjects sampled as the baselines' training fields")
    parser.add_argument("--variant-model", "--no-mp-model", dest="variant_model", default=None,
                        help="model folder of the same generator exported the other way: without the MP stage (train --stage export --no-mp) if the bundled one has it, with it if not")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument("--overwrite", action="store_true", help="replace files in a non-empty output folder")


def _select(methods: list, names: str | None) -> list:
    if not names:
        return methods
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = [m.name for m in methods]
    missing = [n for n in wanted if n not in known]
    if missing:
        raise DiffDefInputError(f"--methods: unknown {', '.join(missing)}; available: {', '.join(known)}")
    return [m for m in methods if m.name in wanted]


def _csv_cohort(args: argparse.Namespace, progress):
    """Held-out scans of a cohort table, resampled onto the model's working grid (assumed template-aligned)."""
    import numpy as np
    import torch


    generator = load_generator(args.model, "cpu")
    card = generator.card
    if card.spatial_dims == 3:
        from ..template import load_template

        template = load_template("2mm")
        image, mask, labels = template.t1, template.brain_mask, template.labels
    else:
        from ..population.oasis2d import load_oasis_template

        image, mask, labels = load_oasis_template()
    cohort = read_cohort(args.cohort)
    images = torch.cat([resample(read_image(s.image), image.grid) for s in cohort.subjects])
    conditions = []
    for s in cohort.subjects:
        row: dict[str, Any] = {}
        if np.isfinite(s.conditions.get("age", np.nan)):
            row["age"] = float(s.conditions["age"])
        if np.isfinite(s.conditions.get("sex", np.nan)):
            row["sex"] = "F" if float(s.conditions["sex"]) == 0 else "M"
        conditions.append(row)
    specs = [c for c in card.conditions if c.name in ("age", "sex")]
    ages = args.ages or sorted({round(c["age"]) for c in conditions if "age" in c})[:5]
    targets = [{"age": float(a), "sex": s} for s in args.sexes.split(",") for a in ages]
    methods = _select([TemplateBaseline(), DiffDefMethod(generator, "diffdef", f"generator '{card.name}'")], args.methods)
    network = load_registration_network(card.spatial_dims, "cpu")
    return evaluate_heldout(methods, Volume(np.asarray(image.array, np.float32), image.affine), mask, labels, images, conditions, specs, targets, network, args.sigma, None, Path(args.cohort).stem, progress)


def run_evaluate(args: argparse.Namespace) -> int:
    """Run the evaluation, write metrics.csv, report.md, summary.json and the figures."""
    import torch


    out = prepare_output_dir(args.out, args.overwrite)
    sexes = [s.strip().upper() for s in args.sexes.split(",") if s.strip()]
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    cohort = str(args.cohort)
    if cohort == "population3d":
        if args.model != "brain3d":
            raise DiffDefInputError(f"--cohort population3d evaluates the brain3d model, found --model {args.model}")
        from .population3d import default_population_methods, evaluate_population3d

        methods = _select(default_population_methods(args.network_steps, args.training_subjects, variant=args.variant_model), args.methods)
        result = evaluate_population3d(methods, args.ages or (30, 40, 50, 60, 70), sexes, neighbours=args.neighbours, progress=progress)
        size_key = "ventricle_ml"
    elif cohort == "oasis-validation":
        if args.model != "oasis2d":
            raise DiffDefInputError(f"--cohort oasis-validation evaluates the oasis2d model, found --model {args.model}")
        from .heldout import default_oasis_methods, evaluate_oasis_validation

        methods = _select(default_oasis_methods(args.network_steps, args.variant_model), args.methods)
        result = evaluate_oasis_validation(methods, args.ages or (65, 75, 85), sexes, args.sigma, progress)
        size_key = "ventricle_size"
    elif Path(cohort).suffix.lower() == ".csv":
        result = _csv_cohort(args, progress)
        size_key = "ventricle_size"
    else:
        raise DiffDefInputError(f"--cohort: expected population3d, oasis-validation or a .csv cohort table, found {cohort!r}")
    figures = [] if args.no_figures else [str(p) for p in write_figures(result, out, size_key)]
    command = "diffdef-atlas evaluate " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["evaluate"] else None
    paths = write_report(result, out, command, figures)
    write_summary(out / "summary.json", {"evaluation": result.name, "model": args.model, "seconds": round(result.seconds, 1), "methods": result.methods,
                                          "notes": result.notes, "metrics": summary_dict(result), "torch_threads": torch.get_num_threads()}, device="cpu")
    print(paths["report"].read_text(encoding="utf-8"))
    print(f"Wrote {paths['metrics']}, {paths['report']}, {out / 'summary.json'}" + (f" and {len(figures)} figures" if figures else ""))
    return 0
