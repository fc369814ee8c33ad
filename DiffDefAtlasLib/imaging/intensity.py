"""Intensity normalisation shared by registration, preprocessing and training (the network sees one scale)."""

from __future__ import annotations

import torch


def normalise_intensity(image: torch.Tensor, mask: torch.Tensor | None = None, percentile: float = 0.99) -> torch.Tensor:
    """Scale intensities so the ``percentile`` of positive voxels (inside ``mask``) becomes 1; clip to [0, 1.5].

    Example:
        >>> x = torch.linspace(0, 200, 101).reshape(1, 1, 101)
        >>> round(float(normalise_intensity(x).max()), 2)
        1.01
    """
    values = image if mask is None else image[mask > 0]
    values = values[values > 0]
    if values.numel() == 0:
        return image.clamp(0.0, 1.5)
    step = max(1, values.numel() // 50000)
    top = torch.quantile(values.float()[::step], percentile).clamp_min(1e-6)
    return (image / top).clamp(0.0, 1.5)
