"""Tests of the bundled MNI ICBM152 2009a template (DiffDefAtlasLib.template, Resources/template).

References: nibabel headers and voxels (a reader independent of the library's SimpleITK-based imageio),
SimpleITK resampling, scipy-free numpy arithmetic, an analytic phantom for the ventricle method, and the
original nilearn files when a nilearn wheel or install can be found (``DIFFDEF_NILEARN_WHEEL`` or an
installed ``nilearn``; skipped otherwise).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.resources import resource_path
from DiffDefAtlasLib.template import (
    LABEL_NAMES,
    LATERAL_VENTRICLES,
    TISSUE_CLASSES,
    load_template,
    template_grid,
    template_info,
    working_grid,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_template.py"
MAPS = ("t1", "brain_mask", "labels", *TISSUE_CLASSES)
NILEARN_T1 = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


# ----------------------------------------------------------------------------------------------- helpers ---
def _path(resolution: str, name: str) -> Path:
    return resource_path("template", template_info()["resolutions"][resolution]["files"][name])


def _nib(resolution: str, name: str) -> nib.Nifti1Image:
    return nib.load(str(_path(resolution, name)))


@lru_cache(maxsize=None)
def _raw(resolution: str, name: str) -> np.ndarray:
    """Stored uint8 voxels (scaling not applied), read once with nibabel; read-only."""
    array = np.asarray(_nib(resolution, name).dataobj.get_unscaled())
    array.setflags(write=False)
    return array


def _scaled(resolution: str, name: str) -> np.ndarray:
    """Voxel values as a NIfTI reader sees them: stored values times the header's scl_slope (nibabel)."""
    proxy = _nib(resolution, name).dataobj
    return _raw(resolution, name) * float(proxy.slope) + float(proxy.inter)


def _world(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return points @ affine[:3, :3].T + affine[:3, 3]


def _nilearn_reader():
    """A function member -> bytes reading the nilearn files, or None when no wheel/install is found."""
    location = os.environ.get("DIFFDEF_NILEARN_WHEEL")
    if location:
        path = Path(location)
        if path.suffix == ".whl":
            archive = zipfile.ZipFile(path)
            return archive.read
        root = path.parent if (path / "datasets").is_dir() else path
        return lambda member: (root / member).read_bytes()
    spec = importlib.util.find_spec("nilearn")
    if spec is not None and spec.submodule_search_locations:
        root = Path(list(spec.submodule_search_locations)[0]).parent
        return lambda member: (root / member).read_bytes()
    return None


def _load_build_script():
    pytest.importorskip("scipy")
    if not BUILD_SCRIPT.is_file():
        pytest.skip("scripts/build_template.py is not part of this install")
    name = "diffdef_build_template"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BUILD_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


# ---------------------------------------------------------------------------------------- files and grids ---
@pytest.mark.parametrize("resolution", ["1mm", "2mm"])
def test_files_load_with_the_grid_nibabel_reads(resolution):
    """Every listed file exists; load_template's arrays and affines equal nibabel's reading of the same files."""
    template = load_template(resolution)
    volumes = {"t1": template.t1, "brain_mask": template.brain_mask, "labels": template.labels, **template.tissue}
    entry = template_info()["resolutions"][resolution]
    assert set(entry["files"]) == set(MAPS) == set(volumes)
    for name, volume in volumes.items():
        image = _nib(resolution, name)
        assert volume.array.shape == image.shape == tuple(entry["shape"])
        np.testing.assert_allclose(volume.affine, image.affine, atol=1e-6)
        np.testing.assert_allclose(volume.affine, np.array(entry["affine"]), atol=1e-6)
        reference = _raw(resolution, name)
        if name in ("labels", "brain_mask"):
            assert volume.array.dtype == np.uint8
            np.testing.assert_array_equal(volume.array, reference)
        else:
            assert volume.array.dtype == np.float32
            np.testing.assert_allclose(volume.array, reference / 255.0, atol=1e-6)
            assert 0.0 <= volume.array.min() and volume.array.max() <= 1.0
    assert template.grid == template_grid(resolution)


def test_working_grid_divides_by_16_and_covers_the_brain():
    """2 mm grid: sizes divide by 16; every 1 mm brain-mask voxel centre (nibabel affine) lies in its field of view."""
    grid = working_grid()
    assert grid.shape == (80, 96, 80)
    assert all(size % 16 == 0 for size in grid.shape)
    assert grid.spacing == (2.0, 2.0, 2.0)
    mask = _nib("1mm", "brain_mask")
    points = _world(np.argwhere(_raw("1mm", "brain_mask") > 0).astype(float), mask.affine)
    ijk = _world(points, np.linalg.inv(grid.affine))
    assert ijk.min() >= -0.5 and (ijk <= np.array(grid.shape) - 0.5).all()
    # The brain does not touch the edge of the 2 mm grid except at the bottom (the source volume stops at z = -72).
    mask2 = _raw("2mm", "brain_mask")
    assert not mask2[[0, -1]].any() and not mask2[:, [0, -1]].any() and not mask2[:, :, -1].any()


@pytest.mark.parametrize("name", MAPS)
def test_2mm_maps_equal_simpleitk_resampling_of_1mm_maps(name):
    """Reference: SimpleITK Resample of the 1 mm file onto the 2 mm file's grid (linear; nearest for labels/mask)."""
    fine = sitk.ReadImage(str(_path("1mm", name)))
    coarse = sitk.ReadImage(str(_path("2mm", name)))
    nearest = name in ("labels", "brain_mask")
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    resampled = sitk.Resample(fine, coarse, sitk.Transform(), interpolator, 0.0)
    expected = sitk.GetArrayFromImage(resampled)
    found = sitk.GetArrayFromImage(coarse)
    if nearest:
        np.testing.assert_array_equal(found, expected)
    else:
        np.testing.assert_allclose(found, expected, atol=1e-5)


def test_load_template_returns_read_only_cached_arrays_and_checks_resolution():
    """Arrays are shared between calls but cannot be written; a bad resolution is a DiffDefInputError."""
    first, second = load_template("2mm"), load_template("2mm")
    assert first.t1 is not second.t1 and first.t1.array is second.t1.array
    with pytest.raises(ValueError):
        first.t1.array[0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        first.tissue["gm"].array[...] = 0.0
    with pytest.raises(TypeError):
        first.tissue["gm"] = first.t1  # type: ignore[index]
    with pytest.raises(DiffDefInputError, match="3mm"):
        load_template("3mm")


def test_label_names_match_template_json_and_licence_is_shipped():
    """LABEL_NAMES equals template.json; the MNI copyright notice travels with the files."""
    info = template_info()
    assert {int(k): v["name"] for k, v in info["labels"].items()} == LABEL_NAMES
    assert LABEL_NAMES[LATERAL_VENTRICLES] == "lateral_ventricles"
    for filename in ("LICENSE", "NOTICE.txt"):
        text = resource_path("template", filename).read_text(encoding="utf-8")
        assert "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre" in " ".join(text.split())
    total = sum(p.stat().st_size for p in resource_path("template").iterdir() if p.is_file())
    assert total < 8e6


# ------------------------------------------------------------------------------------------------- tissue ---
@pytest.mark.parametrize("resolution", ["1mm", "2mm"])
def test_tissue_probabilities_sum_to_one_in_the_mask_and_labels_follow_them(resolution):
    """Reference: numpy sums and argmax of the stored maps (read with nibabel)."""
    mask = _raw(resolution, "brain_mask") > 0
    probabilities = np.stack([_scaled(resolution, k) for k in TISSUE_CLASSES])
    total = probabilities.sum(axis=0)
    np.testing.assert_allclose(total[mask], 1.0, atol=2e-6)
    assert not total[~mask].any()
    labels = _raw(resolution, "labels")
    assert not labels[~mask].any() and labels[mask].min() >= 1
    tissue = labels != LATERAL_VENTRICLES
    np.testing.assert_array_equal(labels[mask & tissue], np.argmax(probabilities, axis=0)[mask & tissue] + 1)
    t1 = _scaled(resolution, "t1")
    means = [t1[labels == k].mean() for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]  # T1 contrast: CSF < GM < WM


# --------------------------------------------------------------------------------------------- ventricles ---
@pytest.mark.parametrize("resolution", ["1mm", "2mm"])
def test_ventricle_volume_matches_voxel_count_and_is_plausible(resolution):
    """Reference: voxel count x nibabel header zooms; left/right split by the sign of x from nibabel's affine."""
    image = _nib(resolution, "labels")
    voxel_ml = float(np.prod(image.header.get_zooms()[:3])) / 1000.0
    points = np.argwhere(_raw(resolution, "labels") == LATERAL_VENTRICLES).astype(float)
    x = _world(points, image.affine)[:, 0]
    left, right = np.count_nonzero(x < 0) * voxel_ml, np.count_nonzero(x > 0) * voxel_ml
    assert np.count_nonzero(x == 0) == 0  # the mid-sagittal plane belongs to neither side
    reported = template_info()["resolutions"][resolution]["lateral_ventricles_ml"]
    assert reported["left"] == pytest.approx(left, abs=1e-3)
    assert reported["right"] == pytest.approx(right, abs=1e-3)
    assert reported["total"] == pytest.approx(left + right, abs=2e-3)
    assert abs(left - right) <= 0.1 * max(left, right)
    assert 10.0 <= left + right <= 30.0  # ICBM152 2009 young-adult lateral ventricles


def test_ventricle_label_lies_in_dark_csf_inside_the_mask():
    """Reference: the stored CSF/GM/WM probabilities and T1 (nibabel), SimpleITK connected components."""
    labels = _raw("1mm", "labels")
    ventricle = labels == LATERAL_VENTRICLES
    mask = _raw("1mm", "brain_mask") > 0
    assert ventricle.any() and not (ventricle & ~mask).any()
    csf, gm, wm = (_raw("1mm", k).astype(int) for k in TISSUE_CLASSES)
    assert np.mean((csf > gm) & (csf > wm), where=ventricle) >= 0.98
    t1 = _raw("1mm", "t1").astype(float)
    threshold = template_info()["lateral_ventricles"]["dark_t1_threshold"]
    assert np.mean(t1[ventricle] < threshold) >= 0.98
    assert t1[ventricle].mean() < 0.6 * t1[labels == 2].mean()
    # One connected piece per hemisphere, centred where the lateral ventricles are in MNI space.
    image = _nib("1mm", "labels")
    x = _world(np.argwhere(ventricle).astype(float), image.affine)
    for side in (-1, 1):
        half = ventricle.copy()
        half[(np.arange(half.shape[0]) * image.affine[0, 0] + image.affine[0, 3]) * side <= 0] = False
        components = sitk.ConnectedComponent(sitk.GetImageFromArray(half.astype(np.uint8)), False)
        assert sitk.GetArrayFromImage(components).max() == 1
        centre = x[x[:, 0] * side > 0].mean(axis=0)
        assert 8 <= side * centre[0] <= 22 and -30 <= centre[1] <= 0 and 5 <= centre[2] <= 25


def test_ventricle_method_recovers_analytic_ellipsoids():
    """Reference: voxel counts of two analytic ellipsoids in a phantom with a larger sulcal CSF blob and midline CSF."""
    build = _load_build_script()
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-60.0, -90.0, -40.0)
    shape = (121, 141, 101)
    x, y, z = build.world_axes(shape, affine)
    brain = ((x / 58) ** 2 + ((y + 20) / 68) ** 2 + (z / 38) ** 2) <= 1.0
    ventricles = {}
    for side in (-1, 1):
        ventricles[side] = ((x - side * 15) / 6) ** 2 + ((y + 10) / 25) ** 2 + ((z - 18) / 8) ** 2 <= 1.0
    sulcus = ((np.abs(x) - 35) ** 2 + (y + 60) ** 2 + (z + 20) ** 2) <= 12**2  # bigger than a ventricle
    midline = (x == 0) & (np.abs(y + 10) <= 20) & (z >= 5) & (z <= 30)  # touches neither ventricle
    csf_region = ventricles[-1] | ventricles[1] | sulcus | midline
    maps = {
        "brain_mask": brain.astype(np.uint8),
        "csf": np.where(brain & csf_region, 255, 0).astype(np.uint8),
        "gm": np.where(brain & ~csf_region, 255, 0).astype(np.uint8),
        "wm": np.zeros(shape, np.uint8),
    }
    t1 = np.where(brain, np.where(csf_region, 60, 165), 0).astype(np.uint8)
    left, right, record = build.lateral_ventricles(t1, maps, affine)
    for found, side in ((left, -1), (right, 1)):
        expected = ventricles[side]
        assert abs(int(found.sum()) - int(expected.sum())) <= 0.01 * expected.sum()
        assert (found & expected).sum() >= 0.99 * expected.sum()
        assert not (found & (sulcus | midline)).any()
    assert record["dark_t1_threshold"] == pytest.approx((60 + 165) / 2)


def test_build_method_reproduces_the_shipped_labels():
    """Re-running the documented derivation (scripts/build_template.py) on the shipped 1 mm maps gives its labels."""
    build = _load_build_script()
    t1 = _raw("1mm", "t1")
    maps = {k: _raw("1mm", k) for k in ("brain_mask", *TISSUE_CLASSES)}
    affine = _nib("1mm", "t1").affine
    labels = build.tissue_labels(maps)
    left, right, record = build.lateral_ventricles(t1, maps, affine)
    labels[left | right] = LATERAL_VENTRICLES
    np.testing.assert_array_equal(labels, _raw("1mm", "labels"))
    reported = template_info()["lateral_ventricles"]["dark_t1_threshold"]
    assert record["dark_t1_threshold"] == pytest.approx(reported, abs=1e-3)


# ------------------------------------------------------------------------------------------ nilearn source ---
def test_1mm_maps_match_the_nilearn_originals():
    """Reference: the nilearn files themselves (zip + nibabel), compared at the same world coordinates."""
    read = _nilearn_reader()
    if read is None:
        pytest.skip("no nilearn wheel or install (set DIFFDEF_NILEARN_WHEEL to a nilearn .whl)")
    sources = {}
    for key in ("t1", "gm", "wm"):
        image = nib.Nifti1Image.from_bytes(gzip.decompress(read(NILEARN_T1.replace("_t1_", f"_{key}_"))))
        sources[key] = (np.asarray(image.dataobj.get_unscaled()), image.affine)
    original_t1, original_affine = sources["t1"]
    shipped = _nib("1mm", "t1")
    offset = _world(np.zeros((1, 3)), np.linalg.inv(original_affine) @ shipped.affine)[0]
    assert np.allclose(offset, np.round(offset)) and np.allclose(shipped.affine[:3, :3], original_affine[:3, :3])
    start = np.round(offset).astype(int)
    window = tuple(slice(s, s + n) for s, n in zip(start, shipped.shape))
    np.testing.assert_array_equal(_raw("1mm", "t1"), original_t1[window])
    assert np.count_nonzero(original_t1) == np.count_nonzero(original_t1[window])  # nothing of the brain cropped
    mask = _raw("1mm", "brain_mask") > 0
    np.testing.assert_array_equal(mask, original_t1[window] > 0)
    for key in ("gm", "wm"):
        np.testing.assert_array_equal(_raw("1mm", key)[mask], sources[key][0][window][mask])
    info = json.loads(resource_path("template", "template.json").read_text(encoding="utf-8"))
    np.testing.assert_allclose(np.array(info["source"]["grid"]["affine"]), original_affine)
