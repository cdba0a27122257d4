"""Presets ship inside the package and are named, not pathed: ``_base_: NAME``, ``train --preset NAME``,
``reidkit presets``; an installed wheel holds them and finds them through ``importlib.resources``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from reidkit.cli import main
from reidkit.engine.config import config_to_dict, load_config
from reidkit.engine.presets import preset_names, preset_path, preset_summary, presets_folder
from reidkit.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_presets_are_package_data_and_the_repo_folder_is_a_link_not_a_copy() -> None:
    folder = presets_folder()
    assert folder == (REPO / "reidkit" / "configs").resolve() or folder == REPO / "reidkit" / "configs"
    assert (REPO / "configs").is_symlink() and (REPO / "configs").resolve() == folder.resolve()
    names = preset_names()
    assert {"stadb_market1501", "mancs_market1501", "bdb_market1501", "ablations/table6_all"} <= set(names)
    assert len(names) == len(list(folder.rglob("*.yaml")))


def test_every_preset_names_the_paper_row_it_reproduces() -> None:
    """Every preset names its paper row; those under examples/ say first that they are none."""
    for name in preset_names():
        summary = preset_summary(name)
        if name.startswith("examples/"):
            assert summary.startswith("Example, not a paper setting: ") and "Table" not in summary, (name, summary)
        else:
            assert "Table" in summary, (name, summary)
        assert summary.endswith("."), (name, summary)
    assert preset_summary("stadb_market1501") == ("STADB on Market-1501: the STADB paper's Table 1, row \"STADB\" "
                                                 "(recipe: §4.2).")


def test_presets_command_lists_each_with_its_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in preset_names():
        assert any(line.startswith(f"{name} ") and preset_summary(name) in line for line in out.splitlines()), name
    assert main(["presets", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert list(listed) == preset_names()
    assert listed["ablations/table6_all"]["reproduces"].startswith("STADB ablation on Market-1501 - Table 6")
    assert Path(listed["stadb_market1501"]["file"]) == preset_path("stadb_market1501")


def test_base_by_preset_name_from_a_folder_outside_the_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "mine.yaml").write_text("_base_: stadb_market1501\ntrain:\n  epochs: 7\n", encoding="utf-8")
    (work / "ablation.yaml").write_text("_base_: [ablations/table10_rho050.yaml]\n", encoding="utf-8")
    monkeypatch.chdir(work)
    mine = load_config("mine.yaml")
    expected = load_config(preset_path("stadb_market1501"), ["train.epochs=7"])
    assert config_to_dict(mine) == config_to_dict(expected)
    assert mine.model.name == "stadb" and mine.data.size == [384, 128]
    assert load_config("ablation.yaml").model.options["rho"] == 0.5


def test_base_paths_still_work_and_a_file_beats_a_preset_of_the_same_name(tmp_path: Path) -> None:
    (tmp_path / "stadb_market1501.yaml").write_text("model:\n  name: bdb\n", encoding="utf-8")
    (tmp_path / "child.yaml").write_text("_base_: stadb_market1501.yaml\n", encoding="utf-8")
    assert load_config(tmp_path / "child.yaml").model.name == "bdb"  # the file beside it, not the preset
    (tmp_path / "abs.yaml").write_text(f"_base_: {preset_path('mancs_market1501')}\n", encoding="utf-8")
    assert load_config(tmp_path / "abs.yaml").model.name == "mancs"


def test_unknown_base_is_one_line_naming_both_places(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("_base_: stadb_market\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'_base_' stadb_market is neither a file .* nor a preset"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="config file not found, and no preset has that name"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=re.escape("no preset named '../x'")):
        preset_path("../x")


def test_train_preset_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "mancs_cuhk03", "--print-config", "--set", "train.epochs=5"]) == 0
    printed = capsys.readouterr().out
    assert "name: mancs" in printed and "dataset: cuhk03" in printed and "epochs: 5" in printed
    assert main(["train", "--config", "stadb_msmt17", "--print-config"]) == 0  # --config takes a name too
    assert "dataset: msmt17" in capsys.readouterr().out
    assert main(["train", "--preset", "stadb_market"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reidkit: error: no preset named 'stadb_market'") and "\n" not in err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--preset", "stadb_market1501", "--config", "x.yaml"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_presets_by_name_from_an_installed_wheel(tmp_path: Path) -> None:
    """Build the wheel from the package sources, check the presets are in it, install it with pip (into a
    folder of its own, offline) and, from a folder outside the repository, find and load them through
    ``importlib.resources``, and name them on the command line."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "reidkit", src / "reidkit", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                    "-w", str(dist)], check=True, timeout=300)
    (wheel,) = dist.glob("reidkit-*.whl")
    expected = preset_names()
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if n.startswith("reidkit/configs/")}
        assert shipped == {f"reidkit/configs/{n}.yaml" for n in expected}
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, timeout=300)
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.yaml").write_text("_base_: stadb_market1501\ntrain:\n  epochs: 3\n", encoding="utf-8")
    script = textwrap.dedent("""
        import json, sys
        import reidkit
        from reidkit.engine.config import load_config
        from reidkit.engine.presets import preset_names, presets_folder
        cfg = load_config("mine.yaml")
        print(json.dumps({"package": reidkit.__file__, "folder": str(presets_folder()), "names": preset_names(),
                          "model": cfg.model.name, "epochs": cfg.train.epochs, "size": cfg.data.size}))
    """)
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["package"].startswith(str(site)) and got["folder"] == str(site / "reidkit" / "configs")
    assert got["names"] == expected
    assert (got["model"], got["epochs"], got["size"]) == ("stadb", 3, [384, 128])
    listed = subprocess.run([sys.executable, "-m", "reidkit", "presets"], cwd=work, env=env, capture_output=True,
                            text=True, timeout=300, check=True).stdout
    assert "ablations/table6_all" in listed and str(site / "reidkit" / "configs") in listed
    printed = subprocess.run([sys.executable, "-m", "reidkit", "train", "--preset", "mancs_cuhk03", "--print-config"],
                             cwd=work, env=env, capture_output=True, text=True, timeout=300, check=True).stdout
    assert "dataset: cuhk03" in printed and "name: mancs" in printed


def test_every_preset_the_docs_name_exists() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    named = {(page.name, m) for page in pages
             for m in re.findall(r"--preset ([a-z0-9_/]+)|_base_: ([a-z0-9_/]+)\s", page.read_text(encoding="utf-8"))}
    names = {(page, a or b) for page, (a, b) in named}
    assert any(page == "reproduce.md" for page, _ in names) and any(page == "training.md" for page, _ in names)
    known = set(preset_names())
    assert not {(page, n) for page, n in names if n not in known}
