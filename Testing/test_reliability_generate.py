"""Reliability of ``generate`` / ``sweep`` through the real command line (issue 8, items 1-5).

Bad conditions, models and devices give one stderr line and a non-zero status; tampered, truncated or pickled weights
are refused without being unpickled; outputs are atomic and never overwritten without ``--overwrite``; the same seed
gives bitwise-identical atlases; every ``summary.json`` records versions, device and peak RSS; a CUDA out-of-memory
error falls back to the CPU with a warning. The model is a tiny untrained 2D generator (synthetic recipe, conditions
age 40-80 years and sex F/M) saved here exactly as a bundled one.
"""

from __future__ import annotations

import json
import pickle
import resource
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from DiffDefAtlasLib.cli.main import main
from DiffDefAtlasLib.bundles import file_sha256 as sha256_file
from DiffDefAtlasLib.imageio import Volume, read_image, write_image

from clichecks import one_error_line
from modelfactory import build_tiny_model

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
VERSION_KEYS = ("diffdef_atlas_version", "torch_version", "monai_version", "device", "peak_rss_mb")

pytestmark = pytest.mark.usefixtures("fresh_generator_caches")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny2d")


@pytest.fixture
def model_copy(model, tmp_path):
    """A private copy of the model folder, to damage."""
    copy = tmp_path / "model_copy"
    shutil.copytree(model, copy)
    return copy


def generate(model, out, *extra):
    return main(["generate", "--model", str(model), "--device", "cpu", "--out", str(out), *extra])


def no_files_in(folder) -> bool:
    return not folder.exists() or not any(folder.iterdir())


# ------------------------------------------------------------------------------------------------ bad input
def test_unknown_condition_name(model, tmp_path, capsys):
    """Reference: the card's condition names (age, sex) must be listed."""
    one_error_line(capsys, generate(model, tmp_path / "o", "--set", "height=180"), "'height'", "valid conditions: age, sex")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value, needle", [("age=old", "expected a number"), ("age=nan", "finite"), ("sex=X", "expected one of F, M"), ("age", "NAME=VALUE")])
def test_bad_condition_values(model, tmp_path, capsys, value, needle):
    """Reference: the card's kinds (age continuous, sex F/M) and the NAME=VALUE syntax."""
    one_error_line(capsys, generate(model, tmp_path / "o", "--set", value), needle)


def test_out_of_range_condition(model, tmp_path, capsys):
    """Reference: the trained range stored in the card, [40, 80] years. Refused without --allow-extrapolation (for
    generate and sweep); with it, exactly one warning line and the atlas of the requested value."""
    out = tmp_path / "o"
    one_error_line(capsys, generate(model, out, "--set", "age=95"), "'age' = 95", "[40, 80]", "--allow-extrapolation")
    assert not out.exists()
    code = main(["sweep", "--model", str(model), "--vary", "age=60:100:20", "--device", "cpu", "--out", str(tmp_path / "s")])
    one_error_line(capsys, code, "'age' = 100", "--allow-extrapolation")
    assert not (tmp_path / "s").exists()
    assert generate(model, out, "--set", "age=95", "--allow-extrapolation") == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "warning" in err[0] and "'age' = 95 is outside the trained range [40, 80]" in err[0]
    assert json.loads((out / "summary.json").read_text())["conditions"]["age"] == 95.0


def test_missing_model(model, tmp_path, capsys):
    """Reference: a name that is not bundled, a folder without a card, and a card whose weights file is gone."""
    one_error_line(capsys, generate("no_such_model", tmp_path / "o"), "'no_such_model'", "no such bundled model")
    (tmp_path / "empty").mkdir()
    one_error_line(capsys, generate(tmp_path / "empty", tmp_path / "o"), "no such bundled model")
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    (copy / "model.safetensors").unlink()
    one_error_line(capsys, generate(copy, tmp_path / "o"), "model.safetensors", "not found")
    assert no_files_in(tmp_path / "o")


@NO_CUDA
@pytest.mark.parametrize("command", ["generate", "sweep"])
def test_cuda_without_cuda(model, tmp_path, capsys, command):
    """Reference: torch.cuda.is_available() is False here; no file may be written."""
    extra = ["--vary", "age=50:60:10"] if command == "sweep" else []
    code = main([command, "--model", str(model), "--device", "cuda", "--out", str(tmp_path / "o"), *extra])
    one_error_line(capsys, code, "'cuda'", "CUDA")
    assert no_files_in(tmp_path / "o")


def _replace_template(folder, volume):
    """Put ``volume`` in place of the model's template.nii.gz and record its sha256 in the card, as a model built
    with the wrong template would have it."""
    from DiffDefAtlasLib.checksum import file_sha256

    write_image(volume, folder / "template.nii.gz")
    card = json.loads((folder / "model_card.json").read_text())
    card["template"]["sha256"]["template.nii.gz"] = file_sha256(folder / "template.nii.gz")
    (folder / "model_card.json").write_text(json.dumps(card))


def test_template_of_the_wrong_dimension_names_the_file(model_copy, tmp_path, capsys):
    """Reference: a 3D image (8x8x8) put in place of the 2D model's template.nii.gz."""
    _replace_template(model_copy, Volume(np.ones((8, 8, 8), np.float32), np.eye(4)))
    one_error_line(capsys, generate(model_copy, tmp_path / "o"), "template.nii.gz", "3D", "2D")


def test_template_of_the_wrong_dimension_is_refused(model_copy, tmp_path, capsys):
    """Reference: a 3D image (8x8x8) put in place of the 2D model's template.nii.gz: one line, status 2."""
    _replace_template(model_copy, Volume(np.ones((8, 8, 8), np.float32), np.eye(4)))
    code = generate(model_copy, tmp_path / "o")
    assert code == 2
    one_error_line(capsys, code, "tiny2d", "template")


@pytest.mark.parametrize("name", ["template.nii.gz", "labels.nii.gz"])
def test_altered_template_files_are_refused(model_copy, tmp_path, capsys, name):
    """Reference: the sha256 of the template files recorded in model_card.json at export. A template image swapped
    for another valid image of the right shape would silently change every atlas; it must be refused."""
    path = model_copy / name
    volume = read_image(path)
    altered = np.array(volume.array)
    altered.flat[0] += 1  # a valid image of the right shape, one voxel different
    write_image(Volume(altered, volume.affine), path)
    one_error_line(capsys, generate(model_copy, tmp_path / "o"), name, "checksum mismatch")
    assert no_files_in(tmp_path / "o")


def test_altered_bundled_template_is_refused(tmp_path, monkeypatch):
    """Reference: the sha256 of every bundled MNI file in template.json; a copy of the resources with one altered
    byte in the 2 mm T1 is refused with the file's name."""
    import shutil

    from DiffDefAtlasLib import resources
    from DiffDefAtlasLib.errors import DiffDefInputError
    from DiffDefAtlasLib.template import mni152

    copy = tmp_path / "resources"
    shutil.copytree(resources.resource_path("template"), copy / "template")
    target = copy / "template" / "mni_t1_2mm.nii.gz"
    data = bytearray(target.read_bytes())
    data[-40] ^= 0xFF
    target.write_bytes(bytes(data))
    monkeypatch.setenv("DIFFDEF_ATLAS_RESOURCES", str(copy))
    resources.resources_dir.cache_clear()
    mni152._read_only_arrays.cache_clear()
    try:
        with pytest.raises(DiffDefInputError, match="mni_t1_2mm.nii.gz: checksum mismatch"):
            mni152.load_template("2mm")
    finally:
        monkeypatch.delenv("DIFFDEF_ATLAS_RESOURCES")
        resources.resources_dir.cache_clear()
        mni152._read_only_arrays.cache_clear()
        mni152._info_text.cache_clear()


def test_model_card_claiming_three_dimensions(model_copy, tmp_path, capsys):
    """Reference: a 2D model whose card is edited to say 3D: the weights cannot match, refused in one line."""
    card = json.loads((model_copy / "model_card.json").read_text())
    card["spatial_dims"] = 3
    (model_copy / "model_card.json").write_text(json.dumps(card))
    one_error_line(capsys, generate(model_copy, tmp_path / "o"), "model.safetensors", "do not match")


# ------------------------------------------------------------------------------------------------ weights
def test_tampered_truncated_or_unchecked_weights_are_refused(model_copy, tmp_path, capsys):
    """Reference: the sha256 and size recorded in model_card.json; a card without a checksum is refused too."""
    weights = model_copy / "model.safetensors"
    original = weights.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01
    weights.write_bytes(bytes(tampered))
    one_error_line(capsys, generate(model_copy, tmp_path / "o"), "model.safetensors", "checksum mismatch")
    weights.write_bytes(original[: len(original) - 1000])
    one_error_line(capsys, generate(model_copy, tmp_path / "o"), "model.safetensors", "truncated")
    weights.write_bytes(original)
    card = json.loads((model_copy / "model_card.json").read_text())
    del card["weights"]["sha256"]
    (model_copy / "model_card.json").write_text(json.dumps(card))
    one_error_line(capsys, generate(model_copy, tmp_path / "o"), "no sha256")
    assert no_files_in(tmp_path / "o")


class _Payload:
    """Unpickling this object creates the file ``marker`` (stands for arbitrary code run by a malicious pickle)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_pickled_weights_are_never_unpickled(model_copy, tmp_path, capsys, kind):
    """Reference: a pickle whose loading would create a marker file, installed as the weights with a *matching*
    sha256 and size in the card (an attacker who edits both): the loader must refuse it and the marker must not exist."""
    marker = tmp_path / "unpickled.txt"
    weights = model_copy / "model.safetensors"
    if kind == "pickle":
        weights.write_bytes(pickle.dumps({"w": _Payload(marker)}))
    else:
        torch.save({"w": _Payload(marker)}, str(weights))
    card = json.loads((model_copy / "model_card.json").read_text())
    card["weights"].update(sha256=sha256_file(weights), bytes=weights.stat().st_size)
    (model_copy / "model_card.json").write_text(json.dumps(card))
    one_error_line(capsys, generate(model_copy, tmp_path / "o"), "model.safetensors", "not a readable safetensors file")
    assert not marker.exists()


def test_registration_weights_checksum_and_no_pickle(tmp_path):
    """Reference: the registration model card's sha256 (a flipped byte and a truncation are refused), and a pickle
    with a matching checksum is not unpickled (its marker file never appears)."""
    from DiffDefAtlasLib.errors import DiffDefInputError
    from DiffDefAtlasLib.register.network import NetworkConfig, RegistrationNetwork
    from DiffDefAtlasLib.register.weights import _verified_state, load_registration_network, save_registration_network

    folder = tmp_path / "registration2d"
    torch.manual_seed(0)
    save_registration_network(RegistrationNetwork(NetworkConfig(spatial_dims=2)), folder, {"training": "none (test)"})
    assert load_registration_network(2, folder=folder) is not None
    weights = folder / "registration2d.safetensors"
    original = weights.read_bytes()
    for damaged in (original[:-100], original[:100] + bytes([original[100] ^ 1]) + original[101:]):
        _verified_state.cache_clear()
        weights.write_bytes(damaged)
        with pytest.raises(DiffDefInputError, match="registration2d.safetensors: (checksum mismatch|expected .* bytes)"):
            load_registration_network(2, folder=folder)
    marker = tmp_path / "unpickled.txt"
    weights.write_bytes(pickle.dumps({"w": _Payload(marker)}))
    card = json.loads((folder / "model_card.json").read_text())
    card["weights"].update(sha256=sha256_file(weights), bytes=weights.stat().st_size)
    (folder / "model_card.json").write_text(json.dumps(card))
    _verified_state.cache_clear()
    with pytest.raises(Exception):
        load_registration_network(2, folder=folder)
    _verified_state.cache_clear()
    assert not marker.exists()


def test_registration_weights_that_are_not_safetensors_are_an_input_error(tmp_path):
    """Reference: a pickle with a matching sha256 in the registration card must give a DiffDefInputError."""
    from DiffDefAtlasLib.errors import DiffDefInputError
    from DiffDefAtlasLib.register.network import NetworkConfig, RegistrationNetwork
    from DiffDefAtlasLib.register.weights import _verified_state, load_registration_network, save_registration_network

    folder = tmp_path / "registration2d"
    save_registration_network(RegistrationNetwork(NetworkConfig(spatial_dims=2)), folder, {})
    weights = folder / "registration2d.safetensors"
    weights.write_bytes(pickle.dumps({"w": 1}))
    card = json.loads((folder / "model_card.json").read_text())
    card["weights"].update(sha256=sha256_file(weights), bytes=weights.stat().st_size)
    (folder / "model_card.json").write_text(json.dumps(card))
    _verified_state.cache_clear()
    try:
        with pytest.raises(DiffDefInputError, match="registration2d.safetensors"):
            load_registration_network(2, folder=folder)
    finally:
        _verified_state.cache_clear()


# ------------------------------------------------------------------------------------------------ outputs
@pytest.mark.parametrize("command", ["generate", "sweep"])
def test_existing_output_folder_is_not_overwritten(model, tmp_path, capsys, command):
    """Reference: a folder holding the user's file; without --overwrite nothing in it changes. With --overwrite too,
    since it replaces result folders (holding summary.json) as a whole and this one is not: the user's file stays."""
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("user data")
    argv = [command, "--model", str(model), "--device", "cpu", "--out", str(out)] + (["--vary", "age=50:60:10"] if command == "sweep" else [])
    one_error_line(capsys, main(argv), str(out), "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "user data"
    one_error_line(capsys, main(argv + ["--overwrite"]), str(out), "not a diffdef-atlas result")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "user data"


def test_interrupted_write_keeps_the_previous_atlas(model, tmp_path, capsys, monkeypatch):
    """Reference: the bytes of the first run's atlas.nii.gz. A second run (--overwrite, other conditions) is
    interrupted while SimpleITK writes its atlas (half the bytes written, then Ctrl-C): status 3, the old atlas is
    intact, and no temporary file is left behind."""
    import SimpleITK as sitk

    out = tmp_path / "o"
    assert generate(model, out, "--set", "age=50") == 0
    before = (out / "atlas.nii.gz").read_bytes()
    real_write = sitk.WriteImage

    def interrupted_write(image, filename, *args, **kwargs):
        real_write(image, filename, *args, **kwargs)
        if ".atlas.nii.gz." in str(filename):
            with open(filename, "r+b") as stream:
                stream.truncate(len(open(filename, "rb").read()) // 2)
            raise KeyboardInterrupt

    monkeypatch.setattr(sitk, "WriteImage", interrupted_write)
    capsys.readouterr()
    assert generate(model, out, "--set", "age=70", "--overwrite") == 3
    assert "interrupted" in capsys.readouterr().err
    assert (out / "atlas.nii.gz").read_bytes() == before
    assert not [p.name for p in out.iterdir() if ".part" in p.name]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # the staging folder is gone too


# ------------------------------------------------------------------------------------------------ reproducibility, provenance
def test_same_seed_gives_a_bitwise_identical_atlas(model, tmp_path):
    """Reference: two independent command-line runs (generator and template caches cleared in between), compared
    voxel by voxel with nibabel; a different seed at temperature 1 must differ (so the comparison can fail)."""
    from DiffDefAtlasLib.generate import atlas, bundled

    runs = {}
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        bundled._load_cached.cache_clear()
        atlas._template_images_cached.cache_clear()
        assert generate(model, tmp_path / name, "--set", "age=63", "--set", "sex=M", "--seed", seed, "--temperature", "1") == 0
        runs[name] = {f: np.asanyarray(nib.load(str(tmp_path / name / f)).dataobj) for f in ("atlas.nii.gz", "labels.nii.gz", "displacement.nii.gz")}
    for f in runs["a"]:
        assert runs["a"][f].dtype == runs["b"][f].dtype and np.array_equal(runs["a"][f], runs["b"][f]), f
    assert not np.array_equal(runs["a"]["atlas.nii.gz"], runs["c"]["atlas.nii.gz"])


def test_every_summary_records_versions_device_and_peak_rss(model, tmp_path):
    """Reference: the installed torch and monai versions, the package version, and getrusage's peak RSS of this very
    process read after the run (the recorded peak can only be lower or equal, and holds at least torch)."""
    import monai

    from DiffDefAtlasLib import __version__

    assert generate(model, tmp_path / "g") == 0
    assert main(["sweep", "--model", str(model), "--vary", "sex=F,M", "--device", "cpu", "--out", str(tmp_path / "s")]) == 0
    peak_now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    for path in (tmp_path / "g" / "summary.json", tmp_path / "s" / "summary.json"):
        environment = json.loads(path.read_text())["environment"]
        for key in VERSION_KEYS:
            assert environment.get(key) not in (None, ""), (path, key)
        assert environment["diffdef_atlas_version"] == __version__
        assert environment["torch_version"] == torch.__version__ and environment["monai_version"] == monai.__version__
        assert environment["device"] == "cpu"
        assert 50 < environment["peak_rss_mb"] <= peak_now + 1


def _fake_out_of_memory_cuda(monkeypatch) -> list[str]:
    """Make ``--device cuda`` select a fake CUDA device on which every model load runs out of memory; returns the
    list of device types that loads were tried on."""
    import DiffDefAtlasLib.device as device_module
    from DiffDefAtlasLib.generate import bundled

    real_select, real_load = device_module.select_device, bundled.load_generator
    tried: list[str] = []

    def fake_select(name="auto"):
        return torch.device("cuda") if str(name).startswith("cuda") else real_select(name)

    def fake_load(name, device="auto"):
        tried.append(torch.device(device).type)
        if torch.device(device).type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_load(name, device)

    monkeypatch.setattr(device_module, "select_device", fake_select)
    monkeypatch.setattr(bundled, "load_generator", fake_load)
    return tried


def test_cuda_out_of_memory_falls_back_to_the_cpu(model, tmp_path, capsys, monkeypatch):
    """Reference: a fake CUDA device whose model loading raises torch.cuda.OutOfMemoryError. The command must warn in
    one line, rerun on the CPU and record the CPU as the device; the atlas equals a plain CPU run."""
    assert generate(model, tmp_path / "cpu") == 0
    capsys.readouterr()
    tried = _fake_out_of_memory_cuda(monkeypatch)
    assert main(["generate", "--model", str(model), "--device", "cuda", "--out", str(tmp_path / "fallback")]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert tried == ["cuda", "cpu"]
    assert len(err) == 1 and "warning" in err[0] and "out of memory" in err[0] and "CPU" in err[0]
    summary = json.loads((tmp_path / "fallback" / "summary.json").read_text())
    assert summary["device"] == "cpu" and summary["environment"]["device"] == "cpu"
    a = np.asanyarray(nib.load(str(tmp_path / "cpu" / "atlas.nii.gz")).dataobj)
    b = np.asanyarray(nib.load(str(tmp_path / "fallback" / "atlas.nii.gz")).dataobj)
    assert np.array_equal(a, b)


@pytest.mark.slow
def test_same_seed_gives_the_same_atlas_in_another_process(model, tmp_path):
    """Reference: an atlas generated in a fresh Python process (own caches, own thread pool) must equal, bitwise,
    the one generated in this process."""
    import subprocess
    import sys

    assert generate(model, tmp_path / "here", "--seed", "5", "--temperature", "1") == 0
    result = subprocess.run(
        [sys.executable, "-m", "DiffDefAtlasLib.cli.main", "generate", "--model", str(model), "--device", "cpu", "--seed", "5",
         "--temperature", "1", "--out", str(tmp_path / "there")], capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    a = np.asanyarray(nib.load(str(tmp_path / "here" / "atlas.nii.gz")).dataobj)
    b = np.asanyarray(nib.load(str(tmp_path / "there" / "atlas.nii.gz")).dataobj)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    "command, extra, expected_files",
    [
        ("generate", ["--samples", "2"], ["displacement_mean.nii.gz", "displacement_std.nii.gz"]),
        ("sweep", ["--vary", "age=40:60:20"], ["volumes.csv", "montage.png"]),
    ],
)
def test_out_of_memory_fallback_is_reported_once_for_samples_and_sweeps(model, tmp_path, capsys, monkeypatch, command, extra, expected_files):
    """Reference: the same fake out-of-memory CUDA device. Every model load on it fails, so each generation (the
    atlas, the K samples, each sweep step) reruns on the CPU; the user sees the warning exactly once, and the run
    still writes all its files."""
    tried = _fake_out_of_memory_cuda(monkeypatch)
    out = tmp_path / "out"
    assert main([command, "--model", str(model), "--device", "cuda", "--out", str(out), *extra]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert tried.count("cuda") == 2 and tried.count("cpu") == 2  # two generations, each tried on CUDA then the CPU
    assert len(err) == 1 and "out of memory" in err[0] and "CPU" in err[0], err
    for name in expected_files:
        assert (out / name).is_file(), name


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999999", "18446744073709551616"])
def test_a_seed_outside_torch_range_is_refused_before_any_file(model, tmp_path, capsys, seed):
    """Reference: torch's 64-bit unsigned seeds; -1 used to alias 2**64 - 1 and 10**23 was an internal error."""
    one_error_line(capsys, generate(model, tmp_path / "o", "--seed", seed), "seed: expected a whole number from 0 to 2**64 - 1", status=2)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("seed", [-1, 1.5, 2**64, "x", True, None])
def test_the_api_refuses_bad_seeds_instead_of_truncating(model, seed):
    """Reference: the same rule at the Python boundary (``seed=1.5`` used to run as seed 1)."""
    from DiffDefAtlasLib.errors import DiffDefInputError
    from DiffDefAtlasLib.generate.bundled import load_generator

    with pytest.raises(DiffDefInputError, match=r"seed: expected a whole number from 0 to 2\*\*64 - 1"):
        load_generator(str(model), "cpu").generate({"age": 60}, seed=seed, steps=1)


@pytest.mark.parametrize("vary", ["age=nan:60:5", "age=40:inf:5", "age=40:50:nan", "age=-inf:50"])
def test_a_sweep_range_that_is_not_finite_is_bad_input(model, tmp_path, capsys, vary):
    """Reference: float('nan') and float('inf') parse as numbers; they used to reach int() and exit 1."""
    code = main(["sweep", "--model", str(model), "--device", "cpu", "--vary", vary, "--out", str(tmp_path / "s")])
    one_error_line(capsys, code, "must be finite numbers", status=2)
    assert not (tmp_path / "s").exists()


def test_the_printed_line_shows_the_seed_only_where_it_changed_the_atlas(model, tmp_path, capsys):
    """Reference: at temperature 0 seeds 0 and 5 give bitwise the same atlas (test above), so the line leaves the
    seed out; at temperature 0.5 it is what made the atlas, and the line names it."""
    assert generate(model, tmp_path / "t0", "--seed", "5") == 0
    line = [text for text in capsys.readouterr().out.splitlines() if text.startswith("Generated")][0]
    assert "seed" not in line and "steps" in line
    assert generate(model, tmp_path / "t1", "--seed", "5", "--temperature", "0.5") == 0
    line = [text for text in capsys.readouterr().out.splitlines() if text.startswith("Generated")][0]
    assert "(seed 5, " in line
