"""Dataset adapters (OASIS-1 2D, IXI, label maps) and volume measurements."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest

from DiffDefAtlasLib.data.label_datasets import list_label_maps, load_label_map, voxelmorph_affine
from DiffDefAtlasLib.data.labelmaps import CONVENTIONS, to_diffdef_labels
from DiffDefAtlasLib.data.measure import (
    MNI_VENTRICLE_BOX,
    central_csf_volume,
    guess_convention,
    propagated_volumes,
    tissue_volumes,
)
from DiffDefAtlasLib.data.oasis import oasis_affine, split_subjects
from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.imageio import Volume, read_image

# --- measurements (no shared data needed) -------------------------------------------------------------------


def test_tissue_volumes_against_voxel_counting():
    """Reference: voxel counts times the voxel volume (1.5 x 2 x 2.5 mm = 7.5 uL), by hand."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(20, 22, 18)).astype(np.uint8)
    affine = np.diag([1.5, 2.0, 2.5, 1.0])
    volumes = tissue_volumes(Volume(labels, affine))
    ml = 7.5 / 1000.0
    counts = {c: int((labels == c).sum()) for c in range(5)}
    assert volumes["gm_volume_ml"] == pytest.approx(counts[2] * ml)
    assert volumes["ventricle_volume_ml"] == pytest.approx(counts[4] * ml)
    icv = sum(counts[c] for c in (1, 2, 3, 4)) * ml
    assert volumes["intracranial_volume_ml"] == pytest.approx(icv)
    assert volumes["gm_fraction"] == pytest.approx(counts[2] * ml / icv)
    assert volumes["csf_fraction"] == pytest.approx((counts[1] + counts[4]) * ml / icv)
    fast = tissue_volumes(Volume(np.minimum(labels, 3), affine), "fast")
    assert np.isnan(fast["ventricle_volume_ml"])
    with pytest.raises(DiffDefInputError, match="3D label map"):
        tissue_volumes(Volume(labels[:, :, 0], np.eye(3)))


def test_propagated_volumes_scale_with_the_affine_determinant():
    """Reference: analytic: an affine with determinant d maps a region of volume V to one of volume d V; a Jacobian
    determinant weights each voxel."""
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:5] = 2
    labels[5:6] = 4
    template = Volume(labels, np.diag([2.0, 2.0, 2.0, 1.0]))
    base = propagated_volumes(template)
    assert base["gm_volume_ml"] == pytest.approx(300 * 8 / 1000)
    rotation = np.eye(4)
    rotation[:3, :3] = np.diag([1.2, 0.9, 1.1]) @ np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    rotation[:3, 3] = [5, -3, 2]
    scaled = propagated_volumes(template, rotation)
    assert scaled["gm_volume_ml"] == pytest.approx(base["gm_volume_ml"] * 1.2 * 0.9 * 1.1)
    jacobian = np.ones(labels.shape)
    jacobian[5] = 2.0
    weighted = propagated_volumes(template, None, jacobian)
    assert weighted["ventricle_volume_ml"] == pytest.approx(2 * base["ventricle_volume_ml"])
    assert weighted["gm_volume_ml"] == pytest.approx(base["gm_volume_ml"])


def test_central_csf_volume_counts_only_inside_the_box():
    """Reference: a hand-built label map in MNI-like coordinates with CSF blocks inside and outside the box."""
    labels = np.zeros((100, 100, 100), np.uint8)
    affine = np.eye(4)
    affine[:3, 3] = -50.0  # voxel i -> x = i - 50
    labels[50:60, 50:60, 50:60] = 1  # x, y, z in [0, 9]: inside
    labels[0:5, 0:5, 0:5] = 1  # far corner: outside
    labels[50:52, 50:52, 50:52] = 2  # GM is not CSF
    assert central_csf_volume(Volume(labels, affine)) == pytest.approx((1000 - 8) / 1000)
    assert MNI_VENTRICLE_BOX[0] == (-25.0, 25.0)


def test_guess_convention():
    """Reference: the id ranges of each convention."""
    assert guess_convention([0, 1, 2, 3]) == "fast"
    assert guess_convention([0, 1, 2, 3, 4]) == "diffdef"
    assert guess_convention(range(12)) == "brainweb"
    assert guess_convention([0, 2, 41, 43]) == "aseg"


# --- OASIS ---------------------------------------------------------------------------------------------------


def test_split_is_deterministic_stratified_and_disjoint():
    """Reference: the split rule (per age decade, the first round(0.2 n) by hash), independent of input order."""
    rng = random.Random(1)
    ages = {f"S{i:03d}": rng.uniform(60, 99) for i in range(97)}
    split = split_subjects(ages)
    shuffled = dict(sorted(ages.items(), key=lambda kv: rng.random()))
    assert split_subjects(shuffled) == split
    assert set(split) == set(ages)
    for decade in (60, 70, 80, 90):
        members = [s for s, a in ages.items() if int(a // 10 * 10) == decade]
        assert sum(split[s] == "validation" for s in members) == round(0.2 * len(members))
    assert split_subjects(ages, salt="other") != split


@pytest.mark.data
def test_oasis_cohort_split_and_images(shared_data, tmp_path):
    """Reference: subjects.csv read with the csv module, the JPEG read with SimpleITK (read_image), and README facts
    (150 subjects, axial 176 x 208)."""
    from DiffDefAtlasLib.data.oasis import export_oasis_cohort, load_oasis_slice, oasis_cohort

    with open(shared_data / "oasis1_2d" / "subjects.csv", newline="") as handle:
        rows = {r["subject_id"]: r for r in csv.DictReader(handle)}
    train, val = oasis_cohort(split="train"), oasis_cohort(split="validation")
    assert (len(train), len(val)) == (120, 30)
    assert not set(train.subject_ids) & set(val.subject_ids)
    assert set(train.subject_ids) | set(val.subject_ids) == set(rows)
    assert oasis_cohort(split="validation").subject_ids == val.subject_ids  # fixed
    subject = train.subjects[0]
    row = rows[subject.subject_id]
    assert subject.conditions["age"] == float(row["age"])
    assert subject.conditions["sex"] == {"F": 0.0, "M": 1.0}[row["sex"]]
    assert subject.conditions["nwbv"] == float(row["nwbv"])

    volume = load_oasis_slice(subject.subject_id, "axial")
    sitk_volume = read_image(subject.image)
    assert volume.array.shape == (176, 208)
    np.testing.assert_allclose(volume.array * 255, sitk_volume.array, atol=0.5)
    np.testing.assert_allclose(volume.affine[:2, :2], sitk_volume.affine[:2, :2])  # same orientation as SimpleITK
    # Anterior at the top of the picture: row 0 has the largest A coordinate.
    assert (volume.affine @ [0, 0, 1])[1] > (volume.affine @ [0, 207, 1])[1]
    np.testing.assert_allclose(volume.affine @ [87.5, 103.5, 1], [0, 0, 1])

    paths = export_oasis_cohort(tmp_path / "oasis")
    from DiffDefAtlasLib.data.cohort import read_cohort

    exported = read_cohort(paths["validation"])
    assert exported.subject_ids == val.subject_ids
    back = read_image(exported.subjects[0].image)
    np.testing.assert_allclose(back.array, load_oasis_slice(exported.subject_ids[0]).array, atol=1e-6)
    np.testing.assert_allclose(back.affine, oasis_affine("axial"))
    with pytest.raises(DiffDefInputError, match="unknown OASIS view"):
        oasis_cohort(view="oblique")


def test_central_dark_area_on_a_synthetic_slice():
    """Reference: a hand-made slice (brain 0.8, a 10 x 12 px dark square in the centre, 0.5 mm pixels): 30 mm^2."""
    from DiffDefAtlasLib.data.oasis import central_dark_area

    array = np.zeros((176, 208), np.float32)
    array[20:156, 20:188] = 0.8
    array[80:90, 90:102] = 0.1
    assert central_dark_area(Volume(array, np.diag([0.5, 0.5, 1.0]))) == pytest.approx(120 * 0.25)
    with pytest.raises(DiffDefInputError, match="2D slice"):
        central_dark_area(Volume(np.zeros((4, 4, 4)), np.eye(4)))


@pytest.mark.data
def test_oasis_ventricle_proxy_grows_with_age(shared_data):
    """Reference: the issue's measured fact: a central dark-area proxy grows with age (r ~ 0.4, ~ 1 %/yr)."""
    from DiffDefAtlasLib.data.ixi import fit_trend
    from DiffDefAtlasLib.data.oasis import central_dark_area, load_oasis_slice, oasis_cohort

    cohort = oasis_cohort()
    ages = [s.conditions["age"] for s in cohort]
    areas = [central_dark_area(load_oasis_slice(s.subject_id)) for s in cohort]
    trend = fit_trend(ages, areas)
    assert trend.n == 150 and 0.25 < trend.r < 0.55
    assert 0.5 < 100 * trend.slope / np.mean(areas) < 3.0


# --- IXI -----------------------------------------------------------------------------------------------------


@pytest.mark.data
def test_ixi_subjects_and_segmentation_against_nibabel(shared_data):
    """Reference: nibabel reading of the FAST segmentation and voxel counting with numpy; README counts (6 T1, 13 seg)."""
    import nibabel as nib

    from DiffDefAtlasLib.data.ixi import ixi_subjects, ixi_t1_cohort, load_ixi_segmentation

    assert len(ixi_subjects("t1")) == 6 and len(ixi_subjects("seg")) == 13
    cohort = ixi_t1_cohort()
    assert cohort.condition_names == ["age", "sex"] and len(cohort) == 6
    assert all(s.image.is_file() for s in cohort)

    subject = ixi_subjects("seg")[0]
    seg = load_ixi_segmentation(subject)
    reference = nib.load(str(subject.files["seg"]))
    data = np.asarray(reference.dataobj)
    np.testing.assert_array_equal(seg.array, data)
    np.testing.assert_allclose(seg.affine, reference.affine, atol=1e-5)
    volumes = tissue_volumes(seg, "fast")
    voxel_ml = float(np.prod(reference.header.get_zooms()[:3])) / 1000
    assert volumes["csf_volume_ml"] == pytest.approx((data == 1).sum() * voxel_ml)
    assert volumes["gm_volume_ml"] == pytest.approx((data == 2).sum() * voxel_ml)
    assert volumes["wm_volume_ml"] == pytest.approx((data == 3).sum() * voxel_ml)
    # Central CSF with world coordinates computed by nibabel's affine.
    ijk = np.argwhere(data == 1)
    xyz = nib.affines.apply_affine(reference.affine, ijk)
    inside = np.all([(xyz[:, d] >= lo) & (xyz[:, d] <= hi) for d, (lo, hi) in enumerate(MNI_VENTRICLE_BOX)], axis=0)
    assert central_csf_volume(seg, "fast") == pytest.approx(inside.sum() * voxel_ml)


@pytest.mark.data
def test_ixi_age_trends(shared_data):
    """Reference: the issue's measured facts over the 13 FAST segmentations: central CSF grows with age (r ~ 0.7,
    ~ +0.4 mL/yr) and the GM fraction falls (r ~ -0.6)."""
    from DiffDefAtlasLib.data.ixi import ixi_age_trends, ixi_tissue_measurements

    trends = ixi_age_trends(ixi_tissue_measurements(include_pve=False))
    central, gm = trends["central_csf_ml"], trends["gm_fraction"]
    assert central.n == 13 and gm.n == 13
    assert 0.55 < central.r < 0.85 and 0.25 < central.slope < 0.6
    assert -0.75 < gm.r < -0.45 and gm.slope < 0


# --- label maps ----------------------------------------------------------------------------------------------


@pytest.mark.data
def test_label_map_sources_and_conventions_cover_all_ids(shared_data):
    """Reference: labels_present.csv (every id in the SynthSeg maps) and the README id lists of the other sources."""
    maps = list_label_maps()
    counts = {source: sum(m.source == source for m in maps) for source in ("synthseg", "brainweb", "voxelmorph", "bert")}
    assert counts == {"synthseg": 20, "brainweb": 20, "voxelmorph": 1, "bert": 1}
    with open(shared_data / "synthseg_labels" / "labels_present.csv", newline="") as handle:
        synthseg_ids = {int(r["label_id"]) for r in csv.DictReader(handle)}
    assert synthseg_ids <= set(CONVENTIONS["aseg"])
    assert set(range(12)) <= set(CONVENTIONS["brainweb"])
    with pytest.raises(DiffDefInputError, match="unknown label-map source"):
        list_label_maps("oasis")


@pytest.mark.data
def test_voxelmorph_corrected_affine_and_bert(shared_data):
    """Reference: FreeSurfer label semantics: Left-* structures (2, 3) lie at negative x (left), Right-* (41, 42) at
    positive x, the brain stem (16) below the lateral ventricles (4, 43). The stored identity affine violates this."""
    for info in list_label_maps("voxelmorph") + list_label_maps("bert"):
        subject = load_label_map(info)
        labels = subject.labels
        assert subject.image is not None and subject.image.array.shape == labels.array.shape

        coarse = labels.array[::2, ::2, ::2]

        def centre(*ids):
            ijk = np.argwhere(np.isin(coarse, ids)) * 2.0
            return labels.grid.voxel_to_world_points(ijk.mean(axis=0))

        left, right = centre(2, 3), centre(41, 42)
        assert left[0] < -10 and right[0] > 10
        assert centre(16)[2] < centre(4, 43)[2] - 15
        assert centre(4, 43)[1] > centre(16)[1] - 40  # ventricles not far posterior of the brain stem
        classes = to_diffdef_labels(coarse, "aseg")
        assert set(np.unique(classes)) == {0, 1, 2, 3, 4}
    vm = load_label_map(list_label_maps("voxelmorph")[0], with_image=False)
    np.testing.assert_allclose(vm.labels.affine, voxelmorph_affine(vm.labels.array.shape))
    stored = read_image(list_label_maps("voxelmorph")[0].labels_path, dtype=None)
    np.testing.assert_allclose(stored.affine, np.eye(4))  # what the file says


@pytest.mark.parametrize(("load", "expected"), [("oasis", "oasis1_2d/subjects.csv"), ("ixi", "ixi_3d/subjects.csv")])
def test_missing_data_names_the_path_searched_and_the_variable(load, expected, tmp_path, monkeypatch):
    """Reference: an empty folder given through DIFFDEF_ATLAS_DATA; the message names it and the variable."""
    from DiffDefAtlasLib.data import ixi, oasis
    from DiffDefAtlasLib.errors import DiffDefInputError
    from DiffDefAtlasLib.resources import missing_data_message

    empty = tmp_path / "data"
    empty.mkdir()
    module = {"oasis": oasis, "ixi": ixi}[load]
    with pytest.raises(DiffDefInputError) as raised:
        module._root(empty)
    assert str(empty / expected) in str(raised.value) and "DIFFDEF_ATLAS_DATA" in str(raised.value)
    monkeypatch.setenv("DIFFDEF_ATLAS_DATA", str(empty))
    monkeypatch.setattr("DiffDefAtlasLib.resources._PACKAGE_DIR", tmp_path / "nowhere" / "a" / "b")
    message = missing_data_message("data", expected)
    assert str(empty / expected) in message and str(tmp_path / "nowhere" / "shared" / "data" / expected) in message
