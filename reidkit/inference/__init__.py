"""Using a trained model: embed crops (``Embedder``, ``load``), search a gallery (``Gallery``),
read and write features files, export to ONNX. One module per job:

- ``reidkit.inference.engines``: what runs the network (PyTorch, ``torch.compile``, ONNX Runtime);
- ``reidkit.inference.embedder``: crops → embeddings (batching, flip averaging, progress);
- ``reidkit.inference.images``: pictures in any form → a uint8 batch at the input size;
- ``reidkit.inference.sources``: where images come from (folder, CSV list) and their labels;
- ``reidkit.inference.dataset``: a benchmark's query and gallery embedded; several test sets evaluated;
- ``reidkit.inference.features``: features files (one writer and one reader per layout);
- ``reidkit.inference.gallery``: the searchable gallery index (its lock, merge and generations);
- ``reidkit.inference.faiss_index``: the gallery's FAISS index (exact, IVF-PQ, HNSW): ``IndexSpec``;
- ``reidkit.inference.faiss_file``: a FAISS file's layout checked before FAISS reads it;
- ``reidkit.inference.export``: ONNX export checked against PyTorch;
- ``reidkit.inference.quantize``: INT8 copies of an exported file, checked against it.
"""

from reidkit.inference.dataset import embed_dataset, evaluate_test_sets
from reidkit.inference.embedder import Embedder, load
from reidkit.inference.export import ExportReport, export_onnx, read_onnx_meta
from reidkit.inference.faiss_index import IndexSpec
from reidkit.inference.features import (
    DatasetFeatures,
    FolderFeatures,
    read_dataset_features,
    read_folder_features,
    save_dataset_features,
    save_folder_features,
)
from reidkit.inference.gallery import Gallery, GalleryIndexError, SearchResult

__all__ = [
    "DatasetFeatures",
    "Embedder",
    "ExportReport",
    "FolderFeatures",
    "Gallery",
    "GalleryIndexError",
    "IndexSpec",
    "SearchResult",
    "embed_dataset",
    "evaluate_test_sets",
    "export_onnx",
    "load",
    "read_dataset_features",
    "read_folder_features",
    "read_onnx_meta",
    "save_dataset_features",
    "save_folder_features",
]
