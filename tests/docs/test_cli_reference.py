"""docs/cli.md against the real argument parsers: every subcommand, every option, every default it states.

Each ``## `reidkit NAME` `` (or ``### `reidkit NAME SUB` `` for ``index`` and ``visualize``) section holds an
option table (``| option | meaning |``). The tests walk every parser that ``reidkit.cli`` builds and check,
both ways, that the table names exactly the parser's options, that a ``{a,b}`` after an option is its
choices, that ``(required)`` is said of required options only and of each of them, and that every number
the page gives as a default is the default the parser (or, for a default computed at run time, its help
text) has. A new option, a changed default or a removed flag fails here until the page says so.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from reidkit.cli import COMMANDS, _command_parser

CLI_MD = Path(__file__).resolve().parents[2] / "docs" / "cli.md"

OPTION = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")
NUMBER = re.compile(r"^[+-]?(\d[\d,]*\.?\d*(e[+-]?\d+)?|\.\d+)$", re.I)
CLAIM = re.compile(r"\bdefault:?\s+`?([^\s`,;)]+)")


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command line the CLI accepts: ``"eval"``, ``"index build"``, ... -> its parser."""
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out[name] = parser
        for action in subs:
            for sub, sub_parser in action.choices.items():
                walk(f"{name} {sub}", sub_parser)

    for command in COMMANDS:
        walk(command, _command_parser(command)[0])
    return out


def documented() -> dict[str, list[tuple[str, str]]]:
    """Per ``reidkit ...`` section of docs/cli.md: its option table rows as (option cell, meaning cell)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: str | None = None
    for line in CLI_MD.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^#{2,3} `reidkit ([a-z -]+)`\s*$", line)
        if heading:
            current = heading.group(1).strip()
            sections.setdefault(current, [])
            continue
        if line.startswith("#"):
            current = None
        if current is None or not line.startswith("| "):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 2 and cells[0] not in ("option", "---") and not set(cells[0]) <= {"-"}:
            sections[current].append((cells[0], cells[1]))
    return sections


def options_of(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def names_in(cell: str) -> set[str]:
    """Option strings (``--k1``, ``-c``) named in a table's option cell."""
    return set(OPTION.findall(cell))


def unset(value: object) -> bool:
    """A parser default that is no value to state: None, a flag's False/True, an empty repeatable list."""
    return value is None or isinstance(value, bool) or value == []


def expected_default(action: argparse.Action) -> str | None:
    """The default as the page should state it: the parser's, or for one computed at run time (parser
    default None) the value its help text gives; None for flags and options without a stated default."""
    if action.nargs == 0 or unset(action.default):
        found = CLAIM.search((action.help or "").replace("%(default)s", str(action.default)))
        return found.group(1) if found and action.nargs != 0 else None
    return str(action.default)


def same_value(a: str, b: str) -> bool:
    a, b = a.strip("`.:"), b.strip("`.:")
    if NUMBER.match(a) and NUMBER.match(b):
        return float(a.replace(",", "")) == float(b.replace(",", ""))
    return a == b


PARSERS = parsers()
DOCS = documented()


def test_every_command_line_has_a_section() -> None:
    missing = sorted(set(PARSERS) - set(DOCS))
    assert not missing, f"docs/cli.md has no section (## `reidkit NAME`) for: {missing}"
    unknown = sorted(name for name in DOCS if name not in PARSERS and not any(p.startswith(name + " ")
                                                                               for p in PARSERS))
    assert not unknown, f"docs/cli.md documents commands that do not exist: {unknown}"


def command_table() -> list[tuple[str, str, str]]:
    """The page's command table as (command, link target, what it does), in page order."""
    text = CLI_MD.read_text(encoding="utf-8")
    table = text[text.index("| command | what it does |"):].split("\n\n", 1)[0]
    return re.findall(r"^\| \[`([a-z]+)`\]\(#([a-z-]+)\) \| (.*) \|$", table, re.M)


def test_command_table_lists_every_subcommand() -> None:
    """The table at the top names every subcommand ``reidkit.cli`` registers, in its order, with the one-line
    help ``reidkit --help`` prints (arrows and code marks as the page writes them) and a link to its section."""
    rows = command_table()
    assert [name for name, _, _ in rows] == list(COMMANDS)
    for name, anchor, what in rows:
        assert anchor == f"reidkit-{name}"
        assert what.replace("→", "->").replace("`", "") == COMMANDS[name][1], name


Rows = list[tuple[str, str]]


def option_problems(name: str, rows: Rows) -> list[str]:
    """Options the parser has that the rows do not name, and the reverse; positionals missing."""
    in_docs = set().union(*(names_in(cell) for cell, _ in rows)) if rows else set()
    real = {s for a in options_of(PARSERS[name]) for s in a.option_strings}
    problems = [f"reidkit {name}: {o} is missing from docs/cli.md" for o in sorted(real - in_docs)]
    problems += [f"reidkit {name}: docs/cli.md names {o}, which it does not have" for o in sorted(in_docs - real)]
    cells = " ".join(cell for cell, _ in rows)
    for action in options_of(PARSERS[name]):
        label = action.metavar or action.dest.upper()
        if not action.option_strings and f"`{label}" not in cells:  # a positional: its metavar names it
            problems.append(f"reidkit {name}: positional {label} is not in the table")
    return problems


def choice_problems(name: str, rows: Rows) -> list[str]:
    """``{a,b}`` that are not the parser's choices; ``(required)`` said of an optional option, or not said of a
    required one."""
    by_string = {s: a for a in options_of(PARSERS[name]) for s in a.option_strings}
    problems = []
    for cell, meaning in rows:
        for option, choices in re.findall(r"(--?[\w-]+) \{([^}]*)\}", cell):
            real = by_string[option].choices if option in by_string else None
            if real is None or set(choices.split(",")) != set(real):
                problems.append(f"reidkit {name} {option}: docs say {{{choices}}}, the parser accepts {real}")
        listed = [by_string[s] for s in names_in(cell) if s in by_string]
        if "(required" in meaning and not any(a.required for a in listed):
            problems.append(f"reidkit {name} {cell}: said required, but is optional")
        problems += [f"reidkit {name} {cell}: required by the parser; the page does not say"
                     for a in listed if a.required and "required" not in meaning]
    return problems


def default_problems(name: str, rows: Rows) -> list[str]:
    """Defaults the rows state that are not the parser's, and parser defaults missing from a row that speaks
    of defaults."""
    by_string = {s: a for a in options_of(PARSERS[name]) for s in a.option_strings}
    problems = []
    for cell, meaning in rows:
        listed = list(dict.fromkeys(by_string[s] for s in OPTION.findall(cell) if s in by_string))
        expected = [e for e in (expected_default(a) for a in listed) if e is not None]
        # every number the page calls a default is the default of an option in the row ...
        for claim in CLAIM.findall(meaning):
            if NUMBER.match(claim.strip("`.:")) and not any(same_value(claim, e) for e in expected):
                problems.append(f"reidkit {name} {cell}: docs say default {claim}; the parser's: {expected or 'none'}")
        for m in re.finditer(r"\bdefault:?\s+([\d.e+-]+(?:\s*(?:,|×)\s*[\d.e+-]+)+)", meaning):  # "20, 6, 0.3"
            values = re.split(r"\s*(?:,|×)\s*", m.group(1))
            if not all(same_value(v, e) for v, e in zip(values, expected, strict=False)) or len(values) > len(expected):
                problems.append(f"reidkit {name} {cell}: docs say defaults {values}; the parser's, in order: {expected}")
        # ... and a row that speaks of defaults gives each option's real one
        if "default" not in meaning:
            continue
        tokens = re.findall(r"[^\s`(),;:]+", meaning)
        for action in listed:
            e = expected_default(action)
            if e is None or unset(action.default):
                continue
            if not (re.search(rf"(?<![\w.]){re.escape(e)}(?![\w.])", meaning) or any(same_value(t, e) for t in tokens)):
                problems.append(f"reidkit {name} {'/'.join(action.option_strings)}: default {e} is not on the page")
    return problems


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_table_names_exactly_the_parser_options(name: str) -> None:
    assert option_problems(name, DOCS.get(name, [])) == []


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_choices_and_required(name: str) -> None:
    assert choice_problems(name, DOCS.get(name, [])) == []


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_stated_defaults_are_the_real_ones(name: str) -> None:
    assert default_problems(name, DOCS.get(name, [])) == []


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_texts_state_the_parser_default(name: str) -> None:
    """``--help`` itself does not drift: a number its help calls the default is the parser's default."""
    for action in options_of(PARSERS[name]):
        if unset(action.default) or not action.help:
            continue
        for claim in CLAIM.findall(action.help.replace("%(default)s", str(action.default))):
            if NUMBER.match(claim.strip("`.:")):
                assert same_value(claim, str(action.default)), \
                    f"reidkit {name} {'/'.join(action.option_strings)}: help says default {claim}, parser {action.default}"


def test_the_checks_have_teeth() -> None:
    """Planted drift is caught: the defaults this page had wrong, an option it lacked, one it invented."""
    demo = DOCS["demo"]
    stale = [(c, m.replace("(default 30)", "(default 12)")) for c, m in demo]
    assert any("docs say default 12; the parser's: ['30']" in p for p in default_problems("demo", stale))
    export = [(c, m.replace("(default 1e-4)", "(default 1e-3)")) for c, m in DOCS["export"]]
    assert any("default 1e-3" in p for p in default_problems("export", export))
    eval_rows = [(c, m.replace("(default 20, 6, 0.3)", "(default 20, 5, 0.3)")) for c, m in DOCS["eval"]]
    assert any("defaults ['20', '5', '0.3']" in p for p in default_problems("eval", eval_rows))
    train = [(c, m) for c, m in DOCS["train"] if "--preset" not in c] + [("`--epochs N`", "epochs")]
    problems = option_problems("train", train)
    assert "reidkit train: --preset is missing from docs/cli.md" in problems
    assert "reidkit train: docs/cli.md names --epochs, which it does not have" in problems
    synth = [(c.replace("{view1,all}", "{view1,view2}"), m) for c, m in DOCS["datasets"]]
    assert any("{view1,view2}" in p for p in choice_problems("datasets", synth))
    assert same_value("1e-4", "0.0001") and same_value("300", "300.0") and not same_value("ids", "100")
