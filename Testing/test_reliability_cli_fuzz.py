"""Fuzzing the command line (issue 19) with hypothesis: ``generate``, ``sweep``, ``analyze`` and ``models``.

Each example is a command line drawn from valid and invalid values (conditions inside and outside the tiny model's
ranges, NaN/Inf/huge/negative/non-numeric numbers, seeds, steps, samples, temperatures, devices, output sets,
unknown and repeated flags, bad ``--vary`` parts, an ``--out`` that is new, nested, a file, under a file, a foreign
or a result folder, empty, or too long a name, with and without ``--overwrite``), run in this process by ``main()``.

Properties: the status is 0 or 2 (never 1, never an exception); with 2, stderr holds exactly one line and no traceback
(warnings may precede it only when the generation itself failed its check after ``--allow-extrapolation`` warned),
and the sandbox the command ran in is byte for byte what it was (no output, no staging folder, no new parent
folder, a previous folder unchanged); with 0, the output folder holds the command's files and nothing was left
beside it. The references are the sandbox's own listing and bytes taken before the run, and argparse (the last of
repeated options wins) to know which ``--out``, ``--outputs`` and ``--samples`` applied. The model is the tiny
untrained 2D generator of ``modelfactory`` (age 40-80, sex F/M), so a successful run takes a few hundredths of a second.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from DiffDefAtlasLib.cli.main import build_parser, main

from modelfactory import build_tiny_model

#: Derandomized (the same examples in every run, so CI is repeatable) unless DIFFDEF_FUZZ_RANDOM is set; with
#: DIFFDEF_FUZZ_EXAMPLES=N each test runs N examples (a longer hunt: ``DIFFDEF_FUZZ_RANDOM=1 DIFFDEF_FUZZ_EXAMPLES=2000``).
FUZZ = dict(deadline=None, derandomize=not os.environ.get("DIFFDEF_FUZZ_RANDOM"), database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _examples(default: int) -> int:
    return int(os.environ.get("DIFFDEF_FUZZ_EXAMPLES", default))


# ------------------------------------------------------------------------------------------------ the sandbox
#: What ``--out`` points at; each kind is made fresh in an empty sandbox folder before the run.
OUT_KINDS = ("new", "nested", "file", "under_file", "empty", "foreign", "result", "long", "long_staging")
OUT = "<out>"
OTHER_OUT = "<other>"  # a second --out: the last one given applies
MODEL = "<model>"


def _make_out(sandbox: Path, kind: str) -> Path:
    """The ``--out`` path of ``kind`` inside ``sandbox``, with whatever is to exist there already."""
    if kind == "nested":
        return sandbox / "new" / "deeper" / "out"
    if kind == "under_file":
        (sandbox / "plain.txt").write_text("a file, not a folder\n")
        return sandbox / "plain.txt" / "out"
    if kind == "long":
        return sandbox / ("n" * 300)  # longer than a file name may be (255 bytes)
    if kind == "long_staging":
        return sandbox / ("n" * 250)  # a valid name whose staging folder (".NAME.partial-...") is too long
    out = sandbox / "out"
    if kind == "file":
        out.write_bytes(b"an earlier file of that name\n")
    elif kind == "empty":
        out.mkdir()
    elif kind == "foreign":
        out.mkdir()
        (out / "notes.txt").write_text("not a diffdef-atlas result\n")
    elif kind == "result":
        out.mkdir()
        (out / "summary.json").write_text('{"earlier": true}\n')
        (out / "old_only.txt").write_text("only in the earlier result\n")
    return out


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every folder (None) and file (its bytes) under ``root``, hidden ones included, by relative path."""
    found: dict[str, bytes | None] = {}
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        for name in dirs:
            found[str((base / name).relative_to(root))] = None
        for name in files:
            found[str((base / name).relative_to(root))] = (base / name).read_bytes()
    return found


def _run(argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` in this process: its status (argparse's SystemExit included) and what it wrote on stderr."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse's usage errors
            code = stop.code
    return code, err.getvalue()


def _check_failure(code: int, err: str, before: dict, sandbox: Path, argv: list[str]) -> None:
    """Status 2: one error line (last), no traceback; nothing in the sandbox changed."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, (argv, err)
    assert lines, (argv, err)
    warned = [line for line in lines[:-1] if ": warning: " in line]
    generation_failed = "NaN or infinite" in lines[-1] and "--allow-extrapolation" in argv
    assert len(lines) == 1 or (generation_failed and len(warned) == len(lines) - 1), (argv, err)
    assert ": error: " in lines[-1], (argv, err)
    after = _snapshot(sandbox)
    assert after == before, (argv, sorted(set(after) ^ set(before)), err)


def _check_success(command: str, argv: list[str], err: str, before: dict, sandbox: Path) -> None:
    """Status 0: the files of the command in the last ``--out``; nothing else new in the sandbox, no leftovers."""
    args = build_parser([command]).parse_args(argv)
    out = Path(args.out)
    names = set(os.listdir(out))
    assert "summary.json" in names, (argv, names)
    if command == "generate":
        expected = {"atlas.nii.gz", "labels.nii.gz", "displacement.nii.gz"}
        if args.outputs == "all":
            expected |= {"displacement_itk.nii.gz", "jacobian.nii.gz", "folding.nii.gz", "preview.png"}
        if args.samples:
            expected |= {"displacement_mean.nii.gz", "displacement_std.nii.gz"}
        assert names == expected | {"summary.json"}, (argv, names)
    elif command == "sweep":
        assert {"montage.png", "sweep.gif", "volumes.csv"} <= names, (argv, names)
        steps = [name for name in names if (out / name).is_dir()]
        assert steps and all({"atlas.nii.gz", "labels.nii.gz"} <= set(os.listdir(out / name)) for name in steps), (argv, names)
    elif command == "analyze":
        assert names == {"jacobian.nii.gz", "folding.nii.gz", "summary.json"}, (argv, names)
    assert all(not (out / name).stat().st_size == 0 for name in names if (out / name).is_file()), (argv, names)
    assert "old_only.txt" not in names  # --overwrite replaces an earlier result as a whole
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and all(": warning: " in line for line in lines), (argv, err)
    kept = str(out.relative_to(sandbox))
    after = _snapshot(sandbox)
    for path, content in after.items():
        if path == kept or path.startswith(kept + os.sep):
            assert ".partial-" not in path and ".part" not in Path(path).name, (argv, path)
            continue
        if content is None and (kept.startswith(path + os.sep)):
            continue  # a parent folder of a nested --out
        assert before.get(path, b"<new>") == content, (argv, path)  # nothing else new or changed
    assert all(path in after for path in before if not (path == kept or path.startswith(kept + os.sep))), argv


def _run_and_check(command: str, tokens: list[str], out_kind: str, workspace: dict[str, Path]) -> int:
    """Make a sandbox with ``out_kind``, substitute the placeholders in ``tokens``, run and check; return the status."""
    sandbox = Path(tempfile.mkdtemp(prefix="fuzz-", dir=workspace["root"]))
    out = _make_out(sandbox, out_kind)
    places = {OUT: str(out), OTHER_OUT: str(sandbox / "other"), MODEL: str(workspace["model"]), **_analyze_inputs(workspace["inputs"])}
    argv = [command, *(places.get(token, token) for token in tokens)]
    before = _snapshot(sandbox)
    code, err = _run(argv)
    assert code in (0, 2), (argv, code, err)
    event(f"status {code}" + (" (usage)" if code == 2 and "(see diffdef-atlas" in err else ""))  # --hypothesis-show-statistics
    if code == 2:
        _check_failure(code, err, before, sandbox, argv)
    elif command == "models":
        assert _snapshot(sandbox) == before and "Traceback" not in err, (argv, err)
    else:
        _check_success(command, argv, err, before, sandbox)
    shutil.rmtree(sandbox)  # kept when a check fails, to look at
    return code


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The tiny model and the analyze inputs, made once; examples run in sandboxes under the same folder."""
    from DiffDefAtlasLib.generate import atlas, bundled

    root = tmp_path_factory.mktemp("cli_fuzz")
    model = build_tiny_model(root / "tiny2d", steps=2)
    inputs = root / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    good = (0.3 * rng.standard_normal((8, 8, 8, 1, 3))).astype(np.float32)
    for name, data in (("field.nii.gz", good), ("folded.nii.gz", 4 * good)):
        image = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
        image.header.set_intent(1006)  # a NIfTI displacement vector field
        nib.save(image, str(inputs / name))
    nan = good.copy()
    nan[1, 2, 3, 0, 0] = np.nan
    image = nib.Nifti1Image(nan, np.diag([2.0, 2.0, 2.0, 1.0]))
    image.header.set_intent(1006)
    nib.save(image, str(inputs / "nan_field.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.uint8), np.diag([2.0, 2.0, 2.0, 1.0])), str(inputs / "mask.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((6, 6, 6), np.uint8), np.diag([2.0, 2.0, 2.0, 1.0])), str(inputs / "small_mask.nii.gz"))
    (inputs / "notes.txt").write_text("not an image\n")
    bundled._load_cached.cache_clear()
    yield {"root": root, "model": model, "inputs": inputs}
    bundled._load_cached.cache_clear()
    atlas._template_images_cached.cache_clear()


# ------------------------------------------------------------------------------------------------ strategies
def _mostly(valid: list[str], invalid: st.SearchStrategy) -> st.SearchStrategy:
    """A valid value about two times in three, else one of ``invalid`` (so that most examples get past argparse)."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), invalid)


def _sometimes(chance: int) -> st.SearchStrategy:
    """True about once in ``chance`` draws (hypothesis favours the ends of an integer range, so not integers)."""
    return st.sampled_from([False] * (chance - 1) + [True])


NUMBERS = _mostly(["40", "60", "80", "72.5", "55"], st.one_of(
    st.sampled_from(["39.99", "80.01", "95", "0", "-1", "-40", "nan", "NaN", "inf", "-inf", "1e308", "1e400", "-1e400", "1e5",
                     "abc", "", " 50 ", "5_0", "0x10", "1e-320", "\u0665\u0660", "50%"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**70), 2**70).map(str),
))
CONDITION = st.one_of(
    st.builds(lambda n, v: f"{n}={v}", _mostly(["age"], st.sampled_from(["sex", "height", "AGE", " age ", ""])), NUMBERS),
    _mostly(["sex=F", "sex=M", "sex=f"], st.sampled_from(["sex=X", "sex=", "sex=1", "age", "=5", "age==5", "age=60=70", "sex=F,M"])),
)
SEEDS = _mostly(["0", "1", "7", str(2**64 - 1), "-0", "\u0661"], st.one_of(
    st.sampled_from(["-1", str(2**64), str(2**64 + 5), "1.5", "abc", "1e3", "", "0x10", "2**64"]),
    st.integers(-(2**66), 2**66).map(str)))
STEPS = _mostly(["1", "2", "3", "03"], st.sampled_from(["0", "-1", "1001", "1000000000000", "2.5", "abc", "1e3", "", "nan"]))
REAL = _mostly(["0", "0.5", "1", "3", "1e-300"], st.sampled_from(["3.01", "20", "21", "-0.1", "nan", "inf", "-inf", "1e308", "abc", ""]))
SAMPLES = _mostly(["0", "2", "3"], st.sampled_from(["1", "-1", "-2", "1001", "1000000000000", "2.5", "abc", ""]))
DEVICES = _mostly(["cpu", "CPU", " cpu ", "auto"], st.sampled_from(["cuda", "cuda:0", "cuda:7", "cuda:-1", "cuda:abc", "mps", "gpu", "", "junk"]))
OUTPUTS = _mostly(["all", "minimal"], st.sampled_from(["none", "ALL", ""]))
UNKNOWN = st.sampled_from([["--frobnicate"], ["--seeds", "1"], ["--out-dir", "x"], ["-x"], ["extra"], ["--steps"],
                           ["--set"], ["--out"], ["--device"], ["--samples=2=3"], ["--vary"], ["--json"]])
VARY_PART = st.sampled_from(["40", "60", "80", "20", "10", "-20", "0", "0.1", "0.2", "1e-300", "1e300", "-1e308", "1e308",
                             "nan", "inf", "", "a", "95", "100"])
VARY = st.one_of(
    st.sampled_from(["age=40:80:20", "age=40:80", "sex=F,M", "sex=M", "age=60:60:1", "age=80:40:-20", "age=40,50", "age=5e1:1e2:1e1",
                     "age=60:100:20"]),
    st.sampled_from(["age=40:80:0.1", "age=40:80:0.2", "age=0:1e300:1e-300", "age=-1e308:1e308", "age=-1e308:1e308:1e-308",
                     "age=a:b:c", "age=40:80:0", "age=80:40:20", "age=40:80:20:5", "height=1:2:1", "age", "=1:2",
                     "age=nan:80:10", "sex=F,X", "sex=", "age=,", "sex=F:M", "age=F,M"]),
    st.builds(lambda a, b, c: f"age={a}:{b}:{c}", VARY_PART, VARY_PART, VARY_PART),
    st.builds(lambda a, b: f"age={a}:{b}", VARY_PART, VARY_PART),
)


def _option(flag: str, values) -> st.SearchStrategy:
    """``[flag, value]``, or ``[flag=value]`` as argparse also accepts."""
    return st.one_of(values.map(lambda v: [flag, v]), values.map(lambda v: [f"{flag}={v}"]))


def _shuffled(draw, groups: list[list[str]]) -> list[str]:
    """The option groups in a drawn order, flattened (a flag stays with its value)."""
    return [token for group in draw(st.permutations(groups)) for token in group]


@st.composite
def generator_command(draw, command: str):
    """(tokens, out kind): option groups for ``command`` in a random order, some repeated, some unknown."""
    groups: list[list[str]] = [["--model", MODEL], ["--out", OUT]]
    if draw(_sometimes(12)):  # a missing model folder, or a file given as the model
        groups[0] = ["--model", draw(st.sampled_from(["nowhere", "", "brain3d_typo", OTHER_OUT]))]
    if draw(st.booleans()):
        groups.append(["--device", "cpu"])  # most examples run; others draw any device below
    optional = {
        "--set": _option("--set", CONDITION),
        "--seed": _option("--seed", SEEDS),
        "--steps": _option("--steps", STEPS),
        "--guidance": _option("--guidance", REAL),
        "--temperature": _option("--temperature", REAL),
        "--device": _option("--device", DEVICES),
    }
    if command == "generate":
        optional["--samples"] = _option("--samples", SAMPLES)
        optional["--outputs"] = _option("--outputs", OUTPUTS)
    elif not draw(_sometimes(15)):  # --vary is required
        groups.append(draw(_option("--vary", VARY)))
    for flag in draw(st.lists(st.sampled_from(sorted(optional)), max_size=4)):
        groups.append(draw(optional[flag]))
    if draw(st.booleans()):
        groups.append(["--steps", "2"])  # keep most sweeps cheap
    for flag in ("--allow-extrapolation", "--overwrite"):
        if draw(st.booleans()):
            groups.extend([[flag]] * draw(st.sampled_from([1, 1, 2])))
    if draw(_sometimes(6)):
        groups.append(["--out", OTHER_OUT])
    if draw(_sometimes(8)):
        groups.append(draw(UNKNOWN))
    return _shuffled(draw, groups), draw(st.sampled_from(OUT_KINDS))


@st.composite
def analyze_command(draw):
    """(tokens, out kind) for ``analyze FIELD --out DIR [--mask M] [--overwrite]``."""
    field = draw(_mostly(["<field>", "<folded>"], st.sampled_from(["<nan_field>", "<mask>", "<notes>", "<missing>"])))
    groups: list[list[str]] = [["--out", OUT]]
    if not draw(_sometimes(12)):
        groups.append([field])
    if draw(st.booleans()):
        groups.append(["--mask", draw(_mostly(["<mask>"], st.sampled_from(["<small_mask>", "<notes>", "<missing>", "<field>"])))])
    if draw(st.booleans()):
        groups.extend([["--overwrite"]] * draw(st.sampled_from([1, 1, 2])))
    if draw(_sometimes(6)):
        groups.append(["--out", OTHER_OUT])
    if draw(_sometimes(8)):
        groups.append(draw(UNKNOWN))
    return _shuffled(draw, groups), draw(st.sampled_from(OUT_KINDS))


def _analyze_inputs(inputs: Path) -> dict[str, str]:
    """The placeholders of :func:`analyze_command` and the files they stand for."""
    names = {f"<{name}>": f"{name}.nii.gz" for name in ("field", "folded", "nan_field", "mask", "small_mask")}
    return {key: str(inputs / name) for key, name in {**names, "<notes>": "notes.txt", "<missing>": "absent.nii.gz"}.items()}


# ------------------------------------------------------------------------------------------------ the tests
@settings(max_examples=_examples(400), **FUZZ)
@given(case=generator_command("generate"))
@example(case=(["--model", MODEL, "--device", "cpu", "--samples", "1000000000000", "--out", OUT], "new"))  # no limit: ran ~forever
@example(case=(["--model", MODEL, "--device", "cpu", "--out", OUT], "long"))  # status 1 (OSError: File name too long)
@example(case=(["--model", MODEL, "--device", "cpu", "--set", "age=39", "--allow-extrapolation", "--out", OUT], "long_staging"))
# ^ status 1 after the atlas was computed (its staging folder's name is too long), and a warning line before it
@example(case=(["--model", MODEL, "--device", "cpu", "--set", "age=1e308", "--allow-extrapolation", "--out", OUT], "nested"))
@example(case=(["--model", MODEL, "--device", "cpu", "--set", "age=70", "--set", "sex=m", "--overwrite", "--out", OUT], "result"))
def test_generate_command_lines(workspace, case):
    tokens, out_kind = case
    _run_and_check("generate", tokens, out_kind, workspace)


@settings(max_examples=_examples(300), **FUZZ)
@given(case=generator_command("sweep"))
@example(case=(["--model", MODEL, "--device", "cpu", "--vary", "age=0:1e300:1e-300", "--out", OUT], "new"))  # OverflowError
@example(case=(["--model", MODEL, "--device", "cpu", "--vary", "age=-1e308:1e308", "--out", OUT], "new"))  # ValueError (NaN step)
@example(case=(["--model", MODEL, "--out", OUT, "--vary", "age=,"], "new"))  # ValueError: max() arg is an empty sequence
@example(case=(["--model", MODEL, "--device", "cpu", "--vary", "age=60:100:20", "--allow-extrapolation", "--out", OUT], "foreign"))
# ^ the extrapolation warnings were printed before the refusal of the output folder (three lines)
@example(case=(["--model", MODEL, "--device", "cpu", "--vary", "age=1e30,1e308", "--allow-extrapolation", "--out", OUT], "nested"))
# ^ the NaN field is refused, but the new parent folders of --out were left behind
@example(case=(["--model", MODEL, "--device", "cpu", "--vary", "sex=F,M", "--overwrite", "--out", OUT], "result"))
@example(case=(["--model", MODEL, "--vary", "age=40:20", "--device", "cuda", "--allow-extrapolation", "--out", OUT], "new"))  # warned, then refused cuda
@example(case=(["--model", MODEL, "--device", "cpu", "--vary", "age=30:40:10", "--allow-extrapolation", "--out", OUT], "long_staging"))
def test_sweep_command_lines(workspace, case):
    tokens, out_kind = case
    _run_and_check("sweep", tokens, out_kind, workspace)


@settings(max_examples=_examples(200), **FUZZ)
@given(case=analyze_command())
@example(case=(["<field>", "--out", OUT], "long"))  # status 1 (OSError: File name too long)
@example(case=(["<field>", "--out", OUT], "long_staging"))  # status 1, from the staging folder
@example(case=(["<folded>", "--mask", "<mask>", "--overwrite", "--out", OUT], "result"))
def test_analyze_command_lines(workspace, case):
    tokens, out_kind = case
    _run_and_check("analyze", tokens, out_kind, workspace)


@settings(max_examples=20, **FUZZ)
@given(tokens=st.lists(st.sampled_from(["--json", "--json", "--frobnicate", "brain3d", "-x", "--model", "--out"]), max_size=3))
def test_models_command_lines(workspace, tokens):
    _run_and_check("models", tokens, "new", workspace)
