"""Every ``diffdef-atlas`` command in the README's and the docs' code blocks (and in the README's command table)
parses with the CLI's own parser, and its conditions (``--set``, ``--vary``) lie in the named bundled model's trained
range: a user copying a command must not meet a usage error or an out-of-range refusal (the README's
``--vary age=45:80:5`` did, above 73.18).

The quick commands (``models``, ``generate``, ``sweep``, ``analyze``, ``template``) also run, in process, against
the tiny test model (:func:`modelfactory.build_tiny_model`), with the rewrites listed in :func:`runnable_argv`; the
long ones (training recipes, ``evaluate``, ``benchmark``, ``register``, ``prepare``, ``torchrun`` and SLURM lines)
are only parsed."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from DiffDefAtlasLib.cli.main import SUBCOMMANDS, build_parser, main
from DiffDefAtlasLib.conditions.resolve import resolve_conditions
from DiffDefAtlasLib.generate.bundled import list_models, resolve_model
from DiffDefAtlasLib.generate.cli import OUTPUT_SETS, parse_conditions, parse_vary
from DiffDefAtlasLib.results import ATLAS_FILES, SUMMARY_NAME, SWEEP_FILES
from DiffDefAtlasLib.template import NOTICE_FILES

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```")
OPTIONAL = re.compile(r"\s*\[[^\[\]]*\]")
#: A row of a command table: its first cell is one inline ``diffdef-atlas ...`` synopsis (README's "Command line").
TABLE_ROW = re.compile(r"^\|\s*`(diffdef-atlas [^`]+)`\s*\|")
#: Words that may launch the CLI: ``torchrun ... -m DiffDefAtlasLib.cli.main ARGS``, ``srun diffdef-atlas ARGS``.
LAUNCHERS = {"torchrun", "srun", "sbatch", "mpirun", "python", "python3"}
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def cli_argv(words: list[str]) -> list[str] | None:
    """The ``diffdef-atlas`` arguments of one shell command, or None when it does not run the CLI: ``diffdef-atlas
    ARGS``, or a launcher (``torchrun``, ``srun``...) running ``diffdef-atlas ARGS`` or ``-m DiffDefAtlasLib.cli.main
    ARGS``; leading ``VAR=value`` assignments are skipped."""
    while words and ENV_ASSIGNMENT.match(words[0]):
        words = words[1:]
    if words[:1] == ["diffdef-atlas"]:
        return words[1:]
    if words[:1] and words[0] in LAUNCHERS:
        for n, word in enumerate(words):
            if word == "diffdef-atlas":
                return words[n + 1:]
            if word == "-m" and words[n + 1:n + 2] == ["DiffDefAtlasLib.cli.main"]:
                return words[n + 2:]
    return None


def synopsis_argv(text: str) -> list[str] | None:
    """The arguments of a table synopsis such as ``diffdef-atlas generate --model NAME [--seed S] --out DIR``:
    ``[optional]`` parts dropped, ``a\\|b`` alternatives reduced to the first; None for a synopsis that elides its
    required arguments with ``...`` (the ``train`` row: the recipes in docs/generator.md are checked instead)."""
    text = text.replace("\\|", "|")
    while OPTIONAL.search(text):
        text = OPTIONAL.sub("", text)
    words = shlex.split(text)
    if "..." in words:
        return None
    return [word.split("|", 1)[0] for word in words[1:]]


def documented_commands(path: Path) -> list[tuple[str, list[str]]]:
    """``(file:line, argv)`` of each ``diffdef-atlas`` command in the fenced code blocks of a Markdown file
    (continuation lines joined; comments, ``[optional]`` synopsis parts and the ``.venv/bin/`` prefix dropped;
    ``&&`` chains split)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    commands, inside, pending, start = [], False, "", 0
    for number, line in enumerate(lines, 1):
        if FENCE.match(line.strip()):
            inside, pending = not inside, ""
            continue
        if not inside:
            row = TABLE_ROW.match(line)
            argv = synopsis_argv(row.group(1)) if row else None
            if argv is not None:
                commands.append((f"{path.relative_to(ROOT)}:{number}", argv))
            continue
        if not pending:
            start = number
        text = pending + line.split(" #", 1)[0].rstrip()
        following = lines[number] if number < len(lines) else ""
        if text.endswith("\\") or (following[:1].isspace() and following.strip()):  # a synopsis goes on indented
            pending = text.rstrip("\\") + " "
            continue
        pending = ""
        while OPTIONAL.search(text):  # a synopsis: its [optional] parts are checked by the --help tests, not here
            text = OPTIONAL.sub("", text)
        for part in text.split("&&"):
            argv = cli_argv(shlex.split(part.strip().replace(".venv/bin/", ""), comments=True))
            if argv is not None:
                commands.append((f"{path.relative_to(ROOT)}:{start}", argv))
    return commands


COMMANDS = [entry for path in DOCS for entry in documented_commands(path)]
CARDS = {card.name: card for card in list_models()}


def test_the_docs_show_commands_to_check():
    assert len(COMMANDS) >= 20 and {argv[0] for _, argv in COMMANDS} >= {"generate", "sweep", "register", "train"}
    assert {argv[0] for _, argv in QUICK_COMMANDS} == QUICK  # each quick command is run at least once
    assert any(where.startswith("docs/generator.md") and argv[:3] == ["train", "--stage", "diffusion"] and "--device" in argv
               for where, argv in COMMANDS)  # the torchrun line is parsed too


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_a_documented_command_parses_and_its_conditions_are_in_range(where, argv):
    assert argv and argv[0] in SUBCOMMANDS, f"{where}: unknown command {argv[:1]}"
    try:
        args = build_parser([argv[0]]).parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: diffdef-atlas {' '.join(argv)} does not parse")
    card = CARDS.get(getattr(args, "model", None) or "")
    if card is None or argv[0] not in ("generate", "sweep", "evaluate"):
        return
    conditions = parse_conditions(getattr(args, "conditions", []) or [])
    resolve_conditions(card, conditions, getattr(args, "allow_extrapolation", False))
    if argv[0] == "sweep":
        name, values = parse_vary(args.vary, card)
        for value in values:
            resolve_conditions(card, {**conditions, name: value}, args.allow_extrapolation)


# ------------------------------------------------------------------------------------ running the quick ones ---
#: Commands that finish in seconds on the tiny model; every other documented command is only parsed above.
QUICK = {"models", "generate", "sweep", "analyze", "template"}
QUICK_COMMANDS = [(where, argv) for where, argv in COMMANDS if argv and argv[0] in QUICK]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from modelfactory import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny2d"))


def _in_range(value: float, spec) -> bool:
    return (spec.minimum is None or value >= spec.minimum) and (spec.maximum is None or value <= spec.maximum)


def _mapper(name: str, documented, tiny):
    """A function taking a value of condition ``name`` of the documented model into the tiny model's range: the
    linear map of the documented card's trained range onto the tiny one (clamping where the documented model is
    unknown, e.g. ``--model NAME``). Used only when a documented value lies outside the tiny range: today's docs
    (age 45..72, within 40..80) run unchanged."""
    spec = tiny.condition(name)
    source = documented.condition(name) if documented and name in documented.condition_names else None
    if source is None or source.minimum is None or source.maximum is None or source.maximum == source.minimum:
        return lambda value: min(max(value, spec.minimum), spec.maximum)
    scale = (spec.maximum - spec.minimum) / (source.maximum - source.minimum)
    return lambda value: spec.minimum + (value - source.minimum) * scale


def _tiny_assignment(text: str, documented, tiny, vary: bool) -> str | None:
    """``--set``/``--vary`` value ``NAME=...`` for the tiny model, or None to drop a condition it lacks."""
    name, _, value = text.partition("=")
    if name not in tiny.condition_names:
        return None
    spec = tiny.condition(name)
    if spec.kind == "categorical":
        values = [v.strip() for v in value.split(",")]
        kept = [v for v in values if v in spec.choices] or spec.choices[:len(values)]
        return f"{name}={','.join(kept)}"
    numbers = [float(v) for v in value.split(":")]
    ends = numbers[:2] if vary else numbers
    if all(_in_range(v, spec) for v in ends):
        return text
    to_tiny = _mapper(name, documented, tiny)
    mapped = [to_tiny(v) for v in ends]
    if vary and len(numbers) == 3:  # the same number of steps over the mapped interval
        mapped.append(numbers[2] * (mapped[1] - mapped[0]) / (numbers[1] - numbers[0]))
    return f"{name}={':'.join(f'{v:g}' for v in mapped)}"


def _write_field(path):
    """A small smooth 3D displacement field (RAS mm, intent 1006), the FIELD of ``analyze``."""
    from fieldfactory import smooth_random_field

    from DiffDefAtlasLib.fieldio import save_displacement_nifti
    from DiffDefAtlasLib.spatial import Grid

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    return save_displacement_nifti(smooth_random_field((16, 16, 16), 1.5, seed=3), Grid((16, 16, 16), affine), path)


def runnable_argv(argv: list[str], tiny_model, tmp_path) -> list[str]:
    """The documented ``argv`` rewritten to run here in seconds. What changes, and why:

    - ``--model NAME`` -> the tiny model's folder: the bundled models are 3D (``brain3d``) or trained on a larger
      grid and take too long for a test; the tiny one is a random-weight 2D model saved like a bundled one.
    - ``--set NAME=V`` / ``--vary NAME=...``: kept when the tiny model has a condition of that name and V lies in its
      range (40..80 years for age, F/M for sex); mapped linearly from the documented card's trained range onto the
      tiny one when not; dropped (``--set``) when the tiny model has no such condition (e.g. ``ventricle_volume``),
      which leaves it averaged over, as the CLI does for any unset condition. A ``--vary`` of a condition the tiny
      model lacks sweeps its age over the trained range instead.
    - ``--out DIR`` -> a folder under ``tmp_path``; ``analyze``'s ``FIELD`` (and ``--mask``) -> files written there.
    - ``--device cuda`` -> ``cpu`` where no GPU is present.

    Nothing else is changed (no fewer steps: the tiny card's 4 DDIM steps are already cheap)."""
    documented = CARDS.get(next((argv[n + 1] for n, w in enumerate(argv[:-1]) if w == "--model"), ""))
    tiny = resolve_model(str(tiny_model))
    words = [part for word in argv for part in (word.split("=", 1) if word.startswith("--") and "=" in word else [word])]
    out, n = [], 0
    while n < len(words):
        word = words[n]
        value = words[n + 1] if n + 1 < len(words) else None
        if word == "--model":
            out += [word, str(tiny_model)]
        elif word in ("--set", "--vary"):
            assignment = _tiny_assignment(value, documented, tiny, vary=word == "--vary")
            if assignment is None and word == "--vary":
                assignment = "age=40:80:10"
            if assignment is not None:
                out += [word, assignment]
        elif word == "--out":
            out += [word, str(tmp_path / "out")]
        elif word == "--mask":
            out += [word, str(_write_mask(tmp_path / "mask.nii.gz"))]
        elif word == "--device" and value.startswith("cuda") and not torch.cuda.is_available():
            out += [word, "cpu"]
        else:
            if argv[0] == "analyze" and n == 1 and not word.startswith("-"):  # FIELD
                out.append(str(_write_field(tmp_path / "field.nii.gz")))
            else:
                out.append(word)
            n += 1
            continue
        n += 2
    return out


def _write_mask(path):
    from DiffDefAtlasLib.imageio import Volume, write_image

    mask = np.zeros((16, 16, 16), dtype=np.uint8)
    mask[3:13, 3:13, 3:13] = 1
    return write_image(Volume(mask, np.diag([2.0, 2.0, 2.0, 1.0])), path)


def expected_outputs(args) -> list[str]:
    """The files the command's own documentation promises in ``--out``."""
    if args.command == "generate":
        return [ATLAS_FILES[key] for key in OUTPUT_SETS[args.outputs]] + [SUMMARY_NAME]
    if args.command == "sweep":
        return list(SWEEP_FILES.values())
    if args.command == "analyze":
        return ["jacobian.nii.gz", "folding.nii.gz", SUMMARY_NAME]
    if args.command == "template":
        images = ["t1.nii.gz", "labels.nii.gz", "brain_mask.nii.gz"] + [f"{t}_probability.nii.gz" for t in ("csf", "gm", "wm")]
        return images + [SUMMARY_NAME, *NOTICE_FILES]
    return []


@pytest.mark.parametrize(("where", "argv"), QUICK_COMMANDS, ids=[where for where, _ in QUICK_COMMANDS])
def test_a_documented_quick_command_runs_on_the_tiny_model(where, argv, tiny_model, tmp_path, capsys):
    run = runnable_argv(argv, tiny_model, tmp_path)
    status = main(run)
    printed = capsys.readouterr()
    assert status == 0, f"{where}: diffdef-atlas {' '.join(run)} exited {status}: {printed.err.strip()}"
    args = build_parser([run[0]]).parse_args(run)
    missing = [name for name in expected_outputs(args) if not (tmp_path / "out" / name).is_file()]
    assert not missing, f"{where}: diffdef-atlas {' '.join(run)} did not write {missing}"
    if args.command == "models":
        assert all(name in printed.out for name in CARDS)
    if args.command == "sweep":
        _, values = parse_vary(args.vary, resolve_model(str(tiny_model)))
        assert len([p for p in (tmp_path / "out").iterdir() if p.is_dir()]) == len(values)
