"""Training loop for the registration network: resumable, with atomic checkpoints.

Example:
    >>> network = train_registration(sampler, NetworkConfig(), TrainConfig(minutes=60), "ckpt.pt")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..atomic import atomic_path
from ..spatial import integrate_velocity, warp_image
from .engine import prepare_network_inputs
from .losses import LossConfig, RegistrationLoss
from .network import NetworkConfig, RegistrationNetwork, coarse_grid, pool_to_coarse


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings: stop after ``iterations`` or ``minutes`` of wall time (this run), checkpoint every
    ``checkpoint_minutes``."""

    iterations: int = 100000
    minutes: float = 60.0
    learning_rate: float = 1e-3
    checkpoint_minutes: float = 3.0
    log_every: int = 25
    seed: int = 0


def coarse_pair_loss(
    network: RegistrationNetwork,
    criterion: RegistrationLoss,
    fixed_in: torch.Tensor,
    moving_in: torch.Tensor,
    mask: torch.Tensor,
    grid,
    moving_onehot: torch.Tensor | None = None,
    fixed_onehot: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor]:
    """The training loss of a batch of prepared pairs (:func:`~.engine.prepare_network_inputs`), measured on the
    network's coarse field grid with the images average-pooled (about 8x cheaper in 3D than at full resolution).

    Returns ``(loss, terms, displacement, coarse mask)``, the displacement and the mask on the coarse grid.
    """
    velocity, lam = network.forward_coarse(moving_in, fixed_in)
    factor = network.config.downsample
    field_grid = coarse_grid(grid, factor)
    displacement = integrate_velocity(velocity, field_grid, network.config.integration_steps)
    warped = warp_image(pool_to_coarse(moving_in, factor), displacement, field_grid)
    coarse_mask = (pool_to_coarse(mask, factor) > 0.5).float()
    warped_labels = warp_image(pool_to_coarse(moving_onehot, factor), displacement, field_grid) if moving_onehot is not None else None
    loss, terms = criterion(
        warped, pool_to_coarse(fixed_in, factor), coarse_mask, velocity, lam, field_grid,
        warped_labels=warped_labels, fixed_labels=pool_to_coarse(fixed_onehot, factor),
    )
    terms["lambda_mean"] = float(lam.detach().mean())
    return loss, terms, displacement, coarse_mask


def _save_checkpoint(path: Path, network: RegistrationNetwork, optimiser, iteration: int, elapsed_s: float, loss_config: LossConfig, history: list) -> None:
    state = {
        "network": network.state_dict(),
        "optimiser": optimiser.state_dict(),
        "iteration": iteration,
        "elapsed_s": elapsed_s,
        "network_config": json.dumps(network.config.to_dict()),
        "loss_config": json.dumps(loss_config.to_dict()),
        "history": json.dumps(history[-2000:]),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint (tensors and plain values only: ``weights_only=True``)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def network_from_checkpoint(path: str | Path) -> tuple[RegistrationNetwork, dict]:
    """Rebuild the network of a checkpoint; also returns the checkpoint dictionary."""
    state = load_checkpoint(path)
    network = RegistrationNetwork(NetworkConfig.from_dict(json.loads(state["network_config"])))
    network.load_state_dict(state["network"])
    return network, state


def train_registration(
    sampler,
    network_config: NetworkConfig,
    train_config: TrainConfig,
    checkpoint: str | Path,
    loss_config: LossConfig = LossConfig(),
    log: Callable[[str], None] = print,
) -> RegistrationNetwork:
    """Train (or resume from ``checkpoint`` when it exists) on pairs from ``sampler.sample()``; returns the network.

    The checkpoint holds the network, the Adam state, the iteration count and the accumulated wall time, and is
    replaced atomically, so killing the process at any moment loses at most ``checkpoint_minutes`` of work.
    """
    checkpoint = Path(checkpoint)
    torch.manual_seed(train_config.seed)
    network = RegistrationNetwork(network_config)
    optimiser = torch.optim.Adam(network.parameters(), lr=train_config.learning_rate)
    iteration, elapsed_before, history = 0, 0.0, []
    if checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        network.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
        iteration, elapsed_before = int(state["iteration"]), float(state["elapsed_s"])
        history = json.loads(state["history"])
        log(f"resumed from {checkpoint.name} at iteration {iteration} ({elapsed_before / 60:.1f} min trained)")
    criterion = RegistrationLoss(loss_config)
    grid = sampler.grid
    network.train()
    start = time.perf_counter()
    last_save = start
    running: dict[str, float] = {}
    while iteration < train_config.iterations and (time.perf_counter() - start) < train_config.minutes * 60:
        pair = sampler.sample()
        fixed_in, moving_in = prepare_network_inputs(pair.fixed, pair.moving, pair.mask, grid)
        loss, terms, _, _ = coarse_pair_loss(network, criterion, fixed_in, moving_in, pair.mask, grid, pair.moving_onehot, pair.fixed_onehot)
        lambda_mean = terms.pop("lambda_mean")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        iteration += 1
        for key, value in terms.items():
            running[key] = running.get(key, 0.0) + value
        running["count"] = running.get("count", 0.0) + 1
        if "dice_loss" in terms:
            running["dice_count"] = running.get("dice_count", 0.0) + 1
        if iteration % train_config.log_every == 0:
            count = running.pop("count")
            dice_count = running.pop("dice_count", 0.0)
            means = {k: (v / dice_count if k == "dice_loss" else v / count) for k, v in running.items() if k != "dice_loss" or dice_count}
            means["lambda_mean"] = lambda_mean
            elapsed = elapsed_before + time.perf_counter() - start
            history.append({"iteration": iteration, "minutes": round(elapsed / 60, 2), **{k: round(v, 5) for k, v in means.items()}})
            log(json.dumps(history[-1]))
            running = {}
        if time.perf_counter() - last_save > train_config.checkpoint_minutes * 60:
            _save_checkpoint(checkpoint, network, optimiser, iteration, elapsed_before + time.perf_counter() - start, loss_config, history)
            last_save = time.perf_counter()
    _save_checkpoint(checkpoint, network, optimiser, iteration, elapsed_before + time.perf_counter() - start, loss_config, history)
    log(f"stopped at iteration {iteration}")
    network.eval()
    return network
