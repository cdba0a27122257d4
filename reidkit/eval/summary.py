"""Evaluation results as reidkit writes them into files: percent, with the settings that produced them.

``reidkit.eval.evaluate`` returns fractions in [0, 1] (the library's unit, as torchreid's). Every metrics
file and JSON output of reidkit (``reidkit eval --json``/``--out``, a training run's ``final_metrics.json``
and ``history.json``, the demo's ``metrics.json``) holds **percent**, as the papers and the printed
tables do, and records beside the numbers ``"units": "percent"`` and the evaluation settings
(``evaluation_settings``), so two files are only compared when they were measured the same way.
"""

from __future__ import annotations

from typing import Any

UNITS = "percent"
RANKS = (1, 5, 10)


def to_percent(res: dict[str, Any]) -> dict[str, Any]:
    """``reidkit.eval.evaluate``'s result in percent: ``mAP``, ``mINP``, ``rank1``/``rank5``/``rank10`` and
    the ``cmc`` curve, with the query counts (``num_valid_queries``, ``num_queries``) when present."""
    cmc = [100.0 * float(v) for v in res.get("cmc", [])]
    out: dict[str, Any] = {"mAP": 100.0 * float(res["mAP"])}
    if "mINP" in res:
        out["mINP"] = 100.0 * float(res["mINP"])
    for r in RANKS:
        if len(cmc) >= r:
            out[f"rank{r}"] = cmc[r - 1]
    out["cmc"] = cmc
    for key in ("num_valid_queries", "num_queries"):
        if key in res:
            out[key] = int(res[key])
    return out


def evaluation_settings(
    *,
    metric: str = "euclidean",
    flip: bool | None = False,
    rerank: bool = False,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    ap: str = "noninterp",
    max_rank: int = 50,
    multi_query: str | None = "none",
) -> dict[str, Any]:
    """The settings a result was measured with, as recorded beside it (defaults: ``reidkit.eval.evaluate``'s).

    ``multi_query`` is ``"none"`` for single-query evaluation, else the pooling (``"mean"``/``"max"``);
    ``flip`` or ``multi_query`` None means unknown (features read from a file that does not say). The
    re-ranking parameters are recorded only when ``rerank`` is on.
    """
    out: dict[str, Any] = {
        "protocol": None if multi_query is None else "single-query" if multi_query == "none" else "multi-query",
        "multi_query": multi_query,
        "metric": metric,
        "flip": flip,
        "rerank": bool(rerank),
        "ap": ap,
        "max_rank": int(max_rank),
    }
    if rerank:
        out["rerank_params"] = {"k1": int(k1), "k2": int(k2), "lambda": float(lambda_value)}
    return out


def metrics_record(res: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """One result as a metrics file holds it: the numbers in percent, ``"units"`` and ``"settings"``."""
    return {**to_percent(res), "units": UNITS, "settings": settings}


def describe_settings(settings: dict[str, Any]) -> str:
    """``evaluation_settings`` on one line, for a page or a table (e.g. the HTML report)."""
    flip = {True: "on", False: "off", None: "unknown"}.get(settings.get("flip"), "unknown")
    rerank = "off"
    if settings.get("rerank"):
        p = settings.get("rerank_params", {})
        rerank = f"k1={p.get('k1')} k2={p.get('k2')} lambda={p.get('lambda')}"
    return (f"{settings.get('protocol') or 'unknown protocol'}, {settings.get('metric')} distance, flip {flip}, "
            f"re-ranking {rerank}, AP {settings.get('ap')}, CMC to rank {settings.get('max_rank')}")
