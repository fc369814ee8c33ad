"""Preprocessing: reorientation, N4, registration to the template, skull stripping, cache and failure report."""

from __future__ import annotations

import argparse
import csv
import json
import time

import numpy as np
import pytest

from DiffDefAtlasLib.data.cohort import parse_cohort, read_cohort
from DiffDefAtlasLib.data.preprocess import (
    PrepareSettings,
    n4_bias_correct,
    preprocess_volume,
    reorient_to_ras,
    zero_background_fraction,
)
from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.imageio import Volume, read_image


def test_reorient_to_ras_matches_nibabel():
    """Reference: nibabel's ``as_closest_canonical`` on the same array and PSR affine (the IXI T1 orientation)."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    array = rng.random((6, 7, 5)).astype(np.float32)
    affine = np.array([[0, 0, 1.2, -10], [-0.9375, 0, 0, 20], [0, 0.9375, 0, -30], [0, 0, 0, 1]], dtype=np.float64)
    reference = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    result = reorient_to_ras(Volume(array, affine))
    np.testing.assert_array_equal(result.array, np.asarray(reference.dataobj))
    np.testing.assert_allclose(result.affine, reference.affine)
    assert nib.aff2axcodes(result.affine) == ("R", "A", "S")


def test_n4_removes_a_smooth_bias():
    """Reference: an analytic multiplicative bias exp(0.4 x / R) on a uniform sphere; N4 must cut the coefficient of
    variation inside the sphere by more than half."""
    n = 64
    grid = np.indices((n, n, n)).astype(np.float32) - (n - 1) / 2
    radius = np.sqrt((grid**2).sum(axis=0))
    sphere = radius < 24
    bias = np.exp(0.4 * grid[0] / 24)
    rng = np.random.default_rng(1)
    image = np.where(sphere, 100.0 * bias, 0.0) + rng.normal(0, 1.0, sphere.shape) * sphere
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    corrected = n4_bias_correct(Volume(image.astype(np.float32), affine), shrink_mm=4.0, iterations=(50, 50))
    cov = lambda a: a[sphere].std() / a[sphere].mean()  # noqa: E731
    assert cov(corrected.array) < 0.5 * cov(image)
    np.testing.assert_allclose(corrected.affine, affine)


def test_zero_background_fraction_and_settings():
    """Reference: a hand-built image with 75 % zero background; the settings' allowed values."""
    array = np.zeros((4, 4, 4), np.float32)
    array[:2, :2] = 1.0
    assert zero_background_fraction(Volume(array, np.eye(4))) == pytest.approx(0.75)
    with pytest.raises(DiffDefInputError, match="skull_strip must be one of"):
        PrepareSettings(skull_strip="maybe")
    assert PrepareSettings().as_dict() != PrepareSettings(n4=True).as_dict()


def test_cache_key_changes_with_content_and_settings(tmp_path):
    """Reference: the key's definition: input bytes and settings (a copy with the same bytes keeps the key)."""
    from DiffDefAtlasLib.data.prepare import cache_key

    (tmp_path / "a.nii.gz").write_bytes(b"one")
    (tmp_path / "b.nii.gz").write_bytes(b"one")
    (tmp_path / "c.nii.gz").write_bytes(b"two")
    cohort = parse_cohort("subject_id,image\na,a.nii.gz\nb,b.nii.gz\nc,c.nii.gz\n", base_dir=tmp_path)
    settings = PrepareSettings()
    key = cache_key(cohort["a"], settings, "auto")
    assert cache_key(cohort["b"], settings, "auto") == key
    assert cache_key(cohort["c"], settings, "auto") != key
    assert cache_key(cohort["a"], PrepareSettings(n4=True), "auto") != key
    assert cache_key(cohort["a"], PrepareSettings(skull_strip="yes"), "auto") != key


def test_add_measured_must_be_a_volume(tmp_path):
    """Reference: the list of measured volume names."""
    from DiffDefAtlasLib.data.prepare import prepare_cohort

    (tmp_path / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "cohort.csv").write_text("subject_id,image\na,a.nii.gz\n")
    with pytest.raises(DiffDefInputError, match="not a measured volume"):
        prepare_cohort(tmp_path / "cohort.csv", tmp_path / "out", add_measured=["age"], progress=False)


# --- real scans ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ixi_run(tmp_path_factory, shared_data):
    """Prepare one real IXI T1 plus a corrupt file, twice (the second run should come from the cache)."""
    from DiffDefAtlasLib.data.prepare import prepare_cohort

    root = tmp_path_factory.mktemp("ixi")
    (root / "broken.nii.gz").write_bytes(b"not an image")
    t1 = shared_data / "ixi_3d" / "t1" / "IXI568_t1.nii.gz"
    (root / "cohort.csv").write_text(f"subject_id,image,age,sex\nIXI568,{t1},33.69,F\nbroken,broken.nii.gz,50,M\n")
    out = root / "out"
    start = time.perf_counter()
    first = prepare_cohort(root / "cohort.csv", out, progress=False, add_measured=["ventricle_volume_ml"])
    first_seconds = time.perf_counter() - start
    start = time.perf_counter()
    second = prepare_cohort(root / "cohort.csv", out, progress=False, add_measured=["ventricle_volume_ml"])
    second_seconds = time.perf_counter() - start
    return root, out, first, second, first_seconds, second_seconds


@pytest.mark.data
def test_prepare_real_ixi_t1(ixi_run):
    """Reference: the template (the prepared scan lies on its working grid and correlates with its T1 inside the brain),
    the README (IXI T1s are skull-stripped, so no stripping), and template.json's ventricle volume scaled by det(A)."""
    from DiffDefAtlasLib.template import load_template, template_info

    root, out, first, *_ = ixi_run
    assert first.prepared == ["IXI568"]
    template = load_template("2mm")
    image = read_image(out / "IXI568" / "image.nii.gz")
    assert image.grid == template.grid
    brain = template.brain_mask.array > 0
    assert np.corrcoef(image.array[brain], template.t1.array[brain])[0, 1] > 0.45
    mask = read_image(out / "IXI568" / "brain_mask.nii.gz").array > 0
    assert np.percentile(image.array[mask], 99) == pytest.approx(1.0, abs=0.02)
    dice = 2 * (mask & brain).sum() / (mask.sum() + brain.sum())
    assert dice > 0.85  # the scan's own brain overlaps the template brain after the affine
    record = json.loads((out / "IXI568" / "prepare.json").read_text())
    assert record["skull_stripped"] is False and record["outside_brain_fraction"] < 0.1
    matrix = np.array(record["template_to_subject_ras"])
    expected = template_info()["resolutions"]["2mm"]["label_volumes_ml"]["lateral_ventricles"] * abs(np.linalg.det(matrix[:3, :3]))
    assert record["volumes"]["ventricle_volume_ml"] == pytest.approx(expected, rel=1e-3)


@pytest.mark.data
def test_failure_report_and_prepared_table(ixi_run):
    """Reference: the cohort table: the corrupt file fails with its name in the reason, the good subject is still
    prepared and is the only row of cohort_prepared.csv (read back with the csv module)."""
    root, out, first, *_ = ixi_run
    assert list(first.failed) == ["broken"] and "broken.nii.gz" in first.failed["broken"]
    assert not first.ok
    with open(out / "cohort_prepared.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["subject_id"] for r in rows] == ["IXI568"]
    assert rows[0]["image"] == "IXI568/image.nii.gz" and rows[0]["sex"] == "F"
    record = json.loads((out / "IXI568" / "prepare.json").read_text())
    assert float(rows[0]["ventricle_volume_ml"]) == pytest.approx(record["volumes"]["ventricle_volume_ml"], rel=1e-5)
    prepared = read_cohort(out / "cohort_prepared.csv")
    assert prepared.condition_names == ["age", "sex", "ventricle_volume_ml"]
    assert (out / "cohort_prepared_condition_stats.json").is_file()
    report = json.loads((out / "prepare_report.json").read_text())
    assert "broken" in report["failed"]


@pytest.mark.data
def test_second_run_is_served_from_the_cache(ixi_run):
    """Reference: the report's counters (nothing recomputed) and the wall time of the first run."""
    root, out, first, second, first_seconds, second_seconds = ixi_run
    assert second.prepared == [] and second.cached == ["IXI568"]
    assert second_seconds < 0.3 * first_seconds
    assert second.csv_path == first.csv_path


@pytest.mark.data
def test_cli_prepare_reports_failures(ixi_run, capsys):
    """Reference: the exit-status contract (1 when a subject failed) and the cached subject (no new work)."""
    from DiffDefAtlasLib.data.prepare_cli import add_prepare_arguments, run_prepare

    root, out, *_ = ixi_run
    parser = argparse.ArgumentParser()
    add_prepare_arguments(parser)
    args = parser.parse_args(["--cohort", str(root / "cohort.csv"), "--out", str(out), "--no-progress"])
    assert run_prepare(args) == 1
    captured = capsys.readouterr()
    assert "cached 1" in captured.err and "FAILED broken" in captured.err


@pytest.mark.data
def test_skull_stripping_of_a_synthetic_head(shared_data):
    """Reference: the true brain of a BrainWeb head (labels CSF, GM, WM): a T1-like head is synthesised from all 12
    labels (fat, muscle, skull...), rotated by 12 degrees, shifted and stored in the IXI voxel order (PSR).
    Preprocessing must detect the skull, and its brain mask must overlap the true brain (carried by the estimated
    registration) with Dice > 0.9. Labels are also checked against SimpleITK nearest-neighbour resampling."""
    import SimpleITK as sitk

    from DiffDefAtlasLib.data.label_datasets import list_label_maps, load_label_map
    from DiffDefAtlasLib.data.synthesis import synthesise_image
    from DiffDefAtlasLib.imageio import volume_from_sitk, volume_to_sitk
    from DiffDefAtlasLib.imaging.affine import ras_matrix_to_sitk
    from DiffDefAtlasLib.template import load_template

    subject = load_label_map(list_label_maps("brainweb")[0], with_image=False)
    head = synthesise_image(subject.labels, "brainweb", seed=0).image
    angle = np.deg2rad(12.0)
    motion = np.eye(4)
    motion[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    motion[:3, 3] = [5.0, -20.0, 15.0]
    # RAS -> PSR voxel order: new axes (i, j, k) = (-A, +S, +R) like the IXI T1s.
    permute = lambda a: np.flip(np.transpose(a, (1, 2, 0)), axis=0)  # noqa: E731
    to_old = np.zeros((4, 4))
    n = subject.labels.array.shape
    to_old[0, 2] = 1.0  # old i (R) = new k
    to_old[1, 0] = -1.0  # old j (A) = n_j - 1 - new i
    to_old[1, 3] = n[1] - 1
    to_old[2, 1] = 1.0  # old k (S) = new j
    to_old[3, 3] = 1.0
    affine = motion @ subject.labels.affine @ to_old
    image = Volume(np.ascontiguousarray(permute(head.array)), affine)
    labels = Volume(np.ascontiguousarray(permute(subject.labels.array)), affine)

    prepared = preprocess_volume(image, labels, labels_convention="brainweb")
    assert prepared.skull_stripped and prepared.outside_fraction > 0.2
    template = load_template("2mm")
    reference_grid = volume_to_sitk(template.t1)
    brain = prepared.brain_mask.array > 0
    true_brain = prepared.labels.array > 0
    dice = 2 * (brain & true_brain).sum() / (brain.sum() + true_brain.sum())
    print(f"skull stripping Dice {dice:.3f}")
    assert dice > 0.9
    reference = volume_from_sitk(
        sitk.Resample(volume_to_sitk(labels), reference_grid, ras_matrix_to_sitk(prepared.matrix), sitk.sitkNearestNeighbor, 0),
        dtype=None,
    )
    from DiffDefAtlasLib.data.labelmaps import to_diffdef_labels

    agreement = np.mean(to_diffdef_labels(reference.array, "brainweb") == prepared.labels.array)
    assert agreement > 0.99
    # The applied motion (12 degrees about x) is recovered: BrainWeb lies in MNI stereotaxic space already.
    rotation = prepared.matrix[:3, :3] / np.cbrt(np.linalg.det(prepared.matrix[:3, :3]))
    recovered = np.degrees(np.arctan2(rotation[2, 1], rotation[1, 1]))
    print(f"recovered rotation {recovered:.1f} degrees, label agreement {agreement:.4f}")
    assert recovered == pytest.approx(12.0, abs=4.0)
