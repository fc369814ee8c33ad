"""The conditional-mean trend (``generate.trend``) against populations whose exact conditional mean is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.conditions.resolve import encode_conditions
from DiffDefAtlasLib.generate.model_card import ModelCard
from DiffDefAtlasLib.generate.networks import VelocityGenerator
from DiffDefAtlasLib.generate.trend import fit_trend, is_fitted, trend_features
from DiffDefAtlasLib.train.data import synthetic_fields, synthetic_mean_velocity
from DiffDefAtlasLib.train.stages import condition_arrays


def _fit(fields, terms, adjusted=None):
    card = ModelCard(name="t", spatial_dims=fields.grid.spatial_dims, conditions=fields.specs)
    values, present = condition_arrays(fields, card)
    return card, fit_trend(fields.velocities, card.condition_names, values, present, terms, adjusted)


def _trend_at(card, config, intercept, maps, conditions):
    values, present = encode_conditions(card, conditions)
    features = trend_features(config, card.condition_names, torch.from_numpy(values)[None], torch.from_numpy(present)[None])[0].numpy()
    return intercept + np.tensordot(features, maps, axes=1)


def test_trend_recovers_the_exact_conditional_mean_and_the_training_mean_when_unset():
    fields = synthetic_fields(400, spatial_dims=2, shape=(20, 24), seed=3)
    card, (config, intercept, maps) = _fit(fields, [["age"], ["sex"]])
    assert is_fitted(config) and maps.shape == (2, 2, 20, 24)
    for age, sex in ((45.0, "F"), (60.0, "M"), (78.0, "F")):
        truth = synthetic_mean_velocity(age, float(sex == "M"), fields.grid)[0]
        assert np.abs(_trend_at(card, config, intercept, maps, {"age": age, "sex": sex}) - truth).max() < 0.15
    # nothing set: the training mean, exactly (the least-squares fit has an intercept)
    np.testing.assert_allclose(_trend_at(card, config, intercept, maps, {}), fields.velocities.mean(0), atol=1e-4)
    # a trend without the sex term cannot fit the sex effect: the same check fails for it
    card, (config, intercept, maps) = _fit(fields, [["age"]])
    truth = synthetic_mean_velocity(60.0, 1.0, fields.grid)[0]
    assert np.abs(_trend_at(card, config, intercept, maps, {"age": 60.0, "sex": "M"}) - truth).max() > 0.3


def test_an_adjusted_condition_adds_only_its_effect_beyond_the_others():
    """w = 0.8 * age + noise, measured in a third of the subjects; the field moves with w - 0.8 * age along its own
    map. Unset, w must leave the age trend unbiased; set, it adds its own effect."""
    rng = np.random.default_rng(0)
    n, shape = 600, (2, 6, 5)
    b0, b_age, b_w = (rng.normal(size=shape) for _ in range(3))
    age = rng.uniform(-1, 1, n)
    w = 0.8 * age + 0.3 * rng.normal(size=n)
    velocities = (b0 + age[:, None, None, None] * b_age + (w - 0.8 * age)[:, None, None, None] * b_w + 0.05 * rng.normal(size=(n, *shape))).astype(np.float32)
    present = torch.ones(n, 2, dtype=torch.bool)
    present[n // 3 :, 1] = False
    values = torch.from_numpy(np.stack([age, np.where(present[:, 1].numpy(), w, 0.0)], 1).astype(np.float32))
    config, intercept, maps = fit_trend(velocities, ["age", "w"], values, present, [["age"], ["w"]], {"w": {"terms": [["age"]]}})
    np.testing.assert_allclose(config["adjusted"]["w"]["coefficients"], [0.0, 0.8], atol=0.05)

    def at(a, wv=None):
        v = torch.tensor([[a, 0.0 if wv is None else wv]], dtype=torch.float32)
        p = torch.tensor([[True, wv is not None]])
        return intercept + np.tensordot(trend_features(config, ["age", "w"], v, p)[0].numpy(), maps, axes=1)

    np.testing.assert_allclose(at(0.5), b0 + 0.5 * b_age, atol=0.05)
    np.testing.assert_allclose(at(0.5, 0.4 + 0.6), b0 + 0.5 * b_age + 0.6 * b_w, atol=0.08)
    with pytest.raises(DiffDefInputError, match="not a condition"):
        fit_trend(velocities, ["age", "w"], values, present, [["age"]], {"x": {"terms": [["age"]]}})


def test_the_generator_network_adds_its_trend_to_the_decoded_residual():
    fields = synthetic_fields(64, spatial_dims=2, shape=(16, 16), seed=1)
    card, (config, intercept, maps) = _fit(fields, [["age"], ["sex"], ["sex", "age"]])
    kinds = [("continuous", 0), ("categorical", 2)]
    network = VelocityGenerator(2, kinds, unet={"channels": [8, 8]}, velocity_shape=(16, 16), latent_shape=(4, 4), trend=config, condition_names=card.condition_names)
    network.field_mean.copy_(torch.from_numpy(intercept))
    network.trend_maps.copy_(torch.from_numpy(maps))
    latent = torch.randn(1, 4, 4, 4)
    values, present = encode_conditions(card, {"age": 70.0, "sex": "M"})
    with torch.no_grad():
        residual = network.decode_velocity(latent, 2.0) - network.mean_velocity(1)
        velocity = network.decode_velocity(latent, 2.0, torch.from_numpy(values)[None], torch.from_numpy(present)[None])
    expected = residual[0].numpy() + _trend_at(card, config, intercept, maps, {"age": 70.0, "sex": "M"})
    np.testing.assert_allclose(velocity[0].numpy(), expected, atol=1e-4)
    # a network without a trend has no trend maps, so older weight files load unchanged
    assert "trend_maps" not in VelocityGenerator(2, kinds, unet={"channels": [8, 8]}, velocity_shape=(16, 16)).state_dict()
