"""Registration losses and the affine step, against MONAI, scipy, analytic fields and SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from DiffDefAtlasLib.imageio import Volume
from DiffDefAtlasLib.imaging.affine import AffineSettings, affine_register, ras_matrix_to_sitk, sitk_to_ras_matrix
from DiffDefAtlasLib.imaging.masks import dilate
from DiffDefAtlasLib.imaging.resampling import affine_displacement, resample, working_grid_for
from DiffDefAtlasLib.register.losses import LossConfig, lambda_negative_log_prior, masked_lncc, weighted_gradient_energy
from DiffDefAtlasLib.spatial import Grid


def test_masked_lncc_equals_monai_mean_with_full_mask():
    """Reference: MONAI's LocalNormalizedCrossCorrelationLoss with reduction='mean'."""
    from monai.losses import LocalNormalizedCrossCorrelationLoss

    torch.manual_seed(0)
    a, b = torch.rand(1, 1, 20, 24, 16), torch.rand(1, 1, 20, 24, 16)
    expected = LocalNormalizedCrossCorrelationLoss(3, kernel_size=5)(a, b)
    assert float(masked_lncc(a, b, torch.ones_like(a), 5)) == pytest.approx(float(expected), rel=1e-5)


def test_masked_lncc_ignores_voxels_outside_the_mask():
    """Changing the moving image outside the mask (beyond the kernel's reach) leaves the loss unchanged."""
    torch.manual_seed(1)
    a, b = torch.rand(1, 1, 40, 40), torch.rand(1, 1, 40, 40)
    mask = torch.zeros_like(a)
    mask[..., 5:15, 5:15] = 1
    changed = a.clone()
    changed[..., 25:, 25:] = 5.0
    assert float(masked_lncc(changed, b, mask, 5)) == pytest.approx(float(masked_lncc(a, b, mask, 5)), abs=1e-7)


def test_weighted_gradient_energy_of_a_linear_field():
    """Analytic: u(x) = 0.1 x (mm) has |grad u|^2 = 0.01 per component; weight 0.5 halves it; a translation costs 0."""
    grid = Grid((16, 12), np.diag([2.0, 1.0, 1.0]))
    x = torch.stack(torch.meshgrid(torch.arange(16.0) * 2.0, torch.arange(12.0), indexing="ij"))[None]
    u = 0.1 * x  # du0/dx0 = du1/dx1 = 0.1
    assert float(weighted_gradient_energy(u, grid)) == pytest.approx(0.02, rel=1e-5)
    assert float(weighted_gradient_energy(u, grid, torch.full((1, 1, 16, 12), 0.5))) == pytest.approx(0.01, rel=1e-5)
    assert float(weighted_gradient_energy(torch.ones(1, 2, 16, 12) * 3.0, grid)) == 0.0


def test_beta_and_normal_priors_match_scipy_up_to_a_constant():
    """Reference: scipy.stats beta/normal log-densities (differences between two λ values)."""
    from scipy import stats

    lam = torch.tensor([0.2, 0.7], dtype=torch.float64)
    cfg = LossConfig(prior="beta", prior_alpha=2.5, prior_beta=1.5)
    ours = [float(lambda_negative_log_prior(lam[i : i + 1], cfg)) for i in range(2)]
    ref = -stats.beta(2.5, 1.5).logpdf(lam.numpy())
    assert ours[0] - ours[1] == pytest.approx(ref[0] - ref[1], rel=1e-6)
    cfg = LossConfig(prior="normal", prior_mean=0.4, prior_std=0.1)
    ours = [float(lambda_negative_log_prior(lam[i : i + 1], cfg)) for i in range(2)]
    ref = -stats.norm(0.4, 0.1).logpdf(lam.numpy())
    assert ours[0] - ours[1] == pytest.approx(ref[0] - ref[1], rel=1e-6)


def test_separable_dilation_equals_cube_max_pool():
    """Reference: a single (2r+1)^3 max pool."""
    mask = (torch.rand(1, 1, 20, 18, 16, generator=torch.Generator().manual_seed(0)) > 0.99).float()
    expected = torch.nn.functional.max_pool3d(mask, 7, stride=1, padding=3)
    assert torch.equal(dilate(mask, 3), expected)


def test_working_grid_covers_the_fixed_field_of_view():
    """The 1 mm template grid maps to the 2 mm working grid with the same centre (analytic)."""
    fixed = Grid((159, 191, 159), np.array([[1, 0, 0, -79], [0, 1, 0, -112], [0, 0, 1, -72], [0, 0, 0, 1.0]]))
    work = working_grid_for(fixed, 2.0, 16)
    assert work.shape == (80, 96, 80) and work.spacing == (2.0, 2.0, 2.0)
    centre = lambda g: g.voxel_to_world_points((np.array(g.shape) - 1) / 2.0)  # noqa: E731
    assert np.allclose(centre(work), centre(fixed))
    assert working_grid_for(work, 2.0, 16) == work


def test_ras_sitk_affine_round_trip_and_resampling_agree_with_simpleitk():
    """Reference: sitk.Resample with the converted transform gives our resample() of the same RAS matrix."""
    import SimpleITK as sitk

    from DiffDefAtlasLib.imageio import volume_from_sitk, volume_to_sitk

    rng = np.random.default_rng(0)
    matrix = np.eye(4)
    matrix[:3, :3] += rng.normal(0, 0.05, (3, 3))
    matrix[:3, 3] = [3.0, -2.0, 1.5]
    assert np.allclose(sitk_to_ras_matrix(ras_matrix_to_sitk(matrix), 3), matrix)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -20
    image = Volume(rng.random((20, 20, 20)).astype(np.float32), affine)
    ours = resample(image, image.grid, matrix)[0, 0].numpy()
    ref_image = sitk.Resample(volume_to_sitk(image), volume_to_sitk(image), ras_matrix_to_sitk(matrix), sitk.sitkLinear, 0.0)
    ref = volume_from_sitk(ref_image).array
    inner = (slice(4, -4),) * 3
    assert np.abs(ours[inner] - ref[inner]).max() < 1e-4


def test_affine_register_recovers_a_known_affine():
    """Reference: the known matrix applied to the template (SimpleITK MI must find it back within 1.5 mm)."""
    from DiffDefAtlasLib.template import load_template

    template = load_template("2mm")
    matrix = np.eye(4)
    angle = np.deg2rad(6)
    matrix[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix[:3, :3] *= 1.05
    matrix[:3, 3] = [4.0, -6.0, 3.0]
    # moving(y) = template(A^-1 y): then A maps fixed points to moving points.
    moving = Volume(resample(template.t1, template.grid, np.linalg.inv(matrix))[0, 0].numpy(), template.t1.affine)
    found = affine_register(template.t1, moving, fixed_mask=template.brain_mask, settings=AffineSettings())
    mask = torch.as_tensor(np.array(template.brain_mask.array) > 0)[None]
    error = (affine_displacement(found, template.grid) - affine_displacement(matrix, template.grid)).norm(dim=1)
    assert float(error[mask].mean()) < 1.5


def test_compose_with_affine_matches_the_analytic_map():
    """Reference: numpy evaluation of A (x + u(x)) - x on the grid's world points."""
    from DiffDefAtlasLib.imaging.resampling import compose_with_affine, world_points

    grid = Grid((5, 6, 7), np.array([[0, 1.5, 0, 3], [-2, 0, 0, 4], [0, 0, 1, -5], [0, 0, 0, 1.0]]))
    rng = np.random.default_rng(2)
    matrix = np.eye(4)
    matrix[:3, :3] += rng.normal(0, 0.1, (3, 3))
    matrix[:3, 3] = [1.0, 2.0, 3.0]
    index = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape], indexing="ij"), -1)
    x = np.moveaxis(grid.voxel_to_world_points(index), -1, 0)
    assert np.abs(world_points(grid)[0].numpy() - x).max() < 1e-5
    u = rng.normal(0, 2, (3, *grid.shape))
    expected = np.einsum("ij,j...->i...", matrix[:3, :3], x + u) + matrix[:3, 3].reshape(3, 1, 1, 1) - x
    ours = compose_with_affine(matrix, torch.as_tensor(u, dtype=torch.float32)[None], grid)[0].numpy()
    assert np.abs(ours - expected).max() < 1e-4
