"""Outputs (issue 8, items 3 and 5): atomic writes, existing folders kept, provenance in every summary.json.

The generator commands are covered in ``test_reliability_generate.py``; here: the atomic writers themselves,
``analyze``, ``template`` and ``register`` (with a randomly initialised registration network, so the test does not
depend on trained weights).
"""

from __future__ import annotations

import json
import os
import stat

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DiffDefAtlasLib.atomic import atomic_path, write_text_atomic
from DiffDefAtlasLib.cli.main import main
from DiffDefAtlasLib.imageio import Volume, read_image, write_image

VERSION_KEYS = ("diffdef_atlas_version", "torch_version", "monai_version", "device", "peak_rss_mb")


def leftovers(folder) -> list[str]:
    """Temporary files of the atomic writers still present in ``folder``."""
    return [p.name for p in folder.iterdir() if ".part" in p.name]


# ------------------------------------------------------------------------------------------------ atomic writers
@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_image_write_keeps_the_previous_file(tmp_path, monkeypatch, error):
    """Reference: the bytes of the first atlas.nii.gz. The second write is interrupted after SimpleITK has written
    part of the temporary file: the old file is unchanged (nibabel reads the old values) and nothing is left over."""
    path = tmp_path / "atlas.nii.gz"
    write_image(Volume(np.full((6, 7, 8), 1.0, np.float32), np.eye(4)), path)
    before = path.read_bytes()
    real_write = sitk.WriteImage

    def partial_write(image, filename, *args, **kwargs):
        real_write(image, filename, *args, **kwargs)
        assert filename != str(path), "the writer must never write under the final name"
        with open(filename, "r+b") as stream:
            stream.truncate(20)
        raise error

    monkeypatch.setattr(sitk, "WriteImage", partial_write)
    with pytest.raises(type(error)):
        write_image(Volume(np.full((6, 7, 8), 2.0, np.float32), np.eye(4)), path)
    assert path.read_bytes() == before
    assert np.all(np.asanyarray(nib.load(str(path)).dataobj) == 1.0)
    assert leftovers(tmp_path) == []


def test_interrupted_text_write_keeps_the_previous_file(tmp_path):
    """Reference: the first summary's text; an exception half-way through the second write changes nothing."""
    path = tmp_path / "summary.json"
    write_text_atomic(path, '{"run": 1}\n')
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text('{"run": 2, "trunc')
            raise RuntimeError("killed")
    assert path.read_text() == '{"run": 1}\n' and leftovers(tmp_path) == []


def test_interrupted_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    """Reference: the state saved at step 2; torch.save dying mid-write at step 4 must leave step 2 as the newest
    complete checkpoint (loaded with weights_only=True) and no partial file under a checkpoint name."""
    from DiffDefAtlasLib.train import checkpoints

    checkpoints.save_checkpoint(tmp_path, "autoencoder", 2, {"w": torch.full((3,), 2.0)})
    real_save = torch.save

    def dying_save(obj, target, *args, **kwargs):
        real_save(obj, target, *args, **kwargs)
        with open(target, "r+b") as stream:
            stream.truncate(64)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_checkpoint(tmp_path, "autoencoder", 4, {"w": torch.full((3,), 4.0)})
    step, state = checkpoints.latest_checkpoint(tmp_path, "autoencoder")
    assert step == 2 and torch.equal(state["w"], torch.full((3,), 2.0))
    assert leftovers(tmp_path) == []


def test_interrupted_loss_log_append_keeps_every_complete_row(tmp_path, monkeypatch):
    """Reference: the two rows logged before; a write dying half-way through the third row must leave exactly those
    two rows readable by the csv module (no torn row), and the next append must work."""
    import csv as csv_module

    from DiffDefAtlasLib.train.checkpoints import LossLog

    log = LossLog(tmp_path, "diffusion")
    log.append(10, {"loss": 0.5})
    log.append(20, {"loss": 0.25})
    real_writer = csv_module.DictWriter

    class DyingWriter(real_writer):
        def writerows(self, rows):
            rows = list(rows)
            super().writerows(rows[:-1])
            self.writer.writerow(["30", "0.1"][:1])  # half a row, then the process dies
            raise KeyboardInterrupt

    monkeypatch.setattr(csv_module, "DictWriter", DyingWriter)
    with pytest.raises(KeyboardInterrupt):
        log.append(30, {"loss": 0.125})
    monkeypatch.setattr(csv_module, "DictWriter", real_writer)
    assert [(r["step"], r["loss"]) for r in log.rows()] == [("10", "0.5"), ("20", "0.25")]
    log.append(30, {"loss": 0.125})
    with open(log.path, newline="") as stream:
        assert [row for row in csv_module.reader(stream)] == [["step", "loss"], ["10", "0.5"], ["20", "0.25"], ["30", "0.125"]]
    assert leftovers(tmp_path) == []


def test_atomic_files_get_the_usual_permissions(tmp_path):
    """Reference: a file created by a plain open() in the same folder (the process umask applies to both); a
    temporary-file mode of 0600 would hide every output from the user's colleagues."""
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as stream:
        stream.write("x")
    write_text_atomic(tmp_path / "summary.json", "{}")
    write_image(Volume(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "atlas.nii.gz")
    expected = stat.S_IMODE(os.stat(plain).st_mode)
    for name in ("summary.json", "atlas.nii.gz"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == expected, name


# ------------------------------------------------------------------------------------------------ commands
@pytest.fixture
def inputs(tmp_path):
    """A 2D image pair (smooth blobs, nibabel) and a smooth 3D displacement field (SimpleITK, LPS)."""
    yy, xx = np.mgrid[:48, :56].astype(np.float64)
    blob = lambda cy, cx: np.clip(1.2 - np.hypot((yy - cy) / 16, (xx - cx) / 19), 0, 1).astype(np.float32) * 100  # noqa: E731
    affine = np.diag([1.5, 1.5, 1.0, 1.0])
    nib.save(nib.Nifti1Image(blob(24, 28), affine), str(tmp_path / "fixed.nii.gz"))
    nib.save(nib.Nifti1Image(blob(25, 27), affine), str(tmp_path / "moving.nii.gz"))
    field = np.zeros((10, 12, 14, 3))
    field[..., 0] = 0.5 * np.sin(np.linspace(0, np.pi, 14))[None, None, :]
    image = sitk.GetImageFromArray(field, isVector=True)
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(tmp_path / "field.nii.gz"))
    return tmp_path


def _argv(command, inputs, out):
    return {
        "analyze": ["analyze", str(inputs / "field.nii.gz"), "--out", str(out)],
        "template": ["template", "--resolution", "2mm", "--out", str(out)],
        "register": ["register", "--moving", str(inputs / "moving.nii.gz"), "--fixed", str(inputs / "fixed.nii.gz"), "--out", str(out),
                     "--device", "cpu", "--no-affine"],
    }[command]


@pytest.mark.parametrize("command", ["analyze", "template", "register"])
def test_existing_output_folder_is_not_overwritten(command, inputs, tmp_path, capsys, untrained_registration_network):
    """Reference: a folder holding the user's file; without --overwrite the command stops with one line naming the
    folder and nothing in it changes. --overwrite replaces a result folder as a whole, so a folder without a
    summary.json (not a result of this tool) is refused too and keeps the user's file; a result folder is replaced
    as a whole (a file of the older run is gone) and no staging folder is left beside it."""
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("user data")
    code = main(_argv(command, inputs, out))
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and str(out) in err[0] and "--overwrite" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main(_argv(command, inputs, out) + ["--overwrite"]) == 2
    assert "not a diffdef-atlas result" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    result = tmp_path / "result"
    assert main(_argv(command, inputs, result)) == 0
    (result / "older_run.txt").write_text("from an earlier run")
    assert main(_argv(command, inputs, result) + ["--overwrite"]) == 0
    assert (result / "summary.json").is_file() and not (result / "older_run.txt").exists() and leftovers(result) == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("command", ["analyze", "template"])
def test_summary_records_versions_device_and_peak_rss(command, inputs, tmp_path):
    """Reference: the installed torch and monai versions and the package version; the peak RSS is at least the size
    of torch in memory and at most the current process peak from getrusage."""
    import resource

    import monai

    from DiffDefAtlasLib import __version__

    out = tmp_path / "o"
    assert main(_argv(command, inputs, out)) == 0
    environment = json.loads((out / "summary.json").read_text())["environment"]
    assert {k: environment.get(k) for k in ("diffdef_atlas_version", "torch_version", "monai_version", "device")} == {
        "diffdef_atlas_version": __version__, "torch_version": torch.__version__, "monai_version": monai.__version__, "device": "cpu"}
    assert 50 < environment["peak_rss_mb"] <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 + 1


def test_register_summary_records_versions_device_and_peak_rss(inputs, tmp_path, untrained_registration_network):
    """Reference: the installed torch version; the keys every other command records."""
    out = tmp_path / "o"
    assert main(_argv("register", inputs, out)) == 0
    environment = json.loads((out / "summary.json").read_text()).get("environment", {})
    assert environment.get("torch_version") == torch.__version__
    for key in VERSION_KEYS:
        assert environment.get(key) not in (None, ""), key


def test_register_outputs_read_back(inputs, tmp_path, untrained_registration_network):
    """Control for the tests above: the register command with the random network writes readable, finite images on
    the fixed grid (nibabel reads the fixed geometry independently)."""
    out = tmp_path / "o"
    assert main(_argv("register", inputs, out)) == 0
    fixed = nib.load(str(inputs / "fixed.nii.gz"))
    warped = read_image(out / "warped.nii.gz")
    assert fixed.shape == (48, 56) and warped.array.shape == fixed.shape and np.isfinite(warped.array).all()


def test_outputs_minimal_and_the_float32_itk_field(tmp_path, capsys):
    """Reference: nibabel reads the files back; ``--outputs minimal`` writes the atlas, labels, displacement and
    summary only; the ITK field is float32 (it was float64, 61 MB for brain3d) and equals the RAS field in LPS."""
    import nibabel as nib

    from DiffDefAtlasLib.cli.main import main
    from modelfactory import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny2d")
    assert main(["generate", "--model", str(model), "--device", "cpu", "--outputs", "minimal", "--out", str(tmp_path / "m")]) == 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["atlas.nii.gz", "displacement.nii.gz", "labels.nii.gz", "summary.json"]
    assert main(["generate", "--model", str(model), "--device", "cpu", "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    itk = nib.load(str(tmp_path / "a" / "displacement_itk.nii.gz"))
    ras = nib.load(str(tmp_path / "a" / "displacement.nii.gz"))
    assert itk.get_data_dtype() == np.float32
    flip = np.array([-1.0, -1.0, 1.0][: itk.shape[-1]])
    np.testing.assert_allclose(np.asarray(itk.dataobj) * flip, np.asarray(ras.dataobj), atol=1e-6)


def test_summaries_say_what_the_jacobian_is_and_on_which_grid(tmp_path, capsys):
    """generate's det J is computed on the working grid and analyze's on the field's own grid; both summaries say so
    (the two differed by up to 0.49 in the brain with nothing to tell them apart)."""
    import json

    from DiffDefAtlasLib.cli.main import main
    from modelfactory import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny2d")
    assert main(["generate", "--model", str(model), "--device", "cpu", "--out", str(tmp_path / "g")]) == 0
    assert main(["analyze", str(tmp_path / "g" / "displacement.nii.gz"), "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    generated = json.loads((tmp_path / "g" / "summary.json").read_text())["jacobian"]
    analysed = json.loads((tmp_path / "a" / "summary.json").read_text())["jacobian"]
    assert generated.startswith("det J of the stored map x -> x + u(x)") and "working grid" in generated
    assert "below 1 where a structure is larger in the atlas" in generated and "field's own grid" in analysed


def test_an_extrapolated_atlas_says_so_in_its_summary_and_its_preview(tmp_path, capsys, monkeypatch):
    """The tiny model is trained on ages 40-80 (its card is the reference); an atlas at age 95 made with
    ``--allow-extrapolation`` records the condition, its value and the range in ``summary.json`` and in the preview's
    label, and one within the range records nothing (it said so nowhere before)."""
    import json

    from DiffDefAtlasLib.cli.main import main
    from DiffDefAtlasLib.generate import preview
    from DiffDefAtlasLib.generate.model_card import ModelCard
    from modelfactory import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny2d")
    age = ModelCard.load(model / "model_card.json").condition("age")
    labels: list[str] = []
    drawn = preview.slices_with_jacobian
    monkeypatch.setattr(preview, "slices_with_jacobian", lambda atlas, jacobian=None, label=None, **kw: labels.append(label) or drawn(atlas, jacobian, label, **kw))
    beyond = age.maximum + 15
    common = ["generate", "--model", str(model), "--device", "cpu", "--steps", "2"]
    assert main([*common, "--set", f"age={beyond:g}", "--allow-extrapolation", "--out", str(tmp_path / "x")]) == 0
    assert main([*common, "--set", f"age={age.minimum:g}", "--out", str(tmp_path / "in")]) == 0
    capsys.readouterr()
    recorded = json.loads((tmp_path / "x" / "summary.json").read_text())["extrapolated"]
    assert recorded == {"age": {"value": beyond, "trained_range": [age.minimum, age.maximum], "units": age.units}}
    assert json.loads((tmp_path / "in" / "summary.json").read_text())["extrapolated"] == {}
    assert f"EXTRAPOLATED: age {beyond:g} outside {age.minimum:g}-{age.maximum:g}" in labels[0]
    assert "EXTRAPOLATED" not in labels[1]
