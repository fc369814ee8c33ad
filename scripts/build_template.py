#!/usr/bin/env python
"""Build the bundled MNI ICBM152 2009a template (``Resources/template/``) from the files inside a nilearn wheel.

The inputs are the three 1 mm maps that nilearn ships (``nilearn/datasets/data/``):
``mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz`` (uint8, skull-stripped T1 and the GM/WM
probabilities scaled to 0..255). The outputs, at 1 mm (display) and 2 mm (working grid), are:
T1, brain mask, CSF/GM/WM probabilities, a label map (0 background, 1 CSF, 2 GM, 3 WM, 4 lateral ventricles),
plus ``template.json``, ``LICENSE`` and ``NOTICE.txt``. See ``docs/template.md`` for the method.

The build is deterministic: the same nilearn files give byte-identical outputs (gzip written with mtime 0).

Usage::

    python scripts/build_template.py --nilearn nilearn-0.14.1-py3-none-any.whl
    python scripts/build_template.py --nilearn /path/to/site-packages/nilearn
    python scripts/build_template.py              # runs `pip download nilearn --no-deps` into a temporary folder

Needs numpy, scipy and nibabel (nilearn itself is never imported or installed).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "Resources" / "template"

SOURCE_FILES = {
    "t1": "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
DESCRIPTION_FILE = "nilearn/datasets/description/icbm152_2009.rst"

# ---------------------------------------------------------------------------------------------------------------
# Grids (RAS mm, axis-aligned). The 2 mm working grid has voxel centres on odd/even integer millimetres that are
# also 1 mm voxel centres, so every 2 mm voxel is a 1 mm voxel and the 1 mm grid spans exactly the same centres.
# x: -79..79 (symmetric about the mid-sagittal plane x = 0), y: -112..78, z: -72..86.
# The brain mask of the source spans x -72..72, y -107..73, z -72..82 (the source volume stops at z = -72).
# ---------------------------------------------------------------------------------------------------------------
WORKING_ORIGIN = (-79.0, -112.0, -72.0)
WORKING_SPACING = 2.0
WORKING_SHAPE = (80, 96, 80)
DISPLAY_SPACING = 1.0
DISPLAY_SHAPE = tuple(2 * (s - 1) + 1 for s in WORKING_SHAPE)  # (159, 191, 159)

LABELS = {
    0: {"name": "background", "color": [0, 0, 0]},
    1: {"name": "csf", "color": [60, 60, 60]},
    2: {"name": "gm", "color": [205, 62, 78]},
    3: {"name": "wm", "color": [245, 245, 245]},
    4: {"name": "lateral_ventricles", "color": [120, 18, 134]},
}
LATERAL_VENTRICLES = 4

# Lateral-ventricle search (MNI mm, per hemisphere; |x| is the distance from the mid-sagittal plane).
SEARCH_BOX = {"abs_x": (1.0, 45.0), "y": (-85.0, 45.0), "z": (-30.0, 40.0)}
SEED_BOX = {"abs_x": (5.0, 25.0), "y": (-30.0, 10.0), "z": (10.0, 30.0)}  # bodies of the lateral ventricles
PURE_TISSUE = 0.9  # probability above which a voxel counts as pure CSF or pure GM for the dark-T1 threshold

MNI_LICENSE = """\
Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute,
McGill University. Permission to use, copy, modify, and distribute this software and its documentation for
any purpose and without fee is hereby granted, provided that the above copyright notice appear in all copies.
The authors and McGill University make no representations about the suitability of this software for any
purpose. It is provided "as is" without express or implied warranty. The authors are not responsible for any
data loss, equipment damage, property loss, or injury to subjects or patients resulting from the use or
misuse of this software package.
"""


# --------------------------------------------------------------------------------------------------- source ---
@dataclass
class NilearnSource:
    """Read-only access to the nilearn files, from a wheel (zip) or an unpacked/installed nilearn."""

    location: Path
    version: str
    _zip: zipfile.ZipFile | None = None
    _root: Path | None = None  # folder that contains the ``nilearn/`` package
    sha256: dict[str, str] = field(default_factory=dict)

    def read(self, member: str) -> bytes:
        """Bytes of ``member`` (a path such as ``nilearn/datasets/data/...``)."""
        try:
            data = self._zip.read(member) if self._zip is not None else (self._root / member).read_bytes()
        except (KeyError, FileNotFoundError) as error:
            raise SystemExit(f"{self.location}: {member} not found (is this a nilearn wheel or install?)") from error
        self.sha256[member] = hashlib.sha256(data).hexdigest()
        return data


def open_source(path: Path) -> NilearnSource:
    """Open a nilearn wheel, a ``nilearn`` package folder, or a folder holding ``nilearn/``."""
    path = path.expanduser().resolve()
    if path.is_file() and path.suffix == ".whl":
        archive = zipfile.ZipFile(path)
        match = re.match(r"nilearn-([^-]+)-", path.name)
        return NilearnSource(path, match.group(1) if match else "unknown", _zip=archive)
    if path.is_dir():
        root = path.parent if (path / "datasets" / "data").is_dir() else path
        if not (root / "nilearn" / "datasets" / "data").is_dir():
            raise SystemExit(f"{path}: expected a nilearn wheel, a nilearn package folder or a folder holding nilearn/")
        version = "unknown"
        for metadata in sorted(root.glob("nilearn-*.dist-info/METADATA")):
            found = re.search(r"^Version: (\S+)", metadata.read_text(encoding="utf-8"), re.MULTILINE)
            version = found.group(1) if found else version
        if version == "unknown":
            version_file = root / "nilearn" / "_version.py"
            if version_file.is_file():
                found = re.search(r"version = ['\"]([^'\"]+)", version_file.read_text(encoding="utf-8"))
                version = found.group(1) if found else version
        return NilearnSource(path, version, _root=root)
    raise SystemExit(f"{path}: not found (give a nilearn .whl file or a nilearn install folder)")


def download_wheel(folder: Path) -> Path:
    """``pip download nilearn --no-deps`` into ``folder``; returns the wheel."""
    command = [sys.executable, "-m", "pip", "download", "nilearn", "--no-deps", "--only-binary=:all:"]
    command += ["-d", str(folder)]
    print("running:", " ".join(command))
    subprocess.run(command, check=True)
    wheels = sorted(folder.glob("nilearn-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download left no nilearn wheel in {folder}")
    return wheels[-1]


def read_nifti(source: NilearnSource, member: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 voxels and the affine of a gzipped NIfTI member."""
    image = nib.Nifti1Image.from_bytes(gzip.decompress(source.read(member)))
    array = np.asarray(image.dataobj.get_unscaled())
    if array.dtype != np.uint8:
        raise SystemExit(f"{member}: expected uint8 voxels, found {array.dtype}")
    return array, image.affine.copy()


# ------------------------------------------------------------------------------------------------- geometry ---
def grid_affine(origin: tuple[float, ...], spacing: float) -> np.ndarray:
    """Axis-aligned RAS affine with the given origin (centre of voxel 0) and isotropic spacing."""
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def world_axes(shape: tuple[int, ...], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RAS coordinates of the voxel centres along i, j, k, shaped for broadcasting (axis-aligned affines only)."""
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))) or np.any(np.diag(affine)[:3] <= 0):
        raise SystemExit(f"expected an axis-aligned RAS affine with positive spacing, found\n{affine}")
    axes = [affine[d, 3] + affine[d, d] * np.arange(shape[d]) for d in range(3)]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def resample(
    array: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], target: np.ndarray, order: int
) -> np.ndarray:
    """Resample ``array`` onto the grid (shape, target affine): order 1 linear, 0 nearest; zero outside."""
    voxel_map = np.linalg.inv(affine) @ target
    out = ndi.affine_transform(
        array.astype(np.float64),
        voxel_map[:3, :3],
        voxel_map[:3, 3],
        output_shape=shape,
        order=order,
        mode="constant",
        cval=0.0,
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ derivation ---
def tissue_maps(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> dict[str, np.ndarray]:
    """Brain mask and CSF/GM/WM probabilities (uint8, 255 = 1) that sum to 255 inside the mask, 0 outside.

    The mask is the support of nilearn's skull-stripped T1 (T1 > 0); CSF = clip(1 - GM - WM) inside it.
    """
    mask = t1 > 0
    gm = np.where(mask, gm, 0).astype(np.int16)
    wm = np.where(mask, wm, 0).astype(np.int16)
    csf = np.where(mask, np.clip(255 - gm - wm, 0, 255), 0).astype(np.int16)
    maps = {"brain_mask": mask, "csf": csf, "gm": gm, "wm": wm}
    return {name: array.astype(np.uint8) for name, array in maps.items()}


def tissue_labels(maps: dict[str, np.ndarray]) -> np.ndarray:
    """Label map 1 CSF, 2 GM, 3 WM (the most probable class; ties go to the lower label) inside the mask."""
    stack = np.stack([maps["csf"], maps["gm"], maps["wm"]])
    labels = (np.argmax(stack, axis=0) + 1).astype(np.uint8)
    labels[maps["brain_mask"] == 0] = 0
    return labels


def _box(x: np.ndarray, y: np.ndarray, z: np.ndarray, box: dict[str, tuple[float, float]], side: float) -> np.ndarray:
    """Voxels inside ``box`` (MNI mm) on one side (-1 left, +1 right)."""
    inside = np.ones(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=bool)
    for values, (low, high) in ((side * x, box["abs_x"]), (y, box["y"]), (z, box["z"])):
        inside = inside & (values >= low) & (values <= high)
    return inside


def lateral_ventricles(
    t1: np.ndarray, maps: dict[str, np.ndarray], affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Left and right lateral-ventricle masks, and a record of the parameters used.

    Method, per hemisphere (left: x < 0, right: x > 0; the mid-sagittal plane x = 0 is excluded):

    1. candidates: brain-mask voxels where CSF is the most probable class (csf > gm and csf > wm) and the T1 is
       dark (below the midpoint of the mean T1 of pure-CSF and pure-GM voxels, probability >= 0.9), inside the
       search box SEARCH_BOX of MNI coordinates;
    2. seed: the candidate with the highest CSF probability (then the darkest T1) inside SEED_BOX, the bodies of
       the lateral ventricles;
    3. the face-connected (6-neighbour) component of the candidates that holds the seed;
    4. cleanup: binary closing with the 6-neighbour cross, hole filling, and intersection with the brain mask and
       the search box.
    """
    x, y, z = world_axes(t1.shape, affine)
    mask = maps["brain_mask"] > 0
    csf, gm, wm = (maps[k].astype(np.int16) for k in ("csf", "gm", "wm"))
    pure = int(round(PURE_TISSUE * 255))
    t1_csf = float(t1[mask & (csf >= pure)].mean())
    t1_gm = float(t1[mask & (gm >= pure)].mean())
    dark_threshold = (t1_csf + t1_gm) / 2.0
    candidates = mask & (csf > gm) & (csf > wm) & (t1 < dark_threshold)
    cross = ndi.generate_binary_structure(3, 1)
    sides = {}
    seeds = {}
    for name, side in (("left", -1.0), ("right", 1.0)):
        search = _box(x, y, z, SEARCH_BOX, side)
        hemisphere = candidates & search
        seed_region = hemisphere & _box(x, y, z, SEED_BOX, side)
        if not seed_region.any():
            raise SystemExit(f"no CSF-dominant dark voxel in the {name} seed box {SEED_BOX}")
        index = np.flatnonzero(seed_region)
        best = index[np.lexsort((index, t1.ravel()[index], -csf.ravel()[index]))[0]]
        seed = np.unravel_index(best, t1.shape)
        components, _ = ndi.label(hemisphere, structure=cross)
        ventricle = components == components[seed]
        ventricle = ndi.binary_fill_holes(ndi.binary_closing(ventricle, structure=cross)) & mask & search
        touching = _touches_box_faces(ventricle, x, y, z, side)
        if touching:
            raise SystemExit(f"{name} lateral ventricle reaches the search box faces {touching}; widen SEARCH_BOX")
        sides[name] = ventricle
        seeds[name] = [float(x.ravel()[seed[0]]), float(y.ravel()[seed[1]]), float(z.ravel()[seed[2]])]
    record = {
        "t1_units": "source uint8 intensities (0..255)",
        "t1_mean_pure_csf": round(t1_csf, 3),
        "t1_mean_pure_gm": round(t1_gm, 3),
        "dark_t1_threshold": round(dark_threshold, 3),
        "seed_mm": seeds,
    }
    return sides["left"], sides["right"], record


def _touches_box_faces(region: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, side: float) -> list[str]:
    """Faces of SEARCH_BOX (other than the midline face) that ``region`` reaches."""
    touching = []
    coords = {"abs_x": side * x, "y": y, "z": z}
    for axis, (low, high) in SEARCH_BOX.items():
        values = np.broadcast_to(coords[axis], region.shape)[region]
        if axis != "abs_x" and values.size and values.min() <= low:
            touching.append(f"{axis}={low}")
        if values.size and values.max() >= high:
            touching.append(f"{axis}={high}")
    return touching


# --------------------------------------------------------------------------------------------------- writing ---
def nifti_bytes(array: np.ndarray, affine: np.ndarray, scaled: bool, description: str) -> bytes:
    """Deterministic gzipped NIfTI-1 bytes (uint8; ``scaled`` stores scl_slope = 1/255 so readers see 0..1)."""
    image = nib.Nifti1Image(np.asarray(array, dtype=np.uint8), affine)
    header = image.header
    header.set_data_dtype(np.uint8)
    header.set_xyzt_units("mm")
    header["descrip"] = description.encode("ascii")[:79]
    image.set_qform(affine, code=4)  # 4 = MNI_152
    image.set_sform(affine, code=4)
    if scaled:
        header.set_slope_inter(1.0 / 255.0, 0.0)
        header["cal_min"], header["cal_max"] = 0.0, 1.0
    else:
        header.set_slope_inter(1.0, 0.0)
    raw = image.to_bytes()
    return gzip.compress(raw, compresslevel=9, mtime=0)


def write_bytes(path: Path, data: bytes) -> None:
    """Write atomically (temporary file in the same folder, then rename)."""
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def compact_json(data: dict) -> str:
    """Indented JSON with lists of numbers kept on one line (affine rows, shapes, colours)."""
    text = json.dumps(data, indent=2)
    def one_line(match: re.Match) -> str:
        return "[" + ", ".join(value.strip() for value in match.group(0)[1:-1].split(",")) + "]"

    return re.sub(r"\[[^\[\]{}\"]*\]", one_line, text)


def volume_ml(mask: np.ndarray, spacing: float) -> float:
    """Volume of a binary mask in mL."""
    return round(float(np.count_nonzero(mask)) * spacing**3 / 1000.0, 3)


# ------------------------------------------------------------------------------------------------------ main ---
def build(source: NilearnSource, out: Path) -> dict:
    """Derive every template file from ``source`` into ``out``; returns the ``template.json`` content."""
    t1, affine = read_nifti(source, SOURCE_FILES["t1"])
    gm, gm_affine = read_nifti(source, SOURCE_FILES["gm"])
    wm, wm_affine = read_nifti(source, SOURCE_FILES["wm"])
    if not (t1.shape == gm.shape == wm.shape and np.allclose(affine, gm_affine) and np.allclose(affine, wm_affine)):
        raise SystemExit("the nilearn T1, GM and WM maps are not on one grid")
    description = source.read(DESCRIPTION_FILE).decode("utf-8")

    maps = tissue_maps(t1, gm, wm)
    labels = tissue_labels(maps)
    left, right, ventricle_record = lateral_ventricles(t1, maps, affine)
    labels[left | right] = LATERAL_VENTRICLES
    maps_full = {"t1": t1, **maps, "labels": labels}

    grids = {
        "1mm": (DISPLAY_SHAPE, grid_affine(WORKING_ORIGIN, DISPLAY_SPACING)),
        "2mm": (WORKING_SHAPE, grid_affine(WORKING_ORIGIN, WORKING_SPACING)),
    }
    kinds = {  # name -> (interpolation order, stored as 0..1 probability/intensity)
        "t1": (1, True),
        "brain_mask": (0, False),
        "labels": (0, False),
        "csf": (1, True),
        "gm": (1, True),
        "wm": (1, True),
    }
    out.mkdir(parents=True, exist_ok=True)
    resolutions = {}
    for resolution, (shape, target) in grids.items():
        files = {}
        resampled = {}
        for name, (order, scaled) in kinds.items():
            array = resample(maps_full[name], affine, shape, target, order)
            resampled[name] = array
            filename = f"mni_{name}_{resolution}.nii.gz"
            text = f"MNI ICBM152 2009a sym {name} {resolution} (DiffDefAtlas)"
            write_bytes(out / filename, nifti_bytes(array, target, scaled, text))
            files[name] = filename
        hx, hy, hz = world_axes(shape, target)
        spacing = float(target[0, 0])
        vent = resampled["labels"] == LATERAL_VENTRICLES
        left_ml = volume_ml(vent & (hx < 0), spacing)
        right_ml = volume_ml(vent & (hx > 0), spacing)
        resolutions[resolution] = {
            "shape": list(shape),
            "spacing_mm": [spacing] * 3,
            "affine": target.tolist(),
            "files": files,
            "sha256": {filename: hashlib.sha256((out / filename).read_bytes()).hexdigest() for filename in files.values()},
            "label_volumes_ml": {LABELS[k]["name"]: volume_ml(resampled["labels"] == k, spacing) for k in LABELS if k},
            "brain_mask_volume_ml": volume_ml(resampled["brain_mask"] > 0, spacing),
            "lateral_ventricles_ml": {"left": left_ml, "right": right_ml, "total": round(left_ml + right_ml, 3)},
        }
        _check_coverage(maps["brain_mask"] > 0, affine, shape, target)

    info = {
        "name": "MNI ICBM152 2009a nonlinear symmetric",
        "space": "MNI152NLin2009aSym (RAS millimetres)",
        "source": {
            "package": "nilearn",
            "version": source.version,
            "files": {member: source.sha256[member] for member in [*SOURCE_FILES.values(), DESCRIPTION_FILE]},
            "grid": {"shape": list(t1.shape), "affine": affine.tolist()},
        },
        "licence": "MNI ICBM152 permissive licence, see LICENSE "
        "(Copyright (C) 1993-2009 Louis Collins, MNI, McGill University)",
        "intensity": "t1, csf, gm and wm are stored as uint8 with scl_slope 1/255: readers see values in [0, 1]",
        "labels": {str(k): v for k, v in LABELS.items()},
        "resolutions": resolutions,
        "lateral_ventricles": {
            "method": (
                "per hemisphere: brain-mask voxels with csf > gm, csf > wm and T1 below dark_t1_threshold inside "
                "search_box_mm; the 6-connected component holding the seed (highest CSF probability in seed_box_mm); "
                "binary closing (6-neighbour cross), hole filling, intersection with the mask and search box"
            ),
            "search_box_mm": {k: list(v) for k, v in SEARCH_BOX.items()},
            "seed_box_mm": {k: list(v) for k, v in SEED_BOX.items()},
            "pure_tissue_probability": PURE_TISSUE,
            **ventricle_record,
            "volume_ml_source_grid": {"left": volume_ml(left, 1.0), "right": volume_ml(right, 1.0)},
        },
        "build": "python scripts/build_template.py --nilearn <nilearn wheel or install>",
    }
    write_bytes(out / "template.json", (compact_json(info) + "\n").encode("utf-8"))
    write_bytes(out / "LICENSE", MNI_LICENSE.encode("utf-8"))
    write_bytes(out / "NOTICE.txt", notice_text(source, description).encode("utf-8"))
    return info


def _check_coverage(mask: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], target: np.ndarray) -> None:
    """Fail unless every source brain voxel lies inside the field of view (voxel edges) of the target grid."""
    points = np.argwhere(mask)
    ijk = (np.c_[points, np.ones(len(points))] @ (np.linalg.inv(target) @ affine).T)[:, :3]
    if np.any(ijk < -0.5) or np.any(ijk > np.array(shape) - 0.5):
        raise SystemExit(f"the grid {shape} does not cover the brain mask")


def notice_text(source: NilearnSource, description: str) -> str:
    """NOTICE.txt: provenance, licence and references."""
    notes = description.split("Notes\n-----\n", 1)[-1].split("References\n", 1)[0].strip()
    return f"""\
MNI ICBM152 2009a nonlinear symmetric template, as shipped by DiffDefAtlas
==========================================================================

The files in this folder are derived from the MNI ICBM152 2009a nonlinear symmetric template
(T1, grey-matter and white-matter probability maps at 1 mm) redistributed inside the nilearn
package (version {source.version}, nilearn/datasets/data/mni_icbm152_{{t1,gm,wm}}_tal_nlin_sym_09a_converted.nii.gz).
DiffDefAtlas derived a brain mask, a CSF probability map, a tissue label map with a lateral-ventricle
label, and a cropped 2 mm working grid (scripts/build_template.py; method in docs/template.md).
The derived maps are not the MNI originals: report them as derived from ICBM152 2009a.

Copyright and licence of the template (also in LICENSE):

{MNI_LICENSE}
Source: https://www.bic.mni.mcgill.ca/~vfonov/icbm/2009/mni_icbm152_nlin_sym_09a_nifti.zip
        http://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009

References:
- V.S. Fonov, A.C. Evans, K. Botteron, C.R. Almli, R.C. McKinstry, D.L. Collins and BDCG. Unbiased average
  age-appropriate atlases for pediatric studies. NeuroImage 54(1):313-327, 2011. doi:10.1016/j.neuroimage.2010.07.033
- V.S. Fonov, A.C. Evans, R.C. McKinstry, C.R. Almli and D.L. Collins. Unbiased nonlinear average
  age-appropriate brain templates from birth to adulthood. NeuroImage 47(Supplement 1):S102, 2009
  (OHBM 2009). doi:10.1016/S1053-8119(09)70884-5
- D.L. Collins, A.P. Zijdenbos, W.F.C. Baare and A.C. Evans. ANIMAL+INSECT: improved cortical structure
  segmentation. Information Processing in Medical Imaging (IPMI) 1999, LNCS 1613:210-223.

nilearn's description of the dataset (nilearn/datasets/description/icbm152_2009.rst, notes section):

{notes}

nilearn itself is distributed under the BSD-3-Clause licence; no nilearn code is included here.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--nilearn", type=Path, help="nilearn wheel (.whl) or nilearn install folder; default: pip download"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: Resources/template)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.nilearn if args.nilearn is not None else download_wheel(Path(tmp))
        source = open_source(wheel)
        info = build(source, args.out)
    sizes = {p.name: p.stat().st_size for p in sorted(args.out.iterdir()) if p.is_file()}
    for name, size in sizes.items():
        print(f"{size / 1e6:8.3f} MB  {name}")
    print(f"{sum(sizes.values()) / 1e6:8.3f} MB  total in {args.out}")
    for resolution, entry in info["resolutions"].items():
        print(f"{resolution}: shape {entry['shape']}, lateral ventricles (mL) {entry['lateral_ventricles_ml']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
