"""The registration network and its bundled weights (references: the spatial core's resampling and integration)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.register import NetworkConfig, RegistrationNetwork, load_registration_network, read_model_card
from DiffDefAtlasLib.register.network import coarse_grid, upsample_field
from DiffDefAtlasLib.register.weights import model_folder
from DiffDefAtlasLib.spatial import Grid, integrate_velocity, resample_displacement

SMALL = NetworkConfig(spatial_dims=2, channels=(4, 8, 8, 8), features=4, lambda_hidden=4, working_spacing_mm=1.0)


def test_upsample_field_matches_resample_displacement():
    """Reference: the spatial core's grid_sample-based resample_displacement from the coarse grid to the fine one."""
    grid = Grid((32, 48, 16), np.array([[0, 2.0, 0, -30], [-2.0, 0, 0, 40], [0, 0, 2.0, -10], [0, 0, 0, 1]]))
    coarse = coarse_grid(grid, 2)
    field = torch.randn(1, 3, *coarse.shape, dtype=torch.float64)
    assert torch.allclose(upsample_field(field, 2), resample_displacement(field, coarse, grid), atol=1e-8)


def test_forward_shapes_and_lambda_support():
    """Velocity (B, ndim, *shape) and λ (B, 1, *shape) on the working grid; λ lies strictly inside (0, 1)."""
    net = RegistrationNetwork(SMALL)
    moving, fixed = torch.rand(2, 1, 32, 48), torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        velocity, lam = net(moving, fixed)
    assert velocity.shape == (2, 2, 32, 48) and lam.shape == (2, 1, 32, 48)
    assert float(lam.min()) > 0 and float(lam.max()) < 1


def test_velocity_smoothing_is_a_gaussian_of_the_raw_velocity():
    """Reference: scipy's separable convolution of the unsmoothed network's velocity (same weights) with the Gaussian
    integrated over each voxel (erf differences, 4 sigma tails, normalised), away from the edges; the bundled 3D
    card turns the smoothing on."""
    from dataclasses import replace

    from scipy.ndimage import convolve1d
    from scipy.special import erf

    torch.manual_seed(0)
    raw = RegistrationNetwork(SMALL)
    with torch.no_grad():
        raw.velocity_head.conv.weight.normal_(0.0, 0.3)  # a rough field, so smoothing has something to do
        smooth = RegistrationNetwork(replace(SMALL, velocity_smoothing_voxels=1.0))
        smooth.load_state_dict(raw.state_dict())  # no extra state: older weight files load unchanged
        moving, fixed = torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64)
        v_raw, _ = raw.forward_coarse(moving, fixed)
        v_smooth, _ = smooth.forward_coarse(moving, fixed)
    taps = np.arange(-4, 5, dtype=np.float64)
    kernel = 0.5 * (erf((taps + 0.5) / np.sqrt(2.0)) - erf((taps - 0.5) / np.sqrt(2.0)))
    kernel /= kernel.sum()
    reference = v_raw[0].double().numpy()
    for axis in (1, 2):
        reference = convolve1d(reference, kernel, axis=axis, mode="constant")
    inner = (slice(None), slice(5, -5), slice(5, -5))
    np.testing.assert_allclose(v_smooth[0].double().numpy()[inner], reference[inner], atol=1e-4 * float(v_raw.abs().max()))
    assert float(torch.diff(v_smooth, dim=-1).square().mean()) < 0.5 * float(torch.diff(v_raw, dim=-1).square().mean())
    assert read_model_card(3)["network"]["velocity_smoothing_voxels"] > 0


def test_sizes_must_be_multiples_of_the_total_stride():
    """A 30x48 image cannot pass a network that halves it four times: a clear input error."""
    with pytest.raises(DiffDefInputError, match="multiples of 16"):
        RegistrationNetwork(SMALL)(torch.rand(1, 1, 30, 48), torch.rand(1, 1, 30, 48))


def test_bundled_network_fast_path_agrees_with_fine_integration():
    """Reference: integrate_velocity of forward()'s working-grid velocity (the slow path) vs predict_displacement."""
    net = load_registration_network(2, device="cpu")
    grid = Grid((64, 64), np.diag([1.0, 1.0, 1.0]))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    fixed = ((xx**2 + yy**2) < 0.5).float()[None, None]
    moving = ((xx**2 / 0.8 + yy**2 / 1.2) < 0.5).float()[None, None]
    with torch.no_grad():
        velocity, _ = net(moving, fixed)
        slow = integrate_velocity(velocity, grid)
        fast, _, _ = net.predict_displacement(moving, fixed, grid)
    scale = float(slow.abs().max())
    difference = (slow - fast).abs()
    assert scale > 0.5
    assert float(difference.mean()) < 0.02 * scale
    assert float(difference[..., 8:-8, 8:-8].max()) < 0.15 * scale


def test_bundled_network_is_frozen_but_differentiable_in_its_inputs():
    """The generator's MP loss back-propagates through the frozen network into its inputs."""
    net = load_registration_network(2, device="cpu")
    assert not any(p.requires_grad for p in net.parameters())
    moving = torch.rand(1, 1, 32, 32, requires_grad=True)
    velocity, _ = net(moving, torch.rand(1, 1, 32, 32))
    velocity.square().sum().backward()
    assert moving.grad is not None and float(moving.grad.abs().sum()) > 0


@pytest.mark.parametrize("dims", [2, 3])
def test_model_cards_describe_training_and_checksum(dims):
    """Each bundled model card names its training data and architecture, and its sha256 matches the file."""
    import hashlib

    card = read_model_card(dims)
    assert card["network"]["spatial_dims"] == dims
    assert card["training"]["data"]
    data = (model_folder(dims) / card["weights"]["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == card["weights"]["sha256"]
    assert len(data) == card["weights"]["bytes"]


def test_corrupt_weights_are_refused(tmp_path):
    """A flipped byte in the safetensors file fails the checksum with a message naming the file."""
    folder = tmp_path / "registration2d"
    shutil.copytree(model_folder(2), folder)
    card = read_model_card(folder=folder)
    path = folder / card["weights"]["file"]
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DiffDefInputError, match="checksum"):
        load_registration_network(2, folder=folder)


def test_bundled_3d_network_leaves_the_template_on_itself():
    """Reference: the identity. An image registered to itself should not move; atlases are template-contrast images,
    so this is what the morphology-preservation stage relies on. Measured through the public engine at 2 mm."""
    from DiffDefAtlasLib.register.engine import register_to_atlas
    from DiffDefAtlasLib.template import load_template

    template = load_template("2mm")
    result = register_to_atlas(template.t1, template.t1, affine=False, device="cpu")
    displacement = np.asarray(result.displacement, dtype=np.float64)
    inside = np.asarray(template.brain_mask.array) > 0
    length = np.sqrt((displacement**2).sum(0))[inside]
    assert length.mean() < 0.5, f"mean displacement {length.mean():.2f} mm"
    assert np.percentile(length, 95) < 1.0, f"95th percentile {np.percentile(length, 95):.2f} mm"


def test_training_loop_learns_and_resumes(tmp_path):
    """The training loop on pairs whose answer is known: the bundled 2D template deformed by random smooth fields
    (moving) against the template itself (fixed). Trained from scratch, the network must improve the similarity
    (LNCC term) over the first iterations; a second call must resume from the checkpoint's iteration count."""
    from DiffDefAtlasLib.population.oasis2d import load_oasis_template
    from DiffDefAtlasLib.register.train import TrainConfig, load_checkpoint, train_registration
    from DiffDefAtlasLib.register.training_data import OasisPairSampler

    image, mask, _ = load_oasis_template()
    sampler = OasisPairSampler([np.asarray(image.array, np.float32)], image, np.asarray(mask.array) > 0, seed=0, deform_mm=3.0)
    checkpoint = tmp_path / "registration.pt"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_registration(sampler, SMALL, TrainConfig(iterations=60, log_every=20, learning_rate=3e-3), checkpoint, log=lambda _: None)
        history = json.loads(load_checkpoint(checkpoint)["history"])
        assert [h["iteration"] for h in history] == [20, 40, 60]
        assert history[-1]["lncc"] < history[0]["lncc"] - 0.01
        train_registration(sampler, SMALL, TrainConfig(iterations=80, log_every=20, learning_rate=3e-3), checkpoint, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    assert int(load_checkpoint(checkpoint)["iteration"]) == 80


@pytest.mark.data
def test_train_registration_command_trains_resumes_and_exports(shared_data, tmp_path, capsys):
    """``diffdef-atlas train-registration`` (it replaced ``train --stage registration``, which always failed): a few 2D
    iterations on OASIS, resumed from the checkpoint by a second run, exported and loaded back as the registration
    network (reference: the checkpoint's own iteration count and the card's checksum check on loading)."""
    from DiffDefAtlasLib.cli.main import main
    from DiffDefAtlasLib.register import load_registration_network
    from DiffDefAtlasLib.register.train import load_checkpoint

    work, export = tmp_path / "work", tmp_path / "export"
    argv = ["train-registration", "--dims", "2", "--work", str(work), "--threads", "1", "--minutes", "5"]
    assert main([*argv, "--iterations", "2"]) == 0
    assert int(load_checkpoint(work / "checkpoint2d.pt")["iteration"]) == 2
    assert main([*argv, "--iterations", "3", "--export", str(export)]) == 0
    assert int(load_checkpoint(work / "checkpoint2d.pt")["iteration"]) == 3
    network = load_registration_network(2, folder=export)
    assert network.config.spatial_dims == 2 and (export / "template2d.nii.gz").is_file()
    with pytest.raises(SystemExit):  # the old stage is gone: argparse refuses the choice
        main(["train", "--stage", "registration", "--work", str(work)])
