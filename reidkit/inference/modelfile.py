"""Model files read as untrusted input: the description stored with the weights is checked before anything
is allocated.

A ``model.safetensors``, a ``checkpoint.pt``, an ONNX file, a features file and an index manifest all carry a
model description (``reidkit.models.io.model_meta``: name, number of classes, options, input size,
embedding size, weights digest). ``check_model_meta`` checks its types and its sizes against
``reidkit.utils.limits``; ``load_model_file`` then builds the network it describes on the ``meta`` device
(no memory), refuses one of more than ``MAX_PARAMETERS`` parameters, compares every stored tensor's name,
shape and kind (floating or integer) with the network's, and only then loads the weights
(``reidkit.models.io.load_model``), refusing NaN or infinite values. Every refusal is a one-line
``CheckpointError`` naming the file. The file itself is read by ``reidkit.models.io`` only
(``read_model_header``, ``load_model``): this module checks, it does not read.

Examples:
    >>> model = load_model_file("runs/stadb/model.safetensors")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

import torch

from reidkit.errors import CheckpointError, ReidkitError
from reidkit.models.io import (  # noqa: F401 - META_KEY, RUN_FOLDER_FILES and parse_meta_json: also read from here
    META_KEY,
    RUN_FOLDER_FILES,
    load_model,
    parse_meta_json,
    read_model_header,
    resolve_model_file,
    strip_prefixes,
)
from reidkit.utils.limits import MAX_EMBEDDING_DIM, MAX_PARAMETERS, input_size_problem

_SCALARS = (str, int, float, bool, type(None))


def _is_json_value(v: Any, depth: int = 0) -> bool:
    if isinstance(v, _SCALARS):
        return True
    if depth > 8:
        return False
    if isinstance(v, (list, tuple)):
        return all(_is_json_value(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _is_json_value(x, depth + 1) for k, x in v.items())
    return False


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (plain data) has the type an ``Options`` field is annotated with (unknown kinds of
    annotation accept anything)."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _int(value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def model_options_problem(name: str, options: dict[str, Any]) -> str | None:
    """Why ``options`` are not keyword options of model ``name`` (an unknown name, a value of the wrong type
    for its ``Options`` field), or None."""
    import dataclasses
    import typing

    from reidkit.models.registry import model_class

    cls = model_class(name).Options
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key, value in options.items():
        if key not in fields:
            return f"model {name!r} has no option {key!r}"
        if not _fits(value, hints.get(key, Any)):
            return f"option {key} of model {name!r} must be {hints[key]}, got {str(value)[:40]!r}"
    return None


def check_model_meta(meta: Any, source: str | os.PathLike[str], *, registered: bool = True) -> dict[str, Any]:
    """``meta``, checked as a model description read from ``source``: a mapping whose ``model`` is a name
    (one of ``reidkit.models.names()`` when ``registered``, as the weights of a reidkit network must be),
    ``num_classes`` an integer >= 1 (required when ``registered``), ``options`` a mapping of plain values,
    ``input_size`` ``[H, W]`` within the bounds, ``embedding_dim`` an integer in [0, ``MAX_EMBEDDING_DIM``],
    ``weights_digest``, ``version`` and ``source`` strings, ``flip`` a boolean, ``quantization`` (an INT8 ONNX
    file's, ``reidkit.inference.quantize``) a mapping of plain values. Anything else is a one-line
    ``CheckpointError``."""
    where = str(source)

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{where}: damaged model description ({what})"[:400])

    if not isinstance(meta, dict):
        raise bad(f"expected a mapping, got {type(meta).__name__}")
    name = meta.get("model")
    if not isinstance(name, str) or not name or len(name) > 200:
        raise bad(f"'model' must be a model name, got {str(name)[:40]!r}")
    if registered:
        from reidkit.models.registry import names

        if name not in names():
            raise CheckpointError(f"{where}: unknown model {name[:40]!r} in its metadata; expected one of "
                                  f"{', '.join(names())}")
    classes = meta.get("num_classes")
    if (registered or classes is not None) and not (_int(classes) and classes >= 1):
        raise bad(f"'num_classes' must be an integer >= 1, got {str(classes)[:40]}")
    options = meta.get("options")
    if options is not None and not (isinstance(options, dict) and _is_json_value(options)):
        raise bad("'options' must be a mapping of names to plain values")
    if registered and options:
        problem = model_options_problem(name, options)
        if problem:
            raise bad(problem)
    if "input_size" in meta or registered:
        problem = input_size_problem(meta.get("input_size"))
        if problem:
            raise bad(f"'input_size': {problem}")
    dim = meta.get("embedding_dim", 0)
    if not (_int(dim) and 0 <= dim <= MAX_EMBEDDING_DIM):
        raise bad(f"'embedding_dim' must be an integer between 0 and {MAX_EMBEDDING_DIM}, got {str(dim)[:40]}")
    for key in ("weights_digest", "version", "source"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise bad(f"'{key}' must be a string")
    if "flip" in meta and not isinstance(meta["flip"], bool):
        raise bad("'flip' must be true or false")
    quant = meta.get("quantization")
    if quant is not None and not (isinstance(quant, dict) and _is_json_value(quant)):
        raise bad("'quantization' must be a mapping of names to plain values")
    return meta


def build_within_bounds(name: str, num_classes: int, options: dict[str, Any], source: str,
                        error: type[ReidkitError] = CheckpointError) -> torch.nn.Module:
    """Network ``name`` built on the ``meta`` device (shapes only, no memory: the options' own checks run);
    a one-line ``error`` naming ``source`` (a file, or the config's ``model.options``) when the options do not
    build or the network holds more than ``MAX_PARAMETERS`` parameters."""
    from reidkit.models.registry import build

    try:
        with torch.device("meta"):
            net = build(name, num_classes, **{**options, "pretrained": None})
    except (ReidkitError, TypeError, ValueError, ArithmeticError, RuntimeError, IndexError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise error(f"{source}: cannot build model {name!r} with these options ({first})") from None
    count = sum(t.numel() for t in net.state_dict().values())
    if count > MAX_PARAMETERS:
        raise error(f"{source}: a {name!r} network of {count:,} parameters, more than the {MAX_PARAMETERS:,} "
                    f"reidkit builds (num_classes {num_classes}, options {str(options)[:80]})")
    return net


def load_model_file(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> torch.nn.Module:
    """An eval-mode model from a weights file, a training checkpoint or a run folder, checked as the module
    docstring says before ``reidkit.models.io.load_model`` reads the weights.

    Examples:
        >>> load_model_file("runs/stadb")  # doctest: +SKIP
    """
    p = resolve_model_file(path)
    stored, raw = read_model_header(p)
    meta = check_model_meta(raw, p)
    net = build_within_bounds(meta["model"], meta["num_classes"], dict(meta.get("options") or {}), str(p))
    expected = {k: (tuple(v.shape), v.is_floating_point()) for k, v in net.state_dict().items()}
    found = {strip_prefixes(k): v for k, v in stored.items()}
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise CheckpointError(f"{p}: weights do not match model {meta['model']!r} ({what}; "
                              f"{len(missing)} missing, {len(extra)} unexpected)")
    for k, (shape, floating) in expected.items():
        if found[k][0] != shape:
            raise CheckpointError(f"{p}: weights do not match model {meta['model']!r}: {k} has shape "
                                  f"{list(found[k][0])}, the model {list(shape)}")
        if found[k][1] != floating:
            kind = "floating-point" if floating else "integer"
            raise CheckpointError(f"{p}: {k} holds {'integer' if floating else 'floating-point'} values; the "
                                  f"model's are {kind} (damaged or converted weights)")
    model = load_model(p, device)
    for k, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{p}: {k} holds NaN or infinite values; expected finite weights")
    check_norm_statistics(model, p)
    return model


def check_norm_statistics(model: torch.nn.Module, source: str | os.PathLike[str]) -> None:
    """``CheckpointError`` naming ``source`` when a BatchNorm (or instance norm) layer's running variance is
    negative or its running statistics are not finite: finite weights that would make every output NaN."""
    from torch.nn.modules.batchnorm import _NormBase

    for name, module in model.named_modules():
        if not isinstance(module, _NormBase) or not module.track_running_stats:
            continue
        mean, var = module.running_mean, module.running_var
        if mean is None or var is None:
            continue
        if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(var).all())):
            raise CheckpointError(f"{source}: {name}.running_mean/running_var hold NaN or infinite values; "
                                  "expected finite BatchNorm statistics")
        if bool((var < 0).any()):
            raise CheckpointError(f"{source}: {name}.running_var holds negative values (min "
                                  f"{float(var.min()):.3g}); expected BatchNorm variances >= 0")
