"""Image IO against nibabel (NIfTI) and SimpleITK (NRRD, MHA, DICOM), and its error messages."""

from __future__ import annotations


import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.imageio import Volume, check_image, read_image, write_image
from fieldfactory import rotation_affine


@pytest.fixture
def oblique_volume():
    rng = np.random.default_rng(0)
    shape = (11, 13, 9)
    return Volume(rng.random(shape).astype(np.float32), rotation_affine(shape, (0.9, 1.1, 1.7), 0.5, origin=(3.0, -4.0, 5.0)))


def test_nifti_read_matches_nibabel(oblique_volume, tmp_path):
    """Reference: nibabel's data array and affine for a file nibabel wrote (LAS orientation)."""
    affine = np.diag([-1.2, 1.0, 2.0, 1.0])
    affine[:3, 3] = (40.0, -20.0, 10.0)
    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "las.nii.gz"))
    volume = read_image(tmp_path / "las.nii.gz")
    np.testing.assert_array_equal(volume.array, data)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", ".nii"])
def test_write_then_read_preserves_orientation(oblique_volume, tmp_path, suffix):
    """Reference: the original array and affine; for NIfTI also nibabel's reading of our file."""
    path = write_image(oblique_volume, tmp_path / f"v{suffix}")
    back = read_image(path)
    np.testing.assert_array_equal(back.array, oblique_volume.array)
    np.testing.assert_allclose(back.affine, oblique_volume.affine, atol=1e-5)
    if suffix.startswith(".nii"):
        np.testing.assert_allclose(nib.load(str(path)).affine, oblique_volume.affine, atol=1e-5)
    assert not list(tmp_path.glob(".*part*")), "no temporary file may remain"


def test_dicom_series_folder(tmp_path):
    """Reference: slice positions written into the DICOM tags; the series reads back with the same geometry."""
    data = (np.arange(6 * 7 * 5).reshape(6, 7, 5) % 97).astype(np.int16)
    image = sitk.GetImageFromArray(data.transpose(2, 1, 0))
    image.SetSpacing((0.8, 0.8, 2.5))
    image.SetOrigin((-10.0, 20.0, 30.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(data.shape[2]):
        slice_image = image[:, :, k]
        for tag, value in {
            "0020|0032": "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0013": str(k),
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.99999",
            "0008|0060": "MR",
        }.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"s{k:03d}.dcm"))
        writer.Execute(slice_image)
    volume = read_image(tmp_path)
    np.testing.assert_array_equal(volume.array, data)
    expected = np.diag([-0.8, -0.8, 2.5, 1.0])
    expected[:3, 3] = (10.0, -20.0, 30.0)
    np.testing.assert_allclose(volume.affine, expected, atol=1e-4)


def test_corrupt_and_unsupported_files_name_the_file(tmp_path):
    """Reference: the message names the file; no traceback-only failure."""
    truncated = tmp_path / "truncated.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), str(truncated))
    raw = truncated.read_bytes()
    truncated.write_bytes(raw[: len(raw) // 2])
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    for path in (truncated, text, tmp_path / "absent.nii.gz"):  # SimpleITK alone reads the truncated file
        with pytest.raises(DiffDefInputError, match=path.name):
            read_image(path)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(DiffDefInputError, match="no DICOM series"):
        read_image(empty_dir)


def test_size_is_checked_before_reading(tmp_path):
    """Reference: the header says 64^3 float32 = 1 MiB, above a 0.5 MiB limit."""
    path = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 64), np.float32), np.eye(4)), str(path))
    with pytest.raises(DiffDefInputError, match="needs 1 MiB, more than the 512 KiB allowed"):
        read_image(path, max_bytes=512 * 1024)


def test_four_d_and_vector_images_are_refused(tmp_path):
    """Reference: nibabel writes a 4D image; the reader must refuse it clearly."""
    path = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), str(path))
    with pytest.raises(DiffDefInputError, match=r"fmri.nii.gz: expected .*(4D|components)"):
        read_image(path)


def test_check_image_rejects_bad_content():
    """Reference: hand-made arrays with a NaN, all zeros, and the wrong number of dimensions."""
    good = Volume(np.ones((4, 4, 4), np.float32), np.eye(4))
    assert check_image(good, "x", spatial_dims=3) is good
    nan = Volume(np.ones((4, 4, 4), np.float32), np.eye(4))
    nan.array[1, 1, 1] = np.nan
    with pytest.raises(DiffDefInputError, match="NaN"):
        check_image(nan, "nan.nii.gz")
    inf = Volume(np.full((4, 4, 4), np.inf, np.float32), np.eye(4))
    with pytest.raises(DiffDefInputError, match="Inf"):
        check_image(inf, "inf.nii.gz")
    with pytest.raises(DiffDefInputError, match="every voxel is zero"):
        check_image(Volume(np.zeros((4, 4, 4), np.float32), np.eye(4)), "zero.nii.gz")
    with pytest.raises(DiffDefInputError, match="expected a 3D image, found 2D"):
        check_image(Volume(np.ones((4, 4), np.float32), np.eye(3)), "slice.png", spatial_dims=3)


def test_zero_spacing_is_refused(tmp_path):
    """Reference: a NIfTI header with pixdim 0 (nibabel writes it as asked)."""
    path = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), str(path))
    raw = bytearray(path.read_bytes())
    raw[88:92] = np.float32(0.0).tobytes()  # pixdim[3]: the third voxel size
    raw[254:256] = np.int16(0).tobytes()  # sform_code 0, so readers use the qform and pixdim
    path.write_bytes(bytes(raw))
    with pytest.raises(DiffDefInputError, match=r"flat.nii: voxel spacing must be positive"):
        read_image(path)
    (tmp_path / "z.raw").write_bytes(np.ones(64, np.float32).tobytes())
    (tmp_path / "z.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementSpacing = 1 1 0\nElementType = MET_FLOAT\nElementDataFile = z.raw\n"
    )
    with pytest.raises(DiffDefInputError, match=r"z.mhd: .*spacing"):
        read_image(tmp_path / "z.mhd")


def test_mgz_reads_like_nibabel(tmp_path):
    """Reference: nibabel's array and affine of an MGZ file it wrote (FreeSurfer conformed LIA orientation)."""
    affine = np.array([[-1.0, 0, 0, 128], [0, 0, 1, -128], [0, -1, 0, 128], [0, 0, 0, 1]])
    data = (np.arange(6 * 7 * 8) % 251).astype(np.uint8).reshape(6, 7, 8)
    nib.save(nib.MGHImage(data, affine), str(tmp_path / "aseg.mgz"))
    volume = read_image(tmp_path / "aseg.mgz")
    np.testing.assert_array_equal(volume.array, data)
    np.testing.assert_allclose(volume.affine, affine)
    (tmp_path / "broken.mgz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DiffDefInputError, match="broken.mgz"):
        read_image(tmp_path / "broken.mgz")


def test_a_volume_prints_its_geometry_not_its_voxels():
    """Reference: the shape, spacing and origin set here; a 1 mm head is millions of numbers, which print used to dump."""
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = (-90.0, -126.0, -72.0)
    text = repr(Volume(np.arange(60 * 70 * 80, dtype=np.float32).reshape(60, 70, 80), affine))
    assert text == "Volume(shape=(60, 70, 80), dtype=float32, spacing=(1.5, 1.5, 2), origin=(-90, -126, -72))"
    assert len(str(Volume(np.zeros((400, 400, 300), np.uint8), np.eye(4)))) < 120


def test_a_small_size_limit_is_written_in_units_that_show_it(tmp_path, monkeypatch):
    """Reference: 0.01 GiB is 10.24 MiB; a 200x200x100 float32 image is 15.3 MiB. Both used to read "0.0 GiB"."""
    monkeypatch.setenv("DIFFDEF_ATLAS_MAX_IMAGE_GB", "0.01")
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((200, 200, 100), np.float32), np.eye(4)), str(path))
    with pytest.raises(DiffDefInputError) as raised:
        read_image(path)
    assert "needs 15.3 MiB, more than the 10.2 MiB allowed" in str(raised.value)
