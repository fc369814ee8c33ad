"""``diffdef-atlas analyze FIELD --out DIR``: Jacobian, folding and smoothness of a displacement field."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..analysis import analyze_field
from ..errors import DiffDefInputError
from ..imageio import read_image, write_image
from ..fieldio import load_displacement
from ..spatial import Grid
from ..results import check_output_dir, format_summary, result_folder, write_summary


def add_analyze_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``analyze`` subcommand."""
    parser.add_argument("field", help="displacement field: NIfTI vector (intent 1006 RAS, or ITK/ANTs LPS), .mha, .nrrd, .h5")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--mask", help="optional mask image on the field's grid; the summary is computed inside it")
    parser.add_argument("--overwrite", action="store_true", help="replace files in a non-empty output folder")


def run_analyze(args: argparse.Namespace) -> int:
    """Write ``jacobian.nii.gz``, ``folding.nii.gz`` and ``summary.json``; print the summary."""
    u, grid = load_displacement(args.field)
    if not np.all(np.isfinite(u)):
        raise DiffDefInputError(f"{args.field}: the field holds NaN or Inf values")
    mask = None
    if args.mask:
        mask_volume = read_image(args.mask)
        if Grid(mask_volume.array.shape, mask_volume.affine) != grid:
            raise DiffDefInputError(f"{args.mask}: the mask must lie on the field's grid {grid}")
        mask = mask_volume.array > 0
    check_output_dir(args.out, args.overwrite)
    result = analyze_field(u, grid, mask, name=str(args.field))
    summary = {"field": str(args.field), "grid_shape": list(grid.shape), "spacing_mm": list(grid.spacing),
               "jacobian": "det J of x -> x + u(x), computed by finite differences on the field's own grid", **result.summary}
    with result_folder(args.out, args.overwrite) as staging:
        write_image(result.jacobian, staging / "jacobian.nii.gz")
        write_image(result.folding, staging / "folding.nii.gz")
        write_summary(staging / "summary.json", summary, device="cpu")
    out = Path(args.out)
    print(f"Field {args.field} on grid {'x'.join(map(str, grid.shape))} ({', '.join(f'{s:g}' for s in grid.spacing)} mm)")
    print(format_summary(result.summary))
    print(f"Wrote {out / 'jacobian.nii.gz'}, {out / 'folding.nii.gz'}, {out / 'summary.json'}")
    return 0
