"""Tests of DiffDefAtlasLib.slicer_support: what the Slicer module shows, without Slicer.

Slicer volumes are ``vtkImageData`` with an IJK-to-RAS matrix, read as ``[k, j, i]`` numpy arrays; its grid transforms
are ``vtkImageData`` of RAS vectors plus a direction matrix. The references are VTK itself (``vtkImageData`` indexing
and geometry, ``vtkMatrix4x4``, ``vtkGridTransform``), SimpleITK and nibabel reading the same NIfTI file, numpy, and
closed-form values. The last section runs the library calls of the module's Logic (``generateAtlas``, overlays,
export) on the bundled ``brain3d`` model, the way the Slicer self-test does inside Slicer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib import results
from DiffDefAtlasLib.imageio import Volume
from DiffDefAtlasLib.slicer_support import arrays, dependencies, devices, exports, gui_state, layers, overlays, sliders, vtk_grid
from DiffDefAtlasLib.spatial import Grid

vtk_data = pytest.importorskip("vtkmodules.vtkCommonDataModel")
vtk_math = pytest.importorskip("vtkmodules.vtkCommonMath")
vtk_hybrid = pytest.importorskip("vtkmodules.vtkFiltersHybrid")
from vtkmodules.util import numpy_support  # noqa: E402


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _oblique_affine(spacing=(1.2, 0.9, 2.5), origin=(-31.0, 12.5, 40.0), angles=(0.3, -0.2, 0.5), flip=True) -> np.ndarray:
    affine = np.eye(4)
    direction = _rotation(*angles)
    if flip:
        direction[:, 0] *= -1  # an LAS-like axis, as in many scanner files
    affine[:3, :3] = direction * np.asarray(spacing)[None, :]
    affine[:3, 3] = origin
    return affine


def _vtk_image(array_kji: np.ndarray, ijk_to_ras: np.ndarray):
    """A vtkImageData as Slicer holds a volume: scalars in VTK point order, geometry from the IJK-to-RAS matrix."""
    geometry = arrays.split_ijk_to_ras(ijk_to_ras)
    image = vtk_data.vtkImageData()
    image.SetDimensions(array_kji.shape[2], array_kji.shape[1], array_kji.shape[0])
    image.SetSpacing(*geometry.spacing)
    image.SetOrigin(*geometry.origin)
    image.SetDirectionMatrix([float(v) for v in geometry.directions.ravel()])
    components = 1 if array_kji.ndim == 3 else array_kji.shape[3]
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(array_kji).reshape(-1, components), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


# ------------------------------------------------------------------------------------------------------------------
# volumes <-> Slicer arrays


def test_slicer_array_indexes_like_vtk_image_data():
    """Reference: vtkImageData. The [k, j, i] array loaded into VTK point order holds volume.array[i, j, k] at (i, j, k),
    and VTK's own index-to-physical mapping (origin, spacing, direction) equals the volume affine."""
    rng = np.random.default_rng(0)
    volume = Volume(rng.normal(size=(7, 5, 4)).astype(np.float32), _oblique_affine())
    array, ijk_to_ras = arrays.volume_to_slicer_array(volume)
    assert array.shape == (4, 5, 7) and array.flags.c_contiguous
    image = _vtk_image(array, ijk_to_ras)
    for i, j, k in [(0, 0, 0), (6, 4, 3), (2, 3, 1), (5, 0, 2)]:
        assert image.GetScalarComponentAsDouble(i, j, k, 0) == pytest.approx(float(volume.array[i, j, k]))
        point = [0.0, 0.0, 0.0]
        image.TransformIndexToPhysicalPoint(i, j, k, point)
        np.testing.assert_allclose(point, (volume.affine @ [i, j, k, 1.0])[:3], atol=1e-9)


def test_ijk_to_ras_matrix_maps_voxels_like_vtk_matrix4x4():
    """Reference: vtkMatrix4x4.MultiplyPoint (what Slicer's SetIJKToRASMatrix stores) and nibabel's apply_affine."""
    volume = Volume(np.zeros((3, 4, 5), np.float32), _oblique_affine())
    _, ijk_to_ras = arrays.volume_to_slicer_array(volume)
    matrix = vtk_math.vtkMatrix4x4()
    matrix.DeepCopy([float(v) for v in ijk_to_ras.ravel()])
    for ijk in ([0, 0, 0], [2, 3, 4], [1.5, 0.5, 2.0]):
        expected = nib.affines.apply_affine(volume.affine, ijk)
        np.testing.assert_allclose(matrix.MultiplyPoint([*ijk, 1.0])[:3], expected, atol=1e-9)


def test_slicer_array_equals_simpleitk_array_of_the_same_file(tmp_path):
    """Reference: SimpleITK reading a NIfTI written by nibabel. SimpleITK arrays are [k, j, i] like Slicer's, and its
    LPS geometry converted to RAS is Slicer's IJK-to-RAS matrix."""
    rng = np.random.default_rng(1)
    data = rng.integers(0, 1000, size=(6, 8, 5)).astype(np.int16)
    affine = _oblique_affine()
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))

    image = nib.load(str(path))
    volume = Volume(np.asarray(image.dataobj), image.affine)
    array, ijk_to_ras = arrays.volume_to_slicer_array(volume)

    reference = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(array, sitk.GetArrayFromImage(reference))
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    expected = np.eye(4)
    expected[:3, :3] = lps_to_ras @ direction @ np.diag(reference.GetSpacing())
    expected[:3, 3] = lps_to_ras @ np.array(reference.GetOrigin())
    np.testing.assert_allclose(ijk_to_ras, expected, atol=1e-5)


def test_volume_round_trip_is_exact_and_copies():
    """Reference: the original array and affine: to-Slicer and back gives them exactly, as an independent copy."""
    volume = Volume(np.random.default_rng(2).normal(size=(4, 5, 6)).astype(np.float32), _oblique_affine())
    kji, matrix = arrays.volume_to_slicer_array(volume)
    back = arrays.volume_from_slicer_array(kji, matrix)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine)
    kji[0, 0, 0] = 99.0  # changing the Slicer-side array afterwards leaves the result alone
    assert back.array[0, 0, 0] != 99.0


def test_slicer_array_types_and_errors():
    """Slicer rejects 64-bit integer voxels and booleans display badly: they become int32 / uint8. 2D is refused."""
    kji, _ = arrays.volume_to_slicer_array(Volume(np.ones((2, 3, 4), np.int64), np.eye(4)))
    assert kji.dtype == np.int32
    kji, _ = arrays.volume_to_slicer_array(Volume(np.ones((2, 3, 4), bool), np.eye(4)))
    assert kji.dtype == np.uint8
    with pytest.raises(DiffDefInputError):
        arrays.volume_to_slicer_array(Volume(np.ones((2, 3), np.float32), np.eye(3)))
    with pytest.raises(DiffDefInputError):
        arrays.volume_from_slicer_array(np.zeros((2, 3, 4)), np.eye(3))
    with pytest.raises(DiffDefInputError):
        arrays.volume_from_slicer_array(np.zeros((2, 3, 4, 3)), np.eye(4))  # vector volumes are not library Volumes


def test_split_ijk_to_ras_recomposes_and_rejects_shear():
    """Reference: the input matrix (origin, spacing and directions must recompose it) and VTK's direction convention."""
    affine = _oblique_affine()
    geometry = arrays.split_ijk_to_ras(affine)
    np.testing.assert_allclose(geometry.ijk_to_ras(), affine, atol=1e-12)
    np.testing.assert_allclose(geometry.spacing, (1.2, 0.9, 2.5))
    np.testing.assert_allclose(geometry.directions.T @ geometry.directions, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(geometry.direction_matrix4()[:3, :3], geometry.directions)
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(DiffDefInputError, match="shear"):
        arrays.split_ijk_to_ras(sheared)


# ------------------------------------------------------------------------------------------------------------------
# grid transforms


def _affine_field(grid: Grid, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """u(x) = A x + b sampled on the grid points, shape (3, I, J, K)."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape], indexing="ij"), axis=-1).astype(float)
    world = grid.voxel_to_world_points(ijk)
    return np.moveaxis(world @ a.T + b, -1, 0).astype(np.float32)


_A = np.array([[0.02, -0.01, 0.03], [0.01, 0.04, 0.0], [-0.02, 0.0, 0.01]])
_B = np.array([1.5, -2.0, 0.7])


def test_grid_image_moves_points_like_vtk_grid_transform():
    """Reference: vtkGridTransform (what vtkOrientedGridTransform reduces to for axis-aligned grids). The image built by
    ``vtk_grid.displacement_grid_image`` maps x to x + u(x), on and between grid points, for an affine field
    u(x) = A x + b (trilinear interpolation is exact for it)."""
    affine = np.diag([2.0, 3.0, 2.5, 1.0])
    affine[:3, 3] = (-8.0, 5.0, -6.0)
    grid = Grid((9, 7, 6), affine)
    u = _affine_field(grid, _A, _B)
    image, direction = vtk_grid.displacement_grid_image(u, grid)
    np.testing.assert_allclose(vtk_grid.matrix_from_vtk(direction), np.eye(4))
    assert image.GetDimensions() == (9, 7, 6) and image.GetNumberOfScalarComponents() == 3
    transform = vtk_hybrid.vtkGridTransform()
    transform.SetDisplacementGridData(image)
    transform.SetInterpolationModeToLinear()
    for index in [(0, 0, 0), (8, 6, 5), (4, 3, 2)]:
        x = grid.voxel_to_world_points(np.array(index, dtype=float))
        np.testing.assert_allclose(transform.TransformPoint(*x), x + u[(slice(None), *index)], atol=1e-4)
    x = grid.voxel_to_world_points(np.array([3.5, 2.25, 1.75]))
    np.testing.assert_allclose(transform.TransformPoint(*x), x + _A @ x + _B, atol=1e-4)


def test_grid_image_of_an_oblique_grid_moves_points_like_an_oriented_grid_transform():
    """Reference: vtkGridTransform on the image, queried in the grid's own axes. Slicer's vtkOrientedGridTransform finds
    the grid index of x through the direction matrix, y = origin + D^T (x - origin), and adds the RAS vector stored there;
    so for the affine field, x + u(x) must come back, with u in RAS (not rotated)."""
    grid = Grid((8, 9, 7), _oblique_affine(spacing=(2.0, 1.5, 2.5), origin=(-10.0, 4.0, 12.0)))
    u = _affine_field(grid, _A, _B)
    image, direction = vtk_grid.displacement_grid_image(u, grid)
    d = vtk_grid.matrix_from_vtk(direction)[:3, :3]
    origin = np.array(image.GetOrigin())
    np.testing.assert_allclose(d.T @ d, np.eye(3), atol=1e-12)
    for ijk in ([0, 0, 0], [7, 8, 6], [3, 1, 5]):  # origin + D (spacing * ijk) is the grid's affine
        np.testing.assert_allclose(origin + d @ (np.array(image.GetSpacing()) * ijk), (grid.affine @ [*ijk, 1.0])[:3], atol=1e-9)
    transform = vtk_hybrid.vtkGridTransform()
    transform.SetDisplacementGridData(image)
    transform.SetInterpolationModeToLinear()
    for ijk in ([0.0, 0.0, 0.0], [2.5, 3.25, 1.5], [6.0, 7.5, 5.0]):
        x = grid.voxel_to_world_points(np.array(ijk))
        y = origin + d.T @ (x - origin)
        moved = x + (np.array(transform.TransformPoint(*y)) - y)
        np.testing.assert_allclose(moved, x + _A @ x + _B, atol=1e-4)


def test_grid_image_round_trip_and_matrices():
    """Reference: the original field and grid; vtkMatrix4x4.MultiplyPoint for the matrix helpers."""
    grid = Grid((5, 6, 4), _oblique_affine(spacing=(1.0, 2.0, 3.0)))
    u = np.random.default_rng(7).normal(size=(3, 5, 6, 4)).astype(np.float32)
    image, direction = vtk_grid.displacement_grid_image(u, grid)
    back, back_grid = vtk_grid.displacement_from_grid_image(image, direction)
    np.testing.assert_allclose(back, u, atol=1e-6)
    np.testing.assert_allclose(back_grid.affine, grid.affine, atol=1e-9)
    assert back_grid.shape == grid.shape
    _, identity_grid = vtk_grid.displacement_from_grid_image(image)  # no direction: axis-aligned
    np.testing.assert_allclose(identity_grid.affine[:3, :3], np.diag(image.GetSpacing()))
    matrix = vtk_grid.matrix_to_vtk(grid.affine)
    np.testing.assert_allclose(matrix.MultiplyPoint([1.0, 2.0, 3.0, 1.0]), grid.affine @ [1.0, 2.0, 3.0, 1.0])
    np.testing.assert_array_equal(vtk_grid.matrix_from_vtk(matrix), grid.affine)
    with pytest.raises(DiffDefInputError):
        vtk_grid.matrix_to_vtk(np.eye(3))
    empty = vtk_data.vtkImageData()
    empty.SetDimensions(2, 2, 2)
    with pytest.raises(DiffDefInputError):
        vtk_grid.displacement_from_grid_image(empty)
    with pytest.raises(DiffDefInputError):
        vtk_grid.displacement_grid_image(np.zeros((2, 4, 4), np.float32), Grid((4, 4), np.eye(3)))  # 2D


def test_displacement_magnitude_matches_numpy_norm():
    """Reference: numpy.linalg.norm over the vector axis."""
    u = np.random.default_rng(3).normal(size=(3, 4, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(arrays.displacement_magnitude(u), np.linalg.norm(u, axis=0), rtol=1e-6)


# ------------------------------------------------------------------------------------------------------------------
# display choices


def test_jacobian_window_is_centred_on_one_and_robust():
    """Reference: numpy percentile of |det J - 1| and the requested limits."""
    rng = np.random.default_rng(4)
    jacobian = 1.0 + 0.2 * rng.standard_normal(10000)
    jacobian[:5] = 50.0  # a few outliers must not stretch the colour scale
    window = overlays.jacobian_window_level(jacobian)
    assert window.level == 1.0
    assert window.window / 2 == pytest.approx(np.percentile(np.abs(jacobian - 1.0), 99.0))
    assert window.minimum == pytest.approx(2.0 - window.maximum)
    assert overlays.jacobian_window_level(np.ones(10)).window == pytest.approx(0.1)  # lower limit 0.05 each side
    assert overlays.jacobian_window_level(np.full(10, 9.0)).window == pytest.approx(2.0)  # upper limit 1.0
    assert overlays.jacobian_window_level(half_width=0.3) == overlays.WindowLevel(0.6, 1.0)
    with pytest.raises(ValueError):
        overlays.jacobian_window_level()


def test_magnitude_window_starts_at_zero():
    """Reference: numpy percentile; at least 1 mm so a near-identity field is not all bright."""
    window = overlays.magnitude_window_level(np.linspace(0, 20, 1001))
    assert window.minimum == pytest.approx(0.0) and window.maximum == pytest.approx(np.percentile(np.linspace(0, 20, 1001), 99))
    assert overlays.magnitude_window_level(np.zeros(10)).maximum == pytest.approx(1.0)


def test_label_colors_use_the_template_table():
    """Reference: the template's LABEL_NAMES / LABEL_COLORS (0..255), scaled to 0..1; background is skipped."""
    from DiffDefAtlasLib.template import LABEL_COLORS, LABEL_NAMES

    rows = overlays.label_colors(LABEL_NAMES, LABEL_COLORS)
    assert [r[0] for r in rows] == sorted(v for v in LABEL_NAMES if v != 0)
    for value, name, rgb in rows:
        np.testing.assert_allclose(rgb, np.array(LABEL_COLORS[value]) / 255.0, atol=1e-3)
        assert "_" not in name
    assert dict((v, n) for v, n, _ in rows)[1] == "CSF"
    unknown = overlays.label_colors({0: "bg", 7: "lesion", 9: "other"})
    assert unknown[0][2] != unknown[1][2]


def test_folding_from_jacobian_counts_nonpositive_voxels():
    """Reference: the library's folding rule det J <= 0 (DiffDefAtlasLib.spatial.folding_mask)."""
    import torch

    from DiffDefAtlasLib.spatial import folding_mask

    det = np.random.default_rng(5).normal(1.0, 0.8, size=(6, 7, 8)).astype(np.float32)
    expected = folding_mask(torch.from_numpy(det)).numpy().astype(np.uint8)
    np.testing.assert_array_equal(overlays.folding_from_jacobian(det), expected)


# ------------------------------------------------------------------------------------------------------------------
# condition controls from a model card


def _card(**overrides):
    conditions = [
        SimpleNamespace(name="age", kind="continuous", minimum=45.0, maximum=85.0, units="years", choices=None, default=65.0),
        SimpleNamespace(name="sex", kind="categorical", minimum=None, maximum=None, units="", choices=["F", "M"], default="M"),
        SimpleNamespace(name="ventricle_volume_ml", kind="continuous", minimum=5.0, maximum=60.0, units="mL", choices=None,
                        default=None),
    ]
    return SimpleNamespace(name="brain3d", spatial_dims=3, description="test", conditions=overrides.get("conditions", conditions))


def test_condition_controls_show_the_trained_range():
    """Reference: the model card values. Sliders cover exactly the trained range unless extrapolation is allowed."""
    age, sex, ventricles = sliders.condition_controls(_card())
    assert (age.slider_minimum, age.slider_maximum) == (45.0, 85.0)
    assert age.label == "age (years)" and age.trained_range_text == "trained: 45–85 years"
    assert age.single_step == 0.5 and age.decimals == 1 and age.default == 65.0
    assert sex.is_categorical and sex.choices == ("F", "M") and sex.default == "M"
    assert sex.trained_range_text == "choices: F, M"
    assert ventricles.default == pytest.approx(32.5)  # no default: middle of the range
    assert ventricles.label == "ventricle volume ml (mL)"
    assert sliders.default_conditions([age, sex]) == {"age": 65.0, "sex": "M"}


def test_extrapolation_widens_sliders_but_not_below_zero():
    """Reference: margin x span beyond each end, clipped at 0 for non-negative quantities (ages, volumes)."""
    age, _, ventricles = sliders.condition_controls(_card(), allow_extrapolation=True)
    assert (age.slider_minimum, age.slider_maximum) == (35.0, 95.0)
    assert ventricles.slider_minimum == 0.0 and ventricles.slider_maximum == pytest.approx(73.75)
    assert (age.minimum, age.maximum) == (45.0, 85.0)  # the trained range itself does not move
    assert age.is_outside_trained_range(90) and not age.is_outside_trained_range(85)
    assert age.clamp(200) == 95.0
    blocked = sliders.condition_controls(_card())[0]
    assert blocked.clamp(90) == 85.0  # without extrapolation a stored 90 comes back as 85


def test_conditions_outside_trained_range_and_json_round_trip():
    """Reference: hand-picked values on both sides of the trained range; JSON text round trip."""
    controls = sliders.condition_controls(_card(), allow_extrapolation=True)
    conditions = {"age": 90.0, "sex": "F", "ventricle_volume_ml": 10.0}
    assert sliders.conditions_outside_trained_range(controls, conditions) == ["age"]
    assert sliders.conditions_outside_trained_range(controls, {"sex": "X"}) == ["sex"]
    text = sliders.conditions_to_json(conditions)
    assert sliders.conditions_from_json(text) == conditions
    assert sliders.conditions_from_json("") == {}
    with pytest.raises(DiffDefInputError):
        sliders.conditions_from_json("[1, 2]")


def test_bad_model_cards_are_input_errors():
    """A card without a usable range or choices is reported with the model and condition name."""
    bad_range = [SimpleNamespace(name="age", kind="continuous", minimum=50, maximum=50, units="", choices=None, default=None)]
    with pytest.raises(DiffDefInputError, match="age"):
        sliders.condition_controls(_card(conditions=bad_range))
    no_choices = [SimpleNamespace(name="sex", kind="categorical", minimum=None, maximum=None, units="", choices=[], default=None)]
    with pytest.raises(DiffDefInputError, match="sex"):
        sliders.condition_controls(_card(conditions=no_choices))
    # Only the kinds a ModelCard accepts: "choice" used to pass here while ModelCard refused it.
    other_kind = [SimpleNamespace(name="sex", kind="choice", minimum=None, maximum=None, units="", choices=["F", "M"], default=None)]
    with pytest.raises(DiffDefInputError, match="expected one of continuous, categorical"):
        sliders.condition_controls(_card(conditions=other_kind))


@pytest.mark.parametrize(("span", "step"), [(45.0, 0.5), (1.0, 0.01), (3000.0, 50.0), (0.3, 0.005), (7.0, 0.1)])
def test_nice_step_gives_about_a_hundred_round_steps(span, step):
    """Reference: 1-2-5 steps; span / step lies between 50 and 100 steps."""
    assert sliders.nice_step(span) == pytest.approx(step)
    assert 40 <= span / sliders.nice_step(span) <= 100


# ------------------------------------------------------------------------------------------------------------------
# devices and dependencies


def test_device_choice_maps_combo_box_text():
    assert [devices.device_choice(t) for t in ("Auto", "CPU", "CUDA (GPU)", "cuda", "")] == ["auto", "cpu", "cuda", "cuda", "auto"]
    with pytest.raises(DiffDefInputError):
        devices.device_choice("TPU")


def test_describe_device_names_the_device_or_explains():
    """Reference: torch.cuda.is_available(): CUDA without a GPU gives the library's explanation, not an exception."""
    import torch

    assert devices.describe_device("cpu").startswith("cpu (")
    text = devices.describe_device("cuda")
    if torch.cuda.is_available():
        assert "GiB" in text
    else:
        assert "CUDA" in text and "no CUDA GPU" in text


def test_describe_device_opens_no_cuda_context(monkeypatch):
    """Reference: torch's CUDA calls that need a context (mem_get_info, current_device's lazy context, allocations)
    fail here; the label is made from the device properties alone."""
    import torch
    from types import SimpleNamespace

    def needs_context(*args, **kwargs):
        raise AssertionError("the GUI label opened a CUDA context")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", needs_context)
    monkeypatch.setattr(torch.cuda, "current_device", needs_context)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: SimpleNamespace(name="Test GPU", total_memory=8 * 1024**3))
    assert devices.describe_device("cuda") == "cuda:0 (Test GPU, 8.0 GiB)"
    assert devices.describe_device("auto") == "cuda:0 (Test GPU, 8.0 GiB)"


def test_missing_requirements_compares_lower_bounds():
    """Reference: hand-made installed versions (a lookup table instead of importlib.metadata)."""
    installed = {"monai": "1.3.2", "nibabel": "5.2.1", "safetensors": "0.4.3", "tqdm": "4.66.1rc1"}
    assert dependencies.missing_requirements(version_of=installed.__getitem__) == ["monai>=1.4"]
    assert dependencies.missing_requirements(["torch"], version_of=installed.__getitem__) == ["torch"]
    assert dependencies.requirement_name("safetensors>=0.4") == "safetensors"
    assert dependencies.requirement_name("monai[nibabel] >= 1.4") == "monai"
    assert dependencies.missing_requirements() == []  # this environment has everything the extension installs


def test_slicer_support_imports_without_torch():
    """Reference: a fresh interpreter's sys.modules. The Slicer module imports these at file scope, before the user
    has installed torch, so they must not pull in torch, MONAI, nibabel, SimpleITK (or VTK, loaded only when used)."""
    modules = ("arrays", "overlays", "sliders", "devices", "exports", "jobs", "layers", "gui_state", "vtk_grid", "dependencies")
    code = (
        "import sys, " + ", ".join(f"DiffDefAtlasLib.slicer_support.{m}" for m in modules) + "; "
        "print(','.join(m for m in ('torch', 'monai', 'nibabel', 'SimpleITK', 'vtk', 'vtkmodules') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ------------------------------------------------------------------------------------------------------------------
# export


def test_export_stem_is_stable_and_file_system_safe():
    assert results.atlas_stem("brain3d", {"sex": "F", "age": 72.0}) == "brain3d_age-72_sex-F"
    assert results.atlas_stem("brain3d", {"age": 72.5, "group": "a/b c"}, seed=4) == "brain3d_age-72.5_group-a-b-c_seed-4"
    assert results.atlas_stem("m", {}) == "m"
    # The seed is named only where it changed the atlas (a draw at temperature above 0).
    assert results.seed_with_effect(4, {"temperature": 0.0}) is None and results.seed_with_effect(4, {}) is None
    assert results.seed_with_effect(4, {"temperature": 1.0}) == 4 and results.seed_with_effect("x", {"temperature": 1}) is None


def test_export_atlas_writes_readable_files(tmp_path):
    """Reference: nibabel reading the written files (voxels, affine, intent 1006 RAS displacement) and json."""
    rng = np.random.default_rng(6)
    affine = _oblique_affine(spacing=(1.0, 1.0, 1.0))
    atlas = Volume(rng.normal(size=(6, 7, 5)).astype(np.float32), affine)
    labels = Volume(rng.integers(0, 5, size=(6, 7, 5)).astype(np.uint8), affine)
    coarse = Grid((3, 4, 3), _oblique_affine(spacing=(2.0, 2.0, 2.0)))
    u = rng.normal(size=(3, 3, 4, 3)).astype(np.float32)
    jacobian = Volume(rng.normal(1.0, 0.7, size=(3, 4, 3)).astype(np.float32), coarse.affine)
    written = exports.export_atlas(tmp_path / "out", "brain3d_age-72_seed-0", atlas=atlas, labels=labels, displacement=u,
                                 grid=coarse, jacobian=jacobian, summary={"model": "brain3d", "conditions": {"age": 72}})
    assert set(written) == set(exports.EXPORT_SUFFIXES)
    assert written["atlas"].name == "brain3d_age-72_seed-0_atlas.nii.gz"

    image = nib.load(str(written["atlas"]))
    np.testing.assert_allclose(np.asarray(image.dataobj), atlas.array, rtol=1e-6)
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(nib.load(str(written["labels"])).dataobj), labels.array)
    field = nib.load(str(written["displacement"]))
    assert int(field.header["intent_code"]) == 1006
    np.testing.assert_allclose(np.moveaxis(np.asarray(field.dataobj)[:, :, :, 0, :], -1, 0), u, rtol=1e-6)
    np.testing.assert_allclose(field.affine, coarse.affine, atol=1e-4)
    folding = np.asarray(nib.load(str(written["folding"])).dataobj)
    np.testing.assert_array_equal(folding, (jacobian.array <= 0).astype(np.uint8))
    assert json.loads(written["summary"].read_text())["conditions"] == {"age": 72}


def test_export_never_replaces_files_without_asking(tmp_path):
    """Reference: the bytes of the user's files. A second export of the same atlas into the folder stops with the
    names of the files it would replace and changes nothing; with overwrite it replaces its own files only."""
    atlas = Volume(np.ones((4, 4, 4), np.float32), np.eye(4))
    first = exports.export_atlas(tmp_path, "m_seed-0", atlas=atlas, summary={"run": 1})
    (tmp_path / "notes.txt").write_text("user data")
    other = exports.export_atlas(tmp_path, "m_seed-1", atlas=atlas)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(exports.ExportConflict, match="m_seed-0_atlas.nii.gz") as raised:
        exports.export_atlas(tmp_path, "m_seed-0", atlas=Volume(np.zeros((4, 4, 4), np.float32), np.eye(4)), summary={"run": 2})
    assert sorted(raised.value.paths) == sorted(first.values())
    assert [p for p in exports.export_paths(tmp_path, "m_seed-0").values() if p.exists()] == [first["atlas"], first["summary"]]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    exports.export_atlas(tmp_path, "m_seed-0", atlas=Volume(np.zeros((4, 4, 4), np.float32), np.eye(4)), summary={"run": 2}, overwrite=True)
    assert json.loads(first["summary"].read_text()) == {"run": 2}
    assert (tmp_path / "notes.txt").read_text() == "user data" and other["atlas"].read_bytes() == before[other["atlas"].name]
    assert not [p.name for p in tmp_path.iterdir() if ".part" in p.name]


def test_export_atlas_refuses_a_file_as_folder(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    atlas = Volume(np.zeros((2, 2, 2), np.float32), np.eye(4))
    with pytest.raises(DiffDefInputError, match="folder"):
        exports.export_atlas(target, "x", atlas=atlas)
    with pytest.raises(ValueError, match="grid"):
        exports.export_atlas(tmp_path / "o", "x", atlas=atlas, displacement=np.zeros((3, 2, 2, 2)))


# ------------------------------------------------------------------------------------------------------------------
# slicer_support.layers: which nodes an atlas or a registration becomes


def _synthetic_atlas_result(fold: bool = True):
    """An AtlasResult on an oblique 3D grid with known arrays (and a folding map that is not det J <= 0, to see which
    one is used)."""
    from DiffDefAtlasLib.generate.atlas import AtlasResult

    rng = np.random.default_rng(8)
    grid = Grid((6, 5, 4), _oblique_affine(spacing=(1.0, 1.2, 1.5)))
    jacobian = rng.normal(1.0, 0.6, size=grid.shape).astype(np.float32)
    folding = np.zeros(grid.shape, np.uint8)
    folding[1, 2, 3] = 1
    return AtlasResult(
        atlas=Volume(rng.normal(size=grid.shape).astype(np.float32), grid.affine),
        labels=Volume(rng.integers(0, 5, size=grid.shape).astype(np.uint8), grid.affine),
        displacement=rng.normal(size=(3, *grid.shape)).astype(np.float32),
        grid=grid,
        jacobian=Volume(jacobian, grid.affine),
        folding=Volume(folding, grid.affine) if fold else None,
        velocity=np.zeros((3, 2, 2, 2), np.float32),
        velocity_grid=Grid((2, 2, 2), np.eye(4)),
        summary={"device": "cpu", "folding_ratio_nonpositive": 0.01, "detj_min": -0.2, "detj_max": 2.5},
    )


def test_atlas_layers_place_every_array_on_its_grid():
    """Reference: the result's own arrays read at [i, j, k] (the layer holds them at [k, j, i]), numpy's norm for the
    magnitude, and the library's folding map (used as is, not recomputed)."""
    result = _synthetic_atlas_result()
    plan = layers.atlas_layers(result, model="brain3d", conditions={"sex": "F", "age": 72.0}, seed=3)
    assert plan.names["atlas"] == "brain3d age-72 sex-F atlas"  # temperature 0: the seed has no effect
    assert plan.atlas.name == plan.names["atlas"] and plan.folding.name == plan.names["folding"]
    for layer, volume in ((plan.atlas, result.atlas), (plan.labels, result.labels), (plan.jacobian, result.jacobian),
                          (plan.folding, result.folding)):
        assert layer.shape == (4, 5, 6)
        for i, j, k in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
            assert layer.array[k, j, i] == volume.array[i, j, k]
        np.testing.assert_allclose(layer.ijk_to_ras, result.grid.affine)
    assert plan.labels.class_name == layers.LABEL_VOLUME and plan.labels.array.dtype == np.uint8
    assert plan.folding.class_name == layers.LABEL_VOLUME and int(plan.folding.array.sum()) == 1
    assert plan.atlas.class_name == plan.jacobian.class_name == plan.magnitude.class_name == layers.SCALAR_VOLUME
    np.testing.assert_allclose(plan.magnitude.array.transpose(2, 1, 0), np.linalg.norm(result.displacement, axis=0), rtol=1e-6)
    assert plan.jacobian_window.level == 1.0
    assert plan.jacobian_window == overlays.jacobian_window_level(result.jacobian.array)
    record = layers.read_generation_record(plan.record)
    assert record == {"model": "brain3d", "conditions": {"age": 72.0, "sex": "F"}, "seed": 3, "summary": result.summary}
    assert layers.export_stem_for_record(record) == "brain3d_age-72_sex-F"
    drawn = dict(record, summary={**result.summary, "temperature": 1.0})  # one random member: the seed matters
    assert layers.export_stem_for_record(drawn) == "brain3d_age-72_sex-F_seed-3"
    result.summary["temperature"] = 1.0
    assert layers.atlas_layers(result, model="brain3d", conditions={"age": 72.0}, seed=3).names["atlas"] == "brain3d age-72 seed-3 atlas"
    result.summary.pop("temperature")
    np.testing.assert_array_equal(plan.displacement, result.displacement)
    # without a folding map, folding is det J <= 0
    plain = layers.atlas_layers(_synthetic_atlas_result(fold=False), model="m", conditions={}, seed=0)
    np.testing.assert_array_equal(plain.folding.array.transpose(2, 1, 0), (result.jacobian.array <= 0).astype(np.uint8))


def test_layer_geometry_matching_and_label_checks():
    """Reference: hand-made shapes and matrices. A segmentation can take a volume as reference geometry only when
    shape and IJK-to-RAS are the same; a label map refuses values that are not integers 0..255."""
    layer = layers.volume_layer(Volume(np.zeros((4, 5, 6), np.float32), _oblique_affine()), "x")
    assert layer.matches((6, 5, 4), _oblique_affine())
    assert not layer.matches((4, 5, 6), _oblique_affine())
    shifted = _oblique_affine()
    shifted[0, 3] += 0.5
    assert not layer.matches((6, 5, 4), shifted)
    assert layers.volume_layer(Volume(np.full((2, 2, 2), 3.0), np.eye(4)), "l", layers.LABEL_VOLUME).array.dtype == np.uint8
    with pytest.raises(ValueError, match="label"):
        layers.volume_layer(Volume(np.full((2, 2, 2), 2.5), np.eye(4)), "l", layers.LABEL_VOLUME)
    with pytest.raises(ValueError, match="label"):
        layers.volume_layer(Volume(np.full((2, 2, 2), 300), np.eye(4)), "l", layers.LABEL_VOLUME)


def test_registration_layers_and_node_names():
    """Reference: the RegistrationResult's arrays; the node names the README lists."""
    from DiffDefAtlasLib.register.engine import RegistrationResult

    atlas_grid = Grid((6, 5, 4), _oblique_affine())
    scan_affine = np.diag([0.9, 0.9, 1.2, 1.0])
    rng = np.random.default_rng(9)
    result = RegistrationResult(
        warped=Volume(rng.normal(size=atlas_grid.shape).astype(np.float32), atlas_grid.affine),
        displacement=rng.normal(size=(3, *atlas_grid.shape)).astype(np.float32), grid=atlas_grid,
        jacobian=Volume(rng.normal(1.0, 0.2, size=atlas_grid.shape).astype(np.float32), atlas_grid.affine),
        labels_on_moving=Volume(rng.integers(0, 5, size=(7, 8, 3)).astype(np.uint8), scan_affine), summary={},
    )
    plan = layers.registration_layers(result, "MRHead")
    assert plan.names == {"warped": "MRHead in atlas space", "transform": "MRHead to atlas transform",
                          "jacobian": "MRHead registration Jacobian", "labels": "MRHead atlas labels",
                          "segmentation": "MRHead atlas segmentation"}
    assert plan.warped.shape == (4, 5, 6) and plan.labels.shape == (3, 8, 7)  # labels on the scan's grid
    np.testing.assert_allclose(plan.labels.ijk_to_ras, scan_affine)
    assert plan.labels.class_name == layers.LABEL_VOLUME
    result.labels_on_moving = None
    assert layers.registration_layers(result, "MRHead").labels is None
    assert layers.registration_node_names("scan 1")["warped"] == "scan 1 in atlas space"
    assert layers.atlas_node_names("brain3d", {}, 0)["magnitude"] == "brain3d seed-0 displacement (mm)"


def test_generation_record_survives_bad_text():
    assert layers.read_generation_record(None) == {} and layers.read_generation_record("{not json") == {}
    assert layers.read_generation_record("[1]") == {}
    assert layers.export_stem_for_record({}, "brain3d") == "brain3d"
    assert layers.export_stem_for_record({"model": "m", "conditions": "bad", "seed": "x"}) == "m"
    text = layers.generation_record("m", {"age": 70}, 2, {"timings": {"total_s": 1.0}, "path": Path("a")})
    assert json.loads(text)["summary"]["path"] == "a"  # non-JSON values become text


# ------------------------------------------------------------------------------------------------------------------
# slicer_support.gui_state: widget state without Qt


def test_slicer_models_keep_3d_cards_in_order():
    cards = [SimpleNamespace(name="a", spatial_dims=2), SimpleNamespace(name="b", spatial_dims=3),
             SimpleNamespace(name="c", spatial_dims=3)]
    assert [c.name for c in gui_state.slicer_models(cards)] == ["b", "c"]


def test_initial_condition_state_restores_stored_values():
    """Reference: the card defaults and the slider limits (values outside are clamped, unknown names dropped)."""
    controls = sliders.condition_controls(_card())
    values, used = gui_state.initial_condition_state(controls, {})
    assert values == {"age": 65.0, "sex": "M", "ventricle_volume_ml": 32.5} and used == {"age", "sex", "ventricle_volume_ml"}
    values, used = gui_state.initial_condition_state(controls, {"age": 99, "sex": "F", "unknown": 1})
    assert values["age"] == 85.0 and values["sex"] == "F" and used == {"age", "sex"}
    values, _ = gui_state.initial_condition_state(controls, {"sex": "X"})
    assert values["sex"] == "M"  # an unknown choice falls back to the default


def test_sweep_range_spans_the_trained_range():
    """Reference: the card's trained range 45..85 in 8 steps of 5, within the slider's limits."""
    age, sex, _ = sliders.condition_controls(_card(), allow_extrapolation=True)
    sweep = gui_state.sweep_range(age)
    assert (sweep.start, sweep.stop, sweep.step) == (45.0, 85.0, 5.0)
    assert (sweep.minimum, sweep.maximum, sweep.step_minimum, sweep.decimals) == (35.0, 95.0, 0.5, 1)
    assert gui_state.sweep_range(age, steps=1000).step == 0.5  # never finer than the slider step
    with pytest.raises(ValueError, match="categorical"):
        gui_state.sweep_range(sex)


def test_status_and_overlay_texts():
    assert gui_state.status_text("Atlas ready", {"device": "cuda:0"}, 0.04) == "Atlas ready on cuda:0 (0.0 s)"
    assert gui_state.status_text("Done", {}, None, ["fell back to the CPU"]) == "Done\nfell back to the CPU"
    text = gui_state.overlay_summary({"folding_ratio": 0.001234, "detj_min": 0.5, "detj_max": 1.5, "device": "cpu"})
    assert text == "folding (det J <= 0): 0.001234, det J min: 0.5, det J max: 1.5"
    assert gui_state.overlay_summary({}) == "" and gui_state.overlay_summary(None) == ""


def test_auto_jacobian_half_width_is_the_percentile_within_the_slider_range():
    """Reference: numpy percentile of |det J - 1| (99th), clipped to the parameter node's range 0.05..2."""
    det = 1.0 + np.random.default_rng(10).normal(0.0, 0.1, 5000)
    assert gui_state.auto_jacobian_half_width(det) == pytest.approx(np.percentile(np.abs(det - 1.0), 99.0))
    assert gui_state.auto_jacobian_half_width(np.ones(10)) == pytest.approx(0.05)


def test_deformation_display_settings():
    """Reference: vtkMRMLTransformDisplayNode takes the scale in percent; 'none' hides the transform."""
    assert gui_state.deformation_display("Glyph", 0.5, 4.0) == gui_state.DeformationDisplay(True, "glyph", 50.0, 4.0)
    assert gui_state.deformation_display("none").visible is False
    with pytest.raises(ValueError):
        gui_state.deformation_display("contour")
    with pytest.raises(ValueError):
        gui_state.deformation_display("grid", 0.0)
    assert set(gui_state.DEFORMATION_MODES) == {"grid", "glyph", "none"}
    assert set(gui_state.FOREGROUND_CHOICES) == {"jacobian", "magnitude", "none"}


# ------------------------------------------------------------------------------------------------------------------
# slicer_support.dependencies


def test_missing_dependencies_lists_torch_first():
    """Reference: fake package lookups (nothing installed / everything installed) and this environment."""
    nothing = dependencies.missing_dependencies(find_spec=lambda name: None, version_of={}.__getitem__)
    assert nothing == ["torch", "monai", "nibabel", "safetensors", "tqdm"]
    installed = {"monai": "1.5.0", "nibabel": "5.3.2", "safetensors": "0.5.0", "tqdm": "4.67.0"}
    assert dependencies.missing_dependencies(find_spec=lambda name: object(), version_of=installed.__getitem__) == []
    assert dependencies.missing_pip_requirements(version_of={}.__getitem__) == list(dependencies.SLICER_PIP_REQUIREMENTS)
    assert dependencies.torch_installed() and dependencies.missing_dependencies() == []


def test_old_torch_counts_as_missing_and_the_installed_build_is_pinned():
    """Reference: hand-made version tables; ``packaging.version`` for the comparison the requirement means."""
    from packaging.version import Version

    present = lambda name: object()  # noqa: E731
    for found in ("1.13.1+cu117", "2.0.1", "2.1.0", "2.5.1+cu121"):
        problem = dependencies.torch_problem(find_spec=present, version_of={"torch": found}.__getitem__)
        too_old = Version(found) < Version("2.1")
        assert (problem is not None) == too_old, found
        listed = dependencies.missing_dependencies(find_spec=present, version_of={"torch": found, "monai": "1.5",
                                                   "nibabel": "5.3", "safetensors": "0.5", "tqdm": "4.67"}.__getitem__)
        assert listed == (["torch"] if too_old else [])
    assert dependencies.torch_problem(find_spec=lambda name: None) == "PyTorch is not installed"
    assert dependencies.torch_constraint({"torch": "2.5.1+cu121"}.__getitem__) == "torch==2.5.1+cu121"
    assert dependencies.torch_constraint({}.__getitem__) is None


def test_updated_imported_packages_names_only_changed_and_loaded_ones():
    """Reference: a hand-made before/after of pip's effect and the modules loaded in this process."""
    before = {"monai": "1.3.2", "tqdm": "4.66.0", "nibabel": "5.2.0"}
    after = {"monai": "1.4.0", "tqdm": "4.66.0", "nibabel": "5.3.0", "safetensors": "0.5.0"}
    names = {"monai": ["monai"], "nibabel": ["nibabel"], "safetensors": ["safetensors"]}
    assert dependencies.updated_imported_packages(before, after, ["monai", "safetensors"], names) == [
        "monai 1.3.2 -> 1.4.0", "safetensors new -> 0.5.0"]
    assert dependencies.updated_imported_packages(before, after, ["numpy"], names) == []
    here = dependencies.installed_versions()
    assert "numpy" in here and "torch" in dependencies.distribution_import_names()
    assert dependencies.updated_imported_packages(here, here, list(sys.modules), dependencies.distribution_import_names()) == []


def test_pip_and_torch_requirements_are_valid_and_satisfied_here():
    """Reference: the packaging library (what pip and slicer.packaging.pip_ensure parse) and the installed versions."""
    from importlib.metadata import version

    from packaging.specifiers import SpecifierSet

    import torch

    requirements = dependencies.pip_requirements()
    assert [r.name for r in requirements] == ["monai", "nibabel", "safetensors", "tqdm"]
    for requirement in requirements:
        assert requirement.specifier.contains(version(requirement.name), prereleases=True)
    assert [str(r) for r in dependencies.pip_requirements(["monai>=1.4"])] == ["monai>=1.4"]
    assert SpecifierSet(dependencies.torch_version_requirement()).contains(torch.__version__.split("+")[0], prereleases=True)


# ------------------------------------------------------------------------------------------------------------------
# the Logic's library calls on the bundled brain3d model (what generateAtlas, the overlays and Export do in Slicer)


@pytest.fixture(scope="module")
def brain3d():
    """``api.generate_atlas`` called exactly as ``DiffDefAtlasLogic.generateAtlas`` calls it (CPU)."""
    from DiffDefAtlasLib import api

    model, conditions, seed = "brain3d", {"age": 72, "sex": "F"}, 0
    result = api.generate_atlas(model, conditions, seed=seed, steps=None, device=devices.device_choice("CPU"),
                                allow_extrapolation=False)
    return SimpleNamespace(model=model, conditions=conditions, seed=seed, result=result)


def test_logic_generate_path_on_brain3d(brain3d, tmp_path):
    """Reference: the AtlasResult itself, VTK's grid transform (the deformation node's content), nibabel reading the
    exported files. This is the library half of the Slicer self-test's test_generate_nodes_match_library."""
    from DiffDefAtlasLib import api

    assert "brain3d" in [c.name for c in gui_state.slicer_models(api.list_models())]
    result = brain3d.result
    plan = layers.atlas_layers(result, model=brain3d.model, conditions=brain3d.conditions, seed=brain3d.seed)
    assert plan.atlas.name == "brain3d age-72 sex-F atlas"
    shape_kji = tuple(reversed(result.grid.shape))
    for layer in (plan.atlas, plan.labels, plan.jacobian, plan.magnitude, plan.folding):
        assert layer.shape == shape_kji
        np.testing.assert_allclose(layer.ijk_to_ras, result.grid.affine)
    np.testing.assert_array_equal(plan.atlas.array, np.asarray(result.atlas.array).transpose(2, 1, 0))
    assert set(np.unique(plan.labels.array)) <= set(range(5)) and plan.labels.array.max() == 4  # ventricles present
    # the grid transform maps grid points x to x + u(x)
    image, direction = vtk_grid.displacement_grid_image(result.displacement, result.grid)
    np.testing.assert_allclose(vtk_grid.matrix_from_vtk(direction)[:3, :3] * np.array(image.GetSpacing()),
                               result.grid.affine[:3, :3], atol=1e-9)
    transform = vtk_hybrid.vtkGridTransform()
    transform.SetDisplacementGridData(image)
    for index in [(80, 95, 80), (40, 100, 70)]:
        x = result.grid.voxel_to_world_points(np.array(index, dtype=float))
        np.testing.assert_allclose(transform.TransformPoint(*x), x + result.displacement[(slice(None), *index)], atol=1e-4)
    u, grid = vtk_grid.displacement_from_grid_image(image, direction)
    np.testing.assert_allclose(u, result.displacement, atol=1e-6)
    # the overlay line and the status line read keys the generator really writes
    line = gui_state.overlay_summary(result.summary)
    assert f"det J min: {result.summary['detj_min']:.4g}" in line and "folding (det J <= 0)" in line
    assert gui_state.status_text("Atlas ready", result.summary, 1.0).startswith("Atlas ready on cpu")
    # Export, named from the record stored on the atlas node
    record = layers.read_generation_record(plan.record)
    written = exports.export_atlas(tmp_path, layers.export_stem_for_record(record), atlas=result.atlas, labels=result.labels,
                                 displacement=u, grid=grid, jacobian=result.jacobian, summary=record)
    assert written["atlas"].name == "brain3d_age-72_sex-F_atlas.nii.gz"
    np.testing.assert_allclose(np.asarray(nib.load(str(written["jacobian"])).dataobj), result.jacobian.array, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(nib.load(str(written["folding"])).dataobj),
                                  (np.asarray(result.jacobian.array) <= 0).astype(np.uint8))
