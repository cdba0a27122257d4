"""Re-identify people across two folders of person crops with reidkit's Python API.

Every picture in the query folder is embedded and searched in the gallery folder; the k nearest gallery
crops (cosine distance between L2-normalised embeddings: 0 = same picture, 2 = opposite) are printed
and, with ``--out``, written to a CSV file with one row per (query, rank).

Run:
    python -m reidkit.examples.reid_across_folders --model runs/stadb/model.safetensors \
        --query-dir cam1_crops/ --gallery-dir cam2_crops/ --k 5 --out matches.csv

Try it offline on synthetic data (any model file works, e.g. one from ``reidkit train``):
    reidkit synth --out data/synth --ids 50
    python -m reidkit.examples.reid_across_folders --model MODEL \
        --query-dir data/synth/Market-1501-v15.09.15/query \
        --gallery-dir data/synth/Market-1501-v15.09.15/bounding_box_test

With ``--index DIR`` the gallery embeddings are saved there (``Gallery.save``) and reused on the next run
(``Gallery.load``) instead of embedding the gallery folder again; delete DIR when the folder changes.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

import reidkit
from reidkit.errors import ReidkitError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def list_images(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursively), sorted so the output order is stable."""
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def embed_folder(emb: reidkit.Embedder, folder: Path, batch_size: int) -> tuple[torch.Tensor, list[str]]:
    """Embed every readable image of ``folder``: (N×D normalised embeddings, their paths)."""
    paths = list_images(folder)
    if not paths:
        raise SystemExit(f"error: no images (.jpg, .png, ...) found under {folder}")
    feats, kept, bad = emb.embed_paths(paths, batch_size=batch_size, normalize=True)
    for path in bad:
        print(f"warning: skipped unreadable image {path}", file=sys.stderr)
    return feats, kept


def build_gallery(emb: reidkit.Embedder, args: argparse.Namespace) -> reidkit.Gallery:
    """The gallery folder as a searchable :class:`reidkit.Gallery` (loaded from ``--index`` when saved)."""
    if args.index and (args.index / "manifest.json").is_file():
        gallery = reidkit.Gallery.load(args.index)
        gallery.check_model(emb.meta)  # refuses an index built by another model
        print(f"loaded {len(gallery)} gallery embeddings from {args.index}", file=sys.stderr)
        return gallery
    feats, paths = embed_folder(emb, args.gallery_dir, args.batch_size)
    gallery = reidkit.Gallery(emb.embedding_dim, metric="cosine", model_meta=emb.meta)
    gallery.add(feats, ids=paths)
    if args.index:
        gallery.save(args.index)
    return gallery


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model file: .safetensors, checkpoint.pt or .onnx")
    parser.add_argument("--query-dir", type=Path, required=True, help="folder of query crops")
    parser.add_argument("--gallery-dir", type=Path, required=True, help="folder of gallery crops")
    parser.add_argument("--k", type=int, default=5, help="matches per query (default 5)")
    parser.add_argument("--out", type=Path, help="write the matches to this CSV file")
    parser.add_argument("--index", type=Path, help="save / reuse the gallery embeddings in this folder")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be at least 1")

    emb = reidkit.load(args.model, device=args.device)
    print(f"model: {emb}", file=sys.stderr)
    gallery = build_gallery(emb, args)
    query_feats, query_paths = embed_folder(emb, args.query_dir, args.batch_size)
    results = gallery.search(query_feats, k=args.k)  # one list of SearchResult per query, nearest first

    rows = []
    for query, hits in zip(query_paths, results, strict=True):
        print(query)
        for rank, hit in enumerate(hits, start=1):
            print(f"  {rank:2d}. {hit.distance:.4f}  {hit.id}")
            rows.append({"query": query, "rank": rank, "match": hit.id, "distance": f"{hit.distance:.6f}"})
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["query", "rank", "match", "distance"])
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {len(rows)} matches for {len(query_paths)} queries to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ReidkitError as exc:  # a user mistake (missing model file, other model's index...): one line
        sys.exit(f"error: {exc}")
