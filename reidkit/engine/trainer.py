"""The training loop: a thin driver over the models' ``compute_losses``.

One step: PK indices from the sampler → uint8 batch from the image cache → batched
augmentation on the device → ``model(x)`` (train mode: a dict of outputs) →
``model.compute_losses(outputs, pids, epoch)`` (named, weighted terms) → sum → backward →
optional gradient clipping → optimiser step. The learning rate is set per epoch from
``reidkit.engine.schedules``. Every ``train.eval_every`` epochs (and after the last) the
model is evaluated on query/gallery, the best checkpoint (by mAP) is kept as ``best.pt``.

Several training datasets (``data.dataset`` a list) are read one by one and joined
(``reidkit.data.multi.combine``: identities and cameras offset per dataset, recorded in ``datasets.json``);
the evaluations during the run use the first one's query/gallery. After the last epoch the final weights
are evaluated on every test set of ``eval.datasets`` (``reidkit.inference.dataset.evaluate_test_sets``):
one table, printed and saved as ``test_sets.json`` and ``test_sets.md``.

The run folder (``train.out_dir``) receives ``config.yaml``, ``env.json`` (a record per start and resume),
``checkpoint.pt`` (+ ``checkpoint_prev.pt``), ``best.pt``, ``model.safetensors`` (final weights) and
``best.safetensors`` (a hard link to ``model.safetensors`` when the last evaluation was the best),
``metrics.csv``, ``history.json``, ``final_metrics.json``, ``tb/`` and the PNG curves; ``train.keep``
chooses which of the three checkpoints stay (only ``checkpoint.pt`` and ``checkpoint_prev.pt`` hold optimizer
state). Under ``torchrun`` only rank 0 writes.

Numerical faults: a NaN or infinite loss term stops the run before the backward pass with
``NonFiniteLossError`` naming the term, the epoch and the step; the last checkpoint
stays as it was, so ``--resume`` continues from it.

The step itself is ``reidkit.engine.step.train_step``; step hooks (``reidkit.engine.step.StepHook``)
are passed as objects (``Trainer(hooks=...)``); ``train`` adds the test hooks named in the environment
(``reidkit.engine.step.hooks_from_env``), read once when the run starts.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from reidkit.engine.checkpoint import capture_rng, find_resume_checkpoint, restore_rng, save_checkpoint
from reidkit.engine.config import RunConfig, config_to_dict, resolve_effective, save_config
from reidkit.engine.distributed import (
    DistInfo,
    all_reduce_flag,
    barrier,
    cleanup,
    init_distributed,
    warnings_on_rank_zero,
)
from reidkit.engine.runlog import ENV_FILE, RunLog, environment_info, environment_records, load_history
from reidkit.engine.schedules import EpochSchedule
from reidkit.engine.step import NonFiniteLoss, StepHook, hooks_from_env, train_step
from reidkit.errors import CheckpointError, ConfigError, DatasetError, ReidkitError
from reidkit.utils.progress import progress as show_progress

__all__ = ["NonFiniteLossError", "TrainResult", "Trainer", "estimate_eta", "seed_everything", "train"]


class NonFiniteLossError(ReidkitError):
    """A loss term became NaN or infinite; the run stopped and can resume from its last checkpoint."""


@dataclass
class TrainResult:
    """What ``train`` returns: the run folder, the final and best metrics, and the trained model; with
    ``eval.datasets``, ``test_sets`` is the final weights' results on each test set (what ``test_sets.json``
    holds: ``reidkit.eval.summary.record_of_test_sets``)."""

    run_dir: Path
    final: dict[str, Any]
    best: dict[str, Any] | None
    epochs_run: int
    model: nn.Module | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    test_sets: dict[str, Any] | None = None


def seed_everything(seed: int) -> None:
    """Seed Python ``random``, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", model)  # DDP
    return getattr(inner, "_orig_mod", inner)  # torch.compile


class Trainer:
    """Builds everything a run needs from a ``RunConfig`` and runs it (``fit``).

    ``dataset`` may be passed in (a ``reidkit.data.records.ReidDataset``) instead of being
    loaded from ``cfg.data``; ``resume=True`` continues from the newest loadable checkpoint in
    the run folder (a fresh start when there is none).
    """

    def __init__(self, cfg: RunConfig, *, resume: bool = False, dataset: Any = None,
                 dist_info: DistInfo | None = None, quiet: bool = False, hooks: Sequence[StepHook] = ()):
        self.cfg = cfg
        self.hooks = list(hooks)
        self.resume = resume
        self.quiet = quiet
        self.run_dir = Path(cfg.train.out_dir)
        self.dist = dist_info or init_distributed(cfg.train.device)
        self.device = self.dist.device
        self._dataset = dataset
        self._loaded: dict[tuple[str, str, str], Any] = {}
        self._test_cache: tuple[Tensor, Tensor] | None = None
        self._loader: Any = None
        self.last_features: tuple[Tensor, Tensor] | None = None

    # ------------------------------------------------------------------ setup
    def _log(self, msg: str) -> None:
        if self.dist.is_main and not self.quiet:
            print(msg, flush=True)

    def _load_dataset(self) -> Any:
        if self._dataset is not None:
            return self._dataset
        parts = [self._load_source(s) for s in self.cfg.data.sources()]
        if isinstance(self.cfg.data.dataset, str):
            return parts[0]
        from reidkit.data.multi import combine

        return combine(parts)

    def _load_source(self, source: Any) -> Any:
        """The dataset ``source`` (a ``reidkit.data.multi.DatasetSource``) names, read once per run: a training
        dataset is not read again as a test set."""
        key = source.key()
        if key not in self._loaded:
            self._loaded[key] = source.load()
        return self._loaded[key]

    def setup(self) -> None:
        """Load data, build the model, optimiser, sampler and augmentation; restore a checkpoint if resuming;
        print the run's header (``header_lines``; one line when quiet). Under DDP only rank 0 shows the
        warnings of this part, which every rank would print alike."""
        with warnings_on_rank_zero(self.dist):
            self._setup()
        if self.dist.is_main:
            lines = self.header_lines()
            print("\n".join(lines if not self.quiet else lines[:1]), flush=True)

    def header_lines(self) -> list[str]:
        """What the run is, printed when it starts: the first line a summary of the whole (run folder, model
        and parameters, data, device, length), then the dataset statistics (ids, images and cameras per
        split; with several training datasets first each one's ids, cameras and their offsets), the test sets
        of ``eval.datasets``, the model, the device and threads, and epochs × batches per epoch."""
        cfg, ds = self.cfg, self.dataset
        params = sum(p.numel() for p in self.core.parameters())
        stats = ds.stats()
        batches = len(self.sampler)
        procs = f", {self.dist.world_size} processes" if self.dist.enabled else ""
        device = str(self.device)
        if self.device.type == "cuda":
            device += f" ({torch.cuda.get_device_name(self.device)})"
        threads = torch.get_num_threads()
        state = (f"resuming from {self.resumed_from} at epoch {self.start_epoch}" if self.resumed_from
                 else "new run")
        train = stats["train"]
        epochs = f"{cfg.train.epochs} epoch{'s' if cfg.train.epochs != 1 else ''} x {batches} batch" \
                 f"{'es' if batches != 1 else ''}"
        summary = (f"train {cfg.model.name} ({params / 1e6:.2f}M parameters) on {ds.name} ({train['ids']} ids, "
                   f"{train['images']} images), {self.device.type}{procs}, {epochs} -> {self.run_dir} ({state})")
        lines = [summary, f"  run folder  {self.run_dir} ({state})"]
        mapping = ds.extras.get("datasets")
        if mapping:  # several training datasets: how their ids and cameras were offset
            lines += [f"  datasets    {len(mapping)} train splits as one, ids and cameras offset (datasets.json)",
                      "              name           ids  id offset  cameras  camera offset  images  root"]
            lines += [f"              {m['name']:<12} {m['ids']:5d} {m['pid_offset']:10d} {m['cameras']:8d} "
                      f"{m['camid_offset']:14d} {m['images']:7d}  {m['root']}" for m in mapping]
            lines.append(f"  dataset     {ds.name}: the train splits together, {mapping[0]['name']}'s query and "
                         "gallery")
        else:
            lines.append(f"  dataset     {ds.name} ({cfg.data.root})")
        lines.append("              split     ids  images  cameras")
        lines += [f"              {split:<7} {s['ids']:5d} {s['images']:7d} {s['cameras']:8d}"
                  for split, s in stats.items()]
        if cfg.eval.datasets:
            from reidkit.data.multi import source_labels

            during = mapping[0]["name"] if mapping else ds.name
            lines.append(f"  test sets   after the last epoch: {', '.join(source_labels(cfg.eval.datasets))} "
                         f"(test_sets.md); during the run and for best.pt: {during}")
        opts = cfg.model.options
        trunk = f", {opts['backbone']} trunk" if isinstance(opts.get("backbone"), str) else ""
        lines.append(f"  model       {cfg.model.name}{trunk}: {params:,} parameters, {self.num_classes} classes, "
                     f"input {self.size[0]}x{self.size[1]}, embedding {self.core.embedding_dim}")
        precision = "float32" if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")
        lines.append(f"  device      {device}{procs}, {threads} CPU thread{'s' if threads != 1 else ''}, "
                     f"{precision}")
        per_batch = f"{cfg.sampler.p}x{cfg.sampler.k} images" + (" per process" if self.dist.enabled else "")
        budget = f", stops by {cfg.train.max_seconds:g} s (train.max_seconds)" if cfg.train.max_seconds else ""
        every = f"every {cfg.train.eval_every} epochs and " if 0 < cfg.train.eval_every < cfg.train.epochs else ""
        e = cfg.eval
        how = f"{e.metric}, {'flip-averaged' if e.flip else 'no flip'}{', re-ranked' if e.rerank else ''}"
        lines.append(f"  length      {epochs} of {per_batch} ({cfg.train.epochs * batches:,} steps), evaluation "
                     f"{every}after the last ({how}){budget}")
        return lines

    def _setup(self) -> None:
        from reidkit.utils.atomic import output_folder

        cfg = resolve_effective(self.cfg)  # what config.yaml and the checkpoints record is what runs
        output_folder(self.run_dir, "the run folder", create=False)
        if not self.resume and (self.run_dir / "checkpoint.pt").exists():
            raise ConfigError(f"{self.run_dir}: run folder already holds a checkpoint; pass --resume to continue "
                              "it or --out to choose another folder")
        seed_everything(cfg.train.seed)
        ds = self._load_dataset()
        self.dataset = ds
        if not ds.train:
            raise DatasetError(f"{ds.root}: dataset {ds.name!r} has no training images")
        from reidkit.models import build

        pids_sorted = sorted({r.pid for r in ds.train})
        self.relabel = {p: i for i, p in enumerate(pids_sorted)}
        self.num_classes = len(pids_sorted)
        opts = dict(cfg.model.options)
        from reidkit.inference.modelfile import build_within_bounds, model_options_problem

        problem = model_options_problem(cfg.model.name, opts)
        if problem:
            raise ConfigError(f"model.options: {problem}")
        build_within_bounds(cfg.model.name, self.num_classes, opts, "model.options", error=ConfigError)
        try:
            model = build(cfg.model.name, self.num_classes, **opts)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.options: {exc}") from None
        size = tuple(cfg.data.size) if cfg.data.size is not None else tuple(model.input_size)
        self.size: tuple[int, int] = (int(size[0]), int(size[1]))
        model.input_size = self.size  # recorded in the weight files' metadata: the size it was trained at
        model.to(self.device)
        if cfg.train.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.train.sync_bn and self.dist.enabled and self.device.type != "cuda":
            raise ConfigError(f"train.sync_bn: SyncBatchNorm needs CUDA devices, this run is on {self.device}; "
                              "expected train.sync_bn=false")
        if cfg.train.sync_bn and self.dist.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.core = model
        self.optimizer = self._make_optimizer(model)
        self.schedule = EpochSchedule(cfg.schedule, cfg.optim.lr, cfg.train.epochs)

        # training images: decoded once to uint8 at the training size
        self.train_records = list(ds.train)
        for source in cfg.eval.datasets:  # read now: a wrong test set stops the run before it trains
            self._load_source(source)
        self._setup_data()

        from reidkit.data.sampler import PKSampler

        self.sampler = PKSampler(self.train_pids, cfg.sampler.p, cfg.sampler.k, seed=cfg.train.seed,
                                 rank=self.dist.rank, world_size=self.dist.world_size,
                                 num_batches=cfg.sampler.num_batches)
        self.aug_generator = torch.Generator(device=self.device)
        self.aug_generator.manual_seed(cfg.train.seed * 1000 + 17 + self.dist.rank)

        # precision
        self.amp_dtype: torch.dtype | None = None
        if cfg.train.amp != "none":
            if self.device.type == "cuda":
                self.amp_dtype = torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16
            else:
                warnings.warn(f"train.amp={cfg.train.amp!r} is for CUDA; running in float32 on {self.device}",
                              stacklevel=2)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

        self.model: nn.Module = model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(model, device_ids=ids, find_unused_parameters=model.ddp_find_unused_parameters)
        if cfg.train.compile:
            self.model = torch.compile(self.model)  # type: ignore[assignment]

        # state
        self.start_epoch = 0
        self.skip_batches = 0
        self.global_step = 0
        self.best: dict[str, Any] | None = None
        history: list[dict[str, Any]] = []
        self.resumed_from: Path | None = None
        if self.resume:
            found = find_resume_checkpoint(self.run_dir, self._restore_or_reset())
            if found is not None:
                path, state = found
                history = [r for r in state.get("history", []) if int(r.get("epoch", 0)) <= self.start_epoch]
                self.resumed_from = path
                self._log(f"resuming from {path} (epoch {self.start_epoch}, step {self.skip_batches})")
            else:
                history = []
                self._log(f"no checkpoint in {self.run_dir}; starting a new run")
        if not history and self.resume:
            history = [r for r in load_history(self.run_dir) if int(r.get("epoch", 0)) <= self.start_epoch]
        self.log = RunLog(self.run_dir, enabled=self.dist.is_main, tensorboard=cfg.train.tensorboard,
                          plots=cfg.train.plots, history=history)
        if self.dist.is_main:
            output_folder(self.run_dir, "the run folder")
            save_config(cfg, self.run_dir / "config.yaml")
            env = environment_info(cfg.train.seed, self.device, self.dist.world_size)
            env.update({"model": cfg.model.name, "num_classes": self.num_classes, "input_size": list(self.size),
                        "train_images": len(self.train_records), "resumed_from": str(self.resumed_from or ""),
                        "start_epoch": self.start_epoch,
                        "started": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            earlier = environment_records(self.run_dir) if self.resumed_from else []  # a record per start
            self.log.write_json(ENV_FILE, {"runs": [*earlier, env]})
            mapping = ds.extras.get("datasets")
            if mapping:  # several training datasets: where each one's classes and cameras went
                self.log.write_json("datasets.json", {
                    "datasets": mapping, "ids": sum(m["ids"] for m in mapping),
                    "cameras": sum(m["cameras"] for m in mapping), "images": sum(m["images"] for m in mapping)})
            names = ds.identity_names("train") if hasattr(ds, "identity_names") else {}
            if names:  # named identities (alice/): the name of each class, and of each query/gallery pid
                self.log.write_json("identities.json", {
                    "classes": [names[p] for p in pids_sorted],
                    "pids": {str(i): n for i, n in enumerate(ds.extras["identity_names"])}})

    def _make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        o = self.cfg.optim
        params = [p for p in model.parameters() if p.requires_grad]
        if o.name == "adam":
            return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
        if o.name == "adamw":
            return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
        return torch.optim.SGD(params, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum,
                               nesterov=o.momentum > 0)  # Nesterov needs a momentum

    def _setup_data(self) -> None:
        cfg = self.cfg
        self.train_cache = None
        if cfg.data.pipeline == "cached":
            from reidkit.data.augment import TrainAugment
            from reidkit.data.cache import ImageCache

            paths = [r.path for r in self.train_records]
            t0 = time.perf_counter()
            # the whole uint8 cache lives on the GPU when training on one
            self.train_cache, bad = ImageCache.from_paths(
                paths, self.size, workers=cfg.data.workers, device=self.device if self.device.type == "cuda" else None,
                progress=self.dist.is_main and cfg.train.progress and not self.quiet)
            self.decode_seconds = time.perf_counter() - t0
            if bad:
                bad_set = set(map(str, bad))
                warnings.warn(f"{len(bad)} unreadable training image(s) left out, e.g. {sorted(bad_set)[0]}",
                              stacklevel=2)
                self.train_records = [r for r in self.train_records if str(r.path) not in bad_set]
            self.augment = TrainAugment(dataclasses.replace(cfg.augment, size=self.size))
        else:
            self.decode_seconds = 0.0
        self.train_pids = [self.relabel[r.pid] for r in self.train_records]
        self.pid_tensor = torch.as_tensor(self.train_pids, dtype=torch.long)

    # ------------------------------------------------------------------ state
    def state_dict(self, epoch: int, step: int) -> dict[str, Any]:
        """Everything needed to continue: ``epoch`` is the epoch to run next, ``step`` the batches done in it."""
        from reidkit.models.io import model_meta

        return {
            "model": {k: v.detach().cpu() for k, v in self.core.state_dict().items()},
            "model_meta": model_meta(self.core),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": capture_rng({"augment": self.aug_generator}),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "epoch": epoch,
            "step": step,
            "global_step": self.global_step,
            "config": config_to_dict(self.cfg),
            "best": dict(self.best) if self.best else {},
            "history": list(self.log.history) if hasattr(self, "log") else [],
        }

    def _restore_or_reset(self) -> Any:
        """``restore(path, state)`` for ``find_resume_checkpoint``: continue from ``state``, or, when it cannot
        be continued from (wrong types, missing parts, another model), put everything back as it was and
        raise a one-line ``ReidkitError`` naming ``path``, so that the previous checkpoint is tried."""
        fresh = {"model": {k: v.detach().clone() for k, v in self.core.state_dict().items()},
                 "optimizer": copy.deepcopy(self.optimizer.state_dict()), "scheduler": self.schedule.state_dict(),
                 "sampler": self.sampler.state_dict(), "rng": capture_rng({"augment": self.aug_generator})}

        def restore(path: Path, state: dict[str, Any]) -> None:
            try:
                self._restore(state, path)
            except BaseException as exc:
                self.core.load_state_dict(fresh["model"])
                self.optimizer.load_state_dict(fresh["optimizer"])
                self.schedule.load_state_dict(fresh["scheduler"])
                self.sampler.load_state_dict(fresh["sampler"])
                restore_rng(fresh["rng"], {"augment": self.aug_generator})
                if not isinstance(exc, Exception):
                    raise
                if isinstance(exc, ReidkitError):
                    if str(path) in str(exc):
                        raise
                    raise type(exc)(f"{path}: {exc}") from None
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                raise CheckpointError(f"{path}: cannot resume from it ({type(exc).__name__}: {first})") from None

        return restore

    def _restore(self, state: dict[str, Any], path: Path | None = None) -> None:
        where = path or self.run_dir
        try:
            self.core.load_state_dict(state["model"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(f"{where}: checkpoint does not fit the configured model ({first})") from None
        settings = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        if not isinstance(state.get("optimizer"), dict):
            raise CheckpointError(f"{where}: damaged checkpoint (no optimizer state)")
        self.optimizer.load_state_dict(state["optimizer"])
        for group, mine in zip(self.optimizer.param_groups, settings, strict=True):
            group.update(mine)  # the rates, betas and decay are the config's; the moments the checkpoint's
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                for name, t in self.optimizer.state.get(p, {}).items():
                    if t is not None and not (isinstance(t, Tensor) and t.is_floating_point()
                                              and (t.dim() == 0 or t.shape == p.shape)):
                        raise CheckpointError(f"{where}: damaged optimizer state ({name} of a {tuple(p.shape)} "
                                              "parameter)")
        scheduler = state.get("scheduler", {})
        if not isinstance(scheduler, dict) or not isinstance(scheduler.get("last_epoch", -1), int):
            raise CheckpointError(f"{where}: damaged checkpoint (scheduler state)")
        self.schedule.load_state_dict(scheduler)
        if state.get("sampler"):
            self.sampler.load_state_dict(state["sampler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rng = state.get("rng", {})
        if not isinstance(rng, dict):
            raise CheckpointError(f"{where}: damaged checkpoint (random states)")
        restore_rng(rng, {"augment": self.aug_generator})
        best, history = state.get("best") or {}, state.get("history", [])
        number = (int, float)
        if not (isinstance(best, dict) and all(isinstance(best.get(k, 0), number) for k in ("epoch", "mAP"))
                and isinstance(history, list) and all(isinstance(r, dict) and isinstance(r.get("epoch", 0), number)
                                                      for r in history)):
            raise CheckpointError(f"{where}: damaged checkpoint ('best' or 'history' of the wrong type)")
        if self.dist.rank > 0:  # the checkpoint holds rank 0's augmentation stream; give the others their own
            self.aug_generator.manual_seed(self.cfg.train.seed * 1000 + 17 + self.dist.rank
                                           + 7919 * int(state.get("global_step", 0)))
        self.start_epoch = int(state["epoch"])
        self.skip_batches = int(state.get("step", 0))
        self.global_step = int(state.get("global_step", 0))
        self.best = dict(state["best"]) if state.get("best") else None

    def save(self, epoch: int, step: int, best: bool = False) -> None:
        """Write ``checkpoint.pt`` (and ``best.safetensors``, and ``best.pt`` if ``train.keep`` has it, when
        ``best``) on rank 0."""
        if not self.dist.is_main:
            return
        keep = self.cfg.train.keep
        save_checkpoint(self.state_dict(epoch, step), self.run_dir, best=best and "best" in keep,
                        previous="previous" in keep)
        if best:
            from reidkit.models.io import save_weights

            save_weights(self.core, self.run_dir / "best.safetensors")

    # ------------------------------------------------------------------ batches
    def _batches(self, epoch: int) -> Any:
        """Yield ``(x, pids)`` training batches of ``epoch`` (after skipping ``skip_batches`` when resuming)."""
        self.sampler.set_epoch(epoch)
        if self.train_cache is not None:
            for idx in self.sampler:  # a restored sampler continues after its last yielded batch
                index = torch.as_tensor(idx, dtype=torch.long)
                yield self.augment(self.train_cache.batch(index, self.device), self.aug_generator), self.pid_tensor[index]
        else:
            yield from self._per_image_batches(epoch)

    def _per_image_batches(self, epoch: int) -> Any:
        if self._loader is None:
            from reidkit.data.per_image import make_loader

            self._loader = make_loader([r.path for r in self.train_records], self.train_pids,
                                       dataclasses.replace(self.cfg.augment, size=self.size),
                                       workers=self.cfg.data.workers, batch_sampler=self.sampler,
                                       seed=self.cfg.train.seed)
        for x, pids in self._loader:
            yield x.to(self.device, non_blocking=True), pids

    # ------------------------------------------------------------------ evaluation
    def _test_u8(self) -> tuple[Tensor, Tensor]:
        if self._test_cache is None:
            from reidkit.data.cache import decode_images

            q = [r.path for r in self.dataset.query]
            g = [r.path for r in self.dataset.gallery]
            qu8, qbad = decode_images(q, self.size, workers=self.cfg.data.workers)
            gu8, gbad = decode_images(g, self.size, workers=self.cfg.data.workers)
            if qbad or gbad:
                raise DatasetError(f"unreadable test image(s), e.g. {(list(qbad) + list(gbad))[0]}")
            self._test_cache = (qu8, gu8)
        return self._test_cache

    def eval_settings(self) -> dict[str, Any]:
        """The settings ``evaluate`` measures with (``reidkit.eval.summary.evaluation_settings``), recorded beside
        the numbers in ``final_metrics.json`` and the demo's ``metrics.json``."""
        from reidkit.eval.summary import evaluation_settings

        e = self.cfg.eval
        return evaluation_settings(metric=e.metric, flip=e.flip, rerank=e.rerank, max_rank=e.max_rank)

    def evaluate(self) -> dict[str, Any]:
        """Embed query and gallery with the current weights and return mAP, rank-k, mINP (percent)."""
        if not self.dataset.query or not self.dataset.gallery:
            return {}
        from reidkit.eval import evaluate
        from reidkit.inference import Embedder

        qu8, gu8 = self._test_u8()
        emb = Embedder(self.core, self.device, autocast_dtype=self.amp_dtype)
        bs, flip = self.cfg.data.eval_batch_size, self.cfg.eval.flip
        qf, gf = emb.embed_uint8(qu8, bs, flip), emb.embed_uint8(gu8, bs, flip)
        self.last_features = (qf, gf)  # kept for pictures (rank lists) drawn after an evaluation
        qs, gs = self.dataset.query, self.dataset.gallery
        res = evaluate(qf.float().cpu(), gf.float().cpu(),
                       np.array([r.pid for r in qs]), np.array([r.pid for r in gs]),
                       np.array([r.camid for r in qs]), np.array([r.camid for r in gs]),
                       metric=self.cfg.eval.metric, rerank=self.cfg.eval.rerank, max_rank=self.cfg.eval.max_rank)
        return summarize(res)

    # ------------------------------------------------------------------ loop
    def fit(self) -> TrainResult:
        """Run the remaining epochs; returns the final metrics. Cleans up the process group at the end."""
        try:
            if not hasattr(self, "core"):
                self.setup()
            return self._fit()
        finally:
            if hasattr(self, "log"):
                self.log.close()

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        epochs = cfg.train.epochs
        final: dict[str, Any] = {}
        run_start = time.perf_counter()
        epochs_run = 0
        stop = False
        any_process = (lambda flag: all_reduce_flag(self.dist, flag)) if self.dist.enabled else None
        self.model.train()
        for epoch in range(self.start_epoch, epochs):
            lr = self.schedule.apply(self.optimizer, epoch)
            n_batches = len(self.sampler)
            sums: dict[str, float] = {}
            diag_sums: dict[str, list[float]] = {}  # name -> [sum, steps that reported it]
            steps = 0
            images = 0
            data_wait = 0.0
            t_epoch = time.perf_counter()
            # a bar on a terminal; in a log only the epoch line below (lines=False)
            bar = show_progress(n_batches, f"epoch {epoch + 1}/{epochs}", "batch", initial=self.skip_batches,
                                enabled=self.dist.is_main and cfg.train.progress and not self.quiet, lines=False,
                                leave=False)
            step_in_epoch = self.skip_batches
            batches = self._batches(epoch)
            while True:
                t0 = time.perf_counter()
                try:
                    x, pids = next(batches)
                except StopIteration:
                    break
                data_wait += time.perf_counter() - t0
                if cfg.train.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                try:
                    result = train_step(self.model, self.core, self.optimizer, x, pids.to(self.device, non_blocking=True),
                                        epoch, step=self.global_step, autocast_dtype=self.amp_dtype,
                                        scaler=self.scaler, grad_clip=cfg.optim.grad_clip, hooks=self.hooks,
                                        any_process=any_process)
                except NonFiniteLoss as exc:
                    self._non_finite(exc, epoch, step_in_epoch, pids)
                self.global_step += 1
                step_in_epoch += 1
                steps += 1
                images += int(x.shape[0]) * self.dist.world_size
                for k, v in result.losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                for k, v in result.diagnostics.items():
                    acc = diag_sums.setdefault(k, [0.0, 0])
                    acc[0] += v
                    acc[1] += 1
                elapsed = time.perf_counter() - t_epoch
                bar.set_postfix(loss=f"{result.losses['loss']:.3f}", img_s=f"{images / max(elapsed, 1e-9):.0f}")
                bar.update(1)
                if self.dist.is_main and self.global_step % cfg.train.log_every == 0:
                    self.log.step(self.global_step, {**result.losses, "lr": lr})
                if cfg.train.save_every_steps and self.global_step % cfg.train.save_every_steps == 0 \
                        and step_in_epoch < n_batches:
                    self.save(epoch, step_in_epoch)
                for hook in self.hooks:
                    hook.after_step(self.global_step)
            bar.close()
            self.skip_batches = 0
            seconds = time.perf_counter() - t_epoch
            row: dict[str, Any] = {"epoch": epoch + 1, "step": self.global_step, "lr": lr}
            for k, v in sums.items():
                row[k if k == "loss" else f"loss/{k}"] = v / max(steps, 1)
            row["loss"] = row.pop("loss", float("nan"))
            row.update({k: total_ / count for k, (total_, count) in diag_sums.items()})
            row.update({"images_per_s": images / max(seconds, 1e-9), "epoch_s": seconds,
                        "data_wait_s": data_wait, "data_wait_per_step_ms": 1000 * data_wait / max(steps, 1)})
            last = epoch + 1 == epochs
            if cfg.train.max_seconds is not None and not last:
                elapsed = time.perf_counter() - run_start
                per_epoch = elapsed / (epoch + 1 - self.start_epoch)
                if elapsed + per_epoch > cfg.train.max_seconds:
                    self._log(f"stopping after epoch {epoch + 1}: the next epoch would pass train.max_seconds="
                              f"{cfg.train.max_seconds:g}")
                    stop = True
                stop = all_reduce_flag(self.dist, stop)  # every process stops at the same epoch
                last = stop
            is_best = False
            if (cfg.train.eval_every and (epoch + 1) % cfg.train.eval_every == 0) or last:
                metrics = self.evaluate() if self.dist.is_main else {}
                barrier(self.dist)
                if metrics:
                    row.update({k: metrics[k] for k in ("mAP", "rank1", "rank5", "rank10", "mINP") if k in metrics})
                    final = metrics
                    if self.best is None or metrics["mAP"] > self.best["mAP"]:
                        self.best = {"epoch": epoch + 1, **{k: metrics[k] for k in ("mAP", "rank1", "mINP")
                                                             if k in metrics}}
                        is_best = True
            self.log.epoch(row)
            self.save(epoch + 1, 0, best=is_best)
            barrier(self.dist)
            epochs_run += 1
            eta = estimate_eta(time.perf_counter() - run_start, epoch + 1 - self.start_epoch, epochs - epoch - 1,
                               cfg.train.max_seconds)
            extra = f"  mAP {row['mAP']:.2f}  R1 {row['rank1']:.2f}" if "mAP" in row else ""
            self._log(f"epoch {epoch + 1}/{epochs}  loss {row['loss']:.4f}  lr {lr:.2e}  "
                      f"{row['images_per_s']:.0f} img/s  data {row['data_wait_per_step_ms']:.1f} ms/step{extra}"
                      f"  eta {_fmt_seconds(eta)}")
            if stop:
                break
        test_sets: dict[str, Any] | None = None
        if self.dist.is_main:
            from reidkit.models.io import save_weights

            save_weights(self.core, self.run_dir / "model.safetensors")
            self._link_best_to_final()
            self._drop_unkept()
            if not final and self.log.history:
                last_row = self.log.history[-1]
                final = {k: last_row[k] for k in ("mAP", "rank1", "rank5", "rank10", "mINP") if k in last_row}
            self.log.write_json("final_metrics.json", {"final": final, "best": self.best or {},
                                                       "units": "percent", "settings": self.eval_settings(),
                                                       "epochs": epochs, "seconds": time.perf_counter() - run_start})
            test_sets = self.evaluate_test_sets(self.start_epoch + epochs_run)
        barrier(self.dist)
        return TrainResult(self.run_dir, final, self.best, epochs_run, self.core, list(self.log.history), test_sets)

    def evaluate_test_sets(self, epoch: int) -> dict[str, Any] | None:
        """Evaluate the current weights on every test set of ``eval.datasets`` (none: return None): print the
        table and write ``test_sets.json`` and ``test_sets.md`` into the run folder; returns their record."""
        sources = self.cfg.eval.datasets
        if not sources:
            return None
        from reidkit.data.multi import source_labels
        from reidkit.eval.summary import save_test_set_results, table_of_test_sets
        from reidkit.inference import Embedder
        from reidkit.inference.dataset import evaluate_test_sets

        sets = list(zip(source_labels(sources), [self._load_source(s) for s in sources], strict=True))
        e = self.cfg.eval
        emb = Embedder(self.core, self.device, autocast_dtype=self.amp_dtype)
        record = evaluate_test_sets(emb, sets, batch_size=self.cfg.data.eval_batch_size, flip=e.flip,
                                    workers=self.cfg.data.workers, progress=self.cfg.train.progress and not self.quiet,
                                    metric=e.metric, rerank=e.rerank, max_rank=e.max_rank)
        record = {**record, "weights": "model.safetensors", "epoch": epoch}
        save_test_set_results(self.run_dir, record)
        self._log(f"test sets, final weights (epoch {epoch}):\n{table_of_test_sets(record)}")
        return record

    def _link_best_to_final(self) -> None:
        """When the best weights are the final ones (the last evaluation was the best), ``best.safetensors``
        becomes a hard link to ``model.safetensors`` instead of a second copy of the same bytes."""
        import filecmp

        from reidkit.utils.atomic import atomic_link

        best, final = self.run_dir / "best.safetensors", self.run_dir / "model.safetensors"
        if best.is_file() and not best.samefile(final) and filecmp.cmp(best, final, shallow=False):
            atomic_link(final, best)

    def _drop_unkept(self) -> None:
        """At the end of a run: remove the checkpoints ``train.keep`` does not keep (written for the run's
        own safety, or left by an earlier run in this folder)."""
        from reidkit.engine.checkpoint import BEST, LATEST, PREVIOUS

        keep = self.cfg.train.keep
        for name, kind in ((PREVIOUS, "previous"), (BEST, "best"), (LATEST, "latest")):
            if kind not in keep or (kind == "previous" and "latest" not in keep):
                (self.run_dir / name).unlink(missing_ok=True)

    def _non_finite(self, exc: NonFiniteLoss, epoch: int, step: int, pids: Tensor) -> None:
        term = str(exc)
        ids = sorted({int(p) for p in pids.tolist()})
        ckpt = self.run_dir / "checkpoint.pt"
        where = f"; last good checkpoint {ckpt} kept, resume with --resume" if ckpt.exists() else \
            "; no checkpoint was written yet"
        raise NonFiniteLossError(
            f"non-finite loss {term} at epoch {epoch + 1} step {step + 1} (global step {self.global_step + 1}, "
            f"batch of {len(pids)} images, ids {ids[:8]}{'...' if len(ids) > 8 else ''}){where}")


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """``reidkit.eval.evaluate``'s fractions as percent: mAP, rank-1/5/10, mINP and the CMC curve
    (``reidkit.eval.summary.to_percent``)."""
    from reidkit.eval.summary import to_percent

    return to_percent(res)


def estimate_eta(elapsed: float, done: int, remaining: int, max_seconds: float | None = None) -> float:
    """Seconds of training left after ``done`` epochs took ``elapsed`` seconds and ``remaining`` epochs are
    configured: those epochs at the mean pace, or, with a time budget ``max_seconds``, only those that start
    within it (the run stops after the epoch that would pass it)."""
    per_epoch = elapsed / max(done, 1)
    left = remaining
    if max_seconds is not None and per_epoch > 0:
        left = min(remaining, max(0, int((max_seconds - elapsed) // per_epoch)))
    return per_epoch * left


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def train(cfg: RunConfig, *, resume: bool = False, dataset: Any = None, quiet: bool = False,
          hooks: Sequence[StepHook] = ()) -> TrainResult:
    """Train with ``cfg`` (under ``torchrun``: one process of a DDP group); the process group is torn down after.

    The run folder ``cfg.train.out_dir`` receives what ``reidkit train`` writes (checkpoints, weights, logs,
    ``final_metrics.json``); the returned ``TrainResult`` holds the final and best metrics (percent) and the
    trained model. ``resume`` continues the run in that folder from its newest loadable checkpoint;
    ``dataset`` (a ``reidkit.data.records.ReidDataset``) replaces reading ``cfg.data``; ``quiet`` prints
    nothing. ``hooks`` watch the steps (``reidkit.engine.step.StepHook``); the test hooks named in the environment
    (``reidkit.engine.step.hooks_from_env``) are added to them.
    """
    info = init_distributed(cfg.train.device)
    try:
        trainer = Trainer(cfg, resume=resume, dataset=dataset, dist_info=info, quiet=quiet,
                          hooks=[*hooks, *hooks_from_env()])
        return trainer.fit()
    finally:
        cleanup(info)
