"""The features step: raw long frame in, regular gap-free long frame out.

Per series, in this order:

1. duplicate timestamps are averaged (counted);
2. counters become rates: the increase between two samples over the time between
   them, a negative difference being a reset (the new value is then the increase);
   ``*_seconds_total`` -> cores, ``*_bytes_total`` -> bytes/s, any other counter -> per second;
3. values are put on a regular grid of ``freq`` anchored at the Unix epoch (so an odd
   offset like 14:27 lands in the 14:25 slot): the mean of the samples in each slot
   (``[t − tol, t + freq − tol)``, where ``tol`` is ``grid_tolerance`` of the step, so a
   point stamped ``14:29:59.9`` counts for 14:30; ``foresight_lib.quality.grid``, the
   assignment validation judges completeness on); a counter's rate over a slot is its
   increase over its time;
4. units are normalised (KB -> bytes, KB/s -> bytes/s by default; see ``UNIT_TARGETS``)
   and the metric name follows (``memory_usage_kb`` -> ``memory_usage_bytes``);
5. gaps up to ``gap_limit`` are interpolated linearly in time; longer gaps take the
   value at the same time of the last day observed before, shifted by a ramp so it
   meets the values on both edges (linear interpolation where no earlier day exists);
6. a series with more than ``max_filled_share`` filled points, sampled more coarsely
   than ``freq``, or with fewer than two points, is dropped with its reason.

``calendar_features(ds)`` gives time-of-day and day-of-week encodings for models that
use them.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from foresight_lib.errors import ConfigError
from foresight_lib.frames import SERIES_TABLE_COLUMNS, check_series_frame, guess_unit, make_unique_id, split_unique_id
from foresight_lib.horizons import format_duration, to_timedelta
from foresight_lib.quality.grid import DEFAULT_GRID_TOLERANCE, grid_slots
from foresight_lib.sources.catalog import rate_metric
from foresight_lib.sources.loaders import COUNTER_LABEL

log = logging.getLogger(__name__)

UNIT_FACTORS: dict[tuple[str, str], float] = {
    ("KB", "bytes"): 1024.0,
    ("KiB", "bytes"): 1024.0,
    ("MB", "bytes"): 1024.0**2,
    ("MiB", "bytes"): 1024.0**2,
    ("GB", "bytes"): 1024.0**3,
    ("GiB", "bytes"): 1024.0**3,
    ("KB/s", "bytes/s"): 1024.0,
    ("MB/s", "bytes/s"): 1024.0**2,
    ("percent", "fraction"): 0.01,
    ("fraction", "percent"): 100.0,
    ("MHz", "GHz"): 0.001,
    ("millicores", "cores"): 0.001,
}
"""Multiplier from one unit to another. Bitbrains' KB are kibibytes (1024 bytes)."""

UNIT_TARGETS: dict[str, str] = {
    "KB": "bytes", "KiB": "bytes", "MB": "bytes", "MiB": "bytes", "GB": "bytes", "GiB": "bytes",
    "KB/s": "bytes/s", "MB/s": "bytes/s", "millicores": "cores",
}
"""Default normalisation; MHz, percent and fractions stay as they are unless configured."""

_UNIT_SUFFIXES = {
    "bytes": ["_kb", "_kib", "_mb", "_mib", "_gb", "_gib"],
    "bytes/s": ["_kbps", "_mbps", "_kb_per_second", "_mb_per_second"],
    "fraction": ["_percent", "_pct"],
    "percent": ["_fraction", "_ratio"],
    "GHz": ["_mhz"],
    "cores": ["_millicores"],
}
_TARGET_SUFFIX = {"bytes": "_bytes", "bytes/s": "_bytes_per_second", "fraction": "_fraction",
                  "percent": "_percent", "GHz": "_ghz", "cores": "_cores"}

NOT_A_COUNTER_SHARE = 0.1
"""A 'counter' that decreases in more than this share of its steps is treated as a gauge."""


@dataclass
class FeatureResult:
    """The regular frame, its series table and what was done to each series."""

    frame: pd.DataFrame
    series: pd.DataFrame
    report: dict = field(default_factory=dict)
    """``series``: per output ``unique_id`` the counts (duplicates, interpolated, long gaps,
    resets, ...); ``dropped``: ``[{"unique_id", "reason"}]``; ``renamed``: old -> new id."""

    def __iter__(self):
        yield self.frame
        yield self.series

    @property
    def dropped(self) -> list[dict]:
        return self.report.get("dropped", [])


def prepare_series(
    frame: pd.DataFrame,
    series_table: pd.DataFrame | None = None,
    freq: str = "5min",
    gap_limit: str = "1h",
    max_filled_share: float = 0.2,
    unit_targets: Mapping[str, str] | None = None,
    rename_metrics: bool = True,
    grid_tolerance: float = DEFAULT_GRID_TOLERANCE,
) -> FeatureResult:
    """Turn a raw long frame into a regular, gap-free one on the ``freq`` grid.

    Args:
        frame: long frame (``unique_id, ds, y``), any sampling, duplicates allowed.
        series_table: the loader's series table (units, counter flags); guessed from the
            ids when None or when a series is missing from it.
        freq: grid step, e.g. ``5min``.
        gap_limit: the longest run of missing points interpolated linearly; longer gaps
            are filled from the previous day.
        max_filled_share: drop a series when more than this share of its points is filled.
        unit_targets: unit -> unit to convert to, merged over ``UNIT_TARGETS``; map a unit
            to itself to keep it.
        rename_metrics: make the metric name follow a converted unit (``_kb`` -> ``_bytes``)
            and a counter's rate (``_seconds_total`` -> ``_cores``).
        grid_tolerance: share of the step before a grid mark that still counts for that
            mark (``features.grid_tolerance``).

    Raises:
        ConfigError: a bad frequency, gap limit or share.
    """
    step = to_timedelta(freq)
    limit = to_timedelta(gap_limit)
    if not 0.0 <= max_filled_share <= 1.0:
        raise ConfigError(f"max_filled_share must be between 0 and 1, got {max_filled_share}")
    if not 0.0 <= grid_tolerance < 0.5:
        raise ConfigError(f"grid_tolerance must be at least 0 and below 0.5 (a share of the step), "
                          f"got {grid_tolerance}")
    if pd.Timedelta("1D") % step != pd.Timedelta(0):
        raise ConfigError(f"freq {freq} does not divide a day; use e.g. 1min, 5min, 15min, 1h")
    targets = {**UNIT_TARGETS, **(unit_targets or {})}
    frame = check_series_frame(frame)
    table = _table_by_id(series_table, frame)
    settings = _Settings(step.value, limit.value, int(pd.Timedelta("1D") / step), max_filled_share, grid_tolerance)

    out_frames, out_rows, per_series, dropped, renamed = [], [], {}, [], {}
    for uid, group in frame.groupby("unique_id", sort=True):
        meta = table[uid]
        ds = group["ds"].to_numpy("datetime64[ns]").astype("int64")
        y = group["y"].to_numpy("float64")
        counter = _is_counter(meta)
        outcome = _prepare_one(ds, y, counter, settings)
        if outcome.reason:
            dropped.append({"unique_id": uid, "reason": outcome.reason})
            log.info("dropping series %s: %s", uid, outcome.reason)
            continue
        unit, metric = meta["unit"], meta["metric"]
        info = outcome.info
        if outcome.counter:
            unit, metric = _rate_unit(metric, unit, rename_metrics)
        factor, new_unit = _unit_factor(unit, targets)
        values = outcome.values * factor
        if rename_metrics and new_unit != unit:
            metric = _rename_for_unit(metric, unit, new_unit)
        info.update({"unit": new_unit, "unit_factor": factor})
        new_uid = make_unique_id(metric, meta["entity"]) if metric != meta["metric"] else uid
        if new_uid != uid:
            renamed[uid] = new_uid
            info["source_id"] = uid
        labels = _labels(meta["labels"])
        if outcome.counter:
            labels.pop(COUNTER_LABEL, None)
            labels["derived"] = "rate"
        if new_uid != uid:
            labels["source_metric"] = meta["metric"]
        per_series[new_uid] = info
        grid = outcome.start + np.arange(values.size, dtype="int64") * settings.step
        out_frames.append((new_uid, grid, values))
        out_rows.append({"unique_id": new_uid, "metric": metric, "entity": meta["entity"], "unit": new_unit,
                         "labels": json.dumps(labels, sort_keys=True), "freq": _freq_label(step)})

    result_frame = _assemble(out_frames)
    series = pd.DataFrame(out_rows, columns=SERIES_TABLE_COLUMNS).sort_values("unique_id").reset_index(drop=True)
    report = {
        "freq": _freq_label(step), "gap_limit": format_duration(limit), "max_filled_share": max_filled_share,
        "series_in": int(frame["unique_id"].nunique()), "series_out": len(series),
        "series": per_series, "dropped": dropped, "renamed": renamed,
        "totals": _totals(per_series),
    }
    return FeatureResult(result_frame, series, report)


@dataclass
class _Settings:
    step: int
    """Grid step in ns."""
    gap_limit: int
    """Longest gap interpolated, in ns."""
    day: int
    """Grid steps per day."""
    max_filled_share: float
    grid_tolerance: float = DEFAULT_GRID_TOLERANCE
    """Share of the step before a mark that counts for the mark."""


@dataclass
class _Outcome:
    values: np.ndarray | None = None
    start: int = 0
    counter: bool = False
    info: dict = field(default_factory=dict)
    reason: str | None = None


def _prepare_one(ds: np.ndarray, y: np.ndarray, counter: bool, s: _Settings) -> _Outcome:
    """One series (int64 ns timestamps, sorted) -> values on the grid, or a reason to drop it."""
    info: dict = {"rows_in": int(ds.size)}
    observed = ~np.isnan(y)
    info["missing_values_in"] = int((~observed).sum())
    ds, y = ds[observed], y[observed]
    times, inverse = np.unique(ds, return_inverse=True)
    info["duplicates"] = int(ds.size - times.size)
    if times.size < 2:
        return _Outcome(reason=f"only {times.size} distinct timestamp(s); needs at least 2")
    values = np.bincount(inverse, weights=y) / np.bincount(inverse)
    native = int(np.median(np.diff(times)))
    info["native_step"] = _freq_label(pd.Timedelta(native, unit="ns").round("s"))
    if native > 1.5 * s.step:
        return _Outcome(reason=(
            f"sampled every {info['native_step']}, coarser than the {_freq_label(pd.Timedelta(s.step))} grid; "
            f"choose a freq of at least {info['native_step']}"
        ))

    if counter:
        slots, grid_values, resets, is_counter = _counter_rates(times, values, s)
        info["resets"] = resets
        if not is_counter:
            info["note"] = "flagged as a counter but decreases too often; kept as a gauge"
    else:
        is_counter = False
    if not is_counter:
        slots, grid_values = _slot_means(times, values, s.step, s.grid_tolerance)
    info["counter"] = is_counter

    finite = np.flatnonzero(~np.isnan(grid_values))
    if finite.size < 2:
        return _Outcome(reason="spans fewer than 2 grid steps after resampling; needs a longer series")
    grid_values = grid_values[finite[0]: finite[-1] + 1]
    start = int(slots[0] + finite[0] * s.step)
    info["points"] = int(grid_values.size)
    info["downsampled"] = bool(native < s.step * 0.9)

    filled, fill_info = _fill_gaps(grid_values, s)
    info.update(fill_info)
    share = (fill_info["interpolated"] + fill_info["long_gap_points"]) / grid_values.size
    info["filled_share"] = round(float(share), 4)
    if share > s.max_filled_share:
        return _Outcome(reason=(
            f"{share:.0%} of its points would be filled ({fill_info['interpolated']} interpolated, "
            f"{fill_info['long_gap_points']} in {fill_info['long_gaps']} long gap(s)), more than the "
            f"{s.max_filled_share:.0%} allowed; fix the source or raise max_filled_share"
        ))
    return _Outcome(filled, start, is_counter, info)


def _slot_means(times: np.ndarray, values: np.ndarray, step: int,
                tolerance: float = DEFAULT_GRID_TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the samples in each grid slot (``grid_slots``); NaN where a slot has none."""
    slot = grid_slots(times, step, tolerance)
    idx = slot - slot[0]
    n = int(idx[-1]) + 1
    counts = np.bincount(idx, minlength=n)
    sums = np.bincount(idx, weights=values, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return np.array([slot[0] * step]), means


def _counter_rates(times: np.ndarray, values: np.ndarray, s: _Settings) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Per-second rate of a counter in each slot: its increase over the covered time.

    A negative difference is a reset: the counter restarted from zero, so the new
    value is the increase. Steps longer than the gap limit are left out (the slots in
    the gap are then filled like any gap).
    """
    diffs = np.diff(values)
    resets = diffs < 0
    if resets.mean() > NOT_A_COUNTER_SHARE and diffs.size >= 10:
        return np.array([0]), np.array([]), int(resets.sum()), False
    increase = np.where(resets, values[1:], diffs)
    dt = np.diff(times)
    keep = dt <= s.gap_limit
    end_times = times[1:][keep]
    if end_times.size == 0:
        return np.array([0]), np.full(1, np.nan), int(resets.sum()), True
    slot = grid_slots(end_times, s.step, s.grid_tolerance)
    idx = slot - slot[0]
    n = int(idx[-1]) + 1
    seconds = np.bincount(idx, weights=dt[keep] / 1e9, minlength=n)
    total = np.bincount(idx, weights=increase[keep], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(seconds > 0, total / np.where(seconds > 0, seconds, 1.0), np.nan)
    return np.array([slot[0] * s.step]), rates, int(resets.sum()), True


def _nan_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) inclusive of every run of True in ``mask``."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), (edges[1::2] - 1).tolist(), strict=True))


def _fill_gaps(values: np.ndarray, s: _Settings) -> tuple[np.ndarray, dict]:
    """Interpolate short gaps, fill long ones from earlier days (see the module docstring)."""
    y = values.copy()
    runs = _nan_runs(np.isnan(y))
    max_points = s.gap_limit // s.step
    short = [(a, b) for a, b in runs if b - a + 1 <= max_points]
    long = [(a, b) for a, b in runs if b - a + 1 > max_points]
    positions = np.arange(y.size)
    known = ~np.isnan(y)
    if short:
        idx = np.concatenate([np.arange(a, b + 1) for a, b in short])
        y[idx] = np.interp(idx, positions[known], y[known])
    seasonal = interpolated_long = 0
    base_source = y.copy()  # observed values and short-gap fills; long gaps still NaN
    for a, b in long:
        gap = np.arange(a, b + 1)
        base = np.array([_earlier_day(base_source, i, s.day) for i in gap])
        if np.isnan(base).any():
            y[gap] = np.interp(gap, positions[known], values[known])
            interpolated_long += gap.size
            continue
        left = _edge_offset(base_source, a - 1, s.day)
        right = _edge_offset(base_source, b + 1, s.day)
        if np.isnan(left):
            left = 0.0 if np.isnan(right) else right
        if np.isnan(right):
            right = left
        ramp = left + (right - left) * (np.arange(1, gap.size + 1) / (gap.size + 1))
        y[gap] = base + ramp
        seasonal += gap.size
    info = {
        "interpolated": int(sum(b - a + 1 for a, b in short)),
        "short_gaps": len(short),
        "long_gaps": len(long),
        "long_gap_points": seasonal + interpolated_long,
        "long_gap_from_previous_day": seasonal,
        "long_gap_interpolated": interpolated_long,
    }
    return y, info


def _earlier_day(y: np.ndarray, i: int, day: int) -> float:
    """The value at the same time on the last earlier day that has one; NaN if none."""
    j = i - day
    while j >= 0:
        if not np.isnan(y[j]):
            return float(y[j])
        j -= day
    return float("nan")


def _edge_offset(y: np.ndarray, i: int, day: int) -> float:
    """How far the observed value at ``i`` sits from its earlier-day value (NaN when unknown)."""
    if i < 0 or i >= y.size or np.isnan(y[i]):
        return float("nan")
    return float(y[i]) - _earlier_day(y, i, day)


# ---------------------------------------------------------------------------
# Series metadata: counters, units, names


def _table_by_id(series_table: pd.DataFrame | None, frame: pd.DataFrame) -> dict[str, dict]:
    """Series-table rows by id; ids missing from it get rows guessed from their names."""
    rows: dict[str, dict] = {}
    if series_table is not None and not series_table.empty:
        if "unique_id" not in series_table.columns:
            raise ConfigError("the series table has no unique_id column; pass the table the loader returned")
        for rec in series_table.to_dict(orient="records"):
            rows[str(rec["unique_id"])] = rec
    out = {}
    for uid in frame["unique_id"].unique():
        metric, entity = split_unique_id(uid)
        rec = rows.get(uid, {})
        out[uid] = {
            "metric": _text(rec.get("metric")) or metric,
            "entity": _text(rec.get("entity")) or entity,
            "unit": _text(rec.get("unit")) or guess_unit(_text(rec.get("metric")) or metric),
            "labels": _text(rec.get("labels")) or "{}",
            "counter": rec.get("counter"),
            "metric_type": rec.get("metric_type"),
        }
    return out


def _text(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value) or None


def _labels(text: str) -> dict:
    try:
        labels = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {"raw_labels": str(text)}
    return labels if isinstance(labels, dict) else {"raw_labels": labels}


def _is_counter(meta: dict) -> bool:
    """A running total: named ``*_total``, or flagged in the series table (labels or a column)."""
    if meta["metric"].endswith("_total"):
        return True
    flag = meta.get("counter")
    if (isinstance(flag, bool | np.bool_) and bool(flag)) or str(meta.get("metric_type") or "").lower() == "counter":
        return True
    return str(_labels(meta["labels"]).get(COUNTER_LABEL, "")).lower() == "counter"


def _rate_unit(metric: str, unit: str, rename: bool) -> tuple[str, str]:
    """Unit and metric name of a counter's per-second rate (:func:`foresight_lib.sources.catalog.rate_metric`)."""
    new_unit, new_metric = rate_metric(metric, unit)
    return new_unit, (new_metric if rename else metric)


def _unit_factor(unit: str, targets: Mapping[str, str]) -> tuple[float, str]:
    target = targets.get(unit, unit)
    if target == unit:
        return 1.0, unit
    if (unit, target) not in UNIT_FACTORS:
        known = sorted({f"{a}->{b}" for a, b in UNIT_FACTORS})
        raise ConfigError(f"no conversion from unit '{unit}' to '{target}'; known: {known}")
    return UNIT_FACTORS[(unit, target)], target


def _rename_for_unit(metric: str, unit: str, new_unit: str) -> str:
    """``memory_usage_kb`` -> ``memory_usage_bytes`` when KB became bytes; unchanged if the name has no unit."""
    lower = metric.lower()
    for suffix in _UNIT_SUFFIXES.get(new_unit, []):
        if lower.endswith(suffix):
            return metric[: -len(suffix)] + _TARGET_SUFFIX[new_unit]
    return metric


def _freq_label(step: pd.Timedelta) -> str:
    label = format_duration(step)
    return label.replace("m", "min") if label.endswith("m") else label


def _assemble(pieces: list[tuple[str, np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """One long frame from ``(unique_id, ds as int64 ns, y)`` per series, its ids categorical (``categorical_ids``)."""
    if not pieces:
        return pd.DataFrame({"unique_id": pd.Series([], dtype=str),
                             "ds": pd.Series([], dtype="datetime64[ns, UTC]"), "y": pd.Series([], dtype="float64")})
    categories = sorted({uid for uid, _, _ in pieces})
    position = {uid: i for i, uid in enumerate(categories)}
    codes = np.repeat(np.asarray([position[uid] for uid, _, _ in pieces], dtype=np.int32),
                      [len(values) for _, _, values in pieces])
    out = pd.DataFrame({
        "unique_id": pd.Categorical.from_codes(codes, categories),
        "ds": pd.to_datetime(np.concatenate([grid for _, grid, _ in pieces]), unit="ns", utc=True),
        "y": np.concatenate([values for _, _, values in pieces]).astype("float64", copy=False),
    })
    return out.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)


def _totals(per_series: dict[str, dict]) -> dict[str, int]:
    keys = ("duplicates", "interpolated", "long_gaps", "long_gap_points", "resets")
    return {k: int(sum(info.get(k, 0) for info in per_series.values())) for k in keys}


# ---------------------------------------------------------------------------
# Calendar features

CALENDAR_COLUMNS = ["tod_sin", "tod_cos", "dow_sin", "dow_cos", "is_weekend"]


def calendar_features(ds: pd.Series | pd.DatetimeIndex, tz: str | None = None) -> pd.DataFrame:
    """Time-of-day and day-of-week on the unit circle, and a weekend flag.

    Args:
        ds: timestamps (UTC, or naive taken as UTC).
        tz: time zone whose clock the cycles follow (default UTC).

    Returns:
        Columns ``tod_sin, tod_cos, dow_sin, dow_cos, is_weekend`` (float64), one row per
        timestamp, with ``ds``'s index when it is a Series.
    """
    index = pd.DatetimeIndex(ds)
    if index.tz is None:
        index = index.tz_localize("UTC")
    if tz:
        index = index.tz_convert(tz)
    seconds = index.hour * 3600 + index.minute * 60 + index.second
    tod = 2 * np.pi * np.asarray(seconds, dtype="float64") / 86400.0
    dow = 2 * np.pi * np.asarray(index.dayofweek, dtype="float64") / 7.0
    out = pd.DataFrame({
        "tod_sin": np.sin(tod), "tod_cos": np.cos(tod),
        "dow_sin": np.sin(dow), "dow_cos": np.cos(dow),
        "is_weekend": (np.asarray(index.dayofweek) >= 5).astype("float64"),
    }, index=ds.index if isinstance(ds, pd.Series) else None)
    return out
