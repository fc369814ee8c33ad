"""IXI data in the shared folder (``ixi_3d/``): T1 volumes, FSL FAST tissue segmentations and PVE maps, with age/sex.

- T1 (6 subjects): skull-stripped, N4-corrected, native space; a 3D cohort via :func:`ixi_t1_cohort`.
- FAST hard segmentations (13) and GM/WM partial-volume maps (11/15): FSL MNI152 1 mm space after an *affine*
  normalisation, so they keep individual anatomy (volumes are scaled by the normalisation, not equalised).
- :func:`ixi_tissue_measurements` and :func:`ixi_age_trends` measure the age trends of central CSF (a ventricle
  proxy, see :data:`~DiffDefAtlasLib.data.measure.MNI_VENTRICLE_BOX`) and tissue fractions.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DiffDefInputError
from ..imageio import Volume, read_image
from ..resources import missing_data_message, shared_data_dir
from .cohort import Cohort, Subject
from ..conditions.columns import KNOWN_CONDITIONS
from .labelmaps import as_label_array
from .measure import central_csf_volume, tissue_volumes


@dataclass
class IxiSubject:
    """One IXI subject: ``age`` (years), ``sex`` ("F"/"M"), ``site`` and its files by kind (``t1``, ``seg``, ``pve_gm``, ``pve_wm``)."""

    subject_id: str
    age: float
    sex: str
    site: str
    files: dict[str, Path] = field(default_factory=dict)
    seg_source: str = ""


@dataclass
class Trend:
    """A linear fit of a measurement on age: ``slope`` per year, ``intercept``, Pearson ``r``, its p-value, ``n``."""

    slope: float
    intercept: float
    r: float
    p_value: float
    n: int


def _root(data_dir: str | Path | None) -> Path:
    path = Path(data_dir) if data_dir is not None else shared_data_dir()
    if path is None or not (Path(path) / "ixi_3d" / "subjects.csv").is_file():
        raise DiffDefInputError(missing_data_message("IXI data", "ixi_3d/subjects.csv", data_dir))
    return Path(path) / "ixi_3d"


def _kind(relative: str) -> str:
    if relative.startswith("t1/"):
        return "t1"
    if relative.startswith("tissue_seg/"):
        return "seg"
    if relative.endswith("_pve_gm.nii.gz"):
        return "pve_gm"
    if relative.endswith("_pve_wm.nii.gz"):
        return "pve_wm"
    return "other"


def ixi_subjects(kind: str | None = None, data_dir: str | Path | None = None) -> list[IxiSubject]:
    """IXI subjects in the shared data, optionally only those with a file of ``kind`` (t1, seg, pve_gm, pve_wm).

    Example:
        >>> [s.subject_id for s in ixi_subjects("t1")]  # doctest: +SKIP
        ['IXI259', 'IXI296', 'IXI381', 'IXI390', 'IXI401', 'IXI568']
    """
    root = _root(data_dir)
    out = []
    with open(root / "subjects.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            files = {_kind(f): root / f for f in row["files"].split(";") if f}
            subject = IxiSubject(row["subject_id"], float(row["age"]), row["sex"], row["site"], files, row.get("seg_source", ""))
            if kind is None or kind in subject.files:
                out.append(subject)
    return out


def ixi_t1_cohort(data_dir: str | Path | None = None) -> Cohort:
    """The IXI T1 subjects as a 3D cohort with conditions age and sex (ready for ``prepare_cohort``)."""
    subjects = [
        Subject(s.subject_id, s.files["t1"], None, {"age": s.age, "sex": KNOWN_CONDITIONS["sex"].parse(s.sex)})
        for s in ixi_subjects("t1", data_dir)
    ]
    return Cohort(subjects, ["age", "sex"], {n: KNOWN_CONDITIONS[n] for n in ("age", "sex")}, None)


def load_ixi_segmentation(subject: IxiSubject) -> Volume:
    """A subject's FAST segmentation (int32: 0 background, 1 CSF, 2 GM, 3 WM) in MNI152 space."""
    if "seg" not in subject.files:
        raise DiffDefInputError(f"IXI subject {subject.subject_id} has no tissue segmentation")
    volume = read_image(subject.files["seg"], dtype=None)
    return Volume(as_label_array(volume.array, str(subject.files["seg"])), volume.affine)


def ixi_tissue_measurements(data_dir: str | Path | None = None, *, include_pve: bool = True) -> list[dict[str, float | str]]:
    """Per IXI subject with a FAST segmentation or PVE map: age, sex and measured volumes.

    Segmentations give ``central_csf_ml`` (CSF inside the MNI ventricle box) and the volumes of
    :func:`~DiffDefAtlasLib.data.measure.tissue_volumes`; PVE maps give ``gm_pve_ml`` or ``wm_pve_ml`` (sum of
    fractions). Volumes are in MNI space after affine normalisation, i.e. relative to head size.
    """
    rows: list[dict[str, float | str]] = []
    for subject in ixi_subjects(data_dir=data_dir):
        row: dict[str, float | str] = {"subject_id": subject.subject_id, "age": subject.age, "sex": subject.sex}
        if "seg" in subject.files:
            seg = load_ixi_segmentation(subject)
            row.update(tissue_volumes(seg, "fast"))
            row["central_csf_ml"] = central_csf_volume(seg, "fast")
        for kind in ("pve_gm", "pve_wm") if include_pve else ():
            if kind in subject.files:
                pve = read_image(subject.files[kind])
                row[f"{kind[4:]}_pve_ml"] = float(np.clip(pve.array, 0, 1).sum()) * pve.grid.voxel_volume / 1000.0
        if len(row) > 3:
            rows.append(row)
    return rows


def fit_trend(ages, values) -> Trend:
    """Least-squares line of ``values`` on ``ages`` with Pearson r (scipy ``linregress``)."""
    from scipy.stats import linregress

    ages, values = np.asarray(ages, dtype=np.float64), np.asarray(values, dtype=np.float64)
    keep = np.isfinite(ages) & np.isfinite(values)
    if keep.sum() < 3:
        raise DiffDefInputError(f"a trend needs at least 3 subjects with values, found {int(keep.sum())}")
    fit = linregress(ages[keep], values[keep])
    return Trend(float(fit.slope), float(fit.intercept), float(fit.rvalue), float(fit.pvalue), int(keep.sum()))


def ixi_age_trends(
    measurements: list[dict[str, float | str]] | None = None, data_dir: str | Path | None = None
) -> dict[str, Trend]:
    """Linear age trends of the IXI measurements (central CSF, tissue volumes and fractions, PVE volumes).

    Example:
        >>> trends = ixi_age_trends()  # doctest: +SKIP
        >>> round(trends["central_csf_ml"].r, 2), round(trends["gm_fraction"].r, 2)  # doctest: +SKIP
        (0.68, -0.62)
    """
    rows = measurements if measurements is not None else ixi_tissue_measurements(data_dir)
    keys = ("central_csf_ml", "csf_volume_ml", "gm_volume_ml", "wm_volume_ml", "intracranial_volume_ml",
            "gm_fraction", "wm_fraction", "csf_fraction", "gm_pve_ml", "wm_pve_ml")
    trends = {}
    for key in keys:
        pairs = [(float(r["age"]), float(r[key])) for r in rows if key in r]
        if len(pairs) >= 3:
            ages, values = zip(*pairs)
            trends[key] = fit_trend(ages, values)
    return trends
