"""Volumes of labelled structures in millilitres."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .imageio import Volume


def label_volumes_ml(labels: Volume, names: Mapping[int, str]) -> dict[str, float]:
    """Volume in mL of each named label (background excluded), from voxel counts and the voxel size.

    Example:
        >>> v = Volume(np.array([[[0, 1], [1, 2]]], dtype=np.uint8), np.diag([10.0, 10.0, 10.0, 1.0]))
        >>> label_volumes_ml(v, {1: "csf", 2: "gm"})
        {'csf': 2.0, 'gm': 1.0}
    """
    voxel_ml = labels.grid.voxel_volume / 1000.0
    counts = np.bincount(np.asarray(labels.array, dtype=np.int64).ravel(), minlength=max(names) + 1)
    return {name: float(counts[value] * voxel_ml) for value, name in names.items() if value != 0}
