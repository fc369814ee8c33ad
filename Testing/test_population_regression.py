"""Log-Euclidean regression and residual PCA of the population model, against synthetic data with known parameters."""

from __future__ import annotations

import numpy as np
import pytest

from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.population import fit_linear_gaussian


def _toy(n=40, d=60, seed=0):
    rng = np.random.default_rng(seed)
    ages = rng.uniform(20, 80, n)
    sexes = rng.integers(0, 2, n).astype(float)
    v0, a, b = rng.normal(size=(3, d))
    covariates = np.stack([ages - 50.0, sexes], axis=1)
    return rng, covariates, v0, a, b


def test_regression_recovers_exact_linear_trend():
    """Reference: a noise-free toy dataset v = v0 + a (age - 50) + b sex built from known v0, a, b."""
    _, covariates, v0, a, b = _toy()
    fields = v0 + covariates[:, :1] * a + covariates[:, 1:] * b
    fit = fit_linear_gaussian(fields, covariates, n_components=0)
    np.testing.assert_allclose(fit.intercept, v0, atol=1e-10)
    np.testing.assert_allclose(fit.coefficients[0], a, atol=1e-10)
    np.testing.assert_allclose(fit.coefficients[1], b, atol=1e-10)
    assert fit.residual_variance < 1e-20
    np.testing.assert_allclose(fit.mean(covariates[3]), fields[3], atol=1e-10)


def test_residual_modes_recover_known_subspace_and_sigmas():
    """Reference: residuals drawn as z1 s1 e1 + z2 s2 e2 with known orthonormal e_k and s = (3, 1); the fitted modes must
    span that plane and their standard deviations match within sampling error (n = 400)."""
    rng, covariates, v0, a, b = _toy(n=400, d=30, seed=1)
    basis, _ = np.linalg.qr(rng.normal(size=(30, 2)))
    sigmas = np.array([3.0, 1.0])
    z = rng.standard_normal((400, 2))
    fields = v0 + covariates[:, :1] * a + covariates[:, 1:] * b + (z * sigmas) @ basis.T
    fit = fit_linear_gaussian(fields, covariates, n_components=2)
    directions = fit.modes / fit.sigmas[:, None]
    # principal angles between the fitted and true planes: singular values of E_fit^T E_true are cosines (1 = same)
    cosines = np.linalg.svd(directions @ basis, compute_uv=False)
    assert cosines.min() > 0.99
    np.testing.assert_allclose(fit.sigmas, sigmas, rtol=0.12)
    assert fit.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(fit.coefficients[0], a, atol=0.02)


def test_regression_rejects_bad_designs():
    """Reference: identifiability rules (more subjects than parameters, non-collinear covariates, K <= dof)."""
    _, covariates, v0, _, _ = _toy(n=10)
    fields = np.tile(v0, (10, 1))
    with pytest.raises(DiffDefInputError, match="collinear"):
        fit_linear_gaussian(fields, np.stack([covariates[:, 0], 2 * covariates[:, 0]], axis=1), 0)
    with pytest.raises(DiffDefInputError, match="n_components"):
        fit_linear_gaussian(fields, covariates, 8)
    with pytest.raises(DiffDefInputError, match="rows"):
        fit_linear_gaussian(fields[:5], covariates, 1)
