"""Crafted or damaged metadata in every file type reidkit reads: weights (safetensors), training checkpoints,
ONNX files, features files and index manifests.

Each outcome is a success or one ``reidkit: error:`` line (a ``ReidkitError``): never a traceback, and never
an allocation past the stated bounds (``reidkit.utils.limits``): the network ``load_model`` really builds is
guarded here to hold at most ``MAX_PARAMETERS`` parameters, and a model that loads has an input size within
``[MIN_INPUT_SIDE, MAX_INPUT_SIDE]``. The issue's cases come first (wrong JSON types, a negative dimension,
``num_classes`` 1e12, an input size of 60000×30000, in weights and ONNX metadata, features and manifest
metadata of the wrong type); hypothesis then mutates valid metadata at random.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reidkit.errors import ReidkitError
from reidkit.utils.limits import MAX_INPUT_SIDE, MAX_PARAMETERS, MIN_INPUT_SIDE

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip()
    assert msg and "\n" not in msg and len(msg) < 600, repr(msg[:600])
    return msg


def ok_or_one_line(fn: Callable[[], Any]) -> Any:
    """``fn()``'s result, or None after a one-line ReidkitError; any other exception fails the test."""
    try:
        out = fn()
    except ReidkitError as exc:
        _one_line(exc)
        _event("refused with one line")
        return None
    _event("accepted")
    return out


def _event(what: str) -> None:
    """Count outcomes in hypothesis' statistics (``--hypothesis-show-statistics``); a no-op outside a test."""
    import contextlib

    from hypothesis import event
    from hypothesis.errors import InvalidArgument

    with contextlib.suppress(InvalidArgument):  # not inside @given
        event(what)


@pytest.fixture(autouse=True)
def allocation_guard(monkeypatch):
    """The real build inside ``load_model`` may only ever make a network within MAX_PARAMETERS."""
    import reidkit.models.io as io

    real = io.build

    def guarded(name, num_classes, **options):
        with torch.device("meta"):
            shape_only = real(name, num_classes, **options)
        n = sum(t.numel() for t in shape_only.state_dict().values())
        assert n <= MAX_PARAMETERS, f"load_model was about to allocate {n:,} parameters"
        return real(name, num_classes, **options)

    monkeypatch.setattr(io, "build", guarded)


def _check_loaded(emb: Any) -> None:
    if emb is not None:
        h, w = emb.input_size
        assert MIN_INPUT_SIDE <= h <= MAX_INPUT_SIDE and MIN_INPUT_SIDE <= w <= MAX_INPUT_SIDE


# --------------------------------------------------------------------------------------------- weights


class Weights:
    """A valid model.safetensors split into its header and data, to write copies with other metadata."""

    def __init__(self, path: Path) -> None:
        raw = path.read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        self.header = json.loads(raw[8:8 + n])
        self.data = raw[8 + n:]
        self.meta = json.loads(self.header["__metadata__"]["reidkit"])

    def write(self, path: Path, metadata: dict[str, str] | None) -> Path:
        header = dict(self.header)
        if metadata is None:
            header.pop("__metadata__", None)
        else:
            header["__metadata__"] = metadata
        blob = json.dumps(header).encode()
        with open(path, "wb") as fh:
            fh.write(struct.pack("<Q", len(blob)) + blob)
            fh.write(self.data)
        return path

    def write_meta(self, path: Path, meta: Any) -> Path:
        return self.write(path, {"reidkit": json.dumps(meta)})


@pytest.fixture(scope="module")
def weights(rel_weights) -> Weights:
    return Weights(rel_weights)


def _with(meta: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(meta))
    for key, value in changes.items():
        node = out
        parts = key.split("__")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return out


ISSUE_CASES = {
    "num_classes 1e12": {"num_classes": 10**12},
    "num_classes as float 1e12": {"num_classes": 1e12},
    "num_classes as text": {"num_classes": "4"},
    "negative num_classes": {"num_classes": -4},
    "input size 60000x30000": {"input_size": [60000, 30000]},
    "negative input size": {"input_size": [-64, 32]},
    "input size as text": {"input_size": "64x32"},
    "input size of one number": {"input_size": [64]},
    "negative embedding_dim": {"embedding_dim": -1},
    "embedding_dim as list": {"embedding_dim": [512]},
    "options as list": {"options": ["resnet18"]},
    "options as text": {"options": "backbone=resnet18"},
    "unknown option": {"options__depth": 10**9},
    "wrong option type": {"options__backbone": 18},
    "huge option": {"options__bnneck": [1] * 10},
    "model as number": {"model": 7},
    "unknown model": {"model": "resnet9000"},
    "weights_digest as number": {"weights_digest": 12},
}


@pytest.mark.parametrize("case", sorted(ISSUE_CASES))
def test_crafted_weight_metadata_is_one_line(case, weights, tmp_path, cli_inproc):
    """The issue's cases, in a model.safetensors: reidkit.load and every command that reads a model refuse
    with one line, before building anything (they used to give tracebacks or try to allocate petabytes)."""
    import reidkit

    path = weights.write_meta(tmp_path / "model.safetensors", _with(weights.meta, **ISSUE_CASES[case]))
    with pytest.raises(ReidkitError) as info:
        reidkit.load(path, device="cpu")
    assert str(path) in _one_line(info.value)
    res = cli_inproc(["export", "--checkpoint", str(path), "--out", str(tmp_path / "m.onnx")])
    assert res.returncode == 2 and len(res.error_lines()) == 1, res.stderr
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("text", ["not json", "[1, 2", "[" * 50_000 + "]" * 50_000, '"a string"', "null", "1e999"])
def test_weight_metadata_that_is_not_a_description(text, weights, tmp_path):
    import reidkit

    path = weights.write(tmp_path / "model.safetensors", {"reidkit": text})
    with pytest.raises(ReidkitError) as info:
        reidkit.load(path, device="cpu")
    _one_line(info.value)


def test_non_float_or_nan_weights_are_refused(rel_weights, tmp_path):
    """Weights stored as integers, or holding NaN, are refused instead of being cast and used."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    import reidkit

    with safe_open(str(rel_weights), framework="pt") as fh:
        meta = fh.metadata()
        state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    name = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 4)
    as_int = dict(state, **{name: state[name].round().to(torch.int32)})
    save_file(as_int, str(tmp_path / "int.safetensors"), metadata=meta)
    nan = dict(state, **{name: state[name].clone().index_fill_(0, torch.tensor([0]), float("nan"))})
    save_file(nan, str(tmp_path / "nan.safetensors"), metadata=meta)
    for label, what in (("int", "integer"), ("nan", "NaN")):
        with pytest.raises(ReidkitError) as info:
            reidkit.load(tmp_path / f"{label}.safetensors", device="cpu")
        assert what in _one_line(info.value) and name in str(info.value)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                      st.text(max_size=8), st.sampled_from([10**12, -1, 0, 1, 8, 1024, 1025, 60000, 1e12, "resnet18",
                                                            "stadb", "baseline", [64, 32], [60000, 30000]]))
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c,
                                                                                          max_size=4), max_leaves=8)
META_KEYS = ["model", "num_classes", "options", "input_size", "embedding_dim", "version", "weights_digest",
             "options__backbone", "options__last_stride", "options__bnneck", "options__embed", "nosuch"]


@st.composite
def mutated_meta(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_value)  # not a mapping at all, or any mapping
    meta = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(META_KEYS))
        if draw(st.booleans()) and "__" not in key:
            meta.pop(key, None)
        else:
            meta = _with(meta, **{key: draw(json_value)})
    return meta


@FUZZ
@given(data=st.data())
def test_fuzzed_weight_metadata(data, weights):
    """Random mutations of a valid model.safetensors description: reidkit.load loads it (within bounds) or
    refuses with one line."""
    import reidkit

    meta = data.draw(mutated_meta(weights.meta))
    with tempfile.TemporaryDirectory() as d:
        path = weights.write_meta(Path(d) / "model.safetensors", meta)
        _check_loaded(ok_or_one_line(lambda: reidkit.load(path, device="cpu")))


# --------------------------------------------------------------------------------------------- checkpoints


@FUZZ
@given(data=st.data())
def test_fuzzed_checkpoint_metadata(data, weights):
    """A training checkpoint whose model_meta (and the model state around it) is mutated: load or one line."""
    import reidkit

    meta = data.draw(mutated_meta(weights.meta))
    state = data.draw(st.sampled_from([{"w": torch.zeros(3)}, {}, {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}]))
    obj = {"model": data.draw(st.sampled_from([state, [1, 2], None, "model"])), "model_meta": meta,
           "epoch": data.draw(st.sampled_from([1, "1", None, -5, 2**70])), "step": 0}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "checkpoint.pt"
        torch.save(obj, path)
        _check_loaded(ok_or_one_line(lambda: reidkit.load(path, device="cpu")))


# --------------------------------------------------------------------------------------------- ONNX


def _onnx_file(path: Path, meta: Any, dims: tuple[int, int] = (64, 32), raw_meta: str | None = None) -> Path:
    """A tiny ONNX graph (images N×3×H×W → their per-channel means N×3) with ``meta`` as its reidkit
    metadata (None: none, a foreign file whose input size comes from its static input shape)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, dims[0], dims[1]])
    y = helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
                               helper.make_node("Flatten", ["pooled"], ["embeddings"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if meta is not None or raw_meta is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "reidkit", raw_meta if raw_meta is not None else json.dumps(meta)
    onnx.save(model, str(path))
    return path


ONNX_META = {"model": "baseline", "num_classes": 4, "options": {}, "input_size": [64, 32], "embedding_dim": 3,
             "version": "0.1.0", "weights_digest": "0123456789abcdef"}


@pytest.mark.parametrize("case", ["input size 60000x30000", "negative embedding_dim", "input size as text",
                                  "num_classes as text", "options as list", "not json", "foreign 60000x30000",
                                  "foreign 1x1"])
def test_crafted_onnx_metadata_is_one_line(case, tmp_path, cli_inproc, synth_root):
    import reidkit

    p = tmp_path / "m.onnx"
    if case == "not json":
        _onnx_file(p, None, raw_meta="{not json")
    elif case.startswith("foreign"):
        _onnx_file(p, None, dims=(60000, 30000) if "60000" in case else (1, 1))
    else:
        _onnx_file(p, _with(ONNX_META, **ISSUE_CASES[case]))
    with pytest.raises(ReidkitError) as info:
        reidkit.load(p, device="cpu")
    assert str(p) in _one_line(info.value)
    res = cli_inproc(["extract", "--onnx", str(p), "--images", str(synth_root / "query"), "--out",
                      str(tmp_path / "f.safetensors"), "--device", "cpu", "--no-progress"])
    assert res.returncode == 2 and len(res.error_lines()) == 1, res.stderr


def test_a_valid_tiny_onnx_file_embeds(tmp_path, synth_root):
    """The positive control of the ONNX cases: the same tiny graph with sane metadata loads and embeds."""
    import reidkit

    emb = reidkit.load(_onnx_file(tmp_path / "m.onnx", ONNX_META), device="cpu")
    feats = emb.embed(sorted(str(p) for p in (synth_root / "query").glob("*.jpg"))[:2])
    assert feats.shape == (2, 3) and torch.isfinite(feats).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_onnx_metadata(data):
    import reidkit

    meta = data.draw(st.one_of(mutated_meta(ONNX_META), st.none()))
    dims = data.draw(st.sampled_from([(64, 32), (60000, 30000), (1, 1), (8, 1024), (0, 5)]))
    with tempfile.TemporaryDirectory() as d:
        p = _onnx_file(Path(d) / "m.onnx", meta, dims=dims)
        _check_loaded(ok_or_one_line(lambda: reidkit.load(p, device="cpu")))


# --------------------------------------------------------------------------------------------- features


def _features_file(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    return path


FOLDER_CASES = {
    "paths is a number": ({}, {"paths": 3}),
    "paths too short": ({}, {"paths": ["a.jpg"]}),
    "paths of numbers": ({}, {"paths": [1, 2, 3]}),
    "model meta is a list": ({}, {"reidkit": [1, 2]}),
    "model meta input size 60000": ({}, {"reidkit": _with(ONNX_META, input_size=[60000, 30000])}),
    "integer features": ({"feats": torch.ones(3, 4, dtype=torch.int64)}, {}),
    "NaN features": ({"feats": torch.full((3, 4), float("nan"))}, {}),
    "pids of another length": ({"pids": torch.zeros(5, dtype=torch.int64)}, {}),
    "float pids": ({"pids": torch.zeros(3)}, {}),
    "one-dimensional features": ({"feats": torch.ones(12)}, {}),
}


@pytest.mark.parametrize("case", sorted(FOLDER_CASES))
def test_crafted_folder_features_are_one_line(case, tmp_path):
    from reidkit.inference.features import read_folder_features

    over, meta = FOLDER_CASES[case]
    tensors = {"feats": torch.ones(3, 4), "pids": torch.zeros(3, dtype=torch.int64),
               "camids": torch.zeros(3, dtype=torch.int64), **over}
    p = _features_file(tmp_path / "f.safetensors", tensors, {"paths": ["a", "b", "c"], **meta})
    with pytest.raises(ReidkitError) as info:
        read_folder_features(p)
    assert str(p) in _one_line(info.value)


@pytest.mark.parametrize("case", ["query_paths is a mapping", "gallery_paths too long", "model meta is text",
                                  "integer query features"])
def test_crafted_dataset_features_are_one_line(case, tmp_path, cli_inproc):
    """Dataset features with metadata of the wrong type: eval, report and visualize ranklist all refuse
    with one line (report and ranklist used to take integer features eval refused)."""
    from reidkit.inference.features import read_dataset_features

    tensors = {"query_feats": torch.randn(2, 4), "query_pids": torch.tensor([0, 1]), "query_camids": torch.zeros(2, dtype=torch.long),
               "gallery_feats": torch.randn(3, 4), "gallery_pids": torch.tensor([0, 1, 2]),
               "gallery_camids": torch.ones(3, dtype=torch.long)}
    meta: dict[str, Any] = {"query_paths": ["q0.jpg", "q1.jpg"], "gallery_paths": ["g0.jpg", "g1.jpg", "g2.jpg"]}
    if case == "query_paths is a mapping":
        meta["query_paths"] = {"a": 1}
    elif case == "gallery_paths too long":
        meta["gallery_paths"] = ["g.jpg"] * 4
    elif case == "model meta is text":
        meta["reidkit"] = "stadb"
    else:
        tensors["query_feats"] = torch.ones(2, 4, dtype=torch.int32)
    p = _features_file(tmp_path / "d.safetensors", tensors, meta)
    with pytest.raises(ReidkitError) as info:
        read_dataset_features(p)
    assert str(p) in _one_line(info.value)
    for argv in (["eval", "--features", str(p)], ["report", "--features", str(p), "--out", str(tmp_path / "r.html")],
                 ["visualize", "ranklist", "--features", str(p), "--out", str(tmp_path / "viz")]):
        res = cli_inproc(argv)
        assert res.returncode == 2 and len(res.error_lines()) == 1, (argv, res.stderr)


tensor_strategy = st.one_of(
    st.tuples(st.sampled_from([torch.float32, torch.float16, torch.float64, torch.int64, torch.int32, torch.uint8,
                               torch.bool]),
              st.lists(st.integers(0, 5), min_size=0, max_size=3),
              st.sampled_from([0.0, 1.0, float("nan"), float("inf")])).map(
        lambda t: torch.full(tuple(t[1]), t[2] if t[0].is_floating_point else 1, dtype=t[0])),
)


@FUZZ
@given(tensors=st.dictionaries(st.sampled_from(["feats", "pids", "camids", "query_feats", "query_pids",
                                                "query_camids", "gallery_feats", "gallery_pids", "gallery_camids"]),
                               tensor_strategy, max_size=9),
       meta=st.dictionaries(st.sampled_from(["paths", "query_paths", "gallery_paths", "reidkit", "dataset"]),
                            json_value, max_size=4))
def test_fuzzed_features_files(tensors, meta):
    """Random tensors (any dtype, shape, NaN) and metadata in a features file: both readers read it (finite
    float features, integer labels, paths and model description of the right types) or refuse it with one
    line."""
    from reidkit.inference.features import read_dataset_features, read_folder_features

    with tempfile.TemporaryDirectory() as d:
        p = _features_file(Path(d) / "f.safetensors", tensors, meta)
        for reader in (read_folder_features, read_dataset_features):
            got = ok_or_one_line(lambda reader=reader: reader(p))
            if got is None:
                continue
            feats = [got.feats] if hasattr(got, "feats") else [got.query_feats, got.gallery_feats]
            assert all(f.dtype == torch.float32 and torch.isfinite(f).all() for f in feats)


# --------------------------------------------------------------------------------------------- manifests

MANIFEST_CASES = {
    "ids is a mapping": {"ids": {"a": 1}},
    "ids hold lists": {"ids": [[1], [2], [3], [4], [5], [6]]},
    "metadata of numbers": {"metadata": [1, 2, 3, 4, 5, 6]},
    "count as text": {"count": "6"},
    "embedding_dim negative": {"embedding_dim": -512},
    "metric unknown": {"metric": "manhattan"},
    "model input size 60000": {"model__input_size": [60000, 30000]},
    "model as a list": {"model": [1, 2]},
    "newer format": {"format_version": 99},
    "pid as text": {"metadata": [{"path": "a.jpg", "pid": "seven", "camid": []}] * 6},
    "index kind unknown": {"index": {"kind": "annoy", "file": None}},
    "index file outside the folder": {"index__file": "../faiss-0123456789ab.index"},
    "index nlist 10^12": {"index": {"kind": "ivfpq", "nlist": 10**12, "file": None}},
    "index built as text": {"index": {"kind": "ivfpq", "file": None, "built": "all of it"}},
    "segment outside the folder": {"segments": [{"file": "../embeddings-0123456789ab.safetensors", "rows": 6}]},
    "segment rows as text": {"segments": [{"file": "embeddings-0123456789ab.safetensors", "rows": "6"}]},
    "segments miscounted": {"segments": [{"file": "embeddings-0123456789ab.safetensors", "rows": 5}]},
    "segment named twice": {"segments": [{"file": "embeddings-0123456789ab.safetensors", "rows": 3}] * 2},
    "generation a path": {"generation": "../x"},
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_crafted_manifest_is_one_line_or_harmless(case, rel_index, rel_weights, synth_root, tmp_path, cli_inproc):
    """Manifest fields of the wrong type: Gallery.load and 'reidkit search' refuse with one line, or (pids
    that are not integers: labels) search runs and reports them as unknown (-1)."""
    from reidkit.inference.gallery import Gallery

    idx = tmp_path / "index"
    shutil.copytree(rel_index, idx)
    m = _with(json.loads((idx / "manifest.json").read_text()), **MANIFEST_CASES[case])
    (idx / "manifest.json").write_text(json.dumps(m))
    loaded = ok_or_one_line(lambda: Gallery.load(idx))
    q = str(sorted((synth_root / "query").glob("*.jpg"))[0])
    res = cli_inproc(["search", str(idx), "--query", q, "--checkpoint", str(rel_weights), "--device", "cpu",
                      "--picture", str(tmp_path / "p.png"), "--gallery-root", str(synth_root)])
    if loaded is None:
        assert res.returncode == 2 and len(res.error_lines()) == 1, res.stderr
    else:
        assert case == "pid as text" and res.returncode == 0, res.stderr
        assert {m["pid"] for m in json.loads(res.stdout)["results"][0]["matches"]} == {-1}


@FUZZ
@given(data=st.data())
def test_fuzzed_manifests(data, rel_index):
    """Random mutations of a valid manifest: Gallery.load gives a searchable gallery or one line."""
    from reidkit.inference.gallery import Gallery

    base = json.loads((rel_index / "manifest.json").read_text())
    m = json.loads(json.dumps(base))
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(["ids", "metadata", "count", "embedding_dim", "metric", "model",
                                         "format_version", "segments", "generation", "format", "model__input_size",
                                         "model__embedding_dim", "model__options", "index", "index__kind",
                                         "index__file", "index__nlist", "index__built"]))
        m = _with(m, **{key: data.draw(json_value)})
    with tempfile.TemporaryDirectory() as d:
        idx = Path(d) / "index"
        shutil.copytree(rel_index, idx)
        (idx / "manifest.json").write_text(json.dumps(m))
        g = ok_or_one_line(lambda: Gallery.load(idx))
        if g is not None and len(g):
            ok_or_one_line(lambda: g.search(torch.zeros(g.embedding_dim), k=2))
