"""The bundled OASIS-1 axial template and the OASIS field set (cache format, registration of a held-out slice)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from DiffDefAtlasLib.data.oasis import oasis_affine
from DiffDefAtlasLib.population import oasis2d, velocity_to_displacement
from DiffDefAtlasLib.resources import resource_path
from DiffDefAtlasLib.spatial import jacobian_determinant, warp_image


def test_bundled_template_geometry_labels_and_checksums():
    """Reference: the OASIS slice geometry of the data package (oasis_affine), hashlib SHA-256 of the shipped files
    against the JSON description, and anatomical sanity of the labels (ventricles central, inside the brain)."""
    image, mask, labels = oasis2d.load_oasis_template()
    assert image.array.shape == mask.array.shape == labels.array.shape == (176, 208)
    for volume in (image, mask, labels):
        np.testing.assert_allclose(volume.affine, oasis_affine("axial"))
    assert set(np.unique(labels.array)) == {0, 1, 2, 3, 4}
    assert np.array_equal(labels.array > 0, mask.array > 0)
    assert np.all(image.array[mask.array == 0] == 0)
    ventricles = np.argwhere(labels.array == 4).astype(np.float64)
    xy = image.grid.voxel_to_world_points(ventricles)
    assert 500 < len(xy) < 4000  # mm^2 at 1 mm pixels
    assert np.all(np.abs(xy[:, 0]) <= 30) and abs(xy[:, 0].mean()) < 3  # central and about symmetric
    info = oasis2d.oasis_template_info()
    folder = resource_path(oasis2d.TEMPLATE_FOLDER)
    for key, name in info["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == info["sha256"][key]
    assert len(info["training_subjects"]) == 120
    # the template is an average of bias-corrected slices: tissue classes are ordered CSF < GM < WM in intensity
    means = [image.array[labels.array == k].mean() for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]


def test_field_set_loads_from_cache_without_data(tmp_path):
    """Reference: arrays written by hand in the cache format; loading and the train/validation subset must return them."""
    path = oasis2d._fields_path(tmp_path)
    path.parent.mkdir(parents=True)
    n = 5
    velocities = np.random.default_rng(0).normal(size=(n, 2, 88, 104)).astype(np.float32)
    split = np.array(["train", "validation", "train", "train", "validation"])
    conditions = {f"condition_{c}": np.arange(n, dtype=np.float64) + i for i, c in enumerate(("age", "sex", "cdr", "mmse", "etiv", "nwbv"))}
    np.savez(path, subject_ids=np.array([f"OAS1_{i:04d}_MR1" for i in range(n)]), velocities=velocities, split=split, data_loss=np.zeros(n), **conditions)
    fields = oasis2d.build_oasis_fields(cache_dir=tmp_path)
    assert np.array_equal(fields.velocities, velocities)
    assert fields.grid == oasis2d.image_grid().zoomed(2) and fields.image_grid == oasis2d.image_grid()
    validation = fields.subset("validation")
    assert validation.subject_ids == ["OAS1_0001_MR1", "OAS1_0004_MR1"]
    assert np.array_equal(validation.conditions["age"], [1.0, 4.0])
    with pytest.raises(ValueError, match="split"):
        fields.subset("test")


@pytest.mark.data
def test_template_was_built_from_the_training_split(shared_data):
    """Reference: the data package's fixed train/validation split."""
    from DiffDefAtlasLib.data.oasis import oasis_cohort

    train = sorted(s.subject_id for s in oasis_cohort(split="train", data_dir=shared_data).subjects)
    assert oasis2d.oasis_template_info()["training_subjects"] == train


@pytest.mark.data
def test_registration_of_a_validation_slice(shared_data):
    """Reference: the held-out slice itself: the template warped by the fitted exp(v) must match it much better than the
    unwarped template, with a positive Jacobian everywhere."""
    from DiffDefAtlasLib.data.oasis import oasis_cohort

    subject = sorted(s.subject_id for s in oasis_cohort(split="validation", data_dir=shared_data).subjects)[0]
    image, _, _ = oasis2d.load_oasis_template()
    template = torch.from_numpy(image.array)[None, None]
    target = oasis2d.load_slices([subject], shared_data)
    velocities, losses = oasis2d.register_batch(template, target)
    grid = oasis2d.image_grid()
    displacement = velocity_to_displacement(velocities, grid.zoomed(2), grid)
    before = float(((template - target) ** 2).mean())
    after = float(((warp_image(template, displacement, grid) - target) ** 2).mean())
    assert after < 0.6 * before, (after, before)
    assert float(jacobian_determinant(displacement, grid).min()) > 0
