"""The learned registration network: a MONAI UNet that predicts a stationary velocity field (SVF) and a λ map.

The pair ``(moving, fixed)`` on the working grid is average-pooled by ``downsample`` (2 mm -> 4 mm in 3D), a small
MONAI :class:`~monai.networks.nets.UNet` extracts features there, and two heads read them:

- a velocity head (one convolution, initialised near zero) giving the SVF in RAS mm;
- a light λ head (two convolutions and a sigmoid) giving the per-voxel regularisation weight λ(x) in (0, 1),
  after Chen et al., "Unsupervised learning of spatially varying regularization for diffeomorphic image registration".

The field is integrated by scaling and squaring on the coarse grid and upsampled to the working grid
(:meth:`RegistrationNetwork.predict_displacement`): deformations of a brain are smooth, so this loses little and is
several times faster on a CPU than integrating at 2 mm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import cast, overload

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import DiffDefInputError
from ..spatial import Grid, integrate_velocity


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of :class:`RegistrationNetwork`; stored in the model card so the weights can be rebuilt.

    ``velocity_smoothing_voxels`` > 0 smooths the predicted velocity with a Gaussian of that sigma (coarse voxels)
    before it is used: a regularity/accuracy trade-off chosen after training (0 = the network's raw output).

    Example:
        >>> NetworkConfig(spatial_dims=2).shape_multiple
        16
    """

    spatial_dims: int = 3
    channels: tuple[int, ...] = (16, 32, 32, 32)
    strides: tuple[int, ...] = (2, 2, 2)
    features: int = 16
    lambda_hidden: int = 8
    downsample: int = 2
    velocity_scale_mm: float = 4.0
    integration_steps: int = 7
    lambda_init: float = 0.5
    spatially_varying: bool = True
    working_spacing_mm: float = 2.0
    velocity_smoothing_voxels: float = 0.0

    @property
    def shape_multiple(self) -> int:
        """Working-grid sizes must be multiples of this (pooling times the UNet's total stride)."""
        total = self.downsample
        for stride in self.strides:
            total *= stride
        return int(total)

    def to_dict(self) -> dict:
        """A JSON-ready dictionary."""
        out = asdict(self)
        out["channels"] = list(self.channels)
        out["strides"] = list(self.strides)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "NetworkConfig":
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in values.items() if k in known}
        for key in ("channels", "strides"):
            if key in kwargs:
                kwargs[key] = tuple(int(v) for v in kwargs[key])
        return cls(**kwargs)


def upsample_field(field: torch.Tensor, factor: int) -> torch.Tensor:
    """Upsample a field ``(B, C, *shape)`` by an integer ``factor`` over the same field of view (linear, edges kept).

    This is the index-space form of :func:`~DiffDefAtlasLib.spatial.resample_displacement` from ``grid.resized`` to
    ``grid`` (vectors in mm need no rescaling), computed with ``F.interpolate`` for speed.
    """
    if factor == 1:
        return field
    mode = "bilinear" if field.dim() == 4 else "trilinear"
    return F.interpolate(field, scale_factor=factor, mode=mode, align_corners=False)


@overload
def pool_to_coarse(image: torch.Tensor, factor: int) -> torch.Tensor: ...
@overload
def pool_to_coarse(image: None, factor: int) -> None: ...
def pool_to_coarse(image: torch.Tensor | None, factor: int) -> torch.Tensor | None:
    """Average-pool ``(B, C, *shape)`` by ``factor``: the coarse grid of :func:`coarse_grid` (None passes through)."""
    if image is None or factor == 1:
        return image
    pool = F.avg_pool2d if image.dim() == 4 else F.avg_pool3d
    return pool(image, factor)


def coarse_grid(grid: Grid, factor: int) -> Grid:
    """The grid on which the network predicts its field: ``grid`` with ``factor`` times fewer voxels per axis."""
    if factor == 1:
        return grid
    return grid.resized(tuple(s // factor for s in grid.shape))


class RegistrationNetwork(nn.Module):
    """Predict an SVF and a λ map from a ``(moving, fixed)`` pair of intensity-normalised images.

    Inputs are ``(B, 1, *shape)`` tensors on the working grid, intensities roughly in [0, 1] (see
    :func:`DiffDefAtlasLib.imaging.resampling.normalise_intensity`), sizes multiples of ``config.shape_multiple``.
    The network is differentiable and batched, so it can sit inside another model's training loss.

    Example:
        >>> net = RegistrationNetwork(NetworkConfig(spatial_dims=2, channels=(4, 8, 8, 8)))
        >>> velocity, lam = net(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))
        >>> velocity.shape, lam.shape
        (torch.Size([1, 2, 32, 32]), torch.Size([1, 1, 32, 32]))
    """

    def __init__(self, config: NetworkConfig = NetworkConfig()) -> None:
        super().__init__()
        from monai.networks.blocks import Convolution
        from monai.networks.nets import UNet

        self.config = config
        n = config.spatial_dims
        self.backbone = UNet(
            spatial_dims=n,
            in_channels=2,
            out_channels=config.features,
            channels=config.channels,
            strides=config.strides,
            num_res_units=0,
            act=("leakyrelu", {"negative_slope": 0.2}),
            norm="instance",
        )
        self.velocity_head = Convolution(n, config.features, n, kernel_size=3, conv_only=True)
        velocity_conv = cast("nn.Conv2d | nn.Conv3d", self.velocity_head.conv)  # MONAI adds its convolution by name
        nn.init.normal_(velocity_conv.weight, std=1e-5)
        nn.init.zeros_(cast(torch.Tensor, velocity_conv.bias))
        self.lambda_head = nn.Sequential(
            Convolution(n, config.features, config.lambda_hidden, kernel_size=3, act=("leakyrelu", {"negative_slope": 0.2}), norm=None),
            Convolution(n, config.lambda_hidden, 1, kernel_size=1, conv_only=True),
        )
        last = cast("nn.Conv2d | nn.Conv3d", self.lambda_head[-1].conv)
        nn.init.normal_(last.weight, std=1e-3)
        init = min(max(config.lambda_init, 1e-3), 1 - 1e-3)
        nn.init.constant_(cast(torch.Tensor, last.bias), float(torch.logit(torch.tensor(init))))

    def _check(self, moving: torch.Tensor, fixed: torch.Tensor) -> None:
        n = self.config.spatial_dims
        if moving.dim() != n + 2 or fixed.shape != moving.shape or moving.shape[1] != 1:
            raise DiffDefInputError(
                f"registration network: expected moving and fixed of the same shape (B, 1, {'H, W' if n == 2 else 'D, H, W'}), "
                f"found {tuple(moving.shape)} and {tuple(fixed.shape)}"
            )
        multiple = self.config.shape_multiple
        if any(s % multiple for s in moving.shape[2:]):
            raise DiffDefInputError(f"registration network: image sizes must be multiples of {multiple}, found {tuple(moving.shape[2:])}")

    def forward_coarse(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity (RAS mm) and λ on the coarse grid (working grid divided by ``config.downsample``)."""
        self._check(moving, fixed)
        x = torch.cat([moving, fixed], dim=1)
        x = pool_to_coarse(x, self.config.downsample)
        features = F.leaky_relu(self.backbone(x), 0.2)
        velocity = self.smooth_velocity(self.velocity_head(features) * self.config.velocity_scale_mm)
        if self.config.spatially_varying:
            lam = torch.sigmoid(self.lambda_head(features))
        else:
            lam = torch.full_like(velocity[:, :1], self.config.lambda_init)
        return velocity, lam

    def smooth_velocity(self, velocity: torch.Tensor) -> torch.Tensor:
        """The Gaussian of ``config.velocity_smoothing_voxels`` (MONAI ``GaussianFilter``) applied to a coarse
        velocity; the velocity itself when the setting is 0."""
        sigma = float(self.config.velocity_smoothing_voxels)
        if sigma <= 0:
            return velocity
        from monai.networks.layers import GaussianFilter  # built per call: it holds no state, so weight files are unchanged

        return GaussianFilter(self.config.spatial_dims, sigma).to(velocity.device)(velocity)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(velocity, lambda_map)`` on the working grid: ``(B, ndim, *shape)`` RAS mm and ``(B, 1, *shape)`` in (0, 1).

        Integrate the velocity with :func:`~DiffDefAtlasLib.spatial.integrate_velocity` or, faster and as the
        network was trained, use :meth:`predict_displacement`.
        """
        velocity, lam = self.forward_coarse(moving, fixed)
        factor = self.config.downsample
        return upsample_field(velocity, factor), upsample_field(lam, factor)

    def integrate(self, velocity_coarse: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Displacement on the working ``grid`` from a coarse velocity: scaling and squaring, then upsampling."""
        factor = self.config.downsample
        displacement = integrate_velocity(velocity_coarse, coarse_grid(grid, factor), steps=self.config.integration_steps)
        return upsample_field(displacement, factor)

    def predict_displacement(self, moving: torch.Tensor, fixed: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(displacement, velocity_coarse, lambda_coarse)``: the displacement ``(B, ndim, *shape)`` on ``grid``.

        ``warp_image(moving, displacement, grid)`` then lies on ``fixed``.
        """
        velocity, lam = self.forward_coarse(moving, fixed)
        return self.integrate(velocity, grid), velocity, lam
