"""Round trips and cross-checks of the ITK (LPS), NIfTI (intent 1006) and Slicer (KJI) conventions."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.spatial import (
    Grid,
    displacement_from_sitk,
    displacement_from_slicer_array,
    displacement_to_sitk,
    displacement_to_slicer_array,
)
from DiffDefAtlasLib.fieldio import load_displacement, save_displacement_nifti

from fieldfactory import rotation_affine, smooth_random_field, world_points


@pytest.fixture
def oblique_field():
    shape = (12, 14, 10)
    grid = Grid(shape, rotation_affine(shape, (1.2, 0.9, 2.0), angle=0.4, origin=(5.0, -8.0, 12.0)))
    return smooth_random_field(shape, 3.0, sigma_vox=2.0, seed=11).astype(np.float32), grid


def test_itk_round_trip_and_physical_meaning(oblique_field):
    """Reference: SimpleITK's own TransformPoint, which works in LPS; RAS (x, y) = -LPS (x, y)."""
    u, grid = oblique_field
    image = displacement_to_sitk(u, grid)
    back, back_grid = displacement_from_sitk(image)
    np.testing.assert_allclose(back, u, atol=1e-6)
    assert back_grid == grid
    transform = sitk.DisplacementFieldTransform(sitk.Image(image))
    ijk = (3, 5, 7)
    x_ras = world_points(grid)[(slice(None),) + ijk]
    lps = np.array([-1.0, -1.0, 1.0])
    moved_lps = np.array(transform.TransformPoint(tuple((lps * x_ras).tolist())))
    np.testing.assert_allclose(lps * moved_lps, x_ras + u[(slice(None),) + ijk], atol=1e-4)


def test_nifti_intent_1006_round_trip_and_simpleitk_reads_it(oblique_field, tmp_path):
    """Reference: nibabel header (intent 1006, 5D) and SimpleITK's reader, which converts 1006 vectors to LPS."""
    u, grid = oblique_field
    path = save_displacement_nifti(u, grid, tmp_path / "displacement.nii.gz")
    header = nib.load(str(path)).header
    assert int(header["intent_code"]) == 1006 and header.get_data_shape() == (*grid.shape, 1, 3)
    np.testing.assert_allclose(nib.load(str(path)).affine, grid.affine, atol=1e-5)
    back, back_grid = load_displacement(path)
    np.testing.assert_allclose(back, u, atol=1e-6)
    assert back_grid == grid
    via_itk, itk_grid = displacement_from_sitk(sitk.ReadImage(str(path)))
    np.testing.assert_allclose(via_itk, u, atol=1e-5)
    assert itk_grid == grid


def test_simpleitk_written_fields_load_in_every_format(oblique_field, tmp_path):
    """Reference: SimpleITK writes LPS vectors (NIfTI intent 1007, MHA, NRRD, .h5 transform); all read back as RAS."""
    u, grid = oblique_field
    image = displacement_to_sitk(u, grid)
    for name in ("itk.nii.gz", "itk.mha", "itk.nrrd"):
        sitk.WriteImage(image, str(tmp_path / name))
        back, back_grid = load_displacement(tmp_path / name)
        np.testing.assert_allclose(back, u, atol=1e-5, err_msg=name)
        assert back_grid == grid, name
    sitk.WriteTransform(sitk.DisplacementFieldTransform(sitk.Image(image)), str(tmp_path / "warp.h5"))
    back, _ = load_displacement(tmp_path / "warp.h5")
    np.testing.assert_allclose(back, u, atol=1e-5)


def test_nifti_2d_field_round_trip(tmp_path):
    """Reference: the original array (2D fields are stored as (I, J, 1, 1, 2))."""
    grid = Grid((9, 11), np.array([[0.0, -1.0, 3.0], [1.5, 0.0, -2.0], [0, 0, 1]]))
    u = smooth_random_field((9, 11), 2.0, sigma_vox=2.0).astype(np.float32)
    back, back_grid = load_displacement(save_displacement_nifti(u, grid, tmp_path / "f2d.nii.gz"))
    np.testing.assert_allclose(back, u, atol=1e-6)
    assert back_grid == grid


def test_slicer_array_is_kji_ras_and_matches_vtk_image_data(oblique_field):
    """Reference: vtkImageData point order (i fastest) and a vtkMatrix4x4 IJK-to-RAS mapping."""
    u, grid = oblique_field
    array, ijk_to_ras = displacement_to_slicer_array(u, grid)
    assert array.shape == (grid.shape[2], grid.shape[1], grid.shape[0], 3)
    np.testing.assert_array_equal(array[7, 5, 3], u[:, 3, 5, 7])
    # vtkImageData stores points with i varying fastest, exactly the C order of a [k, j, i] array.
    image = vtk.vtkImageData()
    image.SetDimensions(*grid.shape)
    vectors = numpy_support.numpy_to_vtk(array.reshape(-1, 3), deep=True)
    image.GetPointData().SetVectors(vectors)
    point_id = image.ComputePointId([3, 5, 7])
    np.testing.assert_allclose(image.GetPointData().GetVectors().GetTuple3(point_id), u[:, 3, 5, 7], rtol=1e-6)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, ijk_to_ras[r, c])
    ras = matrix.MultiplyPoint((3, 5, 7, 1))[:3]
    np.testing.assert_allclose(ras, world_points(grid)[:, 3, 5, 7], atol=1e-9)
    back, back_grid = displacement_from_slicer_array(array, ijk_to_ras)
    np.testing.assert_array_equal(back, u)
    assert back_grid == grid


def test_bad_field_files_give_clear_errors(tmp_path):
    """Reference: the error names the file and the problem."""
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a nifti at all")
    with pytest.raises(DiffDefInputError, match="junk.nii.gz"):
        load_displacement(junk)
    scalar = tmp_path / "scalar.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(scalar))
    with pytest.raises(DiffDefInputError, match=r"scalar.nii.gz: expected a NIfTI displacement field"):
        load_displacement(scalar)
    with pytest.raises(DiffDefInputError, match="file not found"):
        load_displacement(tmp_path / "missing.nii.gz")


def test_field_size_is_checked_before_reading(tmp_path, monkeypatch):
    """Reference: the header says 40^3 x 3 float32 = 0.7 MiB, above a 0.5 MiB limit set through the environment."""
    grid = Grid((40, 40, 40), np.eye(4))
    path = save_displacement_nifti(np.zeros((3, 40, 40, 40), np.float32), grid, tmp_path / "big.nii.gz")
    monkeypatch.setenv("DIFFDEF_ATLAS_MAX_IMAGE_GB", str(0.5 / 1024))
    with pytest.raises(DiffDefInputError, match=r"big.nii.gz: image of size"):
        load_displacement(path)
