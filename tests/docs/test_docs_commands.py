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
