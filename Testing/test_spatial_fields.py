"""Integration, warping, composition, inversion and resampling against SimpleITK and analytic answers."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.linalg import expm

from DiffDefAtlasLib.imageio import Volume, volume_from_sitk, volume_to_sitk
from DiffDefAtlasLib.spatial import (
    Grid,
    compose_displacements,
    displacement_to_sitk,
    integrate_velocity,
    invert_displacement,
    resample_displacement,
    to_voxel_units,
    warp_image,
    warp_labels,
)
from DiffDefAtlasLib.spatial.fields import moving_voxel_coordinates
from fieldfactory import linear_field, rotation_affine, smooth_random_field, t, world_points


def _blob(grid: Grid, centre, radius: float) -> np.ndarray:
    x = world_points(grid) - np.asarray(centre).reshape(-1, *([1] * grid.spatial_dims))
    r2 = (x**2).sum(0)
    return np.exp(-r2 / (2 * radius**2)) * (1 + 0.3 * np.sin(x[0] / 3.0))


def test_warp_matches_simpleitk_displacement_transform():
    """Reference: SimpleITK Resample through a DisplacementFieldTransform (oblique moving grid, linear)."""
    fixed = Grid((30, 34, 28), np.array([[1.5, 0, 0, -22], [0, 1.4, 0, -24], [0, 0, 1.6, -20], [0, 0, 0, 1.0]]))
    moving = Grid((40, 44, 36), rotation_affine((40, 44, 36), (1.1, 1.2, 1.3), angle=0.2))
    image = _blob(moving, centre=(1.0, -2.0, 3.0), radius=7.0)
    u = smooth_random_field(fixed.shape, amplitude_mm=4.0, sigma_vox=4.0, seed=3)
    ours = warp_image(t(image[None])[0][None], t(u), fixed, moving)[0, 0].numpy()

    reference_image = volume_to_sitk(Volume(np.zeros(fixed.shape), fixed.affine))
    transform = sitk.DisplacementFieldTransform(displacement_to_sitk(u, fixed))
    warped = sitk.Resample(volume_to_sitk(Volume(image, moving.affine)), reference_image, transform, sitk.sitkLinear, 0.0)
    ref = volume_from_sitk(warped, dtype=np.float64).array
    assert np.abs(ref).max() > 0.5
    # Within half a voxel outside the moving image ITK clamps while grid_sample fades to zero: a boundary
    # convention, so compare where the sample points fall inside the moving image (most of the volume).
    coords = moving_voxel_coordinates(t(u), fixed, moving)[0].numpy()
    inside = np.all([(coords[d] >= 0) & (coords[d] <= moving.shape[d] - 1) for d in range(3)], axis=0)
    assert inside.mean() > 0.8
    rel = np.linalg.norm((ours - ref)[inside]) / np.linalg.norm(ref[inside])
    assert rel <= 1e-3


def test_warp_labels_matches_simpleitk_nearest():
    """Reference: SimpleITK nearest-neighbour resampling of a label map through the same transform."""
    fixed = Grid((24, 26, 22), np.diag([2.0, 2.0, 2.0, 1.0]) + np.array([[0, 0, 0, -24], [0, 0, 0, -26], [0, 0, 0, -22], [0, 0, 0, 0]]))
    moving = Grid((48, 52, 44), np.diag([1.0, 1.0, 1.0, 1.0]) + np.array([[0, 0, 0, -24], [0, 0, 0, -26], [0, 0, 0, -22], [0, 0, 0, 0]]))
    labels = (np.floor(world_points(moving)[0] / 5) % 7 + 3 * (world_points(moving)[2] > 1.3)).astype(np.int64) + 1000
    u = smooth_random_field(fixed.shape, amplitude_mm=3.0, sigma_vox=4.0, seed=4)
    ours = warp_labels(torch.as_tensor(labels)[None, None], t(u), fixed, moving)[0, 0].numpy()
    transform = sitk.DisplacementFieldTransform(displacement_to_sitk(u, fixed))
    ref_img = sitk.Resample(
        volume_to_sitk(Volume(labels.astype(np.int32), moving.affine)),
        volume_to_sitk(Volume(np.zeros(fixed.shape), fixed.affine)),
        transform, sitk.sitkNearestNeighbor, 0,
    )
    ref = volume_from_sitk(ref_img, dtype=None).array
    assert ours.dtype == np.int64
    assert (ours == ref).mean() > 0.995  # ties at exactly half-voxel may round differently


def test_constant_velocity_is_translation_and_linear_velocity_is_matrix_exponential():
    """Reference: exp of a constant field is the same translation; exp of v(x) = Bx is x -> expm(B) x."""
    grid = Grid((40, 40, 40), np.diag([2.0, 2.0, 2.0, 1.0]) + np.array([[0, 0, 0, -39.0], [0, 0, 0, -39.0], [0, 0, 0, -39.0], [0, 0, 0, 0]]))
    v = np.ones((3, 40, 40, 40)) * np.array([2.0, -1.0, 0.5]).reshape(3, 1, 1, 1)
    np.testing.assert_allclose(integrate_velocity(t(v), grid)[0].numpy(), v, atol=1e-6)
    b = np.array([[0.0, -0.15, 0.0], [0.15, 0.0, 0.0], [0.0, 0.0, 0.05]])  # rotation + stretch
    u = integrate_velocity(t(linear_field(grid, b)), grid, steps=8)[0].numpy()
    exact = linear_field(grid, expm(b) - np.eye(3))
    centre = (slice(12, 28),) * 3  # away from the border, where the field is extended flat
    assert np.abs(u[(slice(None),) + centre] - exact[(slice(None),) + centre]).max() < 0.05


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_inverse_consistency_of_svf_exponentials(spatial_dims):
    """Reference: identity. exp(v) o exp(-v) moves points by < 0.1 voxel for fields of realistic size (~8 mm)."""
    shape = (64, 72) if spatial_dims == 2 else (48, 56, 48)
    affine = np.diag([2.0] * spatial_dims + [1.0])
    grid = Grid(shape, affine)
    v = t(smooth_random_field(shape, amplitude_mm=8.0, sigma_vox=5.0, seed=7))
    forward = integrate_velocity(v, grid)
    backward = integrate_velocity(-v, grid)
    assert forward.abs().max() > 6.0
    residual = to_voxel_units(compose_displacements(forward, backward, grid), grid)
    interior = (slice(None), slice(None)) + (slice(4, -4),) * spatial_dims
    assert torch.linalg.vector_norm(residual[interior], dim=1).max() < 0.1
    approx = invert_displacement(forward, grid)
    err = to_voxel_units(approx - backward, grid)
    assert torch.linalg.vector_norm(err[interior], dim=1).max() < 0.1


def test_resample_keeps_physical_field_and_voxel_units_rescale():
    """Reference: a linear field sampled analytically on the new grid; voxel units scale by the spacing ratio."""
    grid = Grid((40, 48, 40), np.diag([2.0, 2.0, 2.0, 1.0]))
    a = np.array([[0.02, 0.01, 0.0], [0.0, -0.03, 0.01], [0.01, 0.0, 0.02]])
    u = t(linear_field(grid, a))
    coarse = grid.zoomed(2)
    assert coarse.spacing == (4.0, 4.0, 4.0) and coarse.shape == (20, 24, 20)
    down = resample_displacement(u, grid, coarse)
    np.testing.assert_allclose(down[0].numpy(), linear_field(coarse, a), atol=1e-9)
    np.testing.assert_allclose(to_voxel_units(down, coarse).numpy() * 2.0, to_voxel_units(down, grid).numpy(), atol=1e-12)
    fine = grid.zoomed(0.5)
    up = resample_displacement(down, coarse, fine)
    inner = (slice(None), slice(None)) + (slice(4, -4),) * 3
    np.testing.assert_allclose(up[inner].numpy(), t(linear_field(fine, a))[inner].numpy(), atol=1e-9)


def test_warp_2d_translation_and_nearest_exact():
    """Reference: a whole-voxel shift moves pixels exactly (2D)."""
    grid = Grid((10, 12), np.array([[0.0, 2.0, 0.0], [-2.0, 0.0, 0.0], [0, 0, 1.0]]))
    image = torch.arange(120, dtype=torch.float64).reshape(1, 1, 10, 12)
    u = torch.zeros(1, 2, 10, 12, dtype=torch.float64)
    u[:, 1] = -2.0  # A-axis is -i, so moving 2 mm in -A means one voxel along +i
    out = warp_image(image, u, grid)
    np.testing.assert_allclose(out[0, 0, :-1].numpy(), image[0, 0, 1:].numpy())
    assert torch.all(out[0, 0, -1] == 0)
    labels = warp_labels(image.long(), u, grid)
    assert torch.equal(labels[0, 0, :-1], image.long()[0, 0, 1:])
