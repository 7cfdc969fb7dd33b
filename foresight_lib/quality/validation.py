"""Data validation with Great Expectations (GX 1.x): quarantine bad series, fail on too many.

Three suites, kept as JSON in ``validation.suite_dir`` (``include/gx``):

- ``foresight.schema`` on the raw frame: columns, types, UTC timestamps. A failure there
  means the frame as a whole is unusable: every series fails.
- ``foresight.rows`` on every row, plus one value-range expectation per rule of
  ``validation.ranges``: duplicate ``(unique_id, ds)``, missing or backwards timestamps,
  infinite values, absurd magnitudes (beyond ``validation.max_abs_value``), values out of
  range, series unknown to the series table. Failing rows are mapped back to their series
  through GX's ``unexpected_index_list`` (``result_format`` COMPLETE). Each bad value is
  counted once: an infinity only as infinite, an absurd value only as absurd.
- ``foresight.series`` on a one-row-per-series table computed from the frame: enough rows,
  completeness on the frequency grid, share of NaN values, constant series, and freshness:
  the time from the series' last point to the run's data interval end (``data_end``).

Identical duplicate rows (same ``unique_id, ds, y``: two exports that overlap) are dropped
and counted before the suites run; duplicates with different values still quarantine.
Completeness counts grid slots on the assignment of points to slots the features step
uses (``foresight_lib.quality.grid``): a point within ``features.grid_tolerance`` of the
step before a mark counts for that mark.

A series whose last point is older than ``validation.max_staleness`` (default three steps
or 15 minutes, whichever is longer) is quarantined as stale; when more than
``validation.max_stale_share`` of the series are stale the source as a whole is stale and
validation fails, naming the source, the last timestamp seen and the setting.

Out-of-range and infinite values within a series' tolerance (the rule's ``mostly``,
``validation.max_non_finite_share``) become NaN; more quarantine the series. An absurd
magnitude is never tolerated.

The suites run on an ephemeral GX context (no project folder is needed), on chunks of
whole series of about ``validation.chunk_rows`` rows, so memory stays that of one chunk
however many series there are; the chunks' results are merged into one per expectation
(``gx_runner.merge_results``), as one pass over every row would give them. A series with
any failure is quarantined with its reasons; the run fails (:class:`ValidationFailed`)
when the share of failed series exceeds ``validation.max_failed_share`` (series
quarantined only for being constant are left out of that share: they are not broken
data) or when no series passes. The outcome, with a self-contained HTML report, is
attached to that exception as ``exc.outcome`` so the caller can still store it.
"""
from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from foresight_lib.config import ForesightConfig, ValidationConfig
from foresight_lib.errors import DataError, ValidationFailed
from foresight_lib.frames import categorical_ids, sort_series, split_unique_id
from foresight_lib.horizons import format_duration, to_timedelta
from foresight_lib.quality.grid import DEFAULT_GRID_TOLERANCE, grid_slots
from foresight_lib.quality.gx_runner import (
    SUITES,
    GxRunner,
    build_suite,
    clean_result,
    failed_expectations,
    load_suite_spec,
    merge_results,
    range_expectations,
)
from foresight_lib.quality.ranges import (
    clip_to_physical_range,
    magnitude_cap,
    match_range_rule,
    physical_bounds,
    validation_settings,
)
from foresight_lib.quality.validation_report import render_html

__all__ = [
    "REASON_COLUMN", "SUITES", "ValidationOutcome", "clip_to_physical_range", "load_suite_spec",
    "match_range_rule", "physical_bounds", "render_html", "validate_frame",
]

log = logging.getLogger(__name__)

REASON_COLUMN = "reason"
MIN_STALENESS = pd.Timedelta("15min")
"""The default staleness limit is three steps of a series, but never below this."""
STALENESS_STEPS = 3


@dataclass
class ValidationOutcome:
    """What validation found.

    Attributes:
        valid: rows of the series that passed (``unique_id, ds, y``, sorted); values out
            of range in a series within its tolerance (``mostly``) are set to NaN.
        quarantine: rows of the failed series with a ``reason`` column.
        reasons: failed ``unique_id`` -> readable reasons.
        summary: counts, failed expectations, share failed, thresholds (JSON-able).
        html: a self-contained HTML report of every expectation and the quarantined series.
        results: every GX expectation result as a JSON-able dict.
        series: the series table restricted to the valid series (None if none was given).
    """

    valid: pd.DataFrame
    quarantine: pd.DataFrame
    reasons: dict[str, list[str]]
    summary: dict[str, Any]
    html: str
    results: list[dict[str, Any]] = field(default_factory=list)
    series: pd.DataFrame | None = None

    @property
    def passed(self) -> bool:
        return bool(self.summary.get("passed"))

    def to_json(self) -> dict[str, Any]:
        """Summary and reasons, for a JSON file beside the report."""
        return {"summary": self.summary, "reasons": self.reasons}


def _settings(cfg: ForesightConfig | ValidationConfig | None, freq: str | None) -> tuple[ValidationConfig, str]:
    vcfg = validation_settings(cfg)
    return vcfg, freq or (cfg.freq if isinstance(cfg, ForesightConfig) else "5min")


@dataclass(frozen=True)
class _Grid:
    """How points are judged in time: the grid tolerance and the data interval end (freshness)."""

    tolerance: float = DEFAULT_GRID_TOLERANCE
    data_end_ns: int | None = None
    max_staleness: pd.Timedelta | None = None
    """The configured limit; None: ``STALENESS_STEPS`` steps of the series or ``MIN_STALENESS``."""

    def limit_ns(self, step_ns: np.ndarray) -> np.ndarray:
        """Each series' staleness limit (ns) from its step (ns)."""
        if self.max_staleness is not None:
            return np.full(step_ns.shape, self.max_staleness.value, dtype=np.int64)
        return np.maximum(STALENESS_STEPS * step_ns, MIN_STALENESS.value).astype(np.int64)


def _utc_ns(value) -> int:
    stamp = pd.Timestamp(value)
    return (stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")).value


def _series_of(items: list, frame: pd.DataFrame) -> list[str]:
    """unique_ids of GX unexpected_index_list entries (row indices or column-value dicts)."""
    if not items:
        return []
    if isinstance(items[0], dict):
        return [str(i["unique_id"]) for i in items if "unique_id" in i]
    return frame["unique_id"].take(np.asarray(items, dtype=np.int64)).astype(str).tolist()


def validate_frame(frame: pd.DataFrame, series_table: pd.DataFrame | None = None,
                   cfg: ForesightConfig | ValidationConfig | None = None, *, freq: str | None = None,
                   raise_on_failure: bool = True, data_end=None, grid_tolerance: float | None = None,
                   source: str | None = None) -> ValidationOutcome:
    """Validate a raw long frame; quarantine failing series.

    Args:
        frame: ``unique_id, ds, y`` (other columns are ignored).
        series_table: optional series table (``unique_id, metric`` at least; ``freq`` if
            present sets each series' grid for completeness); series missing from the
            frame, and rows of series missing from it, fail.
        cfg: the whole config or its ``validation`` section (defaults if None).
        freq: the frequency grid for completeness (default: ``cfg.freq`` or 5min).
        raise_on_failure: raise :class:`ValidationFailed` over the threshold (default).
        data_end: the run's data interval end; when given, each series' age (the time
            from its last point to it) is judged against ``validation.max_staleness``.
        grid_tolerance: share of the step before a grid mark that counts for the mark
            (default ``cfg.features.grid_tolerance``, else 0.1).
        source: the source's name for messages (e.g. ``files /data/nab (format nab)``).

    Raises:
        ValidationFailed: the share of failed series is above ``max_failed_share``, more
            than ``max_stale_share`` of the series are stale, or the frame's schema is
            wrong; ``exc.outcome`` holds the full outcome and report.
        DataError: the frame is empty or not a DataFrame.
    """
    started = time.perf_counter()
    vcfg, freq = _settings(cfg, freq)
    if grid_tolerance is None:
        grid_tolerance = cfg.features.grid_tolerance if isinstance(cfg, ForesightConfig) else DEFAULT_GRID_TOLERANCE
    grid = _Grid(float(grid_tolerance), None if data_end is None else _utc_ns(data_end),
                 None if vcfg.max_staleness is None else to_timedelta(vcfg.max_staleness))
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"validation needs a pandas DataFrame, got {type(frame).__name__}")
    if frame.empty:
        raise DataError("no rows to validate; check the source settings and the run's data interval")
    runner = GxRunner()
    gx = runner.gx
    specs = {name: load_suite_spec(vcfg.suite_dir, name) for name in SUITES}

    raw = frame.reset_index(drop=True)
    schema_suite = build_suite(gx, specs["foresight_schema"])
    schema_results = merge_results([runner.run(schema_suite, raw.iloc[start:start + vcfg.chunk_rows])
                                    for start in range(0, len(raw), vcfg.chunk_rows)])
    if not all(r["success"] for r in schema_results):
        outcome = _schema_failure(raw, schema_results, vcfg, freq, started)
        if raise_on_failure:
            raise _failed(outcome)
        return outcome

    raw, dropped = _drop_identical_duplicates(raw)
    raw["unique_id"] = categorical_ids(raw["unique_id"])  # every chunk's pieces share its categories
    rules = range_expectations(vcfg.ranges, _used_rules(raw, series_table, vcfg))
    row_suite = build_suite(gx, specs["foresight_rows"], rules)
    series_suite = build_suite(gx, specs["foresight_series"])
    end_ns = _last_value_ns(raw)
    present = set(raw["unique_id"].cat.categories)
    missing = ([] if series_table is None else
               [u for u in dict.fromkeys(series_table["unique_id"].astype(str)) if u not in present])
    chunks = [_check_chunk(runner, row_suite, series_suite, chunk, series_table, vcfg, freq, end_ns, grid,
                           missing if i == 0 else [])
              for i, chunk in enumerate(_series_chunks(raw, vcfg.chunk_rows))]
    del raw
    outcome = _build_outcome(chunks, series_table, [schema_results], vcfg, freq, started)
    _add_data_notes(outcome, chunks, dropped, grid, vcfg, source)
    log.info("validated %d series in %d chunk(s) in %.1f s: %d quarantined (%d only constant; %.0f%% failed)",
             outcome.summary["series_total"], len(chunks), outcome.summary["seconds"],
             outcome.summary["series_failed"], outcome.summary["series_constant_only"],
             100 * outcome.summary["failed_share"])
    if raise_on_failure and not outcome.passed:
        raise _failed(outcome)
    return outcome


def _drop_identical_duplicates(raw: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """``raw`` without repeated identical rows (same id, time and value), and how many each series lost.

    Two exports that overlap repeat the same rows; only rows whose values differ are
    conflicting duplicates, left for the duplicates check.
    """
    same_key = raw.duplicated(["unique_id", "ds"], keep=False)
    if not same_key.any():
        return raw, {}
    repeated = raw.duplicated(["unique_id", "ds", "y"]) & same_key
    if not repeated.any():
        return raw, {}
    counts = raw.loc[repeated, "unique_id"].astype(str).value_counts()
    log.info("dropped %d identical duplicate row(s) in %d series", int(repeated.sum()), len(counts))
    return raw.loc[~repeated].reset_index(drop=True), {str(k): int(v) for k, v in counts.items()}


def _add_data_notes(outcome: ValidationOutcome, chunks: list[_Chunk], dropped: dict[str, int], grid: _Grid,
                    vcfg: ValidationConfig, source: str | None) -> None:
    """Duplicates dropped and the data's age in the summary; the source-level freshness verdict."""
    s = outcome.summary
    s["duplicates_dropped"] = int(sum(dropped.values()))
    if dropped:
        s["duplicates_dropped_by_series"] = dict(sorted(dropped.items(), key=lambda kv: -kv[1])[:20])
    s["grid_tolerance"] = grid.tolerance
    if grid.data_end_ns is None:
        return
    stats = pd.concat([c.per_series[["unique_id", "last_ns", "age_s", "age_share", "limit_s"]] for c in chunks],
                      ignore_index=True)
    known = stats[stats["last_ns"].notna()]
    stale = stats[stats["age_share"] > 1]
    total = int(s["series_total"])
    end = pd.Timestamp(grid.data_end_ns, tz="UTC")
    last = pd.Timestamp(int(known["last_ns"].max()), tz="UTC") if len(known) else None
    s.update({
        "data_interval_end": end.isoformat(),
        "last_timestamp": last.isoformat() if last is not None else None,
        "data_age_s": round((end - last).total_seconds(), 3) if last is not None else None,
        "series_age_s": {"min": _round(known["age_s"].min()), "median": _round(known["age_s"].median()),
                         "max": _round(known["age_s"].max())} if len(known) else {},
        "max_staleness": format_duration(grid.max_staleness) if grid.max_staleness is not None else
        f"{STALENESS_STEPS} steps or {format_duration(MIN_STALENESS)}, whichever is longer",
        "series_stale": int(len(stale)),
        "stale_share": round(len(stale) / total, 6) if total else 0.0,
        "max_stale_share": vcfg.max_stale_share,
        "source": source,
    })
    if total and len(stale) / total > s["max_stale_share"]:
        s["passed"] = False
        s["source_stale"] = True


def _round(value) -> float | None:
    return None if pd.isna(value) else round(float(value), 3)


@dataclass
class _Chunk:
    """What the row and series suites found on one chunk of series."""

    per_series: pd.DataFrame
    reasons: dict[str, list[str]]
    checks: dict[str, list[str]]
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    rows: int
    nulled: int
    row_results: list[dict[str, Any]]
    series_results: list[dict[str, Any]]


def _series_chunks(raw: pd.DataFrame, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """``raw`` cut into frames of whole series with about ``chunk_rows`` rows each (in id order)."""
    codes = raw["unique_id"].cat.codes.to_numpy()
    sizes = np.bincount(codes, minlength=len(raw["unique_id"].cat.categories))
    ends = np.cumsum(sizes)
    bounds, start = [], 0
    for code, end in enumerate(ends):
        if end - (ends[start - 1] if start else 0) >= chunk_rows or code == len(ends) - 1:
            bounds.append((start, code + 1))
            start = code + 1
    in_order = bool((np.diff(codes) >= 0).all())
    for first, last in bounds:
        if in_order:
            rows = slice(int(ends[first - 1]) if first else 0, int(ends[last - 1]))
            yield raw.iloc[rows].reset_index(drop=True)
        else:
            yield raw[(codes >= first) & (codes < last)].reset_index(drop=True)


def _used_rules(raw: pd.DataFrame, series_table: pd.DataFrame | None, vcfg: ValidationConfig) -> list[str]:
    """The range rules some series of ``raw`` fall under (one expectation each), as ``_prepare`` matches them."""
    metrics = _metrics([str(uid) for uid in raw["unique_id"].cat.categories], _table_metrics(series_table))
    rules = {match_range_rule(metric, vcfg.ranges) for metric in set(metrics)}
    return [key for key in vcfg.ranges if key in rules]


def _table_metrics(series_table: pd.DataFrame | None) -> dict[str, str] | None:
    """unique_id -> metric from the series table; None without one (or without its metric column)."""
    if series_table is None or "metric" not in series_table.columns:
        return None
    return dict(zip(series_table["unique_id"].astype(str), series_table["metric"].astype(str), strict=False))


def _metrics(ids: list[str], metric_of: dict[str, str] | None) -> list[str]:
    """Each id's metric: the series table's, else the id's ``<metric>/`` part."""
    return [(metric_of or {}).get(uid) or split_unique_id(uid)[0] for uid in ids]


def _last_value_ns(raw: pd.DataFrame) -> int:
    """The frame's last timestamp holding a value (completeness counts grid slots up to it), in ns."""
    last = raw.loc[raw["y"].notna(), "ds"].max()
    if pd.isna(last):
        return 0
    last = pd.Timestamp(last)
    return (last.tz_localize("UTC") if last.tz is None else last.tz_convert("UTC")).value


def _check_chunk(runner, row_suite, series_suite, raw: pd.DataFrame, series_table, vcfg, freq: str, end_ns: int,
                 grid: _Grid, missing: list[str]) -> _Chunk:
    work = _prepare(raw, series_table, vcfg)
    checked = work[["unique_id", "ds", "y_in_scale", "ds_step_s", "in_series_table", "range_rule",
                    "y_not_infinite", "y_share_of_cap"]].rename(columns={"y_in_scale": "y"})
    row_results = runner.run(row_suite, checked)
    del checked
    per_series = _series_stats(work, series_table, freq, end_ns, missing, grid)
    series_results = runner.run(series_suite, per_series,
                                {"min_completeness": vcfg.min_completeness, "max_null_share": vcfg.max_null_share,
                                 "min_relative_std": vcfg.min_relative_std})
    reasons, checks, nulled = _collect_reasons(work, per_series, row_results, series_results, vcfg)
    valid, quarantine = _split_rows(work, reasons, nulled)
    return _Chunk(per_series, reasons, checks, valid, quarantine, len(work), int(len(nulled)),
                  [clean_result(r) for r in row_results], [clean_result(r) for r in series_results])


def _prepare(raw: pd.DataFrame, series_table: pd.DataFrame | None, vcfg: ValidationConfig) -> pd.DataFrame:
    """The frame GX checks: contract columns plus ``metric``, ``range_rule``, ``ds_step_s``, ``in_series_table``.

    Value checks see each bad value once: ``y_not_infinite`` flags ±inf, ``y_share_of_cap``
    is ``|y|`` over the metric's magnitude cap (NaN for ±inf), and ``y_in_scale``, what the
    range rules check, is ``y`` without infinities and absurd values.

    Per-series values are computed on factorized ids (``_code``), which is much faster than
    mapping string columns row by row.
    """
    work = pd.DataFrame({
        "unique_id": raw["unique_id"] if isinstance(raw["unique_id"].dtype, pd.CategoricalDtype)
        else categorical_ids(raw["unique_id"]),
        "ds": raw["ds"].dt.tz_convert("UTC").astype("datetime64[ns, UTC]"),
        "y": raw["y"].astype("float64"),
    })
    codes, uniques = pd.factorize(work["unique_id"])
    ids = [str(u) for u in uniques]
    metric_of = _table_metrics(series_table)
    known = (np.array([uid in metric_of for uid in ids], dtype=bool) if metric_of is not None
             else np.ones(len(ids), dtype=bool))
    metrics = _metrics(ids, metric_of)
    rule_of = {m: match_range_rule(m, vcfg.ranges) or "" for m in set(metrics)}
    cap_of = {key: magnitude_cap(vcfg.ranges.get(key), vcfg) for key in set(rule_of.values())}
    work["_code"] = codes
    work["in_series_table"] = known[codes]
    work["metric"] = _per_row(metrics, codes)
    work["range_rule"] = _per_row([rule_of[m] for m in metrics], codes)
    work["ds_step_s"] = work.groupby("_code", sort=False)["ds"].diff().dt.total_seconds()
    y = work["y"].to_numpy()
    infinite = np.isinf(y)
    cap = np.asarray([cap_of[rule_of[m]] for m in metrics], dtype="float64")[codes]
    with np.errstate(invalid="ignore"):
        share = np.where(infinite, np.nan, np.abs(y) / cap)
    work["y_not_infinite"] = ~infinite
    work["y_share_of_cap"] = share
    work["y_in_scale"] = np.where(infinite | (share > 1), np.nan, y)
    work.attrs["ids"] = ids
    return work


def _per_row(values: list[str], codes: np.ndarray) -> pd.Categorical:
    """One value per series spread over its rows (by factorized id), as a categorical."""
    categories = sorted(set(values))
    position = {value: i for i, value in enumerate(categories)}
    per_series = np.asarray([position[v] for v in values], dtype=np.int32)
    return pd.Categorical.from_codes(per_series[codes] if len(codes) else codes, categories)


def _series_stats(work: pd.DataFrame, series_table: pd.DataFrame | None, freq: str, end_ns: int,
                  missing: list[str], grid: _Grid | None = None) -> pd.DataFrame:
    """One row per series: rows, NaN share, completeness on its grid up to the frame's end, age.

    Completeness is the share of grid slots (``freq``, or the series' own coarser
    ``freq`` from the series table) from the series' first value to the whole frame's
    last timestamp with a value (``end_ns``) that hold at least one value, points being
    put in slots as the features step puts them (``grid_slots``, with the grid
    tolerance). ``age_s`` is the time from the series' last value to the data interval
    end and ``age_share`` that over the series' staleness limit (``limit_s``); both NaN
    without a data interval end. ``missing``: series of the table with no row, added.
    """
    grid = grid or _Grid()
    base_step = to_timedelta(freq)
    ids = list(work.attrs["ids"])
    extra = list(missing)
    steps = {uid: base_step for uid in ids + extra}
    if series_table is not None and "freq" in series_table.columns:
        for uid, native in zip(series_table["unique_id"].astype(str), series_table["freq"], strict=False):
            try:
                steps[uid] = max(base_step, to_timedelta(str(native))) if native else base_step
            except Exception:  # noqa: BLE001 - an unreadable native frequency falls back to the grid
                steps[uid] = base_step
    n = len(ids)
    codes = work["_code"].to_numpy()
    rows = np.bincount(codes, minlength=n)
    nulls = np.bincount(codes, weights=work["y"].isna().to_numpy(), minlength=n).astype(np.int64)
    step_ns = np.array([steps[uid].value for uid in ids], dtype=np.int64)
    ok = (work["y"].notna() & work["ds"].notna()).to_numpy()
    ok_codes = codes[ok]
    ds_ns = work["ds"].array.asi8[ok]
    slots = grid_slots(ds_ns, step_ns[ok_codes], grid.tolerance)
    pairs = pd.DataFrame({"c": ok_codes, "s": slots}).drop_duplicates()
    present = np.bincount(pairs["c"].to_numpy(), minlength=n)
    first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, ok_codes, slots)
    expected = np.where(present > 0, grid_slots(np.int64(end_ns), step_ns, grid.tolerance) - first + 1, 0)
    last = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, ok_codes, ds_ns)
    table = pd.DataFrame({
        "unique_id": ids, "rows": rows.astype(np.int64), "nulls": nulls,
        "step_s": step_ns / 1e9, "expected": expected.astype(np.int64), "present": present.astype(np.int64),
        "last_ns": np.where(present > 0, last, np.nan),
    })
    if extra:
        table = pd.concat([table, pd.DataFrame({
            "unique_id": extra, "rows": 0, "nulls": 0, "step_s": [steps[u].total_seconds() for u in extra],
            "expected": 0, "present": 0, "last_ns": np.nan,
        })], ignore_index=True)
    limit_ns = grid.limit_ns((table["step_s"].to_numpy() * 1e9).astype(np.int64))
    table["limit_s"] = limit_ns / 1e9
    if grid.data_end_ns is None:
        table["age_s"] = np.nan
    else:
        table["age_s"] = (grid.data_end_ns - table["last_ns"]) / 1e9
    table["age_share"] = table["age_s"] / table["limit_s"]
    table["null_share"] = np.where(table["rows"] > 0, table["nulls"] / table["rows"].clip(lower=1), 1.0)
    table["completeness"] = np.where(table["expected"] > 0, table["present"] / table["expected"].clip(lower=1), 0.0)
    spread = _spread(work, n)
    if extra:
        spread = pd.concat([spread, pd.DataFrame(np.nan, index=range(len(extra)), columns=spread.columns)],
                           ignore_index=True)
    return pd.concat([table, spread], axis=1)


def _spread(work: pd.DataFrame, n: int) -> pd.DataFrame:
    """Per series (by code): how far its finite values spread, for the constant-series check.

    ``relative_std`` is the standard deviation over the mean absolute value (0 for an
    all-zero series, NaN with fewer than two finite values, which other checks catch).
    Deviations are taken from each series' mean first (two passes), so large levels with
    tiny changes (memory in bytes) do not lose them to rounding.
    """
    y = work["y"].to_numpy()
    codes = work["_code"].to_numpy()
    fin = np.isfinite(y)
    yc, cc = y[fin], codes[fin]
    count = np.bincount(cc, minlength=n).astype("float64")
    with np.errstate(all="ignore"):
        mean = np.bincount(cc, weights=yc, minlength=n) / count
        dev = yc - mean[cc]
        std = np.sqrt(np.bincount(cc, weights=dev * dev, minlength=n) / count)
        mean_abs = np.bincount(cc, weights=np.abs(yc), minlength=n) / count
        relative = np.where(mean_abs > 0, std / mean_abs, np.where(std > 0, np.inf, 0.0))
    first = np.full(n, np.nan)
    if len(cc):
        order = np.unique(cc, return_index=True)
        first[order[0]] = yc[order[1]]
    return pd.DataFrame({
        "values": count.astype(np.int64), "std": np.where(count >= 2, std, np.nan),
        "mean_abs": np.where(count >= 1, mean_abs, np.nan), "first_value": first,
        "relative_std": np.where(count >= 2, relative, np.nan),
    })


def _collect_reasons(work, per_series, row_results, series_results, vcfg):
    """Failed unique_id -> reasons, and the row indices whose value is nulled (tolerated out of range)."""
    reasons: dict[str, list[str]] = defaultdict(list)
    checks: dict[str, list[str]] = defaultdict(list)
    nulled: list[np.ndarray] = []

    def add(uid: str, check: str, text: str) -> None:
        reasons[uid].append(text)
        checks[uid].append(check)

    rows_of = pd.Series(np.bincount(work["_code"].to_numpy()), index=work.attrs["ids"])
    for res in row_results:
        meta = res["expectation_config"].get("meta") or {}
        check = meta.get("check")
        items = (res.get("result") or {}).get("unexpected_index_list") or []
        if res["success"] or not items:
            if not res["success"] and res.get("exception_info", {}).get("raised_exception"):
                for uid in rows_of.index:
                    add(uid, check, f"{check} check could not run: {res['exception_info']['exception_message']}")
            continue
        counts = Counter(_series_of(items, work))
        if check in ("range", "non_finite", "magnitude"):
            allowed = {"range": 1.0 - float(meta.get("mostly", 1.0)), "non_finite": vcfg.max_non_finite_share,
                       "magnitude": 0.0}[check]
            idx = np.asarray(items, dtype=np.int64) if not isinstance(items[0], dict) else None
            bad_values = work.loc[idx, ["unique_id", "y", "metric"]] if idx is not None else None
            for uid, count in counts.items():
                share = count / rows_of[uid]
                mine = bad_values[bad_values["unique_id"] == uid] if bad_values is not None else None
                if share > allowed + 1e-12:
                    add(uid, check, _value_reason(check, meta, count, rows_of[uid], share, allowed, mine, vcfg))
                elif idx is not None:
                    nulled.append(bad_values.index[bad_values["unique_id"] == uid].to_numpy())
            continue
        for uid, count in counts.items():
            add(uid, check, f"{meta.get('reason', check)}: {count} row(s)")
    stats = per_series.set_index("unique_id")
    for res in series_results:
        meta = res["expectation_config"].get("meta") or {}
        check = meta.get("check")
        items = (res.get("result") or {}).get("unexpected_index_list") or []
        if res["success"]:
            continue
        for uid in _series_of(items, per_series):
            row = {k: (int(v) if k in ("rows", "nulls", "present", "expected") else v)
                   for k, v in stats.loc[uid].items()}
            if check == "completeness":
                detail = (f"completeness {row['completeness']:.2f} < {vcfg.min_completeness:.2f} "
                          f"({row['present']} of {row['expected']} points at {_label(row['step_s'])})")
            elif check == "nulls":
                detail = (f"NaN share {row['null_share']:.2f} > {vcfg.max_null_share:.2f} "
                          f"({row['nulls']} of {row['rows']})")
            elif check == "stale":
                last = pd.Timestamp(int(row["last_ns"]), tz="UTC")
                detail = (f"last point {last.isoformat()}, {_age(row['age_s'])} before the data interval end, "
                          f"older than {_age(row['limit_s'])} (validation.max_staleness)")
            elif check == "too_short":
                detail = f"{row['rows']} row(s) in the window" if row["rows"] else "no rows in the window"
            elif check == "constant":
                detail = (f"all {int(row['values'])} finite values are {row['first_value']:.6g}" if row["std"] == 0
                          else f"standard deviation {row['std']:.3g} is {row['relative_std']:.2g} of the mean "
                               f"absolute value {row['mean_abs']:.6g}")
                detail += f" (validation.min_relative_std {vcfg.min_relative_std:g})"
            else:
                detail = check
            add(uid, check, f"{meta.get('reason', check)}: {detail}")
    nulled_idx = np.concatenate(nulled) if nulled else np.empty(0, dtype=np.int64)
    return dict(reasons), dict(checks), nulled_idx


def _value_reason(check: str, meta: dict, count: int, rows: int, share: float, allowed: float,
                  bad: pd.DataFrame | None, vcfg: ValidationConfig) -> str:
    """Why a series' bad values quarantine it: which bound, how many, the tolerance, an example."""
    first = None if bad is None or bad.empty else bad.iloc[0]
    example = "" if first is None else f", e.g. {first['y']:.6g}"
    if check == "non_finite":
        return (f"{meta.get('reason', check)}: {count} of {rows} rows ({share:.1%}) > allowed {allowed:.1%} "
                f"(validation.max_non_finite_share){example}")
    if check == "magnitude":
        cap = "" if first is None else f" ±{_cap(first, vcfg):g}"
        return (f"{meta.get('reason', check)}: {count} of {rows} rows beyond{cap} "
                f"(validation.max_abs_value; never tolerated){example}")
    rule = vcfg.ranges.get(meta.get("rule"))
    text = meta["reason"]
    if rule is not None and bad is not None and not bad.empty:
        below = rule.min is not None and bool((bad["y"] < rule.min).all())
        above = rule.max is not None and bool((bad["y"] > rule.max).all())
        if below or above:
            side, bound = ("below", rule.min) if below else ("above", rule.max)
            text = f"values {side} {bound:g} (range rule '{meta['rule']}')"
    return f"{text}: {count} of {rows} rows ({share:.1%}){example}"


def _cap(row, vcfg: ValidationConfig) -> float:
    key = match_range_rule(str(row["metric"]), vcfg.ranges)
    return magnitude_cap(vcfg.ranges.get(key) if key is not None else None, vcfg)


def _age(seconds: float) -> str:
    """A duration in seconds as short text, e.g. ``6h``, ``2d 3h``, ``15m``, ``4m 30s``."""
    whole = int(round(float(seconds)))
    if whole < 0:
        return "-" + _age(-whole)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size or (size == 1 and not parts):
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return " ".join(parts[:2])


def _label(step_s: float) -> str:
    seconds = int(step_s)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _split_rows(work: pd.DataFrame, reasons: dict[str, list[str]], nulled: np.ndarray):
    """The chunk's rows of passing series (tolerated bad values nulled) and of failed ones (with reasons)."""
    failed = set(reasons)
    failed_codes = np.array([uid in failed for uid in work.attrs["ids"]], dtype=bool)
    is_failed = pd.Series(failed_codes[work["_code"].to_numpy()] if len(failed_codes) else False, index=work.index)
    valid = work.loc[~is_failed, ["unique_id", "ds", "y"]]
    if len(nulled):
        keep = np.intersect1d(nulled, valid.index.to_numpy())
        valid.loc[keep, "y"] = np.nan
    quarantine = work.loc[is_failed, ["unique_id", "ds", "y"]]
    quarantine[REASON_COLUMN] = quarantine["unique_id"].map({u: "; ".join(r) for u, r in reasons.items()}).astype(str)
    return valid, quarantine


def _build_outcome(chunks: list[_Chunk], series_table, schema_results, vcfg, freq, started):
    reasons = {uid: texts for chunk in chunks for uid, texts in chunk.reasons.items()}
    checks = {uid: names for chunk in chunks for uid, names in chunk.checks.items()}
    all_ids = [uid for chunk in chunks for uid in chunk.per_series["unique_id"]]
    valid = _rows(chunk.valid for chunk in chunks)
    quarantine = _rows(chunk.quarantine for chunk in chunks)
    results = [*schema_results[0], *merge_results([c.row_results for c in chunks]),
               *merge_results([c.series_results for c in chunks])]
    series = None
    if series_table is not None:
        series = series_table[~series_table["unique_id"].astype(str).isin(set(reasons))].reset_index(drop=True)
    outcome = ValidationOutcome(valid=valid, quarantine=quarantine, reasons=reasons, summary={}, html="",
                                results=results, series=series)
    outcome.summary = _summary(all_ids, reasons, checks, sum(c.rows for c in chunks), len(valid), len(quarantine),
                               sum(c.nulled for c in chunks), results, vcfg, freq, started)
    outcome.html = render_html(outcome)
    return outcome


def _rows(pieces: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """The chunks' pieces as one frame sorted by ``unique_id, ds``, ids categorical (the series present)."""
    out = pd.concat(list(pieces), ignore_index=True)
    out["unique_id"] = categorical_ids(out["unique_id"])
    return sort_series(out)


def _summary(all_ids, reasons, checks, rows, rows_valid, rows_quarantined, nulled, results, vcfg, freq, started):
    total = len(all_ids)
    failed = len(reasons)
    constant_only = sum(1 for names in checks.values() if set(names) == {"constant"})
    share = (failed - constant_only) / total if total else 1.0
    by_check = Counter(check for names in checks.values() for check in dict.fromkeys(names))
    worst = sorted(reasons.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:5]
    return {
        "passed": share <= vcfg.max_failed_share and failed < total,
        "series_total": total, "series_failed": failed, "series_passed": total - failed,
        "series_constant_only": constant_only,
        "failed_share": round(share, 6), "max_failed_share": vcfg.max_failed_share,
        "rows_total": rows, "rows_valid": rows_valid, "rows_quarantined": rows_quarantined,
        "values_nulled": nulled, "min_completeness": vcfg.min_completeness,
        "max_null_share": vcfg.max_null_share, "max_non_finite_share": vcfg.max_non_finite_share,
        "max_abs_value": vcfg.max_abs_value, "min_relative_std": vcfg.min_relative_std, "freq": freq,
        "expectations_evaluated": len(results),
        "expectations_failed": sum(1 for r in results if not r["success"]),
        "failed_expectations": failed_expectations(results),
        "series_failed_by_check": dict(by_check),
        "worst_series": [{"unique_id": uid, "reasons": texts} for uid, texts in worst],
        "seconds": round(time.perf_counter() - started, 3),
    }


def _schema_failure(raw, results, vcfg, freq, started) -> ValidationOutcome:
    texts = [f"schema: {(r['expectation_config'].get('meta') or {}).get('reason', r['expectation_config']['type'])}"
             for r in results if not r["success"]]
    ids = (raw["unique_id"].astype(str).unique().tolist() if "unique_id" in raw.columns else ["(whole frame)"])
    reasons = {uid: list(texts) for uid in ids}
    checks = {uid: ["schema"] for uid in ids}
    quarantine = raw.copy()
    quarantine[REASON_COLUMN] = "; ".join(texts)
    outcome = ValidationOutcome(valid=raw.iloc[0:0].copy(), quarantine=quarantine, reasons=reasons, summary={},
                                html="", results=[clean_result(r) for r in results])
    outcome.summary = _summary(ids, reasons, checks, len(raw), 0, len(raw), 0, results, vcfg, freq, started)
    outcome.summary["passed"] = False
    outcome.summary["schema_failed"] = True
    outcome.html = render_html(outcome)
    return outcome


def _failed(outcome: ValidationOutcome) -> ValidationFailed:
    s = outcome.summary
    counted = s["series_failed"] - s.get("series_constant_only", 0)
    if s.get("schema_failed"):
        first = "the frame's schema is wrong, so no series can be validated"
    elif s.get("source_stale"):
        first = (f"the source{' ' + s['source'] if s.get('source') else ''} is stale: its last timestamp is "
                 f"{s['last_timestamp']}, {_age(s['data_age_s'])} before the data interval end "
                 f"{s['data_interval_end']}; {s['series_stale']} of {s['series_total']} series have no point in the "
                 f"last {s['max_staleness']} (validation.max_staleness), more than "
                 f"{s['max_stale_share']:.0%} (validation.max_stale_share). Check that the exporter or scrape "
                 "still runs; nothing was trained or published")
    elif s["failed_share"] <= s["max_failed_share"]:
        first = f"no series passed validation (all {s['series_total']} quarantined)"
    else:
        first = (f"{counted} of {s['series_total']} series failed validation "
                 f"({s['failed_share']:.0%} > allowed {s['max_failed_share']:.0%})")
    if s.get("series_constant_only"):
        first += f"; {s['series_constant_only']} constant series also quarantined (not counted)"
    lines = [first]
    failed = s["failed_expectations"][:5]
    if failed:
        lines.append("failed expectations: " + "; ".join(
            f"{f['expectation']}({f['column'] or ''}{', ' + f['rule'] if f['rule'] else ''})"
            f"{' unexpected=' + str(f['unexpected_count']) if f['unexpected_count'] is not None else ''}"
            for f in failed))
    for item in s["worst_series"][:3]:
        lines.append(f"  {item['unique_id']}: {'; '.join(item['reasons'])}")
    lines.append("fix the source data or raise validation.max_failed_share; the full report is in the run "
                 "folder (validation/report.html)")
    exc = ValidationFailed("\n".join(lines))
    exc.outcome = outcome
    return exc
