"""``reidkit.datasets``: the dataset readers the CLI uses, under a short public name.

Examples:
    >>> import reidkit
    >>> ds = reidkit.datasets.load("market1501", "/data/Market-1501-v15.09.15")  # doctest: +SKIP
    >>> print(ds.stats_table())                                                  # doctest: +SKIP
"""

from reidkit.data.datasets import canonical_name, load, names
from reidkit.data.records import Record, ReidDataset

__all__ = ["Record", "ReidDataset", "canonical_name", "load", "names"]
