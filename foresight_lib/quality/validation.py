"""Data validation with Great Expectations (GX 1.x): quarantine bad series, fail on too many.

Three suites, kept as JSON in ``validation.suite_dir`` (``include/gx``):

- ``foresight.schema`` on the raw frame: columns, types, UTC timestamps. A failure there
  means the frame as a whole is unusable: every series fails.
- ``foresight.rows`` on the whole frame, plus one value-range expectation per rule of
  ``validation.ranges``: duplicate ``(unique_id, ds)``, missing or backwards timestamps,
  infinite values, absurd magnitudes (beyond ``validation.max_abs_value``), values out of
  range, series unknown to the series table. Failing rows are mapped back to their series
  through GX's ``unexpected_index_list`` (``result_format`` COMPLETE). Each bad value is
  counted once: an infinity only as infinite, an absurd value only as absurd.
- ``foresight.series`` on a one-row-per-series table computed from the frame: enough rows,
  completeness on the frequency grid, share of NaN values, constant series.

Out-of-range and infinite values within a series' tolerance (the rule's ``mostly``,
``validation.max_non_finite_share``) become NaN; more quarantine the series. An absurd
magnitude is never tolerated.

The suites run once each on an ephemeral GX context (no project folder is needed), so a
few hundred series take a few seconds. A series with any failure is quarantined with its
reasons; the run fails (:class:`ValidationFailed`) when the share of failed series exceeds
``validation.max_failed_share`` (series quarantined only for being constant are left out
of that share: they are not broken data) or when no series passes. The outcome, with a
self-contained HTML report, is attached to that exception as ``exc.outcome`` so the
caller can still store it.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from foresight_lib.config import ForesightConfig, ValidationConfig, foresight_home, resolve_path
from foresight_lib.errors import ConfigError, DataError, ValidationFailed
from foresight_lib.frames import split_unique_id
from foresight_lib.horizons import to_timedelta
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

SUITES = ("foresight_schema", "foresight_rows", "foresight_series")
REASON_COLUMN = "reason"


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


def load_suite_spec(suite_dir: str | os.PathLike, name: str) -> dict[str, Any]:
    """The JSON of suite ``name`` from ``suite_dir``.

    Raises:
        ConfigError: the file is missing or not valid JSON.
    """
    path = Path(resolve_path(str(suite_dir), foresight_home())) / f"{name}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"expectation suite {path} not found; set validation.suite_dir to the folder holding "
                          f"{', '.join(s + '.json' for s in SUITES)} (default include/gx)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"expectation suite {path} is not valid JSON: {exc}") from None


def quiet_gx() -> None:
    """GX's own INFO lines (hundreds per run: registrations, temporary folders) become silent.

    Only when nobody set the ``great_expectations`` logger's level: its warnings and errors
    still show, and a user who wants its INFO lines sets the level themselves.
    """
    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:
        gx_logger.setLevel(logging.WARNING)


class _Runner:
    """One ephemeral GX context running suites on pandas frames."""

    def __init__(self):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        quiet_gx()
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        # GX pins this logger to INFO for a notice about temporary folders; it follows its parent
        logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.NOTSET)

        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.source = self.context.data_sources.add_pandas("foresight")

    def run(self, suite, frame: pd.DataFrame, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        gx = self.gx
        suite = self.context.suites.add(suite)
        asset = self.source.add_dataframe_asset(suite.name)
        batch = asset.add_batch_definition_whole_dataframe(f"{suite.name}.all")
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite.name}.validation", data=batch, suite=suite))
        result = definition.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters or {},
                                result_format={"result_format": "COMPLETE", "return_unexpected_index_query": False})
        order = {e.id: i for i, e in enumerate(suite.expectations)}
        out = []
        for item in result.results:
            d = item.to_json_dict()
            d["suite"] = suite.name
            d["_order"] = order.get(item.expectation_config.id, len(order))
            out.append(d)
        return sorted(out, key=lambda d: d["_order"])


def _suite(gx, spec: dict[str, Any], extra: list | None = None):
    suite = gx.ExpectationSuite(name=spec["name"], expectations=spec.get("expectations", []),
                                meta=spec.get("meta") or {})
    for expectation in extra or []:
        suite.add_expectation(expectation)
    return suite


def _range_expectations(rules: dict[str, Any], used: list[str]) -> list:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    out = []
    for key in used:
        rule = rules[key]
        if rule.min is None and rule.max is None:
            continue
        if rule.max is None:
            bounds = f"below {rule.min:g}"
        elif rule.min is None:
            bounds = f"above {rule.max:g}"
        else:
            bounds = f"outside [{rule.min:g}, {rule.max:g}]"
        out.append(gxe.ExpectColumnValuesToBeBetween(
            column="y", min_value=rule.min, max_value=rule.max, row_condition=Column("range_rule") == key,
            meta={"check": "range", "rule": key, "mostly": rule.mostly,
                  "reason": f"values {bounds} (range rule '{key}')"},
        ))
    return out


def _series_of(items: list, frame: pd.DataFrame) -> list[str]:
    """unique_ids of GX unexpected_index_list entries (row indices or column-value dicts)."""
    if not items:
        return []
    if isinstance(items[0], dict):
        return [str(i["unique_id"]) for i in items if "unique_id" in i]
    return frame["unique_id"].take(np.asarray(items, dtype=np.int64)).astype(str).tolist()


def validate_frame(frame: pd.DataFrame, series_table: pd.DataFrame | None = None,
                   cfg: ForesightConfig | ValidationConfig | None = None, *, freq: str | None = None,
                   raise_on_failure: bool = True) -> ValidationOutcome:
    """Validate a raw long frame; quarantine failing series.

    Args:
        frame: ``unique_id, ds, y`` (other columns are ignored).
        series_table: optional series table (``unique_id, metric`` at least; ``freq`` if
            present sets each series' grid for completeness); series missing from the
            frame, and rows of series missing from it, fail.
        cfg: the whole config or its ``validation`` section (defaults if None).
        freq: the frequency grid for completeness (default: ``cfg.freq`` or 5min).
        raise_on_failure: raise :class:`ValidationFailed` over the threshold (default).

    Raises:
        ValidationFailed: the share of failed series is above ``max_failed_share``, or the
            frame's schema is wrong; ``exc.outcome`` holds the full outcome and report.
        DataError: the frame is empty or not a DataFrame.
    """
    started = time.perf_counter()
    vcfg, freq = _settings(cfg, freq)
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"validation needs a pandas DataFrame, got {type(frame).__name__}")
    if frame.empty:
        raise DataError("no rows to validate; check the source settings and the run's data interval")
    runner = _Runner()
    gx = runner.gx
    specs = {name: load_suite_spec(vcfg.suite_dir, name) for name in SUITES}

    raw = frame.reset_index(drop=True)
    schema_results = runner.run(_suite(gx, specs["foresight_schema"]), raw)
    if not all(r["success"] for r in schema_results):
        outcome = _schema_failure(raw, schema_results, vcfg, freq, started)
        if raise_on_failure:
            raise _failed(outcome)
        return outcome

    work = _prepare(raw, series_table, vcfg)
    used_rules = [k for k in vcfg.ranges if (work["range_rule"] == k).any()]
    row_suite = _suite(gx, specs["foresight_rows"], _range_expectations(vcfg.ranges, used_rules))
    checked = work[["unique_id", "ds", "y_in_scale", "ds_step_s", "in_series_table", "range_rule",
                    "y_not_infinite", "y_share_of_cap"]].rename(columns={"y_in_scale": "y"}).astype(
        {"unique_id": "category", "range_rule": "category"})
    row_results = runner.run(row_suite, checked)

    per_series = _series_stats(work, series_table, freq)
    series_results = runner.run(_suite(gx, specs["foresight_series"]), per_series,
                                {"min_completeness": vcfg.min_completeness, "max_null_share": vcfg.max_null_share,
                                 "min_relative_std": vcfg.min_relative_std})

    reasons, checks, nulled = _collect_reasons(work, per_series, row_results, series_results, vcfg)
    outcome = _build_outcome(work, per_series, series_table, reasons, checks, nulled,
                             schema_results + row_results + series_results, vcfg, freq, started)
    log.info("validated %d series in %.1f s: %d quarantined (%d only constant; %.0f%% failed)",
             outcome.summary["series_total"], outcome.summary["seconds"], outcome.summary["series_failed"],
             outcome.summary["series_constant_only"], 100 * outcome.summary["failed_share"])
    if raise_on_failure and not outcome.passed:
        raise _failed(outcome)
    return outcome


def _prepare(raw: pd.DataFrame, series_table: pd.DataFrame | None, vcfg: ValidationConfig) -> pd.DataFrame:
    """The frame GX checks: contract columns plus ``metric``, ``range_rule``, ``ds_step_s``, ``in_series_table``.

    Value checks see each bad value once: ``y_not_infinite`` flags ±inf, ``y_share_of_cap``
    is ``|y|`` over the metric's magnitude cap (NaN for ±inf), and ``y_in_scale``, what the
    range rules check, is ``y`` without infinities and absurd values.

    Per-series values are computed on factorized ids (``_code``), which is much faster than
    mapping string columns row by row.
    """
    work = pd.DataFrame({
        "unique_id": raw["unique_id"].astype(str),
        "ds": raw["ds"].dt.tz_convert("UTC").astype("datetime64[ns, UTC]"),
        "y": raw["y"].astype("float64"),
    })
    codes, uniques = pd.factorize(work["unique_id"])
    ids = [str(u) for u in uniques]
    metric_of: dict[str, str] = {}
    if series_table is not None and "metric" in series_table.columns:
        metric_of = dict(zip(series_table["unique_id"].astype(str), series_table["metric"].astype(str), strict=False))
        known = np.array([uid in metric_of for uid in ids], dtype=bool)
    else:
        known = np.ones(len(ids), dtype=bool)
    metrics = [metric_of.get(uid) or split_unique_id(uid)[0] for uid in ids]
    rule_of = {m: match_range_rule(m, vcfg.ranges) or "" for m in set(metrics)}
    cap_of = {key: magnitude_cap(vcfg.ranges.get(key), vcfg) for key in set(rule_of.values())}
    work["_code"] = codes
    work["in_series_table"] = known[codes]
    work["metric"] = np.asarray(metrics, dtype=object)[codes]
    work["range_rule"] = np.asarray([rule_of[m] for m in metrics], dtype=object)[codes]
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


def _series_stats(work: pd.DataFrame, series_table: pd.DataFrame | None, freq: str) -> pd.DataFrame:
    """One row per series: rows, NaN share, completeness on its grid up to the frame's end.

    Completeness is the share of grid slots (``freq``, or the series' own coarser
    ``freq`` from the series table) from the series' first value to the frame's last
    timestamp that hold at least one value, so a series that stopped reporting fails.
    """
    base_step = to_timedelta(freq)
    ids = list(work.attrs["ids"])
    extra = []
    if series_table is not None:
        present_ids = set(ids)
        extra = [u for u in dict.fromkeys(series_table["unique_id"].astype(str)) if u not in present_ids]
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
    slots = ds_ns // step_ns[ok_codes]
    pairs = pd.DataFrame({"c": ok_codes, "s": slots}).drop_duplicates()
    present = np.bincount(pairs["c"].to_numpy(), minlength=n)
    first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, ok_codes, slots)
    end_ns = int(ds_ns.max()) if len(ds_ns) else 0
    expected = np.where(present > 0, end_ns // step_ns - first + 1, 0)
    table = pd.DataFrame({
        "unique_id": ids, "rows": rows.astype(np.int64), "nulls": nulls,
        "step_s": step_ns / 1e9, "expected": expected.astype(np.int64), "present": present.astype(np.int64),
    })
    if extra:
        table = pd.concat([table, pd.DataFrame({
            "unique_id": extra, "rows": 0, "nulls": 0, "step_s": [steps[u].total_seconds() for u in extra],
            "expected": 0, "present": 0,
        })], ignore_index=True)
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


def _label(step_s: float) -> str:
    seconds = int(step_s)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _failed_expectations(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for res in results:
        if res["success"]:
            continue
        cfg = res["expectation_config"]
        result = res.get("result") or {}
        out.append({
            "suite": res.get("suite"), "expectation": cfg["type"], "column": cfg["kwargs"].get("column"),
            "check": (cfg.get("meta") or {}).get("check"), "rule": (cfg.get("meta") or {}).get("rule"),
            "unexpected_count": result.get("unexpected_count"), "observed_value": result.get("observed_value"),
        })
    return out


def _build_outcome(work, per_series, series_table, reasons, checks, nulled, results, vcfg, freq, started):
    failed = set(reasons)
    all_ids = list(per_series["unique_id"])
    failed_codes = np.array([uid in failed for uid in work.attrs["ids"]], dtype=bool)
    is_failed = pd.Series(failed_codes[work["_code"].to_numpy()] if len(failed_codes) else False, index=work.index)
    valid = work.loc[~is_failed, ["unique_id", "ds", "y"]].copy()
    if len(nulled):
        keep = np.intersect1d(nulled, valid.index.to_numpy())
        valid.loc[keep, "y"] = np.nan
    valid = valid.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)
    quarantine = work.loc[is_failed, ["unique_id", "ds", "y"]].copy()
    quarantine[REASON_COLUMN] = quarantine["unique_id"].map({u: "; ".join(r) for u, r in reasons.items()})
    quarantine = quarantine.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)
    series = None
    if series_table is not None:
        series = series_table[~series_table["unique_id"].astype(str).isin(failed)].reset_index(drop=True)
    outcome = ValidationOutcome(valid=valid, quarantine=quarantine, reasons=reasons, summary={}, html="",
                                results=[_clean(r) for r in results], series=series)
    outcome.summary = _summary(all_ids, reasons, checks, len(work), len(valid), len(quarantine), int(len(nulled)),
                               results, vcfg, freq, started)
    outcome.html = render_html(outcome)
    return outcome


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
        "failed_expectations": _failed_expectations(results),
        "series_failed_by_check": dict(by_check),
        "worst_series": [{"unique_id": uid, "reasons": texts} for uid, texts in worst],
        "seconds": round(time.perf_counter() - started, 3),
    }


def _clean(res: dict[str, Any]) -> dict[str, Any]:
    """A GX result without its long row lists (kept short for JSON and the report)."""
    out = {k: v for k, v in res.items() if k != "_order"}
    result = dict(out.get("result") or {})
    for key in ("unexpected_list", "unexpected_index_list", "partial_unexpected_index_list"):
        result.pop(key, None)
    out["result"] = result
    return out


def _schema_failure(raw, results, vcfg, freq, started) -> ValidationOutcome:
    texts = [f"schema: {(r['expectation_config'].get('meta') or {}).get('reason', r['expectation_config']['type'])}"
             for r in results if not r["success"]]
    ids = (raw["unique_id"].astype(str).unique().tolist() if "unique_id" in raw.columns else ["(whole frame)"])
    reasons = {uid: list(texts) for uid in ids}
    checks = {uid: ["schema"] for uid in ids}
    quarantine = raw.copy()
    quarantine[REASON_COLUMN] = "; ".join(texts)
    outcome = ValidationOutcome(valid=raw.iloc[0:0].copy(), quarantine=quarantine, reasons=reasons, summary={},
                                html="", results=[_clean(r) for r in results])
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
