"""The module's atlas layers as Slicer's own slice view draws them: pixels of an offscreen render against the data.

The render is slicer-core's: the axial slice logic blends the atlas (background) and the Jacobian (foreground), and
the displayable managers of a slice view draw the legend and the deformation grid (``Testing/slicershims/
sliceviews.py`` stands only for the Qt widget). The atlas is a small synthetic ``AtlasResult`` shown through
``logic.showAtlasResult``, with bands of known det J and a known displacement.

References, independent of the module: the Jacobian display node's own lookup table (the colour it gives det J,
whatever colour table the Logic chose), the same view rendered with the foreground at opacity 0 (the grey
background the overlay is blended onto), and the displacement put into the result (the shift of the grid lines in
pixels, from the slice node's own XY-to-RAS matrix). Each check is also run on a render that must fail it.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from DiffDefAtlasLib.imageio import Volume
from DiffDefAtlasLib.spatial import Grid

pytestmark = pytest.mark.slicer_core

SIZE = 160  # pixels of the axial view
SHAPE = (40, 40, 8)  # voxels of 2 mm: an 80 x 80 x 16 mm block centred on the origin
SPACING = 2.0
GRID_SPACING_MM = 10.0
SHIFT_MM = 3.0  # u_x in the anterior half
#: det J of the three bands along y (posterior to anterior): none, shrinkage... as the colour table shows them
BANDS = {"unchanged": 1.0, "low": 0.45, "high": 1.6}


def _band_rows(name: str) -> slice:
    third = SHAPE[1] // 3
    return {"unchanged": slice(0, third), "low": slice(third, 2 * third), "high": slice(2 * third, SHAPE[1])}[name]


def _grid() -> Grid:
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = -SPACING * (np.array(SHAPE) - 1) / 2.0
    return Grid(SHAPE, affine)


def _result(shift_mm: float = 0.0):
    """An AtlasResult on a 2 mm block: a grey ramp along x (its bottom and top slices 0 and 300, so that the ramp
    is mid grey after Slicer's auto window/level), det J in three bands along y, and u_x = ``shift_mm`` in the
    anterior half (a shear: u_x depends on y only, ramped over 4 voxels so the cubic grid stays smooth)."""
    from DiffDefAtlasLib.generate.atlas import AtlasResult

    grid = _grid()
    i = np.arange(SHAPE[0], dtype=np.float32)[:, None, None]
    atlas = np.broadcast_to(100.0 + 60.0 * i / (SHAPE[0] - 1), SHAPE).astype(np.float32).copy()
    atlas[:, :, 0], atlas[:, :, -1] = 0.0, 300.0
    jacobian = np.ones(SHAPE, np.float32)
    for name, value in BANDS.items():
        jacobian[:, _band_rows(name), :] = value
    labels = np.zeros(SHAPE, np.uint8)
    labels[:2, :2, :2] = 1  # one tiny segment in a corner, away from every sampled pixel
    displacement = np.zeros((3, *SHAPE), np.float32)
    j = np.arange(SHAPE[1], dtype=np.float32)
    displacement[0] = shift_mm * np.clip((j - 18.0) / 4.0, 0.0, 1.0)[None, :, None]
    return AtlasResult(
        atlas=Volume(atlas, grid.affine),
        labels=Volume(labels, grid.affine),
        displacement=displacement,
        grid=grid,
        jacobian=Volume(jacobian, grid.affine),
        folding=Volume(np.zeros(SHAPE, np.uint8), grid.affine),
        velocity=np.zeros((3, 2, 2, 2), np.float32),
        velocity_grid=Grid((2, 2, 2), np.eye(4)),
        summary={"device": "cpu", "folding_ratio_nonpositive": 0.0, "detj_min": 0.45, "detj_max": 1.6},
    )


@pytest.fixture(scope="module")
def axial_view(slicer_env):
    """Slicer's axial (Red) view, made before any data as Slicer makes its views; skips without offscreen OpenGL."""
    from slicershims import sliceviews

    works, detail = sliceviews.offscreen_rendering()
    if not works:
        pytest.skip(f"VTK cannot render offscreen here (no EGL or OSMesa OpenGL): {detail}")
    view = sliceviews.slice_views(slicer_env, (SIZE, SIZE))["Red"]
    view.slice_node.SetOrientation("Axial")
    return view


@pytest.fixture
def logic(scene):
    import DiffDefAtlas

    return DiffDefAtlas.DiffDefAtlasLogic()


def _show(logic, view, shift_mm: float = 0.0):
    nodes = logic.showAtlasResult(_result(shift_mm), model="brain3d", conditions={"age": 72, "sex": "F"})
    p = logic.getParameterNode()
    p.gridSpacing = GRID_SPACING_MM
    logic.applyDisplaySettings(p)
    view.fit()
    view.slice_node.SetSliceOffset(0.0)
    return nodes


@contextlib.contextmanager
def _foreground_hidden(view):
    composite = view.logic.GetSliceCompositeNode()
    opacity = composite.GetForegroundOpacity()
    composite.SetForegroundOpacity(0.0)
    try:
        yield
    finally:
        composite.SetForegroundOpacity(opacity)


def _pixel(view, ras) -> tuple:
    """(row from the top, column) of the pixel showing RAS point ``ras`` (the slice node's XY-to-RAS inverted)."""
    import slicer

    matrix = slicer.util.arrayFromVTKMatrix(view.slice_node.GetXYToRAS())
    x, y = (np.linalg.inv(matrix) @ [*ras, 1.0])[:2]
    return int(round(SIZE - 1 - y)), int(round(x))


def _band_centre(name: str) -> tuple:
    rows = _band_rows(name)
    j = (rows.start + rows.stop - 1) / 2.0
    return (_grid().affine @ [SHAPE[0] / 2.0 - 6.0, j, (SHAPE[2] - 1) / 2.0, 1.0])[:3]


def _patch(pixels, centre, half: int = 3) -> np.ndarray:
    row, col = centre
    return pixels[row - half:row + half + 1, col - half:col + half + 1].reshape(-1, 3).astype(float)


def _clear_spot(background_pixels, centre, half: int = 3, reach: int = 12) -> tuple:
    """The pixel nearest ``centre`` whose patch in the background-only render is plain grey (no grid line)."""
    row, col = centre
    offsets = sorted(((dr, dc) for dr in range(-reach, reach + 1) for dc in range(-reach, reach + 1)),
                     key=lambda o: o[0] ** 2 + o[1] ** 2)
    for dr, dc in offsets:
        patch = _patch(background_pixels, (row + dr, col + dc), half)
        if np.all(np.ptp(patch, axis=1) < 6):
            return row + dr, col + dc
    raise AssertionError(f"no grey patch near pixel {centre}")


def _expected_overlay(display, opacity: float, det_j: float, background: np.ndarray) -> tuple:
    """What Slicer's slice logic blends at det J = ``det_j``: the display node's lookup table (on its 0-255
    window/level scale) at that value, at the foreground opacity times the table's alpha, over ``background``."""
    low = display.GetLevel() - display.GetWindow() / 2.0
    byte = float(np.clip((det_j - low) / display.GetWindow() * 255.0, 0.0, 255.0))
    table = display.GetLookupTable()
    rgb = [0.0, 0.0, 0.0]
    table.GetColor(byte, rgb)
    alpha = opacity * table.GetOpacity(byte)
    return (1.0 - alpha) * background + alpha * 255.0 * np.asarray(rgb), np.asarray(rgb)


def _check_overlay(pixels, background_pixels, view, nodes, opacity: float) -> None:
    """At the centre of each det J band the render is the lookup-table colour blended over the grey background:
    within 12 grey levels, the dominant channel the table gives, and grey (R = G = B) where det J = 1."""
    display = nodes.jacobian.GetDisplayNode()
    assert display.GetLookupTable() is not None, f"no lookup table for colour node {display.GetColorNodeID()}"
    for name, det_j in BANDS.items():
        centre = _clear_spot(background_pixels, _pixel(view, _band_centre(name)))
        background = np.median(_patch(background_pixels, centre), axis=0)
        assert np.ptp(background) < 6 and background.mean() > 30, (name, background)  # grey atlas, no grid line
        expected, colour = _expected_overlay(display, opacity, det_j, background)
        seen = np.median(_patch(pixels, centre), axis=0)
        np.testing.assert_allclose(seen, expected, atol=12, err_msg=f"{name} band (det J {det_j})")
        if np.ptp(colour) > 0.3:  # a coloured end of the table: its strongest channel dominates the pixel
            assert int(np.argmax(seen - background)) == int(np.argmax(colour)), (name, seen, background, colour)
        if np.ptp(colour) < 0.05:  # a neutral colour (det J = 1 on a diverging table): the pixel stays grey
            assert np.ptp(seen) < 8, (name, seen)


def test_the_jacobian_overlay_shows_the_colour_table_over_the_grey_atlas(logic, axial_view):
    """Bands of det J 1, 0.45 and 1.6: each pixel is the colour the Jacobian display node's lookup table gives that
    value, blended at the foreground opacity over the atlas grey of the same view rendered without foreground. The
    background-only render itself fails the check (the check can fail)."""
    nodes = _show(logic, axial_view)
    composite = axial_view.logic.GetSliceCompositeNode()
    assert composite.GetBackgroundVolumeID() == nodes.atlas.GetID()
    assert composite.GetForegroundVolumeID() == nodes.jacobian.GetID()
    opacity = composite.GetForegroundOpacity()
    assert 0.0 < opacity < 1.0
    pixels = axial_view.capture()
    with _foreground_hidden(axial_view):
        background = axial_view.capture()
    _check_overlay(pixels, background, axial_view, nodes, opacity)
    with pytest.raises(AssertionError):
        _check_overlay(background, background, axial_view, nodes, opacity)


def _line_columns(pixels, reference, row: int) -> np.ndarray:
    """Centres of the vertical grid lines crossing ``row``: runs (up to 4 pixels wide) of columns where the render
    differs from the same view drawn without the grid in most of the 7 rows around ``row`` (a horizontal line
    crosses only one or two of them), in the left 70 % of the view (clear of the colour legend)."""
    band = np.abs(pixels[row - 3:row + 4].astype(int) - reference[row - 3:row + 4].astype(int))
    drawn = (band.max(axis=2) > 25).mean(axis=0) >= 0.6
    lo, hi = int(SIZE * 0.05), int(SIZE * 0.7)
    centres, start = [], None
    for col in range(lo, hi + 1):
        on = col < hi and drawn[col]
        if on and start is None:
            start = col
        elif not on and start is not None:
            if col - start <= 4:
                centres.append((start + col - 1) / 2.0)
            start = None
    return np.asarray(centres)


def _shifts(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """For each line of ``before``, the signed distance (pixels) to the nearest line of ``after``."""
    return np.asarray([after[np.argmin(np.abs(after - c))] - c for c in before])


def test_the_deformation_grid_bends_where_the_displacement_is(logic, axial_view):
    """The grid drawn by the transforms displayable manager: with u_x = 3 mm in the anterior half, the vertical grid
    lines crossing an anterior row move by 3 mm (pixels to mm by the slice node's XY-to-RAS) against the render with
    u = 0, and those crossing a posterior row (u = 0 there) do not move. The grid is drawn through the transform to
    the parent, x - u(x) for this small shear, so the lines move by -u."""
    import slicer

    rows = {name: _pixel(axial_view, (0.0, y, 0.0))[0] for name, y in (("anterior", 28.0), ("posterior", -28.0))}
    lines = {}
    for shift in (0.0, SHIFT_MM):
        nodes = _show(logic, axial_view, shift)
        display = nodes.transform.GetDisplayNode()
        assert display.GetVisibility() and display.GetVisibility2D()
        with _foreground_hidden(axial_view):
            drawn = axial_view.capture()
            display.SetVisibility2D(False)
            reference = axial_view.capture()
            display.SetVisibility2D(True)
        lines[shift] = {name: _line_columns(drawn, reference, row) for name, row in rows.items()}
    mm_per_column = float(slicer.util.arrayFromVTKMatrix(axial_view.slice_node.GetXYToRAS())[0, 0])  # RAS x per column
    assert abs(mm_per_column) * 3.0 < SHIFT_MM  # a shift of 3 pixels or more: one the check can see
    for name in rows:
        assert len(lines[0.0][name]) >= 3, (name, lines[0.0][name])
    moved = _shifts(lines[0.0]["anterior"], lines[SHIFT_MM]["anterior"]) * mm_per_column
    unmoved = _shifts(lines[0.0]["posterior"], lines[SHIFT_MM]["posterior"]) * mm_per_column
    np.testing.assert_allclose(unmoved, 0.0, atol=abs(mm_per_column))
    np.testing.assert_allclose(moved, -SHIFT_MM, atol=1.5 * abs(mm_per_column))
