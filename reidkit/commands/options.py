"""The command-line options every embedding command shares (model, runtime, image and dataset sources), and the
objects they name. Every command that embeds images goes through ``embedder_from_args``, so all of them
get the same ``--engine`` choice, threads and progress bar."""

from __future__ import annotations

import argparse
import json
from typing import Any

from reidkit.commands.argtypes import batch_size, device_arg, path_arg, threads, workers
from reidkit.errors import ReidkitError
from reidkit.inference.engines import AUTO_ONNX_MIN_IMAGES, ENGINES
from reidkit.utils.limits import MAX_BATCH_IMAGES, THREADS_PER_CPU, max_threads


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--checkpoint`` / ``--onnx`` (one of them) and the runtime options (``add_runtime_arguments``)."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--checkpoint", type=path_arg, metavar="PATH",
                       help="model file: training checkpoint .pt, model.safetensors or a run folder")
    group.add_argument("--onnx", type=path_arg, metavar="PATH", help="ONNX model written by 'reidkit export'")
    add_runtime_arguments(parser)


def add_runtime_arguments(parser: argparse.ArgumentParser, flip: bool = True) -> None:
    """How a model embeds images: ``--device``, ``--batch-size``, ``--flip`` (unless ``flip`` is False: a
    command that takes it from elsewhere), ``--workers``, ``--engine``, ``--threads``, ``--no-progress``."""
    parser.add_argument("--device", default="auto", type=device_arg, help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--batch-size", type=batch_size(), default=64,
                        help=f"images per forward pass, 1..{MAX_BATCH_IMAGES} (default 64)")
    if flip:
        parser.add_argument("--flip", action="store_true", help="average with the mirrored image's features")
    parser.add_argument("--workers", type=workers(), default=4,
                        help=f"image decoding threads, 0..{max_threads()} here (default 4)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="auto (default: ONNX Runtime on CPU for a dataset or >= "
                             f"{AUTO_ONNX_MIN_IMAGES} images, exported once to the cache; else PyTorch), "
                             "torch, onnx, compile (torch.compile)")
    parser.add_argument("--threads", type=threads(), default=None,
                        help=f"CPU threads for PyTorch / ONNX Runtime, 1..{max_threads()} here ({THREADS_PER_CPU} per "
                             "CPU; default: the free physical cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_embedder(args: argparse.Namespace, model_file: str | None = None) -> Any:
    """The ``reidkit.inference.Embedder`` of ``--checkpoint``/``--onnx`` (or ``model_file``), before its engine
    is chosen (``embedder_from_args`` does both)."""
    from reidkit.inference import load

    if args.batch_size < 1:
        raise ReidkitError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    source = model_file or getattr(args, "onnx", None) or getattr(args, "checkpoint", None)
    if not source:
        raise ReidkitError("expected --checkpoint PATH or --onnx PATH")
    return load(source, device=args.device)


def embedder_from_args(args: argparse.Namespace, n_images: int | None = None, model_file: str | None = None) -> Any:
    """``load_embedder`` on the engine ``--engine`` chooses for ``n_images`` images (None: many)."""
    return load_embedder(args, model_file).use_engine(args.engine, n_images, args.threads)


def embedder_for_index(gallery: Any, index_dir: str, args: argparse.Namespace, n_images: int | None) -> Any:
    """The embedder of ``--checkpoint``/``--onnx`` if given, else of the index's own model file (never the path
    its manifest records: an index reads only its own files); refuses a model other than the one that built
    the index."""
    from reidkit.inference.gallery import index_model_file

    given = getattr(args, "onnx", None) or getattr(args, "checkpoint", None)
    source = given
    if not source:
        own = index_model_file(index_dir)
        if own is None:
            recorded = (gallery.model_meta or {}).get("source")
            raise ReidkitError(f"{index_dir}: the index holds no model file (model.safetensors or model.onnx); "
                               "pass --checkpoint PATH, the model that built it"
                               + (f" (recorded as {recorded})" if recorded else ""))
        source = str(own)
    emb = load_embedder(args, model_file=source)
    gallery.check_model(emb.meta, what=f"model {source}")
    return emb.use_engine(args.engine, n_images, args.threads)


def parse_reader_options(items: list[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` items as a dict (values read as JSON when they parse, else strings)."""
    opts: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ReidkitError(f"--option {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            opts[k.strip()] = json.loads(v)
        except ValueError:
            opts[k.strip()] = v
    return opts


class _OptionOfDataset(argparse.Action):
    """``--option KEY=VALUE``, appended to ``args.option`` and remembered with the number of ``--dataset`` given
    before it (``args.option_after``), so that with several datasets each option goes to the one it follows."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), values])
        given = getattr(namespace, "dataset", None)
        before = len(given) if isinstance(given, list) else int(given is not None)
        namespace.option_after = [*(getattr(namespace, "option_after", None) or []), before]


def add_dataset_source_arguments(parser: argparse.ArgumentParser, several: bool = False) -> None:
    """``--features FILE``, or ``--checkpoint/--onnx`` with ``--dataset NAME --root DIR`` (and ``--option``
    reader options), plus the runtime options. ``several``: ``--dataset`` and ``--root`` may be repeated
    (``dataset_sources_from_args`` pairs them)."""
    src = parser.add_argument_group("input (either --features, or --checkpoint/--onnx with --dataset and --root)")
    src.add_argument("--features", type=path_arg, metavar="FILE", help="dataset features file from 'reidkit extract --dataset'")
    src.add_argument("--checkpoint", type=path_arg, metavar="PATH", help="model file: checkpoint.pt, model.safetensors or a run folder")
    src.add_argument("--onnx", type=path_arg, metavar="PATH", help="ONNX model (with --dataset and --root)")
    if several:
        src.add_argument("--dataset", metavar="NAME", action="append",
                         help="dataset name (market1501, dukemtmcreid, msmt17, ...); repeat it to evaluate on "
                              "several test sets, one table")
        src.add_argument("--root", type=path_arg, metavar="DIR", action="append",
                         help="folder holding the dataset; one per --dataset, in the same order (or one for all)")
        src.add_argument("--option", action=_OptionOfDataset, default=[], metavar="KEY=VALUE",
                         help="dataset reader option, e.g. protocol=classic or split_id=3 (repeatable; with "
                              "several --dataset, for the --dataset it follows)")
    else:
        src.add_argument("--dataset", metavar="NAME", help="dataset name (market1501, dukemtmcreid, msmt17, ...)")
        src.add_argument("--root", type=path_arg, metavar="DIR", help="folder holding the dataset")
        src.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="dataset reader option, e.g. protocol=classic or split_id=3 (repeatable)")
    add_runtime_arguments(parser)


def dataset_sources_from_args(args: argparse.Namespace) -> list[Any]:
    """The datasets ``--dataset``/``--root``/``--option`` name, as ``reidkit.data.multi.DatasetSource``: the
    i-th ``--root`` goes with the i-th ``--dataset`` (one ``--root`` serves all), an ``--option`` with the
    ``--dataset`` before it (with one ``--dataset``, wherever it stands). Empty without ``--dataset``."""
    from reidkit.data.multi import DatasetSource

    names = args.dataset if isinstance(args.dataset, list) else [args.dataset] if args.dataset else []
    roots = args.root if isinstance(args.root, list) else [args.root] if args.root else []
    if not names:
        return []
    if len(roots) > 1 and len(roots) != len(names):
        raise ReidkitError(f"expected one --root per --dataset (or one for all), got {len(names)} --dataset and "
                           f"{len(roots)} --root")
    if not roots:
        raise ReidkitError(f"--dataset {names[0]}: expected --root DIR, the folder holding it")
    roots = roots * len(names) if len(roots) == 1 else roots
    after = getattr(args, "option_after", None) or [len(names)] * len(args.option)
    if len(names) == 1:
        return [DatasetSource(names[0], roots[0], parse_reader_options(args.option))]
    options: list[list[str]] = [[] for _ in names]
    for item, before in zip(args.option, after, strict=True):
        if before == 0:
            raise ReidkitError(f"--option {item}: with several --dataset, give each --option after the --dataset "
                               "it is for")
        options[before - 1].append(item)
    return [DatasetSource(n, r, parse_reader_options(o)) for n, r, o in zip(names, roots, options, strict=True)]


def dataset_features_from_args(args: argparse.Namespace, multi_query: str = "none") -> Any:
    """The ``reidkit.inference.DatasetFeatures`` named by ``add_dataset_source_arguments`` (one dataset)."""
    from reidkit.inference import embed_dataset, read_dataset_features

    model = args.checkpoint or args.onnx
    if args.features:
        if model or args.dataset:
            raise ReidkitError("give either --features FILE or --checkpoint PATH --dataset NAME --root DIR")
        if multi_query != "none":
            raise ReidkitError("--multi-query needs --checkpoint and --dataset (features files hold single queries)")
        return read_dataset_features(args.features)
    if not (model and args.dataset and args.root):
        raise ReidkitError("expected either --features FILE, or --checkpoint PATH (or --onnx) with --dataset NAME "
                           "--root DIR")
    if args.checkpoint and args.onnx:
        raise ReidkitError("give --checkpoint or --onnx, not both")
    (source,) = dataset_sources_from_args(args)
    ds = source.load()
    emb = embedder_from_args(args, len(ds.query) + len(ds.gallery))
    return embed_dataset(emb, ds, args.batch_size, args.flip, args.workers, not args.no_progress, multi_query)
