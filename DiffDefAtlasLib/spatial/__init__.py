"""Spatial core: grids in physical (RAS mm) space and dense deformation fields, 2D and 3D.

Fields are torch tensors ``(B, ndim, *shape)`` of RAS-mm displacements on a :class:`Grid`.
A field ``u`` warps a moving image ``M`` as ``warped(x) = M(x + u(x))``.
"""

from .convert import (
    displacement_from_sitk,
    displacement_from_slicer_array,
    displacement_to_sitk,
    displacement_to_slicer_array,
)
from .fields import (
    compose_displacements,
    integrate_velocity,
    invert_displacement,
    resample_displacement,
    resize_velocity,
    to_physical_units,
    to_voxel_units,
    vector_length,
    warp_image,
    warp_labels,
)
from .grid import Grid
from .jacobian import (
    displacement_gradient,
    folding_mask,
    folding_ratio,
    jacobian_determinant,
    jacobian_smoothness,
    jacobian_summary,
    log_jacobian_std,
)

__all__ = [
    "Grid",
    "compose_displacements",
    "displacement_from_sitk",
    "displacement_from_slicer_array",
    "displacement_gradient",
    "displacement_to_sitk",
    "displacement_to_slicer_array",
    "folding_mask",
    "folding_ratio",
    "integrate_velocity",
    "invert_displacement",
    "jacobian_determinant",
    "jacobian_smoothness",
    "jacobian_summary",
    "log_jacobian_std",
    "resample_displacement",
    "resize_velocity",
    "to_physical_units",
    "to_voxel_units",
    "vector_length",
    "warp_image",
    "warp_labels",
]
