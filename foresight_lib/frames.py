"""The data contract: long series frames (``unique_id, ds, y``) and the series table."""
from __future__ import annotations

import pandas as pd

from foresight_lib.errors import DataError

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


def check_series_frame(df: pd.DataFrame, source: str = "series frame") -> pd.DataFrame:
    """Check and normalise a long frame: columns, dtypes, UTC timestamps, sort order.

    Returns a copy with ``unique_id`` as string, ``ds`` as UTC datetime and ``y`` as
    float64, sorted by ``unique_id, ds``.

    Raises:
        DataError: a column is missing or cannot be converted; names ``source``.
    """
    missing = [c for c in SERIES_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; a long frame needs unique_id, ds, y "
            f"(found: {list(df.columns)})"
        )
    out = df[SERIES_COLUMNS].copy()
    out["unique_id"] = out["unique_id"].astype(str)
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
    return out.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)


def to_utc(values: pd.Series, source: str = "data") -> pd.Series:
    """Parse timestamps to UTC; naive ones are taken as UTC.

    Raises:
        DataError: some timestamps cannot be parsed; shows a few of them.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    elif pd.api.types.is_numeric_dtype(values):
        parsed = pd.to_datetime(values, unit="s", errors="coerce")
    else:
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna() & values.notna()
    if bad.any():
        examples = values[bad].astype(str).head(3).tolist()
        raise DataError(
            f"{source}: {int(bad.sum())} timestamp(s) could not be parsed, e.g. {examples}; "
            "use ISO 8601 (2024-01-31T12:00:00Z) or Unix seconds"
        )
    if getattr(parsed.dt, "tz", None) is None:
        parsed = parsed.dt.tz_localize("UTC")
    else:
        parsed = parsed.dt.tz_convert("UTC")
    return parsed.astype("datetime64[ns, UTC]")
