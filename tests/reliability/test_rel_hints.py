"""The fixes a message suggests work: every command-line flag and ``--set KEY=VALUE`` that reidkit's messages
(errors, warnings, notes) name is one the real parser accepts.

The messages are read from the source (every string that is not a docstring or an argparse help text). A
flag after ``reidkit CMD`` in a message belongs to that command; one without is checked against the command
of the module it is in (``reidkit/commands/NAME.py``), else against every command (library messages). A
``--set KEY=VALUE`` must be a key the config accepts with such a value. A message a user meets from a
command is also checked end to end: each flag in it is one that command, or the ``reidkit CMD`` it names,
accepts, and each ``reidkit CMD ...`` it shows parses.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidkit.cli import COMMANDS, _command_parser, main
from reidkit.engine.config import load_config

PACKAGE = Path(__file__).resolve().parents[2] / "reidkit"
NOT_MESSAGES = {"add_argument", "add_argument_group", "add_parser", "run", "Popen", "check_output"}
EXTERNAL = {"--nproc_per_node"}  # torchrun's, named where reidkit tells how to start torchrun
FLAG = re.compile(r"(?<![\w-])(--[a-z][\w-]*\*?)")
COMMAND = re.compile(r"\breidkit ([a-z]+)\b(?: ([a-z]+)\b)?")
SET = re.compile(r"--set ([a-z_][\w.]*)=([^\s,;)'`]+)")


def flags_of(parser: argparse.ArgumentParser) -> set[str]:
    """The option strings of ``parser`` and of its subcommands (``index build``, ...)."""
    found = {s for a in parser._actions for s in a.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= flags_of(sub)
    return found


FLAGS = {name: flags_of(_command_parser(name)[0]) for name in COMMANDS}
ANY = set().union(*FLAGS.values())


def accepted(flag: str, allowed: set[str]) -> bool:
    if flag.endswith("*"):  # "--cuhk03-*": a family of flags
        return any(f.startswith(flag[:-1]) for f in allowed)
    return flag in allowed or flag in EXTERNAL


def _text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def messages() -> list[tuple[str, int, str]]:
    """(module, line, text) of every string in reidkit that names a flag, docstrings and help texts left out;
    the example programs (``reidkit/examples``) are left out too: their flags are their own, not reidkit's."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "examples") in path.parents:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                    and ast.get_docstring(node, clean=False) is not None:
                skip.add(id(node.body[0].value))  # type: ignore[attr-defined]
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if name in NOT_MESSAGES:
                    skip |= {id(sub) for sub in ast.walk(node)}
            if isinstance(node, ast.JoinedStr):
                skip |= {id(v) for v in node.values}
        for node in ast.walk(tree):
            text = None if id(node) in skip else _text(node)
            if text and FLAG.search(text):
                found.append((str(path.relative_to(PACKAGE.parent)), node.lineno, text))  # type: ignore[attr-defined]
    return found


def flag_problems(text: str, default: str | None) -> list[str]:
    """Flags of ``text`` that the command they belong to does not accept: the ``reidkit CMD`` before them in
    the text, else ``default`` (None: any command)."""
    problems = []
    commands = [(m.start(), m.group(1)) for m in COMMAND.finditer(text) if m.group(1) in COMMANDS]
    for m in FLAG.finditer(text):
        owner = next((name for start, name in reversed(commands) if start < m.start()), default)
        allowed = FLAGS[owner] if owner else ANY
        if not accepted(m.group(1), allowed):
            problems.append(f"{m.group(1)} is not a flag of {'reidkit ' + owner if owner else 'any command'}")
    return problems


def set_problems(text: str) -> list[str]:
    problems = []
    for key, value in SET.findall(text):
        value = "1" if value == "{}" else "some/file" if value.isupper() else value  # placeholders
        try:
            load_config(None, [f"{key}={value}"])
        except Exception as exc:  # any refusal is the finding
            problems.append(f"--set {key}={value}: {exc}")
    return problems


MESSAGES = messages()


def test_the_messages_are_found() -> None:
    modules = {module for module, _, _ in MESSAGES}
    assert len(MESSAGES) > 50 and {"reidkit/data/datasets/custom.py", "reidkit/engine/config.py",
                                   "reidkit/commands/export.py"} <= modules


@pytest.mark.parametrize(("module", "line", "text"), MESSAGES, ids=[f"{m}:{n}" for m, n, _ in MESSAGES])
def test_every_named_flag_exists(module: str, line: int, text: str) -> None:
    name = Path(module).stem
    default = name if module.startswith("reidkit/commands/") and name in COMMANDS else None
    assert flag_problems(text, default) == [], f"{module}:{line}: {text!r}"
    assert set_problems(text) == [], f"{module}:{line}: {text!r}"


def test_the_checks_have_teeth() -> None:
    """The hint issue 27 found (``--option`` for ``reidkit datasets``), a flag of no command, a wrong key."""
    old = "reidkit datasets --default-camid N, --option default_camid=N, data.options.default_camid: N"
    assert flag_problems(old, None) == ["--option is not a flag of reidkit datasets"]
    assert flag_problems("pass --epoch-count 3", None) == ["--epoch-count is not a flag of any command"]
    assert flag_problems("--cuhk03-* apply to cuhk03 only", "datasets") == []
    assert set_problems("e.g. --set sampler.q={}") and not set_problems("e.g. --set sampler.p={}")


def no_camera_tree(root: Path) -> Path:
    for split, pid in (("train", "alice"), ("train", "bob"), ("query", "carol"), ("gallery", "carol")):
        (root / split / pid).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((16, 8, 3), np.uint8)).save(root / split / pid / "frame.jpg")
    return root


def error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("reidkit: error: ")]
    assert len(lines) == 1
    return lines[0]


def hinted_commands_parse(message: str) -> list[str]:
    """The ``reidkit CMD --flag VALUE ...`` shown in ``message``, each parsed by that command's parser."""
    shown = re.findall(r"\breidkit ([a-z]+)((?: --[a-z][\w-]*(?:[ =][^\s,;()-][^\s,;()]*)?)+)", message)
    for command, rest in shown:
        parser = _command_parser(command)[0]
        parser.parse_args(rest.split())  # exits (SystemExit) when it refuses
    return [command for command, _ in shown]


@pytest.mark.parametrize("command", ["datasets", "train"])
def test_no_camera_hint_works_for_the_command_that_shows_it(command: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = no_camera_tree(tmp_path / "crops")
    argv = (["datasets", "folder", "--root", str(root)] if command == "datasets" else
            ["train", "--preset", "stadb_market1501", "--set", "data.dataset=folder", "--set", f"data.root={root}",
             "--set", "train.device=cpu", "--out", str(tmp_path / "run")])
    message = error_line(argv, capsys)
    assert "default_camid" in message
    assert flag_problems(message.removeprefix("reidkit: error: "), command) == []
    assert command in hinted_commands_parse(message)
