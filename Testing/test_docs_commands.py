"""Every ``diffdef-atlas`` command in the README's and the docs' code blocks parses with the CLI's own parser, and
its conditions (``--set``, ``--vary``) lie in the named bundled model's trained range: a user copying a command
must not meet a usage error or an out-of-range refusal (the README's ``--vary age=45:80:5`` did, above 73.18)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from DiffDefAtlasLib.cli.main import SUBCOMMANDS, build_parser
from DiffDefAtlasLib.conditions.resolve import resolve_conditions
from DiffDefAtlasLib.generate.bundled import list_models
from DiffDefAtlasLib.generate.cli import parse_conditions, parse_vary

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```")
OPTIONAL = re.compile(r"\s*\[[^\[\]]*\]")


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
            words = shlex.split(part.strip().replace(".venv/bin/", ""), comments=True)
            if words[:1] == ["diffdef-atlas"]:
                commands.append((f"{path.relative_to(ROOT)}:{start}", words[1:]))
    return commands


COMMANDS = [entry for path in DOCS for entry in documented_commands(path)]
CARDS = {card.name: card for card in list_models()}


def test_the_docs_show_commands_to_check():
    assert len(COMMANDS) >= 20 and {argv[0] for _, argv in COMMANDS} >= {"generate", "sweep", "register", "train"}


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
