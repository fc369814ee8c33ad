"""Registration and background jobs of the module's Logic on real Slicer MRML (slicer-core).

``registerVolume`` registers a real IXI T1 from the shared data when it is there, otherwise a synthetic head (the
atlas itself, rotated and shifted by a known motion). ``startRegistrationJob`` and ``startSweepJob`` run a real
child process (``python -m DiffDefAtlasLib.cli.main``), driven by processing events as Slicer's GUI does
(``slicer.app.processEvents`` fires the job's ``qt.QTimer``).

References: numpy NCC between the warped scan and the atlas; the tissue segmentation shipped with the IXI subject
for the propagated labels; MRML's own ``TransformPoint`` for the transform; node counts of the scene for "cancel
leaves the scene unchanged".
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.slicer_core

CONDITIONS = {"age": 72, "sex": "F"}


@pytest.fixture(scope="module")
def atlas_result():
    from DiffDefAtlasLib import api

    return api.generate_atlas("brain3d", CONDITIONS, device="cpu")


@pytest.fixture
def logic(scene):
    import DiffDefAtlas

    return DiffDefAtlas.DiffDefAtlasLogic()


@pytest.fixture
def atlas_nodes(logic, atlas_result):
    return logic.showAtlasResult(atlas_result, model="brain3d", conditions=CONDITIONS)


def _moved(volume, degrees: float = 8.0, shift=(4.0, -6.0, 5.0)):
    """``volume`` under a known rigid motion (resampled with SimpleITK onto its own grid)."""
    import SimpleITK as sitk

    from DiffDefAtlasLib.imageio import Volume

    image = sitk.GetImageFromArray(np.asarray(volume.array, np.float32).transpose(2, 1, 0))
    affine = np.asarray(volume.affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    lps = np.diag([-1.0, -1.0, 1.0])
    image.SetSpacing(spacing.tolist())
    image.SetOrigin((lps @ affine[:3, 3]).tolist())
    image.SetDirection((lps @ affine[:3, :3] / spacing).flatten().tolist())
    motion = sitk.Euler3DTransform()
    motion.SetCenter(image.TransformContinuousIndexToPhysicalPoint([s / 2 for s in image.GetSize()]))
    motion.SetRotation(np.deg2rad(degrees), 0.0, 0.0)
    motion.SetTranslation(shift)
    moved = sitk.Resample(image, image, motion, sitk.sitkLinear, 0.0)
    return Volume(sitk.GetArrayFromImage(moved).transpose(2, 1, 0).copy(), affine)


@pytest.fixture(scope="module")
def scan(atlas_result):
    """A skull-stripped scan: a real IXI T1 (native space, sagittal, 0.94 x 0.94 x 1.2 mm) when the shared data is
    there, else the atlas under a known rigid motion."""
    from DiffDefAtlasLib.imageio import read_image
    from DiffDefAtlasLib.resources import shared_data_dir

    data = shared_data_dir()
    if data is not None and (data / "ixi_3d" / "t1" / "IXI259_t1.nii.gz").is_file():
        return read_image(data / "ixi_3d" / "t1" / "IXI259_t1.nii.gz")
    return _moved(atlas_result.atlas)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    mask = (a > 0) | (b > 0)
    x, y = a[mask] - a[mask].mean(), b[mask] - b[mask].mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def _scan_node(scan_volume, name: str = "scan"):
    import slicer

    from DiffDefAtlasLib.slicer_support import arrays

    array, ijk_to_ras = arrays.volume_to_slicer_array(scan_volume)
    return slicer.util.addVolumeFromArray(array, ijk_to_ras, name)


def _ijk_to_ras(node) -> np.ndarray:
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def test_register_volume_puts_the_scan_in_atlas_space_and_the_labels_on_the_scan(logic, atlas_nodes, scan):
    """registerVolume: the warped scan lies on the atlas grid and matches the atlas better than the scan did
    (numpy NCC); MRML evaluates the transform as x + u(x) of the library's field; the atlas labels land on the scan's
    grid and cover the skull-stripped scan's own brain (Dice of labels > 0 against scan > 0)."""
    import slicer

    from DiffDefAtlasLib.slicer_support import layers

    volume = scan
    moving = _scan_node(volume)
    nodes = logic.registerVolume(moving, atlas_nodes.atlas, device="cpu")
    names = layers.registration_node_names("scan")
    assert nodes.warped.GetName() == names["warped"] and nodes.transform.GetName() == names["transform"]
    atlas = slicer.util.arrayFromVolume(atlas_nodes.atlas)
    warped = slicer.util.arrayFromVolume(nodes.warped)
    assert warped.shape == atlas.shape
    np.testing.assert_allclose(_ijk_to_ras(nodes.warped), _ijk_to_ras(atlas_nodes.atlas), atol=1e-5)
    assert _ncc(warped, atlas) > 0.6
    grid, u = nodes.result.grid, nodes.result.displacement
    transform = nodes.transform.GetTransformFromParent()
    rng = np.random.default_rng(1)
    for index in np.stack([rng.integers(4, s - 4, 10) for s in grid.shape], axis=1):
        x = (grid.affine @ [*index, 1.0])[:3]
        np.testing.assert_allclose(transform.TransformPoint(x), x + u[(slice(None), *index)], atol=1e-3)
    labels = slicer.util.arrayFromVolume(nodes.labels)
    assert labels.shape == slicer.util.arrayFromVolume(moving).shape
    np.testing.assert_allclose(_ijk_to_ras(nodes.labels), _ijk_to_ras(moving), atol=1e-5)
    assert nodes.segmentation.GetSegmentation().GetNumberOfSegments() >= 3
    ours, theirs = labels > 0, slicer.util.arrayFromVolume(moving) > 0
    dice = 2 * np.count_nonzero(ours & theirs) / (np.count_nonzero(ours) + np.count_nonzero(theirs))
    assert dice > 0.85, dice


def _run(job, seconds: float = 300.0) -> None:
    """Process events until the job has finished (what Slicer's event loop does while the GUI waits)."""
    import slicer

    deadline = time.monotonic() + seconds
    while not job.finished and time.monotonic() < deadline:
        slicer.app.processEvents()
        time.sleep(0.05)
    assert job.finished, "the background job did not finish in time"


def _node_ids(scene) -> set:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def test_a_registration_job_loads_its_result_only_when_it_succeeded(logic, atlas_nodes, scan, scene):
    """startRegistrationJob runs ``diffdef-atlas register`` in a child process; progress is reported, the nodes
    appear once it has exited successfully, and its temporary folder is gone."""
    volume = scan
    moving = _scan_node(volume)
    done, progress = [], []
    job = logic.startRegistrationJob(moving, atlas_nodes.atlas, refine=2, device="cpu",
                                     onProgress=lambda fraction, message: progress.append(fraction),
                                     onDone=lambda job, nodes, error: done.append((job.state.name, nodes, error)))
    work = job.arguments[job.arguments.index("--out") + 1] if "--out" in job.arguments else None
    _run(job)
    assert len(done) == 1 and done[0][0] == "SUCCEEDED", done
    nodes = done[0][1]
    assert nodes.warped.GetScene() is scene and nodes.transform.GetScene() is scene
    assert progress and max(progress) <= 1.0
    if work is not None:
        from pathlib import Path

        assert not Path(work).parent.exists()


def test_a_cancelled_registration_job_leaves_the_scene_unchanged(logic, atlas_nodes, scan, scene):
    """Cancel while the child process runs: onDone once with state CANCELLED and no nodes, the child is gone, and
    the scene holds exactly the nodes it held before."""
    volume = scan
    moving = _scan_node(volume)
    before = _node_ids(scene)
    done = []
    job = logic.startRegistrationJob(moving, atlas_nodes.atlas, refine=200, device="cpu",
                                     onDone=lambda job, nodes, error: done.append((job.state.name, nodes)))
    for _ in range(10):
        import slicer

        slicer.app.processEvents()
        time.sleep(0.1)
    assert not job.finished
    job.cancel()
    _run(job, 30)
    assert done == [("CANCELLED", None)]
    assert _node_ids(scene) == before


def test_a_sweep_job_loads_one_atlas_per_value_as_a_sequence(logic, scene):
    """startSweepJob over age 60, 65, 70: a sequence of three atlases whose voxels equal the library's atlases for
    those ages, a browser whose proxy node is shown in the slice views, and the Sequences toolbar asked to show it."""
    import slicer

    from DiffDefAtlasLib import api

    done = []
    job = logic.startSweepJob("brain3d", ("age", 60.0, 70.0, 5.0), {"sex": "F"}, device="cpu",
                              onDone=lambda job, sequence, error: done.append((job.state.name, sequence, error)))
    _run(job)
    assert done and done[0][0] == "SUCCEEDED", done
    sequence = done[0][1]
    assert sequence.GetNumberOfDataNodes() == 3
    for index, age in enumerate((60, 65, 70)):
        expected = np.asarray(api.generate_atlas("brain3d", {"age": age, "sex": "F"}, device="cpu").atlas.array)
        item = sequence.GetNthDataNode(index)
        np.testing.assert_allclose(slicer.util.arrayFromVolume(item).transpose(2, 1, 0), expected, atol=1e-4)
    browsers = slicer.util.getNodesByClass("vtkMRMLSequenceBrowserNode")
    assert len(browsers) == 1
    proxy = browsers[0].GetProxyNode(sequence)
    composite = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceCompositeNodeRed")
    assert composite.GetBackgroundVolumeID() == proxy.GetID()
    assert slicer.modules.sequences.shown[-1] is browsers[0]
