"""Command-line arguments refused before any work: resource knobs beyond what the machine can run (threads,
decoding workers, batch size, the synthetic images' size and counts) and empty paths (which would silently
mean the current folder). Each is one ``reidkit: error:`` line naming the flag (and the bound), exit 2.

Run in-process through ``reidkit.cli.main``: the parser refuses them before any model, image or dataset is
touched (the named files below do not exist, so getting past the parser would be a different error)."""

from __future__ import annotations

import argparse
import os

import pytest

from reidkit.cli import COMMANDS, _command_parser
from reidkit.commands.argtypes import path_arg
from reidkit.utils.limits import MAX_BATCH_IMAGES, MAX_SYNTH_SIDE, max_threads

MODEL = ["--checkpoint", "no/such/model.safetensors"]


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *must_contain: str) -> str:
    """Run ``reidkit ARGV`` in this process; it must stop in the parser (SystemExit 2) with one error line."""
    from reidkit.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, (info.value.code, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("reidkit: error: "), err
    for text in must_contain:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def test_max_threads_is_a_multiple_of_the_cpus():
    assert max_threads() == 4 * (os.cpu_count() or 1)


@pytest.mark.parametrize("command", [
    ["extract", *MODEL, "--images", "imgs", "--out", "f.safetensors"],
    ["eval", *MODEL, "--dataset", "market1501", "--root", "data"],
    ["index", "build", *MODEL, "--images", "imgs", "--out", "idx"],
    ["search", "idx", "--query", "q.jpg"],
])
@pytest.mark.parametrize(("flag", "value", "bound"), [
    ("--threads", "10000", f"between 1 and {max_threads()}"),
    ("--threads", "0", f"between 1 and {max_threads()}"),
    ("--workers", str(max_threads() + 1), f"between 0 and {max_threads()}"),
    ("--workers", "-1", f"between 0 and {max_threads()}"),
    ("--batch-size", str(MAX_BATCH_IMAGES + 1), f"between 1 and {MAX_BATCH_IMAGES}"),
    ("--batch-size", "0", f"between 1 and {MAX_BATCH_IMAGES}"),
])
def test_runtime_knobs_are_bounded(command, flag, value, bound, capsys):
    _refused([*command, flag, value], capsys, flag, bound, value)


def test_largest_threads_and_workers_are_accepted():
    parser, _ = _command_parser("extract")
    n = str(max_threads())
    args = parser.parse_args([*MODEL, "--images", "x", "--out", "f", "--threads", n, "--workers", n,
                              "--batch-size", str(MAX_BATCH_IMAGES)])
    assert args.threads == args.workers == max_threads() and args.batch_size == MAX_BATCH_IMAGES


@pytest.mark.parametrize(("flag", "value", "bound"), [
    ("--height", str(MAX_SYNTH_SIDE + 1), f"between 16 and {MAX_SYNTH_SIDE}"),
    ("--width", "100000", f"between 8 and {MAX_SYNTH_SIDE}"),
    ("--height", "8", "between 16"),
    ("--workers", "10000", f"between 0 and {max_threads()}"),
    ("--images-per-id-cam", "1000000", "between 1 and 100"),
    ("--distractors", "1000000000", "between 0 and 100000"),
    ("--junk", "-1", "between 0 and 100000"),
])
def test_synth_knobs_are_bounded(tmp_path, flag, value, bound, capsys):
    _refused(["synth", "--out", str(tmp_path / "s"), flag, value], capsys, flag, bound)
    assert not (tmp_path / "s").exists()


def test_library_bounds_threads_and_synth_sizes(tmp_path):
    """The calls behind the flags hold the same bounds (the Python API takes no parser)."""
    from reidkit.data.synthetic import generate_dataset
    from reidkit.errors import DatasetError, ReidkitError
    from reidkit.utils.threads import configure_cpu_threads

    with pytest.raises(ReidkitError, match=f"between 1 and {max_threads()}"):
        configure_cpu_threads(10_000)
    with pytest.raises(DatasetError, match=f"16x8 to {MAX_SYNTH_SIDE}x{MAX_SYNTH_SIDE}"):
        generate_dataset(tmp_path / "s", size=(9450, 9450))
    with pytest.raises(DatasetError, match="workers"):
        generate_dataset(tmp_path / "s", workers=10_000)
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------------ empty paths
@pytest.mark.parametrize("argv", [
    ["extract", *MODEL, "--images", "", "--out", "f.safetensors"],
    ["extract", *MODEL, "--csv", "", "--out", "f.safetensors"],
    ["extract", *MODEL, "--images", "imgs", "--out", ""],
    ["extract", "--checkpoint", "", "--images", "imgs", "--out", "f.safetensors"],
    ["eval", "--features", ""],
    ["eval", *MODEL, "--dataset", "market1501", "--root", ""],
    ["index", "build", *MODEL, "--images", "imgs", "--out", ""],
    ["index", "add", "", "--images", "imgs"],
    ["search", "", "--query", "q.jpg"],
    ["search", "idx", "--query", ""],
    ["export", "--checkpoint", "", "--out", "m.onnx"],
    ["train", "--config", ""],
    ["datasets", "market1501", "--root", ""],
    ["synth", "--out", ""],
    ["demo", "--data", ""],
    ["report", *MODEL, "--dataset", "market1501", "--root", "d", "--out", ""],
    ["visualize", "attention", *MODEL, "--images", "", "--out", "viz"],
])
def test_empty_paths_are_refused(argv, capsys):
    line = _refused(argv, capsys, "expected a path, got an empty string")
    assert "argument " in line


def _actions(parser: argparse.ArgumentParser):
    for action in parser._actions:  # argparse keeps no public list
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)
        else:
            yield action


PATH_METAVARS = {"PATH", "DIR", "FILE", "YAML", "PNG", "INDEX_DIR", "IMG_or_DIR", "IMG"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_path_option_takes_the_path_type(name):
    """Every option whose value is a path (by its metavar) goes through ``path_arg``, so a new path option
    cannot forget the empty-path check."""
    parser, _ = _command_parser(name)
    for action in _actions(parser):
        if action.metavar in PATH_METAVARS or action.dest in ("out", "index", "images", "csv", "root"):
            assert action.type is path_arg, f"reidkit {name} {action.option_strings or action.dest}"


# ------------------------------------------------------------------- numbers, seeds, devices, long paths (issue 30)
LONG_NAME = "n" * 256  # one byte over NAME_MAX


@pytest.mark.parametrize("argv", [
    ["extract", *MODEL, "--images", "imgs", "--out", f"out/{LONG_NAME}.safetensors"],
    ["extract", "--checkpoint", f"{LONG_NAME}/model.safetensors", "--images", "imgs", "--out", "f.safetensors"],
    ["search", "idx", "--query", f"q/{LONG_NAME}.jpg"],
    ["search", LONG_NAME, "--query", "q.jpg"],
    ["train", "--config", f"{LONG_NAME}.yaml"],
    ["train", "--config", "c.yaml", "--out", f"runs/{LONG_NAME}"],
    ["eval", *MODEL, "--dataset", "market1501", "--root", f"data/{LONG_NAME}"],
    ["eval", "--features", "f.safetensors", "--out", LONG_NAME],
    ["export", *MODEL, "--out", f"{LONG_NAME}.onnx"],
    ["export", "--checkpoint", "/" + "d/" * 2100 + "m.safetensors", "--out", "m.onnx"],
])
def test_over_long_paths_are_refused_by_the_parser(argv, capsys):
    line = _refused(argv, capsys, "argument ")
    assert "bytes" in line


@pytest.mark.parametrize("argv", [
    ["synth", "--out", "s", "--seed", "-1"],
    ["synth", "--out", "s", "--seed", str(2**32)],
    ["eval", "--features", "f.safetensors", "--single-shot", "--seed", "-1"],
    ["visualize", "ranklist", "--features", "f.safetensors", "--out", "viz", "--seed", "-5"],
])
def test_seeds_are_within_numpy_range(argv, capsys):
    _refused(argv, capsys, "--seed", f"between 0 and {2**32 - 1}")


@pytest.mark.parametrize(("argv", "flag"), [
    (["demo", "--seconds-budget", "nan"], "--seconds-budget"),
    (["demo", "--seconds-budget", "inf"], "--seconds-budget"),
    (["demo", "--seconds-budget", "0"], "--seconds-budget"),
    (["demo", "--epochs", "-1"], "--epochs"),
    (["demo", "--ids", "1000000000"], "--ids"),
    (["export", *MODEL, "--out", "m.onnx", "--atol", "nan"], "--atol"),
    (["export", *MODEL, "--out", "m.onnx", "--atol", "-1"], "--atol"),
    (["export", *MODEL, "--out", "m.onnx", "--int8", "--min-cosine", "nan"], "--min-cosine"),
    (["export", *MODEL, "--out", "m.onnx", "--opset", "99999999999999999999"], "--opset"),
    (["eval", "--features", "f", "--lambda", "nan"], "--lambda"),
    (["eval", "--features", "f", "--rerank", "--k1", "-3"], "--k1"),
    (["eval", "--features", "f", "--max-rank", "10000000000"], "--max-rank"),
    (["search", "idx", "--query", "q.jpg", "--k", "0"], "--k"),
    (["search", "idx", "--query", "q.jpg", "--nprobe", "-1"], "--nprobe"),
    (["index", "build", *MODEL, "--images", "i", "--out", "o", "--approx", "ivfpq", "--nlist", "0"], "--nlist"),
    (["models", "--num-classes", "99999999999999999999"], "--num-classes"),
    (["datasets", "cuhk03", "--root", "d", "--split-id", "20"], "--split-id"),
    (["synth", "--out", "s", "--cams", "10"], "--cams"),
    (["synth", "--out", "s", "--ids", "100000"], "--ids"),
    (["visualize", "attention", *MODEL, "--images", "i", "--out", "o", "--per-picture", "0"], "--per-picture"),
    (["report", "--features", "f", "--out", "r.html", "--worst", "-1"], "--worst"),
])
def test_numbers_are_bounded_and_finite(argv, flag, capsys):
    _refused(argv, capsys, flag)


@pytest.mark.parametrize("device", ["cuda:x", "tpu", "gpu", "cuda:-1", "", "cpu:0"])
@pytest.mark.parametrize("command", [
    ["extract", *MODEL, "--images", "imgs", "--out", "f.safetensors"],
    ["search", "idx", "--query", "q.jpg"],
    ["visualize", "attention", *MODEL, "--images", "i", "--out", "o"],
])
def test_unusable_device_names_are_refused_by_the_parser(command, device, capsys):
    _refused([*command, "--device", device], capsys, "--device", "expected cpu, cuda, cuda:N, mps or auto")


def test_work_is_not_done_before_a_bad_value_is_refused(tmp_path, rel_weights, capsys):
    """``demo --epochs -1`` generated the synthetic data first; ``export --atol nan`` ran the export first."""
    _refused(["demo", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "data"), "--epochs", "-1"], capsys,
             "--epochs")
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()
    import time

    start = time.perf_counter()
    _refused(["export", "--checkpoint", str(rel_weights), "--out", str(tmp_path / "m.onnx"), "--atol", "nan"],
             capsys, "--atol")
    assert time.perf_counter() - start < 5 and not list(tmp_path.glob("*.onnx"))


def test_export_to_a_file_named_in_other_bytes_than_utf8(tmp_path, rel_weights, cli):
    """``export --out $'\\xff.onnx'`` was a traceback from the ONNX writer; the file is now written."""
    out = os.path.join(os.fsencode(tmp_path), b"\xff\xfe.onnx")
    res = cli(["export", "--checkpoint", str(rel_weights), "--out", os.fsdecode(out)], timeout=300)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert os.path.isfile(out) and os.path.getsize(out) > 1000
    assert [p for p in os.listdir(os.fsencode(tmp_path))] == [b"\xff\xfe.onnx"]  # no temporary file left


def test_every_number_option_has_a_bounded_type():
    """No option takes a plain ``int`` or ``float`` (unbounded, NaN accepted): each goes through an argtypes type,
    and every ``--device`` and ``--seed`` through theirs."""
    from reidkit.commands.argtypes import device_arg

    for name in sorted(COMMANDS):
        parser, _ = _command_parser(name)
        for action in _actions(parser):
            where = f"reidkit {name} {action.option_strings or action.dest}"
            assert action.type not in (int, float), where
            if "--device" in action.option_strings:
                assert action.type is device_arg, where
            if "--seed" in action.option_strings:
                assert action.type("0") == 0 and getattr(action.type, "__name__", "") == "integer", where
