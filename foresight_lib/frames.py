"""The data contract: long series frames (``unique_id, ds, y``) and the series table."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from foresight_lib.errors import ConfigError, DataError

SERIES_COLUMNS = ["unique_id", "ds", "y"]
SERIES_TABLE_COLUMNS = ["unique_id", "metric", "entity", "unit", "labels", "freq"]
LEVELS = (80, 95)


def interval_columns(levels=LEVELS) -> list[str]:
    """Forecast-frame interval column names, e.g. ``yhat_lo_80, yhat_hi_80``."""
    return [f"yhat_{side}_{level}" for level in levels for side in ("lo", "hi")]


FORECAST_COLUMNS = ["unique_id", "cutoff", "ds", "step", "model", "yhat", *interval_columns()]


def make_unique_id(metric: str, entity: str) -> str:
    """``<metric>/<entity>`` as the data contract names a series."""
    return f"{metric}/{entity}"


def split_unique_id(unique_id: str) -> tuple[str, str]:
    """The metric and entity of a ``<metric>/<entity>`` id."""
    metric, _, entity = unique_id.partition("/")
    return metric, entity


def categorical_ids(ids: pd.Series) -> pd.Series:
    """Series ids as a categorical of text: the ids present, sorted (sorting by it sorts by text).

    A frame repeats each series' id on every row: as text about 40 bytes a row (700 MB at
    4,000 series of 15 days at 5 minutes), as a category 2 bytes. Run frames read from the
    data root have categorical ids; everything else that takes a frame takes either.
    """
    if not isinstance(ids.dtype, pd.CategoricalDtype):
        return ids.astype(str).astype("category")
    codes = ids.cat.codes.to_numpy()
    used = np.bincount(codes[codes >= 0], minlength=len(ids.cat.categories)) > 0
    if not used.all():
        ids = ids.cat.remove_unused_categories()
    categories = list(ids.cat.categories)
    if not all(isinstance(c, str) for c in categories):
        ids = ids.cat.rename_categories([str(c) for c in categories])
        categories = list(ids.cat.categories)
    in_order = sorted(categories)
    return ids if in_order == categories else ids.cat.reorder_categories(in_order)


def text_ids(ids: pd.Series) -> pd.Series:
    """Series ids as text, a categorical kept categorical (``categorical_ids``) rather than spelled out."""
    return categorical_ids(ids) if isinstance(ids.dtype, pd.CategoricalDtype) else ids.astype(str)


def check_series_frame(df: pd.DataFrame, source: str = "series frame") -> pd.DataFrame:
    """Check and normalise a long frame: columns, dtypes, UTC timestamps, sort order.

    Returns a copy with ``unique_id`` as text (``text_ids``: a categorical stays one), ``ds``
    as UTC datetime and ``y`` as float64, sorted by ``unique_id, ds``.

    Raises:
        DataError: a column is missing or cannot be converted; names ``source``.
    """
    missing = [c for c in SERIES_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; a long frame needs unique_id, ds, y "
            f"(found: {list(df.columns)})"
        )
    out = df[SERIES_COLUMNS]  # copy on write: the caller's frame is never changed
    out["unique_id"] = text_ids(out["unique_id"])
    out["ds"] = to_utc(out["ds"], source)
    y = pd.to_numeric(out["y"], errors="coerce")
    bad = y.isna() & out["y"].notna()
    if bad.any():
        examples = out.loc[bad, "y"].astype(str).head(3).tolist()
        raise DataError(
            f"{source}: {int(bad.sum())} non-numeric value(s) in column y, e.g. {examples}; "
            "fix or remove those rows"
        )
    out["y"] = y.astype("float64")
    return sort_series(out)


def sort_series(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` sorted by ``unique_id, ds`` (stable), with a fresh index; not copied when already sorted.

    Sources mostly deliver sorted series, and a sort of 15 million rows holds the frame
    three times over.
    """
    if _is_sorted(frame):
        return frame.reset_index(drop=True)
    return frame.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)


def _is_sorted(frame: pd.DataFrame) -> bool:
    ids, ds = frame["unique_id"], frame["ds"]
    if len(frame) < 2:
        return True
    if not pd.api.types.is_datetime64_any_dtype(ds) or ds.isna().any():
        return False
    if isinstance(ids.dtype, pd.CategoricalDtype):
        if list(ids.cat.categories) != sorted(ids.cat.categories):
            return False
        codes = ids.cat.codes.to_numpy()
        if (codes < 0).any() or (np.diff(codes) < 0).any():
            return False
        same = codes[1:] == codes[:-1]
    else:
        if not ids.is_monotonic_increasing:
            return False
        values = ids.to_numpy()
        same = values[1:] == values[:-1]
    steps = np.diff(ds.array.asi8)
    return bool(((steps >= 0) | ~same).all())


_NS_SECONDS = (pd.Timestamp.min.ceil("s").value // 10**9, pd.Timestamp.max.floor("s").value // 10**9)
"""The Unix seconds a nanosecond timestamp can hold (1677-09-21 .. 2262-04-11)."""
_SHOWN = 3


def _rows(mask: np.ndarray) -> list[int]:
    """The first few row numbers (1 = the first data row) where ``mask`` is true."""
    return (np.flatnonzero(mask)[:_SHOWN] + 1).tolist()


def _out_of_range(source: str, mask: np.ndarray, examples: list[str], hint: str = "") -> DataError:
    return DataError(
        f"{source}: {int(mask.sum())} timestamp(s) outside the range a timestamp can hold "
        f"(1677-09-22 .. 2262-04-11), e.g. {examples} at row(s) {_rows(mask)} (1 = the first data row)"
        f"{hint}; fix or remove those rows (a date such as 9999-12-31 often stands for 'no end')"
    )


def epoch_to_utc(seconds: np.ndarray | pd.Series, source: str = "data") -> pd.DatetimeIndex:
    """Unix seconds (float) as UTC timestamps; NaN stays NaT.

    Raises:
        DataError: a value is out of the range a timestamp can hold (e.g. milliseconds
            read as seconds); names ``source`` and the rows.
    """
    values = np.asarray(seconds, dtype="float64")
    with np.errstate(invalid="ignore"):
        bad = np.isinf(values) | (values < _NS_SECONDS[0]) | (values > _NS_SECONDS[1])
    if bad.any():
        shown = [f"{v:.15g}" for v in values[bad][:_SHOWN]]
        big = np.abs(values[bad & np.isfinite(values)])
        hint = ("; they look like Unix milliseconds (or finer): give Unix seconds or ISO 8601"
                if big.size and (big > 1e11).all() else "")
        raise _out_of_range(source, bad, shown, hint)
    return pd.DatetimeIndex(pd.to_datetime(values, unit="s", utc=True)).as_unit("ns")


def _outside_ns(values: pd.Series) -> np.ndarray:
    """Where datetime64 values of any unit (Parquet's us, pandas' parsed text) fall outside the ns range."""
    aware = isinstance(values.dtype, pd.DatetimeTZDtype)
    unit = values.dtype.unit if aware else np.datetime_data(values.dtype)[0]
    if unit == "ns":
        return np.zeros(len(values), dtype=bool)
    array = (values.dt.tz_localize(None) if aware else values).to_numpy()
    low, high = np.datetime64("1677-09-22", unit), np.datetime64("2262-04-11", unit)
    return ~np.isnat(array) & ((array < low) | (array > high))


def _outside(item: str) -> bool:
    """Whether text reads as a date outside the nanosecond range (an unparsable one is not)."""
    try:
        stamp = pd.Timestamp(item)
    except (ValueError, OverflowError):
        return False
    if pd.isna(stamp):
        return False
    naive = stamp.tz_convert(None) if stamp.tz is not None else stamp
    return not pd.Timestamp.min <= naive <= pd.Timestamp.max


def _parse_text(values: pd.Series, source: str) -> pd.Series:
    """Timestamps from text (ISO 8601 or anything pandas reads); out-of-range dates named by row."""
    try:
        return pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    except (pd.errors.OutOfBoundsDatetime, OverflowError):
        pass  # some value is out of range: find which, row by row, below
    text = values.astype(str).to_numpy()
    verdict = {item: _outside(item) for item in pd.unique(text)}
    bad = np.fromiter((verdict[item] for item in text), dtype=bool, count=text.size)
    if bad.any():
        raise _out_of_range(source, bad, text[bad][:_SHOWN].tolist())
    try:
        return pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    except (pd.errors.OutOfBoundsDatetime, OverflowError) as exc:
        raise DataError(f"{source}: a timestamp is outside the range a timestamp can hold "
                        f"(1677-09-22 .. 2262-04-11): {exc}; fix or remove that row") from None


def to_utc(values: pd.Series, source: str = "data") -> pd.Series:
    """Parse timestamps to UTC; naive ones are taken as UTC, numbers as Unix seconds.

    Raises:
        DataError: some timestamps cannot be parsed or are outside the range a timestamp
            can hold (9999-12-31, 1677, Unix milliseconds read as seconds); names
            ``source``, a few of them and their rows.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype) and values.dtype.unit == "ns" and str(values.dtype.tz) == "UTC":
        return values
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        parsed = pd.Series(epoch_to_utc(values.to_numpy("float64", na_value=np.nan), source), index=values.index)
    else:
        parsed = _parse_text(values, source)
    bad = (parsed.isna() & values.notna()).to_numpy()
    if bad.any():
        examples = values[bad].astype(str).head(_SHOWN).tolist()
        raise DataError(
            f"{source}: {int(bad.sum())} timestamp(s) could not be parsed, e.g. {examples} at row(s) {_rows(bad)} "
            "(1 = the first data row); use ISO 8601 (2024-01-31T12:00:00Z) or Unix seconds"
        )
    outside = _outside_ns(parsed)
    if outside.any():
        raise _out_of_range(source, outside, values[outside].astype(str).head(_SHOWN).tolist())
    if getattr(parsed.dt, "tz", None) is None:
        parsed = parsed.dt.tz_localize("UTC")
    else:
        parsed = parsed.dt.tz_convert("UTC")
    return parsed.astype("datetime64[ns, UTC]")


def utc_timestamp(when) -> pd.Timestamp:
    """One date (a datetime, ISO 8601 text or timestamp) as a UTC timestamp; a naive one is taken as UTC.

    Raises:
        ConfigError: ``when`` is not a date, or is missing.
    """
    try:
        ts = pd.Timestamp(when)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"'{when}' is not a date; use ISO 8601, e.g. 2024-03-15 or 2024-03-15T02:00:00Z") from exc
    if pd.isna(ts):
        raise ConfigError("no date given for the run; pass the logical date (ISO 8601)")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def read_parquet_frame(source) -> pd.DataFrame:
    """A Parquet file (a path or a ``pyarrow`` buffer) as a frame, its ``unique_id`` categorical.

    Raises:
        pyarrow.ArrowException (and OSError for a path): the file is not readable Parquet.
    """
    names = pq.read_schema(source).names
    table = pq.read_table(source, read_dictionary=["unique_id"] if "unique_id" in names else None)
    frame = table.to_pandas(self_destruct=True, split_blocks=True)
    del table
    pa.default_memory_pool().release_unused()  # Arrow's pool would keep the file's buffers
    if "unique_id" in frame.columns and isinstance(frame["unique_id"].dtype, pd.CategoricalDtype):
        frame["unique_id"] = categorical_ids(frame["unique_id"])
    return frame


_UNIT_RULES = [
    (re.compile(r"_seconds_total$"), "seconds"),
    (re.compile(r"_bytes(_total)?$"), "bytes"),
    (re.compile(r"_(percent|pct|utilization|util)$"), "percent"),
    (re.compile(r"_kbps$"), "KB/s"),
    (re.compile(r"_kb$"), "KB"),
    (re.compile(r"_mhz$"), "MHz"),
    (re.compile(r"_cores$"), "cores"),
    (re.compile(r"_fraction$|_ratio$"), "fraction"),
    (re.compile(r"_seconds$"), "seconds"),
    (re.compile(r"(_count|_total)$"), "count"),
]


def guess_unit(metric: str) -> str:
    """A unit from a metric's name suffix (``_bytes`` -> bytes, ``_percent`` -> percent); ``unknown`` otherwise."""
    name = metric.lower()
    for pattern, unit in _UNIT_RULES:
        if pattern.search(name):
            return unit
    return "unknown"
