"""User-facing errors: each carries one line that names the problem and the fix."""

from __future__ import annotations


class BFNError(Exception):
    """Base class of every error `bfn` raises on purpose; the CLI prints it without a traceback."""


class ConfigError(BFNError, ValueError):
    """A configuration, preset, override or argument is invalid."""


class DataError(BFNError, ValueError):
    """Input data has the wrong shape, dtype or range, or a dataset is missing."""


class CheckpointError(BFNError):
    """A run directory or checkpoint is missing, truncated, corrupt or does not match its config."""


class TrainingError(BFNError):
    """Training cannot continue (e.g. a non-finite loss)."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when empty), cut to `limit` characters: how a
    foreign error is quoted inside one of ours."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]
