#!/usr/bin/env python
"""Build the OASIS-1 axial template (``Resources/templates2d/``) and the template-to-subject velocity fields.

Steps (see ``docs/population_model.md``, section "OASIS-1 2D"):

1. ``--template``: unbiased iterative template of the training split (register, average, re-centre; default 3 rounds),
   its brain mask and labels (0-4, ventricles from the dark central CSF), written to ``Resources/templates2d/``;
2. fields (default): every subject (train and validation) registered to the bundled template; velocities on the
   2 mm grid with the conditions, cached under ``~/.cache/diffdef-atlas/oasis2d/`` (never committed);
3. a short report: ventricle area of the template labels warped by each subject's field against age, next to the
   central dark-area proxy measured on the slices.

Usage::

    python scripts/build_oasis2d_fields.py --template     # rebuild the template, then the fields
    python scripts/build_oasis2d_fields.py                # fields only (loads the cache when present), report
    python scripts/build_oasis2d_fields.py --relabel      # recompute the template labels only (no registration)

Needs the shared data (``../shared/data`` or ``DIFFDEF_ATLAS_DATA``).
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

DEFAULT_TEMPLATE_OUT = REPO_ROOT / "Resources" / "templates2d"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", action="store_true", help="rebuild the template first")
    parser.add_argument("--relabel", action="store_true", help="only recompute the template's labels from its image and mask")
    parser.add_argument("--rounds", type=int, default=3, help="template rounds (default 3)")
    parser.add_argument("--template-out", type=Path, default=DEFAULT_TEMPLATE_OUT, help="template folder (default Resources/templates2d)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache folder (default ~/.cache/diffdef-atlas)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*non-tuple sequence for multidimensional indexing.*")
    from DiffDefAtlasLib.population import oasis2d

    started = time.perf_counter()
    if args.relabel:
        label_info = oasis2d.relabel_oasis_template(args.template_out)
        print(f"labels rewritten in {args.template_out}: areas (mm^2) {label_info['areas_mm2']}")
        return 0
    if args.template:
        image, mask, labels, info = oasis2d.build_oasis_template(rounds=args.rounds)
        oasis2d.save_oasis_template(image, mask, labels, info, args.template_out)
        print(json.dumps(info["history"], indent=1))
        print(f"template written to {args.template_out} ({info['seconds']:.0f} s); label areas (mm^2): {info['labels']['areas_mm2']}")
    fields_started = time.perf_counter()
    fields = oasis2d.build_oasis_fields(args.cache_dir)
    print(f"fields: {fields.velocities.shape} on {fields.grid} in {time.perf_counter() - fields_started:.0f} s")
    report = oasis2d.ventricle_trend_report(fields)
    for name, entry in report.items():
        print(f"{name}: slope {entry['slope_per_year']:+.3f} mm^2/yr ({entry['percent_per_year']:+.2f} %/yr), r = {entry['r']:+.2f}, n = {entry['n']}")
    print(f"mean data loss {np.mean(fields.data_loss):.4f}; total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
