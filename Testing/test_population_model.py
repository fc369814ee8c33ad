"""The bundled 3D population model: sampling, conditional means, ground-truth deformation and atlas, trends, storage."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.population import PopulationModel, load_population_model
from DiffDefAtlasLib.population.model import CARD_FILE, MODEL_FOLDER, WEIGHTS_FILE
from DiffDefAtlasLib.resources import resource_path
from DiffDefAtlasLib.spatial import integrate_velocity, resample_displacement
from DiffDefAtlasLib.template import load_template, template_grid, working_grid


@pytest.fixture(scope="module")
def model() -> PopulationModel:
    return load_population_model()


def test_bundled_files_match_card(model):
    """Reference: hashlib SHA-256 of the shipped weights against the card; the size budget (8 MB) and the grid."""
    folder = resource_path(*MODEL_FOLDER)
    weights = folder / WEIGHTS_FILE
    card = json.loads((folder / CARD_FILE).read_text())
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card["weights"]["sha256"]
    assert card["weights"] == {"file": WEIGHTS_FILE, "sha256": card["weights"]["sha256"], "bytes": weights.stat().st_size}
    assert weights.stat().st_size <= 8 * 1024**2
    assert model.grid == working_grid().zoomed(2) and model.grid.shape == (40, 48, 40)
    lo, hi = model.condition_ranges["age"]
    ages = [s["age"] for s in card["data"]["subjects"]]
    assert (lo, hi) == (min(ages), max(ages))
    assert model.condition_ranges["sex"] == ["F", "M"]
    assert card["n_components"] == model.n_components == len(card["residual_model"]["sigmas"])


def test_tampered_weights_are_refused(model, tmp_path):
    """Reference: a one-byte change of the weights must break the checksum recorded in the card."""
    folder = resource_path(*MODEL_FOLDER)
    shutil.copytree(folder, tmp_path / "m")
    data = bytearray((tmp_path / "m" / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "m" / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(DiffDefInputError, match="checksum"):
        PopulationModel.load(tmp_path / "m")


def test_sampling_is_deterministic_per_seed(model):
    """Reference: two independent calls with the same seed (bitwise equal) and one with another seed (different)."""
    first = model.sample(3, seed=11, measure=False)
    again = model.sample(3, seed=11, measure=False)
    other = model.sample(3, seed=12, measure=False)
    for a, b in zip(first, again):
        assert a.age == b.age and a.sex == b.sex
        assert np.array_equal(a.velocity, b.velocity)
    assert not np.array_equal(first[0].velocity, other[0].velocity)
    lo, hi = model.condition_ranges["age"]
    assert all(lo <= s.age <= hi and s.sex in ("F", "M") for s in first)
    # the latent codes do not depend on the conditions asked for
    fixed = model.sample(3, seed=11, ages=50.0, sexes="M", measure=False)
    assert all(np.array_equal(a.latent, b.latent) for a, b in zip(first, fixed))
    measured = model.sample(1, seed=11)[0]
    assert np.array_equal(measured.velocity, first[0].velocity)
    assert measured.ventricle_volume_ml == model.ventricle_volume_ml(first[0].velocity)
    assert set(measured.tissue_volumes_ml) >= {"csf", "gm", "wm", "lateral_ventricles"}


def test_sample_statistics_match_the_model(model):
    """Reference: sample statistics of 400 draws at fixed conditions: their mean converges to ``mean_velocity`` (within
    6 standard errors everywhere) and their projections on the stored modes have the modes' variances."""
    n = 400
    mean = model.mean_velocity(55.0, "F").reshape(-1).astype(np.float64)
    modes = model.modes.reshape(model.n_components, -1).astype(np.float64)
    unit = modes / np.linalg.norm(modes, axis=1, keepdims=True)
    total = np.zeros_like(mean)
    projections = []
    for start in range(0, n, 100):  # in chunks: 600 fields would need 0.5 GB at once
        for sample in model.sample(100, seed=3 + start, ages=55.0, sexes="F", measure=False):
            velocity = sample.velocity.reshape(-1).astype(np.float64)
            total += velocity
            projections.append(unit @ (velocity - mean))
    standard_error = np.sqrt((modes**2).sum(0)) / np.sqrt(n)
    assert np.all(np.abs(total / n - mean) <= 6 * standard_error + 1e-5)
    np.testing.assert_allclose(np.var(projections, axis=0), np.linalg.norm(modes, axis=1) ** 2, rtol=0.2)


def test_mean_velocity_is_linear_in_age_and_sex(model):
    """Reference: the regression model's linearity: sex 0.5 is the F/M average, equal age steps give equal changes."""
    f, m, avg = (model.mean_velocity(50, s) for s in ("F", "M", 0.5))
    np.testing.assert_allclose(avg, (f + m) / 2, atol=1e-5)
    a, b, c = (model.mean_velocity(age, "F") for age in (30, 45, 60))
    np.testing.assert_allclose(b - a, c - b, atol=1e-5)
    assert np.array_equal(model.mean_velocity(50, "f"), model.mean_velocity(50, 0))


def test_conditions_are_validated(model):
    """Reference: the fitted age range in the card and the F/M coding."""
    lo, hi = model.condition_ranges["age"]
    with pytest.raises(DiffDefInputError, match="range"):
        model.mean_velocity(hi + 5, "F")
    # The generators' rule and messages (one condition validator): a non-finite age, and the range named in years.
    with pytest.raises(DiffDefInputError, match="finite"):
        model.mean_velocity(float("nan"), "F")
    with pytest.raises(DiffDefInputError, match=r"outside the trained range \[.*\] years of model 'population model'"):
        model.check_age(hi + 5)
    with pytest.raises(DiffDefInputError, match="sex"):
        model.mean_velocity(50, "X")
    with pytest.raises(DiffDefInputError, match="sex"):
        model.mean_velocity(50, 1.5)
    assert model.mean_velocity(hi + 5, "F", allow_extrapolation=True).shape == (3, 40, 48, 40)
    with pytest.raises(DiffDefInputError, match="sexes"):
        model.sample(1, seed=0, sexes=0.5, measure=False)


def test_mean_displacement_is_the_integrated_mean_velocity(model):
    """Reference: the spatial core applied by hand: resample E[v|c] to the working grid, scaling and squaring (7 steps);
    on the 1 mm grid, that displacement resampled."""
    v = torch.from_numpy(model.mean_velocity(66.0, "M"))[None]
    expected = integrate_velocity(resample_displacement(v, model.grid, working_grid()), working_grid(), steps=7)
    np.testing.assert_allclose(model.mean_displacement(66.0, "M"), expected[0].numpy(), atol=1e-5)
    fine = template_grid("1mm")
    expected_fine = resample_displacement(expected, working_grid(), fine)[0].numpy()
    np.testing.assert_allclose(model.mean_displacement(66.0, "M", grid=fine), expected_fine, atol=1e-4)


def test_zero_model_mean_atlas_is_the_template():
    """Reference: the bundled 1 mm template itself: a model with all-zero parameters has the identity as its mean."""
    grid = working_grid().zoomed(2)
    zeros = np.zeros((3, *grid.shape), np.float32)
    model = PopulationModel(zeros, zeros, zeros, np.zeros((2, 3, *grid.shape), np.float32), grid, 50.0, (20.0, 80.0))
    atlas, labels = model.mean_atlas(40, "F")
    template = load_template("1mm")
    np.testing.assert_allclose(atlas.array, template.t1.array, atol=1e-4)
    assert np.array_equal(labels.array, template.labels.array)
    np.testing.assert_allclose(atlas.affine, template.t1.affine)
    ventricles = float((template.labels.array == 4).sum()) / 1000.0
    assert model.ventricle_volume_ml(zeros) == pytest.approx(ventricles, rel=0.02)


def test_mean_atlas_ventricles_rise_with_age_like_the_real_subjects(model):
    """Reference: the age trend measured on the real IXI subjects' own fitted fields, adjusted for sex and map type
    (recorded in the model card from the real data): the model's mean-atlas ventricle volume must rise with age at a
    rate within a factor 2 of it."""
    lo, hi = model.condition_ranges["age"]
    real = model.card["trends"]["fitted_fields"]["adjusted"]["lateral_ventricles"]["slope_per_year"]
    assert real > 0
    for sex in ("F", "M"):
        young, old = (model.ventricle_volume_ml(model.mean_velocity(age, sex)) for age in (lo, hi))
        slope = (old - young) / (hi - lo)
        assert 0.5 * real < slope < 2.0 * real, (sex, slope, real)


def test_mean_atlas_labels_agree_with_the_2mm_volume(model):
    """Reference: the ventricle volume of the same mean deformation counted on the 2 mm labels; the 1 mm atlas labels
    (field resampled to 1 mm, 1 mm template labels) must give the same volume within discretisation (3 %)."""
    atlas, labels = model.mean_atlas(70.0, "M")
    assert atlas.array.shape == labels.array.shape == template_grid("1mm").shape and labels.array.dtype == np.uint8
    volume_1mm = float((labels.array == 4).sum()) / 1000.0
    assert volume_1mm == pytest.approx(model.ventricle_volume_ml(model.mean_velocity(70.0, "M")), rel=0.03)
