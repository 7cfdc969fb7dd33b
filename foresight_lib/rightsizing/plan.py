"""The nightly rightsizing plan: the replayed method, run on the latest data, for what comes next.

Per series of the features frame, the two walks of ``foresight_lib.rightsizing.replay`` (the same
code the ``rightsize-replay`` benchmark scores) run over the last days before the end
of the data, with one more period starting at the end:

- ``kind="window"``: the next ``windows`` 30-minute windows (``lead`` says how long
  after the end of the data each starts), each from a forecast of its peak made at the
  end of the data and a factor learnt from past windows sized with the same lead,
  pooled across the metric's series;
- ``kind="daily"``: a static size for the next 24 hours, from the profile's quantile of
  the day's mean forecast (memory: the recent daily peaks since the last step change)
  and a factor learnt from the previous days (for CPU, pooled across the metric's
  series).

Every row names the violation target it aims at (``target_violation``: the profile's
CPU or memory target); a row sized by the fallback estimator says so in ``reason``.

Both are capped at the highest usage the factor was learnt from, rounded to units a
platform accepts, never zero or negative. A series that cannot be sized (too little
history) gets rows with no values and the reason.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict

import numpy as np
import pandas as pd

from foresight_lib.errors import ConfigError
from foresight_lib.frames import check_series_frame, guess_unit, split_unique_id
from foresight_lib.rightsizing import sizing as rs
from foresight_lib.rightsizing.replay import series_units, walk
from foresight_lib.rightsizing.replay_scoring import forecast_tracks
from foresight_lib.rightsizing.replay_spec import DEFAULT_MODEL, ReplaySpec


def recommend(frame: pd.DataFrame, series_table: pd.DataFrame | None = None, profile: str = "balanced",
              models: Mapping[str, str] | None = None, freq: str = "5min", window: str = "30m",
              windows: int = 1, replica_capacity: Mapping[str, float] | None = None,
              daily: bool = True) -> pd.DataFrame:
    """The next windows' plan and the next day's size per series of ``frame`` (long, regular).

    ``walk_plan`` then ``plan_from_walks``: the nightly runs the first per shard of series,
    in parallel, and the second, which pools across a metric's series, once.

    Args:
        models: forecasting model per kind (default: the replay's, ``DEFAULT_MODEL``).
        windows: how many windows ahead the plan covers (each one ``window`` long).
        replica_capacity: what one replica can use, per resource (``cpu``, ``memory``), in
            the series' unit. The replica count keeps each replica at or under the
            profile's target utilisation at the forecast peak; with no capacity given, a
            replica is the recommended request itself.
        daily: also size the next day (the nightly run does; the scaling plan between two
            nightly runs sizes only the windows).

    Returns:
        Frame with ``rightsizing.RECOMMENDATION_COLUMNS``.
    """
    walks = walk_plan(frame, series_table, profile, models, freq, window, windows, daily)
    return plan_from_walks(walks, series_table, replica_capacity)


def walk_plan(frame: pd.DataFrame, series_table: pd.DataFrame | None = None, profile: str = "balanced",
              models: Mapping[str, str] | None = None, freq: str = "5min", window: str = "30m",
              windows: int = 1, daily: bool = True) -> dict:
    """The per-series part of ``recommend`` (arguments as there): every series walked once per kind and lead.

    Series are independent here, so shards of series can be walked apart and joined with
    ``plan_step.plan_from_walk_files``. Returns ``{"specs": [ReplaySpec, ...], "walks": [(done, skipped), ...]}``.
    """
    frame = _latest_stretch(check_series_frame(frame))
    models = {**DEFAULT_MODEL, **dict(models or {})}
    if windows < 1:
        raise ConfigError(f"the plan needs at least one window, got {windows}")
    runs = [("window", lead) for lead in range(windows)] + ([("daily", 0)] if daily else [])
    specs = [ReplaySpec(mode=kind, profile=profile, model=models[kind], freq=freq, window=window, lead_windows=lead)
             for kind, lead in runs]
    return {"specs": specs, "walks": [walk(frame, spec, series_table, next_period=True) for spec in specs]}


def plan_from_walks(walks: dict, series_table: pd.DataFrame | None = None,
                    replica_capacity: Mapping[str, float] | None = None) -> pd.DataFrame:
    """The pooled part of ``recommend``: factors learnt across each metric's series, then the sizes."""
    units = series_units(series_table)
    rows: list[dict] = []
    for spec, (done, skipped) in zip(walks["specs"], walks["walks"], strict=True):
        rows += sized_rows(spec, done, units, replica_capacity) + skipped_rows(spec, skipped, units)
    return plan_frame(rows)


def sized_rows(spec: ReplaySpec, done: list, units: Mapping[str, str],
               replica_capacity: Mapping[str, float] | None = None) -> list[dict]:
    """The next period's size of each walked series of one kind and lead (``done`` sorted by id).

    A factor pools the series of the same metric only, so the walks of one metric at a
    time give the same rows as every metric's at once.
    """
    kind, lead, prof = spec.mode, spec.lead_windows, spec.profile_
    step = pd.Timedelta(spec.step_ns, unit="ns")
    lead_text = _duration(lead * spec.window_steps * step)
    rows = []
    for sr, track in zip(done, forecast_tracks(done, spec, last_only=True), strict=True):
        common = {**_common(sr.unique_id, units, spec.model, prof.name), "lead": lead_text}
        start = pd.Timestamp(sr.first_ns + sr.starts[-1] * step.value, tz="UTC")
        end = start + spec.period_steps * step
        value = track.values[-1]
        if not np.isfinite(value):
            rows.append(_empty_row(common, kind, f"{spec.model} gave no usable forecast for the next {kind}"))
            continue
        if value < 0:  # a forecast of zero (an idle workload) gets the smallest size, as the replay scores it
            rows.append(_empty_row(common, kind, f"the size for the next {kind} came out at {value:.4g} "
                                                 f"{sr.unit}: usage below zero cannot be sized; "
                                                 "check the metric's source"))
            continue
        capacity = (replica_capacity or {}).get(sr.resource)
        sizing = rs.size(value, sr.resource, sr.unit, prof, peak=_forecast_peak(sr, value),
                         replica_capacity=capacity)
        rows.append({**dict.fromkeys(rs.RECOMMENDATION_COLUMNS), **common, "kind": kind, "period_start": start,
                     "period_end": end, "target_violation": track.targets[-1], "base": track.bases[-1],
                     "factor": round(track.factors[-1], 4), "confidence": track.confidences[-1],
                     "reason": sr.notes[-1], **asdict(sizing)})
    return rows


def skipped_rows(spec: ReplaySpec, skipped: list[dict], units: Mapping[str, str]) -> list[dict]:
    """A row saying why, for each series of one kind and lead that could not be walked."""
    lead_text = _duration(spec.lead_windows * spec.window_steps * pd.Timedelta(spec.step_ns, unit="ns"))
    return [_empty_row({**_common(s["unique_id"], units, None, spec.profile_.name), "lead": lead_text}, spec.mode,
                       f"no recommendation: {s['reason']}") for s in skipped]


def plan_frame(rows: list[dict]) -> pd.DataFrame:
    """The plan's rows as its frame, sorted by series, kind and period (ties kept in the order given)."""
    out = pd.DataFrame(rows, columns=rs.RECOMMENDATION_COLUMNS)
    return out.sort_values(["unique_id", "kind", "period_start"], kind="stable", ignore_index=True)


def _duration(delta: pd.Timedelta) -> str:
    """``0m``, ``30m``, ``90m``: how long after the end of the data a period starts."""
    return f"{int(delta.total_seconds() // 60)}m"


def _forecast_peak(sr, value: float) -> float:
    """The highest mean forecast over the next period (the load the replicas share), else the request."""
    mean = sr.means[-1]
    if mean is None or not np.isfinite(mean).any():
        return value
    return float(np.nanmax(mean))


def _latest_stretch(frame: pd.DataFrame) -> pd.DataFrame:
    """Each series from after its last missing value: the plan learns from contiguous data."""
    parts = []
    for _, group in frame.groupby("unique_id", sort=False):
        missing = np.flatnonzero(~np.isfinite(group["y"].to_numpy("float64")))
        parts.append(group.iloc[missing[-1] + 1:] if missing.size else group)
    return pd.concat(parts, ignore_index=True) if parts else frame


def _common(uid: str, units: dict[str, str], model: str | None, profile: str) -> dict:
    metric, entity = split_unique_id(uid)
    return {"unique_id": uid, "entity": entity, "metric": metric, "resource": rs.resource_of(metric),
            "unit": units.get(uid) or guess_unit(metric), "model": model, "profile": profile}


def _empty_row(common: dict, kind: str, reason: str) -> dict:
    row = dict.fromkeys(rs.RECOMMENDATION_COLUMNS)
    row.update(common)
    row.update({"kind": kind, "reason": reason})
    return row


def current_windows(nightly: pd.DataFrame | None, scaling_plan: pd.DataFrame | None) -> pd.DataFrame | None:
    """The published recommendations, with the newer of the two window plans.

    The nightly publish holds the daily sizes and the windows right after the nightly
    run; the scaling plan (``foresight_lib.scaling_plan``) holds windows sized since. The
    windows come from whichever plan reaches further (made from later data; the nightly's
    on a tie), the daily sizes always from the nightly.
    """
    if scaling_plan is None or scaling_plan.empty or "kind" not in scaling_plan:
        return nightly
    if nightly is None or nightly.empty or "kind" not in nightly:
        return scaling_plan.reset_index(drop=True)
    if _last_window_start(scaling_plan) <= _last_window_start(nightly):
        return nightly
    parts = [nightly[nightly["kind"] != "window"], scaling_plan[scaling_plan["kind"] == "window"]]
    merged = pd.concat([p for p in parts if len(p)], ignore_index=True)
    return merged.sort_values(["unique_id", "kind", "period_start"], kind="stable", ignore_index=True)


def _last_window_start(frame: pd.DataFrame) -> pd.Timestamp:
    starts = pd.to_datetime(frame.loc[frame["kind"] == "window", "period_start"], utc=True).dropna()
    return starts.max() if len(starts) else pd.Timestamp.min.tz_localize("UTC")
