"""Replay a real trace: recommend from the past, score on what came next.

Two modes, on a regular long frame (after the features step):

- ``daily``: each UTC day after ``min_history_days`` of history gets one static size per
  method, made from the data before the day, scored on the day's 5-minute points.
  Methods: the forecast-driven recommendation (``rightsizing``: the profile's quantile of
  the next day's mean forecast curve, for memory the recent daily peaks since the last
  step change, times a factor learnt from the previous days' usage against their bases,
  aimed at the profile's target for the resource and capped at the highest usage of
  those days; on the first day, with no past, the upper-bound curve's quantile times the
  profile's fixed margin), the
  VPA-style recommender and the Crane-style percentile (``baselines_rightsizing``).
- ``window``: each 30-minute window is set ahead of time. The model is fitted once per
  day on the history before it and updated with the actuals at every window start
  without refitting; the window's base is a forecast of its peak (CPU: the highest mean
  forecast over its steps times the same window's median peak-to-level ratio on the
  previous days; memory: the smoothed peaks of the windows before; either way at least
  the peak of the latest window known when it is sized), times a factor
  learnt from the previous windows, shrunk toward the factor of every series of the
  same metric over those windows, and capped at their highest usage. Compared with a
  reactive scaler (the previous window's peak × 1.15).

The walk has two passes: the bases of every period and series (``walk``), then the
factors and requests (``forecast_tracks``), which need the other series' past windows.
The nightly plan (``foresight_lib.rightsizing.plan``) runs the same two passes on the latest days.

Scores over the scored points: slack = unused share of what was provisioned,
``sum(max(request - usage, 0)) / sum(request)``; violations = share of points with usage
above the request; for memory also the share above the limit (the OOM proxy). Every
per-entity per-period recommendation is kept, so anyone can re-score it. Two sweeps give
the trade-off curves: every method's base rescored with a range of fixed margins, and
the forecast-driven plan itself rerun with each target violation rate of ``TARGETS``.
Every method is scored on exactly the same series: one that some method could not size
for a scored period (its forecast failed, a baseline had no data) is left out of all of
them and listed with its reason. Scoring, verdicts and the plot: ``replay_report``.
"""
from __future__ import annotations

import logging
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable

import numpy as np
import pandas as pd

from foresight_lib.errors import DataError
from foresight_lib.forecasting.models import FALLBACK_MODEL, make_model
from foresight_lib.frames import check_series_frame, guess_unit, split_unique_id
from foresight_lib.rightsizing import baselines as bl
from foresight_lib.rightsizing import sizing as rs
from foresight_lib.rightsizing.replay_report import CRANE, FORECAST, REACTIVE, VPA
from foresight_lib.rightsizing.replay_scoring import (
    entity_day_table,
    margin_sweep,
    method_totals,
    period_records,
    size_forecasts,
    target_sweep,
)
from foresight_lib.rightsizing.replay_spec import LEVELS, PEAK_RATIO_DAYS, ReplayResult, ReplaySpec, SeriesReplay, Track

log = logging.getLogger(__name__)

def replay(frame: pd.DataFrame, spec: ReplaySpec, series_table: pd.DataFrame | None = None,
           progress: Callable[[int], None] | None = None) -> ReplayResult:
    """Replay every series of the regular long frame ``frame`` under ``spec``.

    Raises:
        DataError: no series has enough history for a single scored period (reasons listed).
    """
    started = time.perf_counter()
    done, skipped = walk(frame, spec, series_table, progress=progress)
    if not done:
        reasons = "; ".join(f"{s['unique_id']}: {s['reason']}" for s in skipped[:5])
        raise DataError(f"no series can be replayed ({len(skipped)} skipped): {reasons}")
    size_forecasts(done, spec)
    kept, dropped = _same_series(done, spec)
    skipped = skipped + dropped
    if not kept:
        reasons = "; ".join(f"{s['unique_id']}: {s['reason']}" for s in dropped[:3])
        raise DataError(f"no series could be sized by every method ({len(dropped)} left out): {reasons}")
    records = period_records(kept, spec, spec.step_ns)
    totals = method_totals(records, spec)
    sweep = margin_sweep(kept, spec)
    targets = target_sweep(done, spec, {sr.unique_id for sr in kept})
    fallbacks = {s.unique_id: s.fallbacks for s in kept if s.fallbacks}
    days = entity_day_table(kept, spec)
    return ReplayResult(spec, records, totals, sweep, skipped, time.perf_counter() - started, fallbacks, targets,
                        days)


def _same_series(done: list[SeriesReplay], spec: ReplaySpec) -> tuple[list[SeriesReplay], list[dict]]:
    """The series every method sized for every scored period, and the others with their reason.

    A method that could not size a period (its forecast and the fallback failed, a
    baseline had nothing to go on) would otherwise be scored on fewer series than the
    others, and the comparison would no longer be like for like.
    """
    kept, dropped = [], []
    unit = "day" if spec.mode == "daily" else "window"
    for sr in done:
        scored = np.flatnonzero(sr.scored)
        parts = []
        for method in spec.methods:
            track = sr.tracks.get(method)
            missing = [i for i in scored if track is None or not np.isfinite(track.requests[i])]
            if not missing:
                continue
            first = pd.Timestamp(sr.first_ns + sr.starts[missing[0]] * spec.step_ns, unit="ns", tz="UTC")
            why = ""
            if method == FORECAST:
                tried = " and its fallback " + FALLBACK_MODEL if spec.model != FALLBACK_MODEL else ""
                why = f" (model {spec.model}{tried} gave no finite forecast)"
            parts.append(f"no {method} recommendation for {len(missing)} of {len(scored)} scored {unit}(s), "
                         f"the first at {first.isoformat()}{why}")
        if not parts:
            kept.append(sr)
            continue
        reason = "; ".join(parts) + "; left out of every method, so that all are scored on the same series"
        dropped.append({"unique_id": sr.unique_id, "reason": reason})
        log.warning("replay leaves out %s: %s", sr.unique_id, reason)
    return kept, dropped


def walk(frame: pd.DataFrame, spec: ReplaySpec, series_table: pd.DataFrame | None = None, *,
         next_period: bool = False, progress: Callable[[int], None] | None = None,
         ) -> tuple[list[SeriesReplay], list[dict]]:
    """Pass 1 over every series: the periods, their actuals and every method's bases.

    With ``next_period`` (the nightly plan) the periods are anchored at the end of each
    series instead of at UTC midnights: the days before the end that the last period
    learns from are walked (none is scored), and one more period starting at the end of
    the data, with no actuals yet, is the one to recommend; the baselines are not
    computed. It is the period the replay would score next, sized the same way.
    Series that cannot be walked are returned with their reason.
    """
    frame = check_series_frame(frame)
    units = series_units(series_table)
    step_ns = spec.step_ns
    done: list[SeriesReplay] = []
    skipped: list[dict] = []
    for uid, group in frame.groupby("unique_id", sort=True):
        uid = str(uid)
        ds = group["ds"].to_numpy("datetime64[ns]").astype("int64")
        y = group["y"].to_numpy("float64")
        reason = _check_series(ds, y, step_ns, spec)
        if reason is None:
            metric, entity = split_unique_id(uid)
            resource = rs.resource_of(metric)
            unit = units.get(uid) or guess_unit(metric)
            sr = SeriesReplay(uid, metric, entity, resource, unit, int(ds[0]))
            walked, scored_from = _next_period_days(y, spec) if next_period else _scored_days(ds, y, spec)
            if not walked:
                reason = _too_short(y, spec, next_period)
            else:
                walker = _walk_daily if spec.mode == "daily" else _walk_window
                walker(sr, ds, y, walked, scored_from, spec, baselines=not next_period)
                done.append(sr)
        if reason is not None:
            skipped.append({"unique_id": uid, "reason": reason})
            log.info("replay skips %s: %s", uid, reason)
        if progress:
            progress(1)
    return done, skipped


def series_units(series_table: pd.DataFrame | None) -> dict[str, str]:
    """Unit per series id from a series table (empty without one)."""
    if series_table is None or series_table.empty:
        return {}
    return dict(zip(series_table["unique_id"].astype(str), series_table["unit"].astype(str), strict=False))


def _too_short(y: np.ndarray, spec: ReplaySpec, next_period: bool) -> str:
    days = len(y) / spec.steps_per_day
    if next_period:
        return f"too little history: {days:.2f} days; a recommendation needs {spec.min_history_days:g} days"
    return (f"too little history: {days:.2f} days; a recommendation needs {spec.min_history_days:g} days "
            "before a complete UTC day to score")


def _check_series(ds: np.ndarray, y: np.ndarray, step_ns: int, spec: ReplaySpec) -> str | None:
    if ds.size < 2:
        return "fewer than two points"
    steps = np.diff(ds)
    if (steps != step_ns).any():
        return f"not on a regular {spec.freq} grid; run the features step first (foresight_lib.quality.features)"
    infinite, missing = np.isinf(y), np.isnan(y)
    if infinite.any():
        first = pd.Timestamp(int(ds[np.argmax(infinite)]), unit="ns", tz="UTC").isoformat()
        return (f"contains {int(infinite.sum())} infinite value(s) (±Inf, the first at {first}), which are not "
                "usage and which the features step does not fill; remove or correct those points in the input")
    if missing.any():
        first = pd.Timestamp(int(ds[np.argmax(missing)]), unit="ns", tz="UTC").isoformat()
        return (f"contains {int(missing.sum())} missing value(s) (NaN, the first at {first}); fill gaps with the "
                "features step first (foresight_lib.quality.features)")
    return None


def _scored_days(ds: np.ndarray, y: np.ndarray, spec: ReplaySpec) -> tuple[list[int], int]:
    """Day starts to walk and the first scored one: UTC midnights with the minimum history
    before and a complete day after; in window mode also the day before the first scored
    one (walked unscored, so that the first scored windows have a past to learn from)."""
    day_ns = pd.Timedelta("1D").value
    spd = spec.steps_per_day
    first = int(np.ceil(spec.min_history_days * spd))
    starts = [int(i) for i in np.flatnonzero(ds % day_ns == 0) if i >= first and i + spd <= ds.size]
    starts = starts[: spec.max_days] if spec.max_days else starts
    if not starts:
        return [], 0
    warm = starts[0] - spd
    if spec.mode == "window" and warm - spec.lead_steps >= spd:
        return [warm, *starts], starts[0]
    return starts, starts[0]


def _next_period_days(y: np.ndarray, spec: ReplaySpec) -> tuple[list[int], int]:
    """Day starts counted back from the next period's start, then that start itself.

    The next period starts at the end of the data, or ``lead_steps`` after it.
    """
    spd, n = spec.steps_per_day, len(y)
    first = int(np.ceil(spec.min_history_days * spd))
    if n < first:
        return [], n + 1
    if spec.mode == "daily":
        back = int(np.ceil(spec.calibration_days))
    else:  # the windows learnt from, each with its full week of peak-to-level ratios
        back = PEAK_RATIO_DAYS + int(np.ceil((spec.calibration_windows * spec.window_steps + spec.lead_steps) / spd))
    end = n + spec.lead_steps  # the next period starts lead steps after the data end
    starts = [end - k * spd for k in range(back, 0, -1) if end - k * spd - spec.lead_steps >= first]
    return [*starts, end], end + 1  # nothing is scored


def _fit_forecast(sr: SeriesReplay, history: np.ndarray, spec: ReplaySpec, run: Callable):
    """Fit the spec's model on ``history`` and call ``run(model)``; seasonal naive when that fails."""
    for name in dict.fromkeys([spec.model, FALLBACK_MODEL]):
        try:
            model = make_model(name).fit(history, spec.steps_per_day)
            forecast = run(model)
            if all(np.isfinite(np.asarray(v)).all() for v in forecast.values()):
                if name != spec.model:
                    sr.fallbacks += 1
                return forecast
        except Exception as exc:  # a failing model must not end the replay: fall back, counted
            log.debug("model %s failed on %s: %s", name, sr.unique_id, exc)
    sr.fallbacks += 1
    return None


def _add_period(sr: SeriesReplay, start: int, actual: np.ndarray, scored: bool, base: float, first_base: float,
                mean: np.ndarray | None, conf: float | None, note: str | None = None, level_start: int = 0) -> None:
    sr.notes.append(note)
    sr.level_starts.append(level_start)
    sr.starts.append(start)
    sr.actuals.append(actual)
    sr.scored.append(scored)
    sr.bases.append(base)
    sr.first_bases.append(first_base)
    sr.means.append(mean)
    sr.confidences.append(conf)


def _walk_daily(sr: SeriesReplay, ds: np.ndarray, y: np.ndarray, days: list[int], scored_from: int,
                spec: ReplaySpec, baselines: bool = True) -> None:
    """Per day: the calibrated base (``rightsizing.daily_base_for``: the mean forecast's
    quantile, or the recent usage's with ``spec.daily_base_days``; for memory the recent
    daily peaks since the last step change), the upper bound's quantile
    (the base used with the fixed margin while no past day is known); the VPA and Crane bases."""
    prof = spec.profile_
    spd = spec.steps_per_day
    hist_steps = int(round(spec.history_days * spd))
    times = ds / 1e9
    min_memory, min_bump = bl.vpa_memory_constants(sr.unit) if sr.resource == "memory" else (0.0, 0.0)
    vpa = bl.VPARecommender(sr.resource, bl.first_bucket_for(sr.unit, y), min_bump=min_bump) if baselines else None
    vpa_last: tuple[int, float] | None = None
    seen = 0
    recent = rs.RecentError(int(np.ceil(spec.calibration_days)))
    sr.tracks = {m: Track() for m in spec.methods if m != FORECAST} if baselines else {}
    smoothed = float("nan")
    for before in range(days[0] % spd or spd, days[0] + 1, spd):  # every whole day before the first walked one
        smoothed = rs.smooth_peak(smoothed, float(y[max(0, before - spd):before].max()))
    for start in days:
        scored = start >= scored_from
        actual = y[start:start + spd]
        history = y[max(0, start - hist_steps):start]
        forecast = _fit_forecast(sr, history, spec, lambda m: m.predict(spd, LEVELS))
        mean_base = rs.daily_mean_base(forecast, prof) if forecast is not None else float("nan")
        note, level_start = None, 0
        if sr.resource == "memory":
            base, note, level_start = _daily_memory_base(y, start, spd, mean_base, spec.memory_peak_days,
                                                         spec.memory_step_change)
        elif spec.daily_base_days:  # the profile's quantile of the last days' usage, as of a forecast curve
            base = rs.daily_mean_base({"mean": y[max(0, start - spec.daily_base_days * spd):start]}, prof)
        else:
            base = rs.daily_base_for(sr.resource, mean_base, smoothed)
        first_base = rs.daily_base(forecast, prof) if forecast is not None else float("nan")
        conf = rs.confidence(start / spd, recent.value())
        _add_period(sr, start, actual, scored, base, first_base,
                    forecast["mean"] if forecast is not None else None, conf, note, level_start)
        if forecast is not None and actual.size:
            recent.add(forecast["mean"][:actual.size], actual)
        if actual.size:
            smoothed = rs.smooth_peak(smoothed, float(actual.max()))
        if vpa is None:
            continue
        if not scored:
            sr.tracks[VPA].skip()
            sr.tracks[CRANE].skip()
            continue
        vpa.observe(y[seen:start], times[seen:start])
        seen = start
        floor = min_memory
        if vpa_last is not None:  # the day before went over its limit: the VPA's OOM bump
            last_start, last_limit = vpa_last
            last_day = y[last_start:last_start + spd]
            if last_day.size and np.isfinite(last_limit) and (last_day > last_limit).any():
                top = int(np.argmax(last_day))
                floor = max(floor, vpa.oom(float(last_day[top]), float(times[last_start + top])))
        vpa_base = vpa.target(with_margin=False)
        request, limit = sr.sized(max(vpa_base * (1 + bl.VPA_SAFETY_MARGIN), floor), prof)
        sr.tracks[VPA].add(vpa_base, request, limit, 1 + bl.VPA_SAFETY_MARGIN, None, floor)
        if sr.resource == "memory":
            vpa_last = (start, limit)
        crane_base = bl.crane_percentile(y[:start], times[:start], now_s=float(times[start]), margin=0.0)
        sr.tracks[CRANE].add(crane_base, *sr.sized(crane_base * (1 + bl.CRANE_MARGIN), prof),
                             1 + bl.CRANE_MARGIN, None)


def _daily_memory_base(y: np.ndarray, start: int, spd: int, mean_base: float, peak_days: int = rs.MEMORY_PEAK_DAYS,
                       step_change: tuple[float, int, int] | None = None) -> tuple[float, str | None, int]:
    """Daily memory base at ``start``: the peak model (``rightsizing.daily_peak_base``) on
    the week before it, else the fallback estimator (the mean forecast's quantile, or the
    highest value since the last step change where higher). Returns the base, the
    fallback's reason (None for the peak model) and where the latest level began."""
    first = max(0, start - 7 * spd)
    history = y[first:start]
    base, why, since = rs.daily_peak_base(history, spd, peak_days, step_change)
    if why is not None:
        recent = history[since:]
        return rs.memory_base(mean_base, float(recent.max()) if recent.size else float("nan")), why, first + since
    return base, None, first + since


def _walk_window(sr: SeriesReplay, ds: np.ndarray, y: np.ndarray, days: list[int], scored_from: int,
                 spec: ReplaySpec, baselines: bool = True) -> None:
    """Per 30-minute window: a forecast of its peak (``rightsizing.window_base_for``).

    The model is fitted once per day on the history before it and updated with the
    actuals at every decision point without refitting; a window is decided at its start,
    or ``lead_windows`` windows before it (then the day's fit ends that much earlier).
    The level is the highest mean forecast over the window's steps; CPU's base is that
    level times the same window's median peak-to-level ratio over the previous days (at
    most ``PEAK_RATIO_DAYS``); memory's is the smoothed peaks of the windows that ended
    by the decision point, or the level where higher. A day cut short by the end of the
    data walks its windows with actuals; the next period's day walks its first window.
    """
    spd, w, lead = spec.steps_per_day, spec.window_steps, spec.lead_steps
    hist_steps = int(round(spec.history_days * spd))
    all_origins = list(range(0, spd, w))
    ratios: list[deque] = [deque(maxlen=PEAK_RATIO_DAYS) for _ in all_origins]
    recent = rs.RecentError(spec.calibration_windows)
    first = days[0] - lead
    # smoothed window peaks, with the index up to which each state knows the data
    smoothed_ends = [first]
    smoothed = [float(y[first - w:first].max()) if first >= w else float("nan")]
    sr.tracks = {REACTIVE: Track()} if baselines else {}
    floor_memory = sr.resource == "memory" and spec.window_memory_floor_days > 0
    for start in days:
        cut = start - lead
        known = y[cut:cut + spd]  # actuals after the day's fit, known at the decision points
        if floor_memory:  # the recent daily peaks, as a daily memory size would start from
            day_floor = _daily_memory_base(y, cut, spd, float("nan"), spec.window_memory_floor_days,
                                           spec.memory_step_change)[0]
        # the windows with actuals (a prefix of the day), or the next period's first window
        origins = [o for o in all_origins if start + o + w <= len(y)] or [0]
        history = y[max(0, cut - hist_steps):cut]
        fallbacks = sr.fallbacks
        forecast = _fit_forecast(sr, history, spec,
                                 lambda m, d=known, o=origins: m.forecast_origins(d, o, lead + w, LEVELS))
        if start < scored_from:
            sr.fallbacks = fallbacks  # a day walked only to learn from does not count
        for k, origin in enumerate(origins):
            begin = start + origin
            scored = start >= scored_from
            actual = y[begin:begin + w]
            mean = forecast["mean"][k][lead:] if forecast is not None else None
            level = float(mean.max()) if mean is not None else float("nan")
            state = smoothed[bisect_right(smoothed_ends, begin - lead) - 1]
            known_to = begin - lead  # the data known when the window is sized
            last_peak = float(y[known_to - w:known_to].max()) if known_to >= w else float("nan")
            base = rs.window_base_for(sr.resource, level, list(ratios[k]), state, last_peak)
            if floor_memory:  # memory: never below the recent daily peaks nor what the day has reached so far
                seen = y[cut:known_to]
                seen = seen[np.isfinite(seen)]
                so_far = float(seen.max()) if seen.size else float("nan")
                base = rs.memory_base(rs.memory_base(base, day_floor), so_far)
            conf = rs.confidence(begin / spd, recent.value())
            _add_period(sr, begin, actual, scored, base, base, mean, conf)
            if not actual.size:
                continue
            if np.isfinite(level):
                ratios[k].append(rs.peak_to_level(float(actual.max()), level))
                recent.add(mean[:actual.size], actual)
            smoothed_ends.append(begin + w)
            smoothed.append(rs.smooth_peak(smoothed[-1], float(actual.max())))
            if scored and baselines:
                reactive_base = bl.reactive_peak(y[begin - w:begin], margin=0.0)
                sr.tracks[REACTIVE].add(reactive_base,
                                        *sr.sized(reactive_base * (1 + bl.REACTIVE_MARGIN), spec.profile_),
                                        1 + bl.REACTIVE_MARGIN, None)
            elif baselines:
                sr.tracks[REACTIVE].skip()
