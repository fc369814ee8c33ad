"""Atomic writes: complete files only, the usual permissions, nothing left behind on failure."""

from __future__ import annotations

import os
import stat

import pytest

from DiffDefAtlasLib.atomic import atomic_path, write_text_atomic


def test_atomic_file_gets_umask_permissions(tmp_path):
    """Reference: os.open of a new file with mode 0666 under the same umask."""
    target = write_text_atomic(tmp_path / "summary.json", "{}")
    os.close(os.open(tmp_path / "plain", os.O_CREAT | os.O_WRONLY, 0o666))
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)


def test_failure_keeps_previous_file_and_leaves_no_temporary(tmp_path):
    """Reference: the previous content, byte for byte."""
    target = write_text_atomic(tmp_path / "atlas.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.txt"]


def test_a_failed_staged_folder_removes_the_parent_folders_it_made(tmp_path):
    """Reference: the file system's own listing. A run into a nested new --out that fails leaves nothing behind,
    while a parent folder that existed before, or that someone else wrote into meanwhile, stays."""
    from DiffDefAtlasLib.atomic import staged_folder

    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with staged_folder(tmp_path / "kept" / "new" / "deeper" / "out") as staging:
            (staging / "atlas.nii.gz").write_bytes(b"partial")
            raise RuntimeError("generation failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"] and not any((tmp_path / "kept").iterdir())
    with pytest.raises(RuntimeError):
        with staged_folder(tmp_path / "kept" / "new" / "deeper" / "out"):
            (tmp_path / "kept" / "new" / "other.txt").write_text("another process's file")
            raise RuntimeError("generation failed")
    assert sorted(p.name for p in (tmp_path / "kept" / "new").iterdir()) == ["other.txt"]
