"""``diffdef-atlas analyze`` end to end, on fields written by SimpleITK, against SimpleITK's Jacobian filter."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from clichecks import installed_command
from DiffDefAtlasLib.cli.main import main
from DiffDefAtlasLib.spatial import Grid, displacement_to_sitk
from DiffDefAtlasLib.spatial.convert import itk_to_ras_affine
from fieldfactory import smooth_random_field


@pytest.fixture
def sitk_field(tmp_path):
    grid = Grid((22, 26, 20), itk_to_ras_affine((-20.0, 30.0, -15.0), (1.5, 1.2, 2.0), np.eye(3).ravel()))
    u = smooth_random_field(grid.shape, amplitude_mm=7.0, sigma_vox=2.5, seed=5)
    image = displacement_to_sitk(u, grid)
    reference = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(image)).transpose(2, 1, 0)
    return image, reference


@pytest.mark.parametrize("name", ["field.nii.gz", "field.mha"])
def test_analyze_agrees_with_simpleitk(sitk_field, tmp_path, name, capsys):
    """Reference: SimpleITK DisplacementFieldJacobianDeterminantFilter on the very field SimpleITK wrote."""
    image, reference = sitk_field
    sitk.WriteImage(image, str(tmp_path / name))
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / name), "--out", str(out)]) == 0
    jac = nib.load(str(out / "jacobian.nii.gz"))
    ours = np.asarray(jac.dataobj)
    interior = (slice(1, -1),) * 3
    assert np.abs(ours[interior] - reference[interior]).max() <= 1e-3
    folding = np.asarray(nib.load(str(out / "folding.nii.gz")).dataobj)
    assert folding.dtype == np.uint8
    np.testing.assert_array_equal(folding[interior], (reference[interior] <= 0).astype(np.uint8))
    summary = json.loads((out / "summary.json").read_text())
    ref_interior = reference[interior]
    assert summary["folding_voxels_nonpositive"] >= int((ref_interior <= 0).sum())
    assert summary["detj_min"] <= ref_interior.min() + 1e-3 and summary["detj_max"] >= ref_interior.max() - 1e-3
    for key in ("folding_ratio_nonpositive", "folding_ratio_negative", "smoothness_mean_abs_grad_detj_per_mm", "detj_median"):
        assert key in summary
    assert summary["environment"]["torch_version"] and summary["environment"]["peak_rss_mb"] > 0
    printed = capsys.readouterr().out
    assert "folding_ratio_nonpositive" in printed and "detj_median" in printed


def test_analyze_refuses_existing_output_and_bad_files(sitk_field, tmp_path, capsys):
    """Reference: exit status 2 and one line naming the problem; existing results are kept."""
    image, _ = sitk_field
    sitk.WriteImage(image, str(tmp_path / "f.mha"))
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "f.mha"), "--out", str(out)]) == 0
    before = (out / "jacobian.nii.gz").read_bytes()
    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "f.mha"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--overwrite" in err and len(err.splitlines()) == 1
    assert (out / "jacobian.nii.gz").read_bytes() == before
    assert main(["analyze", str(tmp_path / "f.mha"), "--out", str(out), "--overwrite"]) == 0
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    assert main(["analyze", str(bad), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.nii.gz" in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.skipif(installed_command() is None, reason="package not installed (pip install -e .)")
def test_console_command_is_installed(sitk_field, tmp_path):
    """Reference: the installed console script runs as a user would type it."""
    image, _ = sitk_field
    sitk.WriteImage(image, str(tmp_path / "f.nii.gz"))
    result = subprocess.run([str(installed_command()), "analyze", str(tmp_path / "f.nii.gz"), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o" / "summary.json").is_file()
    missing = subprocess.run([sys.executable, "-m", "DiffDefAtlasLib.cli.main", "analyze", "nope.nii.gz", "--out", str(tmp_path / "x")],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "nope.nii.gz: file not found" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 1, 4)])
def test_a_field_too_small_for_a_jacobian_is_bad_input(tmp_path, capsys, shape):
    """Reference: a finite difference needs two samples per axis; a 1x1x1 field used to be an internal error."""
    from clichecks import one_error_line

    path = tmp_path / "tiny.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((*shape, 1, 3), np.float32), np.eye(4)), str(path))
    one_error_line(capsys, main(["analyze", str(path), "--out", str(tmp_path / "a")]), "has no Jacobian", status=2)
    assert not (tmp_path / "a").exists()
