#!/usr/bin/env python
"""Build the bundled 3D population model (``Resources/models/population3d/``) from the IXI tissue maps.

Steps (see ``docs/population_model.md``):

1. fit a template-to-subject velocity field (4 mm grid) for every IXI subject with a FAST segmentation or a GM/WM
   partial-volume map (cached under ``~/.cache/diffdef-atlas/population3d``; about 10-30 s per subject on one core);
2. regress the velocities on age and sex (log-Euclidean), with a low-rank Gaussian model of the residuals;
3. write ``population3d.safetensors`` (float16) and ``model_card.json`` (data, settings, measured trends, checksum);
4. measure the age trends of ventricle and tissue volumes on the real maps, on the fitted real subjects and on model
   samples, and print them as a Markdown table.

Usage::

    python scripts/build_population_model.py                 # fit (or reuse cached fits), build, measure, write
    python scripts/build_population_model.py --report        # only re-measure the trends of the bundled model, print the table
    python scripts/build_population_model.py --report --samples 200

Needs the shared data (``../shared/data`` or ``DIFFDEF_ATLAS_DATA``) except for ``--report --model-only``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

DEFAULT_OUT = REPO_ROOT / "Resources" / "models" / "population3d"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: Resources/models/population3d)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache of fitted fields (default: ~/.cache/diffdef-atlas)")
    parser.add_argument("--components", type=int, default=10, help="residual modes K (default 10)")
    parser.add_argument("--no-kind-covariates", action="store_true", help="do not absorb the map type (seg / GM PVE / WM PVE) as a nuisance covariate")
    parser.add_argument("--samples", type=int, default=500, help="model samples for the trend table (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the trend samples")
    parser.add_argument("--report", action="store_true", help="only measure the trends of the model in --out and print the table")
    parser.add_argument("--model-only", action="store_true", help="with --report: skip the real-data rows (no shared data needed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the fits are single-threaded)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*non-tuple sequence for multidimensional indexing.*")
    from DiffDefAtlasLib.population.build3d import (
        build_population_model,
        fit_consistency,
        measure_trends,
        provenance,
        trend_table,
        weights_precision,
    )
    from DiffDefAtlasLib.population.ixi_fields import DEFAULT_SETTINGS, fit_ixi_fields
    from DiffDefAtlasLib.population.model import PopulationModel

    started = time.perf_counter()
    if args.report:
        model = PopulationModel.load(args.out)
        fields = None if args.model_only else fit_ixi_fields(args.cache_dir).passing_qc()
        trends = measure_trends(model, fields, n_samples=args.samples, seed=args.seed)
        print(trend_table(trends))
        print(f"\n(report took {time.perf_counter() - started:.0f} s)")
        return 0

    import dataclasses

    fitted = fit_ixi_fields(args.cache_dir)
    fields = fitted.passing_qc()
    fit_seconds = time.perf_counter() - started
    model, description = build_population_model(fields, args.components, kind_covariates=not args.no_kind_covariates)
    precision = weights_precision(model)
    card = {
        "name": "population3d",
        "description": "Linear-Gaussian model of template-to-subject stationary velocity fields given age and sex, "
        "estimated from real IXI subjects; ground truth for the brain3d generator (docs/population_model.md)",
        "conditions": {"age": {"unit": "years"}, "sex": {"coding": "F = 0, M = 1; 0.5 = average"}},
        "deformation": "u = exp(v): v resampled from the 4 mm grid to the 2 mm working grid, scaling and squaring with 7 steps; "
        "u warps the template into the subject: subject(x) = template(x + u(x))",
        "sampling": "PopulationModel.sample: subject i draws age (uniform over the fitted range), sex (F/M, equal odds) and "
        "latent codes z ~ N(0, I_K) from its own stream seeded by (seed, i); v = mean_velocity(age, sex) + z @ modes",
        "volume_measurement": "template labels (2 mm) warped by exp(v) on the working grid (nearest), voxels counted x 8 mm^3; "
        "keys csf (label 1), gm (2), wm (3), lateral_ventricles (4), total_csf (1 + 4)",
        "data": provenance(fields, fitted),
        "fit_consistency": fit_consistency(model, fields),
        "fit_settings": dataclasses.asdict(DEFAULT_SETTINGS),
        **description,
        "float16_precision": precision,
    }
    model.save(args.out, card)
    model = PopulationModel.load(args.out)  # measure what is shipped (float16 weights)
    trends = measure_trends(model, fields, n_samples=args.samples, seed=args.seed)
    card = dict(model.card)
    card["trends"] = trends
    card["build"] = {
        "command": "python scripts/build_population_model.py",
        "report_command": "python scripts/build_population_model.py --report",
        "fit_seconds": round(fit_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    from DiffDefAtlasLib.atomic import write_text_atomic

    write_text_atomic(args.out / "model_card.json", json.dumps(card, indent=1) + "\n")
    print(trend_table(trends))
    print(f"\nwrote {args.out} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
