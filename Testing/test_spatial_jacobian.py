"""Jacobian determinant, folding and smoothness against SimpleITK and analytic fields."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DiffDefAtlasLib.spatial import (
    Grid,
    displacement_to_sitk,
    folding_mask,
    folding_ratio,
    jacobian_determinant,
    jacobian_smoothness,
    jacobian_summary,
)
from DiffDefAtlasLib.spatial.convert import itk_to_ras_affine
from fieldfactory import linear_field, rotation_affine, smooth_random_field, t


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.9375, 1.2, 2.0), (2.0, 1.5, 0.8)])
def test_jacobian_matches_simpleitk_identity_direction(spacing):
    """Reference: SimpleITK DisplacementFieldJacobianDeterminantFilter (identity direction, anisotropic spacing)."""
    shape = (24, 28, 20)
    affine = itk_to_ras_affine(origin=(-11.0, 7.5, 3.0), spacing=spacing, direction=np.eye(3).ravel())
    grid = Grid(shape, affine)
    u = smooth_random_field(shape, amplitude_mm=6.0, sigma_vox=3.0, seed=1)
    ours = jacobian_determinant(t(u), grid)[0].numpy()
    field = displacement_to_sitk(u, grid)
    ref = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field)).transpose(2, 1, 0)
    interior = (slice(1, -1),) * 3
    assert ours.min() < 0.9 and ours.max() > 1.1, "field must deform noticeably for the test to mean something"
    assert np.max(np.abs(ours[interior] - ref[interior])) <= 1e-3


def test_jacobian_exact_for_linear_field_on_rotated_grid():
    """Reference: analytic det(I + A) for u(x) = A x on an oblique, anisotropic grid (ITK ignores direction)."""
    shape = (20, 22, 18)
    grid = Grid(shape, rotation_affine(shape, (1.3, 0.9, 2.1), angle=0.3))
    a = np.array([[0.05, 0.02, -0.03], [0.01, -0.04, 0.02], [0.03, 0.01, 0.06]])
    u = linear_field(grid, a, centre=(4.0, -2.0, 1.0))
    ours = jacobian_determinant(t(u), grid)[0].numpy()
    np.testing.assert_allclose(ours, np.linalg.det(np.eye(3) + a), atol=1e-9)


@pytest.mark.parametrize("scale", [0.8, 1.25])
def test_uniform_scaling_gives_cube_of_scale(scale):
    """Reference: u(x) = (s - 1)(x - c) maps x to a scaling by s about c, so det J = s^3 (s^2 in 2D)."""
    grid3 = Grid((16, 18, 14), np.diag([2.0, 1.5, 1.0, 1.0]))
    u3 = linear_field(grid3, (scale - 1.0) * np.eye(3), centre=(10.0, 12.0, 7.0))
    np.testing.assert_allclose(jacobian_determinant(t(u3), grid3).numpy(), scale**3, rtol=1e-9)
    grid2 = Grid((16, 18), np.array([[0.0, -1.5, 10.0], [2.0, 0.0, -3.0], [0.0, 0.0, 1.0]]))
    u2 = linear_field(grid2, (scale - 1.0) * np.eye(2))
    np.testing.assert_allclose(jacobian_determinant(t(u2), grid2).numpy(), scale**2, rtol=1e-9)


def test_folding_ratio_counts_nonpositive_and_negative():
    """Reference: a field compressing x by a known factor in a known box folds exactly that box."""
    grid = Grid((20, 10, 10), np.eye(4))
    u = np.zeros((3, 20, 10, 10))
    # u_x(x) = -2 (x - 10) on voxels 8..12 gives du/dx = -2, det = -1 there (central differences inside the box).
    x = np.arange(20.0)
    slope = np.where((x >= 7) & (x <= 13), -2.0 * (x - 10.0), np.where(x < 7, 6.0, -6.0))
    u[0] = slope[:, None, None]
    jac = jacobian_determinant(t(u), grid)[0]
    assert np.allclose(jac.numpy()[8:13], -1.0)
    ratios = folding_ratio(jac)
    assert ratios["negative"] == pytest.approx(folding_mask(jac, strict=True).float().mean().item())
    assert ratios["negative"] >= 5 / 20
    # det J = 0 exactly counts as folding for "nonpositive" only.
    zero = torch.tensor([0.0, 0.0, 1.0, 2.0])
    assert folding_ratio(zero) == {"nonpositive": 0.5, "negative": 0.0}


def test_smoothness_of_linear_detj_is_its_slope():
    """Reference: det J = 1 + 0.01 x (x in mm) has |grad det J| = 0.01 per mm everywhere."""
    grid = Grid((12, 12, 12), np.diag([2.0, 2.0, 2.0, 1.0]))
    x = np.arange(12) * 2.0
    detj = torch.as_tensor(1.0 + 0.01 * np.broadcast_to(x[:, None, None], (12, 12, 12)).copy())[None]
    assert jacobian_smoothness(detj, grid) == pytest.approx(0.01, rel=1e-9)
    summary = jacobian_summary(detj, grid)
    assert summary["detj_min"] == pytest.approx(1.0) and summary["detj_max"] == pytest.approx(1.22)


def test_axis_aligned_shortcut_equals_the_general_chain_rule():
    """Reference: the same field on a grid whose linear part has a 1e-9 shear (general einsum path) against the
    exactly diagonal grid (per-axis scaling path)."""
    from DiffDefAtlasLib.spatial.jacobian import displacement_gradient

    generator = torch.Generator().manual_seed(0)
    u = torch.randn((1, 3, 7, 8, 9), generator=generator, dtype=torch.float64)
    diagonal = np.diag([1.5, 2.0, 0.8, 1.0])
    sheared = diagonal.copy()
    sheared[0, 1] = 1e-9
    fast = displacement_gradient(u, Grid((7, 8, 9), diagonal))
    general = displacement_gradient(u, Grid((7, 8, 9), sheared))
    assert fast.shape == general.shape == (1, 3, 3, 7, 8, 9)
    assert torch.allclose(fast, general, atol=1e-6)
