"""register_to_atlas on the bundled 3D network and the 2 mm template.

References: a known smooth SVF (its exact inverse exp(-v) is the ground truth), the template's own labels, and the
loss itself (refinement must lower it).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.imageio import Volume
from DiffDefAtlasLib.register import RegistrationCancelled, load_registration_network, register_to_atlas
from DiffDefAtlasLib.metrics import dice_per_label
from DiffDefAtlasLib.register.refine import refine_velocity
from DiffDefAtlasLib.spatial import integrate_velocity, warp_image, warp_labels
from DiffDefAtlasLib.template import load_template


@pytest.fixture(scope="module")
def known_pair():
    """The template deformed by exp(v) for a smooth random v of a few mm, with its labels; truth u = exp(-v)."""
    template = load_template("2mm")
    grid = template.grid
    generator = torch.Generator().manual_seed(3)
    control = torch.randn(1, 3, 6, 7, 6, generator=generator) * 4.0
    velocity = torch.nn.functional.interpolate(control, size=grid.shape, mode="trilinear", align_corners=True)
    forward = integrate_velocity(velocity, grid)
    truth = integrate_velocity(-velocity, grid)
    t1 = torch.as_tensor(np.array(template.t1.array, np.float32))[None, None]
    labels = torch.as_tensor(np.array(template.labels.array, np.int64))[None, None]
    moving = Volume(warp_image(t1, forward, grid)[0, 0].numpy().astype(np.float32), template.t1.affine)
    moving_labels = Volume(warp_labels(labels, forward, grid)[0, 0].numpy().astype(np.int32), template.t1.affine)
    result = register_to_atlas(moving, template.t1, atlas_labels=template.labels, moving_labels=moving_labels, affine=False, device="cpu")
    return template, moving, moving_labels, truth[0].numpy(), result


def test_recovers_a_known_deformation(known_pair):
    """The network alone brings the field closer to the truth and raises Dice by > 0.05 over no registration.

    (Measured with the first 847-iteration model: error 2.96 mm for a 3.37 mm deformation, Dice 0.60 -> 0.72;
    with 50 refinement steps the error falls to 1.61 mm and Dice to 0.81; too slow for this test. The bundled
    3200-iteration model, trained on template pairs too: error 2.63 mm.)"""
    template, moving, moving_labels, truth, result = known_pair
    brain = np.array(template.brain_mask.array) > 0
    size = np.linalg.norm(truth, axis=0)[brain].mean()
    error = np.linalg.norm(result.displacement - truth, axis=0)[brain].mean()
    assert size > 1.5
    # 0.95: the network alone must remove a part of the deformation that no smoothing error explains. The bundled
    # model leaves 2.63 / 3.37 = 0.78 of it (see the docstring); an untrained network (zero field) leaves 1.0.
    assert error < 0.95 * size
    before = dice_per_label(np.asarray(moving_labels.array), np.asarray(template.labels.array))["mean"]
    after = result.summary["dice"]["registered"]["mean"]
    assert after > before + 0.05


def test_no_folding_and_regular_jacobian(known_pair):
    """The SVF makes a diffeomorphism: no det J <= 0 in the brain, std log det J under the 0.30 target."""
    summary = known_pair[-1].summary
    assert summary["folding_ratio"] <= 0.0005
    assert summary["log_detj_std_brain"] < 0.30
    assert float(np.asarray(known_pair[-1].jacobian.array).min()) > 0


def test_lambda_map_within_prior_support(known_pair):
    """λ(x) is written on the working grid and lies strictly inside (0, 1), the Beta prior's support."""
    lam = known_pair[-1].lambda_map
    assert lam is not None and lam.array.shape == (80, 96, 80)
    assert float(lam.array.min()) > 0 and float(lam.array.max()) < 1


def test_labels_on_moving_match_the_moving_labels(known_pair):
    """Atlas labels carried onto the scan through exp(-v) overlap the scan's own labels better than unmoved labels."""
    template, moving, moving_labels, truth, result = known_pair
    carried = dice_per_label(np.asarray(result.labels_on_moving.array), np.asarray(moving_labels.array))["mean"]
    unmoved = dice_per_label(np.asarray(template.labels.array), np.asarray(moving_labels.array))["mean"]
    assert carried > unmoved + 0.03


def test_refinement_lowers_the_loss(known_pair):
    """Adam steps on the velocity decrease the registration loss from the network's starting point."""
    template, moving, _, _, _ = known_pair
    from DiffDefAtlasLib.register.engine import prepare_network_inputs
    from DiffDefAtlasLib.imaging.resampling import to_tensor

    net = load_registration_network(3, device="cpu")
    mask = torch.as_tensor(np.array(template.brain_mask.array, np.float32))[None, None]
    fixed, moving_t = prepare_network_inputs(to_tensor(template.t1), to_tensor(moving), mask, template.grid)
    with torch.no_grad():
        _, velocity, lam = net.predict_displacement(moving_t, fixed, template.grid)
    _, history = refine_velocity(net, velocity, lam, moving_t, fixed, mask, template.grid, steps=15)
    assert history[-1] < history[0] - 1e-3


def test_skull_outside_the_mask_changes_little(known_pair):
    """A bright shell 6-12 mm outside the brain (a skull) moves the brain's displacement by under half a voxel.

    (0.97 mm with the first 847-iteration model; 1.23 mm after template pairs without shells were added, which is why
    half of them now carry one; 0.74 mm with the bundled model.)"""
    from scipy.ndimage import binary_dilation

    template, moving, _, _, result = known_pair
    brain = np.array(template.brain_mask.array) > 0
    shell = binary_dilation(brain, iterations=6) & ~binary_dilation(brain, iterations=3)
    skull = np.array(moving.array)
    skull[shell] = 1.0
    with_skull = register_to_atlas(Volume(skull, moving.affine), template.t1, affine=False, device="cpu")
    change = np.linalg.norm(with_skull.displacement - result.displacement, axis=0)[brain].mean()
    assert change < 1.0  # 1 mm: half a voxel of the 2 mm working grid, below what a user can see in the atlas


def test_progress_and_cancel():
    """Progress fractions rise from 0 to 1; a cancel request stops the run with RegistrationCancelled."""
    template = load_template("2mm")
    crop = Volume(np.array(template.t1.array[24:56, 32:64, 24:56]), template.t1.affine.copy())
    crop.affine[:3, 3] += np.diag(template.t1.affine)[:3] * [24, 32, 24]
    seen = []
    register_to_atlas(crop, crop, affine=False, device="cpu", refine=2, progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    polls = []

    def cancel_after_the_first_step() -> bool:
        polls.append(True)
        return len(polls) > 1

    with pytest.raises(RegistrationCancelled, match="cancelled"):
        register_to_atlas(crop, crop, affine=False, device="cpu", cancel=cancel_after_the_first_step)
    assert len(polls) == 2


def test_dimension_mismatch_is_an_input_error():
    """A 2D scan against a 3D atlas is refused with a one-line message."""
    template = load_template("2mm")
    with pytest.raises(DiffDefInputError, match="2D"):
        register_to_atlas(Volume(np.ones((32, 32), np.float32), np.eye(3)), template.t1)
