"""Data layer: dataset readers, synthetic data, PK sampling, image cache and batched augmentation."""

from reidkit.data.records import Record, ReidDataset

__all__ = ["Record", "ReidDataset"]
