"""Networks of the generator, configured from MONAI building blocks.

- :func:`build_autoencoder`: MONAI ``AutoencoderKL`` over velocity fields (no attention blocks), 4x downsampling.
- :class:`ConditionEmbedding`: one learned token per condition (a small MLP of the normalised value, or an
  embedding of the category), replaced by that condition's learned "null" token when it is unset.
- :class:`ConditionalLatentUNet`: a small denoising UNet over the latent, built from MONAI's
  ``DiffusionUNetResnetBlock`` (time embedding injected into every block). The condition tokens are flattened,
  projected and *added to the time embedding*, the same path MONAI's ``DiffusionModelUNet`` uses for class labels.
  (MONAI's ``DiffusionModelUNet`` itself always builds attention blocks, which need the optional ``einops``
  package; this UNet runs with MONAI's core dependencies only. Conditions here are global scalars, so a global
  additive embedding carries them as well as cross-attention over a handful of tokens would.)
  Two optional spatial inputs are concatenated to the noisy latent: ``position_channels`` learned maps (the network
  otherwise only sees position through zero padding, and at the first sampling step its input is pure noise) and
  ``condition_map_channels`` maps computed from the condition tokens by a low-rank linear layer, so a condition can
  move each latent voxel differently. Both need the latent shape; cards written before these options existed have
  neither.

Example:
    >>> import torch
    >>> unet = ConditionalLatentUNet(3, 4, [("continuous", 0), ("categorical", 2)], channels=(16, 32))
    >>> unet(torch.zeros(1, 4, 10, 12, 10), torch.tensor([10]), torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool)).shape
    torch.Size([1, 4, 10, 12, 10])
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from .trend import is_fitted, trend_velocity

#: Defaults of the autoencoder over velocity fields (channels per level; 3 levels = 4x downsampling).
AUTOENCODER_DEFAULTS: dict[str, Any] = {"channels": [8, 16, 16], "latent_channels": 4, "num_res_blocks": 1, "norm_num_groups": 8}
#: Defaults of the latent denoising UNet.
UNET_DEFAULTS: dict[str, Any] = {
    "channels": [16, 32, 32],
    "num_res_blocks": 1,
    "norm_num_groups": 8,
    "condition_dim": 32,
    "position_channels": 4,
    "condition_map_channels": 4,
    "condition_map_rank": 16,
}
#: Spatial-input settings a card means when it does not name them (cards written before they existed).
_UNET_SPATIAL_ABSENT: dict[str, int] = {"position_channels": 0, "condition_map_channels": 0}


def build_autoencoder(spatial_dims: int, config: dict[str, Any] | None = None):
    """MONAI ``AutoencoderKL`` for ``spatial_dims``-component velocity fields, without attention blocks.

    Example:
        >>> ae = build_autoencoder(2)
        >>> ae.encode_stage_2_inputs(torch.zeros(1, 2, 32, 32)).shape
        torch.Size([1, 4, 8, 8])
    """
    from monai.networks.nets import AutoencoderKL

    cfg = {**AUTOENCODER_DEFAULTS, **(config or {})}
    channels = tuple(int(c) for c in cfg["channels"])
    return AutoencoderKL(
        spatial_dims=spatial_dims,
        in_channels=spatial_dims,
        out_channels=spatial_dims,
        num_res_blocks=int(cfg["num_res_blocks"]),
        channels=channels,
        attention_levels=(False,) * len(channels),
        latent_channels=int(cfg["latent_channels"]),
        norm_num_groups=int(cfg["norm_num_groups"]),
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    )


def autoencoder_factor(config: dict[str, Any] | None = None) -> int:
    """Downsampling factor of the autoencoder (2 per level after the first)."""
    cfg = {**AUTOENCODER_DEFAULTS, **(config or {})}
    return 2 ** (len(cfg["channels"]) - 1)


class ConditionEmbedding(nn.Module):
    """Learned tokens for a set of conditions, with a learned null token per condition.

    ``kinds`` is a list of ``(kind, n_choices)``; ``forward(values, present)`` takes normalised values ``(B, n)`` and a
    boolean mask ``(B, n)`` and returns ``(B, n, dim)`` tokens.
    """

    def __init__(self, kinds: Sequence[tuple[str, int]], dim: int = 32) -> None:
        super().__init__()
        self.kinds = [(str(k), int(n)) for k, n in kinds]
        self.dim = dim
        encoders: list[nn.Module] = []
        for kind, n_choices in self.kinds:
            if kind == "categorical":
                encoders.append(nn.Embedding(max(n_choices, 1), dim))
            else:
                encoders.append(nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim)))
        self.encoders = nn.ModuleList(encoders)
        self.null = nn.Parameter(torch.randn(max(len(self.kinds), 1), dim) * 0.02)

    def forward(self, values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        tokens = []
        for i, ((kind, n_choices), encoder) in enumerate(zip(self.kinds, self.encoders)):
            if kind == "categorical":
                token = encoder(values[:, i].round().long().clamp(0, max(n_choices - 1, 0)))
            else:
                token = encoder(values[:, i : i + 1].to(self.null.dtype))
            token = torch.where(present[:, i : i + 1], token, self.null[i].expand_as(token))
            tokens.append(token)
        if not tokens:
            return self.null[:0].unsqueeze(0).expand(values.shape[0], 0, self.dim)
        return torch.stack(tokens, dim=1)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    shape = tuple(x.shape[2:])
    target = [((s + multiple - 1) // multiple) * multiple for s in shape]
    pad: list[int] = []
    for s, t in reversed(list(zip(shape, target))):
        pad.extend([0, t - s])
    return (F.pad(x, pad) if any(pad) else x), shape


class ConditionalLatentUNet(nn.Module):
    """Denoising UNet over diffusion latents, conditioned on a timestep and on :class:`ConditionEmbedding` tokens.

    ``channels`` gives the width of each level (each level after the first halves the resolution); the latent is
    zero-padded to a multiple of the total downsampling factor and cropped back.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        condition_kinds: Sequence[tuple[str, int]],
        channels: Sequence[int] = (32, 64, 64),
        num_res_blocks: int = 1,
        norm_num_groups: int = 8,
        condition_dim: int = 32,
        latent_shape: Sequence[int] | None = None,
        position_channels: int = 0,
        condition_map_channels: int = 0,
        condition_map_rank: int = 16,
    ) -> None:
        super().__init__()
        from monai.networks.blocks import Convolution
        from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock

        self.spatial_dims = spatial_dims
        self.channels = [int(c) for c in channels]
        self.factor = 2 ** (len(self.channels) - 1)
        temb = 4 * self.channels[0]
        self.time_embed = nn.Sequential(nn.Linear(self.channels[0], temb), nn.SiLU(), nn.Linear(temb, temb))
        self.condition_embedding = ConditionEmbedding(condition_kinds, condition_dim)
        n_tokens = max(len(self.condition_embedding.kinds), 1)
        self.condition_proj = nn.Sequential(nn.Linear(n_tokens * condition_dim, temb), nn.SiLU(), nn.Linear(temb, temb))
        if (position_channels or condition_map_channels) and not latent_shape:
            raise ValueError("position_channels and condition_map_channels need latent_shape")
        self.latent_shape = tuple(int(s) for s in latent_shape) if latent_shape else ()
        self.position = nn.Parameter(0.1 * torch.randn(1, position_channels, *self.latent_shape)) if position_channels else None
        self.condition_maps = (
            nn.Sequential(nn.Linear(n_tokens * condition_dim, condition_map_rank), nn.Linear(condition_map_rank, condition_map_channels * math.prod(self.latent_shape)))
            if condition_map_channels
            else None
        )
        self.condition_map_channels = int(condition_map_channels)
        in_total = in_channels + int(position_channels) + int(condition_map_channels)

        def block(cin: int, cout: int, **kw) -> nn.Module:
            return DiffusionUNetResnetBlock(spatial_dims, cin, temb, cout, norm_num_groups=norm_num_groups, **kw)

        def conv(cin: int, cout: int) -> nn.Module:
            return Convolution(spatial_dims, cin, cout, strides=1, kernel_size=3, padding=1, conv_only=True)

        self.conv_in = conv(in_total, self.channels[0])
        self.down = nn.ModuleList()
        skips = [self.channels[0]]
        current = self.channels[0]
        for level, width in enumerate(self.channels):
            if level > 0:
                self.down.append(block(current, current, down=True))
                skips.append(current)
            for _ in range(num_res_blocks):
                self.down.append(block(current, width))
                current = width
                skips.append(current)
        self.middle = nn.ModuleList([block(current, current), block(current, current)])
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(self.channels))):
            for _ in range(num_res_blocks + 1):
                self.up.append(block(current + skips.pop(), width))
                current = width
            if level > 0:
                self.up.append(block(current, current, up=True))
        self.out = nn.Sequential(nn.GroupNorm(norm_num_groups, current), nn.SiLU(), conv(current, in_channels))
        self._up_is_resample = [getattr(b, "upsample", None) is not None for b in self.up]
        self._down_is_resample = [getattr(b, "downsample", None) is not None for b in self.down]

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        from monai.networks.nets.diffusion_model_unet import get_timestep_embedding

        emb = self.time_embed(get_timestep_embedding(timesteps, self.channels[0]).to(x.dtype))
        tokens = self.condition_embedding(values, present.bool())
        if tokens.shape[1]:
            emb = emb + self.condition_proj(tokens.flatten(1)).to(x.dtype)
        extra = []
        if self.position is not None:
            extra.append(self.position.to(x.dtype).expand(x.shape[0], *self.position.shape[1:]))
        if self.condition_maps is not None:
            extra.append(self.condition_maps(tokens.flatten(1)).to(x.dtype).view(x.shape[0], self.condition_map_channels, *self.latent_shape))
        if extra:
            x = torch.cat([x, *extra], dim=1)
        x, shape = _pad_to_multiple(x, self.factor)
        h = self.conv_in(x)
        skips = [h]
        for layer, is_resample in zip(self.down, self._down_is_resample):
            h = layer(h, emb)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for layer, is_resample in zip(self.up, self._up_is_resample):
            h = layer(h, emb) if is_resample else layer(torch.cat([h, skips.pop()], dim=1), emb)
        h = self.out(h)
        crop = (slice(None), slice(None), *[slice(0, s) for s in shape])
        return h[crop]


def build_unet(
    spatial_dims: int,
    latent_channels: int,
    condition_kinds: Sequence[tuple[str, int]],
    config: dict[str, Any] | None = None,
    latent_shape: Sequence[int] | None = None,
) -> ConditionalLatentUNet:
    """The latent UNet from a card's ``unet`` settings (defaults :data:`UNET_DEFAULTS`; a card that does not name the
    spatial inputs has none). ``latent_shape`` is the spatial shape of the latent, without channels."""
    cfg = {**UNET_DEFAULTS, **(config or {})}
    if config is not None:
        cfg.update({key: config.get(key, absent) for key, absent in _UNET_SPATIAL_ABSENT.items()})
    return ConditionalLatentUNet(
        spatial_dims,
        latent_channels,
        condition_kinds,
        channels=tuple(cfg["channels"]),
        num_res_blocks=int(cfg["num_res_blocks"]),
        norm_num_groups=int(cfg["norm_num_groups"]),
        condition_dim=int(cfg["condition_dim"]),
        latent_shape=latent_shape,
        position_channels=int(cfg["position_channels"]),
        condition_map_channels=int(cfg["condition_map_channels"]),
        condition_map_rank=int(cfg["condition_map_rank"]),
    )


class VelocityGenerator(nn.Module):
    """The autoencoder, the latent UNet and the mean training field of one model, saved as one safetensors file.

    The autoencoder codes the residual ``(v - mean) / velocity_scale``; :meth:`decode_velocity` undoes both. The
    mean is ``field_mean``, or with a fitted ``trend`` (:mod:`.trend`) the conditional one, ``field_mean`` (then the
    trend's intercept) plus the ``trend_maps`` weighted by the conditions' features.
    """

    field_mean: torch.Tensor
    trend_maps: torch.Tensor  # registered only with a fitted trend

    def __init__(
        self,
        spatial_dims: int,
        condition_kinds: Sequence[tuple[str, int]],
        autoencoder: dict | None = None,
        unet: dict | None = None,
        velocity_shape: Sequence[int] = (),
        latent_shape: Sequence[int] | None = None,
        trend: dict | None = None,
        condition_names: Sequence[str] = (),
    ) -> None:
        super().__init__()

        ae_cfg = {**AUTOENCODER_DEFAULTS, **(autoencoder or {})}
        self.autoencoder = build_autoencoder(spatial_dims, ae_cfg)
        self.unet = build_unet(spatial_dims, int(ae_cfg["latent_channels"]), condition_kinds, unet, latent_shape)
        shape = [int(s) for s in velocity_shape]
        self.register_buffer("field_mean", torch.zeros(spatial_dims, *shape))
        self.trend = dict(trend) if is_fitted(trend) else None
        self.condition_names = list(condition_names)
        if self.trend is not None:
            self.register_buffer("trend_maps", torch.zeros(len(self.trend["terms"]), spatial_dims, *shape))

    def mean_velocity(self, batch: int, values: torch.Tensor | None = None, present: torch.Tensor | None = None) -> torch.Tensor:
        """The velocity the autoencoder's residual is added to, ``(batch, ndim, *shape)``: the trend at the network
        condition values ``(batch, n)`` (unset where ``present`` is false; all unset when ``values`` is None)."""
        n = len(self.condition_names)
        if values is None or present is None:
            values, present = torch.zeros(batch, n), torch.zeros(batch, n, dtype=torch.bool)
        return trend_velocity(self.trend, self.condition_names, self.field_mean, getattr(self, "trend_maps", None), values, present)

    def decode_velocity(self, latent: torch.Tensor, velocity_scale: float, values: torch.Tensor | None = None, present: torch.Tensor | None = None) -> torch.Tensor:
        """Latent (unscaled) -> velocity in mm on the velocity grid (the autoencoder's padding cropped), for the
        condition values the latent was sampled for (only a model with a trend uses them)."""
        residual = self.autoencoder.decode_stage_2_outputs(latent) * float(velocity_scale)
        shape = tuple(self.field_mean.shape[1:])
        residual = residual[(slice(None), slice(None), *[slice(0, s) for s in shape])]
        return residual + self.mean_velocity(residual.shape[0], values, present).to(residual.dtype)


def condition_kinds(card) -> list[tuple[str, int]]:
    """``(kind, n_choices)`` per condition of a :class:`~.model_card.ModelCard`."""
    return [(c.kind, len(c.choices or [])) for c in card.conditions]


def build_generator_network(card) -> VelocityGenerator:
    """An untrained :class:`VelocityGenerator` shaped by a model card."""
    shape = card.grids["velocity"]["shape"] if "velocity" in card.grids else [1] * card.spatial_dims
    latent = list(card.latent_shape[1:]) if card.latent_shape else None
    return VelocityGenerator(card.spatial_dims, condition_kinds(card), card.autoencoder, card.unet, shape, latent, card.trend, card.condition_names)
