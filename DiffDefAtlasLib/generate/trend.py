"""A least-squares trend of the velocity fields in the conditions: the conditional mean the autoencoder codes around.

Without a trend, the autoencoder codes ``v - mean(v)`` and the diffusion model must learn every condition effect,
including the smooth population trends (the ventricles growing with age), through a 4x-downsampled latent. With a
trend, a generator's velocity is

    v(c) = b_0 + sum_k f_k(c) b_k + decoder(latent)

where the maps ``b_k`` are fitted by least squares on the training fields, and the features ``f_k`` are products of
the conditions' network values (continuous conditions in [-1, 1] over the trained range, categories by index). The
latent diffusion then models what the trend leaves: the individual variation and any effect the terms miss.

A card's ``trend`` entry names the terms, e.g. ``[["age"], ["age", "age"], ["sex"], ["sex", "age"]]``. Two rules let
any condition be left unset, as classifier-free guidance allows:

- an unset condition's terms take their mean over the training subjects, so with nothing set the trend is the mean
  training field;
- a condition listed under ``adjusted`` enters as its residual after a linear fit on other terms (the ventricle
  volume beyond what age and sex predict), so leaving it unset gives the mean over that condition, not a bias.

Example:
    >>> import torch
    >>> config = {"terms": [["age"]], "term_means": [0.0]}
    >>> trend_features(config, ["age"], torch.tensor([[0.5], [0.2]]), torch.tensor([[True], [False]]))
    tensor([[0.5000],
            [0.0000]], dtype=torch.float64)
"""

from __future__ import annotations

from typing import Any, Sequence, TypeGuard

import numpy as np
import torch

from ..errors import DiffDefInputError

Coordinates = dict[str, tuple[torch.Tensor, torch.Tensor]]


def _term_columns(terms: Sequence[Sequence[str]], coords: Coordinates, means: Sequence[float] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each term's product ``(B, K)`` float64, and whether all its conditions are set ``(B, K)``; unset entries take
    ``means`` when given."""
    batch = next(iter(coords.values()))[0].shape[0]
    values: list[torch.Tensor] = []
    available: list[torch.Tensor] = []
    for term in terms:
        value = torch.ones(batch, dtype=torch.float64)
        ok = torch.ones(batch, dtype=torch.bool)
        for name in term:
            if name not in coords:
                raise DiffDefInputError(f"trend term {term}: no condition '{name}' (conditions: {', '.join(coords)})")
            x, present = coords[name]
            value, ok = value * x, ok & present
        if means is not None:
            value = torch.where(ok, value, torch.full_like(value, float(means[len(values)])))
        values.append(value)
        available.append(ok)
    if not values:
        return torch.zeros(batch, 0, dtype=torch.float64), torch.zeros(batch, 0, dtype=torch.bool)
    return torch.stack(values, 1), torch.stack(available, 1)


def _coordinates(config: dict[str, Any], names: Sequence[str], values: torch.Tensor, present: torch.Tensor) -> Coordinates:
    """Network values per condition, the adjusted ones replaced by their residual after their fitted prediction."""
    base = {name: (values[:, j].double(), present[:, j].bool()) for j, name in enumerate(names)}
    coords = dict(base)
    for name, adjust in (config.get("adjusted") or {}).items():
        columns, _ = _term_columns(adjust["terms"], base, adjust["term_means"])
        coefficients = torch.as_tensor(adjust["coefficients"], dtype=torch.float64)
        x, ok = base[name]
        coords[name] = (x - coefficients[0] - columns @ coefficients[1:], ok)
    return coords


def trend_features(config: dict[str, Any], names: Sequence[str], values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Features ``(B, K)`` of a fitted trend for network condition values ``(B, n)`` and their ``present`` mask."""
    columns, _ = _term_columns(config["terms"], _coordinates(config, names, values, present), config["term_means"])
    return columns


def trend_velocity(config: dict[str, Any] | None, names: Sequence[str], intercept: torch.Tensor, maps: torch.Tensor | None, values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The mean velocity ``(B, ndim, *shape)`` for network condition values ``(B, n)``: ``intercept`` (the mean field
    of a model without a trend) plus the term ``maps`` ``(K, ndim, *shape)`` weighted by the features."""
    mean = intercept.unsqueeze(0).expand(values.shape[0], *intercept.shape)
    if not is_fitted(config) or maps is None:
        return mean
    features = trend_features(config, names, values.cpu(), present.cpu()).to(maps)
    return mean + torch.einsum("bk,k...->b...", features, maps)


def _available_means(columns: torch.Tensor, available: torch.Tensor) -> list[float]:
    counts = available.sum(0)
    sums = torch.where(available, columns, torch.zeros_like(columns)).sum(0)
    return [float(s / c) if c > 0 else 0.0 for s, c in zip(sums, counts)]


def fit_trend(
    velocities: np.ndarray, names: Sequence[str], values: torch.Tensor, present: torch.Tensor, terms: Sequence[Sequence[str]], adjusted: dict[str, Any] | None = None, chunk: int = 65536
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Fit a trend to ``velocities`` ``(N, ndim, *shape)``; returns the card entry, the intercept map ``(ndim,
    *shape)`` and the term maps ``(K, ndim, *shape)``, float32.

    ``adjusted`` maps a condition to ``{"terms": [...]}``: it enters as its residual after a least-squares fit on
    those terms, over the subjects where it and they are set. Subjects with a condition unset enter every term of it
    at the term's mean, the value used at sampling time when it is left unset.
    """
    n = int(velocities.shape[0])
    if n < len(terms) + 2:
        raise DiffDefInputError(f"trend: {len(terms)} terms need more than {len(terms) + 1} training fields, found {n}")
    base = _coordinates({}, names, values, present)
    config: dict[str, Any] = {"terms": [list(t) for t in terms], "adjusted": {}}
    for name, adjust in (adjusted or {}).items():
        if name not in base:
            raise DiffDefInputError(f"trend: adjusted condition '{name}' is not a condition (conditions: {', '.join(names)})")
        columns, available = _term_columns(adjust["terms"], base, None)
        rows = base[name][1] & available.all(1)
        if int(rows.sum()) < columns.shape[1] + 2:
            raise DiffDefInputError(f"trend: too few subjects with '{name}' set ({int(rows.sum())}) to adjust it")
        adjust_design = torch.cat([torch.ones(int(rows.sum()), 1, dtype=torch.float64), columns[rows]], 1)
        coefficients = torch.linalg.lstsq(adjust_design, base[name][0][rows, None]).solution[:, 0]
        config["adjusted"][name] = {"terms": [list(t) for t in adjust["terms"]], "coefficients": coefficients.tolist(), "term_means": _available_means(columns, available)}
    coords = _coordinates(config, names, values, present)
    columns, available = _term_columns(config["terms"], coords, None)
    config["term_means"] = _available_means(columns, available)
    columns, _ = _term_columns(config["terms"], coords, config["term_means"])
    design = torch.cat([torch.ones(n, 1, dtype=torch.float64), columns], 1).numpy()
    solve = np.linalg.pinv(design)  # (1 + K, N)
    flat = velocities.reshape(n, -1)
    maps: np.ndarray = np.empty((design.shape[1], flat.shape[1]), dtype=np.float64)
    for start in range(0, flat.shape[1], chunk):
        maps[:, start : start + chunk] = solve @ flat[:, start : start + chunk].astype(np.float64)
    residual_sq = 0.0
    for start in range(0, n, 256):
        residual_sq += float(((flat[start : start + 256].astype(np.float64) - design[start : start + 256] @ maps) ** 2).sum())
    config["residual_rms_mm"] = round(float(np.sqrt(residual_sq / flat.size)), 6)
    shape = velocities.shape[1:]
    maps = maps.astype(np.float32).reshape(design.shape[1], *shape)
    return config, maps[0], maps[1:]


def is_fitted(config: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    """Whether a card's ``trend`` entry has fitted terms (an empty entry, or a recipe's unfitted one, does not)."""
    return bool(config and config.get("terms") and "term_means" in config)
