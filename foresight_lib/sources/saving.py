"""Writing frames and reports atomically: a reader never sees a half-written file."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from foresight_lib.errors import ConfigError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    A failure leaves no half-written ``path`` (and removes the temporary file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a frame atomically as Parquet (``.parquet``) or CSV (``.csv``), chosen by the extension.

    Raises:
        ConfigError: another extension.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    if suffix == ".csv":
        return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
    raise ConfigError(f"{path}: cannot tell the file type; end the name with .parquet or .csv")


def series_table_path(path: str | Path) -> Path:
    """Where the series table of the long frame at ``path`` is kept: ``<stem>.series.parquet``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.series.parquet")
