"""Evaluation metrics against known answers: SimpleITK overlap measures, analytic fields and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from DiffDefAtlasLib.evaluate.heldout import label_trend_model
from DiffDefAtlasLib.evaluate.metrics import (
    centrality,
    dice_per_label,
    endpoint_error,
    exact_neighbourhood_mean_displacement,
    label_volumes,
    regularity,
    sharpness,
    trend_slope,
    trend_slope_interval,
    volume_errors,
    weighted_mean_displacement,
)
from DiffDefAtlasLib.conditions.space import condition_weights, normalised_conditions
from DiffDefAtlasLib.generate.model_card import ConditionSpec
from DiffDefAtlasLib.spatial import Grid, compose_displacements, integrate_velocity


def test_dice_per_label_matches_simpleitk():
    """Reference: SimpleITK LabelOverlapMeasuresImageFilter (per-label Dice) on random blob label maps."""
    rng = np.random.default_rng(0)
    a = ndimage.zoom(rng.integers(0, 4, (6, 7, 5)), 4, order=0).astype(np.uint8)
    b = np.roll(a, 2, axis=0)
    ours = dice_per_label(a, b)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(sitk.GetImageFromArray(b), sitk.GetImageFromArray(a))
    for label in (1, 2, 3):
        assert ours[str(label)] == pytest.approx(overlap.GetDiceCoefficient(label), abs=1e-12)
    assert 0.3 < ours["mean"] < 0.95


def test_regularity_folding_and_smoothness_analytic():
    """Reference: phi(x, y) = (x + a x^2 / 2, y) has det J = 1 + a x exactly, so |grad det J| = |a| everywhere and the
    map folds (det J <= 0) exactly where x <= -1/a."""
    a = 0.05
    grid = Grid((40, 10), np.array([[1.0, 0, -30.0], [0, 1.0, 0.0], [0, 0, 1.0]]))  # x from -30 to 9 mm
    x = torch.arange(40.0, dtype=torch.float64) - 30.0
    u = torch.zeros(1, 2, 40, 10, dtype=torch.float64)
    u[0, 0] = (a * x**2 / 2.0)[:, None]
    result = regularity(u, grid)
    expected_nonpositive = float(((1 + a * x) <= 0).double().mean())  # x <= -20: 11 of 40 columns
    expected_negative = float(((1 + a * x) < 0).double().mean())
    interior = np.zeros(grid.shape, bool)
    interior[2:-2] = True  # one-sided differences at the edges are not exact for a quadratic
    assert result["folding_nonpositive"] == pytest.approx(expected_nonpositive)
    assert result["folding_negative"] == pytest.approx(expected_negative)
    assert expected_nonpositive > expected_negative > 0  # the det J = 0 column separates the two definitions
    assert regularity(u, grid, interior)["smoothness_grad_detj"] == pytest.approx(a, rel=1e-9)
    assert regularity(torch.zeros(1, 2, 40, 10), grid) == {"folding_nonpositive": 0.0, "folding_negative": 0.0, "smoothness_grad_detj": 0.0}


def test_sharpness_ramp_and_blur():
    """Reference: a linear ramp of 3 per mm has gradient magnitude 3 (anisotropic spacing); blurring lowers sharpness."""
    grid = Grid((20, 30, 10), np.diag([2.0, 0.5, 1.0, 1.0]))
    x, y, z = np.meshgrid(2.0 * np.arange(20), 0.5 * np.arange(30), np.arange(10.0), indexing="ij")
    assert sharpness(3.0 * x + 4.0 * y, grid) == pytest.approx(5.0, rel=1e-9)
    rng = np.random.default_rng(1)
    image = ndimage.zoom(rng.random((5, 8, 3)), 4, order=0)[:20, :30, :10]
    mask = np.zeros(grid.shape, bool)
    mask[4:16, 6:24, 2:8] = True
    assert sharpness(ndimage.gaussian_filter(image, 2.0), grid, mask) < 0.6 * sharpness(image, grid, mask)


def test_centrality_weighted_translations():
    """Reference: neighbours displaced by constant translations t_i; the weighted mean is sum w_i t_i / sum w_i."""
    shifts = torch.tensor([[1.0, 0.0], [-3.0, 0.0], [0.0, 2.0]])
    fields = shifts[:, :, None, None].expand(3, 2, 5, 6).clone()
    weights = [2.0, 1.0, 1.0]
    mean = weighted_mean_displacement(fields, weights)
    expected = (2 * shifts[0] + shifts[1] + shifts[2]) / 4.0  # (-0.25, 0.5)
    assert centrality(mean) == pytest.approx(float(torch.linalg.vector_norm(expected)))
    assert centrality(weighted_mean_displacement(fields[:2], [3.0, 1.0])) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        weighted_mean_displacement(fields, [0.0, 0.0, 0.0])


def test_exact_neighbourhood_mean_equals_mean_of_compositions():
    """Reference: composing each neighbour's inverse exp(-v_i) with the atlas map one by one and averaging (the
    definition) equals composing the weighted mean inverse once; for translations the result is t_a - mean t_i."""
    grid = Grid((24, 20), np.diag([2.0, 2.0, 1.0]))
    generator = torch.Generator().manual_seed(0)

    def smooth():
        return torch.nn.functional.interpolate(torch.randn(1, 2, 4, 4, generator=generator, dtype=torch.float64) * 3, size=grid.shape, mode="bilinear", align_corners=True)

    atlas = integrate_velocity(smooth(), grid)
    velocities = [smooth() for _ in range(3)]
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    inverses = [integrate_velocity(-v, grid) for v in velocities]
    one_by_one = sum(w * compose_displacements(inv, atlas, grid)[0] for w, inv in zip(weights, inverses))
    shortcut = exact_neighbourhood_mean_displacement(atlas, sum(w * inv for w, inv in zip(weights, inverses)), grid)
    assert torch.allclose(one_by_one, shortcut, atol=1e-9)
    assert float(one_by_one.abs().max()) > 0.5  # not trivially zero
    t_a = torch.tensor([1.0, 2.0], dtype=torch.float64)[None, :, None, None].expand(1, 2, *grid.shape)
    t_mean = -torch.tensor([0.5, 0.5], dtype=torch.float64)[None, :, None, None].expand(1, 2, *grid.shape)  # inverse of +0.5
    result = exact_neighbourhood_mean_displacement(t_a, t_mean, grid)
    assert centrality(result) == pytest.approx(float(np.hypot(0.5, 1.5)))


def test_endpoint_error_volumes_and_trend():
    """Reference: hand-computed values."""
    u = np.zeros((2, 4, 4))
    u[0, :2] = 3.0
    u[1, :2] = 4.0
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    assert endpoint_error(u, np.zeros_like(u), mask) == {"mean": 5.0, "p95": 5.0}
    assert endpoint_error(u, np.zeros_like(u))["mean"] == pytest.approx(2.5)
    grid3 = Grid((2, 2, 2), np.diag([10.0, 10.0, 10.0, 1.0]))  # 1 mL voxels
    labels = np.array([1, 1, 2, 0, 0, 0, 0, 4]).reshape(2, 2, 2)
    volumes = label_volumes(labels, grid3, {1: "csf", 2: "gm", 4: "lateral_ventricles"})
    assert volumes == pytest.approx({"csf": 2.0, "gm": 1.0, "lateral_ventricles": 1.0})
    assert volume_errors({"csf": 2.0, "gm": 1.0}, {"csf": 4.0, "gm": 1.0}) == {"csf": 0.5, "gm": 0.0}
    assert trend_slope([40, 50, 60], [10, 12, 14]) == pytest.approx(0.2)
    assert np.isnan(trend_slope([50, 50], [1, 2]))


def test_trend_interval_covers_the_true_slope_about_95_percent_of_the_time():
    """Reference: the true slope of simulated data (40 subjects, noise as large as the trend). A 95 % interval should
    miss it in about 1 draw in 20: 1000 draws give a coverage within 0.93-0.97 (binomial sd 0.007)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(60, 96, 40)
    hits = 0
    for _ in range(1000):
        y = 1500.0 + 20.0 * x + rng.normal(0.0, 360.0, x.size)
        slope, low, high = trend_slope_interval(x, y)
        assert slope == pytest.approx(trend_slope(x, y))
        hits += low <= 20.0 <= high
    assert 0.93 <= hits / 1000 <= 0.97
    assert all(np.isnan(trend_slope_interval([1.0, 2.0], [1.0, 3.0])))


def test_label_trend_model_recovers_linear_truth():
    """Reference: noise-free sizes generated from size = 100 + 2 age - 7 sex are predicted exactly."""
    rng = np.random.default_rng(0)
    ages = rng.uniform(60, 90, 20)
    sexes = rng.integers(0, 2, 20).astype(float)
    predict = label_trend_model({"v": 100 + 2 * ages - 7 * sexes}, ages, sexes)
    assert predict(70.0, 1.0)["v"] == pytest.approx(100 + 140 - 7)


def test_condition_weights_in_normalised_space():
    """Reference: the Gaussian formula by hand; an unset target condition is ignored."""
    specs = [ConditionSpec("age", "continuous", 40.0, 80.0), ConditionSpec("sex", "categorical", choices=["F", "M"])]
    points = np.stack([normalised_conditions(specs, c) for c in ({"age": 60, "sex": "F"}, {"age": 64, "sex": "M"})])
    target = normalised_conditions(specs, {"age": 60})
    w = condition_weights(points, target, sigma=0.1)
    assert w[0] == pytest.approx(1.0)
    assert w[1] == pytest.approx(np.exp(-(0.1**2) / (2 * 0.1**2)))
    both = condition_weights(points, normalised_conditions(specs, {"age": 60, "sex": "F"}), sigma=0.1)
    assert both[1] == pytest.approx(np.exp(-(0.1**2 + 1.0) / (2 * 0.1**2)))
