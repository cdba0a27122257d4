"""Errors that reach the user as one clear line instead of a traceback."""

from __future__ import annotations


class ReidkitError(Exception):
    """A user-facing error: bad input, a missing file, a wrong option.

    The CLI prints ``reidkit: error: <message>`` and exits with status 2. Messages
    name the file or setting at fault and what was expected.
    """


class DatasetError(ReidkitError):
    """A dataset folder, list file or image that does not match the expected layout."""


class ConfigError(ReidkitError):
    """An unknown key, a wrong type or an invalid value in a config or override."""


class CheckpointError(ReidkitError):
    """A checkpoint, weight or feature file that cannot be read safely."""


class OutputError(ReidkitError):
    """An output path reidkit cannot or will not write: a folder where a file is expected (or the reverse),
    a device or pipe, files of another run, a full disk, a read-only or immutable folder."""
