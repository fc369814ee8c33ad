"""Tissue and ventricle volumes (mL) of a subject, usable as conditions.

- From the subject's own labels (:func:`tissue_volumes`), in any convention of :mod:`~DiffDefAtlasLib.data.labelmaps`.
- Without labels, by propagating the template's labels through the subject's registration
  (:func:`propagated_volumes`): a template region R maps to T(R) in the subject, whose volume is
  the integral over R of |det DT|. For an affine T that is |det A| times the template volume; pass the Jacobian
  determinant of a deformable template-to-subject map to include local changes.
- For labels in MNI space after an affine normalisation (IXI FAST), :func:`central_csf_volume` counts CSF in a box
  around the lateral ventricles, a ventricle proxy for conventions without a ventricle class.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DiffDefInputError
from ..imageio import Volume
from .labelmaps import CSF, GM, VENTRICLES, WM, has_ventricles, to_diffdef_labels

#: Box around the lateral ventricles in MNI space (RAS mm, inclusive): x, y, z ranges.
MNI_VENTRICLE_BOX: tuple[tuple[float, float], ...] = ((-25.0, 25.0), (-45.0, 25.0), (-5.0, 30.0))

VOLUME_KEYS = (
    "csf_volume_ml",
    "gm_volume_ml",
    "wm_volume_ml",
    "ventricle_volume_ml",
    "brain_volume_ml",
    "intracranial_volume_ml",
    "gm_fraction",
    "wm_fraction",
    "csf_fraction",
    "ventricle_fraction",
)


def volumes_from_class_ml(csf: float, gm: float, wm: float, ventricles: float) -> dict[str, float]:
    """The standard volume dictionary from per-class volumes in mL (``ventricles`` NaN when not separated).

    ``csf_volume_ml`` is CSF outside the lateral ventricles when they are separated, all CSF otherwise;
    ``csf_fraction`` always counts all CSF.
    """
    vent = 0.0 if math.isnan(ventricles) else ventricles
    icv = csf + gm + wm + vent
    frac = (lambda v: v / icv) if icv > 0 else (lambda v: math.nan)
    return {
        "csf_volume_ml": csf,
        "gm_volume_ml": gm,
        "wm_volume_ml": wm,
        "ventricle_volume_ml": ventricles,
        "brain_volume_ml": gm + wm,
        "intracranial_volume_ml": icv,
        "gm_fraction": frac(gm),
        "wm_fraction": frac(wm),
        "csf_fraction": frac(csf + vent),
        "ventricle_fraction": frac(ventricles) if not math.isnan(ventricles) else math.nan,
    }


def tissue_volumes(labels: Volume, convention: str = "diffdef") -> dict[str, float]:
    """Volumes in mL (and fractions of the intracranial volume) from a label volume.

    Conventions without a ventricle class (``fast``, ``brainweb``) give ``ventricle_volume_ml`` = NaN.

    Example:
        >>> v = Volume(np.array([[[1, 2], [3, 4]]], dtype=np.uint8), np.diag([10.0, 10.0, 10.0, 1.0]))
        >>> round(tissue_volumes(v)["gm_volume_ml"], 6)
        1.0
    """
    if labels.array.ndim != 3:
        raise DiffDefInputError(f"volumes need a 3D label map, found {labels.array.ndim}D")
    classes = to_diffdef_labels(labels.array, convention)
    ml = labels.grid.voxel_volume / 1000.0
    counts = np.bincount(classes.ravel(), minlength=5).astype(np.float64) * ml
    vent = float(counts[VENTRICLES]) if has_ventricles(convention) else math.nan
    return volumes_from_class_ml(float(counts[CSF]), float(counts[GM]), float(counts[WM]), vent)


def propagated_volumes(
    template_labels: Volume,
    template_to_subject: np.ndarray | None = None,
    jacobian: np.ndarray | None = None,
) -> dict[str, float]:
    """Subject volumes from the template's 0-4 labels carried through a template-to-subject map.

    ``template_to_subject`` is the 4x4 RAS matrix of the affine part (maps template points to subject points);
    ``jacobian`` an optional per-voxel det J (on the template labels' grid) of a further deformable map.

    Example:
        >>> labels = Volume(np.full((10, 10, 10), 2, np.uint8), np.eye(4))
        >>> propagated_volumes(labels, np.diag([2.0, 1.0, 1.0, 1.0]))["gm_volume_ml"]
        2.0
    """
    scale = 1.0
    if template_to_subject is not None:
        matrix = np.asarray(template_to_subject, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise DiffDefInputError(f"template_to_subject must be a 4x4 matrix, found shape {matrix.shape}")
        scale = abs(float(np.linalg.det(matrix[:3, :3])))
    classes = np.asarray(template_labels.array).astype(np.int64)
    weights = None
    if jacobian is not None:
        jacobian = np.asarray(jacobian, dtype=np.float64)
        if jacobian.shape != classes.shape:
            raise DiffDefInputError(f"jacobian must have the template labels' shape {classes.shape}, found {jacobian.shape}")
        weights = jacobian.ravel()
    counts = np.bincount(classes.ravel(), weights=weights, minlength=5) * scale * template_labels.grid.voxel_volume / 1000.0
    return volumes_from_class_ml(float(counts[CSF]), float(counts[GM]), float(counts[WM]), float(counts[VENTRICLES]))


def central_csf_volume(
    labels: Volume, convention: str = "fast", box: tuple[tuple[float, float], ...] = MNI_VENTRICLE_BOX
) -> float:
    """CSF (and ventricle) volume in mL inside a world-space ``box`` (default: around the MNI lateral ventricles).

    Meaningful for labels in MNI space (e.g. FAST segmentations after affine normalisation).

    Example:
        >>> v = Volume(np.ones((3, 3, 3), np.uint8), np.eye(4))
        >>> central_csf_volume(v, "fast", box=((0, 1), (0, 1), (0, 1)))
        0.008
    """
    classes = to_diffdef_labels(labels.array, convention)
    mask = (classes == CSF) | (classes == VENTRICLES)
    ijk = np.argwhere(mask)
    if ijk.size == 0:
        return 0.0
    xyz = labels.grid.voxel_to_world_points(ijk.astype(np.float64))
    inside = np.ones(len(xyz), dtype=bool)
    for axis, (lo, hi) in enumerate(box):
        inside &= (xyz[:, axis] >= lo) & (xyz[:, axis] <= hi)
    return float(inside.sum()) * labels.grid.voxel_volume / 1000.0


def guess_convention(label_ids) -> str:
    """Guess the label convention from the ids present: 0-3 ``fast``, 0-4 ``diffdef``, up to 11 ``brainweb``, else ``aseg``.

    Example:
        >>> guess_convention([0, 2, 3, 41, 42])
        'aseg'
    """
    ids = [int(i) for i in label_ids]
    top = max(ids) if ids else 0
    if top <= 3:
        return "fast"
    if top == 4:
        return "diffdef"
    if top <= 11:
        return "brainweb"
    return "aseg"
