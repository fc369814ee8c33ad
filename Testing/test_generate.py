"""Generator API: determinism, conditions, model-card checks, variability (tiny untrained 2D model built here)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.generate import ExtrapolationWarning, ModelCard, load_generator
from DiffDefAtlasLib.spatial import Grid
from modelfactory import build_tiny_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2D generator with random weights (synthetic recipe, conditions age 40-80 and sex F/M), saved like a bundled one."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny2d", steps=5)


def test_same_seed_gives_bitwise_identical_atlas(tiny_model):
    """Reference: a second, independent generation in the same process (bitwise equality); another seed differs."""
    generator = load_generator(tiny_model, "cpu")
    a = generator.generate({"age": 55, "sex": "F"}, seed=3, temperature=1.0)
    b = generator.generate({"age": 55, "sex": "F"}, seed=3, temperature=1.0)
    c = generator.generate({"age": 55, "sex": "F"}, seed=4, temperature=1.0)
    assert np.array_equal(a.displacement, b.displacement)
    assert np.array_equal(a.atlas.array, b.atlas.array)
    assert np.array_equal(a.labels.array, b.labels.array)
    assert not np.array_equal(a.displacement, c.displacement)


def test_unknown_condition_lists_valid_names(tiny_model):
    """Reference: the model card's condition names must appear in the error."""
    generator = load_generator(tiny_model, "cpu")
    with pytest.raises(DiffDefInputError, match="valid conditions: age, sex"):
        generator.generate({"height": 180})


def test_out_of_range_is_an_error_unless_extrapolation_is_allowed(tiny_model):
    """Reference: the trained range stored in the card (40-80 years)."""
    generator = load_generator(tiny_model, "cpu")
    with pytest.raises(DiffDefInputError, match=r"outside the trained range \[40, 80\]"):
        generator.generate({"age": 95})
    with pytest.warns(ExtrapolationWarning, match="extrapolating"):
        generator.generate({"age": 95}, allow_extrapolation=True)
    with pytest.raises(DiffDefInputError, match="expected one of F, M"):
        generator.generate({"sex": "X"})


def test_all_conditions_unset_with_guidance(tiny_model):
    """Reference: the conditional atlas of the same seed: the unconditional one (null tokens) must differ from it."""
    generator = load_generator(tiny_model, "cpu")
    unconditional = generator.generate({}, seed=0, guidance=3.0)
    conditional = generator.generate({"age": 45, "sex": "M"}, seed=0, guidance=3.0)
    assert unconditional.summary["unset_conditions"] == ["age", "sex"]
    assert np.isfinite(unconditional.displacement).all()
    assert not np.array_equal(unconditional.displacement, conditional.displacement)


def test_tampered_or_truncated_weights_are_refused(tiny_model, tmp_path):
    """Reference: the sha256 and size recorded in the model card."""
    copy = tmp_path / "tampered"
    shutil.copytree(tiny_model, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DiffDefInputError, match="checksum mismatch"):
        load_generator(copy, "cpu")
    weights.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DiffDefInputError, match="truncated"):
        load_generator(copy, "cpu")


def test_model_card_round_trip(tiny_model):
    """Reference: the JSON file itself, parsed with the json module."""
    card = ModelCard.load(tiny_model)
    raw = json.loads((tiny_model / "model_card.json").read_text())
    assert [c["name"] for c in raw["conditions"]] == card.condition_names == ["age", "sex"]
    assert card.condition("age").minimum == 40.0 and card.condition("sex").choices == ["F", "M"]
    assert ModelCard.from_json(card.to_json()).to_dict() == card.to_dict()


def test_variability_maps(tiny_model):
    """Reference: numpy mean and standard deviation of the same K displacements drawn one by one."""
    generator = load_generator(tiny_model, "cpu")
    mean, std = generator.variability({"age": 60}, 3, seed=7)
    draws = []
    for seed in (7, 8, 9):
        velocity = generator.sample_velocity({"age": 60}, seed=seed, temperature=1.0)
        draws.append(generator.velocity_to_displacement(velocity)[0].numpy())
    draws = np.stack(draws).astype(np.float64)
    np.testing.assert_allclose(mean, draws.mean(0), atol=1e-5)
    np.testing.assert_allclose(std, np.sqrt(draws.var(0, ddof=1).sum(0)), atol=1e-4)
    assert std.mean() > 0


def test_label_volumes_against_counting():
    """Reference: voxel counting by hand on a 2 mm grid (8 mm^3 per voxel = 0.008 mL)."""
    from DiffDefAtlasLib.metrics import label_volumes

    labels = np.zeros((4, 4, 4), np.uint8)
    labels[:2] = 4
    grid = Grid((4, 4, 4), np.diag([2.0, 2.0, 2.0, 1.0]))
    assert label_volumes(labels, grid, {4: "lateral_ventricles"}) == {"lateral_ventricles": pytest.approx(32 * 0.008)}


def test_sweep_writes_atlases_montage_gif_and_volumes(tiny_model, tmp_path):
    """Reference: the swept values (start:stop:step, stop included) and PIL reading back the GIF frames."""
    import csv

    from PIL import Image

    from DiffDefAtlasLib.cli.main import main

    out = tmp_path / "sweep"
    assert main(["sweep", "--model", str(tiny_model), "--vary", "age=40:60:10", "--set", "sex=F", "--device", "cpu", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "volumes.csv")))
    assert [float(r["age"]) for r in rows] == [40.0, 50.0, 60.0]
    assert len(sorted(out.glob("0*_age_*"))) == 3 and all((d / "atlas.nii.gz").is_file() for d in out.glob("0*_age_*"))
    gif = Image.open(out / "sweep.gif")
    assert gif.n_frames == 4  # 3 frames and back (bouncing loop)
    frame_width, frame_height = gif.size
    assert Image.open(out / "montage.png").size == (frame_width, 3 * frame_height)  # one column of the 3 atlases


def test_generate_command_line_errors(tiny_model, tmp_path, capsys):
    """Reference: the documented exit status 2 and one-line messages for bad input; a non-empty folder is refused."""
    from DiffDefAtlasLib.cli.main import main

    out = tmp_path / "g"
    assert main(["generate", "--model", str(tiny_model), "--set", "age=99", "--out", str(out)]) == 2
    assert "outside the trained range" in capsys.readouterr().err and not out.exists()
    assert main(["generate", "--model", str(tiny_model), "--set", "age=99", "--allow-extrapolation", "--out", str(out)]) == 0
    assert capsys.readouterr().err.count("warning: condition 'age' = 99 is outside the trained range") == 1
    assert (out / "atlas.nii.gz").is_file()
    assert main(["generate", "--model", str(tiny_model), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_model), "--set", "age=50", "--set", "age=60", "--out", str(tmp_path / "h")]) == 2


def test_fast_resampling_equals_the_coordinate_path():
    """Reference: sampling at each 1 mm template voxel's point mapped into the 2 mm working grid (the general path)."""
    from DiffDefAtlasLib.spatial.fields import _resample_at_coordinates, corners_coincide, resample_displacement
    from DiffDefAtlasLib.imaging.resampling import working_grid_for
    from DiffDefAtlasLib.template import template_grid, working_grid

    coarse, fine = working_grid(), template_grid("1mm")
    assert corners_coincide(coarse, fine) and not corners_coincide(coarse, coarse.zoomed(2))
    assert corners_coincide(working_grid_for(fine, 2.0, 16), fine)  # the registration engine's 1 mm output path too
    field = torch.randn(1, 3, *coarse.shape)
    torch.testing.assert_close(resample_displacement(field, coarse, fine), _resample_at_coordinates(field, coarse, fine), atol=2e-4, rtol=0)


def _fit_spatial_mean(spatial: bool, steps: int = 200) -> float:
    """Train a tiny latent UNet to output ``age * pattern`` from a zero latent; return the last loss."""
    from DiffDefAtlasLib.generate.networks import build_unet

    torch.manual_seed(0)
    shape = (6, 8, 6)
    maps = 2 if spatial else 0
    config = {"channels": [8, 16], "norm_num_groups": 4, "condition_dim": 8, "position_channels": maps, "condition_map_channels": maps}
    unet = build_unet(3, 2, [("continuous", 0)], config, shape)
    pattern = torch.randn(1, 2, *shape)
    optimiser = torch.optim.Adam(unet.parameters(), lr=1e-2)
    for _ in range(steps):
        age = torch.rand(8, 1) * 2 - 1
        target = age.view(-1, 1, 1, 1, 1) * pattern + 0.5 * pattern.flip(2)
        out = unet(torch.zeros(8, 2, *shape), torch.full((8,), 999), age, torch.ones(8, 1, dtype=torch.bool))
        loss = torch.nn.functional.mse_loss(out, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return float(loss.detach())


def test_spatial_inputs_let_the_unet_place_a_conditional_mean():
    # At the first sampling step the latent carries no position; the learned position and condition maps supply it.
    with_maps, without = _fit_spatial_mean(True), _fit_spatial_mean(False)
    assert with_maps < 0.2 * without, (with_maps, without)


def test_cards_without_spatial_inputs_build_the_older_unet():
    from DiffDefAtlasLib.generate.networks import UNET_DEFAULTS, build_unet

    older = {k: v for k, v in UNET_DEFAULTS.items() if k not in ("position_channels", "condition_map_channels")}
    unet = build_unet(3, 4, [("continuous", 0)], older, (4, 4, 4))
    assert unet.position is None and unet.condition_maps is None
    assert unet.conv_in.conv.in_channels == 4
    newer = build_unet(3, 4, [("continuous", 0)], dict(UNET_DEFAULTS), (4, 4, 4))
    assert newer.conv_in.conv.in_channels == 4 + UNET_DEFAULTS["position_channels"] + UNET_DEFAULTS["condition_map_channels"]


def test_atlas_and_population_draws_take_their_own_step_counts(tiny_model):
    """Reference: the card's sampling settings: ``steps`` for the atlas, ``sample_steps`` for temperature > 0, and an
    explicit ``steps`` argument over both. A one-step draw from noise would be the mean again, not a member."""
    import copy

    from DiffDefAtlasLib.generate.atlas import Generator

    loaded = load_generator(tiny_model, "cpu")
    card = copy.deepcopy(loaded.card)
    card.sampling.update(steps=1, sample_steps=4)
    generator = Generator(card, loaded.network, loaded.device)
    assert generator.generate({"age": 55}).summary["steps"] == 1
    assert generator.generate({"age": 55}, temperature=1.0).summary["steps"] == 4
    assert generator.generate({"age": 55}, temperature=1.0, steps=2).summary["steps"] == 2
    del card.sampling["sample_steps"]
    assert generator.generate({"age": 55}, temperature=1.0).summary["steps"] == 1
