"""Baselines (kernel regression, template network, template, Diff-Def wrapper) and the held-out evaluation path,
against the synthetic population's exact conditional mean and hand-computed weighted means."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from DiffDefAtlasLib.evaluate.heldout import evaluate_heldout
from DiffDefAtlasLib.evaluate.figures import write_figures
from DiffDefAtlasLib.evaluate.kernel_regression import KernelRegressionTemplate
from DiffDefAtlasLib.evaluate.methods import DiffDefMethod, TemplateBaseline
from DiffDefAtlasLib.evaluate.report import summary_table, write_report
from DiffDefAtlasLib.evaluate.template_network import TemplateNetworkSettings, train_template_network
from DiffDefAtlasLib.imageio import Volume
from DiffDefAtlasLib.spatial import Grid, resample_displacement
from DiffDefAtlasLib.train.data import synthetic_fields, synthetic_mean_velocity


def _rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


@pytest.fixture(scope="module")
def fields():
    return synthetic_fields(200, 2, shape=(16, 20), seed=0)


def test_kernel_regression_is_the_weighted_mean_and_finds_the_conditional_mean(fields):
    """References: the Gaussian-weighted mean computed by hand; the synthetic population's exact E[v | age, sex]."""
    method = KernelRegressionTemplate.from_fields(fields, sigma=0.1)
    conditions = {"age": 70.0, "sex": "M"}
    age_n = (fields.conditions["age"] - 40.0) / 40.0
    w = np.exp(-((age_n - 0.75) ** 2 + (fields.conditions["sex"] - 1.0) ** 2) / (2 * 0.1**2))
    by_hand = np.tensordot(w / w.sum(), fields.velocities.astype(np.float64), axes=1)
    ours = method.velocity(conditions)[0].numpy()
    assert np.allclose(ours, by_hand, atol=1e-5)
    truth = synthetic_mean_velocity(70.0, 1.0, fields.grid)[0]
    assert _rmse(ours, truth) < 0.5 * _rmse(fields.velocities.mean(0), truth)
    nearest = KernelRegressionTemplate.from_fields(fields, sigma=1e-5)
    i = int(np.argmin(np.abs(fields.conditions["age"] - 70.0) + 10 * (fields.conditions["sex"] != 1)))
    assert np.allclose(nearest.velocity({"age": float(fields.conditions["age"][i]), "sex": "M"})[0].numpy(), fields.velocities[i], atol=1e-5)


def test_template_network_learns_the_conditional_mean(fields, tmp_path):
    """Reference: the synthetic population's exact E[v | age, sex]; the trained decoder must beat the global mean,
    and a second call loads the cached weights (same output) instead of retraining."""
    settings = TemplateNetworkSettings(steps=120, batch_size=16, learning_rate=5e-3, channels=(8, 8), output_stride=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is several times faster on a busy machine
    try:
        method = train_template_network(fields, settings, cache_dir=tmp_path)
    finally:
        torch.set_num_threads(threads)
    errors, baseline = [], []
    for age, sex in ((45.0, "F"), (60.0, "M"), (75.0, "F")):
        truth = synthetic_mean_velocity(age, 0.0 if sex == "F" else 1.0, fields.grid)[0]
        errors.append(_rmse(method.velocity({"age": age, "sex": sex})[0].numpy(), truth))
        baseline.append(_rmse(fields.velocities.mean(0), truth))
    assert np.mean(errors) < 0.6 * np.mean(baseline)
    again = train_template_network(fields, settings, cache_dir=tmp_path)
    assert again.info.get("cached")
    assert torch.equal(again.velocity({"age": 50.0, "sex": "F"}), method.velocity({"age": 50.0, "sex": "F"}))


def test_template_and_diffdef_wrappers(tmp_path):
    """References: identity for the template; the generator's own integration for Diff-Def, and the velocity itself
    (resampled) for the no-integration proxy."""
    from DiffDefAtlasLib.generate import load_generator
    from modelfactory import build_tiny_model

    generator = load_generator(build_tiny_model(tmp_path), "cpu")
    grid = generator.working_grid
    assert float(TemplateBaseline().displacement({}, grid).abs().max()) == 0.0
    conditions = {"age": 55.0, "sex": "F"}
    velocity = generator.sample_velocity(conditions)
    integrated = DiffDefMethod(generator).displacement(conditions, grid)
    assert torch.allclose(integrated, generator.velocity_to_displacement(velocity, grid), atol=1e-6)
    raw = DiffDefMethod(generator, integrate=False).displacement(conditions, grid)
    assert torch.allclose(raw, resample_displacement(velocity, generator.velocity_grid, grid), atol=1e-6)


def _disk_world(shape):
    yy, xx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r = np.hypot(yy - shape[0] / 2 + 0.5, xx - shape[1] / 2 + 0.5)
    image = np.clip(1.2 - r / 24.0, 0, 1).astype(np.float32) * (r < 26)
    labels = np.where(r < 8, 4, np.where(r < 16, 3, np.where(r < 22, 2, np.where(r < 26, 1, 0)))).astype(np.uint8)
    return image, labels


def test_heldout_evaluation_report_and_figures(tmp_path):
    """End to end on a tiny 2D world: rows per method and condition, the identity template has no folding and zero
    smoothness, a shifted method is less central than the template for subjects that are the template itself, and the
    report files hold the table."""
    from DiffDefAtlasLib.generate.model_card import ConditionSpec
    from DiffDefAtlasLib.register.network import NetworkConfig, RegistrationNetwork

    shape = (64, 64)
    grid = Grid(shape, np.eye(3))
    image, labels = _disk_world(shape)
    template, mask, label_volume = Volume(image, grid.affine), Volume((labels > 0).astype(np.uint8), grid.affine), Volume(labels, grid.affine)
    subjects = torch.from_numpy(image)[None, None].repeat(4, 1, 1, 1)
    conditions = [{"age": a, "sex": s} for a, s in ((60, "F"), (65, "F"), (70, "M"), (75, "M"))]
    specs = [ConditionSpec("age", "continuous", 60.0, 80.0), ConditionSpec("sex", "categorical", choices=["F", "M"])]

    class Shift:
        name, description = "shift", "a 2 mm translation"

        def displacement(self, conditions, grid):
            return torch.full((1, 2, *grid.shape), 2.0)

    torch.manual_seed(0)
    network = RegistrationNetwork(NetworkConfig(spatial_dims=2, channels=(4, 8, 8, 8))).eval()
    for parameter in network.velocity_head.parameters():  # a "registration" that measures the intensity offset only
        torch.nn.init.zeros_(parameter)
    targets = [{"age": 65.0, "sex": "F"}, {"age": 70.0, "sex": "M"}]
    result = evaluate_heldout([TemplateBaseline(), Shift()], template, mask, label_volume, subjects, conditions, specs, targets, network, sigma=0.2, name="tiny")
    assert len(result.rows) == 4 and {r["method"] for r in result.rows} == {"template", "shift"}
    table = summary_table(result)
    assert table["template"]["folding_nonpositive_pct"][0] == 0.0 and table["template"]["smoothness_grad_detj"][0] == 0.0
    assert table["template"]["centrality_mm"][0] == pytest.approx(0.0, abs=1e-6)  # zero-velocity network: d = 0
    paths = write_report(result, tmp_path, command="diffdef-atlas evaluate ...", figures=[str(p) for p in write_figures(result, tmp_path, "ventricle_size")])
    rows = list(csv.DictReader(paths["metrics"].open()))
    assert len(rows) == 4 and "centrality_mm" in rows[0] and rows[0]["method"] == "template"
    report = paths["report"].read_text()
    assert "| template |" in report and "| shift |" in report and "centrality_mm" in report
    assert (tmp_path / "atlases_F.png").is_file() and (tmp_path / "jacobians_M.png").is_file()


def test_joint_template_network_moves_to_the_centre_of_its_subjects(tmp_path):
    """Reference: subjects that are the bundled 2D template translated by a known amount, (age - 70) * 0.3 mm along
    the first axis. Trained on their images alone, jointly with the bundled registration network, the atlas for an
    age must move the template the way that age's subjects are moved (atlas(x) = template(x + u), subject(x) =
    template(x + s)), and the untrained decoder must not move it at all. A second call loads the cached weights."""
    from DiffDefAtlasLib.evaluate.joint_template_network import JointTemplateSettings, train_joint_template_network
    from DiffDefAtlasLib.generate.model_card import ConditionSpec
    from DiffDefAtlasLib.population.oasis2d import load_oasis_template
    from DiffDefAtlasLib.spatial import warp_image

    image, mask, _ = load_oasis_template()
    grid = image.grid
    template = torch.from_numpy(np.asarray(image.array, np.float32))[None, None]
    brain = torch.from_numpy(np.asarray(mask.array) > 0)
    ages = np.linspace(60.0, 80.0, 12)
    subjects = []
    for age in ages:
        shift = torch.zeros(1, 2, *grid.shape)
        shift[:, 0] = float((age - 70.0) * 0.3)
        subjects.append(warp_image(template, shift, grid))
    specs = [ConditionSpec(name="age", kind="continuous", minimum=60.0, maximum=80.0)]
    untrained = train_joint_template_network(torch.cat(subjects), template, brain[None, None].float(), {"age": ages}, specs, grid, settings=JointTemplateSettings(steps=0), cache=False)
    assert float(untrained.displacement({"age": 80.0}, grid).abs().max()) == 0.0
    settings = JointTemplateSettings(steps=60, neighbours=4, sigma=0.15)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        method = train_joint_template_network(torch.cat(subjects), template, brain[None, None].float(), {"age": ages}, specs, grid, settings=settings, cache_dir=tmp_path)
    finally:
        torch.set_num_threads(threads)
    young, old = (method.displacement({"age": a}, grid)[0] for a in (60.0, 80.0))
    along = float((old[0] - young[0])[brain].mean())  # truth: 6 mm
    across = float((old[1] - young[1])[brain].mean())  # truth: 0
    assert along > 1.5 and abs(across) < 0.5 * along
    again = train_joint_template_network(torch.cat(subjects), template, brain[None, None].float(), {"age": ages}, specs, grid, settings=settings, cache_dir=tmp_path)
    assert again.info.get("cached") and torch.equal(again.velocity({"age": 65.0}), method.velocity({"age": 65.0}))


def test_diffdef_rows_name_each_variant_by_its_card(tmp_path):
    """The bundled brain3d has no MP stage: a variant folder must be the MP-tuned export (its card says so), and is
    refused when it is the same kind as the bundled model."""
    from DiffDefAtlasLib.errors import DiffDefInputError
    from DiffDefAtlasLib.evaluate.methods import diffdef_rows
    from DiffDefAtlasLib.generate import load_generator
    from DiffDefAtlasLib.generate.model_card import ModelCard
    from modelfactory import build_tiny_model

    bundled_mp = bool(load_generator("brain3d", "cpu").card.training.get("mp_finetuned"))
    folders = {}
    for mp in (False, True):
        folder = build_tiny_model(tmp_path / f"variant_mp{int(mp)}")
        card = ModelCard.from_json((folder / "model_card.json").read_text())
        card.training["mp_finetuned"] = mp
        (folder / "model_card.json").write_text(card.to_json())
        folders[mp] = str(folder)
    with pytest.raises(DiffDefInputError, match="same kind"):
        diffdef_rows("brain3d", folders[bundled_mp])
    rows = diffdef_rows("brain3d", folders[not bundled_mp])
    assert [r.name for r in rows] == (["diffdef", "diffdef (no MP)"] if bundled_mp else ["diffdef (no MP)", "diffdef"]) + ["diffdef, no integration"]
    assert rows[1].generator.card.name == "tiny2d" and rows[2].generator is rows[0].generator and not rows[2].integrate
