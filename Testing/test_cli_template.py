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


def test_template_export_carries_the_mni_copyright_notice(tmp_path, capsys):
    """The MNI licence grants copying "provided that the above copyright notice appear in all copies": the export
    holds the notice, verbatim from ``Resources/template/LICENSE``, beside the images, and says so."""
    from DiffDefAtlasLib.resources import resource_path

    out = tmp_path / "mni"
    assert main(["template", "--out", str(out), "--resolution", "2mm"]) == 0
    notice = out / "LICENSE_MNI_ICBM152.txt"
    assert notice.is_file() and notice.stat().st_size > 0
    text = notice.read_text(encoding="utf-8")
    assert text == resource_path("template", "LICENSE").read_text(encoding="utf-8")
    flat = " ".join(text.split())
    assert "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University." in flat
    assert "provided that the above copyright notice appear in all copies" in flat
    assert "Copyright (C) 1993-2009 Louis Collins" in (out / "NOTICE.txt").read_text(encoding="utf-8")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["copyright"].startswith("Copyright (C) 1993-2009 Louis Collins")
    assert set(summary["notice_files"]) == {"LICENSE_MNI_ICBM152.txt", "NOTICE.txt"}
    assert "LICENSE_MNI_ICBM152.txt" in capsys.readouterr().out
