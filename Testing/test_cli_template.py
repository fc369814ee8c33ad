"""``diffdef-atlas template``: exported files and label volumes against nibabel voxel counts."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from DiffDefAtlasLib.cli.main import main


def test_template_export_volumes_match_nibabel_counts(tmp_path, capsys):
    """Reference: nibabel voxel counts of the written label map times the voxel volume from its header."""
    out = tmp_path / "mni"
    assert main(["template", "--out", str(out), "--resolution", "2mm"]) == 0
    labels = nib.load(str(out / "labels.nii.gz"))
    data = np.asarray(labels.dataobj)
    voxel_ml = float(np.prod(labels.header.get_zooms()[:3])) / 1000.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shape"] == list(data.shape)
    for value, name in {1: "csf", 2: "gm", 3: "wm", 4: "lateral_ventricles"}.items():
        assert summary["label_volumes_ml"][name] == pytest.approx(np.count_nonzero(data == value) * voxel_ml, rel=1e-9)
    assert 5.0 < summary["label_volumes_ml"]["lateral_ventricles"] < 40.0
    t1 = nib.load(str(out / "t1.nii.gz"))
    np.testing.assert_allclose(t1.affine, labels.affine)
    assert "lateral_ventricles" in capsys.readouterr().out
