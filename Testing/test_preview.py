"""The preview pictures (preview.png, the sweep montage and GIF): the template-to-atlas volume change over the anatomy.

The stored map is x -> x + u(x) and ``jacobian.nii.gz`` is its det J, so det J < 1 is growth (a structure larger in
the atlas than in the template, red) and det J > 1 shrinkage (blue). The pixels are checked against the data.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from DiffDefAtlasLib.generate import list_models
from DiffDefAtlasLib.generate import preview
from DiffDefAtlasLib.imageio import Volume

SHAPE = (48, 56, 40)
GAP = 2  # columns between the panels


def _panels(shape):
    """(column offset, width, height) of the axial, coronal and sagittal panels, left to right from the top."""
    nx, ny, nz = shape
    sizes = [(nx, ny), (nx, nz), (ny, nz)]
    out, x = [], 0
    for width, height in sizes:
        out.append((x, width, height))
        x += width + GAP
    return out


def _display(array):
    """The centre slices as the pictures show them (RAS array; neurological orientation, superior/anterior at the top)."""
    i, j, k = (s // 2 for s in array.shape)
    return [np.flipud(array[:, :, k].T), np.flipud(array[:, j, :].T), np.flipud(array[i, :, :].T)]


def _cut(picture, shape):
    """The three panels of ``picture`` as int arrays (rows, columns, RGB)."""
    pixels = np.asarray(picture.convert("RGB"), dtype=int)
    return [pixels[:height, x : x + width] for x, width, height in _panels(shape)]


def _luminance(rgb):
    return rgb @ np.array([0.2126, 0.7152, 0.0722])


@pytest.fixture(scope="module")
def synthetic():
    """A bright ellipsoid brain of three tissues in blocks, on black; det J 0.6 (growth) on the patient's left third of the
    grid, 1.6 (shrinkage) on the right third, 1 between, all three reaching out into the background."""
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    centre = [(n - 1) / 2 for n in SHAPE]
    radius = [0.45 * n for n in SHAPE]
    inside = sum(((c - m) / r) ** 2 for c, m, r in zip((i, j, k), centre, radius)) <= 1.0
    tissue = np.array([0.3, 0.6, 0.9], np.float32)[((i // 3) + (j // 4) + (k // 3)).astype(int) % 3]  # CSF, GM, WM
    atlas = np.where(inside, tissue, 0.0).astype(np.float32)
    det = np.ones(SHAPE, np.float32)
    det[: SHAPE[0] // 3] = 0.6
    det[2 * SHAPE[0] // 3 :] = 1.6
    return atlas, det, inside


def test_growth_is_red_shrinkage_blue_no_change_grey_and_background_untouched(synthetic):
    """Reference: det J of the synthetic field, pixel by pixel; the grey picture drawn without a Jacobian."""
    atlas, det, inside = synthetic
    picture = preview.slices_with_jacobian(Volume(atlas, np.eye(4)), Volume(det, np.eye(4)), "age=73")
    grey = preview.slices_with_jacobian(Volume(atlas, np.eye(4)))
    for rgb, plain, det_2d, inside_2d in zip(_cut(picture, SHAPE), _cut(grey, SHAPE), _display(det), _display(inside)):
        red, blue = rgb[..., 0], rgb[..., 2]
        growth, shrinkage, same = inside_2d & (det_2d < 1), inside_2d & (det_2d > 1), det_2d == 1
        if growth.any():
            assert (red[growth] > blue[growth] + 60).all(), "det J < 1 (larger in the atlas) must be red"
        if shrinkage.any():
            assert (blue[shrinkage] > red[shrinkage] + 60).all(), "det J > 1 (smaller in the atlas) must be blue"
        np.testing.assert_array_equal(rgb[same], plain[same])  # no change: the grey anatomy, exactly
        assert (plain[..., 0] == plain[..., 2]).all() and (plain[..., 0] == plain[..., 1]).all()
        np.testing.assert_array_equal(rgb[~inside_2d], plain[~inside_2d])  # the background is not covered
        assert (rgb[~inside_2d] == 0).all()
    axial = _display(det)[0]
    assert (axial < 1).any() and (axial > 1).any()  # the axial panel shows both, out into the background


def test_the_anatomy_stays_visible_under_the_overlay(synthetic):
    """Reference: the grey picture (no Jacobian). Inside the brain the picture's luminance follows the anatomy
    (correlation > 0.8), and even where the colour is strongest at least half the grey contrast is left."""
    atlas, det, inside = synthetic
    picture = preview.slices_with_jacobian(Volume(atlas, np.eye(4)), Volume(det, np.eye(4)))
    grey = preview.slices_with_jacobian(Volume(atlas, np.eye(4)))
    coloured, plain = _cut(picture, SHAPE)[0], _cut(grey, SHAPE)[0]
    brain = _display(inside)[0]
    lum, ref = _luminance(coloured)[brain], _luminance(plain)[brain]
    assert np.corrcoef(lum, ref)[0, 1] > 0.8
    for region in (_display(det)[0] < 1, _display(det)[0] > 1):
        mask = brain & region
        kept = np.std(_luminance(coloured)[mask]) / np.std(_luminance(plain)[mask])
        assert kept >= 0.5, f"only {kept:.0%} of the anatomy's contrast is left under the colour"


def test_each_picture_and_sweep_frame_has_one_colour_bar_and_legend(synthetic, tmp_path):
    """Reference: the legend strip drawn on its own; blue (volume ratio < 1) on the left of the bar, red on the right,
    the words and the ratio scale; a sweep montage and GIF made of three frames hold it once per frame."""
    atlas, det, _ = synthetic
    words = preview.LEGEND_WORDS
    assert "red: larger in the atlas than in the template" in words and "blue: smaller" in words
    assert preview.ratio_ticks(1.5) == ["0.67", "0.8", "1", "1.25", "1.5"]
    frames = [preview.slices_with_jacobian(Volume(atlas * s, np.eye(4)), Volume(det, np.eye(4)), f"age={a}") for s, a in ((1.0, 40), (0.9, 50), (0.8, 60))]
    height = max(h for _, _, h in _panels(SHAPE))
    for n, frame in enumerate(frames):
        strip = preview.legend_strip(frame.width, f"age={(40, 50, 60)[n]}")
        assert frame.height == height + strip.height
        np.testing.assert_array_equal(np.asarray(frame)[height:], np.asarray(strip))
    bar = np.asarray(preview.colour_bar(200, 10), dtype=int)
    assert bar[5, 5, 2] > bar[5, 5, 0] + 60 and bar[5, -5, 0] > bar[5, -5, 2] + 60
    assert len(set(bar[5, 100])) == 1  # volume ratio 1 (the middle): grey
    sheet = np.asarray(preview.montage(frames, columns=1), dtype=int)
    for n, frame in enumerate(frames):
        strip = np.asarray(frame, dtype=int)[height:]
        np.testing.assert_array_equal(sheet[n * frame.height : (n + 1) * frame.height], np.asarray(frame))
        blue = (strip[..., 2] > strip[..., 0] + 60) & (strip[..., 2] > strip[..., 1] + 30)
        red = (strip[..., 0] > strip[..., 2] + 60) & (strip[..., 0] > strip[..., 1] + 60)  # not the yellow label
        assert blue.sum() > 50 and red.sum() > 50 and np.flatnonzero(blue.any(0)).mean() < np.flatnonzero(red.any(0)).mean()
        rows = np.flatnonzero((blue | red).any(1))
        assert rows.max() - rows.min() < 20  # one bar, not one per panel
        assert (strip.min(axis=-1) > 200).sum() > 200  # the words: white text on black
    preview.save_gif(frames, tmp_path / "sweep.gif")
    gif = Image.open(tmp_path / "sweep.gif")
    for n in range(gif.n_frames):
        gif.seek(n)
        lower = np.asarray(gif.convert("RGB"), dtype=int)[height:]
        assert (lower[..., 0] > lower[..., 2] + 60).sum() > 50 and (lower[..., 2] > lower[..., 0] + 60).sum() > 50


@pytest.mark.skipif("brain3d" not in {card.name for card in list_models()}, reason="brain3d is not bundled")
def test_an_old_atlas_shows_its_larger_ventricles_in_red(tmp_path):
    """Reference: the template's lateral ventricle label. In a 73-year-old atlas the ventricles are larger than in
    the template (mean log(1/det J) > 0 inside them), so preview.png must colour them red."""
    from DiffDefAtlasLib import api
    from DiffDefAtlasLib.template import load_template
    from DiffDefAtlasLib.template.labels import LATERAL_VENTRICLES

    result = api.generate_atlas("brain3d", {"age": 73, "sex": "F"}, device="cpu")
    det = np.asarray(result.jacobian.array, dtype=np.float64)
    template_ventricles = np.asarray(load_template("1mm").labels.array) == LATERAL_VENTRICLES
    atlas_ventricles = np.asarray(result.labels.array) == LATERAL_VENTRICLES
    assert template_ventricles.shape == det.shape
    assert atlas_ventricles.sum() > template_ventricles.sum()
    assert np.mean(-np.log(det[template_ventricles])) > 0.1 and np.mean(-np.log(det[atlas_ventricles])) > 0.1
    path = preview.save_png(preview.slices_with_jacobian(result.atlas, result.jacobian, "age=73, sex=F"), tmp_path / "preview.png")
    panels = _cut(Image.open(path), det.shape)
    change = [-np.log(d) for d in _display(det)]
    red, strong = [], []
    for rgb, ventricles, log_change in zip(panels, _display(atlas_ventricles), change):
        margin = rgb[..., 0][ventricles] - rgb[..., 2][ventricles]
        red.append(margin > 30)
        strong.append(margin[log_change[ventricles] > np.log(1.25)])
    assert sum(r.size for r in red) > 500
    share = np.concatenate(red).mean()
    assert share > 0.8, f"only {share:.0%} of the ventricles are red"
    assert (np.concatenate(strong) > 30).all()  # every ventricle pixel grown by 25 % or more is red
