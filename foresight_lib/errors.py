"""Errors raised at Foresight's boundaries.

Every error says what is wrong and what to do about it; callers (the CLI, DAG
tasks) print ``str(error)`` and nothing deeper.
"""
from __future__ import annotations


class ForesightError(Exception):
    """Base class of every error Foresight raises on purpose."""


class ConfigError(ForesightError):
    """The configuration (YAML, CLI flags, DAG params) is invalid."""


class DataError(ForesightError):
    """Input data cannot be read or does not follow the data contract."""


class HorizonError(ConfigError):
    """A horizon is not a duration or not a whole number of steps."""


class SeriesTooShortError(DataError):
    """A series is too short for the requested split, horizons or season."""


class ValidationFailed(ForesightError):
    """Too many series failed data validation; the run must stop."""


class SourceError(ForesightError):
    """A metrics source (Prometheus, S3, files) could not be read."""


class RunLocked(ForesightError):
    """Another run of the same date holds its lock (or took it over from this one)."""
