"""``register`` estimates its peak memory from the headers and refuses, before reading voxels or making any output,
a registration that would not fit (DiffDefAtlasLib.register.cli, docs/registration.md "Memory")."""

from __future__ import annotations

import argparse

import pytest

from test_register_cli import _inputs_3d

from DiffDefAtlasLib import imageio
from DiffDefAtlasLib.cli.main import main as cli_main
from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.register.cli import (REGISTER_PEAK_BASE_BYTES, add_register_arguments, check_register_memory,
                                          estimate_register_peak_bytes, header_voxels)

GiB = 1024**3


def _command(paths, out) -> list[str]:
    return ["register", "--moving", str(paths["moving"]), "--fixed", str(paths["fixed"]), "--out", str(out),
            "--fixed-labels", str(paths["fixed_labels"]), "--device", "cpu"]


def _no_voxels_read(monkeypatch) -> None:
    """Make any voxel read fail: the memory check must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("voxels were read before the memory check")

    monkeypatch.setattr(imageio, "read_image", refuse)


@pytest.fixture
def inputs(tmp_path):
    return _inputs_3d(tmp_path)


def test_header_voxels_reads_the_size_only(inputs):
    assert header_voxels(inputs["moving"]) == 40 * 44 * 40
    assert header_voxels(inputs["fixed"]) == 32 * 32 * 32
    assert header_voxels(inputs["moving"].parent / "missing.nii.gz") is None


def test_the_estimate_follows_the_measured_peaks():
    """Measured peaks (maximum RSS, MiB) of ``register --device cpu`` against the 2 mm template with --fixed-labels:
    IXI259 1926, its 256x256x300 resampling 3185; the estimate stays above them by less than 20 %."""
    for voxels, measured_mib in ((256 * 256 * 150, 1926), (256 * 256 * 300, 3185)):
        ratio = estimate_register_peak_bytes(voxels, 80 * 96 * 80, True) / (measured_mib * 1024**2)
        assert 1.0 < ratio < 1.2
    assert estimate_register_peak_bytes(10**6, 10**5, False) < estimate_register_peak_bytes(10**6, 10**5, True)


def test_a_small_estimate_passes(inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "physical_memory_bytes", lambda: 2 * GiB)
    args = add_register_arguments(argparse.ArgumentParser()).parse_args(_command(inputs, tmp_path / "out")[1:])
    assert estimate_register_peak_bytes(40 * 44 * 40, 32 * 32 * 32, True) < 2 * GiB
    check_register_memory(args)  # no error
    assert cli_main(_command(inputs, tmp_path / "out")) == 0
    assert (tmp_path / "out" / "summary.json").is_file()


def test_too_little_memory_is_refused_before_anything_is_made(inputs, tmp_path, monkeypatch, capsys):
    limit = REGISTER_PEAK_BASE_BYTES // 2
    monkeypatch.setattr(imageio, "physical_memory_bytes", lambda: limit)
    _no_voxels_read(monkeypatch)
    out = tmp_path / "result" / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli_main(_command(inputs, out)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    needed = imageio.format_bytes(estimate_register_peak_bytes(40 * 44 * 40, 32 * 32 * 32, True))
    assert f"needs about {needed}" in lines[0] and f"the {imageio.format_bytes(limit)} available" in lines[0]
    assert str(inputs["moving"]) in lines[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == before


def test_unknown_memory_checks_nothing(inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "physical_memory_bytes", lambda: None)
    args = add_register_arguments(argparse.ArgumentParser()).parse_args(_command(inputs, tmp_path / "out")[1:])
    check_register_memory(args)


def test_an_unreadable_header_is_left_to_read_image(tmp_path, monkeypatch):
    """A missing or corrupt file is reported by read_image, with its usual message, not by the memory check."""
    monkeypatch.setattr(imageio, "physical_memory_bytes", lambda: 1)
    (tmp_path / "bad.nii.gz").write_bytes(b"not an image")
    args = argparse.Namespace(moving=tmp_path / "bad.nii.gz", fixed=tmp_path / "bad.nii.gz", fixed_labels=None)
    check_register_memory(args)
    with pytest.raises(DiffDefInputError):
        imageio.read_image(tmp_path / "bad.nii.gz")
