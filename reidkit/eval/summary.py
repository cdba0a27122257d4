"""Evaluation results as reidkit writes them into files: percent, with the settings that produced them.

``reidkit.eval.evaluate`` returns fractions in [0, 1] (the library's unit, as torchreid's). Every metrics
file and JSON output of reidkit (``reidkit eval --json``/``--out``, a training run's ``final_metrics.json``
and ``history.json``, the demo's ``metrics.json``) holds **percent**, as the papers and the printed
tables do, and records beside the numbers ``"units": "percent"`` and the evaluation settings
(``evaluation_settings``), so two files are only compared when they were measured the same way.

Several test sets (a training run's ``eval.datasets``, ``reidkit eval`` with several ``--dataset``) give one
record (``record_of_test_sets``), printed as one table (``results_table``, the same table ``reidkit eval`` prints
for one) and saved as ``test_sets.json`` and ``test_sets.md`` (``save_test_set_results``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
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


TEST_SETS_JSON = "test_sets.json"
TEST_SETS_MD = "test_sets.md"
_COLUMNS = ("mAP", "R1", "R5", "R10", "mINP")


def _row_values(r: Mapping[str, Any]) -> list[float]:
    """mAP, rank-1/5/10 and mINP of a percent record (``to_percent``); a rank past the CMC's end reads its last
    entry."""
    cmc = r["cmc"]

    def at(k: int) -> float:
        return float(cmc[min(k, len(cmc)) - 1])

    return [float(r["mAP"]), at(1), at(5), at(10), float(r.get("mINP", float("nan")))]


def results_table(rows: Mapping[str, Mapping[str, Any]], title: str = "", markdown: bool = False) -> str:
    """Results as a table, one row per name (a test set, or ``plain``/``rerank``): mAP, R1, R5, R10, mINP in
    percent with two decimals, and the valid queries out of all; ``title`` heads the first column;
    ``markdown`` writes a Markdown table instead of aligned text. ``rows`` hold percent records
    (``to_percent``)."""
    def valid(r: Mapping[str, Any]) -> str:
        return f"{r['num_valid_queries']}/{r['num_queries']}" if "num_queries" in r else ""

    if markdown:
        lines = [f"| {title} | {' | '.join(_COLUMNS)} | valid queries |",
                 "|---|" + "---:|" * len(_COLUMNS) + "---:|"]
        lines += [f"| {name} | {' | '.join(f'{v:.2f}' for v in _row_values(r))} | {valid(r)} |"
                  for name, r in rows.items()]
        return "\n".join(lines)
    width = max([10, len(title), *(len(name) for name in rows)])
    lines = [f"{title:<{width}} " + " ".join(f"{c:>6}" for c in _COLUMNS) + "  valid queries"]
    lines += [f"{name:<{width}} " + " ".join(f"{v:6.2f}" for v in _row_values(r)) + f"  {valid(r)}"
              for name, r in rows.items()]
    return "\n".join(lines)


def record_of_test_sets(rows: Sequence[Mapping[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Several test sets' results as a file holds them: ``"units"``, ``"settings"`` (``evaluation_settings``)
    and ``"test_sets"``, one entry per test set in order, each a ``to_percent`` record with its ``name`` (the
    table's row label), ``dataset`` and ``root``."""
    return {"units": UNITS, "settings": settings, "test_sets": [dict(r) for r in rows]}


def table_of_test_sets(record: Mapping[str, Any], markdown: bool = False) -> str:
    """The table of a ``record_of_test_sets``: one row per test set (``results_table``)."""
    return results_table({r["name"]: r for r in record["test_sets"]}, title="test set", markdown=markdown)


def save_test_set_results(folder: str | os.PathLike[str], record: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``record`` (``record_of_test_sets``) into ``folder`` as ``test_sets.json`` and, as a Markdown table
    under a line of its settings, ``test_sets.md`` (atomically); returns both paths."""
    from reidkit.utils.atomic import atomic_write_json, atomic_write_text

    folder = Path(folder)
    json_path, md_path = folder / TEST_SETS_JSON, folder / TEST_SETS_MD
    atomic_write_json(json_path, dict(record))
    text = (f"Results in percent; {describe_settings(record['settings'])}.\n\n"
            f"{table_of_test_sets(record, markdown=True)}\n")
    atomic_write_text(md_path, text)
    return json_path, md_path
