"""``diffdef-atlas register`` end to end on small synthetic images.

References: SimpleITK resampling of the moving image with the written field must reproduce warped.nii.gz; nibabel
reads the NIfTI headers (intent codes, geometry) independently of the library.
"""

from __future__ import annotations

import argparse
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.imageio import Volume, read_image, write_image
from DiffDefAtlasLib.register.cli import add_register_arguments, main, run_register


def _ellipsoid(shape, affine, radii, centre=(0.0, 0.0, 0.0)):
    """Two nested ellipsoids in world mm (labels 1 and 2) and a matching smooth image."""
    n = len(shape)
    index = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float64)
    world = index @ affine[:n, :n].T + affine[:n, n]
    r = np.sqrt((((world - np.asarray(centre[:n])) / np.asarray(radii[:n])) ** 2).sum(-1))
    labels = np.where(r < 0.5, 2, np.where(r < 1.0, 1, 0)).astype(np.int16)
    image = np.clip(1.2 - r, 0, 1).astype(np.float32) * (1 + (labels == 2))
    return Volume(image, affine), Volume(labels, affine)


def _inputs_3d(folder):
    fixed_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    fixed_affine[:3, 3] = -31.0
    fixed, fixed_labels = _ellipsoid((32, 32, 32), fixed_affine, (22, 18, 16))
    # The moving scan: 1.5 mm voxels, LPS-like axes (i -> Left, j -> Posterior), another field of view.
    moving_affine = np.array([[-1.5, 0, 0, 30], [0, -1.5, 0, 33], [0, 0, 1.5, -30], [0, 0, 0, 1.0]])
    moving, moving_labels = _ellipsoid((40, 44, 40), moving_affine, (20, 20, 14), centre=(2.0, -1.0, 1.0))
    paths = {}
    for name, volume in (("fixed", fixed), ("fixed_labels", fixed_labels), ("moving", moving), ("moving_labels", moving_labels)):
        paths[name] = write_image(volume, folder / f"{name}.nii.gz")
    return paths


def _args(paths, out, *extra):
    parser = add_register_arguments(argparse.ArgumentParser())
    return parser.parse_args(
        ["--moving", str(paths["moving"]), "--fixed", str(paths["fixed"]), "--out", str(out), "--fixed-labels", str(paths["fixed_labels"]),
         "--moving-labels", str(paths["moving_labels"]), "--device", "cpu", *extra]
    )


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory):
    folder = tmp_path_factory.mktemp("register3d")
    paths = _inputs_3d(folder)
    out = folder / "out"
    assert run_register(_args(paths, out, "--refine", "5")) == 0
    return paths, out


def test_writes_every_output_with_the_right_geometry(run_3d, capsys):
    """Fixed-space outputs carry the fixed affine; labels.nii.gz carries the moving scan's; intents 1006 and 1007."""
    paths, out = run_3d
    for name in ("warped", "displacement", "displacement_itk", "jacobian", "lambda", "labels"):
        assert (out / f"{name}.nii.gz").is_file(), name
    fixed = nib.load(str(paths["fixed"]))
    moving = nib.load(str(paths["moving"]))
    for name in ("warped", "jacobian", "displacement", "displacement_itk"):
        image = nib.load(str(out / f"{name}.nii.gz"))
        assert np.allclose(image.affine, fixed.affine, atol=1e-4), name
        assert image.shape[:3] == fixed.shape
    assert int(nib.load(str(out / "displacement.nii.gz")).header["intent_code"]) == 1006
    assert int(nib.load(str(out / "displacement_itk.nii.gz")).header["intent_code"]) == 1007
    labels = nib.load(str(out / "labels.nii.gz"))
    assert np.allclose(labels.affine, moving.affine, atol=1e-4) and labels.shape == moving.shape
    summary = json.loads((out / "summary.json").read_text())
    assert {"affine_s", "deformable_s", "refine_s", "total_s"} <= set(summary["timings_s"])
    assert summary["refine_steps"] == 5
    assert summary["folding_ratio"] <= 0.0005
    assert set(summary["dice"]["registered"]) >= {"1", "2", "mean"}


def test_ras_and_itk_fields_agree(run_3d):
    """displacement_itk.nii.gz holds the same field with x and y negated (LPS), read by nibabel."""
    _, out = run_3d
    ras = np.asarray(nib.load(str(out / "displacement.nii.gz")).dataobj)[..., 0, :]
    lps = np.asarray(nib.load(str(out / "displacement_itk.nii.gz")).dataobj).reshape(ras.shape)
    assert np.allclose(lps * np.array([-1, -1, 1]), ras, atol=1e-5)


def test_simpleitk_resampling_with_the_field_reproduces_warped(run_3d):
    """Reference: SimpleITK resamples the moving scan through the ITK field; it must equal warped.nii.gz."""
    paths, out = run_3d
    field = sitk.ReadImage(str(out / "displacement_itk.nii.gz"), sitk.sitkVectorFloat64)
    transform = sitk.DisplacementFieldTransform(field)
    fixed = sitk.ReadImage(str(paths["fixed"]))
    moving = sitk.ReadImage(str(paths["moving"]), sitk.sitkFloat32)
    reference = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0))
    warped = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "warped.nii.gz")))
    inner = (slice(3, -3),) * 3
    assert np.abs(reference[inner] - warped[inner]).max() < 0.02 * float(np.abs(reference).max())
    assert np.abs(warped).max() > 0.5


def test_labels_land_on_the_moving_scan(run_3d):
    """labels.nii.gz (fixed labels carried onto the scan) overlaps the scan's own labels: the inverse map and the
    moving geometry (LPS axes, 1.5 mm) are right. A wrong axis or direction gives Dice far below 0.6 here."""
    paths, out = run_3d
    carried = np.asarray(nib.load(str(out / "labels.nii.gz")).dataobj)
    truth = np.asarray(nib.load(str(paths["moving_labels"])).dataobj)
    dice = 2 * np.sum((carried > 0) & (truth > 0)) / (np.sum(carried > 0) + np.sum(truth > 0))
    assert dice > 0.6


def test_refuses_a_non_empty_folder_without_overwrite(run_3d, tmp_path, capsys):
    """An existing non-empty output folder is an input error (exit 2) unless --overwrite is given."""
    paths, _ = run_3d
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(DiffDefInputError, match="not empty"):
        run_register(_args(paths, out))
    argv = ["--moving", str(paths["moving"]), "--fixed", str(paths["fixed"]), "--out", str(out), "--device", "cpu", "--no-affine"]
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    # --overwrite replaces a result folder as a whole, so a folder of the user's own files is never replaced.
    assert main(argv + ["--overwrite"]) == 2
    assert "not a diffdef-atlas result" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "user data" and not (out / "warped.nii.gz").exists()
    result = tmp_path / "result"
    assert main(["--moving", str(paths["moving"]), "--fixed", str(paths["fixed"]), "--out", str(result), "--device", "cpu", "--no-affine"]) == 0
    (result / "stale.txt").write_text("from an older run")
    assert main(["--moving", str(paths["moving"]), "--fixed", str(paths["fixed"]), "--out", str(result), "--device", "cpu", "--no-affine", "--overwrite"]) == 0
    assert (result / "warped.nii.gz").is_file() and not (result / "stale.txt").exists()
    assert "100% wrote results to" in capsys.readouterr().out  # a person's progress line (no parent asked for PROGRESS)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left beside it


def test_two_dimensional_registration(tmp_path):
    """2D images go through the bundled 2D network; the 2D field has 2 components and the fixed geometry, and the
    warped scan overlaps the fixed shape better than the moving scan did (reference: label overlap of the inputs)."""
    from scipy.ndimage import gaussian_filter

    affine = np.array([[1.0, 0, -31.5], [0, 1.0, -39.5], [0, 0, 1]])
    _, fixed_labels = _ellipsoid((64, 80), affine, (24, 30))
    _, moving_labels = _ellipsoid((64, 80), affine, (20, 34), centre=(3.0, -4.0))
    # piecewise-constant tissue (softened edges), as a scan has: mutual information has one sharp optimum on it
    fixed, moving = (Volume(gaussian_filter(lab.array.astype(np.float32), 1.0), affine) for lab in (fixed_labels, moving_labels))
    write_image(fixed, tmp_path / "fixed.nii.gz")
    write_image(moving, tmp_path / "moving.nii.gz")
    out = tmp_path / "out"
    assert main(["--moving", str(tmp_path / "moving.nii.gz"), "--fixed", str(tmp_path / "fixed.nii.gz"), "--out", str(out), "--device", "cpu"]) == 0
    field = nib.load(str(out / "displacement.nii.gz"))
    assert field.shape == (64, 80, 1, 1, 2)
    warped = read_image(out / "warped.nii.gz").array
    assert warped.shape == (64, 80)

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    inside = fixed_labels.array > 0
    assert dice(warped > 0.5, inside) > max(0.9, dice(moving.array > 0.5, inside) + 0.05)


def test_missing_cuda_is_reported(tmp_path, capsys):
    """--device cuda without CUDA is an input error, before any file is written."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    fixed, _ = _ellipsoid((32, 32), np.eye(3), (10, 12))
    write_image(fixed, tmp_path / "f.nii.gz")
    assert main(["--moving", str(tmp_path / "f.nii.gz"), "--fixed", str(tmp_path / "f.nii.gz"), "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "CUDA" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_parent_process_gets_progress_lines(run_3d, tmp_path, capsys, monkeypatch):
    """Reference: the protocol's parser (DiffDefAtlasLib.progress). With the switch the Slicer module sets, register
    prints PROGRESS lines whose fractions rise from 0 to 1, and nothing else parses as progress."""
    from DiffDefAtlasLib.progress import PROGRESS_ENV, parse_progress

    paths, _ = run_3d
    monkeypatch.setenv(PROGRESS_ENV, "1")
    capsys.readouterr()
    assert main(["--moving", str(paths["moving"]), "--fixed", str(paths["fixed"]), "--out", str(tmp_path / "o"), "--device", "cpu", "--no-affine"]) == 0
    fractions = [p.fraction for p in map(parse_progress, capsys.readouterr().out.splitlines()) if p is not None]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions) and len(fractions) >= 5



@pytest.mark.parametrize(("moving_shape", "fixed_shape"), [((40, 50), (30, 30, 30)), ((30, 30, 30), (40, 50))])
def test_a_dimension_mismatch_names_the_moving_file(tmp_path, capsys, moving_shape, fixed_shape):
    """The fixed image (the atlas) sets the dimension; a 2D moving image used to be blamed on the fixed file."""
    from DiffDefAtlasLib.cli.main import main as cli_main

    from clichecks import one_error_line

    rng = np.random.default_rng(0)
    moving, fixed = tmp_path / "moving.nii.gz", tmp_path / "fixed.nii.gz"
    nib.save(nib.Nifti1Image(rng.random(moving_shape).astype(np.float32), np.eye(4)), str(moving))
    nib.save(nib.Nifti1Image(rng.random(fixed_shape).astype(np.float32), np.eye(4)), str(fixed))
    code = cli_main(["register", "--moving", str(moving), "--fixed", str(fixed), "--out", str(tmp_path / "r"), "--device", "cpu"])
    line = one_error_line(capsys, code, f"{moving}: the moving image is {len(moving_shape)}D", status=2)
    assert str(fixed) not in line and not (tmp_path / "r").exists()
