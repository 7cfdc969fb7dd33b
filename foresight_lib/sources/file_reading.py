"""Reading the files of a data set: CSV with errors that name the file, numbers that say
which cells are not, the files of a folder or glob pattern, local or on S3.

A file is a ``pathlib.Path`` or, for ``s3://bucket/key``, an ``S3Path`` (``source_path``);
the loaders treat both alike, and the few reads below take the object's bytes for S3.
"""
from __future__ import annotations

import fnmatch
import glob
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from foresight_lib.errors import DataError
from foresight_lib.sources.s3_paths import S3Path, is_s3_uri

SourcePath = Path | S3Path
"""A file, folder or glob pattern of a data set: local, or on S3."""


def source_path(path: str | Path | S3Path) -> SourcePath:
    """``path`` as the loaders take it: an ``S3Path`` for ``s3://bucket/key``, else a local ``Path``."""
    if isinstance(path, S3Path):
        return path
    return S3Path(path) if is_s3_uri(path) else Path(path)


def readable(file: SourcePath) -> Path | io.BytesIO:
    """What pandas and pyarrow read ``file`` from: the local path itself, or the S3 object's bytes."""
    return io.BytesIO(file.read_bytes()) if isinstance(file, S3Path) else file


def read_csv(file: SourcePath, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` whose failures become a ``DataError`` naming the file."""
    if file.stat().st_size == 0:
        raise DataError(f"{file}: file is empty; remove it or re-export the data")
    source = readable(file)
    try:
        df = pd.read_csv(source, **kwargs)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{file}: file is empty; remove it or re-export the data") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{file}: cannot be read as CSV ({reason}); check that it is a text CSV file of this format"
        ) from exc
    if df.empty:
        raise DataError(f"{file}: file has a header but no rows; remove it or re-export the data")
    return df


def separator(file: SourcePath) -> str:
    """The field separator of a text file, from its header line: ``,``, ``;``, tab or ``|``."""
    if isinstance(file, S3Path):
        with io.TextIOWrapper(io.BytesIO(file.read_head()), encoding="utf-8-sig", errors="replace") as fh:
            header = fh.readline()
    else:
        with open(file, encoding="utf-8-sig", errors="replace") as fh:
            header = fh.readline()
    counts = {sep: header.count(sep) for sep in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def numeric(values: pd.Series, file: SourcePath, column: str) -> np.ndarray:
    """float64 values; a non-numeric cell raises a ``DataError`` with examples and line numbers."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy("float64", na_value=np.nan)
    parsed = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
    blank = values.isna() | values.astype(str).str.strip().isin(["", "nan", "NaN", "null", "None"])
    bad = parsed.isna() & ~blank
    if bad.any():
        lines = (np.flatnonzero(bad.to_numpy()) + 2).tolist()[:3]
        examples = values[bad].astype(str).head(3).tolist()
        raise DataError(
            f"{file}: {int(bad.sum())} non-numeric value(s) in column '{column}', e.g. {examples} "
            f"(line(s) {lines}); fix or remove those rows"
        )
    return parsed.to_numpy("float64", na_value=np.nan)


def require(df: pd.DataFrame, columns: Sequence[str], file: SourcePath, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"{file}: missing column(s) {missing}; {what} needs {list(columns)} (found: {list(df.columns)[:12]})"
        )


def is_glob(path: SourcePath) -> bool:
    return any(ch in str(path) for ch in "*?[")


def glob_files(path: SourcePath) -> list[SourcePath]:
    if isinstance(path, S3Path):
        return path.glob_files()
    return sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())


def folder_files(path: SourcePath, patterns: Sequence[str],
                 exclude: Callable[[SourcePath], bool] | None = None) -> list[SourcePath]:
    """The format's files in a folder (recursively), the file itself, or the files a glob pattern matches."""
    if path.is_file():
        return [path]
    if not path.exists() and is_glob(path):
        files = [f for f in glob_files(path) if any(fnmatch.fnmatch(f.name, p) for p in patterns)]
    else:
        files = sorted({f for pattern in patterns for f in path.rglob(pattern) if f.is_file()})
    if exclude is not None:
        files = [f for f in files if not exclude(f)]
    if not files:
        raise DataError(f"{path}: no {'/'.join(patterns)} file found in this folder; check the path and --format")
    return files
