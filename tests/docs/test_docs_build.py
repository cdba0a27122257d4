"""The documentation site: `mkdocs build --strict` passes, and the CLI/API pages cover the code.

The build test needs mkdocs and mkdocstrings (the ``docs`` / ``dev`` extras); it is skipped with a
reason when they are not installed.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"

# The public names the API page must document: (dotted name as users write it, word to find).
PUBLIC_API = ("reidkit.load", "reidkit.Gallery", "reidkit.evaluate", "reidkit.models.build",
              "reidkit.datasets.load", "reidkit.engine.trainer.train", "reidkit.engine.config.load_config")


def _mkdocs_cmd() -> list[str] | None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        return None
    return [sys.executable, "-m", "mkdocs"]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    cmd = _mkdocs_cmd()
    if cmd is None:
        pytest.skip("mkdocs / mkdocstrings not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    proc = subprocess.run(
        [*cmd, "build", "--strict", "--site-dir", str(site), "--config-file", str(REPO / "mkdocs.yml")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    log = proc.stdout + proc.stderr
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log[-6000:]}"
    assert not warnings, "mkdocs warnings:\n" + "\n".join(warnings)
    assert (site / "index.html").is_file()
    for page in ("datasets", "reproduce", "training", "evaluation", "multigpu", "export", "api", "cli", "models"):
        assert (site / f"{page}.html").is_file(), f"{page}.md was not built"
    shutil.rmtree(site, ignore_errors=True)


def test_every_page_is_in_the_nav() -> None:
    text = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w/.-]+\.md)\s*$", text, flags=re.M))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages - listed == set(), f"pages missing from the nav in mkdocs.yml: {sorted(pages - listed)}"
    assert listed - pages == set(), f"nav entries without a page: {sorted(listed - pages)}"


def test_cli_page_lists_every_subcommand() -> None:
    from reidkit.cli import COMMANDS

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    missing = [name for name in COMMANDS if not re.search(rf"^#+ .*`?reidkit {re.escape(name)}`?", text, re.M)]
    assert not missing, f"docs/cli.md has no section for: {missing}"
    # and no section for a subcommand that does not exist
    documented = set(re.findall(r"^## `reidkit ([a-z_-]+)`", text, re.M))
    assert documented <= set(COMMANDS), f"docs/cli.md documents unknown subcommands: {documented - set(COMMANDS)}"


# Where each public name really lives, when it is not importable under its short spelling.
ALIASES = {"reidkit.datasets.load": "reidkit.data.datasets.load"}


def _importable(dotted: str) -> bool:
    import importlib

    module, _, attr = dotted.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), attr)
    except ImportError:
        return False


def test_api_page_names_the_public_api() -> None:
    """Each public name is documented under the spelling that actually imports."""
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = []
    for name in PUBLIC_API:
        spelling = name if _importable(name) else ALIASES.get(name, name)
        assert _importable(spelling), f"{name} is not importable (nor as {spelling})"
        if spelling not in text:
            missing.append(spelling)
    assert not missing, f"docs/api.md does not mention: {missing}"


def test_api_page_targets_exist() -> None:
    """Every ``::: dotted.name`` directive in the docs points at something importable by path."""
    import importlib

    for page in DOCS.rglob("*.md"):
        for target in re.findall(r"^:::\s*([\w.]+)", page.read_text(encoding="utf-8"), re.M):
            parts = target.split(".")
            for i in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:i]))
                except ImportError:
                    continue
                for attr in parts[i:]:
                    assert hasattr(obj, attr), f"{page.name}: '::: {target}' — {attr} not found"
                    obj = getattr(obj, attr)
                break
            else:
                pytest.fail(f"{page.name}: '::: {target}' — no importable module")


def test_docs_name_only_existing_presets() -> None:
    """Every configs/*.yaml path the docs mention exists in the repository."""
    missing = []
    for page in DOCS.rglob("*.md"):
        for path in set(re.findall(r"configs/[\w/.-]+\.yaml", page.read_text(encoding="utf-8"))):
            if not (REPO / path).is_file():
                missing.append(f"{page.name}: {path}")
    assert not missing, "docs mention presets that do not exist:\n" + "\n".join(sorted(missing))


def test_reproduce_measured_column_is_empty() -> None:
    """The 'measured with reidkit' cells are never filled with a paper's number by hand."""
    text = (DOCS / "reproduce.md").read_text(encoding="utf-8")
    for table in re.split(r"\n\s*\n", text):
        lines = [ln for ln in table.splitlines() if ln.startswith("|")]
        if not lines or "measured with reidkit" not in lines[0]:
            continue
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        cols = [i for i, c in enumerate(header) if c.startswith("measured with reidkit")]
        for row in lines[2:]:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]
            for i in cols:
                if i < len(cells):
                    assert cells[i] == "", f"reproduce.md: measured cell filled in row: {row}"


