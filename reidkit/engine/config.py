"""Typed training configuration: dataclasses, YAML loading with ``_base_`` inheritance, ``--set`` overrides.

A config file is a YAML mapping with the sections of ``RunConfig`` (``model``, ``data``,
``augment``, ``sampler``, ``optim``, ``schedule``, ``train``, ``eval``). A file may name
``_base_: other.yaml`` (a path relative to the file, the name of a preset shipped in the package such as
``stadb_market1501`` (``reidkit.engine.presets``), or a list of these): the bases are
loaded first and the file's keys are merged over them (mappings merge key by key, anything
else replaces). Command-line overrides ``section.key=value`` are parsed as YAML scalars and
applied last. Unknown keys and values of the wrong type raise ``reidkit.errors.ConfigError``
with one line naming the key and the file (or ``--set``) it came from. A file must be UTF-8 text, and a
document (file or ``--set`` value) may hold at most ``reidkit.utils.limits.MAX_CONFIG_VALUES`` values once
its YAML aliases are expanded, checked before it is built ("billion laughs" documents are refused at
once). Every value a config accepts runs: the checks bound each setting to what training can do.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from reidkit.data.augment import AugmentConfig
from reidkit.data.multi import DatasetSource, first_repeat
from reidkit.engine.presets import find_preset
from reidkit.errors import ConfigError
from reidkit.utils.atomic import atomic_write_text
from reidkit.utils.limits import (
    MAX_BATCH_IMAGES,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_VALUES,
    MAX_LR,
    MAX_RANK,
    MAX_SEED,
    MAX_WORKERS,
    input_size_problem,
)
from reidkit.utils.textfile import read_text

__all__ = [
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SamplerConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "parse_override",
    "resolve_effective",
    "save_config",
]


@dataclass
class ModelConfig:
    """Which network to build: ``reidkit.models.build(name, num_classes, **options)``."""

    name: str = "stadb"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Where the images come from and how they reach the model.

    ``dataset`` names one reader (``root`` its folder, ``options`` its keyword options) or a list of them:
    then the training set is the union of their train splits, identities and cameras kept apart
    (``reidkit.data.multi.combine``), ``root`` is one folder per dataset (or one folder holding them all) and
    ``options`` one mapping per dataset (or one for all).
    ``size`` is the training and test input (H, W); ``None`` takes the model's ``input_size``.
    ``pipeline`` ``"cached"`` decodes the training images once to uint8 at ``size`` and
    assembles batches by index (augmentation runs batched on the model's device);
    ``"per_image"`` runs the per-image PIL pipeline in DataLoader workers.
    """

    dataset: str | list[str] = "market1501"
    root: str | list[str] = "data/market1501"
    options: dict[str, Any] | list[dict[str, Any]] = field(default_factory=dict)
    size: list[int] | None = None
    pipeline: Literal["cached", "per_image"] = "cached"
    workers: int = 4
    eval_batch_size: int = 128

    def sources(self) -> list[DatasetSource]:
        """The training datasets, one ``DatasetSource`` each (a single name: one), ``root`` and ``options``
        given once spread over all of them."""
        names = [self.dataset] if isinstance(self.dataset, str) else list(self.dataset)
        roots = self.root if isinstance(self.root, list) else [self.root] * len(names)
        options = self.options if isinstance(self.options, list) else [self.options] * len(names)
        for key, given in (("data.root", roots), ("data.options", options)):  # load_config refuses these; a
            if len(given) != len(names):  # config changed in code is checked here
                raise ConfigError(f"'{key}': {len(given)} entries for {len(names)} data.dataset entries; expected "
                                  "one per dataset (or one for all)")
        return [DatasetSource(n, r, dict(o)) for n, r, o in zip(names, roots, options, strict=True)]


@dataclass
class SamplerConfig:
    """PK sampling: ``p`` identities × ``k`` images per batch (per process under DDP).

    ``num_batches`` fixes the batches per epoch (``None``: the sampler's default).
    """

    p: int = 32
    k: int = 4
    num_batches: int | None = None


@dataclass
class OptimConfig:
    """Optimiser: Adam (or AdamW / SGD); ``grad_clip`` is a max global gradient norm (``None``: off)."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float | None = None


@dataclass
class ScheduleConfig:
    """Learning rate per epoch, as a factor of ``optim.lr`` (see ``reidkit.engine.schedules``).

    - ``constant``: ``lr`` throughout.
    - ``step``: ``lr · gamma^(number of milestones ≤ epoch)``, after an optional stepwise warm-up.
    - ``stadb``: the STADB paper's schedule, i.e. ``step`` with ``warmup_epochs=50``,
      ``warmup_step=5``, ``milestones=[200, 300]``, ``gamma=0.1`` and ``optim.lr`` the peak (1e-3).
    - ``cosine``: warm-up then cosine decay to ``min_factor·lr`` at the last epoch.

    Warm-up (``warmup_epochs > 0``): ``lr · (⌊ep/warmup_step⌋+1) / ⌈warmup_epochs/warmup_step⌉``.
    """

    kind: Literal["constant", "step", "stadb", "cosine"] = "constant"
    warmup_epochs: int = 0
    warmup_step: int = 1
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    min_factor: float = 0.0


STADB_DEFAULTS = {"warmup_epochs": 50, "warmup_step": 5, "milestones": [200, 300], "gamma": 0.1}


def resolve_schedule(cfg: ScheduleConfig) -> ScheduleConfig:
    """``kind="stadb"`` filled in with the paper's numbers where the config left the defaults."""
    if cfg.kind != "stadb":
        return cfg
    defaults = ScheduleConfig()
    return ScheduleConfig(
        kind="step",
        warmup_epochs=cfg.warmup_epochs if cfg.warmup_epochs != defaults.warmup_epochs
        else STADB_DEFAULTS["warmup_epochs"],
        warmup_step=cfg.warmup_step if cfg.warmup_step != defaults.warmup_step else STADB_DEFAULTS["warmup_step"],
        milestones=list(cfg.milestones) if cfg.milestones else list(STADB_DEFAULTS["milestones"]),
        gamma=cfg.gamma,
        min_factor=cfg.min_factor,
    )


@dataclass
class TrainConfig:
    """The loop: epochs, evaluation cadence, seed, precision and where the run folder goes.

    ``eval_every`` 0 evaluates only after the last epoch. ``save_every_steps`` > 0 also writes
    ``checkpoint.pt`` inside epochs. ``max_seconds`` stops after the epoch that would otherwise
    run past this wall-time budget (then evaluates, as after the last epoch).

    ``keep``: the checkpoints the run folder keeps (``model.safetensors`` and ``best.safetensors``, the
    weights, are always written). ``latest``: ``checkpoint.pt`` (weights + optimizer state), what
    ``--resume`` continues from; without it, it is still written during the run (an interrupted run can
    resume) and removed when the run ends. ``previous``: ``checkpoint_prev.pt``, the one before it, which
    ``--resume`` falls back to when ``checkpoint.pt`` cannot be used. ``best``: ``best.pt``, the best
    evaluation's weights, epoch, metrics and config (no optimizer state).
    """

    epochs: int = 600
    eval_every: int = 10
    seed: int = 0
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    out_dir: str = "runs/train"
    log_every: int = 20
    sync_bn: bool = False
    save_every_steps: int = 0
    max_seconds: float | None = None
    progress: bool = True
    tensorboard: bool = True
    plots: bool = True
    keep: list[Literal["latest", "previous", "best"]] = field(default_factory=lambda: ["latest", "previous", "best"])


@dataclass
class EvalConfig:
    """Evaluation during training: distance, flip averaging, re-ranking, how many ranks to report.

    ``datasets``: the test sets the final weights are evaluated on after the last epoch, each
    ``{dataset: NAME, root: DIR, options: {...}}`` (``options`` may be left out), printed as one table and saved
    as ``test_sets.json`` and ``test_sets.md``; empty (the default) with several training datasets means each
    training dataset's own test split, with one it means none (as before). The evaluation every
    ``train.eval_every`` epochs and ``best.pt`` keep using the (first) training dataset's query and gallery.
    """

    metric: Literal["euclidean", "cosine"] = "euclidean"
    flip: bool = False
    rerank: bool = False
    max_rank: int = 50
    datasets: list[DatasetSource] = field(default_factory=list)


@dataclass
class RunConfig:
    """A whole training run. ``augment.size`` is always replaced by the resolved ``data.size``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- YAML loading

_FREE_FORM = {"model.options", "data.options"}  # dicts passed through to other modules


def load_yaml(text: str, source: str) -> Any:
    """The YAML document ``text`` as plain data (safe tags only), refused with a one-line ``ConfigError``
    naming ``source`` when it is not valid YAML, nests too deeply, refers to itself or expands (through
    aliases) to more than ``MAX_CONFIG_VALUES`` values."""
    try:
        return _bounded_yaml(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}: invalid YAML{where}") from None


def _bounded_yaml(text: str, source: str) -> Any:
    """``load_yaml`` that lets ``yaml.YAMLError`` through (a ``--set`` value that is not YAML is text)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply; expected a config") from None
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Count the values ``root`` stands for with every alias expanded (each node once, memoised); refuse a
    document that refers to itself or expands past ``MAX_CONFIG_VALUES``."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            total = 1 + sum(size[id(c)] for c in _children(node))
            if total > MAX_CONFIG_VALUES:
                raise ConfigError(f"{source}: the YAML expands (through aliases) to more than {MAX_CONFIG_VALUES} "
                                  "values; expected a config")
            size[key] = total
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise ConfigError(f"{source}: a YAML alias refers to the value that holds it; expected a config")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _read_yaml(path: Path) -> dict[str, Any]:
    text = read_text(path, limit=MAX_CONFIG_BYTES, what="a YAML config", error=ConfigError)
    data = load_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_raw(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, Path]]:
    """The merged mapping of ``path`` and its bases, and for each dotted key the file that set it."""
    path = path.resolve() if path.exists() else path
    if path in seen:
        raise ConfigError(f"{path}: _base_ cycle ({' -> '.join(str(p) for p in (*seen, path))})")
    data = _read_yaml(path)
    bases = data.pop("_base_", None)
    merged: dict[str, Any] = {}
    origin: dict[str, Path] = {}
    if bases is not None:
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise ConfigError(f"{path}: '_base_' must be a file name or a list of file names")
        for base in bases:
            base_path = _base_file(base, path)
            raw, org = _load_raw(base_path, (*seen, path))
            merged = _deep_merge(merged, raw)
            origin.update(org)
    for key in _dotted_keys(data):
        origin[key] = path
    return _deep_merge(merged, data), origin


def _base_file(base: str, path: Path) -> Path:
    """Where ``_base_: base`` in the file ``path`` leads: a path (absolute or relative to ``path``'s folder)
    that exists, else the preset of that name."""
    base_path = Path(base) if Path(base).is_absolute() else path.parent / base
    if base_path.exists():
        return base_path
    preset = find_preset(base)
    if preset is None:
        raise ConfigError(f"{path}: '_base_' {base} is neither a file (looked at {base_path}) nor a preset "
                          "(`reidkit presets` lists them)")
    return preset


def _dotted_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, dict) and dotted not in _FREE_FORM:
            keys.extend(_dotted_keys(value, dotted + "."))
    return keys


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into (``["a", "b"]``, value parsed as a YAML scalar)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected KEY=VALUE, e.g. --set optim.lr=3e-4")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text}: empty key; expected SECTION.KEY=VALUE, e.g. optim.lr=3e-4")
    try:
        value = _bounded_yaml(raw, f"--set {key}") if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not YAML: the text itself
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> tuple[dict[str, Any], set[str]]:
    """Return ``data`` with each ``KEY=VALUE`` override applied, and the set of dotted keys set."""
    out = _deep_merge({}, data)
    touched: set[str] = set()
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {text}: '{'.'.join(parts[: i + 1])}' is not a section")
            node = child
        node[parts[-1]] = value
        touched.add(".".join(parts))
    return out, touched


# --------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        inner = _type_name(args[0]) if args else "value"
        return f"a list of {inner[2:] + 's' if inner.startswith('a ') else inner}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is float:
        return "a finite number"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a message stays one readable line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _Mismatch
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, where)
            except _Mismatch:
                continue
        raise _Mismatch
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Mismatch
        return _build(tp, value, key, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Mismatch
            return tuple(_coerce(v, a, key, where) for v, a in zip(value, args, strict=True))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, key, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:  # a finite number: no setting means anything with inf or nan
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _Mismatch
        try:
            number = float(value)  # YAML 1.1 reads "3e-4" as a string
        except ValueError:
            raise _Mismatch from None
        if not math.isfinite(number):
            raise _Mismatch
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    return value  # an annotation we do not check


def _build(cls: type, data: dict[str, Any], prefix: str, where: Any) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        src = where(dotted) if callable(where) else where
        if key not in names:
            raise ConfigError(f"{src}: unknown key '{dotted}' (expected one of: {', '.join(names)})")
        try:
            kwargs[key] = _coerce(value, hints[key], dotted, where)
        except _Mismatch:
            raise ConfigError(
                f"{src}: '{dotted}' must be {_type_name(hints[key])}, got {_short(value)} ({type(value).__name__})"
            ) from None
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        src = where(prefix) if callable(where) else where
        raise ConfigError(f"{src}: {exc}") from None
    except (TypeError, ValueError) as exc:
        src = where(prefix) if callable(where) else where
        raise ConfigError(f"{src}: invalid section '{prefix or 'top level'}': {exc}") from None


def _check(cfg: RunConfig, where: Any) -> None:
    """Every setting within what training can run (ranges from the consumers: the sampler, the optimisers,
    the seeds, the workers, ``reidkit.utils.limits``)."""
    def bad(key: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{where(key)}: '{key}' must be {expected}, got {_short(value)}")

    if cfg.data.size is not None:
        problem = input_size_problem(cfg.data.size)
        if problem:
            raise ConfigError(f"{where('data.size')}: 'data.size': {problem}")
    for key, value, low, high in (
        ("sampler.p", cfg.sampler.p, 1, MAX_BATCH_IMAGES),
        ("sampler.k", cfg.sampler.k, 1, MAX_BATCH_IMAGES),
        ("train.epochs", cfg.train.epochs, 1, None),
        ("train.eval_every", cfg.train.eval_every, 0, None),
        ("train.log_every", cfg.train.log_every, 1, None),
        ("train.save_every_steps", cfg.train.save_every_steps, 0, None),
        ("train.seed", cfg.train.seed, 0, MAX_SEED),
        ("data.workers", cfg.data.workers, 0, MAX_WORKERS),
        ("data.eval_batch_size", cfg.data.eval_batch_size, 1, None),
        ("schedule.warmup_epochs", cfg.schedule.warmup_epochs, 0, None),
        ("schedule.warmup_step", cfg.schedule.warmup_step, 1, None),
        ("eval.max_rank", cfg.eval.max_rank, 1, MAX_RANK),
    ):
        if value < low or (high is not None and value > high):
            raise bad(key, f"an integer >= {low}" + (f" and <= {high}" if high is not None else ""), value)
    if not 2 <= cfg.sampler.p * cfg.sampler.k <= MAX_BATCH_IMAGES:  # BatchNorm needs two images a batch
        raise bad("sampler.k", f"such that sampler.p × sampler.k is between 2 and {MAX_BATCH_IMAGES} images a "
                  "batch", cfg.sampler.k)
    if cfg.sampler.num_batches is not None and cfg.sampler.num_batches < 1:
        raise bad("sampler.num_batches", "null or an integer >= 1", cfg.sampler.num_batches)
    if not 0 < cfg.optim.lr <= MAX_LR:
        raise bad("optim.lr", f"a positive number <= {MAX_LR:g}", cfg.optim.lr)
    if not 0 <= cfg.optim.weight_decay <= MAX_LR:
        raise bad("optim.weight_decay", f"a number in [0, {MAX_LR:g}]", cfg.optim.weight_decay)
    if not 0 <= cfg.optim.momentum <= 1:
        raise bad("optim.momentum", "a number in [0, 1]", cfg.optim.momentum)
    if cfg.optim.grad_clip is not None and cfg.optim.grad_clip <= 0:
        raise bad("optim.grad_clip", "null or a positive number", cfg.optim.grad_clip)
    if len(cfg.optim.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.optim.betas):
        raise bad("optim.betas", "a list of two numbers in [0, 1)", cfg.optim.betas)
    if sorted(cfg.schedule.milestones) != list(cfg.schedule.milestones) or any(m < 0 for m in cfg.schedule.milestones):
        raise bad("schedule.milestones", "increasing epochs >= 0", cfg.schedule.milestones)
    if not 0 < cfg.schedule.gamma <= 1:
        raise bad("schedule.gamma", "a factor in (0, 1]", cfg.schedule.gamma)
    if not 0.0 <= cfg.schedule.min_factor <= 1.0:
        raise bad("schedule.min_factor", "a number in [0, 1]", cfg.schedule.min_factor)
    if cfg.train.max_seconds is not None and cfg.train.max_seconds <= 0:
        raise bad("train.max_seconds", "null or a positive number of seconds", cfg.train.max_seconds)
    if cfg.train.device not in ("auto", "cpu", "cuda", "mps") and not cfg.train.device.startswith("cuda:"):
        raise bad("train.device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'", cfg.train.device)
    from reidkit.models.registry import names

    if cfg.model.name not in names():
        raise bad("model.name", f"one of {', '.join(names())}", cfg.model.name)
    _check_datasets(cfg, where)


def _check_datasets(cfg: RunConfig, where: Any) -> None:
    """``data.dataset``/``root``/``options`` agree (one dataset, or lists of one length) and name known readers, no
    dataset twice; every ``eval.datasets`` entry names a known reader and a folder, none twice."""
    from reidkit.data.datasets import names as dataset_names
    from reidkit.errors import DatasetError

    def bad(key: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{where(key)}: '{key}' must be {expected}, got {_short(value)}")

    data = cfg.data
    known = ", ".join(dataset_names())
    if isinstance(data.dataset, str):
        if isinstance(data.root, list):
            raise bad("data.root", "one folder when data.dataset names one dataset", data.root)
        if isinstance(data.options, list):
            raise bad("data.options", "one mapping when data.dataset names one dataset", data.options)
    else:
        n = len(data.dataset)
        if n == 0:
            raise bad("data.dataset", "a dataset name or a non-empty list of names", data.dataset)
        if isinstance(data.root, list) and len(data.root) != n:
            raise bad("data.root", f"one folder, or a list of {n} (one per data.dataset entry)", data.root)
        if isinstance(data.options, list) and len(data.options) != n:
            raise bad("data.options", f"one mapping, or a list of {n} (one per data.dataset entry)", data.options)
    for key, sources in (("data.dataset", data.sources()), ("eval.datasets", cfg.eval.datasets)):
        several = key == "eval.datasets" or isinstance(data.dataset, list)
        for i, source in enumerate(sources):
            if key == "eval.datasets" and not (source.dataset and source.root):
                raise ConfigError(f"{where(key)}: '{key}' (entry {i + 1}) must name a dataset and its folder, "
                                  f"{{dataset: NAME, root: DIR, options: {{...}}}}, got {_short(_plain(source))}")
            try:
                source.key()
            except DatasetError:
                entry = f" (entry {i + 1})" if several else ""
                raise ConfigError(f"{where(key)}: '{key}'{entry}: unknown dataset {source.dataset!r}; expected one "
                                  f"of {known}") from None
        repeat = first_repeat(sources)
        if repeat is not None:
            i, j = repeat
            raise ConfigError(f"{where(key)}: '{key}' names {sources[j].key()[0]} in {sources[j].root} twice (entries "
                              f"{i + 1} and {j + 1}); expected each dataset once")


def config_from_dict(data: dict[str, Any], source: str = "<config>",
                     origin: dict[str, Path] | None = None, overridden: set[str] | None = None) -> RunConfig:
    """Build and validate a ``RunConfig`` from a plain mapping (as read from YAML)."""
    origin = origin or {}
    overridden = overridden or set()

    def where(dotted: str) -> str:
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            key = ".".join(parts[:n])
            if key in overridden:
                return f"--set {key}"
            if key in origin:
                return str(origin[key])
        return source

    cfg = _build(RunConfig, data, "", where)
    _check(cfg, where)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (with its ``_base_`` files) and apply ``KEY=VALUE`` overrides.

    ``path`` may also name a preset (``stadb_market1501``) when no file of that name exists; ``None`` starts
    from the defaults. Raises ``ConfigError`` (one line) on an unknown key, a wrong type or an invalid value.
    """
    if path is None:
        raw: dict[str, Any] = {}
        origin: dict[str, Path] = {}
        source = "<defaults>"
    else:
        if not Path(path).exists():
            preset = find_preset(str(path))
            if preset is None:
                raise ConfigError(f"{path}: config file not found, and no preset has that name (`reidkit presets` "
                                  "lists them)")
            path = preset
        raw, origin = _load_raw(Path(path))
        source = str(path)
    raw, touched = apply_overrides(raw, list(overrides or []))
    return config_from_dict(raw, source, origin, touched)


def resolve_effective(cfg: RunConfig) -> RunConfig:
    """Write into ``cfg`` (and return it) the values a run derives from it, so that what is printed and saved
    is what runs, and reading it back changes nothing:

    - ``data.size`` and ``augment.size``: the input size training uses (``data.size``, else the model's);
    - ``schedule``: the numbers its kind implies (``stadb``: the paper's warm-up and milestones);
    - ``model.options``: every option of the model, the unset ones at their defaults;
    - several training datasets: ``data.root`` and ``data.options`` as one entry per dataset, and an empty
      ``eval.datasets`` as the training datasets (the test sets such a run evaluates on).
    """
    from reidkit.models.registry import model_class, option_defaults

    if isinstance(cfg.data.dataset, list):
        sources = cfg.data.sources()
        cfg.data.root = [s.root for s in sources]
        cfg.data.options = [s.options for s in sources]
        if not cfg.eval.datasets:
            cfg.eval.datasets = [DatasetSource(s.dataset, s.root, dict(s.options)) for s in sources]

    size = list(cfg.data.size) if cfg.data.size is not None else list(model_class(cfg.model.name).input_size)
    cfg.data.size = [int(size[0]), int(size[1])]
    cfg.augment = dataclasses.replace(cfg.augment, size=(cfg.data.size[0], cfg.data.size[1]))
    if cfg.schedule.kind == "stadb":
        cfg.schedule = dataclasses.replace(resolve_schedule(cfg.schedule), kind="stadb")
    cfg.model.options = {**_plain(option_defaults(cfg.model.name)), **cfg.model.options}
    return cfg


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain YAML/JSON-safe data (tuples become lists)."""
    return _plain(cfg)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically); ``load_config`` reads it back unchanged."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    atomic_write_text(path, text)
