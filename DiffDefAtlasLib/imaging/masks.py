"""Binary masks on ``(B, 1, *shape)`` tensors: dilation by max pooling and the brain mask of a skull-stripped image."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dilate(mask: torch.Tensor, voxels: int) -> torch.Tensor:
    """Binary dilation of a ``(B, 1, *shape)`` mask by a cube of half-width ``voxels`` (max pooling)."""
    if voxels <= 0:
        return mask
    n = mask.dim() - 2
    pool = F.max_pool2d if n == 2 else F.max_pool3d
    out = mask.float()
    for axis in range(n):  # a cube is separable: one 1D max filter per axis
        kernel = [1] * n
        padding = [0] * n
        kernel[axis], padding[axis] = 2 * voxels + 1, voxels
        out = pool(out, tuple(kernel), stride=1, padding=tuple(padding))
    return out


def brain_mask_from_image(image: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """A brain mask for a skull-stripped image: voxels above ``threshold`` times its 99th percentile, closed by one voxel."""
    values = image[image > 0]
    if values.numel() == 0:
        return torch.zeros_like(image)
    top = torch.quantile(values.float()[:: max(1, values.numel() // 50000)], 0.99)
    mask = (image > threshold * top).float()
    return 1.0 - dilate(1.0 - dilate(mask, 1), 1)
