"""A seeded fuzz of the command line: a few hundred invocations of every subcommand, each with one bad value (a
wrong type, an empty string, a huge or negative number, NaN, a name in other bytes than UTF-8, an over-long path,
a FIFO, ``/dev/zero``, a device name that does not exist, an unknown flag). Every invocation must be refused with
one ``reidkit: error:`` line and exit 2, no traceback, within a few seconds.

Run in-process through ``reidkit.cli.main`` (a subprocess each would take minutes). Only invocations refused
before any work are generated: each starts from a command that fails at once (a model, dataset or index that is
not there, an output folder under a regular file) and changes one option; a value that happens to be valid
then meets that failure. A hang (a FIFO opened for reading) is cut by an alarm and fails the test."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable

import pytest

SEED = 30
INVOCATIONS = 260
SECONDS_EACH = 10.0  # the first invocation of a command imports torch and its modules; the others take ms

BAD_INTS = ["", " ", "abc", "-1", "-99999999999999999999", "99999999999999999999", "1e400", "nan", "1.5",
            "0x10", "\udcff", "--", "9" * 5000]
BAD_FLOATS = ["nan", "NaN", "-nan", "inf", "-inf", "1e400", "", "abc", "-1", "1e308", "\udcff", "0x1p3", "--"]
BAD_DEVICES = ["tpu", "cuda:x", "cuda:-1", "", "gpu", "cuda:99999", "\udcff", "cpu:0", "cuda:0:1", "x" * 1000]
BAD_CHOICES = ["", "bogus", "\udcff", "FLAT"]
TEXTS = ["", "=", "a=b", "x" * 10_000, "\udcff=\udcfe", "train.epochs=-1", "a.b.c=[", "{}", "\n\x1b[2J"]


class Hang(BaseException):
    """Raised by the alarm: an invocation ran past its bound."""


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths the invocations name: missing ones, a FIFO, a regular file, a folder."""
    d = tmp_path_factory.mktemp("fuzz")
    fifo = d / "fifo"
    os.mkfifo(fifo)
    regular = d / "regular.txt"
    regular.write_text("not a model, a dataset or an index\n")
    (d / "folder").mkdir()
    return {"dir": str(d), "fifo": str(fifo), "file": str(regular), "folder": str(d / "folder"),
            "missing": str(d / "no" / "such"), "model": str(d / "no" / "model.safetensors"),
            "under_file": str(regular / "sub")}


def bad_paths(p: dict[str, str], output: bool) -> list[str]:
    """Paths a command must refuse (or, for an input, fail to read) in one line."""
    paths = ["", "y" * 256, "a/" + "z" * 300 + "/b", "/" + "w/" * 2100, p["fifo"], "/dev/zero", "/dev/null",
             p["under_file"], os.path.join(p["dir"], "\udcff\udcfe"), "\n\x1b[31mred", "\ud800"]
    return paths + ([p["folder"]] if output else [p["file"], p["folder"], p["missing"]])


def folder_outputs(p: dict[str, str]) -> list[str]:
    """Values for an output folder that a command refuses before any work (a valid new one would be written)."""
    return ["", "y" * 256, p["fifo"], "/dev/zero", "/dev/null", p["under_file"], p["file"], "/" + "w/" * 2100]


def specs(p: dict[str, str]) -> dict[str, tuple[list[str], dict[str, list[str]]]]:
    """Per command: an invocation that fails at once, and the values each option may be given instead."""
    knobs = {"--batch-size": BAD_INTS, "--workers": BAD_INTS, "--threads": BAD_INTS, "--device": BAD_DEVICES,
             "--engine": BAD_CHOICES}
    inp, out = bad_paths(p, output=False), bad_paths(p, output=True)
    ints = BAD_INTS
    model = ["--checkpoint", p["model"]]
    index_opts = {f: ints for f in ("--nlist", "--m", "--nbits", "--nprobe", "--refine", "--hnsw-m",
                                    "--ef-construction", "--ef-search")}
    return {
        "datasets": (["datasets", "market1501", "--root", p["missing"]],
                     {"--root": inp, "--split-id": ints, "--default-camid": ints, "--verify-images": BAD_CHOICES}),
        "models": (["models"], {"--num-classes": [v for v in ints if v != "--"]}),
        "presets": (["presets"], {"--json": ["x"]}),
        "synth": (["synth", "--out", p["under_file"]],
                  {"--ids": ints, "--cams": ints, "--seed": ints, "--images-per-id-cam": ints, "--height": ints,
                   "--width": ints, "--distractors": ints, "--junk": ints, "--workers": ints,
                   "--out": folder_outputs(p), "--grid": out}),
        "demo": (["demo", "--out", p["under_file"], "--quiet"],
                 {"--seconds-budget": BAD_FLOATS, "--epochs": ints, "--ids": ints, "--out": folder_outputs(p),
                  "--data": folder_outputs(p), "--set": TEXTS}),
        "train": (["train", "--config", p["missing"] + ".yaml", "--quiet"],
                  {"--config": inp, "--out": out, "--set": TEXTS}),
        "eval": (["eval", *model, "--dataset", "market1501", "--root", p["missing"]],
                 {"--root": inp, "--out": out, "--save-features": out, "--k1": ints, "--k2": ints,
                  "--lambda": BAD_FLOATS, "--max-rank": ints, "--repeats": ints, "--seed": ints,
                  "--metric": BAD_CHOICES, "--dataset": TEXTS, "--option": TEXTS, "--checkpoint": inp,
                  "--multi-query": BAD_CHOICES, **knobs}),
        "extract": (["extract", *model, "--images", p["missing"], "--out", os.path.join(p["dir"], "f.safetensors")],
                    {"--checkpoint": inp, "--images": inp, "--out": out, **knobs}),
        "index build": (["index", "build", *model, "--images", p["missing"], "--out", p["under_file"]],
                        {"--checkpoint": inp, "--images": inp, "--out": folder_outputs(p), "--approx": BAD_CHOICES,
                         "--metric": BAD_CHOICES, **index_opts, **knobs}),
        "index add": (["index", "add", p["missing"], "--images", p["missing"]],
                      {"--images": inp, "--checkpoint": inp, **knobs}),
        "index remove": (["index", "remove", p["missing"], "--pids", "1"], {"--pids": [v for v in ints if v != "-1"]}),
        "index rebuild": (["index", "rebuild", p["missing"]], {"--approx": BAD_CHOICES, **index_opts}),
        "search": (["search", p["missing"], "--query", p["missing"]],
                   {"--query": inp, "--k": ints, "--nprobe": ints, "--refine": ints, "--ef-search": ints,
                    "--max-picture-queries": ints, "--out": out, "--picture": out, "--gallery-root": inp,
                    "--checkpoint": inp, "--format": BAD_CHOICES, **knobs}),
        "export": (["export", *model, "--out", os.path.join(p["dir"], "m.onnx")],
                   {"--checkpoint": inp, "--out": out, "--opset": ints, "--atol": BAD_FLOATS,
                    "--min-cosine": BAD_FLOATS, "--calibration-images": ints, "--calibrate": inp}),
        "visualize attention": (["visualize", "attention", *model, "--images", p["missing"], "--out", p["under_file"]],
                                {"--per-picture": ints, "--max-images": ints, "--device": BAD_DEVICES,
                                 "--checkpoint": inp, "--images": inp, "--out": folder_outputs(p), "--maps": TEXTS}),
        "visualize ranklist": (["visualize", "ranklist", "--features", p["missing"], "--out", p["dir"]],
                               {"--queries": ints, "--k": ints, "--seed": ints, "--query-index": ints,
                                "--features": inp, "--metric": BAD_CHOICES, "--out": folder_outputs(p), **knobs}),
        "report": (["report", "--features", p["missing"], "--out", os.path.join(p["dir"], "r.html")],
                   {"--worst": ints, "--k": ints, "--out": out, "--features": inp, "--title": TEXTS}),
    }


def _with(base: list[str], flag: str, value: str) -> list[str]:
    """``base`` with ``flag`` given ``value`` (replacing the value it had)."""
    argv = list(base)
    if flag in argv:
        i = argv.index(flag)
        argv[i + 1] = value
        return argv
    return [*argv, flag, value]


EDGE_VALUES = {id(BAD_INTS), id(BAD_FLOATS), id(BAD_DEVICES), id(BAD_CHOICES)}  # refused by the option's type


def invocations(p: dict[str, str], n: int, seed: int) -> list[tuple[list[str], str | None]]:
    """``n`` seeded invocations: each a failing base with one option changed, or a broken command line; with the
    option whose type must refuse the value (its name in the error line), or None (any one-line error)."""
    rng = random.Random(seed)
    table = specs(p)
    names = sorted(table)
    out: list[tuple[list[str], str | None]] = []
    for i in range(n):
        name = names[i % len(names)]  # every command, in turn
        base, options = table[name]
        r, named = rng.random(), None
        if r < 0.08:
            argv = [*base, rng.choice(["--no-such-flag", "-q", "--\udcff", "--" + "f" * 300])]
        elif r < 0.12:
            named = rng.choice(sorted(options))
            argv = [*base, named]  # an option without its value
        elif r < 0.15:
            argv = [rng.choice(["trian", "", "\udcff", "Search", "-", "x" * 300]), *base[1:]]
        else:
            flag = rng.choice(sorted(options))
            values = options[flag]
            argv = _with(base, flag, rng.choice(values))
            named = flag if id(values) in EDGE_VALUES or flag == "--num-classes" or flag == "--pids" else None
        out.append((argv, named))
    return out


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | None, str, float]:
    from reidkit.cli import main

    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"reidkit {argv!r} ran past {SECONDS_EACH} s")

    capsys.readouterr()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, SECONDS_EACH)
    start = time.perf_counter()
    try:
        code: int | None = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return code, capsys.readouterr().err, time.perf_counter() - start


def test_invocations_cover_every_subcommand(places):
    from reidkit.cli import COMMANDS

    seen = {argv[0] for argv, _ in invocations(places, INVOCATIONS, SEED)}
    assert set(COMMANDS) <= seen and len(invocations(places, INVOCATIONS, SEED)) >= 200


def test_fuzzed_command_lines_are_refused_in_one_line(places, capsys):
    """Exit 2, one error line, no traceback, in time; a bad number, device or choice is named by its option."""
    failures: list[str] = []
    for argv, named in invocations(places, INVOCATIONS, SEED):
        try:
            code, err, seconds = _run(argv, capsys)
        except Hang as exc:
            failures.append(str(exc))
            continue
        except Exception as exc:  # a traceback for the user: record it, go on
            failures.append(f"{argv!r}: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("reidkit: warning:")]
        if code != 2 or len(lines) != 1 or not lines[0].startswith("reidkit: error: ") or "Traceback" in err:
            failures.append(f"{argv!r}: exit {code}, stderr {err[-400:]!r}")
        elif named is not None and named not in lines[0]:  # refused by its type, before anything else
            failures.append(f"{argv!r}: the error does not name {named}: {lines[0][:300]!r}")
        elif seconds > SECONDS_EACH:
            failures.append(f"{argv!r}: took {seconds:.1f} s")
    assert not failures, f"{len(failures)} of {INVOCATIONS}:\n" + "\n".join(failures[:40])


PIPE_READERS: list[Callable[[dict[str, str]], list[str]]] = [
    lambda p: ["extract", "--checkpoint", p["fifo"], "--images", p["missing"], "--out", p["dir"] + "/f.safetensors"],
    lambda p: ["export", "--checkpoint", "/dev/zero", "--out", p["dir"] + "/m.onnx"],
    lambda p: ["eval", "--features", p["fifo"]],
    lambda p: ["search", p["missing"], "--query", p["missing"], "--checkpoint", p["fifo"]],
]


@pytest.mark.parametrize("make", PIPE_READERS)
def test_a_fifo_or_dev_zero_as_a_model_or_features_file_is_refused_at_once(make, places, capsys):
    code, err, seconds = _run(make(places), capsys)
    assert code == 2 and err.startswith("reidkit: error: ") and seconds < SECONDS_EACH, err
