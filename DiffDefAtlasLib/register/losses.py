"""Registration losses: brain-masked local NCC, λ-weighted smoothness, the prior on λ, and label Dice.

The total loss (Chen et al., spatially varying regularisation) is

    L = -LNCC_mask(warped, fixed) + w_smooth * mean(λ(x) |∇v(x)|²) + w_prior * mean(-log p(λ(x)))
        + w_lambda_smooth * mean |∇λ|² [+ w_dice * DiceLoss(warped labels, fixed labels)]

where ``v`` is the velocity (RAS mm) and λ in (0, 1). The prior is a Beta(α, β) (``kind="beta"``) or a normal
N(μ, σ²) restricted to (0, 1) (``kind="normal"``); with α, β > 1 the Beta prior keeps λ away from 0 and 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from ..spatial import Grid


@dataclass(frozen=True)
class LossConfig:
    """Weights and hyperparameters of :class:`RegistrationLoss` (stored in the model card).

    Example:
        >>> LossConfig().prior
        'beta'
    """

    kernel_size: int = 5
    smooth_weight: float = 2.0
    prior: str = "beta"
    prior_alpha: float = 2.0
    prior_beta: float = 2.0
    prior_mean: float = 0.5
    prior_std: float = 0.2
    prior_weight: float = 0.1
    lambda_smooth_weight: float = 1.0
    dice_weight: float = 1.0

    def to_dict(self) -> dict:
        """A JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "LossConfig":
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


def masked_lncc(warped: torch.Tensor, fixed: torch.Tensor, mask: torch.Tensor | None, kernel_size: int = 7) -> torch.Tensor:
    """Negative squared local NCC (MONAI ``LocalNormalizedCrossCorrelationLoss``), averaged inside ``mask``.

    Returns a scalar in [-1, 0]; -1 is a perfect local match. ``mask`` is ``(B, 1, *shape)`` (or None for all voxels).

    Example:
        >>> x = torch.rand(1, 1, 16, 16)
        >>> round(float(masked_lncc(x, x, None)), 3)
        -1.0
    """
    from monai.losses import LocalNormalizedCrossCorrelationLoss

    spatial_dims = warped.dim() - 2
    loss = LocalNormalizedCrossCorrelationLoss(spatial_dims=spatial_dims, kernel_size=kernel_size, reduction="none")
    per_voxel = loss(warped, fixed)
    if mask is None:
        return per_voxel.mean()
    weight = mask.to(per_voxel.dtype).expand_as(per_voxel)
    return (per_voxel * weight).sum() / weight.sum().clamp_min(1.0)


def _forward_differences(field: torch.Tensor, spacing: tuple[float, ...]) -> list[torch.Tensor]:
    n = len(spacing)
    out = []
    for d in range(n):
        dim = 2 + d
        size = field.shape[dim]
        out.append((field.narrow(dim, 1, size - 1) - field.narrow(dim, 0, size - 1)) / spacing[d])
    return out


def weighted_gradient_energy(field: torch.Tensor, grid: Grid, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``weight(x) * |∇field(x)|²`` with forward differences per mm (diffusion regulariser).

    ``field`` is ``(B, C, *shape)`` on ``grid``; ``weight`` ``(B, 1, *shape)`` (λ) or None for 1. A uniform translation
    costs 0.

    Example:
        >>> g = Grid((8, 8), torch.eye(3).numpy())
        >>> float(weighted_gradient_energy(torch.ones(1, 2, 8, 8), g))
        0.0
    """
    total = field.new_zeros(())
    for d, diff in enumerate(_forward_differences(field, grid.spacing)):
        energy = (diff**2).sum(dim=1, keepdim=True)
        if weight is not None:
            dim = 2 + d
            size = weight.shape[dim]
            w = 0.5 * (weight.narrow(dim, 1, size - 1) + weight.narrow(dim, 0, size - 1))
            energy = energy * w
        total = total + energy.mean()
    return total


def lambda_negative_log_prior(lam: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """Mean of ``-log p(λ)`` (up to a constant) under the Beta(α, β) or normal prior of ``config``.

    Example:
        >>> cfg = LossConfig(prior="beta", prior_alpha=2.0, prior_beta=2.0)
        >>> bool(lambda_negative_log_prior(torch.tensor([0.5]), cfg) < lambda_negative_log_prior(torch.tensor([0.05]), cfg))
        True
    """
    eps = 1e-6
    lam = lam.clamp(eps, 1 - eps)
    if config.prior == "beta":
        return (-(config.prior_alpha - 1.0) * torch.log(lam) - (config.prior_beta - 1.0) * torch.log1p(-lam)).mean()
    if config.prior == "normal":
        return (((lam - config.prior_mean) / config.prior_std) ** 2 / 2.0).mean()
    raise ValueError(f"λ prior: expected 'beta' or 'normal', found {config.prior!r}")


def soft_dice_loss(warped_onehot: torch.Tensor, fixed_onehot: torch.Tensor) -> torch.Tensor:
    """MONAI ``DiceLoss`` over foreground channels (channel 0 = background is left out)."""
    from monai.losses import DiceLoss

    return DiceLoss(include_background=False, reduction="mean")(warped_onehot, fixed_onehot)


class RegistrationLoss(nn.Module):
    """The full training / refinement loss; returns the total and a dictionary of its terms (detached floats)."""

    def __init__(self, config: LossConfig = LossConfig()) -> None:
        super().__init__()
        self.config = config

    def forward(
        self,
        warped: torch.Tensor,
        fixed: torch.Tensor,
        mask: torch.Tensor | None,
        velocity_coarse: torch.Tensor,
        lambda_coarse: torch.Tensor,
        field_grid: Grid,
        *,
        warped_labels: torch.Tensor | None = None,
        fixed_labels: torch.Tensor | None = None,
        prior_terms: bool = True,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss. ``field_grid`` is the grid of ``velocity_coarse`` and ``lambda_coarse`` (voxel size for ∇)."""
        cfg = self.config
        similarity = masked_lncc(warped, fixed, mask, cfg.kernel_size)
        smooth = weighted_gradient_energy(velocity_coarse, field_grid, lambda_coarse)
        total = similarity + cfg.smooth_weight * smooth
        terms = {"lncc": float(similarity.detach()), "smooth": float(smooth.detach())}
        if prior_terms:
            prior = lambda_negative_log_prior(lambda_coarse, cfg)
            lambda_smooth = weighted_gradient_energy(lambda_coarse, field_grid)
            total = total + cfg.prior_weight * prior + cfg.lambda_smooth_weight * lambda_smooth
            terms["prior"] = float(prior.detach())
            terms["lambda_smooth"] = float(lambda_smooth.detach())
        if warped_labels is not None and fixed_labels is not None and cfg.dice_weight > 0:
            dice = soft_dice_loss(warped_labels, fixed_labels)
            total = total + cfg.dice_weight * dice
            terms["dice_loss"] = float(dice.detach())
        terms["total"] = float(total.detach())
        return total, terms
