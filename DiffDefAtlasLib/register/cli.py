"""``diffdef-atlas register``: register a scan to an atlas image and write the results into a folder.

Outputs (all in the fixed image's space unless noted):

- ``warped.nii.gz``: the moving scan resampled into fixed space;
- ``displacement.nii.gz``: fixed -> moving displacement, RAS mm, NIfTI intent 1006 (3D Slicer's convention);
- ``displacement_itk.nii.gz``: the same field in ITK form (LPS components, intent 1007), for SimpleITK and ANTs;
- ``jacobian.nii.gz``: det J of the fixed -> moving map;
- ``lambda.nii.gz``: the network's regularisation weight λ(x) (working grid);
- ``labels.nii.gz``: the fixed labels carried onto the moving scan (moving space), with ``--fixed-labels``;
- ``summary.json``: timings per stage, folding, similarity, std log det J, Dice per label with both label maps.

Progress goes to stdout (``PROGRESS <fraction> <message>`` lines for a parent process that asks for them, see
:mod:`DiffDefAtlasLib.progress`). The folder is built beside ``--out`` and swapped in
when complete. A full-head scan is found and handled; a result that fails its own quality checks (brain NCC,
folding, brain overlap) writes nothing and exits with status 2, naming the figure and its threshold. A registration
whose peak memory, estimated from the image headers, exceeds the machine's memory is refused the same way before any
voxel is read (:func:`check_register_memory`).

Example:
    diffdef-atlas register --moving scan.nii.gz --fixed atlas.nii.gz --out result --refine 200
"""

from __future__ import annotations

import argparse
from pathlib import Path


from ..errors import DiffDefInputError
from ..imaging.head import BRAIN_EXTRACTION_MODES

#: Peak memory of ``register`` (resident set of a CPU run), estimated from the headers before any voxel is read as
#: ``REGISTER_PEAK_BASE_BYTES + factor x moving bytes + REGISTER_PEAK_PER_FIXED_BYTE x fixed bytes`` (bytes of the
#: images as float32). Measured by ``/usr/bin/time -v`` (maximum resident set size) of ``diffdef-atlas register
#: --device cpu`` on IXI259 (256x256x150), its 2 mm and 256x256x300 resamplings and a BrainWeb head (181x217x271)
#: against the 1 mm and 2 mm MNI template: 32-33 bytes per moving byte with ``--fixed-labels`` (the labels carried
#: onto the scan's grid: 1926 MiB for IXI259 at 2 mm, 3185 MiB for its 256x256x300 copy), 18 without (deepbet on a
#: head), 25-26 per fixed byte, 650-880 MiB for a 5 MiB scan. The estimate is 6-39 % above every measured peak with
#: labels and 21 % above a head's without; up to 3 times a skull-stripped scan's without labels (a header cannot tell
#: a head from a brain). Figures in docs/registration.md, "Memory".
REGISTER_PEAK_PER_MOVING_BYTE = 33.0
#: The same without ``--fixed-labels``: a full head's deepbet brain extraction is then the largest stage.
REGISTER_PEAK_PER_MOVING_BYTE_NO_LABELS = 18.0
#: Bytes of peak memory per fixed-image byte (the total field, det J and its summary on the fixed grid).
REGISTER_PEAK_PER_FIXED_BYTE = 26.0
#: Peak memory of a registration of tiny images (Python, torch, the network, the template, the working grid).
REGISTER_PEAK_BASE_BYTES = 900 * 1024**2


def add_register_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``register`` options to ``parser`` (the top-level CLI adds them to its ``register`` subcommand)."""
    parser.add_argument("--moving", required=True, type=Path, help="scan to register (any format SimpleITK reads)")
    parser.add_argument("--fixed", required=True, type=Path, help="atlas / fixed image (skull-stripped; a full head gets the template's brain mask)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (must be empty unless --overwrite)")
    parser.add_argument("--fixed-labels", type=Path, help="label map on the fixed image: carried onto the scan")
    parser.add_argument("--moving-labels", type=Path, help="label map on the moving scan: Dice against --fixed-labels")
    parser.add_argument("--fixed-mask", type=Path, help="brain mask of the fixed image (default: derived from it)")
    parser.add_argument("--refine", type=int, default=0, metavar="N", help="instance-optimisation Adam steps (default 0)")
    parser.add_argument("--no-affine", action="store_true", help="skip the affine pre-alignment (inputs already aligned)")
    parser.add_argument("--brain-extraction", choices=BRAIN_EXTRACTION_MODES, default="auto",
                        help="for a full-head scan: deepbet's models when installed (auto), deepbet, or the template's brain (template)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier result folder as a whole")
    return parser


def write_outputs(result, out: Path, inputs: dict) -> list[Path]:
    """Write a :class:`~DiffDefAtlasLib.register.engine.RegistrationResult` into ``out`` (every file atomically)."""
    from ..fieldio import save_displacement_itk, save_displacement_nifti
    from ..imageio import write_image
    from ..results import REGISTER_FILES, write_summary

    name = REGISTER_FILES
    written = [write_image(result.warped, out / name["warped"])]
    written.append(save_displacement_nifti(result.displacement, result.grid, out / name["displacement"]))
    written.append(save_displacement_itk(result.displacement, result.grid, out / name["displacement_itk"]))
    written.append(write_image(result.jacobian, out / name["jacobian"]))
    if result.lambda_map is not None:
        written.append(write_image(result.lambda_map, out / name["lambda"]))
    if result.labels_on_moving is not None:
        written.append(write_image(result.labels_on_moving, out / name["labels"]))
    summary = dict(result.summary)
    summary["inputs"] = inputs
    summary["outputs"] = sorted(p.name for p in written) + [name["summary"]]
    write_summary(out / name["summary"], summary, device=str(summary.get("device", "cpu")))
    written.append(out / name["summary"])
    return written


def header_voxels(path: Path) -> int | None:
    """Voxel count (times components) of an image from its header alone
    (:func:`~DiffDefAtlasLib.imageio.header_shape`), or None."""
    import numpy as np

    from ..imageio import header_shape

    shape = header_shape(path)
    return None if shape is None else int(np.prod(shape, dtype=np.int64))


def estimate_register_peak_bytes(moving_voxels: int, fixed_voxels: int, labels: bool) -> float:
    """Peak memory (bytes) of ``register`` for a moving and a fixed image of these voxel counts, with or without
    ``--fixed-labels`` (constants above).

    Example:
        >>> round(estimate_register_peak_bytes(256 * 256 * 150, 80 * 96 * 80, True) / 1024**3, 2)  # IXI259, 2 mm: 1.88 GiB measured
        2.15
    """
    per_moving = REGISTER_PEAK_PER_MOVING_BYTE if labels else REGISTER_PEAK_PER_MOVING_BYTE_NO_LABELS
    return REGISTER_PEAK_BASE_BYTES + 4.0 * (per_moving * moving_voxels + REGISTER_PEAK_PER_FIXED_BYTE * fixed_voxels)


def check_register_memory(args: argparse.Namespace) -> None:
    """Refuse a registration whose peak memory, estimated from the headers (:func:`estimate_register_peak_bytes`),
    exceeds the physical memory (or the container's limit); nothing is checked where that is unknown."""
    from ..imageio import check_size_limit, format_bytes, header_shape, physical_memory_bytes

    available = physical_memory_bytes()
    for path in (args.fixed, args.moving):
        shape = header_shape(path)
        if shape is not None:  # an image beyond the image-size limit is refused as read_image refuses it
            check_size_limit(path, shape[:-1], shape[-1])
    moving, fixed = header_voxels(args.moving), header_voxels(args.fixed)
    if available is None or moving is None or fixed is None:
        return
    labels = args.fixed_labels is not None
    needed = estimate_register_peak_bytes(moving, fixed, labels)
    if needed > available:
        hint = "resample the scan to coarser voxels" + (" or leave out --fixed-labels" if labels else "")
        raise DiffDefInputError(f"{args.moving}: registering it needs about {format_bytes(needed)} of memory (estimated from the"
                                f" image sizes), more than the {format_bytes(available)} available; {hint}")


def run_register(args: argparse.Namespace) -> int:
    """Run ``diffdef-atlas register`` from parsed arguments; returns the exit status (0 on success).

    User-input problems raise :class:`DiffDefInputError` (the top-level CLI prints them and exits with status 2).
    """
    from ..results import check_output_dir, result_folder
    from ..imageio import check_image, read_image
    from ..progress import command_progress
    from .engine import register_to_atlas

    check_output_dir(args.out, args.overwrite)  # before the run: a bad --out must not cost a registration
    if args.refine < 0:
        raise DiffDefInputError(f"--refine: expected a number of steps >= 0, found {args.refine}")
    check_register_memory(args)  # from the headers, before any voxel is read or any output is made
    fixed = check_image(read_image(args.fixed), str(args.fixed))
    moving = check_image(read_image(args.moving), str(args.moving))
    if moving.spatial_dims != fixed.spatial_dims:  # the fixed image (the atlas) sets the dimension
        raise DiffDefInputError(f"{args.moving}: the moving image is {moving.spatial_dims}D"
                                f" ({'x'.join(map(str, moving.array.shape))}); the fixed image is {fixed.spatial_dims}D")
    fixed_labels = read_image(args.fixed_labels, dtype=None) if args.fixed_labels else None
    moving_labels = read_image(args.moving_labels, dtype=None) if args.moving_labels else None
    fixed_mask = read_image(args.fixed_mask, dtype=None) if args.fixed_mask else None

    progress = command_progress()
    result = register_to_atlas(
        moving, fixed, atlas_labels=fixed_labels, moving_labels=moving_labels, refine=args.refine,
        affine=not args.no_affine, device=args.device, progress=progress, atlas_mask=fixed_mask,
        brain_extraction=args.brain_extraction,
    )
    inputs = {k: str(v) for k, v in vars(args).items() if k in ("moving", "fixed", "fixed_labels", "moving_labels", "fixed_mask") and v}
    with result_folder(args.out, args.overwrite) as out:
        write_outputs(result, out, inputs)
    progress(1.0, f"wrote results to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m DiffDefAtlasLib.register.cli``); input errors print one line and return 2."""
    import sys

    parser = add_register_arguments(argparse.ArgumentParser(prog="diffdef-atlas register", description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    try:
        return run_register(args)
    except DiffDefInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
