"""The commands the docs show are commands reidkit accepts, and README's quick start runs as written.

1. Every ``reidkit ...`` line in a shell block of README.md and docs/*.md (also ``python -m reidkit``,
   ``torchrun ... -m reidkit`` and ``.venv/bin/reidkit``) is parsed by the real argument parser: an
   option that does not exist, a wrong choice or a missing required option fails here. Nothing runs.
2. README's "Use on your own images" block runs, line by line, on a tiny synthetic set with an untrained
   model standing in for ``runs/demo/model.safetensors`` (``report`` gets ``--engine torch``, so it does not
   export the model to ONNX a second time; ``export`` is left out when onnx/onnxruntime are not installed).
   README's "Two commands" block is not run:
   ``make demo`` trains for minutes (``tests/engine/test_demo_engine.py`` runs the demo at a miniature
   scale) and ``make test`` is the whole suite this test belongs to.
3. Every code block of README.md and docs/*.md is run or says why not: each shell block carries a marker on
   the line before it — ``<!-- not-run: REASON -->`` or ``<!-- run by tests/X.py -->`` (the blocks marked as
   run by this file run here, line by line) — and a page's unmarked Python blocks run here in order, as one
   program, against a tiny synthetic set and untrained models under the names the blocks use. ``text``
   blocks only show output and ``yaml`` blocks are parsed. A new block without a marker fails the test.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from reidkit.cli import COMMANDS, _command_parser

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL = ("bash", "sh", "shell", "console")


def shell_blocks(text: str) -> list[str]:
    """The bodies of the fenced shell blocks of a Markdown page (indented blocks included)."""
    blocks = re.findall(r"^[ \t]*```(\w*)[ \t]*\n(.*?)^[ \t]*```", text, re.M | re.S)
    return [body for lang, body in blocks if lang in SHELL]


def command_lines(block: str) -> list[str]:
    """The block's commands: continuation lines joined, prompts and comments removed."""
    joined = re.sub(r"[ \t]*\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        line = line[2:] if line.startswith("$ ") else line
        if line and not line.startswith("#"):
            out.append(line)
    return out


def reidkit_argv(line: str) -> list[str] | None:
    """The arguments after ``reidkit`` when ``line`` runs the reidkit command, else None."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return None
    for stop in ("|", "&&", ";", ">", "2>", "||"):
        if stop in tokens:
            tokens = tokens[: tokens.index(stop)]
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):  # VAR=value prefixes
        tokens = tokens[1:]
    if not tokens:
        return None
    if tokens[0].endswith("reidkit") and "/" not in tokens[0].replace(".venv/bin/", ""):
        return tokens[1:]
    if "-m" in tokens and tokens[0] in ("python", "python3", "torchrun", ".venv/bin/python", ".venv/bin/torchrun"):
        i = tokens.index("-m")
        if i + 1 < len(tokens) and tokens[i + 1] == "reidkit":
            return tokens[i + 2:]
    return None


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for block in shell_blocks(page.read_text(encoding="utf-8")):
            for line in command_lines(block):
                if reidkit_argv(line) is not None:
                    found.append((page.name, line))
    return found


COMMAND_LINES = documented_commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMAND_LINES) > 50  # the extraction works: every page shows some
    pages = {page for page, _ in COMMAND_LINES}
    assert {"README.md", "cli.md", "datasets.md", "training.md", "evaluation.md"} <= pages


@pytest.mark.parametrize(("page", "line"), COMMAND_LINES, ids=[f"{p}:{i}" for i, (p, _) in enumerate(COMMAND_LINES)])
def test_documented_command_parses(page: str, line: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = reidkit_argv(line)
    assert argv is not None
    if not argv or argv[0] in ("--help", "-h", "--version"):
        return
    assert argv[0] in COMMANDS, f"{page}: `{line}`: no subcommand {argv[0]!r}"
    parser, _module = _command_parser(argv[0])
    try:
        parser.parse_args(argv[1:])
    except SystemExit as exc:
        assert exc.code == 0, f"{page}: `{line}` is refused: {capsys.readouterr().err.strip()}"


def test_the_parse_check_has_teeth(capsys: pytest.CaptureFixture[str]) -> None:
    """A documented line with an option that does not exist, or a wrong choice, is caught."""
    block = "reidkit demo --out runs/d \\\n    --epoch-count 3   # a comment\nCUDA_VISIBLE_DEVICES=0 .venv/bin/reidkit eval --ap interp"
    lines = command_lines(block)
    assert lines == ["reidkit demo --out runs/d --epoch-count 3   # a comment",
                     "CUDA_VISIBLE_DEVICES=0 .venv/bin/reidkit eval --ap interp"]
    for line in lines:
        with pytest.raises(AssertionError, match="is refused"):
            test_documented_command_parses("x.md", line, capsys)


# ------------------------------------------------------------------ README's quick start, run


def readme_block(after_heading: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index(after_heading):]
    return shell_blocks(section)[0]


def test_readme_two_commands_are_the_make_targets() -> None:
    """Not run (minutes; the whole suite): checked to be the Makefile's targets."""
    lines = command_lines(readme_block("## Two commands"))
    assert [shlex.split(line, comments=True) for line in lines] == [["make", "demo"], ["make", "test"]]
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


@pytest.fixture()
def readme_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What README's block expects to exist: runs/demo/model.safetensors, data/synthetic and folders of crops."""
    from reidkit.data.synthetic import generate_dataset
    from reidkit.models import build
    from reidkit.models.io import save_weights

    root = generate_dataset(tmp_path / "data" / "synthetic", ids=6, cams=2, seed=3, images_per_id_cam=2,
                            size=(64, 32), distractors=2, junk=1, gt_bbox=False)
    model = build("stadb", 3, backbone="resnet18", pretrained=None)
    model.input_size = (64, 32)
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    save_weights(model.eval(), tmp_path / "runs" / "demo" / "model.safetensors")
    test_images = sorted((root / "bounding_box_test").glob("0*.jpg"))
    assert len(test_images) >= 12
    for folder, images in (("my_crops", test_images[:4]), ("gallery", test_images[4:9]),
                           ("more_gallery", test_images[9:12]), ("query", sorted((root / "query").glob("*.jpg"))[:3])):
        (tmp_path / folder).mkdir()
        for image in images:
            (tmp_path / folder / image.name).write_bytes(image.read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REIDKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_readme_own_images_block_runs(readme_world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reidkit.cli import main

    lines = command_lines(readme_block("## Use on your own images"))
    assert len(lines) >= 7
    onnx = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None
    ran = []
    for line in lines:
        argv = reidkit_argv(line)
        assert argv is not None, f"README: not a reidkit command: {line}"
        if argv[0] == "export" and not onnx:
            continue  # the optional ONNX extra is not installed here
        if argv[0] in ("report",):
            argv = [*argv, "--engine", "torch", "--no-progress"]  # skip the ONNX export 'auto' makes on a CPU
        rc = main(argv)
        errors = [e for e in capsys.readouterr().err.splitlines() if e.startswith("reidkit:")]
        assert rc == 0, f"README: `{line}` exited {rc}: {errors}"
        ran.append(argv[0])
    assert {"extract", "index", "search", "visualize", "report"} <= set(ran)
    for made in ("feats.safetensors", "my_index/manifest.json", "ranks.png", "viz", "report.html"):
        assert (readme_world / made).exists(), made
    if onnx:
        assert (readme_world / "model.onnx").is_file()


# ------------------------------------------------------------------ every code block: run, or marked not run

CODE = (*SHELL, "python", "py")
SHOWN = ("text", "yaml")  # what a block shows (output, a folder tree) or a config fragment: parsed, not run
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(\S.{10,}?)\s*-->")
RUN_BY = re.compile(r"<!--\s*(?:the block below is )?run by (tests/[\w/]+\.py)\b.*?-->")
HERE = "tests/docs/test_docs_commands.py"


def code_blocks(page: Path) -> list[tuple[int, str, str, str]]:
    """(line, language, body, the HTML comment on the line before it or "") of every fenced block of a page."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^([ \t]*)```(\w*)[ \t]*$", lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while not re.match(r"^[ \t]*```[ \t]*$", lines[j]):
            j += 1
        prev = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        indent = len(m.group(1))
        body = "\n".join(line[indent:] for line in lines[i + 1:j]) + "\n"
        out.append((i + 1, m.group(2), body, prev if prev.startswith("<!--") else ""))
        i = j + 1
    return out


BLOCKS = [(page, *block) for page in PAGES for block in code_blocks(page)]


def python_blocks_run_here(page: Path) -> list[str]:
    """The page's Python blocks this test runs: those without a marker, in order."""
    return [body for p, _line, lang, body, mark in BLOCKS if p == page and lang in ("python", "py") and not mark]


def block_problems(blocks: list[tuple[Path, int, str, str, str]]) -> tuple[list[str], list[str]]:
    """(wrong blocks or markers, shell blocks neither run nor marked) among ``blocks``."""
    unmarked, bad = [], []
    for page, line, lang, _body, mark in blocks:
        where = f"{page.relative_to(REPO) if page.is_relative_to(REPO) else page.name}:{line}"
        run_by = RUN_BY.search(mark)
        if lang not in (*CODE, *SHOWN):
            bad.append(f"{where}: a ```{lang or '(no language)'} block; expected one of {', '.join(CODE + SHOWN)}")
        elif lang in SHOWN:
            continue
        elif mark and not (NOT_RUN.search(mark) or run_by):
            bad.append(f"{where}: marker {mark!r}: expected <!-- not-run: REASON --> or <!-- run by tests/X.py -->")
        elif run_by:
            test = REPO / run_by.group(1)
            if not test.is_file():
                bad.append(f"{where}: {run_by.group(1)} does not exist")
            elif page.name not in test.read_text(encoding="utf-8"):
                bad.append(f"{where}: {run_by.group(1)} never names {page.name}")
        elif not mark and lang in SHELL:
            unmarked.append(where)
    return bad, unmarked


def test_every_code_block_is_run_or_marked() -> None:
    """A shell block is run (its marker names the test that runs it) or marked ``<!-- not-run: reason -->``; a
    Python block is run here unless its marker says which test runs it or why it is not run; a block of
    another language must be one that only shows something. A new block without a marker fails here."""
    bad, unmarked = block_problems(BLOCKS)
    assert not bad, "\n".join(bad)
    assert not unmarked, ("shell blocks neither run nor marked (add <!-- not-run: REASON --> before each, or run "
                          "it in a test and say so):\n" + "\n".join(unmarked))
    assert sum(1 for *_, lang, _b, m in BLOCKS if lang in ("python", "py") and not m) >= 8  # run below


def test_the_block_check_has_teeth(tmp_path: Path) -> None:
    page = tmp_path / "new.md"
    page.write_text("```bash\nreidkit models\n```\n\n<!-- not-run: needs -->\n```bash\nreidkit presets\n```\n\n"
                    "<!-- not-run: needs the real Market-1501 -->\n```bash\nreidkit presets\n```\n\n"
                    "<!-- run by tests/docs/nothing.py -->\n```python\nx = 1\n```\n\n```\nplain\n```\n",
                    encoding="utf-8")
    bad, unmarked = block_problems([(page, *b) for b in code_blocks(page)])
    assert unmarked == ["new.md:1"]  # no marker
    assert len(bad) == 3 and "new.md:6: marker" in bad[0]  # a reason too short to be one
    assert "nothing.py does not exist" in bad[1] and "(no language)" in bad[2]


def test_yaml_blocks_parse() -> None:
    import yaml

    for page, line, lang, body, _mark in BLOCKS:
        if lang == "yaml":
            assert isinstance(yaml.safe_load(body), dict), f"{page.name}:{line}"


@pytest.mark.parametrize("where", [f"{p.relative_to(REPO)}:{line}" for p, line, lang, _b, m in BLOCKS
                                   if lang in SHELL and HERE in m and p.name != "README.md"])
def test_marked_shell_blocks_run(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The shell blocks marked as run by this file (README's own-images block has its own test above)."""
    from reidkit.cli import main

    monkeypatch.chdir(tmp_path)
    body = next(b for p, line, _lang, b, _m in BLOCKS if f"{p.relative_to(REPO)}:{line}" == where)
    for line in command_lines(body):
        argv = reidkit_argv(line)
        assert argv is not None, f"{where}: not a reidkit command: {line}"
        assert main(argv) == 0, f"{where}: `{line}` failed: {capsys.readouterr().err[-500:]}"
        assert capsys.readouterr().out.strip()


@pytest.fixture(scope="module")
def docs_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the Python blocks name, made small: untrained ResNet-18 STADBs (64×32) for every model file
    and run folder, a checkpoint, a synthetic Market-1501, and crops under the names the blocks use."""
    import shutil

    import torch

    from reidkit.data.synthetic import generate_dataset
    from reidkit.models import build
    from reidkit.models.io import model_meta, save_weights

    w = tmp_path_factory.mktemp("docs_world")
    root = generate_dataset(w / "data", ids=6, cams=2, seed=3, images_per_id_cam=2, size=(64, 32), distractors=2,
                            junk=1, gt_bbox=False)
    assert root.name == "Market-1501-v15.09.15"
    torch.manual_seed(0)
    model = build("stadb", 3, backbone="resnet18", pretrained=None)
    model.input_size = (64, 32)
    model.eval()
    for run in ("demo", "stadb_market1501"):
        (w / "runs" / run).mkdir(parents=True)
        save_weights(model, w / "runs" / run / "model.safetensors")
    torch.save({"model": model.state_dict(), "model_meta": model_meta(model)},
               w / "runs" / "stadb_market1501" / "checkpoint.pt")
    crops = sorted((root / "bounding_box_test").glob("0*.jpg"))
    names = ["a.jpg", "b.jpg", "query.jpg", "new.jpg", "cam1/0001.jpg", "cam2/0002.jpg",
             "gallery/0001_c1s1_000151_01.jpg", "gallery/0001_c2s1_000301_01.jpg", "gallery/0002_c1s1_000051_01.jpg"]
    for name, crop in zip(names, crops, strict=False):
        (w / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(crop, w / name)
    return w


PY_PAGES = [p for p in PAGES if python_blocks_run_here(p)]


@pytest.mark.parametrize("page", PY_PAGES, ids=[p.name for p in PY_PAGES])
def test_python_blocks_run(page: Path, docs_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page's unmarked Python blocks run in order as one program, as written, in a folder holding the files
    they name (``docs_world``, copied so each page starts from the same files)."""
    import shutil

    from reidkit.eval.knn import faiss_available

    blocks = python_blocks_run_here(page)
    if any("IndexSpec.make(\"hnsw\"" in b for b in blocks) and not faiss_available():
        pytest.skip("the page's block builds an HNSW index: needs faiss")
    if any("export_onnx" in b or ".onnx" in b for b in blocks) and importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("the page's blocks export to ONNX: needs onnx and onnxruntime")
    world = tmp_path / "w"
    shutil.copytree(docs_world, world)
    monkeypatch.chdir(world)
    monkeypatch.setenv("REIDKIT_CACHE", str(tmp_path / "cache"))
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for n, code in enumerate(blocks, start=1):
        try:
            exec(compile(code, f"{page.name} python block {n}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{page.name}: python block {n} fails as written: {type(exc).__name__}: {exc}\n"
                                 f"{code}") from exc
