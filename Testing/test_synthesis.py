"""SynthSeg-style label-to-image synthesis and label conventions."""

from __future__ import annotations

import numpy as np
import pytest

from DiffDefAtlasLib.data.labelmaps import (
    CONVENTIONS,
    has_ventricles,
    merge_ventricles_into_csf,
    to_diffdef_labels,
)
from DiffDefAtlasLib.data.synthesis import random_bias_field, sample_label_intensities, synthesise_image
from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.imageio import Volume
from DiffDefAtlasLib.metrics import dice_per_class


def block_labels(shape=(40, 44, 36)) -> np.ndarray:
    """Six aseg labels in large blocks (background, CSF, cortex, WM, ventricle, an extra-cerebral class)."""
    labels = np.zeros(shape, dtype=np.int32)
    ids = [24, 3, 2, 4, 507]
    for n, label in enumerate(ids):
        labels[(n + 1) * shape[0] // 6 : (n + 2) * shape[0] // 6] = label
    return labels


def test_deterministic_per_seed():
    """Reference: the same seed must give bit-identical images and parameters; another seed must not."""
    labels = block_labels()
    a = synthesise_image(labels, "aseg", seed=7, blur_sigma_mm=1.0)
    b = synthesise_image(labels, "aseg", seed=7, blur_sigma_mm=1.0)
    c = synthesise_image(labels, "aseg", seed=8, blur_sigma_mm=1.0)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.params.means == b.params.means
    assert not np.allclose(a.image, c.image)
    assert a.image.dtype == np.float32 and a.image.min() >= 0


def test_labelwise_statistics_match_sampled_parameters():
    """Reference: the drawn Gaussian parameters; per label the sample mean lies within 5 standard errors of the drawn
    mean and the sample std within 5 % of the drawn std (no bias, noise or blur)."""
    labels = block_labels()
    result = synthesise_image(labels, "aseg", seed=3, bias_strength=0, noise_std=0)
    for label, mean in result.params.means.items():
        values = result.image[labels == label].astype(np.float64)
        std = result.params.stds[label]
        if mean < 5 * std:  # clipping at 0 would bias the statistics
            continue
        assert abs(values.mean() - mean) < 5 * std / np.sqrt(values.size)
        assert values.std() == pytest.approx(std, rel=0.05)


def test_t1_like_ordering_and_contrast_agnostic_mode():
    """Reference: T1 contrast ordering (CSF < GM < WM) for every seed; SynthSeg's uniform [0, 1] means otherwise."""
    ids = [0, 2, 3, 4, 24, 507]
    for seed in range(20):
        means, _ = sample_label_intensities(ids, "aseg", np.random.default_rng(seed), t1_like=True)
        assert means[0] < means[24] < means[3] < means[2]
        assert means[4] < means[3]
    flips = 0
    for seed in range(40):
        means, _ = sample_label_intensities(ids, "aseg", np.random.default_rng(seed), t1_like=False)
        assert all(0.0 <= m <= 1.0 for m in means.values())
        flips += means[3] > means[2]
    assert 5 < flips < 35  # cortex brighter than WM about half of the time


def test_bias_field_is_smooth_positive_and_multiplicative():
    """Reference: the image without bias (same seed, noise off) times the returned field equals the biased image;
    an analytic bound: the log field's second differences are < 2 % of its range (white noise: about 200 %)."""
    labels = block_labels((48, 48, 48))
    plain = synthesise_image(labels, "aseg", seed=5, bias_strength=0, noise_std=0)
    biased = synthesise_image(labels, "aseg", seed=5, bias_strength=0.4, noise_std=0)
    field = biased.params.bias_field
    assert field.shape == labels.shape and field.min() > 0
    np.testing.assert_allclose(biased.image, np.maximum(plain.image, 0) * field, rtol=1e-5, atol=1e-6)
    log = np.log(field.astype(np.float64))
    assert log.std() > 0.05  # not trivially flat
    # A smooth field has tiny second differences; white noise of the same spread would have ~2x its range.
    for axis in range(3):
        assert np.abs(np.diff(log, n=1, axis=axis)).max() < 0.1 * np.ptp(log)
        assert np.abs(np.diff(log, n=2, axis=axis)).max() < 0.02 * np.ptp(log)


def test_noise_and_blur():
    """Reference: the noise-free image of the same seed (the noise is drawn last) and the unblurred variance."""
    labels = block_labels()
    clean = synthesise_image(labels, "aseg", seed=2, bias_strength=0, noise_std=0)
    noisy = synthesise_image(labels, "aseg", seed=2, bias_strength=0, noise_std=0.05)
    inside = clean.image > 0.3  # away from the clip at 0
    assert (noisy.image - clean.image)[inside].std() == pytest.approx(0.05, rel=0.05)
    uniform = np.full((30, 30, 30), 2, dtype=np.int32)
    sharp = synthesise_image(uniform, "aseg", seed=2, bias_strength=0, noise_std=0)
    blurred = synthesise_image(uniform, "aseg", seed=2, bias_strength=0, noise_std=0, blur_sigma_mm=1.5)
    # White noise blurred by a Gaussian of sigma s keeps 1 / (2 sqrt(pi) s)^(3/2) of its std (about 0.16 here).
    expected = (2 * np.sqrt(np.pi) * 1.5) ** -1.5
    assert blurred.image.std() / sharp.image.std() == pytest.approx(expected, rel=0.15)
    assert blurred.image.mean() == pytest.approx(sharp.image.mean(), rel=1e-3)


def test_volume_in_volume_out_and_bad_input():
    """Reference: the input's affine is kept; 1D labels and fractional labels are refused."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    result = synthesise_image(Volume(block_labels(), affine), "aseg", seed=0)
    np.testing.assert_array_equal(result.image.affine, affine)
    with pytest.raises(DiffDefInputError, match="2D or 3D"):
        synthesise_image(np.zeros(5, np.int32), "aseg")
    with pytest.raises(DiffDefInputError, match="integer label values"):
        synthesise_image(np.full((4, 4), 0.5), "aseg")
    with pytest.raises(DiffDefInputError, match="not part of the 'fast' convention"):
        synthesise_image(np.full((4, 4), 7), "fast")
    field = random_bias_field((8, 9), np.random.default_rng(0))
    assert field.shape == (8, 9)


def test_label_conventions():
    """Reference: FreeSurfer's LUT names (2/41 WM, 3/42 cortex, 4/43 lateral and 5/44 inferior lateral ventricles,
    14/15 3rd/4th ventricles, 24 CSF, 17 hippocampus), BrainWeb's table (1 CSF, 2 GM, 3 WM, 7 skull) and SynthSeg's
    README (136/163 ventricles, 5xx extra-cerebral)."""
    aseg = np.array([0, 2, 41, 3, 42, 4, 43, 5, 44, 14, 15, 24, 17, 16, 136, 163, 507, 251])
    expected = np.array([0, 3, 3, 2, 2, 4, 4, 4, 4, 1, 1, 1, 2, 3, 4, 4, 0, 3])
    np.testing.assert_array_equal(to_diffdef_labels(aseg, "aseg"), expected)
    np.testing.assert_array_equal(to_diffdef_labels(np.arange(12), "brainweb"), [0, 1, 2, 3, 0, 0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(to_diffdef_labels(np.arange(4), "fast"), [0, 1, 2, 3])
    assert has_ventricles("aseg") and has_ventricles("diffdef")
    assert not has_ventricles("fast") and not has_ventricles("brainweb")
    np.testing.assert_array_equal(merge_ventricles_into_csf(np.array([0, 1, 4, 3])), [0, 1, 1, 3])
    with pytest.raises(DiffDefInputError, match="unknown label convention"):
        to_diffdef_labels(aseg, "freesurfer7")
    assert CONVENTIONS["synthseg"] is CONVENTIONS["aseg"]


def test_dice_per_class():
    """Reference: Dice = 2|A and B| / (|A| + |B|) counted by hand."""
    a = np.array([1, 1, 1, 2, 2, 0])
    b = np.array([1, 1, 2, 2, 2, 3])
    scores = dice_per_class(a, b, classes=(1, 2, 3, 4))
    assert scores[1] == pytest.approx(2 * 2 / 5)
    assert scores[2] == pytest.approx(2 * 2 / 5)
    assert scores[3] == 0.0 and np.isnan(scores[4])
