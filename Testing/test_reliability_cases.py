"""Bad input on the command line as data: every row of :data:`CASES` is one input a hostile new user tried (issue 19),
and one test walks through them all. A new case is one line.

Each must end with exit status 2, exactly one stderr line holding the row's words and no traceback, and no output
folder (nothing is created before every argument and input is checked). The generator is the tiny untrained 2D test
model (conditions age 40-80 years, sex F/M); ``bundled`` models are copies of it installed as the bundled models, one
of them damaged. The images are written here with nibabel and SimpleITK, independently of the library's writers.
``docs/reliability.md`` quotes the count of this table. The Python API has its own table in
``test_reliability_api.py``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DiffDefAtlasLib.cli.main import main

from clichecks import one_error_line
from heads import smooth_blob
from modelfactory import build_tiny_model

pytestmark = pytest.mark.usefixtures("fresh_generator_caches")


@dataclass(frozen=True)
class Inputs:
    """The files a case may name: ``out`` is the output folder that must not appear."""

    model: Path
    head3: Path
    head2: Path
    field: Path
    field_mha: Path
    one_voxel_field: Path
    scalar: Path
    huge_mha: Path
    two_component: Path
    plain_file: Path
    out: Path


class Case(NamedTuple):
    name: str
    argv: Callable[[Inputs], list[str]]
    words: str
    env: dict[str, str] = {}
    bundled: str = ""  # "", or which card of the bundled copy is damaged: "invalid-json" or "minimum-abc"


def gen(i: Inputs, *extra: str) -> list[str]:
    return ["generate", "--model", str(i.model), "--device", "cpu", "--out", str(i.out), *extra]


def sweep(i: Inputs, *extra: str) -> list[str]:
    return ["sweep", "--model", str(i.model), "--device", "cpu", "--out", str(i.out), *extra]


def reg(i: Inputs, moving: Path, fixed: Path, *extra: str, out: Path | None = None) -> list[str]:
    return ["register", "--moving", str(moving), "--fixed", str(fixed), "--out", str(out or i.out), "--device", "cpu",
            "--no-affine", *extra]


CASES = [
    Case("samples negative", lambda i: gen(i, "--samples", "-2"), "--samples"),
    Case("steps 0", lambda i: gen(i, "--steps", "0"), "steps"),
    Case("steps 100000", lambda i: gen(i, "--steps", "100000"), "steps"),
    Case("steps not a number", lambda i: gen(i, "--steps", "abc"), "--steps"),
    Case("seed 10**23", lambda i: gen(i, "--seed", "99999999999999999999999"), "seed"),
    Case("seed -1", lambda i: gen(i, "--seed", "-1"), "seed"),
    Case("seed 2**64", lambda i: gen(i, "--seed", "18446744073709551616"), "seed"),
    Case("temperature nan", lambda i: gen(i, "--temperature", "nan"), "temperature"),
    Case("guidance inf", lambda i: gen(i, "--guidance", "inf"), "guidance"),
    Case("unknown condition", lambda i: gen(i, "--set", "height=3"), "height"),
    Case("age not a number", lambda i: gen(i, "--set", "age=old"), "expected a number"),
    Case("age nan", lambda i: gen(i, "--set", "age=nan"), "finite"),
    Case("age outside the trained range", lambda i: gen(i, "--set", "age=95"), "--allow-extrapolation"),
    Case("sex not a choice", lambda i: gen(i, "--set", "sex=X"), "expected one of F, M"),
    Case("condition without a value", lambda i: gen(i, "--set", "age"), "NAME=VALUE"),
    Case("cuda without CUDA", lambda i: gen(i)[:4] + ["cuda"] + gen(i)[5:], "CUDA"),
    Case("device junk", lambda i: gen(i)[:4] + ["tpu"] + gen(i)[5:], "tpu"),
    Case("missing model", lambda i: ["generate", "--model", "brain4d", "--device", "cpu", "--out", str(i.out)], "brain4d"),
    Case("out is a file", lambda i: ["generate", "--model", str(i.model), "--device", "cpu", "--out", str(i.plain_file / "o")], "plain.txt"),
    Case("bundled card invalid JSON", lambda i: ["generate", "--model", "tiny2d", "--device", "cpu", "--out", str(i.out)],
         "model_card.json", bundled="invalid-json"),
    Case("bundled card minimum abc", lambda i: ["generate", "--model", "tiny2d", "--device", "cpu", "--out", str(i.out)],
         "model_card.json", bundled="minimum-abc"),
    Case("models with a card minimum abc", lambda i: ["models"], "model_card.json", bundled="minimum-abc"),
    Case("models with a card of invalid JSON", lambda i: ["models"], "model_card.json", bundled="invalid-json"),
    Case("sweep vary nan start", lambda i: sweep(i, "--vary", "age=nan:60:5"), "age"),
    Case("sweep vary inf stop", lambda i: sweep(i, "--vary", "age=40:inf:5"), "age"),
    Case("sweep vary nan step", lambda i: sweep(i, "--vary", "age=40:50:nan"), "age"),
    Case("sweep vary unknown condition", lambda i: sweep(i, "--vary", "height=1:2:1"), "height"),
    Case("sweep vary past the range", lambda i: sweep(i, "--vary", "age=40:95:5"), "--allow-extrapolation"),
    Case("analyze a 1x1x1 field", lambda i: ["analyze", str(i.one_voxel_field), "--out", str(i.out)], "one_voxel.nii.gz"),
    Case("analyze a scalar image", lambda i: ["analyze", str(i.scalar), "--out", str(i.out)], "scalar.nii.gz"),
    Case("analyze two components", lambda i: ["analyze", str(i.two_component), "--out", str(i.out)], "two_component.mha"),
    Case("analyze .mha above the size limit", lambda i: ["analyze", str(i.field_mha), "--out", str(i.out)], "field.mha",
         env={"DIFFDEF_ATLAS_MAX_IMAGE_GB": "0.0001"}),
    Case("analyze .nii.gz above the size limit", lambda i: ["analyze", str(i.field), "--out", str(i.out)], "KiB",
         env={"DIFFDEF_ATLAS_MAX_IMAGE_GB": "0.0001"}),
    Case("analyze an .mha claiming 3000^3 x 3", lambda i: ["analyze", str(i.huge_mha), "--out", str(i.out)], "3000x3000x3000"),
    Case("register a 2D moving to a 3D fixed", lambda i: reg(i, i.head2, i.head3), "head2.nii.gz"),
    Case("register a 3D moving to a 2D fixed", lambda i: reg(i, i.head3, i.head2), "head3.nii.gz"),
    Case("register --out a file", lambda i: reg(i, i.head3, i.head3, out=i.plain_file), "plain.txt"),
    Case("register refine negative", lambda i: reg(i, i.head3, i.head3, "--refine", "-1"), "--refine"),
    Case("register cuda without CUDA", lambda i: reg(i, i.head3, i.head3)[:8] + ["cuda"] + reg(i, i.head3, i.head3)[9:], "CUDA"),
    Case("template unknown resolution", lambda i: ["template", "--out", str(i.out), "--resolution", "3mm"], "--resolution"),
    Case("unknown command", lambda i: ["frobnicate"], "frobnicate"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cases")
    paths = {"model": build_tiny_model(d / "tiny2d")}
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for name, array in (("head3", smooth_blob((24, 24, 24))), ("head2", smooth_blob((24, 24))),
                        ("scalar", smooth_blob((8, 8, 8)))):
        paths[name] = d / f"{name}.nii.gz"
        if array.ndim == 2:
            sitk.WriteImage(sitk.GetImageFromArray(array), str(paths[name]))
        else:
            nib.save(nib.Nifti1Image(array, affine), str(paths[name]))
    field = np.zeros((32, 32, 32, 1, 3), np.float32)  # 384 KiB, above the 0.0001 GiB (105 KiB) limit of two cases
    paths["field"] = d / "field.nii.gz"
    nib.save(nib.Nifti1Image(field, affine, dtype=np.float32), str(paths["field"]))
    paths["field_mha"] = d / "field.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((32, 32, 32, 3), np.float32), isVector=True), str(paths["field_mha"]))
    paths["one_voxel_field"] = d / "one_voxel.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((1, 1, 1, 1, 3), np.float32), affine), str(paths["one_voxel_field"]))
    paths["two_component"] = d / "two_component.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8, 8, 2), np.float32), isVector=True), str(paths["two_component"]))
    paths["huge_mha"] = d / "huge.mha"
    paths["huge_mha"].write_text("ObjectType = Image\nNDims = 3\nDimSize = 3000 3000 3000\nElementNumberOfChannels = 3\n"
                                 "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n")
    paths["plain_file"] = d / "plain.txt"
    paths["plain_file"].write_text("a file, not a folder\n")
    return paths


def _install_bundled(models: Path, tiny: Path, damage: str) -> None:
    """The tiny model as the only bundled model, its card damaged as ``damage`` says."""
    shutil.copytree(tiny, models / "tiny2d")
    card = models / "tiny2d" / "model_card.json"
    if damage == "invalid-json":
        card.write_text('{"name": "tiny2d", "conditions": [')
    else:
        data = json.loads(card.read_text())
        data["conditions"][0]["minimum"] = "abc"
        card.write_text(json.dumps(data))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_bad_input_is_one_line_and_writes_nothing(case, files, tmp_path, capsys, monkeypatch, untrained_registration_network):
    if case.name.endswith("without CUDA") and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if case.bundled:
        import DiffDefAtlasLib.generate.bundled as bundled

        _install_bundled(tmp_path / "models", files["model"], case.bundled)
        monkeypatch.setattr(bundled, "models_dir", lambda: tmp_path / "models")
    inputs = Inputs(**files, out=tmp_path / "out")
    before = files["plain_file"].read_bytes()
    try:
        code = main(case.argv(inputs))
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    one_error_line(capsys, code, case.words, status=2)
    assert not inputs.out.exists(), f"{case.name}: {sorted(p.name for p in inputs.out.iterdir())}"
    assert files["plain_file"].read_bytes() == before
    assert not any(p.name.startswith(".") for p in files["plain_file"].parent.iterdir()), "a staging folder was left"


def test_the_table_is_not_vacuous(files, tmp_path, capsys, untrained_registration_network):
    """Control: the good inputs the cases spoil go through, so each failure above is due to its bad part."""
    i = Inputs(**files, out=tmp_path / "g")
    assert main(gen(i, "--steps", "2")) == 0
    assert main(["analyze", str(i.field), "--out", str(tmp_path / "a")]) == 0
    assert main(reg(i, i.head3, i.head3, out=tmp_path / "r")) == 0
    capsys.readouterr()


@pytest.mark.parametrize("name", ["cuda:abc", "cuda:-1", "cuda:", "cuda:١"])
def test_a_malformed_cuda_device_is_bad_input_where_cuda_is_present(name, monkeypatch):
    """Reference: torch.device('cuda:abc') raises RuntimeError, which came out as an internal error (exit 1) on a
    machine with CUDA; CUDA's presence is pretended here so that the check runs on any machine."""
    from DiffDefAtlasLib.device import select_device
    from DiffDefAtlasLib.errors import DiffDefInputError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DiffDefInputError, match="expected one of"):
        select_device(name)
