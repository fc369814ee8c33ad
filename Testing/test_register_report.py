"""Registration report helpers: the λ-map figure (pixel size, colours, grids) and the k-means tissue labels behind the 2D Dice."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from DiffDefAtlasLib.metrics import dice_per_class
from DiffDefAtlasLib.imageio import Volume
from DiffDefAtlasLib.register.report import (
    COLOURBAR_WIDTH,
    GAP,
    HEADER,
    TITLE_WIDTH,
    kmeans_tissue_labels,
    lambda_figure,
    lambda_figure_size,
)


def _synthetic(shape=(10, 12, 8)):
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    image = Volume(rng.random(shape).astype(np.float32), affine)
    ramp = np.broadcast_to(np.linspace(0.1, 0.9, shape[0])[:, None, None], shape).astype(np.float32)
    jac = np.ones(shape, np.float32)
    jac[5, 6, 4] = -0.5  # one folded voxel at the centre of every view
    mask = np.zeros(shape, np.uint8)
    mask[2:-2, 2:-2, 2:-2] = 1
    return image, Volume(ramp, affine), Volume(jac, affine), Volume(mask, affine)


def test_lambda_figure_size_by_hand():
    """Reference: (10, 12, 8) at zoom 2: panels 20, 20 and 24 px wide (i, i, j), 24 px tall (j); four rows."""
    assert lambda_figure_size((10, 12, 8), zoom=2) == (TITLE_WIDTH + (20 + GAP) + (20 + GAP) + (24 + GAP) + COLOURBAR_WIDTH, HEADER + 4 * (24 + GAP))
    assert lambda_figure_size((6, 9), zoom=3) == (TITLE_WIDTH + 18 + GAP + COLOURBAR_WIDTH, HEADER + 4 * (27 + GAP))


def test_lambda_figure_writes_png_of_documented_size(tmp_path):
    image, lam, jac, mask = _synthetic()
    path = lambda_figure(image, image, lam, jac, tmp_path / "sub" / "lambda.png", mask=mask, zoom=2, title="synthetic")
    assert path.is_file() and not list(path.parent.glob("*.tmp*"))
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.mode == "RGB"
        assert picture.size == lambda_figure_size((10, 12, 8), zoom=2)
        pixels = np.asarray(picture)
    # log det J row (the 4th): the folded centre voxel is drawn yellow in the axial panel.
    height = 24 + GAP
    row = pixels[HEADER + 3 * height : HEADER + 3 * height + 24, TITLE_WIDTH : TITLE_WIDTH + 20]
    assert np.any(np.all(row == (255, 255, 0), axis=-1))
    # λ row: a ramp along i shows up as colours changing from left to right (not one flat colour).
    lam_row = pixels[HEADER + 2 * height + 12, TITLE_WIDTH : TITLE_WIDTH + 20].astype(int)
    assert np.abs(lam_row[0] - lam_row[-1]).sum() > 100


def test_lambda_figure_resamples_lambda_from_a_coarser_grid(tmp_path):
    """λ on a 2x coarser grid covering the same field of view lands on the fixed grid (same size as on the fixed grid)."""
    image, lam, jac, mask = _synthetic((8, 8, 8))
    coarse = Volume(np.full((4, 4, 4), 0.3, np.float32), np.diag([4.0, 4.0, 4.0, 1.0]))
    coarse.affine[:3, 3] = 1.0  # voxel centres of a 4 mm grid over the same 16 mm box
    path = lambda_figure(image, image, coarse, jac, tmp_path / "l.png", zoom=1)
    with Image.open(path) as picture:
        assert picture.size == lambda_figure_size((8, 8, 8), zoom=1)


def test_lambda_figure_2d(tmp_path):
    image = Volume(np.random.default_rng(1).random((6, 9)).astype(np.float32), np.eye(3))
    path = lambda_figure(image, image, image, Volume(np.ones((6, 9), np.float32), np.eye(3)), tmp_path / "l2.png", zoom=3)
    with Image.open(path) as picture:
        assert picture.size == lambda_figure_size((6, 9), zoom=3)


def test_kmeans_tissue_labels_known_answer():
    """Reference: three well-separated intensity groups inside the mask -> 1 (dark), 2, 3 (bright); outside -> 0."""
    image = np.array([[0.0, 0.10, 0.12, 0.11], [0.50, 0.52, 0.48, 0.9], [0.92, 0.88, 0.0, 0.95]])
    mask = np.array([[0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 1]])
    expected = np.array([[0, 1, 1, 1], [2, 2, 2, 3], [3, 3, 0, 3]])
    assert np.array_equal(kmeans_tissue_labels(image, mask), expected)
    assert kmeans_tissue_labels(image, np.zeros_like(mask)).max() == 0


def test_tissue_dice_of_shifted_labels_by_hand():
    """Reference: a 4x4 square of class 1 shifted by one column overlaps on 12 pixels: Dice 2*12/(16+16) = 0.75."""
    a = np.zeros((8, 8), np.uint8)
    a[2:6, 2:6] = 1
    b = np.roll(a, 1, axis=1)
    assert dice_per_class(a, b, classes=(1,))[1] == pytest.approx(0.75)
    image = np.where(a == 1, 0.2, 0.9)
    image[:, :2] = 0.5  # a third tissue, so the three classes are 0.2, 0.5, 0.9
    labels = kmeans_tissue_labels(image, np.ones((8, 8)))
    assert dice_per_class(labels, a, classes=(1,))[1] == 1.0 and np.all(labels[:, :2] == 2) and labels[0, 7] == 3


def _benchmark_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_registration.py"
    spec = importlib.util.spec_from_file_location("benchmark_registration", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_labels_uniform_ablation_by_its_lambda(tmp_path):
    import json

    script = _benchmark_script()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model_card.json").write_text(json.dumps({"network": {"lambda_init": 0.286, "spatially_varying": False}}))
    assert script._model_label(tmp_path / "a") == "uniform λ = 0.286"
    assert script._model_label(tmp_path / "missing") == "missing"


@pytest.mark.data
def test_oasis2d_comparison_reports_dice(shared_data, tmp_path, capsys):
    """Two validation slices, the bundled 2D model twice: the Dice columns are filled, equal for the two rows (same
    network, shared affine), and registration improves on the affine."""
    import json

    from DiffDefAtlasLib.register.weights import model_folder

    script = _benchmark_script()
    table = script.oasis_2d({"bundled": None, "again": model_folder(2)}, refine=0, limit=2, json_path=tmp_path / "t.json")
    assert "Dice registered" in capsys.readouterr().out
    a, b = table["bundled"], table["again"]
    assert a["slices"] == 2 and 0.3 < a["dice_affine"] < a["dice_registered"] <= 1.0
    assert a["per_slice_dice"] == b["per_slice_dice"] and b["dice_difference_to_first"]["mean"] == 0.0
    assert json.loads((tmp_path / "t.json").read_text())["bundled"]["folding_percent"] == a["folding_percent"]
