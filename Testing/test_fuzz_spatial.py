"""Property-based tests (hypothesis) of the spatial core and the file loaders."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.imageio import read_image
from DiffDefAtlasLib.fieldio import load_displacement
from DiffDefAtlasLib.spatial import Grid, compose_displacements, jacobian_determinant, warp_image
from fieldfactory import smooth_random_field, t

FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(
    seed=st.integers(0, 10_000),
    amplitude=st.floats(0.5, 2.5),
    spacing=st.tuples(st.floats(0.8, 2.5), st.floats(0.8, 2.5), st.floats(0.8, 2.5)),
)
def test_jacobian_of_composition_is_product_of_jacobians(seed, amplitude, spacing):
    """Reference: the chain rule, det J[phi1 o phi2](x) = det J[phi1](phi2(x)) * det J[phi2](x)."""
    shape = (20, 20, 20)
    grid = Grid(shape, np.diag([*spacing, 1.0]))
    outer = t(smooth_random_field(shape, amplitude, sigma_vox=4.0, seed=seed))
    inner = t(smooth_random_field(shape, amplitude, sigma_vox=4.0, seed=seed + 1))
    composed = compose_displacements(outer, inner, grid)
    lhs = jacobian_determinant(composed, grid)
    jac_outer_moved = warp_image(jacobian_determinant(outer, grid)[:, None], inner, grid, padding="border")[:, 0]
    rhs = jac_outer_moved * jacobian_determinant(inner, grid)
    interior = (slice(None),) + (slice(4, -4),) * 3
    # Finite differences and linear interpolation make this approximate: a few percent at most.
    assert torch.allclose(lhs[interior], rhs[interior], atol=0.04)


@FAST
@given(seed=st.integers(0, 10_000), amplitude=st.floats(0.0, 3.0))
def test_warping_by_zero_then_field_equals_field(seed, amplitude):
    """Reference: composing with the identity (zero displacement) leaves a field unchanged."""
    grid = Grid((16, 18, 14), np.diag([1.5, 1.0, 2.0, 1.0]))
    u = t(smooth_random_field(grid.shape, amplitude + 1e-3, sigma_vox=3.0, seed=seed))
    zero = torch.zeros_like(u)
    assert torch.allclose(compose_displacements(u, zero, grid), u, atol=1e-9)
    assert torch.allclose(compose_displacements(zero, u, grid), u, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(payload=st.binary(min_size=0, max_size=2048), suffix=st.sampled_from([".nii.gz", ".nii", ".mha", ".nrrd", ".png", ".dcm"]))
def test_random_bytes_give_clean_errors(tmp_path_factory, payload, suffix):
    """Reference: any byte string is either a readable image or a DiffDefInputError naming the file; never a crash."""
    path = tmp_path_factory.mktemp("fuzz") / f"random{suffix}"
    path.write_bytes(payload)
    for loader in (read_image, load_displacement):
        try:
            loader(path)
        except DiffDefInputError as error:
            assert path.name in str(error)
