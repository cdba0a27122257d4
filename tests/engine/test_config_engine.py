"""Config loading: presets, _base_ inheritance, --set overrides, one-line errors naming key and file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reidkit.cli import main
from reidkit.engine.config import RunConfig, config_to_dict, load_config, save_config
from reidkit.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "reidkit" / "configs").glob("*.yaml"))
ABLATIONS = sorted((REPO / "reidkit" / "configs" / "ablations").glob("*.yaml"))


def test_every_paper_setting_has_a_preset() -> None:
    names = {p.stem for p in PRESETS}
    for expected in ("stadb_market1501", "stadb_dukemtmcreid", "stadb_cuhk03_labeled", "stadb_cuhk03_detected",
                     "stadb_msmt17", "stadb_celebreid", "mancs_market1501", "mancs_dukemtmcreid", "mancs_cuhk03",
                     "bdb_market1501", "baseline_market1501"):
        assert expected in names
    tables = {p.stem.split("_")[0] for p in ABLATIONS}
    assert tables == {"table6", "table7", "table8", "table9", "table10", "table11"}


@pytest.mark.parametrize("path", PRESETS + ABLATIONS, ids=lambda p: p.stem)
def test_presets_load(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert cfg.model.name in ("stadb", "bdb", "mancs", "baseline")
    assert cfg.train.out_dir.startswith("runs/")
    assert cfg.augment.pipeline == ("mancs" if cfg.model.name == "mancs" else "stadb")


def test_base_inheritance_and_ablation_overrides() -> None:
    base = load_config(REPO / "reidkit" / "configs" / "stadb_market1501.yaml")
    rho = load_config(REPO / "reidkit" / "configs" / "ablations" / "table10_rho050.yaml")
    assert rho.model.options["rho"] == 0.5
    assert rho.model.options["alpha"] == base.model.options["alpha"] == 0.8
    assert rho.model.options["backbone"] == "resnet50"
    assert rho.train.epochs == 600 and rho.train.out_dir == "runs/ablations/table10_rho050"
    b16 = load_config(REPO / "reidkit" / "configs" / "ablations" / "table9_batch16.yaml")
    assert b16.sampler.p * b16.sampler.k == 16
    duke = load_config(REPO / "reidkit" / "configs" / "stadb_dukemtmcreid.yaml")
    assert duke.data.dataset == "dukemtmcreid" and duke.data.size == [384, 128]
    cuhk = load_config(REPO / "reidkit" / "configs" / "stadb_cuhk03_detected.yaml")
    assert cuhk.data.options == {"labeled": False, "protocol": "new"}


def test_overrides_are_yaml_scalars() -> None:
    cfg = load_config(REPO / "reidkit" / "configs" / "stadb_market1501.yaml",
                      ["optim.lr=3e-4", "train.epochs=7", "data.size=[64, 32]", "train.amp=bf16",
                       "model.options.pretrained=null", "model.options.rho=0.5", "optim.grad_clip=null",
                       "train.channels_last=true", "sampler.num_batches=3"])
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 7 and cfg.data.size == [64, 32] and cfg.train.amp == "bf16"
    assert cfg.model.options["pretrained"] is None and cfg.model.options["rho"] == 0.5
    assert cfg.model.options["alpha"] == 0.8  # the rest of the options dict is kept
    assert cfg.train.channels_last is True and cfg.sampler.num_batches == 3


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("_base_: %s\noptim:\n  lrr: 0.1\n" % (REPO / "reidkit" / "configs" / "stadb_market1501.yaml"))
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    msg = str(err.value)
    assert "optim.lrr" in msg and str(bad) in msg and "\n" not in msg
    with pytest.raises(ConfigError, match=r"^--set optim.lrr: unknown key 'optim.lrr'"):
        load_config(REPO / "reidkit" / "configs" / "stadb_market1501.yaml", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="unknown key 'modle'"):
        load_config(REPO / "reidkit" / "configs" / "stadb_market1501.yaml", ["modle.name=x"])


def test_wrong_type_names_key_and_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    msg = str(err.value)
    assert msg.startswith(str(bad)) and "train.epochs" in msg and "int" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match=r"--set train.amp: 'train.amp' must be"):
        load_config(REPO / "reidkit" / "configs" / "stadb_market1501.yaml", ["train.amp=fp8"])
    with pytest.raises(ConfigError, match=r"sampler\.p"):
        load_config(None, ["sampler.p=0"])
    for value in ("inf", "-.inf", "nan", ".NaN"):  # strings and YAML floats alike
        with pytest.raises(ConfigError, match=r"'optim.lr' must be a finite number"):
            load_config(None, [f"optim.lr={value}"])
    assert load_config(None, ["optim.lr=3e-4", "optim.grad_clip=5"]).optim.grad_clip == 5.0
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["optim.lr"])
    with pytest.raises(ConfigError, match="augment"):
        load_config(None, ["augment.pipeline=fancy"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    base_missing = tmp_path / "b.yaml"
    base_missing.write_text("_base_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="_base_"):
        load_config(base_missing)


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(REPO / "reidkit" / "configs" / "mancs_cuhk03.yaml", ["train.epochs=3"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert data["sampler"] == {"p": 32, "k": 8, "num_batches": 23}  # [767 ids / P] (Mancs §4.3)


def test_cli_reports_config_errors_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--config", str(REPO / "reidkit" / "configs" / "stadb_market1501.yaml"), "--set", "optim.nope=1",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "optim.nope" in err[0] and err[0].startswith("reidkit: error:")
    rc = main(["train", "--config", str(REPO / "reidkit" / "configs" / "stadb_market1501.yaml"), "--print-config",
               "--set", "train.epochs=5"])
    out = capsys.readouterr().out
    assert rc == 0 and yaml.safe_load(out)["train"]["epochs"] == 5
