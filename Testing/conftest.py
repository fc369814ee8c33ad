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
