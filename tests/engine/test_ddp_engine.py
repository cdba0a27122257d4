"""Two CPU processes with gloo (torch.distributed.run): weights stay identical across ranks; rank 0 writes.
On CUDA, more processes than GPUs is a one-line error, not NCCL's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reidkit.engine.distributed import init_distributed
from reidkit.engine.runlog import environment_records
from reidkit.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, sys
from pathlib import Path
import torch
from reidkit.engine.config import load_config
from reidkit.engine.trainer import train
out = Path(sys.argv[1])
cfg = load_config(sys.argv[2], sys.argv[3:])
res = train(cfg, quiet=True)
torch.save({k: v.detach().clone() for k, v in res.model.named_parameters()}, out / f"rank{os.environ['RANK']}.pt")
"""


@pytest.fixture(scope="module")
def mini_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reidkit.data.synthetic import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("synth"), ids=12, cams=2, seed=13, images_per_id_cam=2,
                            size=(64, 32), distractors=4, junk=1, gt_bbox=False)


def test_two_process_ddp_keeps_weights_in_sync(mini_market: Path, tmp_path: Path) -> None:
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT)
    run = tmp_path / "run"
    sets = ["model.options.backbone=resnet18", "model.options.pretrained=null", f"data.root={mini_market}",
            "data.size=[64, 32]", "data.workers=0", "sampler.p=3", "sampler.k=2", "sampler.num_batches=2",
            "train.epochs=2", "train.eval_every=1", "train.progress=false", "train.tensorboard=false",
            f"train.out_dir={run}", "optim.lr=1e-3", "schedule.kind=constant", "train.device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path), str(REPO / "reidkit" / "configs" / "stadb_market1501.yaml"), *sets]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0.keys() == r1.keys() and len(r0) > 10
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 4
    assert ckpt["sampler"]["world_size"] == 2
    env_info = environment_records(run)[-1]
    assert env_info["world_size"] == 2
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and "mAP" in history[-1]
    # images/s counts both processes' batches
    assert history[0]["step"] == 2
    # only rank 0 writes: exactly one set of files, no stray temporary files
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(("device", "gpus", "local_rank", "message"), [
    ("auto", 1, 1, r"more processes on this node than it has GPUs \(local rank 1, 1 GPU\).*--nproc_per_node 1"),
    ("cuda", 2, 2, r"\(local rank 2, 2 GPUs\).*train.device=cpu"),
    ("cuda:0", 2, 1, r"every process would use cuda:0; use 'cuda' or 'auto'"),
])
def test_torchrun_on_cuda_needs_one_gpu_per_process(monkeypatch: pytest.MonkeyPatch, device: str, gpus: int,
                                                     local_rank: int, message: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    with pytest.raises(ConfigError, match=message):
        init_distributed(device)
