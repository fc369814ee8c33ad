"""The module's overlays on real Slicer MRML (slicer-core): what the display settings leave alone, the colours of
the Jacobian, and the direction Slicer draws the deformation in.

References, independent of the module:
- the slice composite nodes of Slicer's Red, Yellow and Green views (``vtkMRMLSliceLogic.AddSliceNode``), set up as a
  user would set them (their own volume in the foreground at their own opacity) and read back;
- the window/level a user sets on the Jacobian's display node, read back;
- the RGBA image Slicer's own volume display pipeline makes from the Jacobian node
  (``vtkMRMLScalarVolumeDisplayNode.GetOutputImageDataConnection``: window/level, then the colour table), at voxels
  of known det J;
- the glyphs Slicer's transforms displayable manager draws for a slice
  (``vtkSlicerTransformLogic.GetVisualization2d``, which ``vtkMRMLTransformsDisplayableManager2D`` calls for each
  slice view) for a field of known, constant displacement.

The atlas is a small synthetic ``AtlasResult`` shown through ``logic.showAtlasResult`` (no model is run).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from DiffDefAtlasLib.imageio import Volume
from DiffDefAtlasLib.spatial import Grid

pytestmark = pytest.mark.slicer_core

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (18, 12, 6)  # voxels of 2 mm
SPACING = 2.0
#: det J in three bands along x (i): the template's anatomy larger in the atlas, unchanged, smaller
BANDS = {"larger": 0.6, "unchanged": 1.0, "smaller": 1.4}


def _grid() -> Grid:
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = -SPACING * (np.array(SHAPE) - 1) / 2.0
    return Grid(SHAPE, affine)


def _band(name: str) -> slice:
    third = SHAPE[0] // 3
    return {"larger": slice(0, third), "unchanged": slice(third, 2 * third), "smaller": slice(2 * third, SHAPE[0])}[name]


def _result(shift_mm: float = 1.0):
    """An AtlasResult on a 2 mm block: a grey ramp, det J in three bands along x, u = (shift_mm, 0, 0) everywhere."""
    from DiffDefAtlasLib.generate.atlas import AtlasResult

    grid = _grid()
    i = np.arange(SHAPE[0], dtype=np.float32)[:, None, None]
    atlas = np.broadcast_to(100.0 + 60.0 * i / (SHAPE[0] - 1), SHAPE).astype(np.float32).copy()
    jacobian = np.ones(SHAPE, np.float32)
    for name, value in BANDS.items():
        jacobian[_band(name)] = value
    labels = np.zeros(SHAPE, np.uint8)
    labels[:2, :2, :2] = 1
    displacement = np.zeros((3, *SHAPE), np.float32)
    displacement[0] = shift_mm
    displacement[0, :, :, : SHAPE[2] // 2] *= 0.5  # |u| not constant: a magnitude window to compute
    return AtlasResult(
        atlas=Volume(atlas, grid.affine),
        labels=Volume(labels, grid.affine),
        displacement=displacement,
        grid=grid,
        jacobian=Volume(jacobian, grid.affine),
        folding=Volume(np.zeros(SHAPE, np.uint8), grid.affine),
        velocity=np.zeros((3, 2, 2, 2), np.float32),
        velocity_grid=Grid((2, 2, 2), np.eye(4)),
        summary={"device": "cpu", "folding_ratio_nonpositive": 0.0, "detj_min": 0.6, "detj_max": 1.4},
    )


@pytest.fixture
def logic(scene):
    import DiffDefAtlas

    return DiffDefAtlas.DiffDefAtlasLogic()


def _show(logic, shift_mm: float = 1.0):
    return logic.showAtlasResult(_result(shift_mm), model="brain3d", conditions={"age": 72, "sex": "F"})


def _composites() -> dict:
    import slicer

    nodes = slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")
    assert len(nodes) == 3, "the slice views of slicershims.application (Red, Yellow, Green)"
    return {node.GetLayoutName(): node for node in nodes}


def _user_volume(name: str = "user scan"):
    import slicer

    return slicer.util.addVolumeFromArray(np.full((4, 5, 6), 7.0, np.float32), name=name)


def _layers(composite) -> tuple:
    return composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID(), round(composite.GetForegroundOpacity(), 6)


# --- A: display settings touch only what changed, and only our nodes


def test_the_users_own_foreground_keeps_its_opacity(logic):
    """A view where the user shows their own volume as foreground at opacity 0.8 keeps it through any number of
    display changes, including a change of the module's opacity; the views showing the module's overlay follow the
    module's opacity, and only when it changed (a manual 0.9 there survives an unrelated change)."""
    nodes = _show(logic)
    p = logic.getParameterNode()
    views = _composites()
    user = _user_volume()
    views["Yellow"].SetForegroundVolumeID(user.GetID())
    views["Yellow"].SetForegroundOpacity(0.8)
    for show_folding in (False, True, False):
        p.showFolding = show_folding
        logic.applyDisplaySettings(p)
    assert _layers(views["Yellow"]) == (nodes.atlas.GetID(), user.GetID(), 0.8)
    assert views["Red"].GetForegroundVolumeID() == nodes.jacobian.GetID()
    views["Red"].SetForegroundOpacity(0.9)  # the user's own choice on a view showing our overlay
    p.deformationScale = 2.0
    logic.applyDisplaySettings(p)
    assert views["Red"].GetForegroundOpacity() == pytest.approx(0.9)
    p.foregroundOpacity = 0.3  # the module's opacity slider: our overlay follows it, the user's volume does not
    logic.applyDisplaySettings(p)
    assert views["Red"].GetForegroundOpacity() == pytest.approx(0.3)
    assert views["Green"].GetForegroundOpacity() == pytest.approx(0.3)
    assert _layers(views["Yellow"]) == (nodes.atlas.GetID(), user.GetID(), 0.8)


def test_a_manual_window_level_survives_an_unrelated_change(logic):
    """The user's window/level on the Jacobian (Volumes module) stays when another setting changes; a new
    *Jacobian range* sets the window again (centred on 1)."""
    nodes = _show(logic)
    p = logic.getParameterNode()
    display = nodes.jacobian.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == pytest.approx((2 * p.jacobianHalfWidth, 1.0))
    display.SetWindowLevel(0.3, 1.1)
    for change in ({"showFolding": False}, {"foregroundOpacity": 0.4}, {"gridSpacing": 12.0}, {"deformationDisplay": "glyph"}):
        for name, value in change.items():
            setattr(p, name, value)
        logic.applyDisplaySettings(p)
        assert (display.GetWindow(), display.GetLevel()) == pytest.approx((0.3, 1.1)), change
    p.jacobianHalfWidth = 0.7
    logic.applyDisplaySettings(p)
    assert (display.GetWindow(), display.GetLevel()) == pytest.approx((1.4, 1.0))
    assert not display.GetAutoWindowLevel()


def test_without_an_atlas_the_views_are_left_alone(logic):
    """No atlas yet: changing *Foreground* (showAtlasLayers) or any display setting leaves the user's layers as they
    are (background, foreground and opacity on every view)."""
    background, foreground = _user_volume("user background"), _user_volume("user foreground")
    for composite in _composites().values():
        composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(foreground.GetID())
        composite.SetForegroundOpacity(0.8)
    p = logic.getParameterNode()
    for choice in ("magnitude", "none", "jacobian"):
        p.foreground = choice
        logic.showAtlasLayers(p)
        logic.applyDisplaySettings(p)
    for name, composite in _composites().items():
        assert _layers(composite) == (background.GetID(), foreground.GetID(), 0.8), name


def test_the_magnitude_window_is_computed_once_per_content(logic, monkeypatch):
    """The displacement-magnitude window (a percentile over the whole volume) is computed when the volume's voxels
    change, not on each of 25 slider steps; new voxels (a new atlas in the same node) give a new window."""
    import slicer

    from DiffDefAtlasLib.slicer_support import overlays

    calls = []
    original = overlays.magnitude_window_level

    def counted(magnitude, *args, **kwargs):
        calls.append(1)
        return original(magnitude, *args, **kwargs)

    monkeypatch.setattr(overlays, "magnitude_window_level", counted)
    nodes = _show(logic, shift_mm=2.0)
    assert len(calls) == 1
    p = logic.getParameterNode()
    for step in range(25):
        p.foregroundOpacity = 0.02 * step
        logic.applyDisplaySettings(p)
    assert len(calls) == 1
    display = nodes.magnitude.GetDisplayNode()
    assert display.GetWindow() == pytest.approx(original(slicer.util.arrayFromVolume(nodes.magnitude)).window)
    again = _show(logic, shift_mm=6.0)
    assert again.magnitude.GetID() == nodes.magnitude.GetID() and len(calls) == 2
    assert display.GetWindow() == pytest.approx(6.0)  # the 99th percentile of |u| in {3, 6} mm


# --- B: growth red


def _rgba_at(display, volume_node, ijk) -> np.ndarray:
    """The RGBA Slicer's volume display pipeline gives voxel ``ijk`` (window/level, then the colour table)."""
    from vtk.util.numpy_support import vtk_to_numpy

    connection = display.GetOutputImageDataConnection()
    assert connection is not None
    producer = connection.GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(connection.GetIndex())
    dims = image.GetDimensions()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0], -1)
    i, j, k = ijk
    return pixels[k, j, i].astype(float)


def test_the_jacobian_shows_larger_in_the_atlas_in_red(logic):
    """det J = 0.6 (the template's anatomy is larger in the atlas: 1 / det J = 1.67) is drawn red, det J = 1.4
    blue and det J = 1 neutral, by Slicer's own display pipeline; the voxels stay det J. The colour node is the
    module's singleton, made again when it has gone (after a scene close); the legend says the rule in words."""
    import slicer

    from DiffDefAtlasLib.slicer_support import overlays

    nodes = _show(logic)
    display = nodes.jacobian.GetDisplayNode()
    assert display.GetColorNodeID() == overlays.JACOBIAN_COLOR_NODE_ID
    assert slicer.mrmlScene.GetNodeByID(overlays.JACOBIAN_COLOR_NODE_ID) is not None
    values = slicer.util.arrayFromVolume(nodes.jacobian)  # [k, j, i]
    j, k = SHAPE[1] // 2, SHAPE[2] // 2
    for name, det_j in BANDS.items():
        i = (_band(name).start + _band(name).stop) // 2
        assert values[k, j, i] == pytest.approx(det_j)
        rgba = _rgba_at(display, nodes.jacobian, (i, j, k))
        if name == "larger":
            assert rgba[0] > rgba[2] + 60, (name, rgba)
        elif name == "smaller":
            assert rgba[2] > rgba[0] + 60, (name, rgba)
        else:
            assert np.ptp(rgba[:3]) < 12, (name, rgba)
    legend = slicer.modules.colors.logic().GetColorLegendDisplayNode(nodes.jacobian)
    title = legend.GetTitleText()
    assert "det J" in title and "red" in title and "larger in the atlas" in title, title

    colour_node = slicer.mrmlScene.GetNodeByID(overlays.JACOBIAN_COLOR_NODE_ID)
    slicer.mrmlScene.RemoveNode(colour_node)
    again = _show(logic)
    assert slicer.mrmlScene.GetNodeByID(overlays.JACOBIAN_COLOR_NODE_ID) is not None
    assert again.jacobian.GetDisplayNode().GetColorNode() is not None
    count = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")
    _show(logic)
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLColorTableNode") == count  # created once


# --- C: the direction Slicer draws the deformation in


def _glyph_arrows(display, slice_node) -> np.ndarray:
    """(base, tip) of each arrow Slicer's transforms displayable manager draws on ``slice_node`` (RAS mm).

    ``vtkSlicerTransformLogic.GetVisualization2d`` gives, per arrow glyph, a 2-point shaft cell (base, tip) and a
    3-point head cell whose middle point is the tip."""
    import slicer
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    polydata = vtk.vtkPolyData()
    assert slicer.vtkSlicerTransformLogic.GetVisualization2d(polydata, display, slice_node)
    points = vtk_to_numpy(polydata.GetPoints().GetData()).astype(float)
    cells = [[polydata.GetCell(c).GetPointId(n) for n in range(polydata.GetCell(c).GetNumberOfPoints())]
             for c in range(polydata.GetNumberOfCells())]
    tips = {tuple(np.round(points[cell[1]], 3)) for cell in cells if len(cell) == 3}
    arrows = []
    for cell in (c for c in cells if len(c) == 2):
        a, b = points[cell[0]], points[cell[1]]
        base, tip = (a, b) if tuple(np.round(b, 3)) in tips else (b, a)
        assert tuple(np.round(tip, 3)) in tips, "a shaft with no arrow head"
        arrows.append((base, tip))
    return np.asarray(arrows)


def test_glyphs_draw_the_motion_of_the_template_anatomy_into_the_atlas(logic, slicer_env):
    """A constant field u = (+5, 0, 0) mm stored as the module stores it (``gridTransformNode``: FromParent
    x -> x + u, the map from atlas to template points) is drawn by Slicer as arrows of (-5, 0, 0) mm: Slicer draws
    a transform through ``GetTransformToWorld`` (``vtkSlicerTransformLogic::GetTransformedPointSamples``), the
    inverse, i.e. where the template's anatomy at the arrow's base lies in the atlas. Stored the other way (u as
    ToParent) the arrows would point along +x and this test fails on the direction."""
    import slicer

    shape = (21, 21, 11)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -np.array([20.0, 20.0, 10.0])
    u = np.zeros((3, *shape), np.float32)
    u[0] = 5.0
    node = logic.gridTransformNode(u, Grid(shape, affine), "constant shift")
    display = node.GetDisplayNode()
    from DiffDefAtlasModuleLib.OverlayDisplay import OverlayDisplay

    OverlayDisplay.showDeformation(node, "glyph", 1.0, 10.0)  # as applyDisplaySettings does for *Glyphs*
    assert display.GetVisualizationMode() == slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GLYPH
    slice_node = slicer_env.slice_logics[0].GetSliceNode()
    slice_node.SetOrientation("Axial")
    slice_node.SetFieldOfView(30.0, 30.0, 1.0)
    slice_node.SetXYZOrigin(0.0, 0.0, 0.0)
    slice_node.UpdateMatrices()
    arrows = _glyph_arrows(display, slice_node)
    assert len(arrows) >= 4
    vectors = arrows[:, 1] - arrows[:, 0]
    np.testing.assert_allclose(vectors, np.broadcast_to([-5.0, 0.0, 0.0], vectors.shape), atol=1e-3)
    # the same as MRML's own inverse: the transform to the parent (world) moves each point by -u
    np.testing.assert_allclose(np.asarray(node.GetTransformToParent().TransformPoint([3.0, -2.0, 1.0])),
                               [-2.0, -2.0, 1.0], atol=1e-3)


def test_the_module_says_what_the_drawing_and_the_colours_show():
    """The *Deformation* tooltip says the drawing is the motion of the template's anatomy into the atlas; the
    *Jacobian range* tooltip says red is larger in the atlas (det J < 1); the README's Slicer section and
    docs/slicer.md say both."""
    root = ET.parse(ROOT / "DiffDefAtlas" / "Resources" / "UI" / "DiffDefAtlas.ui").getroot()

    def tooltip(name: str) -> str:
        widget = root.find(f".//widget[@name='{name}']")
        assert widget is not None, name
        return " ".join(s.text or "" for s in widget.findall("./property[@name='toolTip']/string"))

    assert "template's anatomy" in tooltip("deformationModeComboBox") and "into the atlas" in tooltip("deformationModeComboBox")
    jacobian = tooltip("jacobianHalfWidthSlider")
    assert re.search(r"red \(det J &lt; 1\)|red \(det J < 1\)", jacobian) and "larger in the atlas" in jacobian, jacobian
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Walkthrough"):readme.index("### Scripting from the Python console")]
    for text in (section, (ROOT / "docs" / "slicer.md").read_text(encoding="utf-8")):
        text = " ".join(text.split())  # the words may wrap
        assert "red (det J < 1): larger in the atlas than in the template" in text
        assert "template's anatomy" in text and "into the atlas" in text
