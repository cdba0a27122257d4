"""Kill-and-resume: a run SIGKILLed mid-training and resumed ends with the same weights as an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "reidkit" / "configs" / "stadb_market1501.yaml"


@pytest.fixture(scope="module")
def mini_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reidkit.data.synthetic import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("synth"), ids=12, cams=2, seed=11, images_per_id_cam=2,
                            size=(64, 32), distractors=4, junk=1, gt_bbox=False)


def reidkit_train(root: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    sets = ["model.options.backbone=resnet18", "model.options.pretrained=null", f"data.root={root}",
            "data.size=[64, 32]", "data.workers=0", "sampler.p=3", "sampler.k=2", "sampler.num_batches=2",
            "train.epochs=3", "train.eval_every=0", "train.seed=1", "schedule.kind=stadb",
            "schedule.warmup_epochs=2", "schedule.warmup_step=1", "train.tensorboard=false", "train.plots=false",
            "train.device=cpu"]  # bit-identical resumption is a CPU guarantee (docs/guarantees.md)
    cmd = [sys.executable, "-m", "reidkit", "train", "--config", str(PRESET), "--out", str(out), "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("REIDKIT_DEBUG_")}
    full_env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})})
    return subprocess.run(cmd + list(extra), cwd=REPO, env=full_env, capture_output=True, text=True, timeout=300)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 3
    return state["model"]


@pytest.fixture(scope="module")
def reference(mini_market: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """Final weights of the same run, never interrupted."""
    ref = tmp_path_factory.mktemp("ref") / "run"
    done = reidkit_train(mini_market, ref)
    assert done.returncode == 0, done.stderr[-2000:]
    return final_weights(ref)


# 3 epochs of 2 batches: global step 3 is the first batch of epoch 2 (after the epoch-1 checkpoint);
# with a checkpoint every step, step 5 is the first batch of epoch 3 (a mid-epoch checkpoint).
@pytest.mark.parametrize("kill_step,every", [(3, 0), (5, 1)], ids=["epoch-checkpoint", "step-checkpoint"])
def test_killed_and_resumed_matches_uninterrupted(mini_market: Path, reference: dict[str, torch.Tensor],
                                                  tmp_path: Path, kill_step: int, every: int) -> None:

    run = tmp_path / "run"
    killed = reidkit_train(mini_market, run, "--set", f"train.save_every_steps={every}",
                           env={"REIDKIT_DEBUG_KILL_AT_STEP": str(kill_step)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    if every:  # saved inside the third epoch (0-based 2) after its first batch
        assert (state["epoch"], state["step"], state["global_step"]) == (2, 1, 5)
    else:  # saved at the end of the first epoch
        assert (state["epoch"], state["step"], state["global_step"]) == (1, 0, 2)

    resumed = reidkit_train(mini_market, run, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = reference, final_weights(run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=1e-6, rtol=0), k
    hist = torch.load(run / "checkpoint.pt", weights_only=True)["history"]
    assert [r["epoch"] for r in hist] == [1, 2, 3]
