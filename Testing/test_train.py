"""Training stages: resumable checkpoints, loss logs, the MP stage, and (slow) DistributedDataParallel with gloo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from DiffDefAtlasLib.train.checkpoints import LossLog, latest_checkpoint, list_checkpoints, save_checkpoint
from DiffDefAtlasLib.train.data import synthetic_fields
from DiffDefAtlasLib.train.recipes import draft_card
from DiffDefAtlasLib.train.stages import AutoencoderObjective, StageSettings, train_autoencoder, train_diffusion


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks train fastest on one thread (two threads on a busy 2-core machine are many times slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _fields():
    return synthetic_fields(12, 2, shape=(24, 32), seed=1)


def _settings(work, steps, **kw):
    return StageSettings(work_dir=work, steps=steps, batch_size=2, device="cpu", progress=False, checkpoint_every=2, log_every=1, **kw)


def _ae_state(work):
    return latest_checkpoint(work, "autoencoder")[1]["objective"]


def test_resume_continues_from_last_complete_checkpoint(tmp_path):
    """Reference: an uninterrupted 4-step run; an interrupted one (stopped after its first step by the wall-time
    limit, with a half-written checkpoint left behind as a killed writer would) resumed to step 4 must give the same
    weights and the same loss log."""
    fields = _fields()
    card, _ = draft_card("synthetic2d", fields)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train_autoencoder(fields, _settings(straight, 4), card)
    first = train_autoencoder(fields, _settings(interrupted, 4, max_minutes=0.0), card)
    assert first["stopped_early"] and first["step"] == 1
    (interrupted / ".autoencoder_step0000002.pt.abc.part.pt").write_bytes(b"half a checkpoint")
    assert latest_checkpoint(interrupted, "autoencoder")[0] == 1
    train_autoencoder(fields, _settings(interrupted, 4), card)
    a, b = _ae_state(straight), _ae_state(interrupted)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    rows_a = LossLog(straight, "autoencoder").rows()
    rows_b = LossLog(interrupted, "autoencoder").rows()
    assert [r["step"] for r in rows_b] == ["1", "2", "3", "4"]
    np.testing.assert_allclose([float(r["loss"]) for r in rows_a], [float(r["loss"]) for r in rows_b], rtol=1e-4)


def test_checkpoints_keep_newest_and_skip_unreadable(tmp_path):
    """Reference: the steps written; a corrupt newest file falls back to the previous checkpoint."""
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, "diffusion", step, {"w": torch.full((2,), float(step))})
    assert [s for s, _ in list_checkpoints(tmp_path, "diffusion")] == [2, 3]
    list_checkpoints(tmp_path, "diffusion")[-1][1].write_bytes(b"garbage")
    step, state = latest_checkpoint(tmp_path, "diffusion")
    assert step == 2 and float(state["w"][0]) == 2.0


def test_diffusion_stage_learns_and_exports(tmp_path):
    """Reference: the loss of the first logged steps; after training the denoising loss must be lower."""
    from DiffDefAtlasLib.generate import load_generator
    from DiffDefAtlasLib.train.stages import export_model
    from DiffDefAtlasLib.imageio import write_image

    fields = _fields()
    card, files = draft_card("synthetic2d", fields)
    train_autoencoder(fields, _settings(tmp_path, 2), card)
    train_diffusion(fields, _settings(tmp_path, 40, learning_rate=3e-3))
    losses = [float(r["loss"]) for r in LossLog(tmp_path, "diffusion").rows()]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    folder = tmp_path / "model"
    for name, volume in files.items():
        write_image(volume, folder / name)
    exported = export_model(tmp_path, folder)
    assert exported.latent_scale > 0 and exported.training["stages"]["diffusion"]["steps"] == 40
    result = load_generator(folder, "cpu").generate({"age": 50})
    assert result.displacement.shape == (2, 48, 64)


def test_a_two_level_autoencoder_runs_through_every_stage(tmp_path, capsys):
    """``--autoencoder-channels 8,16`` (one level fewer): the latent is half the velocity grid instead of a quarter,
    the later stages take its shape from the card, and the exported model generates on the output grid."""
    from DiffDefAtlasLib.cli.main import main
    from DiffDefAtlasLib.generate import load_generator
    from DiffDefAtlasLib.train.stages import load_draft

    work, folder = tmp_path / "work", tmp_path / "model"
    common = ["--model", "synthetic2d", "--work", str(work), "--quiet", "--threads", "1"]
    assert main(["train", "--stage", "autoencoder", "--steps", "2", "--autoencoder-channels", "8,16", *common]) == 0
    card = load_draft(work)
    velocity_shape = card.grids["velocity"]["shape"]
    assert card.autoencoder["channels"] == [8, 16] and card.latent_shape[1:] == [int(np.ceil(s / 2)) for s in velocity_shape]
    assert main(["train", "--stage", "diffusion", "--steps", "2", *common]) == 0
    assert main(["train", "--stage", "export", "--no-mp", "--export-to", str(folder), *common]) == 0
    generator = load_generator(folder, "cpu")
    assert generator.card.latent_shape[1:] == card.latent_shape[1:]
    assert generator.generate({"age": 50}).displacement.shape[1:] == tuple(generator.output_grid.shape)
    assert main(["train", "--stage", "autoencoder", "--steps", "2", "--autoencoder-channels", "8", *common]) != 0
    assert "two or more" in capsys.readouterr().err
    assert main(["train", "--stage", "autoencoder", "--steps", "2", "--autoencoder-channels", "8,12", *common]) != 0
    assert "multiple of 8" in capsys.readouterr().err
    # resuming with other channels would load mismatched weights: refused, and the draft card is kept
    assert main(["train", "--stage", "autoencoder", "--steps", "4", *common]) != 0
    assert "use a new work folder" in capsys.readouterr().err
    assert load_draft(work).autoencoder["channels"] == [8, 16]


def test_a_model_with_a_trend_codes_around_it_through_every_stage(tmp_path, monkeypatch):
    """A recipe naming a trend: the autoencoder stage fits it (reference: numpy least squares on the stored fields),
    writes its maps, sets the velocity scale from the residual, and the exported generator adds it for each
    condition; an atlas with the conditions unset starts from the training mean."""
    from DiffDefAtlasLib.cli.main import main
    from DiffDefAtlasLib.generate import load_generator
    from DiffDefAtlasLib.train.recipes import RECIPES, cached_fields
    from DiffDefAtlasLib.train.stages import load_draft

    monkeypatch.setattr(RECIPES["synthetic2d"], "trend", {"terms": [["age"], ["sex"]]})
    work, folder = tmp_path / "work", tmp_path / "model"
    common = ["--model", "synthetic2d", "--work", str(work), "--quiet", "--threads", "1"]
    assert main(["train", "--stage", "autoencoder", "--steps", "2", *common]) == 0
    card = load_draft(work)
    fields = cached_fields("synthetic2d", work)
    age = 2.0 * (fields.conditions["age"] - 40.0) / 40.0 - 1.0
    design = np.stack([np.ones(len(fields)), age, fields.conditions["sex"]], 1)
    truth = np.linalg.lstsq(design, fields.velocities.reshape(len(fields), -1).astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(np.load(work / "trend_maps.npy").reshape(2, -1), truth[1:], atol=1e-3)
    residual = fields.velocities.reshape(len(fields), -1) - design @ truth
    assert card.velocity_scale == pytest.approx(2.0 * np.sqrt(np.mean(residual**2)), rel=1e-3)
    assert main(["train", "--stage", "diffusion", "--steps", "2", *common]) == 0
    assert main(["train", "--stage", "export", "--no-mp", "--export-to", str(folder), *common]) == 0
    network = load_generator(folder, "cpu").network
    values = torch.tensor([[0.5, 1.0], [0.0, 0.0]])
    with torch.no_grad():
        mean = network.mean_velocity(2, values, torch.tensor([[True, True], [False, False]])).reshape(2, -1).numpy()
    np.testing.assert_allclose(mean[0], truth[0] + 0.5 * truth[1] + truth[2], atol=1e-3)
    np.testing.assert_allclose(mean[1], fields.velocities.reshape(len(fields), -1).mean(0), atol=1e-3)


def test_morphology_stage_with_random_registration_network(tmp_path):
    """Reference: the Gaussian weights of the neighbourhood computed by hand, and a finite MP loss logged per step."""
    from DiffDefAtlasLib.imageio import write_image
    from DiffDefAtlasLib.register import NetworkConfig, RegistrationNetwork
    from DiffDefAtlasLib.conditions.space import gaussian_weights
    from DiffDefAtlasLib.train.morphology import MorphologySettings, train_morphology

    np.testing.assert_allclose(gaussian_weights(np.array([[0.0, 0.0], [0.3, 0.4]]), np.zeros(2), 0.5), [1.0, np.exp(-0.5)])
    fields = _fields()
    card, files = draft_card("synthetic2d", fields)
    for name, volume in files.items():
        write_image(volume, tmp_path / name)
    train_autoencoder(fields, _settings(tmp_path, 1), card)
    train_diffusion(fields, _settings(tmp_path, 1))
    torch.manual_seed(0)
    registration = RegistrationNetwork(NetworkConfig(spatial_dims=2, channels=(4, 8, 8, 8)))
    result = train_morphology(fields, _settings(tmp_path, 2, learning_rate=1e-4), MorphologySettings(neighbours=3, sampling_steps=2), registration)
    rows = LossLog(tmp_path, "mp").rows()
    assert result["step"] == 2 and len(rows) == 2
    assert all(np.isfinite(float(r["mean_displacement_sq"])) for r in rows)

    # Neighbours identical to the atlas: with the self-registration subtracted the MP term is exactly zero, even for a
    # network that does not map an image onto itself (a constant velocity bias); without it, it is that bias squared.
    from DiffDefAtlasLib.train.morphology import MorphologyObjective, template_on_working_grid
    from DiffDefAtlasLib.train.stages import assemble_network, load_draft

    card = load_draft(tmp_path)
    network = assemble_network(tmp_path, card, use_mp=False)
    torch.nn.init.constant_(registration.velocity_head.conv.bias, 0.3)
    image, mask = template_on_working_grid(card), template_on_working_grid(card, mask=True)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    latents = torch.randn(1, *card.latent_shape)
    terms = {}
    for subtract in (True, False):
        objective = MorphologyObjective(network, registration, card, image, MorphologySettings(neighbours=2, subtract_self_registration=subtract), mask)
        with torch.no_grad():
            atlas = objective.atlas(latents)[2]
            terms[subtract] = float(objective(latents, atlas.unsqueeze(1).repeat(1, 2, 1, 1, 1), torch.ones(1, 2))["mean_displacement_sq"])
    assert terms[True] == 0.0
    assert terms[False] > 1e-3


def test_neighbours_are_drawn_in_proportion_to_their_weights():
    """Reference: the Gaussian weights written out by hand; a subject lacking a condition the target sets (NaN) is never
    drawn, and a condition the target lacks is left out of the distance."""
    from DiffDefAtlasLib.train.morphology import draw_neighbours

    space = np.array([[0.5, 0.0], [0.5, 0.0], [0.6, 0.0], [0.7, np.nan], [0.3, 1.0]])
    rng = np.random.default_rng(0)
    counts = np.bincount(np.concatenate([draw_neighbours(space, 0, 1, 0.1, rng) for _ in range(6000)]), minlength=5)
    expected = np.array([0.0, 1.0, np.exp(-0.5), 0.0, 0.0])
    np.testing.assert_allclose(counts / counts.sum(), expected / expected.sum(), atol=0.02)
    target_lacks_second = np.array([[0.5, np.nan], [0.7, 0.0], [0.5, 1.0]])
    counts = np.bincount(np.concatenate([draw_neighbours(target_lacks_second, 0, 1, 0.1, rng) for _ in range(6000)]), minlength=3)
    expected = np.array([0.0, np.exp(-2.0), 1.0])
    np.testing.assert_allclose(counts / counts.sum(), expected / expected.sum(), atol=0.02)
    # three subjects have non-zero weight (subject 4's is about 1e-23): all three, each once
    assert sorted(draw_neighbours(space, 0, 3, 0.1, rng).tolist()) == [1, 2, 4]
    assert set(draw_neighbours(space, 0, 5, 0.1, rng).tolist()) <= {1, 2, 4}  # more than there are: repeats


def _ddp_worker(rank: int, world: int, port: int, fields: torch.Tensor, noise: torch.Tensor, state: dict, out: dict) -> None:
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from DiffDefAtlasLib.generate.networks import build_autoencoder

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    objective = AutoencoderObjective(build_autoencoder(2), 1e-3)
    objective.load_state_dict(state)
    model = DistributedDataParallel(objective)
    share = slice(rank, None, world)
    model(fields[share], noise[share])["loss"].backward()
    if rank == 0:
        out.update({k: p.grad.clone() for k, p in objective.named_parameters() if p.grad is not None})
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_gradients_match_single_process(tmp_path):
    """Reference: one process computing the gradient on the whole (concatenated) batch; two gloo processes under
    DistributedDataParallel, each on half the batch, must end with the same averaged gradients."""
    import socket

    import torch.multiprocessing as mp

    from DiffDefAtlasLib.generate.networks import build_autoencoder

    torch.manual_seed(0)
    objective = AutoencoderObjective(build_autoencoder(2), 1e-3)
    fields = torch.randn(4, 2, 16, 16)
    noise = torch.randn(4, 4, 4, 4)
    objective(fields, noise)["loss"].backward()
    reference = {k: p.grad.clone() for k, p in objective.named_parameters() if p.grad is not None}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    state = {k: v.clone() for k, v in objective.state_dict().items()}
    mp.spawn(_ddp_worker, args=(2, port, fields, noise, state, out), nprocs=2, join=True)
    assert set(out.keys()) == set(reference)
    for key, grad in reference.items():
        torch.testing.assert_close(out[key], grad, rtol=1e-4, atol=1e-6)
