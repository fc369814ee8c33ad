"""Bad input through the real command line (issue 8, item 1): register, prepare and analyze.

Every case must end with a non-zero exit status and exactly one line on stderr that names the file and the problem,
without a traceback (``--debug`` re-raises so that Python prints one). The bad files are made here with nibabel,
SimpleITK or by hand (header bytes), independently of the library's writers. The registration network is replaced by
a randomly initialised one, so a check that goes missing lets the command succeed and the test fail (instead of
failing later on the absent bundled weights). Generator inputs (conditions, models, devices) are in
``test_reliability_generate.py``.
"""

from __future__ import annotations

import json
import subprocess

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DiffDefAtlasLib.cli.main import main
from DiffDefAtlasLib.errors import DiffDefInputError

from clichecks import one_error_line, installed_command
from heads import smooth_blob

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


# ------------------------------------------------------------------------------------------------ helpers
def _blob(shape, spacing=2.0):
    """A smooth positive blob (a skull-stripped "brain") on a grid with ``spacing`` mm voxels."""
    return smooth_blob(shape), np.diag([spacing] * len(shape) + [1.0])


def _nifti(array, affine, path):
    """Write with nibabel (2D arrays get a 3x3 affine embedded in 4x4)."""
    if affine.shape == (3, 3):
        full = np.eye(4)
        full[:2, :2], full[:2, 3] = affine[:2, :2], affine[:2, 2]
        affine = full
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One good 3D and 2D image and one file per kind of bad input."""
    d = tmp_path_factory.mktemp("inputs")
    out = {}
    good3, a3 = _blob((32, 32, 32))
    good2, a2 = _blob((32, 32))
    out["good3"] = _nifti(good3, a3, d / "good3.nii.gz")
    out["good2"] = _nifti(good2, a2, d / "good2.nii.gz")
    raw = out["good3"].read_bytes()
    out["truncated_gz"] = d / "truncated.nii.gz"
    out["truncated_gz"].write_bytes(raw[: len(raw) // 2])
    _nifti(good3, a3, d / "full.nii")
    out["truncated_nii"] = d / "truncated.nii"
    out["truncated_nii"].write_bytes((d / "full.nii").read_bytes()[: 352 + 1000])
    out["text"] = d / "notes.txt"
    out["text"].write_text("subject notes, not an image\n")
    out["text_nii"] = d / "renamed_notes.nii.gz"
    out["text_nii"].write_text("subject notes, not an image\n")
    out["single_slice"] = _nifti(good3[:, :, 16:17], a3, d / "one_slice.nii.gz")
    out["four_d"] = _nifti(np.stack([good3] * 3, -1), a3, d / "fmri.nii.gz")
    out["zero"] = _nifti(np.zeros_like(good3), a3, d / "zero.nii.gz")
    nan = good3.copy()
    nan[5, 6, 7] = np.nan
    out["nan"] = _nifti(nan, a3, d / "nan.nii.gz")
    inf = sitk.GetImageFromArray(good3.copy())
    array = sitk.GetArrayViewFromImage(inf).copy()
    array[3, 4, 5] = np.inf
    inf = sitk.GetImageFromArray(array)
    sitk.WriteImage(inf, str(d / "inf.mha"))
    out["inf"] = d / "inf.mha"
    for name, value in (("zero_spacing", 0.0), ("negative_spacing", -2.0)):
        path = _nifti(good3, a3, d / f"{name}.nii")
        block = bytearray(path.read_bytes())
        block[84:88] = np.float32(value).tobytes()  # pixdim[2]: the second voxel size
        block[254:256] = np.int16(0).tobytes()  # sform_code 0: readers use the qform and pixdim
        path.write_bytes(bytes(block))
        out[name] = path
    header = nib.Nifti1Header()  # a header announcing 30000^3 float32 voxels (~100 TB), followed by almost nothing
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.float32)
    out["huge"] = d / "huge.nii"
    out["huge"].write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 4096)
    out["missing"] = d / "absent.nii.gz"
    return out


@pytest.fixture(autouse=True)
def _untrained_network(untrained_registration_network):
    """Every test here registers with the random network of ``conftest.untrained_registration_network``."""


def register(files, moving, fixed, out, *extra):
    return main(["register", "--moving", str(files[moving]), "--fixed", str(files[fixed]), "--out", str(out), "--device", "cpu", "--no-affine", *extra])


# ------------------------------------------------------------------------------------------------ register
def test_good_inputs_register(files, tmp_path, capsys):
    """Control for the cases below: the good pair goes through (status 0), so each failure is due to its bad file."""
    assert register(files, "good3", "good3", tmp_path / "ok") == 0
    assert (tmp_path / "ok" / "warped.nii.gz").is_file()


@pytest.mark.parametrize(
    "bad, needles",
    [
        ("truncated_gz", ["truncated.nii.gz", "truncated"]),
        ("truncated_nii", ["truncated.nii", "truncated"]),
        ("text", ["notes.txt", "cannot read image"]),
        ("text_nii", ["renamed_notes.nii.gz", "gzip"]),
        ("four_d", ["fmri.nii.gz", "4D"]),
        ("single_slice", ["32x32x1", "single slice"]),
        ("nan", ["nan.nii.gz", "NaN"]),
        ("inf", ["inf.mha", "Inf"]),
        ("zero_spacing", ["zero_spacing.nii", "spacing must be positive"]),
        ("negative_spacing", ["negative_spacing.nii", "spacing must be positive"]),
        ("huge", ["huge.nii", "30000x30000x30000", "GiB"]),
        ("missing", ["absent.nii.gz", "not found"]),
    ],
)
@pytest.mark.parametrize("role", ["moving", "fixed"])
def test_bad_image_file(files, tmp_path, capsys, bad, needles, role):
    """Reference: the defect built into each file by hand (see the ``files`` fixture); nothing is written."""
    moving, fixed = (bad, "good3") if role == "moving" else ("good3", bad)
    out = tmp_path / "out"
    one_error_line(capsys, register(files, moving, fixed, out), *needles)
    assert not out.exists()


@pytest.mark.parametrize("moving, fixed", [("good2", "good3"), ("good3", "good2")])
def test_two_d_against_three_d_names_the_file(files, tmp_path, capsys, moving, fixed):
    """Reference: one file is 2D and the other 3D; the message must name the file and both dimensions."""
    line = one_error_line(capsys, register(files, moving, fixed, tmp_path / "out"), "2D", "3D")
    assert files[fixed].name in line or files[moving].name in line


def test_two_d_against_three_d_is_a_one_line_error(files, tmp_path, capsys):
    """Reference: good2 is 2D, good3 is 3D (nibabel headers); whatever the wording, one line and status 2."""
    code = register(files, "good2", "good3", tmp_path / "out")
    assert code == 2
    one_error_line(capsys, code, "2D", "3D")


def test_all_zero_image_names_the_file(files, tmp_path, capsys):
    """Reference: zero.nii.gz is np.zeros written by nibabel."""
    one_error_line(capsys, register(files, "zero", "good3", tmp_path / "out"), "zero.nii.gz", "zero")


def test_all_zero_image_is_a_one_line_error(files, tmp_path, capsys):
    """Reference: zero.nii.gz is np.zeros written by nibabel; refused in one line with status 2."""
    code = register(files, "zero", "good3", tmp_path / "out")
    assert code == 2
    one_error_line(capsys, code, "every voxel is zero")


@NO_CUDA
def test_register_cuda_without_cuda(files, tmp_path, capsys):
    """Reference: torch.cuda.is_available() is False here; nothing may be written."""
    out = tmp_path / "out"
    code = main(["register", "--moving", str(files["good3"]), "--fixed", str(files["good3"]), "--out", str(out), "--device", "cuda"])
    one_error_line(capsys, code, "cuda", "CUDA")
    assert not out.exists()


def test_size_limit_follows_the_machine_memory(files, tmp_path, capsys, monkeypatch):
    """Reference: MemTotal in /proc/meminfo (the kernel's own count) for the default limit, a quarter of it; and the
    DIFFDEF_ATLAS_MAX_IMAGE_GB override refusing a 32^3 float32 image (128 KiB) above a 64 KiB limit."""
    from DiffDefAtlasLib.imageio import _cgroup_memory_limit, default_max_bytes

    try:
        meminfo = open("/proc/meminfo").read()
    except OSError:
        pytest.skip("no /proc/meminfo")
    total = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal:"))) * 1024
    total = min(total, _cgroup_memory_limit() or total)
    monkeypatch.delenv("DIFFDEF_ATLAS_MAX_IMAGE_GB", raising=False)
    assert default_max_bytes() == pytest.approx(total / 4, rel=0.02)
    monkeypatch.setenv("DIFFDEF_ATLAS_MAX_IMAGE_GB", str(64 / 1024**2))
    one_error_line(capsys, register(files, "good3", "good3", tmp_path / "out"), "good3.nii.gz", "32x32x32", "DIFFDEF_ATLAS_MAX_IMAGE_GB")
    monkeypatch.setenv("DIFFDEF_ATLAS_MAX_IMAGE_GB", "lots")
    one_error_line(capsys, register(files, "good3", "good3", tmp_path / "out2"), "DIFFDEF_ATLAS_MAX_IMAGE_GB", "lots")


def test_debug_shows_the_traceback(files, tmp_path):
    """Reference: Python prints a traceback for an exception that leaves main(); --debug must let it through."""
    with pytest.raises(DiffDefInputError, match="truncated.nii.gz"):
        main(["--debug", "register", "--moving", str(files["truncated_gz"]), "--fixed", str(files["good3"]), "--out", str(tmp_path / "o")])
    with pytest.raises(DiffDefInputError, match="truncated.nii.gz"):
        main(["register", "--debug", "--moving", str(files["truncated_gz"]), "--fixed", str(files["good3"]), "--out", str(tmp_path / "o")])


def test_unexpected_errors_are_one_line_too(files, tmp_path, capsys, monkeypatch):
    """Reference: an exception that is not an input error (a bug, simulated) still gives one line and status 1,
    with a hint to --debug; an OSError (disk full, simulated) names the file."""
    import DiffDefAtlasLib.register.engine as engine

    def broken(*args, **kwargs):
        raise IndexError("index 7 is out of bounds\nsecond line of a long message")

    monkeypatch.setattr(engine, "register_to_atlas", broken)
    code = register(files, "good3", "good3", tmp_path / "a")
    assert code == 1
    one_error_line(capsys, code, "IndexError", "--debug", "; second line")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "b" / "warped.nii.gz"))

    monkeypatch.setattr(engine, "register_to_atlas", disk_full)
    code = register(files, "good3", "good3", tmp_path / "b")
    assert code == 1
    one_error_line(capsys, code, "warped.nii.gz", "No space left on device")


@pytest.mark.skipif(installed_command() is None, reason="package not installed (pip install -e .)")
def test_installed_command_prints_no_traceback(files, tmp_path):
    """Reference: the console script as a user types it, in a fresh process (its real stderr, not a capture)."""
    result = subprocess.run(
        [str(installed_command()), "register", "--moving", str(files["truncated_gz"]), "--fixed", str(files["good3"]), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1
    assert "truncated.nii.gz" in lines[0] and "truncated" in lines[0]
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------ prepare (cohort CSV)
CSV_CASES = {
    "missing_column": ("subject_id,age\ns1,70\n", ["cohort.csv", "missing required column 'image'"]),
    "duplicate_column": ("subject_id,image,age,age\ns1,{img},70,71\n", ["cohort.csv", "'age' appears twice"]),
    "non_numeric": ("subject_id,image,age\ns1,{img},seventy\n", ["cohort.csv row 2", "'age'", "expected a number", "seventy"]),
    "unknown_condition": ("subject_id,image,agee\ns1,{img}\n", ["cohort.csv", "unknown condition column 'agee'", "did you mean 'age'"]),
    "duplicate_subject": ("subject_id,image,age\ns1,{img},70\ns1,{img},71\n", ["cohort.csv row 3", "duplicate subject_id 's1'"]),
    "missing_image": ("subject_id,image,age\ns1,nowhere.nii.gz,70\n", ["cohort.csv row 2", "nowhere.nii.gz", "not found"]),
    "ragged_row": ("subject_id,image,age\ns1,{img}\n", ["cohort.csv row 2", "expected 3 cells, found 2"]),
    "out_of_range": ("subject_id,image,age\ns1,{img},250\n", ["cohort.csv row 2", "'age'", "250"]),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_bad_cohort_table(files, tmp_path, capsys, case):
    """Reference: each table is written by hand with one defect; prepare refuses it before creating its output."""
    text, needles = CSV_CASES[case]
    csv_path = tmp_path / "cohort.csv"
    csv_path.write_text(text.replace("{img}", str(files["good3"])))
    out = tmp_path / "cache"
    one_error_line(capsys, main(["prepare", "--cohort", str(csv_path), "--out", str(out), "--no-progress"]), *needles)
    assert not out.exists()


def test_binary_cohort_table(tmp_path, capsys):
    """Reference: bytes that are not UTF-8 (a gzip header)."""
    csv_path = tmp_path / "cohort.csv"
    csv_path.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe binary")
    one_error_line(capsys, main(["prepare", "--cohort", str(csv_path), "--out", str(tmp_path / "c"), "--no-progress"]), "cohort.csv", "UTF-8")


def test_prepare_reports_a_corrupt_scan_and_goes_on(files, tmp_path, capsys):
    """Reference: the truncated gzip built by hand; the batch reports the subject and its file (status 1), no traceback."""
    csv_path = tmp_path / "cohort.csv"
    csv_path.write_text(f"subject_id,image,age\nbad,{files['truncated_gz']},70\n")
    code = main(["prepare", "--cohort", str(csv_path), "--out", str(tmp_path / "cache"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    failed = [line for line in err.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "bad" in failed[0] and "truncated.nii.gz" in failed[0] and "truncated" in failed[0]
    report = json.loads((tmp_path / "cache" / "prepare_report.json").read_text())
    assert list(report["failed"]) == ["bad"] and report["prepared"] == []


# ------------------------------------------------------------------------------------------------ analyze (fields)
def test_analyze_nan_field(tmp_path, capsys):
    """Reference: a NIfTI displacement field (intent 1006) written by nibabel with one NaN component."""
    data = np.zeros((8, 8, 8, 1, 3), np.float32)
    data[2, 2, 2, 0, 1] = np.nan
    image = nib.Nifti1Image(data, np.eye(4))
    image.header.set_intent(1006)
    nib.save(image, str(tmp_path / "field.nii.gz"))
    one_error_line(capsys, main(["analyze", str(tmp_path / "field.nii.gz"), "--out", str(tmp_path / "o")]), "field.nii.gz", "NaN")


def test_analyze_scalar_image_is_not_a_field(files, tmp_path, capsys):
    """Reference: good3.nii.gz is a scalar 3D image (nibabel shape (32, 32, 32)), not a vector field."""
    one_error_line(capsys, main(["analyze", str(files["good3"]), "--out", str(tmp_path / "o")]), "good3.nii.gz", "expected")


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".nrrd", ".h5"])
def test_the_size_limit_holds_for_every_field_format(tmp_path, monkeypatch, capsys, suffix):
    """Reference: the same 40x40x40x3 field written by nibabel / SimpleITK in each format; a limit below its size
    refuses it in every format (``.mha`` used to be accepted), and a header claiming 3000^3 x 3 is refused from the
    header alone (ITK tried to allocate and its message was a source line)."""
    import SimpleITK as sitk

    from DiffDefAtlasLib.cli.main import main as cli_main
    from DiffDefAtlasLib.fieldio import save_displacement_nifti
    from DiffDefAtlasLib.spatial import Grid, displacement_to_sitk

    from clichecks import one_error_line

    grid = Grid((40, 40, 40), np.eye(4))
    u = np.zeros((3, 40, 40, 40), np.float32)
    path = tmp_path / f"field{suffix}"
    if suffix == ".nii.gz":
        save_displacement_nifti(u, grid, path)
    elif suffix == ".h5":
        sitk.WriteTransform(sitk.DisplacementFieldTransform(displacement_to_sitk(u, grid)), str(path))
    else:
        sitk.WriteImage(displacement_to_sitk(u, grid), str(path))
    monkeypatch.setenv("DIFFDEF_ATLAS_MAX_IMAGE_GB", "0.0005")
    one_error_line(capsys, cli_main(["analyze", str(path), "--out", str(tmp_path / "a")]), str(path), "allowed", status=2)
    monkeypatch.delenv("DIFFDEF_ATLAS_MAX_IMAGE_GB")
    assert cli_main(["analyze", str(path), "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    huge = tmp_path / "huge.mha"
    huge.write_text("ObjectType = Image\nNDims = 3\nDimSize = 3000 3000 3000\nElementNumberOfChannels = 3\n"
                    "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n")
    one_error_line(capsys, cli_main(["analyze", str(huge), "--out", str(tmp_path / "c")]), "3000x3000x3000", "GiB", status=2)


@pytest.mark.parametrize("argv", [["generate", "--seed", "abc", "--out", "o"], ["frobnicate"], ["analyze"],
                                  ["sweep", "--model", "brain3d", "--out", "o"]])
def test_usage_errors_are_one_line(argv, capsys, tmp_path, monkeypatch):
    """Reference: argparse's own message, kept; the usage block it prints before it is not (one line, exit 2)."""
    from DiffDefAtlasLib.cli.main import main as cli_main

    from clichecks import one_error_line

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as raised:
        cli_main(argv)
    line = one_error_line(capsys, raised.value.code, "error:", "-h)", status=2)
    assert "usage:" not in line and not (tmp_path / "o").exists()


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                                                                 "can't allocate memory: you tried to allocate 21474836480 bytes.")])
def test_running_out_of_memory_is_the_documented_line(error, capsys, tmp_path, monkeypatch):
    """Reference: torch's CPU allocator raises RuntimeError, not MemoryError (seen in ``register`` of a 0.5 mm scan
    under a 6 GiB address-space limit); both give the out-of-memory line of docs/reliability.md."""
    import DiffDefAtlasLib.cli.main as cli

    from clichecks import one_error_line

    def run(args):
        raise error

    loaded = cli._load("analyze")
    monkeypatch.setattr(cli, "_load", lambda name: (loaded[0], run))
    line = one_error_line(capsys, cli.main(["analyze", str(tmp_path / "f.nii.gz"), "--out", str(tmp_path / "a")]), status=1)
    assert line == f"diffdef-atlas analyze: error: {cli.OUT_OF_MEMORY}"
    from pathlib import Path

    assert cli.OUT_OF_MEMORY in (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text()


def test_itk_warnings_are_silenced_for_the_command_and_restored(capsys, tmp_path, monkeypatch):
    """Reference: SimpleITK's global warning flag, read before, during and after a command."""
    import SimpleITK as sitk

    import DiffDefAtlasLib.cli.main as cli

    seen = []
    loaded = cli._load("analyze")
    original = sitk.ProcessObject.GetGlobalWarningDisplay()
    try:
        sitk.ProcessObject.SetGlobalWarningDisplay(True)
        monkeypatch.setattr(cli, "_load", lambda name: (loaded[0], lambda args: seen.append(sitk.ProcessObject.GetGlobalWarningDisplay()) or 0))
        assert cli.main(["analyze", "f.nii.gz", "--out", str(tmp_path / "a")]) == 0
        assert cli.main(["analyze", "f.nii.gz", "--out", str(tmp_path / "a"), "--debug"]) == 0
        assert seen == [False, True] and sitk.ProcessObject.GetGlobalWarningDisplay()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(original)
