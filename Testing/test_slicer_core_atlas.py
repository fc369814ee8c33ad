"""The module's Logic on real Slicer MRML (slicer-core): generating an atlas, its nodes, the deformation as MRML
evaluates it, segments, overlays, export and a saved scene.

References, independent of the module: nibabel for the voxels and geometry of the atlas (the library's own output
file read back), ``GetTransformFromParent().TransformPoint`` for the deformation (MRML's own evaluation, against
x + u(x) from the library's field), numpy counts of the label map for the segments, and Slicer's own storage nodes
for the saved scene and the exported displacement.
"""

from __future__ import annotations

import numpy as np
import pytest

from fieldfactory import smooth_random_field
from DiffDefAtlasLib.spatial import Grid

pytestmark = pytest.mark.slicer_core

CONDITIONS = {"age": 72, "sex": "F"}


@pytest.fixture(scope="module")
def atlas_result():
    """One library atlas, reused: ``showAtlasResult`` turns it into nodes without generating again."""
    from DiffDefAtlasLib import api

    return api.generate_atlas("brain3d", CONDITIONS, device="cpu")


@pytest.fixture
def logic(scene):
    import DiffDefAtlas

    return DiffDefAtlas.DiffDefAtlasLogic()


@pytest.fixture
def shown(logic, atlas_result):
    return logic.showAtlasResult(atlas_result, model="brain3d", conditions=CONDITIONS)


def _ijk_to_ras(node) -> np.ndarray:
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def _points_inside(grid: Grid, count: int, margin: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(margin, s - margin, count) for s in grid.shape], axis=1)


def test_generate_atlas_makes_nodes_whose_voxels_and_geometry_match_the_files(logic, tmp_path):
    """generateAtlas on a real scene: each volume's voxels (``arrayFromVolume``) and IJK-to-RAS
    (``GetIJKToRASMatrix``) equal what nibabel reads from the library's own files of the same atlas; generating
    again updates the same nodes."""
    import nibabel as nib
    import slicer

    from DiffDefAtlasLib.imageio import write_image
    from DiffDefAtlasLib.slicer_support import layers

    nodes = logic.generateAtlas(model="brain3d", conditions=CONDITIONS, device="cpu")
    result = nodes.result
    names = layers.atlas_node_names("brain3d", CONDITIONS)
    assert nodes.atlas.GetName() == names["atlas"] and nodes.labels.GetClassName() == "vtkMRMLLabelMapVolumeNode"
    for node, volume in ((nodes.atlas, result.atlas), (nodes.labels, result.labels), (nodes.jacobian, result.jacobian)):
        path = write_image(volume, tmp_path / f"{node.GetID()}.nii.gz")
        image = nib.load(str(path))
        np.testing.assert_allclose(slicer.util.arrayFromVolume(node), np.asarray(image.dataobj).transpose(2, 1, 0), atol=1e-5)
        np.testing.assert_allclose(_ijk_to_ras(node), image.affine, atol=1e-4)
        assert slicer.mrmlScene.GetNodeByID(node.GetID()) is node
    count = slicer.mrmlScene.GetNumberOfNodes()
    again = logic.generateAtlas(model="brain3d", conditions={"age": 60, "sex": "F"}, device="cpu")
    assert again.atlas.GetID() == nodes.atlas.GetID() and slicer.mrmlScene.GetNumberOfNodes() == count
    assert again.atlas.GetName() == layers.atlas_node_names("brain3d", {"age": 60, "sex": "F"})["atlas"]
    assert not np.allclose(slicer.util.arrayFromVolume(again.atlas).transpose(2, 1, 0), np.asarray(result.atlas.array))


def test_mrml_evaluates_the_atlas_transform_as_x_plus_u(shown, atlas_result):
    """MRML's own evaluation of the grid transform at 25 voxel centres equals x + u(x) of the library's field."""
    grid, u = atlas_result.grid, atlas_result.displacement
    transform = shown.transform.GetTransformFromParent()
    for i, j, k in _points_inside(grid, 25):
        x = (grid.affine @ [i, j, k, 1.0])[:3]
        np.testing.assert_allclose(transform.TransformPoint(x), x + u[:, i, j, k], atol=1e-3)


def test_an_oblique_grid_transform_is_evaluated_as_x_plus_u_and_read_back(logic):
    """A field on an oblique, anisotropic grid (30 degrees about two axes): MRML evaluates x + u(x) at voxel
    centres, and ``displacementFromTransformNode`` gives back the same field and grid."""
    a, b = np.deg2rad(30.0), np.deg2rad(20.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([1.5, 2.0, 2.5])
    affine[:3, 3] = [-20.0, 15.0, 8.0]
    grid = Grid((18, 16, 14), affine)
    u = smooth_random_field(grid.shape, amplitude_mm=3.0, sigma_vox=3.0, seed=4)
    node = logic.gridTransformNode(u, grid, "oblique")
    transform = node.GetTransformFromParent()
    for i, j, k in _points_inside(grid, 25, margin=2):
        x = (affine @ [i, j, k, 1.0])[:3]
        np.testing.assert_allclose(transform.TransformPoint(x), x + u[:, i, j, k], atol=1e-4)
    back, back_grid = logic.displacementFromTransformNode(node)
    np.testing.assert_allclose(back, u, atol=1e-5)
    np.testing.assert_allclose(back_grid.affine, affine, atol=1e-6)
    assert back_grid.shape == grid.shape


def test_segments_are_named_and_hold_the_label_voxels(shown, atlas_result):
    """One segment per tissue label, named as in the label map's colour table (CSF, grey matter...); its voxel count
    equals numpy's count in the label map. The folding segment holds exactly the voxels with det J <= 0."""
    import slicer

    from DiffDefAtlasLib.slicer_support import layers

    colour_table = shown.labels.GetDisplayNode().GetColorNode()

    labels = np.asarray(atlas_result.labels.array)
    segmentation = shown.segmentation.GetSegmentation()
    present = sorted(int(v) for v in np.unique(labels) if v != 0)
    assert segmentation.GetNumberOfSegments() == len(present)
    for value in present:
        segment_id = segmentation.GetSegmentIdBySegmentName(colour_table.GetColorName(value))
        assert segment_id, colour_table.GetColorName(value)
        voxels = slicer.util.arrayFromSegmentBinaryLabelmap(shown.segmentation, segment_id, shown.labels)
        assert int(np.count_nonzero(voxels)) == int(np.count_nonzero(labels == value))
    folding_id = shown.folding.GetSegmentation().GetSegmentIdBySegmentName(layers.FOLDING_SEGMENT_NAME)
    assert folding_id
    folded = int(np.count_nonzero(np.asarray(atlas_result.jacobian.array) <= 0))
    voxels = slicer.util.arrayFromSegmentBinaryLabelmap(shown.folding, folding_id, shown.jacobian) if folded else np.zeros(1)
    assert int(np.count_nonzero(voxels)) == folded


def test_the_exported_displacement_reads_back_as_the_same_transform(logic, shown, atlas_result, tmp_path):
    """exportAtlas writes every file; Slicer's own ``vtkMRMLTransformStorageNode`` reads the exported displacement
    into a transform that moves sample points exactly as the atlas transform does."""
    import slicer

    from DiffDefAtlasLib.results import EXPORT_SUFFIXES

    written = logic.exportAtlas(tmp_path)
    assert set(written) == set(EXPORT_SUFFIXES) and all(path.is_file() for path in written.values())
    storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    storage.SetFileName(str(written["displacement"]))
    loaded = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTransformNode", "read back")
    assert storage.ReadData(loaded)
    grid = atlas_result.grid
    original, read = shown.transform.GetTransformFromParent(), loaded.GetTransformFromParent()
    for i, j, k in _points_inside(grid, 15):
        x = (grid.affine @ [i, j, k, 1.0])[:3]
        np.testing.assert_allclose(read.TransformPoint(x), original.TransformPoint(x), atol=1e-3)


def _snapshot(scene) -> dict:
    """What each data node holds: voxels and geometry, transform samples, segment names."""
    import slicer

    nodes = {}
    for class_name in ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode"):
        for node in slicer.util.getNodesByClass(class_name):
            if node.GetClassName() == class_name:
                nodes[node.GetName()] = (slicer.util.arrayFromVolume(node).copy(), _ijk_to_ras(node))
    for node in slicer.util.getNodesByClass("vtkMRMLGridTransformNode"):
        nodes[node.GetName()] = slicer.util.arrayFromGridTransform(node).copy()
    for node in slicer.util.getNodesByClass("vtkMRMLSegmentationNode"):
        segmentation = node.GetSegmentation()
        nodes[node.GetName()] = sorted(segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments()))
    return nodes


def _assert_same(before: dict, after: dict) -> None:
    assert set(before) == set(after)
    for name, value in before.items():
        if isinstance(value, tuple):
            np.testing.assert_allclose(after[name][0], value[0], atol=1e-5, err_msg=name)
            np.testing.assert_allclose(after[name][1], value[1], atol=1e-4, err_msg=name)
        elif isinstance(value, np.ndarray):
            np.testing.assert_allclose(after[name], value, atol=1e-5, err_msg=name)
        else:
            assert after[name] == value, name


@pytest.mark.parametrize("form", ["mrml", "mrb"])
def test_a_saved_scene_loads_back_with_every_node_equal(shown, scene, tmp_path, form):
    """The atlas scene saved with Slicer's own storage nodes (volume archetype, transform, segmentation), as a
    ``.mrml`` with its files or as a ``.mrb`` bundle, cleared, and loaded back: every node holds what it held."""
    import slicer

    before = _snapshot(scene)
    assert len(before) >= 7
    if form == "mrml":
        for node in list(slicer.util.getNodesByClass("vtkMRMLStorableNode")):
            if node.GetClassName() in ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode", "vtkMRMLGridTransformNode", "vtkMRMLSegmentationNode"):
                node.AddDefaultStorageNode()
                storage = node.GetStorageNode()
                extension = storage.GetDefaultWriteFileExtension()
                storage.SetFileName(str(tmp_path / f"{node.GetID()}.{extension}"))
                assert storage.WriteData(node), node.GetName()
        scene.SetURL(str(tmp_path / "atlas.mrml"))
        assert scene.Commit()
        scene.Clear(0)
        assert not _snapshot(scene)
        scene.SetURL(str(tmp_path / "atlas.mrml"))
        assert scene.Connect()
    else:
        assert scene.WriteToMRB(str(tmp_path / "atlas.mrb"))
        scene.Clear(0)
        assert not _snapshot(scene)
        assert scene.ReadFromMRB(str(tmp_path / "atlas.mrb"))
    _assert_same(before, _snapshot(scene))
