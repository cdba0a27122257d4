"""Determinism and provenance: the same seed gives the same weights and metrics on CPU, and the run folder
records the seed, the torch and reidkit versions and the git commit (when there is one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reidkit.engine.runlog import environment_records

REPO = Path(__file__).resolve().parents[2]


KILL_AT = 2  # run D is SIGKILLed right after its 2nd step (mid-epoch), then resumed


@pytest.fixture(scope="module")
def runs(synth_root, tmp_path_factory, make_config, child_env):
    """Runs A, B (seed 0), C (seed 1) and D (seed 0, killed mid-epoch then resumed) of one tiny config
    (3 steps, a checkpoint after every step), trained concurrently in subprocesses."""
    tmp = tmp_path_factory.mktemp("determinism")
    procs, cfgs = {}, {}
    for name, seed in (("A", 0), ("B", 0), ("C", 1), ("D", 0)):
        cfgs[name] = make_config(tmp / f"{name}.yaml", synth_root, tmp / name,
                                 train={"seed": seed, "epochs": 1, "save_every_steps": 1})
        env = child_env({"REIDKIT_DEBUG_KILL_AT_STEP": str(KILL_AT)} if name == "D" else None)
        procs[name] = subprocess.Popen([sys.executable, "-m", "reidkit", "train", "--config", str(cfgs[name]),
                                        "--quiet"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
    for name, proc in procs.items():
        _out, err = proc.communicate(timeout=500)
        assert proc.returncode == (-9 if name == "D" else 0), f"run {name}: {err}"
    state = torch.load(tmp / "D" / "checkpoint.pt", weights_only=True)
    assert int(state["epoch"]) == 0 and 1 <= int(state["step"]) <= KILL_AT  # killed mid-epoch
    resumed = subprocess.run([sys.executable, "-m", "reidkit", "train", "--config", str(cfgs["D"]), "--resume",
                              "--quiet"], env=child_env(), cwd=REPO, capture_output=True, text=True, timeout=500,
                             check=False)
    assert resumed.returncode == 0, resumed.stderr
    return {name: tmp / name for name in procs}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def test_same_seed_same_weights_and_metrics_and_recorded_provenance(runs):
    """Same seed → same weights, losses and metrics; a killed-and-resumed run ends exactly like an uninterrupted
    one; the run folder records seed, versions and commit. (One test, so that the training runs happen once
    even under pytest-xdist.)"""
    three_runs = runs
    a, b, c = (_weights(three_runs[k]) for k in "ABC")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs between two runs with the same seed"
    ma = json.loads((three_runs["A"] / "final_metrics.json").read_text())
    mb = json.loads((three_runs["B"] / "final_metrics.json").read_text())
    assert ma["final"] == mb["final"] and ma["best"] == mb["best"]
    ha = json.loads((three_runs["A"] / "history.json").read_text())
    hb = json.loads((three_runs["B"] / "history.json").read_text())
    loss_keys = [k for k in ha[0] if k == "loss" or k.startswith("loss/")]
    assert loss_keys and [[r[k] for k in loss_keys] for r in ha] == [[r[k] for k in loss_keys] for r in hb]
    # the check has teeth: another seed gives other weights
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    # exact resume: D was SIGKILLed mid-epoch and resumed from its last checkpoint
    d = _weights(three_runs["D"])
    for k in a:
        assert torch.equal(a[k], d[k]), f"{k}: a killed-and-resumed run differs from an uninterrupted one"
    md = json.loads((three_runs["D"] / "final_metrics.json").read_text())
    assert md["final"] == ma["final"]
    _check_provenance(three_runs)


def _check_provenance(three_runs):
    """The run folder records the seed, the torch and reidkit versions and the git commit."""
    import reidkit

    for name, seed in (("A", 0), ("C", 1)):
        [env] = environment_records(three_runs[name])
        assert env["seed"] == seed
        assert env["torch"] == torch.__version__
        assert env["reidkit"] == reidkit.__version__
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
        if head.returncode == 0:
            assert str(env["git_commit"]).split("-")[0] == head.stdout.strip()
        else:
            assert env["git_commit"] is None
        cfg = (three_runs[name] / "config.yaml").read_text()
        assert f"seed: {seed}" in cfg


def test_no_git_commit_outside_a_clone(tmp_path):
    """Code that is not in a git clone records git_commit null rather than failing."""
    from reidkit.engine import runlog

    assert runlog._git_commit(tmp_path) is None
