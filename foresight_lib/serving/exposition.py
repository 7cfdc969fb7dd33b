"""Prometheus exposition of the latest published forecasts and recommendations.

A custom collector reads ``<data_root>/latest/`` when Prometheus scrapes (so a new
publish shows up without a restart; files are re-read only when they changed) and gives:

- ``foresight_forecast{series, metric, entity, model, horizon, value_type}`` (only the
  metric's champion's by default: ``models="champion"``, the ``publish.exposition_models``
  setting; ``"all"`` exposes every model, a series per model x horizon x value type) with
  ``value_type`` = ``yhat``, ``yhat_lower``, ``yhat_upper`` (the widest published
  interval, 95 % by default) and ``anomaly``: 1 when the actual lies outside those
  bounds, else 0. The actual compared is the one at the forecast's own time when it is
  known (``latest/actuals.parquet`` refreshed after the publish), otherwise the latest
  actual of the series (the last point the forecast was conditioned on).
- ``foresight_champion{metric, model}``: 1 for each metric's champion: the model activated
  since the publish (``summary.json``'s ``activations``), else the one the publish marked.
- ``foresight_forecast_timestamp_seconds{series, metric, entity, model}``: the cutoff
  the forecasts were made from (their last actual); a horizon's forecast is for this
  time plus the horizon.
- ``foresight_actual`` and ``foresight_actual_timestamp_seconds``: the latest actual.
- ``foresight_recommendation{<text columns>, value_type=<numeric column>}`` when
  ``latest/recommendations.parquet`` exists: every numeric column is one value type. The
  windows come from ``latest/scaling_plan.parquet`` instead when the scaling plan sized
  later windows than the nightly run (``plan.current_windows``).
- ``foresight_data_last_timestamp_seconds`` and ``foresight_data_age_seconds``: the last
  timestamp of the data behind the published forecasts and its age at their run's data
  interval end (``summary.json``'s ``data_freshness``); alert on
  ``time() - foresight_data_last_timestamp_seconds`` (``freshness_families``).
- ``foresight_published_timestamp_seconds``, ``foresight_scaling_plan_published_timestamp_seconds``
  (once a scaling plan was published) and ``foresight_exposition_read_errors``.

The Airflow plugin's ``/foresight/metrics`` and ``foresight serve-metrics`` both answer
with :func:`metrics_response`; ``foresight_lib.publishing.pushgateway`` pushes the same families.
"""
from __future__ import annotations

import gzip
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from foresight_lib.errors import DataError, ForesightError
from foresight_lib.frames import split_unique_id
from foresight_lib.horizons import format_duration, parse_duration

log = logging.getLogger(__name__)

FORECAST_LABELS = ["series", "metric", "entity", "model", "horizon"]
VALUE_TYPES = ("yhat", "yhat_lower", "yhat_upper", "anomaly")
EXPOSED_MODELS = ("champion", "all")
"""What ``foresight_forecast`` carries: each metric's champion's forecasts (default), or every model's."""
LATEST_FILES = {"forecasts": "forecasts.parquet", "recommendations": "recommendations.parquet",
                "actuals": "actuals.parquet", "manifest": "_manifest.json",
                "scaling_plan": "scaling_plan.parquet", "plan_manifest": "_plan_manifest.json",
                "summary": "summary.json"}
FORECAST_REQUIRED = ["unique_id", "cutoff", "ds", "model", "yhat"]
_BOUND = re.compile(r"^yhat_(lo|hi)_(\d+(?:\.\d+)?)$")
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")
_RECOMMENDATION_SKIP = {"reason"}
_ACTUAL_TAIL = 4096
"""Latest points per series kept from the actuals (enough to match forecasts' times)."""


@dataclass
class Snapshot:
    """What was published last: frames as read, and what could not be read."""

    forecasts: pd.DataFrame | None = None
    actuals: pd.DataFrame | None = None
    recommendations: pd.DataFrame | None = None
    published_at: pd.Timestamp | None = None
    plan_published_at: pd.Timestamp | None = None
    """When the scaling plan (``latest/scaling_plan.parquet``) was last published, if ever."""
    run_id: str | None = None
    activated: dict[str, str] = field(default_factory=dict)
    """metric -> model made champion by an activation since the publish (``summary.json``)."""
    errors: list[str] = field(default_factory=list)
    data_freshness: dict = field(default_factory=dict)
    """``summary.json``'s ``data_freshness``: the data's last timestamp and age at the run's end."""


# ---------------------------------------------------------------------------
# Metric families from frames


def utc_stamps(values: pd.Series) -> pd.Series:
    """Published timestamps as UTC (naive ones taken as UTC; unreadable ones NaT)."""
    out = pd.to_datetime(values, utc=True, errors="coerce")
    return out.astype("datetime64[ns, UTC]")


def _seconds(values: pd.Series) -> np.ndarray:
    return values.astype("datetime64[ns, UTC]").astype("int64").to_numpy() / 1e9


def interval_levels(columns: Iterable[str]) -> list[str]:
    """Interval levels with both bounds in ``columns`` (``yhat_lo_80`` and ``yhat_hi_80`` -> ``80``), ascending."""
    found: dict[str, set[str]] = {}
    for column in columns:
        match = _BOUND.match(str(column))
        if match:
            found.setdefault(match.group(2), set()).add(match.group(1))
    return sorted((lvl for lvl, sides in found.items() if sides == {"lo", "hi"}), key=float)


def latest_actuals(actuals: pd.DataFrame | None) -> pd.DataFrame:
    """The last finite actual per series: ``unique_id, ds, y``."""
    if actuals is None or actuals.empty:
        return pd.DataFrame({"unique_id": pd.Series([], dtype=object), "ds": pd.Series([], dtype="datetime64[ns, UTC]"),
                             "y": pd.Series([], dtype="float64")})
    frame = actuals[["unique_id", "ds", "y"]].copy()
    frame["unique_id"] = frame["unique_id"].astype(str)
    frame["ds"] = utc_stamps(frame["ds"])
    frame["y"] = pd.to_numeric(frame["y"], errors="coerce").astype("float64")
    frame = frame[np.isfinite(frame["y"].to_numpy()) & frame["ds"].notna()]
    frame = frame.sort_values(["unique_id", "ds"], kind="stable")
    return frame.groupby("unique_id", sort=True).tail(1).reset_index(drop=True)


def prepare_forecasts(forecasts: pd.DataFrame, horizons: Sequence[str] | None = None) -> pd.DataFrame:
    """The latest cutoff's rows per series and model, with ``metric``, ``entity`` and ``horizon``.

    Raises:
        DataError: a required column is missing.
    """
    missing = [c for c in FORECAST_REQUIRED if c not in forecasts.columns]
    if missing:
        raise DataError(f"forecast frame lacks column(s) {missing}; it needs {FORECAST_REQUIRED} "
                        "and yhat_lo_<L>/yhat_hi_<L> per interval level")
    frame = forecasts.copy()
    frame["unique_id"] = frame["unique_id"].astype(str)
    frame["model"] = frame["model"].astype(str)
    frame["cutoff"] = utc_stamps(frame["cutoff"])
    frame["ds"] = utc_stamps(frame["ds"])
    frame = frame[frame["cutoff"].notna() & frame["ds"].notna()]
    latest = frame.groupby(["unique_id", "model"])["cutoff"].transform("max")
    frame = frame[frame["cutoff"] == latest]
    delta = frame["ds"] - frame["cutoff"]
    frame = frame[delta > pd.Timedelta(0)].copy()
    delta = frame["ds"] - frame["cutoff"]
    if horizons:
        wanted = {parse_duration(h) for h in horizons}
        keep = delta.isin(wanted)
        frame, delta = frame[keep].copy(), delta[keep]
    labels = {d: format_duration(pd.Timedelta(d)) for d in pd.unique(delta)}
    frame["horizon"] = delta.map(labels).astype(object)
    ids = pd.unique(frame["unique_id"])
    parts = dict(zip(ids, (split_unique_id(uid) for uid in ids), strict=True))
    frame["metric"] = frame["unique_id"].map({uid: p[0] for uid, p in parts.items()}).astype(object)
    frame["entity"] = frame["unique_id"].map({uid: p[1] for uid, p in parts.items()}).astype(object)
    frame = frame.sort_values(["unique_id", "model", "ds"], kind="stable")
    return frame.drop_duplicates(["unique_id", "model", "horizon"], keep="last").reset_index(drop=True)


def anomaly_flags(forecasts: pd.DataFrame, actuals: pd.DataFrame | None, lower: str, upper: str) -> np.ndarray:
    """1.0 where the actual is outside ``[lower, upper]``, 0.0 inside, NaN when unknown.

    The actual at the forecast's own time is used when known, else the series' latest one.
    """
    if actuals is None or actuals.empty:
        return np.full(len(forecasts), np.nan)
    acts = actuals[["unique_id", "ds", "y"]].copy()
    acts["unique_id"] = acts["unique_id"].astype(str)
    acts["ds"] = utc_stamps(acts["ds"])
    acts["y"] = pd.to_numeric(acts["y"], errors="coerce").astype("float64")
    acts = acts.drop_duplicates(["unique_id", "ds"], keep="last")
    at_time = forecasts[["unique_id", "ds"]].merge(acts, on=["unique_id", "ds"], how="left")["y"].to_numpy()
    last = latest_actuals(acts).set_index("unique_id")["y"]
    fallback = forecasts["unique_id"].map(last).to_numpy(dtype="float64")
    actual = np.where(np.isfinite(at_time), at_time, fallback)
    lo = forecasts[lower].to_numpy(dtype="float64")
    hi = forecasts[upper].to_numpy(dtype="float64")
    known = np.isfinite(actual) & np.isfinite(lo) & np.isfinite(hi)
    outside = (actual < lo) | (actual > hi)
    return np.where(known, outside.astype("float64"), np.nan)


def activations(summary: dict | None) -> list[dict[str, Any]]:
    """The champion activations recorded in ``summary.json`` since its publish, newest first.

    Each: ``metric, version, model`` (None when neither the record nor the publish's
    registration says), ``previous_version``, ``by`` and ``at`` (ISO 8601).
    """
    registrations = (summary or {}).get("registrations") or {}
    out = []
    for record in (summary or {}).get("activations") or []:
        if not isinstance(record, dict) or not record.get("metric"):
            continue
        model = record.get("model")
        registered = registrations.get(str(record["metric"]))
        if not model and isinstance(registered, dict) and registered.get("version") == record.get("version"):
            model = registered.get("model")
        at = pd.Timestamp(record["at"]) if record.get("at") else None
        if at is not None:
            at = at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")
        out.append({"metric": str(record["metric"]), "version": record.get("version"),
                    "model": str(model) if model else None, "previous_version": record.get("previous_version"),
                    "by": record.get("by"), "at": at.isoformat() if at is not None else None})
    return sorted(out, key=lambda a: a["at"] or "", reverse=True)


def champion_models(forecasts: pd.DataFrame, activated: dict[str, str] | None = None) -> dict[str, str]:
    """metric -> champion model: the activated one, else the one marked in the forecasts' ``champion`` column."""
    out: dict[str, str] = {}
    if "champion" in forecasts.columns:
        rows = forecasts.loc[forecasts["champion"].fillna(False).astype(bool), ["unique_id", "model"]]
        for uid, model in rows.drop_duplicates().itertuples(index=False):
            out.setdefault(split_unique_id(str(uid))[0], str(model))
    return {**out, **(activated or {})}


def _champions_only(frame: pd.DataFrame, champions: dict[str, str], marked: dict[str, str]) -> pd.DataFrame:
    """The rows of each metric's champion, else (an activated model this publish did not forecast with) of the one
    the publish marked; a metric with neither forecast keeps every model."""
    if not champions:
        return frame
    forecast = set(zip(frame["metric"], frame["model"], strict=True))
    chosen = {m: c if (m, c) in forecast else marked.get(m) for m, c in champions.items()}
    known = [m for m, c in chosen.items() if (m, c) in forecast]
    return frame[(frame["model"] == frame["metric"].map(chosen)) | ~frame["metric"].isin(known)]


def forecast_families(forecasts: pd.DataFrame | None, actuals: pd.DataFrame | None = None,
                      level: str | int | None = None, horizons: Sequence[str] | None = None,
                      models: str = "champion", activated: dict[str, str] | None = None,
                      max_series: int | None = None) -> list[Metric]:
    """Gauges of the latest forecasts (see the module docstring).

    Args:
        forecasts: the published forecast frame.
        actuals: long frame of actuals (``unique_id, ds, y``) for the anomaly flag and
            ``foresight_actual``; None: no anomaly flag.
        level: the interval level of ``yhat_lower``/``yhat_upper``; default the widest.
        horizons: keep only these horizons (``5m``, ``15m``); default every step.
        models: ``champion``: only each metric's champion (every model when the frame
            does not say which is the champion); ``all``: every model.
        activated: metric -> model activated as champion since the publish.
        max_series: expose at most this many series (the first by id; their actuals too);
            None: every series. :func:`exposed_series` says which.

    Raises:
        DataError: the frame lacks a column, ``level`` is not in it, or ``models`` is unknown.
    """
    families: list[Metric] = []
    if forecasts is None:
        return families
    if models not in EXPOSED_MODELS:
        raise DataError(f"exposed models {models!r} is not one of {list(EXPOSED_MODELS)}")
    frame = prepare_forecasts(forecasts, horizons)
    champions = champion_models(forecasts, activated)
    if models == "champion":
        frame = _champions_only(frame, champions, champion_models(forecasts))
    kept = exposed_series(frame["unique_id"], max_series)
    if kept is not None:
        frame = frame[frame["unique_id"].isin(kept).to_numpy()]
        if actuals is not None:
            actuals = actuals[actuals["unique_id"].astype(str).isin(kept).to_numpy()]
    levels = interval_levels(frame.columns)
    chosen = None
    if level is not None:
        chosen = next((x for x in levels if float(x) == float(level)), None)
        if chosen is None:
            raise DataError(f"interval level {level} is not in the forecasts (levels: {levels or 'none'})")
    elif levels:
        chosen = levels[-1]
    keys = list(zip(frame["unique_id"], frame["metric"], frame["entity"], frame["model"], frame["horizon"],
                    strict=True))

    gauge = GaugeMetricFamily(
        "foresight_forecast",
        f"Latest Foresight forecast per series, model and horizon; yhat_lower/yhat_upper are the "
        f"{chosen or 'no'} % interval, anomaly is 1 when the actual lies outside it",
        labels=[*FORECAST_LABELS, "value_type"])
    columns = [("yhat", "yhat")]
    if chosen is not None:
        columns += [("yhat_lower", f"yhat_lo_{chosen}"), ("yhat_upper", f"yhat_hi_{chosen}")]
    for value_type, column in columns:
        _add(gauge, keys, frame[column].to_numpy(dtype="float64"), (value_type,))
    if chosen is not None:
        flags = anomaly_flags(frame, actuals, f"yhat_lo_{chosen}", f"yhat_hi_{chosen}")
        _add(gauge, keys, flags, ("anomaly",))
    families.append(gauge)

    cutoffs = frame.drop_duplicates(["unique_id", "model"])
    cutoff = GaugeMetricFamily("foresight_forecast_timestamp_seconds",
                               "Time the forecast was made from (its last actual, the cutoff), in Unix seconds; "
                               "a horizon's forecast is for this time plus the horizon",
                               labels=["series", "metric", "entity", "model"])
    _add(cutoff, list(zip(cutoffs["unique_id"], cutoffs["metric"], cutoffs["entity"], cutoffs["model"], strict=True)),
         _seconds(cutoffs["cutoff"]), ())
    families.append(cutoff)
    if champions:
        families.append(champion_family(forecasts, activated))

    last = latest_actuals(actuals)
    if not last.empty:
        parts = [split_unique_id(uid) for uid in last["unique_id"]]
        akeys = [(uid, m, e) for uid, (m, e) in zip(last["unique_id"], parts, strict=True)]
        actual = GaugeMetricFamily("foresight_actual", "Latest actual value of the series",
                                   labels=["series", "metric", "entity"])
        _add(actual, akeys, last["y"].to_numpy(dtype="float64"), ())
        stamp = GaugeMetricFamily("foresight_actual_timestamp_seconds", "Time of the latest actual, in Unix seconds",
                                  labels=["series", "metric", "entity"])
        _add(stamp, akeys, _seconds(last["ds"]), ())
        families += [actual, stamp]
    return families


def exposed_series(ids: pd.Series, max_series: int | None) -> set[str] | None:
    """The series a scrape exposes under a budget of ``max_series``: the first by id (the same ones at every
    scrape of a publish); None when every series fits."""
    if max_series is None:
        return None
    distinct = np.sort(pd.unique(ids.astype(str)).astype(str))
    return None if len(distinct) <= max_series else set(distinct[:max_series].tolist())


def left_out_family(forecast_series: int, recommendation_rows: int) -> GaugeMetricFamily:
    """``foresight_exposition_left_out{family}``: what ``publish.exposition_max_series`` kept out of this scrape."""
    family = GaugeMetricFamily("foresight_exposition_left_out",
                               "Series (family=forecast) and recommendation rows (family=recommendation) left out "
                               "of this exposition by publish.exposition_max_series; the JSON views have them all",
                               labels=["family"])
    family.add_metric(["forecast"], float(forecast_series))
    family.add_metric(["recommendation"], float(recommendation_rows))
    return family


def champion_family(forecasts: pd.DataFrame, activated: dict[str, str] | None = None) -> GaugeMetricFamily:
    """``foresight_champion{metric, model} 1``: the champion of each metric (join on ``model``).

    The model activated since the publish wins over the one the publish marked.
    """
    family = GaugeMetricFamily("foresight_champion", "1 for the model that is the champion of the metric",
                               labels=["metric", "model"])
    for metric, model in sorted(champion_models(forecasts, activated).items()):
        family.add_metric([metric, model], 1.0)
    return family


def _add(family: GaugeMetricFamily, keys: Sequence[tuple], values: np.ndarray, suffix: tuple) -> None:
    for key, value in zip(keys, values, strict=True):
        if value is not None and not math.isnan(value):
            family.add_metric([*(str(k) for k in key), *suffix], float(value))


def label_name(column: str) -> str:
    """A valid Prometheus label name for a column (``unique_id`` -> ``series``)."""
    if column == "unique_id":
        return "series"
    name = _LABEL_BAD.sub("_", str(column))
    if not name or name[0].isdigit():
        name = f"_{name}"
    return f"{name}_" if name in ("value_type",) or name.startswith("__") else name


def recommendation_families(recommendations: pd.DataFrame | None) -> list[Metric]:
    """``foresight_recommendation``: text columns become labels, each numeric column a ``value_type``.

    Datetime columns become ``<column>_timestamp_seconds`` value types; free text
    (``reason``, ``*_display``) is left out. Empty values are not exposed, nor a limit or
    replica count for a resource Kubernetes does not limit (network, disk).
    """
    from foresight_lib.rightsizing.sizing import KUBERNETES_RESOURCES, NOT_FOR_OTHER_RESOURCES

    if recommendations is None or recommendations.empty:
        return []
    frame = recommendations.reset_index(drop=True)
    if "resource" in frame.columns:
        other = ~frame["resource"].isin(KUBERNETES_RESOURCES)
        for column in [c for c in NOT_FOR_OTHER_RESOURCES if c in frame.columns and other.any()]:
            frame[column] = frame[column].where(~other)  # NaN (numbers) or None: not exposed
    numeric, stamps, labels = [], [], []
    for column in frame.columns:
        series = frame[column]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            numeric.append(column)
        elif pd.api.types.is_datetime64_any_dtype(series):
            stamps.append(column)
        elif column not in _RECOMMENDATION_SKIP and not str(column).endswith("_display"):
            converted = pd.to_numeric(series, errors="coerce")
            if series.notna().any() and converted.notna().sum() == series.notna().sum():
                numeric.append(column)  # numbers stored as objects (all None in one row, say)
            else:
                labels.append(column)
    names = [label_name(c) for c in labels]
    family = GaugeMetricFamily("foresight_recommendation",
                               "Latest Foresight rightsizing recommendation; value_type names the quantity",
                               labels=[*names, "value_type"])
    label_values = [["" if (v is None or (isinstance(v, float) and math.isnan(v))) else str(v) for v in row]
                    for row in frame[labels].itertuples(index=False, name=None)] if labels else [[]] * len(frame)
    seen: set[tuple] = set()
    duplicates = 0
    quantities = [(c, pd.to_numeric(frame[c], errors="coerce").astype("float64").to_numpy()) for c in numeric]
    quantities += [(f"{c}_timestamp_seconds", _timestamps_or_nan(frame[c])) for c in stamps]
    for value_type, values in quantities:
        for row_labels, value in zip(label_values, values, strict=True):
            if math.isnan(value):
                continue
            key = (*row_labels, value_type)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            family.add_metric(list(key), float(value))
    if duplicates:
        log.warning("%d recommendation value(s) share their labels with another row and are not exposed", duplicates)
    return [family]


def _timestamps_or_nan(values: pd.Series) -> np.ndarray:
    stamps = utc_stamps(values)
    out = np.full(len(stamps), np.nan)
    known = stamps.notna().to_numpy()
    out[known] = _seconds(stamps[known])
    return out


def snapshot_families(snapshot: Snapshot, level: str | int | None = None,
                      horizons: Sequence[str] | None = None, models: str = "champion",
                      max_series: int | None = None) -> list[Metric]:
    """Every family of a snapshot; a frame that cannot be turned into gauges counts as a read error.

    ``max_series`` (``publish.exposition_max_series``) bounds the series exposed: the first
    by id, their forecasts, actuals and recommendations; ``foresight_exposition_left_out``
    counts what was left out (exposed whenever a budget is set).
    """
    errors = list(snapshot.errors)
    families: list[Metric] = []
    recommendations, left_out = snapshot.recommendations, [0, 0]
    if max_series is not None and snapshot.forecasts is not None and "unique_id" in snapshot.forecasts:
        ids = snapshot.forecasts["unique_id"]
        kept = exposed_series(ids, max_series)
        if kept is not None:
            left_out[0] = int(pd.unique(ids.astype(str)).size - len(kept))
            if recommendations is not None:
                shown = (recommendations[recommendations["unique_id"].astype(str).isin(kept).to_numpy()]
                         if "unique_id" in recommendations else recommendations.head(max_series))
                left_out[1] = int(len(recommendations) - len(shown))
                recommendations = shown
    for name, build in (("forecasts", lambda: forecast_families(snapshot.forecasts, snapshot.actuals, level,
                                                                   horizons, models, snapshot.activated,
                                                                   max_series)),
                        ("recommendations", lambda: recommendation_families(recommendations))):
        try:
            families += build()
        except ForesightError as exc:
            log.error("cannot expose the latest %s: %s", name, exc)
            errors.append(f"{name}: {exc}")
    if max_series is not None:
        families.append(left_out_family(*left_out))
    if snapshot.published_at is not None:
        published = GaugeMetricFamily("foresight_published_timestamp_seconds",
                                      "When the latest forecasts were published, in Unix seconds")
        published.add_metric([], snapshot.published_at.timestamp())
        families.append(published)
    families += freshness_families(snapshot.data_freshness)
    if snapshot.plan_published_at is not None:
        plan = GaugeMetricFamily("foresight_scaling_plan_published_timestamp_seconds",
                                 "When the latest scaling plan (the next windows) was published, in Unix seconds; "
                                 "alert when it falls behind its schedule")
        plan.add_metric([], snapshot.plan_published_at.timestamp())
        families.append(plan)
    failed = GaugeMetricFamily("foresight_exposition_read_errors",
                               "Published files that could not be read or exposed at this scrape (see the logs)")
    failed.add_metric([], float(len(errors)))
    families.append(failed)
    return families


def freshness_families(freshness: dict | None) -> list[Metric]:
    """How old the data behind the published forecasts is (nothing when the summary does not say)."""
    families: list[Metric] = []
    last = (freshness or {}).get("last_timestamp")
    if last:
        stamp = pd.Timestamp(last)
        family = GaugeMetricFamily("foresight_data_last_timestamp_seconds",
                                   "Last timestamp of the source data behind the published forecasts, in Unix "
                                   "seconds; time() minus it is the data's age now")
        family.add_metric([], (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).timestamp())
        families.append(family)
    age = (freshness or {}).get("data_age_s")
    if age is not None:
        family = GaugeMetricFamily("foresight_data_age_seconds",
                                   "Age of the source data at the published run's data interval end (its end "
                                   "minus the data's last timestamp), in seconds")
        family.add_metric([], float(age))
        families.append(family)
    return families


# ---------------------------------------------------------------------------
# Reading <data_root>/latest


class LatestFiles:
    """The published files of a data root, re-read only when they change.

    Locally the files' modification times and sizes tell a change; on S3 the manifests
    (written last by each publish) and ``summary.json`` (the one file a champion
    activation rewrites) do. Actuals come from ``latest/actuals.parquet``
    when it exists, else from the published run's ``features`` dataset.
    """

    def __init__(self, data_root: str):
        from foresight_lib.runs.storage import DataRoot

        self.data_root = str(data_root)
        self.root = DataRoot(self.data_root)
        self._lock = threading.Lock()
        self._signature: Any = None
        self._snapshot = Snapshot()

    def _path(self, name: str) -> str:
        return f"{self.root.base}/latest/{LATEST_FILES[name]}"

    def signature(self) -> Any:
        if self.root.scheme == "file":
            out = []
            paths = {name: self._path(name) for name in LATEST_FILES}
            paths["journal"] = self.root.journal_path()  # a switch decided, or undone, before any rename
            for name, path in paths.items():
                try:
                    stat = Path(path).stat()
                    out.append((name, stat.st_ino, stat.st_mtime_ns, stat.st_size))
                except OSError:
                    out.append((name, None, None, None))
            return tuple(out)
        return json.dumps([self._manifest(), self._manifest(LATEST_FILES["plan_manifest"]),
                           self._file_stamp("summary")], sort_keys=True)

    def _file_stamp(self, name: str) -> list | None:
        """Modification time and size of a published file (None when absent or unreadable)."""
        try:
            info = self.root.fs.get_file_info(self._path(name))
        except OSError as exc:
            log.warning("cannot look at %s under %s: %s", LATEST_FILES[name], self.data_root, exc)
            return None
        return [info.mtime_ns, info.size] if info.size is not None else None

    def _manifest(self, name: str = LATEST_FILES["manifest"]) -> dict | None:
        try:
            return self.root.latest_manifest(name)
        except (ForesightError, OSError, ValueError) as exc:
            log.warning("cannot read the publish manifest under %s: %s", self.data_root, exc)
            return None

    def snapshot(self) -> Snapshot:
        """The current published state (cached until a file changes)."""
        with self._lock:
            signature = self.signature()
            if signature != self._signature:
                self._snapshot = self._read()
                self._signature = signature
            return self._snapshot

    def _exists(self, name: str) -> bool:
        return self.root.has_latest(LATEST_FILES[name])

    def _frame(self, name: str, errors: list[str], columns: list[str] | None = None) -> pd.DataFrame | None:
        if not self._exists(name):
            return None
        try:
            if self.root.scheme == "file":  # as published: a killed switch's staged copy, see DataRoot
                try:
                    return pd.read_parquet(self.root.published_path(LATEST_FILES[name]), columns=columns)
                except FileNotFoundError:  # renamed in meanwhile
                    return pd.read_parquet(self._path(name), columns=columns)
            frame = self.root.read_latest(name)
            return frame[columns] if columns else frame
        except Exception as exc:  # a half-copied or foreign file must not break the whole scrape
            log.error("cannot read %s: %s", self.root.latest_uri(name), exc)
            errors.append(f"{name}: {exc}")
            return None

    def _read(self) -> Snapshot:
        from foresight_lib.rightsizing.plan import current_windows  # the sizing code, only once something is read

        errors: list[str] = []
        manifest = self._manifest()
        snapshot = Snapshot(errors=errors)
        snapshot.forecasts = self._frame("forecasts", errors)
        snapshot.recommendations = current_windows(self._frame("recommendations", errors),
                                                   self._frame("scaling_plan", errors))
        if manifest:
            snapshot.run_id = manifest.get("run_id")
            snapshot.published_at = _published_at(manifest)
        snapshot.plan_published_at = _published_at(self._manifest(LATEST_FILES["plan_manifest"]))
        summary = self._summary(manifest, errors)
        snapshot.data_freshness = summary.get("data_freshness") or {}
        snapshot.activated = _activated(summary)
        actuals = self._frame("actuals", errors, ["unique_id", "ds", "y"])
        if actuals is None and snapshot.run_id and snapshot.forecasts is not None:
            actuals = self._run_features(snapshot.run_id, errors)
        if actuals is not None:
            actuals = actuals.sort_values(["unique_id", "ds"], kind="stable").groupby("unique_id").tail(_ACTUAL_TAIL)
        snapshot.actuals = actuals
        return snapshot

    def _summary(self, manifest: dict | None, errors: list[str]) -> dict:
        """``latest/summary.json`` (empty before anything is published, or when it cannot be read)."""
        if not manifest:
            return {}
        try:
            return self.root.read_latest_json(LATEST_FILES["summary"]) or {}
        except Exception as exc:  # the forecasts are still worth exposing with the published champions
            log.error("cannot read %s: %s", self.root.latest_uri(LATEST_FILES["summary"]), exc)
            errors.append(f"summary: {exc}")
            return {}

    def _run_features(self, run_id: str, errors: list[str]) -> pd.DataFrame | None:
        from foresight_lib.runs.storage import RunStore

        try:
            store = RunStore(self.data_root, run_id)
            if not store.exists("features"):
                if not store.list_files():
                    errors.append(f"actuals: no latest/actuals.parquet and the published run's folder {store.uri()} "
                                  "is gone; the anomaly flags need them (publish again to restore them)")
                    log.error("%s", errors[-1])
                return None
            if store.scheme == "file":
                return pd.read_parquet(store.path("features"), columns=["unique_id", "ds", "y"])
            return store.read_frame("features")[["unique_id", "ds", "y"]]
        except Exception as exc:  # the forecasts are still worth exposing without actuals
            log.error("cannot read the actuals of run %s under %s: %s", run_id, self.data_root, exc)
            errors.append(f"actuals: {exc}")
            return None


def _activated(summary: dict) -> dict[str, str]:
    """metric -> model activated since the publish (``latest/summary.json``'s activations)."""
    out: dict[str, str] = {}
    for record in activations(summary):
        if record["model"]:
            out.setdefault(record["metric"], record["model"])
    return out


def _published_at(manifest: dict | None) -> pd.Timestamp | None:
    """A manifest's ``published_at`` as a UTC timestamp."""
    if not manifest or not manifest.get("published_at"):
        return None
    published = pd.Timestamp(manifest["published_at"])
    return published.tz_localize("UTC") if published.tzinfo is None else published


class SnapshotCollector:
    """A prometheus_client collector that builds its families from ``load()`` at every scrape.

    Families are rebuilt only when ``load()`` returns another snapshot object.
    """

    def __init__(self, load: Callable[[], Snapshot], level: str | int | None = None,
                 horizons: Sequence[str] | None = None, models: str = "champion", max_series: int | None = None):
        self.load = load
        self.max_series = max_series
        self.level = level
        self.horizons = list(horizons) if horizons else None
        self.models = models
        self._lock = threading.Lock()
        self._source: Snapshot | None = None
        self._families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        snapshot = self.load()
        with self._lock:
            if snapshot is not self._source:
                self._families = snapshot_families(snapshot, self.level, self.horizons, self.models,
                                                   self.max_series)
                self._source = snapshot
            return list(self._families)

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration; families depend on the files


def static_registry(snapshot: Snapshot, level: str | int | None = None,
                    horizons: Sequence[str] | None = None, models: str = "champion",
                    max_series: int | None = None) -> CollectorRegistry:
    """A registry exposing one fixed snapshot (what a Pushgateway push sends)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snapshot, level, horizons, models, max_series))
    return registry


_REGISTRIES: dict[tuple, CollectorRegistry] = {}
_REGISTRIES_LOCK = threading.Lock()


def registry_for(data_root: str, level: str | int | None = None,
                 horizons: Sequence[str] | None = None, models: str = "champion",
                 max_series: int | None = None) -> CollectorRegistry:
    """The registry serving ``data_root``'s published files (one per data root, level, horizons, models and
    series budget)."""
    key = (str(data_root), None if level is None else str(level), tuple(horizons or ()), models, max_series)
    files = registry_files(data_root)
    with _REGISTRIES_LOCK:
        registry = _REGISTRIES.get(key)
        if registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(SnapshotCollector(files.snapshot, level, horizons, models, max_series))
            _REGISTRIES[key] = registry
        return registry


def render(registry: CollectorRegistry, accept: str | None = None,
           accept_encoding: str | None = None) -> tuple[bytes, dict[str, str]]:
    """The exposition body and headers, in the format the scraper asks for (text or OpenMetrics)."""
    encoder, content_type = choose_encoder(accept or "")
    body = encoder(registry)
    headers = {"Content-Type": content_type}
    if accept_encoding and "gzip" in accept_encoding.lower():
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return body, headers


_RENDERED: dict[tuple, tuple[Snapshot, bytes, dict[str, str]]] = {}


def metrics_response(data_root: str, accept: str | None = None, accept_encoding: str | None = None,
                     level: str | int | None = None,
                     horizons: Sequence[str] | None = None, models: str = "champion",
                     max_series: int | None = None) -> tuple[bytes, dict[str, str]]:
    """``/metrics`` for ``data_root``: body and headers (``models``, ``max_series``: see :func:`snapshot_families`).

    The rendered body is kept until the published files change, so scrapes between two
    publishes cost a few ``stat`` calls however many series there are.
    """
    snapshot = registry_files(data_root).snapshot()
    _, content_type = choose_encoder(accept or "")
    gzipped = bool(accept_encoding and "gzip" in accept_encoding.lower())
    key = (str(data_root), None if level is None else str(level), tuple(horizons or ()), models, max_series,
           content_type, gzipped)
    with _REGISTRIES_LOCK:
        cached = _RENDERED.get(key)
    if cached is not None and cached[0] is snapshot:
        return cached[1], dict(cached[2])
    body, headers = render(registry_for(data_root, level, horizons, models, max_series), accept, accept_encoding)
    with _REGISTRIES_LOCK:
        _RENDERED[key] = (snapshot, body, headers)
    return body, dict(headers)


_FILES: dict[str, LatestFiles] = {}
_FILES_LOCK = threading.Lock()


def registry_files(data_root: str) -> LatestFiles:
    """The shared, cached reader of ``data_root``'s published files."""
    with _FILES_LOCK:
        files = _FILES.get(str(data_root))
        if files is None:
            files = _FILES[str(data_root)] = LatestFiles(str(data_root))
        return files
