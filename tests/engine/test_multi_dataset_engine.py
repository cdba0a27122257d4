"""Training on several datasets and evaluating on several test sets: two synthetic sets drawn with different
seeds train one tiny epoch together, three test sets are evaluated after it; the table's rows equal each test
set evaluated alone (``reidkit eval`` with one ``--dataset``, and the Python API), through the trainer, the
CLI and Python; the run folder records the offsets; config and command-line mistakes are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from tiny_runs import tiny_sets

from reidkit.cli import main
from reidkit.data.datasets import load
from reidkit.data.multi import DatasetSource, combine
from reidkit.engine.config import config_to_dict, load_config, resolve_effective
from reidkit.engine.presets import preset_path
from reidkit.engine.runlog import environment_records
from reidkit.engine.trainer import train
from reidkit.errors import ConfigError
from reidkit.eval import evaluate
from reidkit.eval.summary import to_percent
from reidkit.inference import Embedder, embed_dataset

EVAL_BATCH = 64
METRICS = ("mAP", "mINP", "rank1", "rank5", "rank10", "cmc", "num_valid_queries", "num_queries")


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three synthetic Market-layout sets of other sizes and seeds: a (4 train ids, 2 cameras), b (5, 3), c."""
    from reidkit.data.synthetic import generate_dataset

    base = tmp_path_factory.mktemp("multi")
    spec = {"a": (8, 2, 11), "b": (10, 3, 12), "c": (6, 2, 13)}
    return {k: generate_dataset(base / k, ids=ids, cams=cams, seed=seed, images_per_id_cam=2, size=(64, 32),
                                distractors=2, junk=1, gt_bbox=False) for k, (ids, cams, seed) in spec.items()}


def tiny(out: Path) -> list[str]:
    return tiny_sets(out, data__eval_batch_size=EVAL_BATCH, sampler__p=3, sampler__num_batches=2, train__epochs=1)


def flow(*roots: Path) -> str:
    """``eval.datasets`` as a YAML flow list of Market-layout test sets."""
    return "[" + ", ".join(f"{{dataset: market1501, root: '{r}'}}" for r in roots) + "]"


def alone(model: torch.nn.Module, root: Path) -> dict[str, object]:
    """The brute-force reference: one test set embedded and evaluated on its own through the Python API (flip
    averaged, as the STADB preset these runs start from evaluates)."""
    feats = embed_dataset(Embedder(model, "cpu"), load("market1501", root), EVAL_BATCH, True, 0, False)
    res = evaluate(feats.query_feats, feats.gallery_feats, feats.query_pids, feats.gallery_pids, feats.query_camids,
                   feats.gallery_camids)
    return to_percent(res)


def eval_alone_cli(run: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    """``reidkit eval --json`` of one test set (the single-dataset command)."""
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run / "model.safetensors"), "--dataset", "market1501", "--root",
                 str(root), "--engine", "torch", "--threads", "1", "--workers", "0", "--batch-size", str(EVAL_BATCH),
                 "--flip", "--no-progress", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def api_run(sets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """Python API: trained on a + b, tested on a, b and c."""
    run = tmp_path_factory.mktemp("api") / "run"
    cfg = load_config("stadb_market1501", [*tiny(run), "data.dataset=[market1501, market]",
                                           f"data.root=['{sets['a']}', '{sets['b']}']",
                                           f"eval.datasets={flow(sets['a'], sets['b'], sets['c'])}"])
    return run, train(cfg, quiet=True)


def test_run_folder_records_offsets_and_classes(api_run: tuple[Path, object], sets: dict[str, Path]) -> None:
    run, result = api_run
    a, b = load("market1501", sets["a"]), load("market1501", sets["b"])
    cams_a = 1 + max(r.camid for s in ("train", "query", "gallery") for r in a.split(s))
    cams_b = 1 + max(r.camid for s in ("train", "query", "gallery") for r in b.split(s))
    assert (a.num_train_pids, b.num_train_pids, cams_a, cams_b) == (4, 5, 2, 3)  # ids 1,3,5,7 / 1,...,9 train
    recorded = json.loads((run / "datasets.json").read_text())
    assert recorded == {"datasets": [
        {"name": "market1501", "root": a.root, "pid_offset": 0, "ids": 4, "camid_offset": 0, "cameras": 2,
         "images": len(a.train)},
        {"name": "market1501", "root": b.root, "pid_offset": 4, "ids": 5, "camid_offset": 2, "cameras": 3,
         "images": len(b.train)}], "ids": 9, "cameras": 5, "images": len(a.train) + len(b.train)}
    assert environment_records(run)[-1]["num_classes"] == 9
    assert result.model.num_classes == 9  # type: ignore[attr-defined]
    # the saved config: what ran, lists written out, the test sets named; reading it back changes nothing
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["data"]["dataset"] == ["market1501", "market"]
    assert saved["data"]["root"] == [str(sets["a"]), str(sets["b"])] and saved["data"]["options"] == [{}, {}]
    assert [e["root"] for e in saved["eval"]["datasets"]] == [str(sets[k]) for k in "abc"]
    assert config_to_dict(load_config(run / "config.yaml")) == saved
    assert torch.load(run / "checkpoint.pt", weights_only=True)["config"] == saved


def test_table_rows_equal_each_test_set_alone(api_run: tuple[Path, object], sets: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run, result = api_run
    record = result.test_sets  # type: ignore[attr-defined]
    assert record == json.loads((run / "test_sets.json").read_text())
    assert record["units"] == "percent" and record["epoch"] == 1 and record["weights"] == "model.safetensors"
    assert record["settings"]["metric"] == "euclidean" and record["settings"]["protocol"] == "single-query"
    rows = record["test_sets"]
    assert [r["root"] for r in rows] == [load("market1501", sets[k]).root for k in "abc"]
    assert len({r["name"] for r in rows}) == 3  # one dataset name, three folders: the labels name the folder
    model = result.model.eval()  # type: ignore[attr-defined]
    for row, key in zip(rows, "abc", strict=True):
        ref = alone(model, sets[key])
        assert {k: row[k] for k in METRICS} == {k: ref[k] for k in METRICS}  # the same numbers, exactly
        cli = eval_alone_cli(run, sets[key], capsys)  # the saved weights through `reidkit eval`
        for k in METRICS:
            assert cli[k] == pytest.approx(row[k], abs=1e-6), (key, k)
    # the first test set is the training's own (a): what the last per-epoch evaluation measured
    for k in ("mAP", "rank1", "mINP"):
        assert result.final[k] == pytest.approx(rows[0][k], abs=1e-6)  # type: ignore[attr-defined]
    md = (run / "test_sets.md").read_text(encoding="utf-8").splitlines()
    table = [line for line in md if line.startswith("| ")]
    assert table[0] == "| test set | mAP | R1 | R5 | R10 | mINP | valid queries |"
    assert [line.split(" | ")[0][2:] for line in table[1:]] == [r["name"] for r in rows]
    assert table[1].split(" | ")[1:3] == [f"{rows[0]['mAP']:.2f}", f"{rows[0]['rank1']:.2f}"]


def test_eval_cli_several_datasets_same_table(api_run: tuple[Path, object], sets: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    run, result = api_run
    argv = ["eval", "--checkpoint", str(run / "model.safetensors"), "--engine", "torch", "--threads", "1",
            "--workers", "0", "--batch-size", str(EVAL_BATCH), "--flip", "--no-progress"]
    for k in "abc":
        argv += ["--dataset", "market1501", "--root", str(sets[k])]
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    trained = result.test_sets  # type: ignore[attr-defined]
    assert cli["settings"] == trained["settings"] and cli["units"] == "percent"
    assert [r["name"] for r in cli["test_sets"]] == [r["name"] for r in trained["test_sets"]]
    for got, want in zip(cli["test_sets"], trained["test_sets"], strict=True):
        for k in METRICS:
            assert got[k] == pytest.approx(want[k], abs=1e-6), k
    out = tmp_path / "cross"
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[:2] == ["test", "set"] and printed[0].split()[2:7] == ["mAP", "R1", "R5", "R10", "mINP"]
    assert len(printed) == 1 + 3 + 1 and printed[-1].startswith("wrote ")
    for line, row in zip(printed[1:4], cli["test_sets"], strict=True):
        assert line.startswith(row["name"]) and f"{row['mAP']:6.2f}" in line
    assert json.loads((out / "test_sets.json").read_text()) == cli
    assert (out / "test_sets.md").is_file() and (out / "cmc.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_training_on_two_datasets_tests_each_by_default(sets: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """No eval.datasets with two training datasets: each one's own test split, after the header says how."""
    run = tmp_path / "run"
    sets_args = [x for s in [*tiny(run), "data.dataset=[market1501, market1501]",
                             f"data.root=['{sets['b']}', '{sets['a']}']"] for x in ("--set", s)]
    capsys.readouterr()
    assert main(["train", "--preset", "stadb_market1501", *sets_args]) == 0
    out = capsys.readouterr().out.splitlines()
    b, a = load("market1501", sets["b"]), load("market1501", sets["a"])
    head = "\n".join(out[:12])
    assert "2 train splits as one, ids and cameras offset (datasets.json)" in head
    rows = [line.split() for line in out if line.strip().startswith("market1501 ") and line.split()[-1] in
            (a.root, b.root)]
    assert rows == [["market1501", "5", "0", "3", "0", str(len(b.train)), b.root],
                    ["market1501", "4", "5", "2", "3", str(len(a.train)), a.root]]
    assert "stadb, resnet18 trunk: " in "\n".join(out) and ", 9 classes, input 64x32" in "\n".join(out)
    record = json.loads((run / "test_sets.json").read_text())
    assert [r["root"] for r in record["test_sets"]] == [b.root, a.root]
    table = out[out.index(next(line for line in out if line.startswith("test set "))):]
    assert len(table) == 1 + 2 + 1 and table[-1].startswith(f"done: {run}")
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["eval"]["datasets"] == [{"dataset": "market1501", "root": str(sets["b"]), "options": {}},
                                         {"dataset": "market1501", "root": str(sets["a"]), "options": {}}]
    # resumed from the run folder alone (its config.yaml holds the lists), now with three test sets: the table
    # of the new final weights, each row what `reidkit eval` gives that test set alone
    assert main(["train", "--out", str(run), "--resume", "--quiet", "--set", "train.epochs=2", "--set",
                 f"eval.datasets={flow(sets['a'], sets['b'], sets['c'])}"]) == 0
    resumed = capsys.readouterr().out.splitlines()
    assert resumed[0].endswith(f"(resuming from {run / 'checkpoint.pt'} at epoch 1)")
    record = json.loads((run / "test_sets.json").read_text())
    assert record["epoch"] == 2 and len(record["test_sets"]) == 3 and len(resumed) == 2 + 1 + 3
    for row, key in zip(record["test_sets"], "abc", strict=True):
        cli = eval_alone_cli(run, sets[key], capsys)
        for k in METRICS:
            assert cli[k] == pytest.approx(row[k], abs=1e-6), (key, k)
    assert json.loads((run / "datasets.json").read_text())["ids"] == 9
    # --quiet: the summary line, the done line and the table
    assert main(["train", "--preset", "stadb_market1501", *sets_args, "--set", f"train.out_dir={tmp_path / 'q'}",
                 "--quiet"]) == 0
    quiet = capsys.readouterr().out.splitlines()
    assert len(quiet) == 2 + 1 + 2 and quiet[1].startswith("done: ") and quiet[2].startswith("test set ")


def test_example_preset_trains_on_two_datasets_and_tests_on_three() -> None:
    cfg = load_config("examples/stadb_market1501_dukemtmcreid")
    assert cfg.data.sources() == [DatasetSource("market1501", "data/market1501"),
                                  DatasetSource("dukemtmcreid", "data/dukemtmcreid")]
    assert [(s.dataset, s.root) for s in cfg.eval.datasets] == [
        ("market1501", "data/market1501"), ("dukemtmcreid", "data/dukemtmcreid"), ("msmt17", "data/msmt17")]
    base = config_to_dict(load_config("stadb_market1501"))
    mine = config_to_dict(cfg)
    assert {k: v for k, v in mine.items() if k not in ("data", "eval", "train")} == \
        {k: v for k, v in base.items() if k not in ("data", "eval", "train")}  # stadb_market1501's recipe


def test_config_changed_in_code_is_checked_when_read() -> None:
    cfg = load_config(None, ["data.dataset=[market1501, dukemtmcreid]", "data.root=[a, b]"])
    cfg.data.root = ["a", "b", "c"]
    with pytest.raises(ConfigError, match=r"^'data\.root': 3 entries for 2 data\.dataset entries; expected one per"):
        cfg.data.sources()
    cfg.data.root, cfg.data.options = "a", [{}]
    with pytest.raises(ConfigError, match=r"^'data\.options': 1 entries for 2 data\.dataset entries"):
        cfg.data.sources()


def test_single_dataset_config_is_unchanged() -> None:
    cfg = resolve_effective(load_config(preset_path("stadb_market1501")))
    assert cfg.data.dataset == "market1501" and cfg.data.root == "data/market1501" and cfg.data.options == {}
    assert cfg.eval.datasets == []  # no test-set table unless asked for
    cfg = resolve_effective(load_config(preset_path("stadb_market1501"), [f"eval.datasets={flow(Path('/x'))}"]))
    assert cfg.eval.datasets == [DatasetSource("market1501", "/x", {})]


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.dataset=[]"], "'data.dataset' must be a dataset name or a non-empty list of names, got []"),
    (["data.dataset=[market1501, dukemtmcreid]", "data.root=[a, b, c]"],
     "'data.root' must be one folder, or a list of 2 (one per data.dataset entry), got ['a', 'b', 'c']"),
    (["data.dataset=[market1501, dukemtmcreid]", "data.options=[{}]"],
     "'data.options' must be one mapping, or a list of 2 (one per data.dataset entry), got [{}]"),
    (["data.dataset=[market1501, viper]", "data.root=[a, b]"],
     "'data.dataset' (entry 2): unknown dataset 'viper'; expected one of market1501, dukemtmcreid"),
    (["data.dataset=viper"], "'data.dataset': unknown dataset 'viper'"),
    (["data.root=[a, b]"], "'data.root' must be one folder when data.dataset names one dataset"),
    (["data.options=[{}]"], "'data.options' must be one mapping when data.dataset names one dataset"),
    (["data.dataset=[market, Market-1501]", "data.root=/d"], "'data.dataset' names market1501 in /d twice"),
    (["data.dataset=[market1501, 3]"], "'data.dataset' must be str or a list of str"),
    (["eval.datasets=[{dataset: market1501}]"], "'eval.datasets' (entry 1) must name a dataset and its folder"),
    (["eval.datasets=[{dataset: market1501, root: a}, {dataset: prid, root: b}]"],
     "'eval.datasets' (entry 2): unknown dataset 'prid'"),
    (["eval.datasets=[{dataset: market1501, root: a, opts: {}}]"], "unknown key 'eval.datasets.opts'"),
    (["eval.datasets={dataset: market1501, root: a}"], "'eval.datasets' must be a list of mappings"),
])
def test_config_mistakes_are_one_line_naming_the_key(overrides: list[str], message: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(preset_path("stadb_market1501"), overrides)
    text = str(info.value)
    assert "\n" not in text and message in text and text.startswith("--set "), text
    # the same in a file: the file is named
    cfg = tmp_path / "cfg.yaml"
    body: dict[str, object] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        section, name = key.split(".")
        body.setdefault(section, {})[name] = yaml.safe_load(value)  # type: ignore[index]
    cfg.write_text(yaml.safe_dump(body), encoding="utf-8")
    assert main(["train", "--config", str(cfg), "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"reidkit: error: {cfg}: ") and "\n" not in err and message in err, err


def test_eval_cli_mistakes_are_one_line(api_run: tuple[Path, object], sets: dict[str, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = api_run
    base = ["eval", "--checkpoint", str(run / "model.safetensors"), "--engine", "torch", "--no-progress"]
    two = ["--dataset", "market1501", "--root", str(sets["a"]), "--dataset", "market1501", "--root", str(sets["b"])]
    cases = [
        ([*two, "--root", str(sets["c"])], "expected one --root per --dataset (or one for all), got 2 --dataset and 3"),
        (["--option", "verify_images=none", *two], "--option verify_images=none: with several --dataset, give each "
                                                   "--option after the --dataset it is for"),
        ([*two, "--single-shot"], "--single-shot takes one --dataset"),
        ([*two, "--multi-query", "mean"], "--multi-query takes one --dataset"),
        ([*two, "--save-features", "f.safetensors"], "--save-features takes one --dataset"),
        ([*two, "--dataset", "prid", "--root", "x"], "unknown dataset 'prid'"),
        ([*two, "--dataset", "market", "--root", f"{sets['a']}/"], f"--dataset market --root {sets['a']}/: the same "
                                                                    "test set as --dataset number 1"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("reidkit: error: ") and "\n" not in err and message in err, err


def test_eval_cli_options_go_to_the_dataset_they_follow(sets: dict[str, Path]) -> None:
    """``--option`` after a ``--dataset`` is that dataset's; one ``--root`` serves all."""
    import argparse

    from reidkit.commands.eval import add_arguments
    from reidkit.commands.options import dataset_sources_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--checkpoint", "m", "--root", "/data", "--dataset", "cuhk03", "--option", "labeled=false",
                              "--option", "split_id=3", "--dataset", "market1501", "--dataset", "msmt17",
                              "--option", "verify_images=none"])
    assert dataset_sources_from_args(args) == [
        DatasetSource("cuhk03", "/data", {"labeled": False, "split_id": 3}), DatasetSource("market1501", "/data", {}),
        DatasetSource("msmt17", "/data", {"verify_images": "none"})]
    one = parser.parse_args(["--checkpoint", "m", "--option", "labeled=false", "--dataset", "cuhk03", "--root", "/c"])
    assert dataset_sources_from_args(one) == [DatasetSource("cuhk03", "/c", {"labeled": False})]  # as before


def test_combined_training_set_is_what_the_trainer_trains_on(sets: dict[str, Path], tmp_path: Path) -> None:
    """The trainer's training records are ``combine``'s, and its classes their pids."""
    from reidkit.engine.trainer import Trainer

    cfg = load_config("stadb_market1501", [*tiny(tmp_path / "run"), "data.dataset=[market1501, market1501]",
                                           f"data.root=['{sets['a']}', '{sets['c']}']"])
    trainer = Trainer(cfg, quiet=True)
    trainer.setup()
    want = combine([load("market1501", sets["a"]), load("market1501", sets["c"])])
    assert trainer.train_records == want.train and trainer.num_classes == want.num_train_pids
    assert trainer.train_pids == [r.pid for r in want.train]
