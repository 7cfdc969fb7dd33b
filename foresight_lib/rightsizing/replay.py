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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace

import numpy as np
import pandas as pd

from foresight_lib.errors import ConfigError, DataError
from foresight_lib.forecasting.models import FALLBACK_MODEL, MODEL_PATHS, check_model_names, make_model
from foresight_lib.frames import check_series_frame, split_unique_id
from foresight_lib.horizons import horizon_steps, season_length, to_timedelta
from foresight_lib.rightsizing import baselines as bl
from foresight_lib.rightsizing import sizing as rs
from foresight_lib.rightsizing.replay_report import CRANE, FORECAST, REACTIVE, VPA, compare, score, score_ratios
from foresight_lib.sources.loaders import guess_unit

log = logging.getLogger(__name__)

MODES = ("daily", "window")
LOCAL_MODELS = [m for m in MODEL_PATHS if m != "lstm"]
"""Models fitted one series at a time (the LSTM is fitted across all series at once)."""
METHODS = {"daily": (FORECAST, VPA, CRANE), "window": (FORECAST, REACTIVE)}
DEFAULT_MODEL = {"daily": "seasonal_naive", "window": "naive"}
"""Model per mode when none is named: a static daily size needs the day's shape (seasonal
naive repeats yesterday's); a window plan is conditioned on the latest actuals, whose
best level forecast over 30 minutes is the latest value (naive). Both are the fast models
that measured best on the Bitbrains replay (benchmarks/results/rightsizing.md)."""
DEFAULT_MARGINS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)
TARGETS = (0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15)
"""Target violation rates the forecast-driven plan is rerun with for its trade-off curve."""
LEVELS = (80, 95)
PEAK_RATIO_DAYS = 7
"""Window mode: previous days whose same-time window gives the peak-to-level ratio (one
week, so that every weekday is in it, as for the daily factor's ``calibration_days``)."""


@dataclass
class ReplaySpec:
    """How to replay a trace."""

    mode: str = "daily"
    profile: str = "balanced"
    model: str = "seasonal_naive"
    """Forecasting model of the forecast-driven method (any local model of the registry)."""
    freq: str = "5min"
    window: str = "30m"
    min_history_days: float = rs.MIN_HISTORY_DAYS
    history_days: float = 7.0
    """History the model is fitted on before each day."""
    calibration_days: float = 7.0
    """Daily mode: previous days the factor is learnt from."""
    calibration_windows: int = 96
    """Window mode: previous windows (96 = two days) the factor is learnt from."""
    lead_windows: int = 0
    """Window mode: how many windows ahead each window is set (0: at its start, from the
    latest actuals; 3: an hour and a half before it starts, from the data known then)."""
    memory_peak_days: int = rs.MEMORY_PEAK_DAYS
    """Daily mode: whole days whose highest peak is the memory base (``rightsizing.daily_peak_base``)."""
    memory_min_factor: float = rs.MEMORY_MIN_FACTOR
    """Daily mode: least learnt factor over the memory base."""
    memory_step_change: tuple[float, int, int] = (rs.STEP_CHANGE_RATIO, rs.STEP_CHANGE_HOURS,
                                                   rs.STEP_CHANGE_MIN_HOURS)
    """Daily mode: ratio, hours before and least hours after of a memory step change
    (``rightsizing.last_step_change``)."""
    margins: Sequence[float] = DEFAULT_MARGINS
    max_days: int | None = None
    """Score at most this many days per series (the first ones after the minimum history)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown replay mode '{self.mode}'; choose from {list(MODES)}")
        self.profile_ = rs.get_profile(self.profile)
        check_model_names([self.model])
        if self.model not in LOCAL_MODELS:
            raise ConfigError(f"model '{self.model}' cannot size one series at a time; choose from {LOCAL_MODELS}")
        self.steps_per_day = season_length(self.freq)
        self.window_steps = horizon_steps(self.window, self.freq)
        if self.steps_per_day % self.window_steps:
            raise ConfigError(f"window {self.window} does not divide a day; use e.g. 15m, 30m, 1h")
        if self.min_history_days < 1:
            raise ConfigError(f"min_history_days must be at least 1 (one daily season), got {self.min_history_days}")
        if self.history_days <= 0 or self.calibration_days <= 0 or self.calibration_windows < 1:
            raise ConfigError("history_days, calibration_days and calibration_windows must be positive")
        if self.lead_windows and self.mode != "window":
            raise ConfigError("lead_windows applies to window mode only: a daily size is made at the day's start")
        if not 0 <= self.lead_windows < self.steps_per_day // self.window_steps:
            raise ConfigError(f"lead_windows must be between 0 and {self.steps_per_day // self.window_steps - 1} "
                              f"(less than a day of {self.window} windows), got {self.lead_windows}")
        if self.memory_peak_days < 1 or self.memory_min_factor <= 0:
            raise ConfigError(f"memory_peak_days must be at least 1 and memory_min_factor positive, got "
                              f"{self.memory_peak_days} and {self.memory_min_factor}")
        if not self.margins or any(m < 0 for m in self.margins):
            raise ConfigError(f"margins must be a non-empty list of non-negative numbers, got {list(self.margins)}")
        self.margins = tuple(sorted(float(m) for m in self.margins))

    @property
    def methods(self) -> tuple[str, ...]:
        return METHODS[self.mode]

    @property
    def period_steps(self) -> int:
        return self.steps_per_day if self.mode == "daily" else self.window_steps

    @property
    def step_ns(self) -> int:
        """One grid step in nanoseconds."""
        return to_timedelta(self.freq).value

    @property
    def lead_steps(self) -> int:
        """Steps between the moment a period is sized and its start."""
        return self.lead_windows * self.window_steps if self.mode == "window" else 0


@dataclass
class _Track:
    """One method's bases (before any margin), requests and limits over a series' periods."""

    bases: list[float] = field(default_factory=list)
    requests: list[float] = field(default_factory=list)
    limits: list[float] = field(default_factory=list)
    factors: list[float] = field(default_factory=list)
    confidences: list[float | None] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    """The forecast-driven request before rounding (base × factor, capped)."""
    targets: list[float] = field(default_factory=list)
    """The violation target the forecast-driven request aims at (per resource)."""


@dataclass
class _SeriesReplay:
    unique_id: str
    metric: str
    entity: str
    resource: str
    unit: str
    first_ns: int = 0
    starts: list[int] = field(default_factory=list)
    """Every walked period's first index; ``scored`` says which ones are scored."""
    actuals: list[np.ndarray] = field(default_factory=list)
    scored: list[bool] = field(default_factory=list)
    bases: list[float] = field(default_factory=list)
    """The forecast-driven method's calibrated base per period."""
    first_bases: list[float] = field(default_factory=list)
    """The base used with the fixed margin while no past period is known."""
    means: list[np.ndarray | None] = field(default_factory=list)
    confidences: list[float | None] = field(default_factory=list)
    tracks: dict[str, _Track] = field(default_factory=dict)
    fallbacks: int = 0
    notes: list[str | None] = field(default_factory=list)
    """Per period: why the fallback estimator sized it (None when the main one did)."""
    level_starts: list[int] = field(default_factory=list)
    """Per period: where the latest level known when it was sized began (daily memory:
    after the last step change; 0 elsewhere). Its factor learns only from periods since."""


@dataclass
class ReplayResult:
    """Everything a replay found."""

    spec: ReplaySpec
    records: pd.DataFrame
    """One row per series, period and method: the recommendation and its scores."""
    totals: pd.DataFrame
    """Per metric and method: slack, violations (and above the limit), points, periods."""
    sweep: pd.DataFrame
    """Per metric, method and fixed margin: slack and violations."""
    skipped: list[dict]
    seconds: float
    fallbacks: dict[str, int] = field(default_factory=dict)
    targets: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per metric and target violation rate: the forecast-driven plan's slack and violations."""

    def report(self) -> dict:
        """The JSON-ready summary, with every record."""
        records = self.records.copy()
        for col in ("period_start", "period_end"):
            records[col] = records[col].map(lambda t: t.isoformat())
        return {
            "mode": self.spec.mode, "profile": self.spec.profile, "model": self.spec.model,
            "settings": {
                "freq": self.spec.freq, "window": self.spec.window, "min_history_days": self.spec.min_history_days,
                "history_days": self.spec.history_days, "calibration_days": self.spec.calibration_days,
                "calibration_windows": self.spec.calibration_windows, "lead_windows": self.spec.lead_windows,
                "memory_peak_days": self.spec.memory_peak_days, "memory_min_factor": self.spec.memory_min_factor,
                "memory_step_change": list(self.spec.memory_step_change),
                "margins": list(self.spec.margins),
                "profile": vars(self.spec.profile_).copy(),
            },
            "methods": list(self.spec.methods),
            "totals": self.totals.to_dict(orient="records"),
            "comparison": compare(self.totals, self.spec.mode, self.targets),
            "sweep": self.sweep.to_dict(orient="records"),
            "targets": self.targets.to_dict(orient="records"),
            "series": int(self.records["unique_id"].nunique()) if len(self.records) else 0,
            "skipped": self.skipped,
            "fallbacks": self.fallbacks,
            "seconds": round(self.seconds, 2),
            "records": records.to_dict(orient="records"),
        }


# ---------------------------------------------------------------------------
# The walk: pass 1 (bases, per series) then pass 2 (factors, pooled across series)


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
    records = _records(kept, spec, spec.step_ns)
    totals = _totals(records, spec)
    sweep = _sweep(kept, spec)
    targets = _target_sweep(done, spec, {sr.unique_id for sr in kept})
    fallbacks = {s.unique_id: s.fallbacks for s in kept if s.fallbacks}
    return ReplayResult(spec, records, totals, sweep, skipped, time.perf_counter() - started, fallbacks, targets)


def _same_series(done: list[_SeriesReplay], spec: ReplaySpec) -> tuple[list[_SeriesReplay], list[dict]]:
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
         ) -> tuple[list[_SeriesReplay], list[dict]]:
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
    done: list[_SeriesReplay] = []
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
            sr = _SeriesReplay(uid, metric, entity, resource, unit, int(ds[0]))
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


def _fit_forecast(sr: _SeriesReplay, history: np.ndarray, spec: ReplaySpec, run: Callable):
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


def _add(track: _Track, base: float, request: float, limit: float, factor: float, conf: float | None) -> None:
    track.bases.append(base)
    track.requests.append(request)
    track.limits.append(limit)
    track.factors.append(factor)
    track.confidences.append(conf)


def _skip(*tracks: _Track) -> None:
    """A period walked only to learn from: no baseline recommendation."""
    for track in tracks:
        _add(track, float("nan"), float("nan"), float("nan"), float("nan"), None)


def _sized(value: float, sr: _SeriesReplay, prof: rs.Profile) -> tuple[float, float]:
    if not np.isfinite(value):
        return float("nan"), float("nan")
    sizing = rs.size(value, sr.resource, sr.unit, prof)
    return sizing.request, sizing.limit


def _add_period(sr: _SeriesReplay, start: int, actual: np.ndarray, scored: bool, base: float, first_base: float,
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


def _walk_daily(sr: _SeriesReplay, ds: np.ndarray, y: np.ndarray, days: list[int], scored_from: int,
                spec: ReplaySpec, baselines: bool = True) -> None:
    """Per day: the calibrated base (``rightsizing.daily_base_for``: the mean forecast's
    quantile; for memory the smoothed daily peaks where higher), the upper bound's quantile
    (the base used with the fixed margin while no past day is known); the VPA and Crane bases."""
    prof = spec.profile_
    spd = spec.steps_per_day
    hist_steps = int(round(spec.history_days * spd))
    times = ds / 1e9
    vpa = bl.VPARecommender(sr.resource, bl.first_bucket_for(sr.unit, y)) if baselines else None
    seen = 0
    recent = rs.RecentError(int(np.ceil(spec.calibration_days)))
    sr.tracks = {m: _Track() for m in spec.methods if m != FORECAST} if baselines else {}
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
            _skip(sr.tracks[VPA], sr.tracks[CRANE])
            continue
        vpa.observe(y[seen:start], times[seen:start])
        seen = start
        vpa_base = vpa.target(with_margin=False)
        _add(sr.tracks[VPA], vpa_base, *_sized(vpa_base * (1 + bl.VPA_SAFETY_MARGIN), sr, prof),
             1 + bl.VPA_SAFETY_MARGIN, None)
        crane_base = bl.crane_percentile(y[:start], times[:start], now_s=float(times[start]), margin=0.0)
        _add(sr.tracks[CRANE], crane_base, *_sized(crane_base * (1 + bl.CRANE_MARGIN), sr, prof),
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


def _walk_window(sr: _SeriesReplay, ds: np.ndarray, y: np.ndarray, days: list[int], scored_from: int,
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
    sr.tracks = {REACTIVE: _Track()} if baselines else {}
    for start in days:
        cut = start - lead
        known = y[cut:cut + spd]  # actuals after the day's fit, known at the decision points
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
                _add(sr.tracks[REACTIVE], reactive_base,
                     *_sized(reactive_base * (1 + bl.REACTIVE_MARGIN), sr, spec.profile_), 1 + bl.REACTIVE_MARGIN,
                     None)
            elif baselines:
                _skip(sr.tracks[REACTIVE])


def size_forecasts(done: list[_SeriesReplay], spec: ReplaySpec, profile: rs.Profile | None = None) -> None:
    """Pass 2 with the spec's profile, into each series' ``tracks[FORECAST]``."""
    for sr, track in zip(done, forecast_tracks(done, spec, profile), strict=True):
        sr.tracks[FORECAST] = track


def forecast_tracks(done: list[_SeriesReplay], spec: ReplaySpec, profile: rs.Profile | None = None,
                    last_only: bool = False) -> list[_Track]:
    """Pass 2: every period's factor and forecast-driven request, one track per series.

    With ``last_only`` (the nightly plan) only each series' last period is sized.

    The factor is learnt from the periods that had ended when the period was sized
    (``calibration_days`` days, or ``calibration_windows`` windows): the smallest one that
    kept the profile's target share of their points under ``factor × base``. In window
    mode it is shrunk toward the factor learnt from every series of the same metric over
    the same windows (``rightsizing.shrink_factor``). The request is capped at the highest usage of those
    periods (``rightsizing.cap_to_observed``). Before any period is known: the first base
    times the profile's fixed margin.
    """
    prof = profile or spec.profile_
    step = spec.step_ns
    wanted = {sr.first_ns + sr.starts[-1] * step for sr in done} if last_only else None
    pooled = _pooled_factors(done, spec, prof, wanted) if spec.mode == "window" else {}
    keep = int(np.ceil(spec.calibration_days)) if spec.mode == "daily" else spec.calibration_windows
    tracks = []
    for sr in done:
        track = _Track()
        ratios, peaks = _ratio_matrix(sr, spec.period_steps)
        learnable = np.flatnonzero(np.isfinite(peaks) & np.isfinite(sr.bases))
        learnable_starts = np.asarray(sr.starts, dtype="int64")[learnable]
        for i in [len(sr.starts) - 1] if last_only else range(len(sr.starts)):
            start = sr.starts[i]
            # the periods that had ended when this one was sized
            pos = int(np.searchsorted(learnable_starts, start - spec.lead_steps - spec.period_steps, side="right"))
            past = learnable[max(0, pos - keep):pos]
            # only periods sized after the last step change began (their bases knew the new level)
            past = past[learnable_starts[max(0, pos - keep):pos] > sr.level_starts[i]] if sr.level_starts[i] else past
            low = max(prof.min_factor, spec.memory_min_factor) if sr.resource == "memory" else None
            own = rs.calibrate_factor(ratios[past].ravel(), prof, sr.resource, low)
            if spec.mode == "window":
                learnt = rs.shrink_factor(own, pooled.get((sr.metric, sr.first_ns + start * step)), prof, low)
            else:
                learnt = own
            base = sr.bases[i]
            if learnt is not None and np.isfinite(base):
                factor = learnt
                cap = float(peaks[past].max()) if past.size else None
                if cap is not None and low is not None:  # memory: never capped below its least factor
                    cap = max(cap, base * low)
                value = rs.cap_to_observed(base * factor, cap)
            else:  # nothing learnt yet: the first base and the profile's fixed margin
                base, factor = sr.first_bases[i], rs.default_factor(prof)
                value = base * factor
            _add(track, base, *_sized(value, sr, prof), factor, sr.confidences[i])
            track.values.append(value)
            track.targets.append(prof.target_for(sr.resource))
        tracks.append(track)
    return tracks


def _ratio_matrix(sr: _SeriesReplay, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per period: usage over the calibrated base (NaN where either is unknown) and the usage peak."""
    ratios = np.full((len(sr.starts), width), np.nan)
    peaks = np.full(len(sr.starts), np.nan)
    for i, (base, actual) in enumerate(zip(sr.bases, sr.actuals, strict=True)):
        if actual.size:
            peaks[i] = float(np.max(actual))
            if np.isfinite(base) and base > 0:
                ratios[i, :actual.size] = actual / base
    return ratios, peaks


def _pooled_factors(done: list[_SeriesReplay], spec: ReplaySpec, prof: rs.Profile,
                    wanted: set[int] | None = None) -> dict[tuple[str, int], float]:
    """Per metric and window start: the factor learnt from every series' previous windows.

    The pool for a window starting at ``t``, sized ``lead`` before it, is every series'
    windows of the same metric that had ended by then (the last ``calibration_windows``
    window lengths), with their usage over base.
    """
    step = spec.step_ns
    span = spec.calibration_windows * spec.window_steps * step
    width = spec.window_steps * step
    by_metric: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for sr in done:
        times = sr.first_ns + np.asarray(sr.starts, dtype="int64") * step
        by_metric.setdefault(sr.metric, []).append((times, _ratio_matrix(sr, spec.window_steps)[0]))
    out: dict[tuple[str, int], float] = {}
    for metric, parts in by_metric.items():
        every = np.unique(np.concatenate([times for times, _ in parts]))
        for t in every if wanted is None else every[np.isin(every, list(wanted))]:
            decided = t - spec.lead_steps * step
            pool = [r[np.searchsorted(times, decided - span):np.searchsorted(times, decided - width, side="right")]
                    for times, r in parts]
            k = rs.factor_of_ratios(np.concatenate([p.ravel() for p in pool]),
                                    prof.target_for(rs.resource_of(metric)))
            if k is not None:
                out[(metric, int(t))] = k
    return out


# ---------------------------------------------------------------------------
# Records, totals, sweep


def _records(done: list[_SeriesReplay], spec: ReplaySpec, step_ns: int) -> pd.DataFrame:
    rows = []
    period_ns = spec.period_steps * step_ns
    for sr in done:
        for i, start in enumerate(sr.starts):
            if not sr.scored[i]:
                continue
            actual = sr.actuals[i]
            peak = float(actual.max())
            for method, track in sr.tracks.items():
                request, limit = track.requests[i], track.limits[i]
                if not np.isfinite(request):
                    continue
                s = score(request, actual, limit if sr.resource == "memory" else None)
                rows.append({
                    "unique_id": sr.unique_id, "entity": sr.entity, "metric": sr.metric, "resource": sr.resource,
                    "unit": sr.unit, "method": method, "period_start": sr.first_ns + start * step_ns,
                    "target_violation": track.targets[i] if track.targets else None,
                    "base": track.bases[i], "factor": track.factors[i], "request": request, "limit": limit,
                    "confidence": track.confidences[i], "usage_peak": peak, "points": s["points"],
                    "provisioned": s["provisioned"], "unused": s["unused"], "over": s["over"],
                    "over_limit": s.get("over_limit"), "slack": s["slack"], "violations": s["violations"],
                    "violations_limit": s.get("violations_limit"),
                })
    records = pd.DataFrame(rows)
    if records.empty:
        return records
    start_ns = records["period_start"].to_numpy("int64")
    records["period_start"] = pd.to_datetime(start_ns, unit="ns", utc=True)
    records["period_end"] = pd.to_datetime(start_ns + period_ns, unit="ns", utc=True)
    return records


def _totals(records: pd.DataFrame, spec: ReplaySpec) -> pd.DataFrame:
    rows = []
    if records.empty:
        return pd.DataFrame()
    for (metric, method), g in records.groupby(["metric", "method"], sort=True):
        over_limit = int(g["over_limit"].sum()) if g["resource"].iloc[0] == "memory" else None
        per_entity = g.groupby("unique_id")[["unused", "provisioned", "over", "points"]].sum()
        rows.append({
            "metric": metric, "resource": g["resource"].iloc[0], "method": method,
            "series": int(g["unique_id"].nunique()), "periods": len(g), "points": int(g["points"].sum()),
            **score_ratios(float(g["provisioned"].sum()), float(g["unused"].sum()), int(g["points"].sum()),
                      int(g["over"].sum()), over_limit),
            "mean_series_slack": float((per_entity["unused"] / per_entity["provisioned"]).mean()),
            "mean_series_violations": float((per_entity["over"] / per_entity["points"]).mean()),
        })
    return pd.DataFrame(rows)


def _sweep(done: list[_SeriesReplay], spec: ReplaySpec) -> pd.DataFrame:
    """Every method rescored with each fixed margin over its base (the forecast without a learnt factor)."""
    acc: dict[tuple[str, str, float], list[float]] = {}
    for sr in done:
        scored = np.asarray(sr.scored, dtype=bool)
        actual = np.vstack([a for a, s in zip(sr.actuals, scored, strict=True) if s])
        for method, track in sr.tracks.items():
            bases = np.asarray(track.bases, dtype="float64")[scored]
            ok = np.isfinite(bases)
            if not ok.any():
                continue
            for margin in spec.margins:
                req = rs.round_many(bases[ok] * (1.0 + margin), sr.unit, sr.resource)[:, None]
                a = actual[ok]
                sums = acc.setdefault((sr.metric, method, margin), [0.0, 0.0, 0.0, 0.0])
                sums[0] += float(req.sum() * a.shape[1])
                sums[1] += float(np.maximum(req - a, 0.0).sum())
                sums[2] += float(a.size)
                sums[3] += float((a > req).sum())
    rows = [{"metric": metric, "method": method, "margin": margin, "slack": s[1] / s[0] if s[0] else float("nan"),
             "violations": s[3] / s[2] if s[2] else float("nan")}
            for (metric, method, margin), s in sorted(acc.items())]
    return pd.DataFrame(rows)


def _target_sweep(done: list[_SeriesReplay], spec: ReplaySpec, scored_ids: set[str]) -> pd.DataFrame:
    """The forecast-driven plan rerun with each target violation rate of ``TARGETS``.

    Its trade-off curve: the same bases, factors learnt (and pooled over every walked
    series, as for the profile's own plan) for each target, rounded and scored like the
    profile's own plan on the series in ``scored_ids``.
    """
    rows = []
    for target in TARGETS:
        prof = dc_replace(spec.profile_, target_violation=target, memory_target_violation=target)
        acc: dict[str, list[float]] = {}
        for sr, track in zip(done, forecast_tracks(done, spec, prof), strict=True):
            if sr.unique_id not in scored_ids:
                continue
            sums = acc.setdefault(sr.metric, [0.0, 0.0, 0.0, 0.0, 0.0])
            for i, scored in enumerate(sr.scored):
                if not scored or not np.isfinite(track.requests[i]):
                    continue
                s = score(track.requests[i], sr.actuals[i], track.limits[i] if sr.resource == "memory" else None)
                sums[0] += s["provisioned"]
                sums[1] += s["unused"]
                sums[2] += s["points"]
                sums[3] += s["over"]
                sums[4] += s.get("over_limit", 0)
        for metric, (prov, unused, points, over, over_limit) in sorted(acc.items()):
            memory = rs.resource_of(metric) == "memory"
            rows.append({"metric": metric, "target": target,
                         **score_ratios(prov, unused, int(points), int(over), int(over_limit) if memory else None)})
    return pd.DataFrame(rows)
