"""Instance optimisation of template-to-subject velocity fields and the unbiased template, on synthetic deformations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from DiffDefAtlasLib.population import FitSettings, fit_velocity, velocity_to_displacement
from DiffDefAtlasLib.population.oasis2d import unbiased_template
from DiffDefAtlasLib.spatial import Grid, integrate_velocity, resample_displacement, warp_image
from DiffDefAtlasLib.template import load_template, working_grid
from fieldfactory import smooth_random_field


def _tissue_maps(spatial_dims: int) -> tuple[torch.Tensor, Grid, torch.Tensor]:
    """The template's CSF/GM/WM probabilities and brain mask on the working grid (3D) or its axial slice z = 18 mm (2D)."""
    template = load_template("2mm")
    maps = np.stack([template.tissue[n].array for n in ("csf", "gm", "wm")]).astype(np.float32)
    brain = template.brain_mask.array > 0
    grid = working_grid()
    if spatial_dims == 2:
        maps, brain = maps[..., 45], brain[..., 45]
        grid = Grid(grid.shape[:2], np.diag([2.0, 2.0, 1.0]))
    return torch.from_numpy(np.ascontiguousarray(maps))[None], grid, torch.from_numpy(np.ascontiguousarray(brain))


def _recovery(spatial_dims: int, settings: FitSettings, amplitude: float = 6.0) -> tuple[float, float]:
    """Warp the template's tissue maps by a known exp(v), fit, and return (mean endpoint error, mean |u|) in the brain."""
    template, grid, brain = _tissue_maps(spatial_dims)
    velocity_grid = grid.zoomed(settings.velocity_factor)
    truth = torch.from_numpy(smooth_random_field(velocity_grid.shape, amplitude, sigma_vox=3.0, seed=3).astype(np.float32))[None]
    true_u = velocity_to_displacement(truth, velocity_grid, grid)
    subject = warp_image(template, true_u, grid)
    fitted, fitted_grid, _ = fit_velocity(template, subject, grid, settings)
    assert fitted_grid == velocity_grid
    fitted_u = velocity_to_displacement(fitted, velocity_grid, grid)
    error = (fitted_u - true_u).norm(dim=1)[0][brain].mean()
    return float(error), float(true_u.norm(dim=1)[0][brain].mean())


def test_velocity_to_displacement_is_resample_then_scaling_and_squaring():
    """Reference: the spatial core's resample_displacement followed by integrate_velocity (7 steps)."""
    grid = working_grid()
    coarse = grid.zoomed(2)
    v = torch.from_numpy(smooth_random_field(coarse.shape, 4.0, seed=1).astype(np.float32))[None]
    expected = integrate_velocity(resample_displacement(v, coarse, grid), grid, steps=7)
    assert torch.allclose(velocity_to_displacement(v, coarse, grid), expected)


def test_fit_recovers_known_svf_2d():
    """Reference: a known smooth SVF (max 6 mm) warping an axial slice of the template's tissue maps (2 mm); the fitted
    deformation's endpoint error inside the brain must be a small fraction of the true displacement."""
    error, magnitude = _recovery(2, FitSettings(iterations=(80, 80)))
    assert magnitude > 1.0
    assert error < 0.3 * magnitude, (error, magnitude)


@pytest.mark.slow
def test_fit_recovers_known_svf_production_settings():
    """Reference: as above in 3D, on the 2 mm working grid with the settings used for the IXI fits (4 mm velocity).
    Tissue maps only pin the motion across tissue boundaries, so the bound is looser than in 2D (measured: 0.53 mm
    mean error for a 1.49 mm mean displacement)."""
    error, magnitude = _recovery(3, FitSettings())
    assert magnitude > 1.0
    assert error < 0.4 * magnitude, (error, magnitude)


def test_batch_fit_equals_separate_fits():
    """Reference: fitting two subjects one at a time; Adam updates each element independently, so a batch must agree."""
    grid = Grid((32, 40), np.diag([2.0, 2.0, 1.0]))
    template = torch.from_numpy(np.clip(smooth_random_field(grid.shape, 1.0, sigma_vox=3.0, seed=5), 0, None).astype(np.float32))[None, :1]
    subjects = []
    for seed in (1, 2):
        v = torch.from_numpy(smooth_random_field((16, 20), 3.0, sigma_vox=2.0, seed=seed).astype(np.float32))[None]
        subjects.append(warp_image(template, velocity_to_displacement(v, grid.zoomed(2), grid), grid))
    subjects = torch.cat(subjects)
    settings = FitSettings(levels=(2, 1), iterations=(15, 15), learning_rates=(0.3, 0.1))
    together, _, _ = fit_velocity(template, subjects, grid, settings)
    for b in range(2):
        alone, _, _ = fit_velocity(template, subjects[b : b + 1], grid, settings)
        assert torch.allclose(together[b], alone[0], atol=1e-4)


def test_unbiased_template_moves_to_the_population_centre():
    """Reference: subjects made by warping a known image by exp(w_mean + n_i), with w_mean a 3 mm translation and n_i
    smooth fields of zero mean. Started from the unshifted image, the procedure must move the template to the centre:
    the subjects' mean velocity relative to it must vanish (it is 3 mm at the start) and the template must match the
    image warped by exp(w_mean)."""
    grid = Grid((48, 56), np.diag([2.0, 2.0, 1.0]))
    velocity_grid = grid.zoomed(2)
    template = load_template("2mm")
    base = torch.from_numpy(np.ascontiguousarray(template.t1.array[16:64, 20:76, 45]).astype(np.float32))[None, None]
    shift = torch.zeros(1, 2, *velocity_grid.shape)
    shift[:, 0] = 3.0
    noise = torch.cat([torch.from_numpy(smooth_random_field(velocity_grid.shape, 1.5, sigma_vox=2.0, seed=s).astype(np.float32))[None] for s in range(6)])
    noise = noise - noise.mean(0, keepdim=True)
    images = warp_image(base.expand(6, -1, -1, -1), velocity_to_displacement(shift + noise, velocity_grid, grid), grid, padding="border")
    settings = FitSettings(levels=(2, 1), iterations=(30, 30), learning_rates=(0.3, 0.1), bending_weight=0.2, diffusion_weight=0.0002)
    built, _, _ = unbiased_template(images, grid, rounds=2, settings=settings, initial=base)
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    start_v, _ = fit_velocity(base, images, grid, settings)[:2]
    final_v, _ = fit_velocity(built, images, grid, settings)[:2]
    start_shift = float(start_v.mean(0)[0, 3:-3, 3:-3].mean())
    final_shift = float(final_v.mean(0)[0, 3:-3, 3:-3].mean())
    assert start_shift > 2.0, start_shift
    assert abs(final_shift) < 0.5, final_shift
    expected = warp_image(base, velocity_to_displacement(shift, velocity_grid, grid), grid, padding="border")
    start_error = float(((base - expected)[inner] ** 2).mean())
    built_error = float(((built - expected)[inner] ** 2).mean())
    assert built_error < 0.2 * start_error, (built_error, start_error)
