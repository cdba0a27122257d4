"""reidkit: person re-identification with STADB, Mancs, BDB and a global baseline."""

__version__ = "0.1.0"
