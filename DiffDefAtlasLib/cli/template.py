"""``diffdef-atlas template --out DIR``: export the bundled MNI ICBM152 2009a template and its label volumes, with
the MNI copyright notice that its licence requires in all copies."""

from __future__ import annotations

import argparse

from ..imageio import write_image
from ..metrics import label_volumes
from ..template import LABEL_NAMES, RESOLUTIONS, load_template, template_notices
from ..results import check_output_dir, result_folder, write_summary


def add_template_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``template`` subcommand."""
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--resolution", choices=RESOLUTIONS, default="1mm", help="1mm display grid or 2mm working grid")
    parser.add_argument("--overwrite", action="store_true", help="replace files in a non-empty output folder")


def run_template(args: argparse.Namespace) -> int:
    """Write ``t1.nii.gz``, ``labels.nii.gz``, ``brain_mask.nii.gz``, tissue maps, ``summary.json`` and the MNI
    copyright notice (``LICENSE_MNI_ICBM152.txt``, ``NOTICE.txt``: ``NOTICE_FILES``)."""
    check_output_dir(args.out, args.overwrite)
    template = load_template(args.resolution)
    notices = template_notices()
    copyright_line = " ".join(notices["LICENSE_MNI_ICBM152.txt"].split()).split(" Permission", 1)[0]
    with result_folder(args.out, args.overwrite) as out:
        for name, text in notices.items():  # the MNI licence: "the above copyright notice appear in all copies"
            (out / name).write_text(text, encoding="utf-8")
        write_image(template.t1, out / "t1.nii.gz")
        write_image(template.labels, out / "labels.nii.gz")
        write_image(template.brain_mask, out / "brain_mask.nii.gz")
        for name, volume in template.tissue.items():
            write_image(volume, out / f"{name}_probability.nii.gz")
        volumes = label_volumes(template.labels.array, template.grid, LABEL_NAMES)
        grid = template.grid
        summary = {
            "template": "MNI ICBM152 2009a nonlinear symmetric",
            "copyright": copyright_line,
            "licence": "MNI permissive licence; its copyright notice must appear in all copies (LICENSE_MNI_ICBM152.txt)",
            "notice_files": list(notices),
            "resolution": args.resolution,
            "shape": list(grid.shape),
            "spacing_mm": list(grid.spacing),
            "label_volumes_ml": volumes,
            "brain_volume_ml": float(template.brain_mask.array.astype(bool).sum() * grid.voxel_volume / 1000.0),
        }
        write_summary(out / "summary.json", summary, device="cpu")
    print(f"MNI ICBM152 2009a template, {args.resolution} grid {'x'.join(map(str, grid.shape))}")
    for name, value in volumes.items():
        print(f"  {name}: {value:.1f} mL")
    print(f"Wrote {3 + len(template.tissue)} images, summary.json and {', '.join(notices)} to {args.out}")
    print("The MNI licence requires its copyright notice in all copies: keep LICENSE_MNI_ICBM152.txt with the images")
    return 0
