"""Shared pytest fixtures."""

from __future__ import annotations

import pytest
import torch

from DiffDefAtlasLib.resources import shared_data_dir

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_data():
    """The shared research data folder; skips the test when it is absent (a user's fresh clone)."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is absent (set DIFFDEF_ATLAS_DATA to point at it)")
    return path


@pytest.fixture
def fresh_generator_caches():
    """Loaded generators and templates are cached per process; a test using this starts from the files on disk."""
    from DiffDefAtlasLib.generate import atlas, bundled

    bundled._load_cached.cache_clear()
    atlas._template_images_cached.cache_clear()
    yield
    bundled._load_cached.cache_clear()
    atlas._template_images_cached.cache_clear()


@pytest.fixture
def untrained_registration_network(monkeypatch):
    """A random registration network instead of the bundled one: the tests must not depend on trained weights, and a
    bad-input check that goes missing then lets ``register`` run to the end (and the test fail)."""
    import DiffDefAtlasLib.register.weights as weights
    from DiffDefAtlasLib.register.network import NetworkConfig, RegistrationNetwork

    def load(spatial_dims=3, device="cpu", folder=None):
        torch.manual_seed(0)
        return RegistrationNetwork(NetworkConfig(spatial_dims=spatial_dims)).eval()

    monkeypatch.setattr(weights, "load_registration_network", load)


def _slicer_core_or_skip():
    """slicer-core's real MRML with the shims of ``Testing/slicershims``; skips where slicer-core has no wheel.

    In CI (``CI`` set) on the platforms slicer-core has wheels for, a missing slicer-core fails instead: the tier
    must run there."""
    import os
    import platform
    import sys

    try:
        import slicer

        slicer.vtkMRMLScene  # noqa: B018 (the meta-package without slicer-core has no MRML)
    except (ImportError, AttributeError):
        reason = "slicer-core is not installed (wheels for Python 3.11 on Linux x86_64: pip install slicer-core)"
        if os.environ.get("CI") and sys.version_info[:2] == (3, 11) and sys.platform == "linux" and platform.machine() == "x86_64":
            pytest.fail(reason + "; CI must run the slicer_core tier")
        pytest.skip(reason)
    from slicershims import application

    return application.start()


@pytest.fixture(scope="session")
def slicer_env():
    """Slicer set up once per session on a real ``vtkMRMLScene`` (see ``Testing/slicershims/application.py``)."""
    return _slicer_core_or_skip()


@pytest.fixture
def scene(slicer_env):
    """The real scene, cleared before each test (the slice views stay, as after File > Close Scene)."""
    slicer_env.scene.Clear(0)
    slicer_env.app.testing = True
    yield slicer_env.scene
    slicer_env.scene.Clear(0)
