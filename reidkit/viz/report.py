"""A single self-contained HTML evaluation report: metrics table, CMC curve, worst queries' rank lists.

Every picture is embedded as a base64 ``data:`` URI and the styles are inline, so the page needs no other
file and no network.

Examples:
    >>> from reidkit.inference import read_dataset_features
    >>> write_report("report.html", read_dataset_features("feats.safetensors"))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from reidkit.utils.atomic import atomic_write_text
from reidkit.viz.ranklist import RankRow, dataset_rank_rows, render_rank_list

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#1a1a1a;
background:#fff;max-width:1150px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;font-size:13px;margin-bottom:16px}
table{border-collapse:collapse;font-size:14px}th,td{border:1px solid #ccc;padding:5px 12px;text-align:right}
th{background:#f0f3f7;text-align:left}td.k{text-align:left;color:#333}
.row{margin:10px 0 18px}.row img{display:block;max-width:100%;border:1px solid #eee}
.cap{font-size:13px;color:#333;margin:2px 0 4px}
.legend{font-size:13px;color:#444}.legend span{display:inline-block;padding:1px 8px;margin-right:8px;color:#fff;font-size:12px;border-radius:3px}
"""


def png_data_uri(img: Image.Image | bytes) -> str:
    """A ``data:image/png;base64,...`` URI of a PIL image or of PNG bytes."""
    if isinstance(img, Image.Image):
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        img = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(img).decode("ascii")


def cmc_png(cmc: Sequence[float], max_rank: int = 20, title: str = "CMC curve") -> bytes:
    """PNG bytes of a CMC curve (rank 1..max_rank vs. matching rate in %), drawn by
    ``reidkit.viz.curves.plot_cmc``.

    Examples:
        >>> png = cmc_png([0.5, 0.7, 0.8, 0.9])
        >>> png[:4] == b"\\x89PNG"
        True
    """
    import tempfile

    from reidkit.viz.curves import plot_cmc

    with tempfile.TemporaryDirectory(prefix="reidkit-report-") as tmp:
        path = plot_cmc(list(cmc), Path(tmp) / "cmc.png", title=title, max_rank=max_rank)
        return path.read_bytes()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1.0 + 1e-9 else f"{v:.2f}"
    return html.escape(str(v))


def metrics_rows(metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, value as text) pairs for the metrics table: mAP, mINP, Rank-1/5/10/20, query counts."""
    rows: list[tuple[str, str]] = []
    for key in ("mAP", "mINP"):
        if key in metrics:
            rows.append((key, f"{100.0 * float(metrics[key]):.2f}%"))
    cmc = list(metrics.get("cmc") or [])
    for r in (1, 5, 10, 20):
        if len(cmc) >= r:
            rows.append((f"Rank-{r}", f"{100.0 * float(cmc[r - 1]):.2f}%"))
    for key in ("num_valid_queries", "num_queries"):
        if key in metrics:
            rows.append((key.replace("_", " "), str(int(metrics[key]))))
    return rows


def render_report(metrics: Mapping[str, Any], rows: Sequence[RankRow], title: str = "reidkit evaluation report",
                  info: Mapping[str, Any] | None = None) -> str:
    """The report page as an HTML string (no external assets).

    Examples:
        >>> page = render_report({"mAP": 0.5, "mINP": 0.2, "cmc": [0.6, 0.8]}, [])
        >>> 'id="metrics"' in page
        True
    """
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<div class="sub">generated {esc(_dt.datetime.now().strftime("%Y-%m-%d %H:%M"))} by reidkit</div>',
    ]
    if info:
        parts.append('<table id="info">')
        for k, v in info.items():
            parts.append(f'<tr><th>{esc(str(k))}</th><td class="k">{esc(str(v))}</td></tr>')
        parts.append("</table>")
    parts.append("<h2>Metrics</h2>")
    parts.append('<table id="metrics"><tr><th>metric</th><th>value</th></tr>')
    for name, value in metrics_rows(metrics):
        parts.append(f'<tr><td class="k">{esc(name)}</td><td>{esc(value)}</td></tr>')
    parts.append("</table>")
    cmc = list(metrics.get("cmc") or [])
    if cmc:
        parts.append("<h2>CMC curve</h2>")
        parts.append(f'<img id="cmc" alt="CMC curve" src="{png_data_uri(cmc_png(cmc))}">')
    if rows:
        parts.append(f"<h2>Worst queries ({len(rows)})</h2>")
        parts.append('<div class="legend"><span style="background:#00aa00">same person</span>'
                     '<span style="background:#dc0000">other person</span>'
                     "gallery images with the query's identity and camera are left out (Market protocol); "
                     "numbers under the images are distances</div>")
        for r in rows:
            parts.append('<div class="row">')
            parts.append(f'<div class="cap">{esc(r.title)}</div>')
            pic = render_rank_list(r.query_path, r.gallery_paths, r.matches, r.distances)
            parts.append(f'<img class="ranklist" alt="rank list of query {r.query_index}" '
                         f'src="{png_data_uri(pic)}">')
            parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(out_html: str | os.PathLike[str], data: Any, k: int = 10, worst: int = 8,
                 metric: str = "euclidean", rerank: bool = False, title: str = "reidkit evaluation report",
                 info: Mapping[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """Evaluate ``data`` (``reidkit.inference.DatasetFeatures``) and write the report atomically.

    Returns ``(path, metrics)``.

    Examples:
        >>> path, metrics = write_report("report.html", read_dataset_features("f.safetensors"))  # doctest: +SKIP
    """
    metrics, rows = dataset_rank_rows(data, k=k, metric=metric, rerank=rerank, queries=worst, worst=True)
    details = {"queries": int(data.query_feats.shape[0]), "gallery": int(data.gallery_feats.shape[0]),
               "feature size": int(data.query_feats.shape[1]),
               "distance": metric + (" + k-reciprocal re-ranking" if rerank else "")}
    from reidkit.eval.summary import describe_settings, evaluation_settings

    extra = getattr(data, "extra", None) or {}
    details["evaluation"] = describe_settings(evaluation_settings(
        metric=metric, flip=extra.get("flip"), rerank=rerank, multi_query=extra.get("multi_query")))
    if data.model_meta:
        from reidkit.inference.gallery import describe_model

        details["model"] = describe_model(data.model_meta)
    details.update(info or {})
    page = render_report(metrics, rows, title, details)
    out = Path(out_html)
    atomic_write_text(out, page)
    return out, metrics
