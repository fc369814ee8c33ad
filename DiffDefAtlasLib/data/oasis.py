"""OASIS-1 cross-sectional 2D slices (shared data ``oasis1_2d/``) as a 2D cohort with a fixed train/validation split.

Images are 8-bit JPEGs of atlas-registered (Talairach), skull-stripped T1 slices, read as float32 in [0, 1].
Geometry (1 mm pixels, centred on the image; the array is indexed [column, row]):

- axial (176 x 208): i -> Left, j -> Posterior (anterior at the top of the picture); world axes (R, A);
- coronal (176 x 176): i -> Left, j -> Inferior; world axes (R, S);
- sagittal (208 x 176): i -> Anterior, j -> Inferior; world axes (A, S).

Left/right cannot be checked from the JPEGs; the radiological reading (picture right = subject left) is assumed,
the same one SimpleITK gives a plain 2D picture, so ``read_image`` on the JPEG agrees up to the origin.

:func:`central_dark_area` measures a 2D ventricle proxy (dark pixels in the centre of the atlas-registered slice).

Split: subjects are stratified by age decade (60s, 70s, 80s, 90s); within a decade they are ordered by
SHA-256 of ``"<salt>:<subject_id>"`` and the first ``round(0.2 * n)`` go to validation. It depends only on the ids,
ages and the salt, not on a random-number library (120 train / 30 validation for the 150 subjects).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from ..errors import DiffDefInputError
from ..imageio import Volume, write_image
from ..resources import missing_data_message, shared_data_dir
from .cohort import Cohort, Subject, write_cohort
from ..conditions.columns import KNOWN_CONDITIONS

VIEWS = {"axial": "a", "coronal": "c", "sagittal": "s"}
CONDITIONS = ("age", "sex", "cdr", "mmse", "etiv", "nwbv")
SPLIT_SALT = "diffdef-oasis1-split-v1"
VALIDATION_FRACTION = 0.2
#: Central box of an axial slice, as fractions of (width, height): ``(i0, i1, j0, j1)``.
CENTRAL_BOX = (0.35, 0.65, 0.30, 0.60)


def _root(data_dir: str | Path | None) -> Path:
    path = Path(data_dir) if data_dir is not None else shared_data_dir()
    if path is None or not (Path(path) / "oasis1_2d" / "subjects.csv").is_file():
        raise DiffDefInputError(missing_data_message("OASIS-1 2D data", "oasis1_2d/subjects.csv", data_dir))
    return Path(path) / "oasis1_2d"


def oasis_affine(view: str = "axial", shape: tuple[int, int] | None = None) -> np.ndarray:
    """3x3 pixel-to-world affine (1 mm, centred) of an OASIS slice; see the module docstring for the axes.

    Example:
        >>> oasis_affine("axial") @ [87.5, 103.5, 1]
        array([0., 0., 1.])
    """
    if view not in VIEWS:
        raise DiffDefInputError(f"unknown OASIS view {view!r}; expected one of {', '.join(VIEWS)}")
    default = {"axial": (176, 208), "coronal": (176, 176), "sagittal": (208, 176)}[view]
    shape = shape or default
    signs = {"axial": (-1.0, -1.0), "coronal": (-1.0, -1.0), "sagittal": (1.0, -1.0)}[view]
    affine = np.diag([signs[0], signs[1], 1.0])
    affine[:2, 2] = -np.array(signs) * (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    return affine


def read_oasis_table(data_dir: str | Path | None = None) -> list[dict[str, str]]:
    """Rows of ``oasis1_2d/subjects.csv`` as dictionaries of strings."""
    with open(_root(data_dir) / "subjects.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def oasis_image_path(subject_id: str, view: str = "axial", data_dir: str | Path | None = None) -> Path:
    """Path of a subject's JPEG slice."""
    if view not in VIEWS:
        raise DiffDefInputError(f"unknown OASIS view {view!r}; expected one of {', '.join(VIEWS)}")
    return _root(data_dir) / "images" / f"{subject_id}_{VIEWS[view]}.jpg"


def load_oasis_slice(subject_id: str, view: str = "axial", data_dir: str | Path | None = None) -> Volume:
    """A subject's slice as a 2D :class:`Volume` (float32 in [0, 1], 1 mm, centred affine).

    Example:
        >>> load_oasis_slice("OAS1_0001_MR1").array.shape  # doctest: +SKIP
        (176, 208)
    """
    from PIL import Image

    path = oasis_image_path(subject_id, view, data_dir)
    if not path.is_file():
        raise DiffDefInputError(f"{path}: OASIS slice not found")
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("L"), dtype=np.float32) / 255.0  # [row, column]
    array = np.ascontiguousarray(pixels.T)  # [column, row] = [i, j]
    return Volume(array, oasis_affine(view, array.shape))


def age_decade(age: float) -> int:
    """Decade stratum of an age, e.g. 74 -> 70."""
    return int(age // 10 * 10)


def split_subjects(
    ages: dict[str, float], validation_fraction: float = VALIDATION_FRACTION, salt: str = SPLIT_SALT
) -> dict[str, str]:
    """Deterministic split stratified by age decade: subject id -> ``"train"`` or ``"validation"``.

    Example:
        >>> split = split_subjects({f"s{i}": 60 + i for i in range(10)})
        >>> sorted(split.values()).count("validation")
        2
    """
    if not 0 <= validation_fraction < 1:
        raise DiffDefInputError(f"validation_fraction must be in [0, 1), found {validation_fraction}")
    strata: dict[int, list[str]] = {}
    for sid, age in ages.items():
        strata.setdefault(age_decade(age), []).append(sid)
    split = {}
    for members in strata.values():
        members.sort(key=lambda s: hashlib.sha256(f"{salt}:{s}".encode()).hexdigest())
        n_val = int(round(validation_fraction * len(members)))
        for rank, sid in enumerate(members):
            split[sid] = "validation" if rank < n_val else "train"
    return split


def oasis_cohort(view: str = "axial", split: str | None = None, data_dir: str | Path | None = None) -> Cohort:
    """The OASIS-1 2D cohort (JPEG paths, conditions age, sex, cdr, mmse, etiv, nwbv), optionally one split.

    Example:
        >>> len(oasis_cohort(split="train")), len(oasis_cohort(split="validation"))  # doctest: +SKIP
        (120, 30)
    """
    if split not in (None, "train", "validation"):
        raise DiffDefInputError(f"split must be 'train', 'validation' or None, found {split!r}")
    rows = read_oasis_table(data_dir)
    assignment = split_subjects({r["subject_id"]: float(r["age"]) for r in rows})
    subjects = []
    for row in rows:
        sid = row["subject_id"]
        if split is not None and assignment[sid] != split:
            continue
        conditions = {name: KNOWN_CONDITIONS[name].parse(row[name], where=f"OASIS {sid}") for name in CONDITIONS}
        subjects.append(Subject(sid, oasis_image_path(sid, view, data_dir), None, conditions))
    specs = {name: KNOWN_CONDITIONS[name] for name in CONDITIONS}
    return Cohort(subjects, list(CONDITIONS), specs, None)


def export_oasis_cohort(out_dir: str | Path, view: str = "axial", data_dir: str | Path | None = None) -> dict[str, Path]:
    """Write every slice as a 2D NIfTI with its affine, and ``cohort_train.csv`` / ``cohort_validation.csv``.

    The training table's condition statistics (``cohort_train_condition_stats.json``) define the trained ranges;
    the validation table gets the same statistics. Returns the two CSV paths by split name.

    Example:
        >>> export_oasis_cohort("oasis2d")["train"]  # doctest: +SKIP
        PosixPath('oasis2d/cohort_train.csv')
    """
    out = Path(out_dir)
    paths = {}
    train_stats = oasis_cohort(view, "train", data_dir).stats()
    for split in ("train", "validation"):
        cohort = oasis_cohort(view, split, data_dir)
        for subject in cohort.subjects:
            target = out / "images" / f"{subject.subject_id}_{VIEWS[view]}.nii.gz"
            if not target.is_file():
                write_image(load_oasis_slice(subject.subject_id, view, data_dir), target)
            subject.image = target
        paths[split] = write_cohort(cohort, out / f"cohort_{split}.csv", stats=train_stats)
    return paths


def central_dark_area(volume: Volume, box: tuple[float, float, float, float] = CENTRAL_BOX, threshold: float = 0.5) -> float:
    """Area (mm^2) of pixels darker than ``threshold`` times the median brain intensity inside a central ``box``.

    A 2D proxy of the lateral ventricles on the atlas-registered OASIS axial slices (the box is in fractions of the
    picture, so in Talairach coordinates). Over the 150 subjects it grows with age (r = 0.37, about 1.6 %/yr).

    Example:
        >>> area = central_dark_area(load_oasis_slice("OAS1_0001_MR1"))  # doctest: +SKIP
    """
    array = np.asarray(volume.array, dtype=np.float32)
    if array.ndim != 2:
        raise DiffDefInputError(f"central_dark_area expects a 2D slice, found {array.ndim}D")
    brain = array > 0.05 * float(array.max() or 1.0)
    if not brain.any():
        return 0.0
    median = float(np.median(array[brain]))
    (n_i, n_j) = array.shape
    i0, i1 = int(round(box[0] * n_i)), int(round(box[1] * n_i))
    j0, j1 = int(round(box[2] * n_j)), int(round(box[3] * n_j))
    dark = array[i0:i1, j0:j1] < threshold * median
    return float(dark.sum()) * volume.grid.voxel_volume
