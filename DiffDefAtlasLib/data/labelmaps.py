"""Label conventions and their conversion to the library's five tissue classes.

The library's labels (the template's): 0 background, 1 CSF, 2 GM, 3 WM, 4 lateral ventricles.
Supported conventions:

- ``"diffdef"``: already 0-4.
- ``"fast"``: FSL FAST 3-class (1 CSF, 2 GM, 3 WM); no ventricle class (ventricles are in CSF).
- ``"brainweb"``: BrainWeb crisp labels 0-11 (1 CSF, 2 GM, 3 WM, 8 vessels to CSF, non-brain tissue to background);
  no ventricle class.
- ``"aseg"``: FreeSurfer aseg ids (cortex and deep grey nuclei to GM; cerebral/cerebellar WM, brain stem, ventral DC,
  corpus callosum to WM; lateral + inferior lateral ventricles and choroid plexus to 4; 3rd/4th/5th ventricle and
  extra-ventricular CSF to CSF), including SynthSeg's generation-only ids (136/137/163/164 ventricles, 5xx
  extra-cerebral tissue to background). ``"synthseg"`` is an alias.

For Dice against a convention without ventricles, merge class 4 into CSF on both sides with
:func:`merge_ventricles_into_csf`.
"""

from __future__ import annotations

from typing import Mapping, TypeVar

import numpy as np

from ..errors import DiffDefInputError

BACKGROUND, CSF, GM, WM, VENTRICLES = 0, 1, 2, 3, 4
#: Class ids of the library's labels (same as the template's ``LABEL_NAMES``).
TISSUE_CLASSES = {BACKGROUND: "background", CSF: "csf", GM: "gm", WM: "wm", VENTRICLES: "lateral_ventricles"}
#: Marker used by the synthesiser for non-brain tissue (fat, muscle, skull, ...): not a class of the library.
NON_BRAIN = -1

_ASEG: dict[int, int] = {0: BACKGROUND, 1: BACKGROUND, 40: BACKGROUND, 29: BACKGROUND, 61: BACKGROUND}
for _ids, _cls in (
    ((2, 41, 7, 46, 16, 28, 60, 25, 57, 77, 78, 79, 85, 86, 192, 251, 252, 253, 254, 255), WM),
    ((3, 42, 6, 45, 8, 47, 9, 48, 10, 49, 11, 50, 12, 51, 13, 52, 17, 53, 18, 54, 19, 55, 20, 56, 26, 58, 27, 59,
      30, 62, 80, 81, 82), GM),
    ((4, 43, 5, 44, 31, 63, 136, 137, 163, 164), VENTRICLES),
    ((14, 15, 24, 72), CSF),
):
    _ASEG.update({i: _cls for i in _ids})
# SynthSeg's extra-cerebral generation classes (skull, scalp, fat, ...).
_ASEG_NON_BRAIN = (502, 506, 507, 508, 509, 511, 512, 514, 515, 516, 530)
_ASEG.update({i: NON_BRAIN for i in _ASEG_NON_BRAIN})

_BRAINWEB = {0: BACKGROUND, 1: CSF, 2: GM, 3: WM, 8: CSF, **{i: NON_BRAIN for i in (4, 5, 6, 7, 9, 10, 11)}}

#: Per convention: source label id -> library class (``NON_BRAIN`` becomes background after conversion).
CONVENTIONS: dict[str, dict[int, int]] = {
    "diffdef": {i: i for i in TISSUE_CLASSES},
    "fast": {0: BACKGROUND, 1: CSF, 2: GM, 3: WM},
    "brainweb": _BRAINWEB,
    "aseg": _ASEG,
    "synthseg": _ASEG,
}

ArrayOrVolume = TypeVar("ArrayOrVolume")


def _table(convention: str) -> Mapping[int, int]:
    if convention not in CONVENTIONS:
        raise DiffDefInputError(f"unknown label convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")
    return CONVENTIONS[convention]


def has_ventricles(convention: str) -> bool:
    """Whether labels in ``convention`` separate the lateral ventricles from other CSF.

    Example:
        >>> has_ventricles("aseg"), has_ventricles("fast")
        (True, False)
    """
    return VENTRICLES in _table(convention).values()


def as_label_array(array: np.ndarray, name: str = "labels") -> np.ndarray:
    """Integer copy of a label array; float arrays must hold whole numbers (as some NIfTI label maps do)."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int32, copy=False)
    rounded = np.rint(array)
    if not np.allclose(rounded, array, atol=1e-3):
        raise DiffDefInputError(f"{name}: expected integer label values, found fractional values")
    return rounded.astype(np.int32)


def class_lookup(array: np.ndarray, convention: str, *, name: str = "labels") -> np.ndarray:
    """Per voxel, the library class of its label (``NON_BRAIN`` = -1 kept). Unknown ids raise."""
    table = _table(convention)
    labels = as_label_array(array, name)
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if low >= 0 and high < 1 << 20:
        ids = np.flatnonzero(np.bincount(labels.ravel(), minlength=1))  # O(n), faster than np.unique's sort
        if labels.size == 0:
            ids = ids[:0]
    else:
        ids = np.unique(labels)
    unknown = [int(i) for i in ids if int(i) not in table]
    if unknown:
        raise DiffDefInputError(
            f"{name}: label ids {unknown[:10]}{'...' if len(unknown) > 10 else ''} are not part of the {convention!r} convention"
        )
    offset = min(low, 0)
    lut = np.zeros(high - offset + 1, dtype=np.int8)
    for i in ids:
        lut[int(i) - offset] = table[int(i)]
    return lut[labels - offset] if offset else lut[labels]


def to_diffdef_labels(labels: ArrayOrVolume, convention: str, *, name: str = "labels") -> ArrayOrVolume:
    """Convert a label array or :class:`~DiffDefAtlasLib.imageio.Volume` to the library's 0-4 classes (uint8).

    Example:
        >>> to_diffdef_labels(np.array([0, 3, 42, 43, 24, 507]), "aseg")
        array([0, 2, 2, 4, 1, 0], dtype=uint8)
    """
    if hasattr(labels, "array") and hasattr(labels, "affine"):
        from ..imageio import Volume

        return Volume(to_diffdef_labels(labels.array, convention, name=name), labels.affine)  # type: ignore[return-value]
    classes = class_lookup(np.asarray(labels), convention, name=name)
    classes[classes == NON_BRAIN] = BACKGROUND
    return classes.astype(np.uint8)  # type: ignore[return-value]


def merge_ventricles_into_csf(labels: np.ndarray) -> np.ndarray:
    """Library labels with class 4 (lateral ventricles) relabelled CSF, to compare with FAST or BrainWeb labels."""
    out = np.array(labels, dtype=np.uint8, copy=True)
    out[out == VENTRICLES] = CSF
    return out
