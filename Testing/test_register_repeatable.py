"""The same registration run twice on one machine gives the same result (docs/registration.md, "Repeatability").

The source of the variation was the MI affine's random metric sample: SimpleITK reads seed 0 as its wall clock, so
every run drew another sample (affines up to 0.065 apart, label Dice between two runs down to 0.92 on IXI259). ITK's
multi-threaded metric sums still vary in the last digits (up to 1e-6 in the affine with 2 threads), so the bitwise
check runs the affine on one ITK thread.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from heads import brainweb_head

from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.imaging.affine import AffineSettings, affine_register
from DiffDefAtlasLib.imaging.head import shrink_to_spacing
from DiffDefAtlasLib.register import register_to_atlas
from DiffDefAtlasLib.template import load_template

#: Largest differences between two affines with several ITK threads: linear part (dimensionless; 9e-7 measured with
#: 2 threads) and translation (mm; 1.4e-5 mm seen in a CI dry run). Unseeded, two runs differed by 0.09 or more.
THREADED_LINEAR_TOLERANCE = 1e-5
THREADED_TRANSLATION_TOLERANCE_MM = 1e-3


@pytest.fixture(scope="module")
def template():
    return load_template("2mm")


@pytest.fixture(scope="module")
def brain(shared_data):
    """A skull-stripped BrainWeb brain (synthesised T1, moved 15 degrees and 45 mm), block-averaged to 2 mm."""
    _, stripped, _ = brainweb_head(neck_mm=0)
    return shrink_to_spacing(stripped, 2.0)


@pytest.fixture
def one_itk_thread():
    """ITK on one thread for the test (its multi-threaded sums are not bitwise repeatable)."""
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    yield
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def test_the_same_registration_twice_is_bitwise_identical(brain, template, one_itk_thread):
    first, second = (register_to_atlas(brain, template.t1, atlas_labels=template.labels, refine=3, device="cpu") for _ in range(2))
    assert first.summary["alignment"]["method"] == "moments"  # the path with the random metric sample
    assert np.array_equal(first.affine, second.affine), np.abs(first.affine - second.affine).max()
    assert np.array_equal(first.displacement, second.displacement)
    assert np.array_equal(first.warped.array, second.warped.array)
    assert np.array_equal(first.labels_on_moving.array, second.labels_on_moving.array)


def test_threaded_affines_agree_within_a_tiny_tolerance(brain, template):
    first, second = (affine_register(template.t1, brain, fixed_mask=template.brain_mask) for _ in range(2))
    difference = np.abs(first - second)
    assert difference[:3, :3].max() < THREADED_LINEAR_TOLERANCE
    assert difference[:3, 3].max() < THREADED_TRANSLATION_TOLERANCE_MM


def test_seed_zero_is_refused():
    """SimpleITK would read 0 as "seed from the wall clock"."""
    with pytest.raises(DiffDefInputError, match="wall clock"):
        AffineSettings(seed=0)


def test_a_cuda_run_uses_deterministic_cudnn_and_restores_it():
    """Checked without a GPU: the flags are set inside the block and restored after; a CPU run changes nothing."""
    import torch

    from DiffDefAtlasLib.register.engine import deterministic_cudnn

    cudnn = torch.backends.cudnn
    before = cudnn.deterministic, cudnn.benchmark
    with deterministic_cudnn(torch.device("cuda")):
        assert (cudnn.deterministic, cudnn.benchmark) == (True, False)
    assert (cudnn.deterministic, cudnn.benchmark) == before
    with deterministic_cudnn(torch.device("cpu")):
        assert (cudnn.deterministic, cudnn.benchmark) == before
