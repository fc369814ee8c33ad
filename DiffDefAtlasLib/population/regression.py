"""Log-Euclidean linear regression of velocity fields on covariates, with a low-rank Gaussian model of the residuals.

Each subject's stationary velocity field ``v_i`` (flattened to ``D`` numbers) is modelled as

    v_i = intercept + sum_p X[i, p] * coefficients[p] + sum_k z_ik * sigma_k * e_k + noise,   z_ik ~ N(0, 1)

where ``X`` holds centred covariates (age minus a reference age, sex 0/1, ...), the ``e_k`` are the leading
principal directions of the least-squares residuals and ``sigma_k`` their standard deviations (residual singular
values divided by ``sqrt(n - p - 1)``, the unbiased scaling). Velocities live in a vector space, so the linear model
is log-Euclidean: the deformation of a velocity is ``exp(v)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DiffDefInputError


@dataclass
class LinearGaussianFit:
    """Result of :func:`fit_linear_gaussian` (arrays flattened over the field: ``D`` values per field).

    Attributes:
        intercept: ``(D,)`` the field at covariates 0.
        coefficients: ``(P, D)`` one field per covariate (change per unit of the covariate).
        modes: ``(K, D)`` residual principal directions scaled by their standard deviation (``sigma_k e_k``).
        sigmas: ``(K,)`` standard deviations along the unit directions ``e_k``.
        explained_variance_ratio: ``(K,)`` share of the residual variance along each direction.
        residual_variance: total residual variance per subject (sum over ``D``), unbiased.
    """

    intercept: np.ndarray
    coefficients: np.ndarray
    modes: np.ndarray
    sigmas: np.ndarray
    explained_variance_ratio: np.ndarray
    residual_variance: float

    def mean(self, covariates: np.ndarray) -> np.ndarray:
        """Conditional mean ``(D,)`` for one covariate vector ``(P,)``, or ``(N, D)`` for ``(N, P)``."""
        covariates = np.asarray(covariates, dtype=np.float64)
        return self.intercept + covariates @ self.coefficients

    def sample(self, covariates: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """Fields ``mean(covariates) + latent @ modes`` for latent codes ``(N, K)``."""
        return self.mean(covariates) + np.asarray(latent, dtype=np.float64) @ self.modes


def fit_linear_gaussian(fields: np.ndarray, covariates: np.ndarray, n_components: int) -> LinearGaussianFit:
    """Least-squares regression of ``fields`` ``(N, D)`` on ``covariates`` ``(N, P)`` plus an intercept, and PCA of the residuals.

    Args:
        fields: one flattened field per row.
        covariates: the design without the intercept column; centre them to make the intercept a meaningful mean.
        n_components: ``K``, the number of residual directions kept (at most ``N - P - 1``).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(20, 1))
        >>> fit = fit_linear_gaussian(1.0 + 2.0 * x @ np.ones((1, 5)), x, 0)
        >>> np.allclose(fit.coefficients, 2.0), np.allclose(fit.intercept, 1.0)
        (True, True)
    """
    fields = np.asarray(fields, dtype=np.float64)
    covariates = np.asarray(covariates, dtype=np.float64)
    if covariates.ndim == 1:
        covariates = covariates[:, None]
    n, p = covariates.shape
    if fields.ndim != 2 or fields.shape[0] != n:
        raise DiffDefInputError(f"fields must be (N, D) with N = {n} rows like the covariates, found {fields.shape}")
    dof = n - p - 1
    if dof < 1:
        raise DiffDefInputError(f"regression needs more subjects than covariates + 1, found {n} subjects and {p} covariates")
    if not 0 <= n_components <= dof:
        raise DiffDefInputError(f"n_components must be in [0, {dof}] (subjects - covariates - 1), found {n_components}")
    design = np.concatenate([np.ones((n, 1)), covariates], axis=1)
    if np.linalg.matrix_rank(design) < p + 1:
        raise DiffDefInputError("covariates are collinear (or constant): the regression is not identifiable")
    beta, *_ = np.linalg.lstsq(design, fields, rcond=None)
    residuals = fields - design @ beta
    # PCA through the small N x N Gram matrix: residuals = U S Vt.
    gram = residuals @ residuals.T
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    eigenvectors = eigenvectors[:, order]
    total = float(eigenvalues.sum())
    keep = eigenvalues[:n_components]
    singular = np.sqrt(keep)
    directions = (eigenvectors[:, :n_components].T @ residuals) / np.where(singular > 0, singular, 1.0)[:, None]
    sigmas = singular / np.sqrt(dof)
    ratio = keep / total if total > 0 else np.zeros_like(keep)
    return LinearGaussianFit(
        intercept=beta[0],
        coefficients=beta[1:],
        modes=directions * sigmas[:, None],
        sigmas=sigmas,
        explained_variance_ratio=ratio,
        residual_variance=total / dof,
    )
