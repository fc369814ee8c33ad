"""The training stages of a generator: ``autoencoder`` -> ``diffusion`` -> (``mp``) -> export.

Each stage is a loop over global batches drawn from a seeded generator (the same on every rank; each rank takes its
share), with resumable atomic checkpoints, a tqdm progress bar on rank 0, a CSV/JSON loss log, optional mixed
precision on CUDA and DistributedDataParallel when launched by ``torchrun``. A stage can be stopped at any time and
continues from its last complete checkpoint.

Work-folder layout: ``draft_card.json`` (the card being built), ``<stage>_stepNNNNNNN.pt`` checkpoints,
``<stage>_losses.csv/json``, ``latents.pt`` (encoded training set).

Example:
    >>> settings = StageSettings(work_dir="work", steps=2, batch_size=2, device="cpu", progress=False)  # doctest: +SKIP
    >>> train_autoencoder(synthetic_fields(8, 2, (16, 16)), settings)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path, write_text_atomic
from ..errors import DiffDefInputError
from ..generate.model_card import ConditionSpec, ModelCard
from ..generate.networks import AUTOENCODER_DEFAULTS, autoencoder_factor, build_autoencoder, build_generator_network, build_unet, condition_kinds, UNET_DEFAULTS
from ..generate.sampling import SCHEDULER_DEFAULTS, make_scheduler, training_target
from .checkpoints import LossLog, latest_checkpoint, save_checkpoint
from .data import FieldSet
from .ddp import DistributedContext, barrier, cleanup, init_distributed, shard_indices, unwrap, wrap_model
from ..conditions.resolve import encode_value
from ..generate.bundled import record_template_checksums, save_model
from ..generate.trend import fit_trend, is_fitted, trend_velocity

DRAFT_CARD = "draft_card.json"


@dataclass
class StageSettings:
    """Settings shared by the stages.

    ``max_minutes`` stops a stage early (with a checkpoint) after that much wall time, so a CPU budget is kept;
    running the stage again continues it.
    """

    work_dir: str | Path
    steps: int = 1000
    batch_size: int = 4
    learning_rate: float = 1e-3
    device: str = "auto"
    mixed_precision: bool = True
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    max_minutes: float | None = None
    progress: bool = True
    # autoencoder
    kl_weight: float = 1e-6
    # diffusion
    condition_dropout: float = 0.2
    all_dropout: float = 0.1


# ---------------------------------------------------------------------------------------------- objectives
class AutoencoderObjective(nn.Module):
    """Reconstruction (MSE, normalised units) + ``kl_weight`` * KL of ``AutoencoderKL``; ``forward`` returns the loss terms.

    The reparameterisation noise comes in with the batch so that each rank of a distributed run uses its share of
    one global draw.
    """

    autoencoder: Any  # the generator's autoencoder: encode() -> (mu, sigma), decode()
    def __init__(self, autoencoder: nn.Module, kl_weight: float) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.kl_weight = kl_weight

    def forward(self, fields: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, sigma = self.autoencoder.encode(fields)
        z = mu + sigma * noise
        reconstruction = self.autoencoder.decode(z)
        mse = torch.mean((reconstruction.float() - fields.float()) ** 2)
        kl = 0.5 * torch.mean(mu.float() ** 2 + sigma.float() ** 2 - torch.log(sigma.float() ** 2 + 1e-12) - 1)
        return {"loss": mse + self.kl_weight * kl, "mse": mse, "kl": kl}


class DiffusionObjective(nn.Module):
    """Denoising loss of the latent UNet (``v`` or ``epsilon`` prediction, DDPM forward process)."""

    def __init__(self, unet: nn.Module, scheduler_settings: dict[str, Any]) -> None:
        super().__init__()
        self.unet = unet
        self.scheduler = make_scheduler(scheduler_settings, "ddpm")

    def forward(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, values: torch.Tensor, present: torch.Tensor) -> dict[str, torch.Tensor]:
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        prediction = self.unet(noisy, timesteps, values, present)
        target = training_target(self.scheduler, latents, noise, timesteps)
        mse = torch.mean((prediction.float() - target.float()) ** 2)
        return {"loss": mse, "mse": mse}


# ---------------------------------------------------------------------------------------------- the loop
def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return contextlib.nullcontext()


def run_stage(
    stage: str,
    objective: nn.Module,
    make_batch: Callable[[int, torch.Generator], dict[str, torch.Tensor]],
    settings: StageSettings,
    context: DistributedContext,
    extra_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Optimise ``objective`` for ``settings.steps`` steps; resumes from the newest checkpoint of ``stage``.

    ``make_batch(step, generator)`` returns the *global* batch (tensors with the batch first); each rank keeps its
    share. The learning rate follows a cosine from ``settings.learning_rate`` down to a tenth of it. Returns ``{"step", "losses", "seconds", "stopped_early"}``.
    """
    work = Path(settings.work_dir)
    device = context.device
    objective.to(device)
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=settings.learning_rate)
    start_step = 0
    running: dict[str, float] = {}  # loss sums since the last log row; saved with each checkpoint
    resumed = latest_checkpoint(work, stage)
    if resumed is not None:
        start_step, state = resumed
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        running = {str(k): float(v) for k, v in state.get("running_loss", {}).items()}
    log = LossLog(work, stage)
    if context.is_main:
        log.truncate_after(start_step)
    model = wrap_model(objective, context)
    scaler = torch.amp.GradScaler("cuda", enabled=settings.mixed_precision and device.type == "cuda" and not torch.cuda.is_bf16_supported())
    bar = None
    if settings.progress and context.is_main:
        from tqdm import tqdm

        bar = tqdm(total=settings.steps, initial=start_step, desc=stage, unit="step", dynamic_ncols=True)
    began = time.monotonic()
    step = start_step
    stopped_early = False
    model.train()
    while step < settings.steps:
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
        batch = make_batch(step, generator)
        index = shard_indices(torch.arange(next(iter(batch.values())).shape[0]), context)
        shard = {k: v[index].to(device) for k, v in batch.items()}
        with _autocast(device, settings.mixed_precision):
            terms = model(**shard)
        for group in optimizer.param_groups:  # cosine decay to 10 %, a function of the step: resumes exactly
            group["lr"] = settings.learning_rate * (0.1 + 0.45 * (1.0 + math.cos(math.pi * step / max(settings.steps, 1))))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["loss"]).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        step += 1
        for key, value in terms.items():
            running[key] = running.get(key, 0.0) + float(value.detach())
        running["_n"] = running.get("_n", 0.0) + 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(terms['loss']):.4g}")
        if context.is_main and (step % settings.log_every == 0 or step == settings.steps):
            count = running.pop("_n")
            log.append(step, {k: v / count for k, v in running.items()})
            running = {}
        out_of_time = settings.max_minutes is not None and (time.monotonic() - began) > settings.max_minutes * 60
        if context.is_main and (step % settings.checkpoint_every == 0 or step == settings.steps or out_of_time):
            save_checkpoint(work, stage, step, {"objective": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                                                "running_loss": dict(running), **(extra_state or {})})
        if out_of_time:
            stopped_early = step < settings.steps
            break
    if bar is not None:
        bar.close()
    seconds = time.monotonic() - began
    if context.is_main:
        log.write_json({"stage": stage, "last_step": step, "seconds_this_run": seconds})
    return {"step": step, "losses": log.rows()[-1:] if context.is_main else [], "seconds": seconds, "stopped_early": stopped_early}


# ---------------------------------------------------------------------------------------------- draft card
def load_draft(work_dir: str | Path) -> ModelCard:
    """The card being built in ``work_dir`` (written by the autoencoder stage)."""
    path = Path(work_dir) / DRAFT_CARD
    if not path.is_file():
        raise DiffDefInputError(f"{path}: no draft model card; run the autoencoder stage first")
    return ModelCard.load(path)


def save_draft(card: ModelCard, work_dir: str | Path) -> None:
    """Write the draft card into ``work_dir``, with the sha256 of the template files beside it (the MP stage loads
    them through the same checked path as a bundled model)."""
    write_text_atomic(Path(work_dir) / DRAFT_CARD, record_template_checksums(card, work_dir).to_json())


def new_draft(name: str, fields: FieldSet, working_grid, output_grid, template: dict[str, Any], description: str, trend: dict[str, Any] | None = None) -> ModelCard:
    """A card for a new model trained on ``fields``: conditions, grids, network and scheduler defaults, velocity scale.
    ``trend`` names the terms of a conditional-mean trend (:mod:`DiffDefAtlasLib.generate.trend`), fitted by the
    autoencoder stage."""
    residual = fields.velocities.astype(np.float64) - field_mean(fields)[None]
    rms = float(np.sqrt(np.mean(residual**2)))
    latent = latent_shape_for(AUTOENCODER_DEFAULTS, fields.grid.shape)
    return ModelCard(
        name=name,
        spatial_dims=fields.grid.spatial_dims,
        description=description,
        conditions=[ConditionSpec(**vars(s)) for s in fields.specs],
        grids={"velocity": ModelCard.grid_entry(fields.grid), "working": ModelCard.grid_entry(working_grid), "output": ModelCard.grid_entry(output_grid)},
        template=template,
        autoencoder=dict(AUTOENCODER_DEFAULTS),
        unet=dict(UNET_DEFAULTS),
        latent_shape=latent,
        velocity_scale=round(max(rms, 1e-3) * 2.0, 6),
        latent_scale=1.0,
        scheduler=dict(SCHEDULER_DEFAULTS),
        sampling={"steps": 10, "guidance": 1.0, "temperature": 0.0, "integration_steps": 7},
        trend={k: v for k, v in (trend or {}).items() if k in ("terms", "adjusted")},
        training={"data": fields.source, "subjects": len(fields), "data_info": fields.info, "stages": {}},
    )


def latent_shape_for(autoencoder: dict[str, Any], velocity_shape) -> list[int]:
    """``[latent channels, *spatial]`` of an autoencoder configuration over velocity fields of ``velocity_shape``."""
    factor = autoencoder_factor(autoencoder)
    return [int(autoencoder["latent_channels"]), *[int(np.ceil(int(s) / factor)) for s in velocity_shape]]


def with_autoencoder_channels(card: ModelCard, channels: list[int]) -> ModelCard:
    """``card`` with the autoencoder's channels per level set to ``channels`` and the latent shape to match (one
    level fewer halves the downsampling). Used before the autoencoder stage only: the later stages read both."""
    groups = int(card.autoencoder["norm_num_groups"])
    if len(channels) < 2 or any(int(c) < 1 or int(c) % groups for c in channels):
        raise DiffDefInputError(f"autoencoder channels: expected two or more positive counts, each a multiple of {groups} (the normalisation groups), found {channels}")
    card.autoencoder = {**card.autoencoder, "channels": [int(c) for c in channels]}
    card.latent_shape = latent_shape_for(card.autoencoder, card.grids["velocity"]["shape"])
    return card


def field_mean(fields: FieldSet) -> np.ndarray:
    """Mean training velocity ``(ndim, *shape)``: the autoencoder codes the residual from it."""
    return fields.velocities.astype(np.float64).mean(axis=0).astype(np.float32)


TREND_MAPS = "trend_maps.npy"


def fit_field_trend(fields: FieldSet, card: ModelCard) -> tuple[ModelCard, np.ndarray, np.ndarray]:
    """Fit the trend the card names to ``fields`` (when it names one): the card gets the fitted entry and a velocity
    scale from the residual, and is returned with the intercept and term maps for :func:`save_baseline`."""
    values, present = condition_arrays(fields, card)
    config, intercept, maps = fit_trend(fields.velocities, card.condition_names, values, present, card.trend["terms"], card.trend.get("adjusted"))
    card.trend = config
    card.velocity_scale = round(max(config["residual_rms_mm"], 1e-3) * 2.0, 6)
    return card, intercept, maps


def save_baseline(work_dir: str | Path, mean: np.ndarray, trend_maps: np.ndarray | None) -> None:
    """``field_mean.npy`` (the mean, or the trend's intercept) and ``trend_maps.npy`` in the work folder."""
    for name, array in (("field_mean.npy", mean), (TREND_MAPS, trend_maps)):
        if array is None:
            (Path(work_dir) / name).unlink(missing_ok=True)
            continue
        with atomic_path(Path(work_dir) / name) as tmp, open(tmp, "wb") as stream:
            np.save(stream, array)


class Baseline:
    """What the autoencoder codes each training field around: the mean field, or the fitted trend at the subject's
    conditions, read from the work folder."""

    def __init__(self, work_dir: str | Path, card: ModelCard, fields: FieldSet) -> None:

        self.mean = torch.from_numpy(np.load(Path(work_dir) / "field_mean.npy"))
        self.trend = card.trend if is_fitted(card.trend) else None
        self.maps = torch.from_numpy(np.load(Path(work_dir) / TREND_MAPS)) if self.trend else None
        self.names = card.condition_names
        self.values, self.present = condition_arrays(fields, card)

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        """``(len(index), ndim, *shape)`` float32."""
        return trend_velocity(self.trend, self.names, self.mean, self.maps, self.values[index], self.present[index])


def pad_fields(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Pad fields to a multiple of the autoencoder factor (edge values), as :meth:`Generator.decode` crops back."""
    shape = x.shape[2:]
    pad: list[int] = []
    for s in reversed(shape):
        pad.extend([0, (-s) % factor])
    if not any(pad):
        return x
    mode = "replicate"
    return torch.nn.functional.pad(x, pad, mode=mode)


# ---------------------------------------------------------------------------------------------- stages
def train_autoencoder(fields: FieldSet, settings: StageSettings, card: ModelCard) -> dict[str, Any]:
    """Stage 1: the velocity autoencoder. Writes/updates the draft card in the work folder."""
    draft = Path(settings.work_dir) / DRAFT_CARD
    if draft.is_file() and latest_checkpoint(settings.work_dir, "autoencoder") is not None:
        trained = ModelCard.load(draft).autoencoder
        if trained != card.autoencoder:
            raise DiffDefInputError(f"{settings.work_dir}: its autoencoder checkpoints have {trained}, not {card.autoencoder}; use a new work folder or the same settings")
    context = init_distributed(settings.device)
    try:
        Path(settings.work_dir).mkdir(parents=True, exist_ok=True)
        if card.trend.get("terms"):
            card, mean, maps = fit_field_trend(fields, card)
        else:
            mean, maps = field_mean(fields), None
        if context.is_main:
            save_draft(card, settings.work_dir)
            save_baseline(settings.work_dir, mean, maps)
        barrier(context)
        torch.manual_seed(settings.seed)
        autoencoder = build_autoencoder(card.spatial_dims, card.autoencoder)
        objective = AutoencoderObjective(autoencoder, settings.kl_weight)
        factor = autoencoder_factor(card.autoencoder)
        data = torch.from_numpy(np.ascontiguousarray(fields.velocities))
        baseline = Baseline(settings.work_dir, card, fields)
        scale = float(card.velocity_scale)
        latent_shape = card.latent_shape

        def make_batch(step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
            index = torch.randint(0, len(data), (settings.batch_size,), generator=generator)
            x = pad_fields((data[index].float() - baseline(index)) / scale, factor)
            noise = torch.randn((settings.batch_size, *latent_shape), generator=generator)
            return {"fields": x, "noise": noise}

        result = run_stage("autoencoder", objective, make_batch, settings, context)
        if context.is_main:
            card = load_draft(settings.work_dir)
            card.training.setdefault("stages", {})["autoencoder"] = stage_record(result, settings)
            save_draft(card, settings.work_dir)
        return result
    finally:
        cleanup(context)


def stage_record(result: dict[str, Any], settings: StageSettings) -> dict[str, Any]:
    """The card entry of a finished stage: steps, batch size, learning rate and the last logged losses."""
    last = result["losses"][-1] if result["losses"] else {}
    return {"steps": result["step"], "batch_size": settings.batch_size, "learning_rate": settings.learning_rate, "final_losses": last}


def _final_state(work_dir: str | Path, stage: str) -> dict[str, torch.Tensor]:
    found = latest_checkpoint(work_dir, stage)
    if found is None:
        raise DiffDefInputError(f"{work_dir}: no '{stage}' checkpoint; run that stage first")
    return found[1]["objective"]


def load_trained_autoencoder(work_dir: str | Path, card: ModelCard) -> nn.Module:
    """The autoencoder from the newest autoencoder checkpoint of ``work_dir``."""
    autoencoder = build_autoencoder(card.spatial_dims, card.autoencoder)
    state = _final_state(work_dir, "autoencoder")
    autoencoder.load_state_dict({k.removeprefix("autoencoder."): v for k, v in state.items() if k.startswith("autoencoder.")})
    return autoencoder.eval()


@torch.no_grad()
def encode_fields(autoencoder: Any, fields: FieldSet, card: ModelCard, baseline: Baseline, batch: int = 16) -> torch.Tensor:
    """Posterior means of every field's latent ``(N, C, *latent)`` (unscaled)."""
    factor = autoencoder_factor(card.autoencoder)
    out = []
    for i in range(0, len(fields), batch):
        index = torch.arange(i, min(i + batch, len(fields)))
        x = (torch.from_numpy(fields.velocities[i : i + batch]).float() - baseline(index)) / float(card.velocity_scale)
        mu, _ = autoencoder.encode(pad_fields(x, factor))
        out.append(mu)
    return torch.cat(out)


def condition_arrays(fields: FieldSet, card: ModelCard) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised condition values ``(N, n)`` and a present mask (finite values) in card order."""
    n = len(fields)
    values = np.zeros((n, len(card.conditions)), dtype=np.float32)
    present = np.zeros((n, len(card.conditions)), dtype=bool)
    for j, spec in enumerate(card.conditions):
        raw = np.asarray(fields.conditions[spec.name], dtype=np.float64)
        ok = np.isfinite(raw)
        present[:, j] = ok
        if spec.kind == "categorical":
            values[ok, j] = raw[ok]
        else:
            values[ok, j] = [encode_value(spec, float(v)) for v in raw[ok]]
    return torch.from_numpy(values), torch.from_numpy(present)


def train_diffusion(fields: FieldSet, settings: StageSettings) -> dict[str, Any]:
    """Stage 2: the conditional latent UNet, with condition dropout for classifier-free guidance."""
    context = init_distributed(settings.device)
    try:
        card = load_draft(settings.work_dir)
        latents_path = Path(settings.work_dir) / "latents.pt"
        if latents_path.is_file():
            latents = torch.load(latents_path, weights_only=True)
        else:
            latents = encode_fields(load_trained_autoencoder(settings.work_dir, card), fields, card, Baseline(settings.work_dir, card, fields))
            if context.is_main:
                with atomic_path(latents_path) as tmp:
                    torch.save(latents, tmp)
        card.latent_shape = list(latents.shape[1:])
        card.latent_scale = round(float(1.0 / latents.std()), 6)
        if context.is_main:
            save_draft(card, settings.work_dir)
        scaled = latents * card.latent_scale
        values, present = condition_arrays(fields, card)
        torch.manual_seed(settings.seed)
        unet = build_unet(card.spatial_dims, int(card.autoencoder["latent_channels"]), condition_kinds(card), card.unet, card.latent_shape[1:])
        objective = DiffusionObjective(unet, card.scheduler)
        timesteps_total = int(card.scheduler.get("num_train_timesteps", 1000))

        def make_batch(step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
            b = settings.batch_size
            index = torch.randint(0, len(scaled), (b,), generator=generator)
            keep = torch.rand((b, values.shape[1]), generator=generator) >= settings.condition_dropout
            keep &= (torch.rand((b, 1), generator=generator) >= settings.all_dropout)
            return {
                "latents": scaled[index],
                "noise": torch.randn((b, *scaled.shape[1:]), generator=generator),
                "timesteps": torch.randint(0, timesteps_total, (b,), generator=generator),
                "values": values[index],
                "present": present[index] & keep,
            }

        result = run_stage("diffusion", objective, make_batch, settings, context)
        if context.is_main:
            card = load_draft(settings.work_dir)
            card.training.setdefault("stages", {})["diffusion"] = {
                **stage_record(result, settings),
                "condition_dropout": settings.condition_dropout,
                "all_dropout": settings.all_dropout,
            }
            save_draft(card, settings.work_dir)
        return result
    finally:
        cleanup(context)


def assemble_network(work_dir: str | Path, card: ModelCard, use_mp: bool = True) -> nn.Module:
    """The :class:`~DiffDefAtlasLib.generate.networks.VelocityGenerator` from the stage checkpoints (MP weights when present)."""
    network = build_generator_network(card)
    network.autoencoder.load_state_dict(load_trained_autoencoder(work_dir, card).state_dict())
    network.field_mean.copy_(torch.from_numpy(np.load(Path(work_dir) / "field_mean.npy")))
    if network.trend is not None:
        network.trend_maps.copy_(torch.from_numpy(np.load(Path(work_dir) / TREND_MAPS)))
    diffusion = _final_state(work_dir, "diffusion")
    network.unet.load_state_dict({k.removeprefix("unet."): v for k, v in diffusion.items() if k.startswith("unet.")})
    if use_mp and latest_checkpoint(work_dir, "mp") is not None:
        state = _final_state(work_dir, "mp")
        network.load_state_dict({k.removeprefix("network."): v for k, v in state.items() if k.startswith("network.")})
    return network


def export_model(work_dir: str | Path, folder: str | Path, use_mp: bool = True, metrics: dict[str, Any] | None = None) -> ModelCard:
    """Write the trained model (safetensors + card with checksum) into ``folder`` (e.g. ``Resources/models/brain3d``)."""
    card = load_draft(work_dir)
    network = assemble_network(work_dir, card, use_mp)
    card.training["mp_finetuned"] = bool(use_mp and latest_checkpoint(work_dir, "mp") is not None)
    if metrics:
        card.metrics.update(metrics)
    return save_model(card, network, folder)
