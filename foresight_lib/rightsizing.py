"""Rightsizing recommendations from forecasts: requests, limits and replicas per entity.

A recommendation starts from a *base*: the forecast's upper bound at the profile's
interval level, summarised over the period it covers (for a static daily size the
profile's quantile of the next day's upper-bound curve; for a 30-minute window the
maximum over the window's steps). The base is multiplied by a *factor* learnt from the
entity's own past: the smallest factor that would have kept the share of 5-minute
points above the request at or under the profile's target violation rate over the
recent periods (``calibrate_factor``). With no past to learn from, the profile's fixed
margin is used. Limits are the request times the profile's limit ratio; every value is
rounded up to units a platform accepts (CPU to 10m/50m millicore steps, memory to Mi)
and is never zero or negative.

Profiles (constants, not fitted to any replay's results):

============  =====  ========  ==========  ======  =========  =========  ===========
profile       level  quantile  violations  margin  cpu limit  mem limit  utilisation
============  =====  ========  ==========  ======  =========  =========  ===========
cost          80     0.90      5 %         5 %     × 1.5      × 1.1      85 %
balanced      80     0.95      2 %         10 %    × 2.0      × 1.25     70 %
performance   95     0.99      0.5 %       25 %    × 3.0      × 1.5      60 %
============  =====  ========  ==========  ======  =========  =========  ===========

The replay (``foresight_lib.replay``), which has the entity's past periods at hand, uses
the calibrated variants: the mean forecast's quantile (``daily_mean_base``) or a forecast
of the window's peak (``window_peak_base``) as the base, the learnt factor carrying the
error distribution, and the request capped at the highest usage of the periods the
factor was learnt from (``cap_to_observed``).

``recommend(result, profile)`` turns a backtest result with live forecasts (the nightly
run's) into the recommendations frame the publish step writes.
"""
from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from foresight_lib.errors import ConfigError
from foresight_lib.frames import split_unique_id
from foresight_lib.horizons import to_timedelta
from foresight_lib.loaders import guess_unit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    """How much headroom a recommendation keeps."""

    name: str
    level: int
    """Interval level whose upper bound is the base (80 or 95)."""
    quantile: float
    """Static daily size: this quantile of the next day's upper-bound curve is the base."""
    target_violation: float
    """Share of 5-minute points above the request the learnt factor aims at."""
    margin: float
    """Fixed margin over the base when there is no past to learn the factor from."""
    cpu_limit_ratio: float
    memory_limit_ratio: float
    target_utilisation: float
    """Per-replica utilisation at the forecast peak that sets the replica count."""
    min_factor: float = 0.5
    max_factor: float = 4.0


PROFILES: dict[str, Profile] = {
    "cost": Profile("cost", 80, 0.90, 0.05, 0.05, 1.5, 1.1, 0.85),
    "balanced": Profile("balanced", 80, 0.95, 0.02, 0.10, 2.0, 1.25, 0.70),
    "performance": Profile("performance", 95, 0.99, 0.005, 0.25, 3.0, 1.5, 0.60),
}

MIN_HISTORY_DAYS = 2.0
"""Least history, in days, before an entity gets a recommendation."""

FULL_CONFIDENCE_DAYS = 7.0
"""History, in days, from which history no longer lowers the confidence."""

RECOMMENDATION_COLUMNS = [
    "unique_id", "entity", "metric", "resource", "unit", "kind", "period_start", "period_end", "model",
    "profile", "base", "factor", "request", "limit", "replicas", "request_display", "limit_display",
    "confidence", "reason",
]


def get_profile(name: str | Profile) -> Profile:
    """The profile called ``name``; raises ConfigError naming the choices."""
    if isinstance(name, Profile):
        return name
    if name not in PROFILES:
        raise ConfigError(f"unknown rightsizing profile '{name}'; choose from {list(PROFILES)}")
    return PROFILES[name]


def resource_of(metric: str) -> str:
    """``cpu``, ``memory`` or ``other`` from a metric name."""
    name = metric.lower()
    if name.startswith("cpu") or "_cpu" in name or "cores" in name:
        return "cpu"
    if name.startswith("mem") or "_mem" in name or "memory" in name:
        return "memory"
    return "other"


# ---------------------------------------------------------------------------
# Rounding

_MIB = 1024.0**2
_CPU_STEPS = {
    # unit -> (size of one millicore-like unit in that unit, small step, large step, threshold)
    "cores": (0.001, 10, 50, 1000),
    "GHz": (0.001, 10, 50, 1000),
    "millicores": (1.0, 10, 50, 1000),
    "MHz": (1.0, 10, 50, 1000),
}
_MEMORY_STEPS = {"bytes": _MIB, "KB": 1024.0, "KiB": 1024.0, "MB": 1.0, "MiB": 1.0, "GB": 1 / 1024, "GiB": 1 / 1024}
_PLAIN_STEPS = {"percent": 0.5, "fraction": 0.005}


def rounding_step(value: float, unit: str, resource: str) -> float:
    """The rounding step for ``value``: 10m below one core and 50m above, 1 Mi for memory.

    MHz are rounded like millicores (10 MHz, then 50 MHz from 1000 MHz); percent to 0.5,
    fractions to 0.005; any other unit to three significant digits.
    """
    if resource == "cpu" and unit in _CPU_STEPS:
        one, small, large, threshold = _CPU_STEPS[unit]
        return one * (small if value / one < threshold else large)
    if resource == "memory" and unit in _MEMORY_STEPS:
        return _MEMORY_STEPS[unit]
    if unit in _PLAIN_STEPS:
        return _PLAIN_STEPS[unit]
    if value <= 0 or not math.isfinite(value):
        return 1e-3
    return 10.0 ** (math.floor(math.log10(value)) - 2)


def round_resource(value: float, unit: str, resource: str) -> float:
    """``value`` rounded up to the unit's step; never below one step (so never zero or negative)."""
    if not math.isfinite(value):
        raise ValueError(f"cannot round a non-finite recommendation ({value})")
    step = rounding_step(max(value, 0.0), unit, resource)
    steps = max(1, math.ceil(value / step - 1e-9))
    return float(round(steps * step, 12))


def round_many(values: np.ndarray, unit: str, resource: str) -> np.ndarray:
    """``round_resource`` over an array (NaN stays NaN)."""
    values = np.asarray(values, dtype="float64")
    out = np.full(values.shape, np.nan)
    finite = np.isfinite(values)
    if not finite.any():
        return out
    v = np.maximum(values[finite], 0.0)
    if resource == "cpu" and unit in _CPU_STEPS:
        one, small, large, threshold = _CPU_STEPS[unit]
        step = one * np.where(v / one < threshold, small, large)
    elif resource == "memory" and unit in _MEMORY_STEPS:
        step = np.full(v.shape, _MEMORY_STEPS[unit])
    elif unit in _PLAIN_STEPS:
        step = np.full(v.shape, _PLAIN_STEPS[unit])
    else:
        safe = np.where(v > 0, v, 1.0)
        step = np.where(v > 0, 10.0 ** (np.floor(np.log10(safe)) - 2), 1e-3)
    out[finite] = np.round(np.maximum(1, np.ceil(v / step - 1e-9)) * step, 12)
    return out


def format_quantity(value: float, unit: str, resource: str) -> str:
    """A Kubernetes-style quantity: ``250m`` / ``2`` cores, ``512Mi``; other units as ``<value> <unit>``."""
    if resource == "cpu" and unit in ("cores", "GHz"):
        millis = round(value * 1000)
        return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"
    if resource == "cpu" and unit == "millicores":
        return f"{round(value)}m"
    if resource == "memory" and unit in _MEMORY_STEPS:
        return f"{round(value / _MEMORY_STEPS[unit])}Mi"
    return f"{value:g} {unit}"


# ---------------------------------------------------------------------------
# Bases, factors, sizes


def upper_key(profile: Profile) -> str:
    return f"hi-{profile.level}"


def daily_base(forecast: dict[str, np.ndarray], profile: Profile) -> float:
    """Static daily base: the profile's quantile of the next day's upper-bound curve."""
    upper = np.asarray(forecast[upper_key(profile)], dtype="float64")
    upper = upper[np.isfinite(upper)]
    return float(np.quantile(upper, profile.quantile)) if upper.size else float("nan")


def window_base(forecast: dict[str, np.ndarray], profile: Profile) -> np.ndarray | float:
    """Window base: the maximum over the window's steps of the upper bound (one per origin for 2-D forecasts)."""
    upper = np.asarray(forecast[upper_key(profile)], dtype="float64")
    return upper.max(axis=-1) if upper.ndim > 1 else float(upper.max())


def daily_mean_base(forecast: dict[str, np.ndarray], profile: Profile) -> float:
    """Calibrated daily base: the profile's quantile of the next day's *mean* forecast curve.

    Used when a factor is learnt from past days: the learnt factor then carries the
    error distribution (from the entity's own residuals), so the model's parametric
    upper bound, which would count that uncertainty a second time, is not used.
    """
    mean = np.asarray(forecast["mean"], dtype="float64")
    mean = mean[np.isfinite(mean)]
    return float(np.quantile(mean, profile.quantile)) if mean.size else float("nan")


def peak_to_level(peak: float, level: float) -> float:
    """The ratio of a window's actual peak to its level forecast (NaN when the level is not positive)."""
    if not (np.isfinite(peak) and np.isfinite(level)) or level <= 0:
        return float("nan")
    return float(peak / level)


def window_peak_base(level: float, past_ratios: Sequence[float]) -> float:
    """A forecast of a window's peak: its level forecast times the typical peak-to-level ratio.

    ``level`` is the highest mean forecast over the window's steps, made at the window
    start from the latest actuals; ``past_ratios`` are ``peak_to_level`` of the same
    time-of-day window on previous days (the seasonal profile of burstiness). Their
    median is used (robust to one odd day) and never below 1: a window's peak is not
    below the level its values are forecast at. With no past ratio the level is the base.
    """
    ratios = np.asarray([r for r in past_ratios if np.isfinite(r)], dtype="float64")
    ratio = max(1.0, float(np.median(ratios))) if ratios.size else 1.0
    return float(level * ratio)


PEAK_SMOOTHING = 0.5
"""Weight of the latest window's peak in the smoothed window peaks (memory): an older
window's weight halves at every window, so a burst is remembered for a few hours."""


def smooth_peak(smoothed: float, peak: float, alpha: float = PEAK_SMOOTHING) -> float:
    """Exponential smoothing of window peaks: ``alpha × peak + (1 − alpha) × smoothed``.

    The one-step-ahead forecast of the next window's peak from the peaks so far (simple
    exponential smoothing); the first peak starts it.
    """
    if not np.isfinite(peak):
        return smoothed
    if not np.isfinite(smoothed):
        return float(peak)
    return float(alpha * peak + (1.0 - alpha) * smoothed)


def window_base_for(resource: str, level: float, past_ratios: Sequence[float], smoothed_peak: float) -> float:
    """A forecast of a window's peak, by resource.

    CPU follows the load: the level forecast from the latest actuals times the seasonal
    peak-to-level ratio (``window_peak_base``). Memory is held once touched: a window's
    memory peak follows the recent windows' peaks (the reason the VPA sizes memory from
    peaks and CPU from samples), so its base is the smoothed window peaks, or the level
    forecast where that is higher. A multiplicative ratio is also unstable for memory that
    drops to near zero between bursts.
    """
    if resource == "memory":
        return float(np.nanmax([level, smoothed_peak])) if np.isfinite([level, smoothed_peak]).any() else float("nan")
    if not np.isfinite(level):
        return float("nan")
    return window_peak_base(level, past_ratios)


def shrink_factor(own: float | None, pooled: float | None, profile: Profile) -> float | None:
    """The geometric mean of an entity's own learnt factor and its fleet's (same metric).

    A window factor is a high quantile learnt from a few hundred points (two days of
    30-minute windows), a noisy estimate; partial pooling toward the factor learnt from
    every series of the same metric over the same windows steadies it. Either alone when
    the other is unknown.
    """
    known = [k for k in (own, pooled) if k is not None and np.isfinite(k) and k > 0]
    if not known:
        return None
    k = float(np.exp(np.mean(np.log(known))))
    return float(min(max(k, profile.min_factor), profile.max_factor))


def cap_to_observed(value: float, past_actuals: Sequence[np.ndarray]) -> float:
    """``value`` capped at the highest usage in the periods the factor was learnt from.

    The learnt factor is the smallest one that kept the past points at or under the
    target violation rate; any request above the highest past point prevented no past
    violation, so the evidence cannot justify it (a multiplicative factor learnt on a
    bursty on/off series would otherwise multiply the burst level too). Unchanged when
    there is no past usage.
    """
    peaks = [float(np.nanmax(a)) for a in past_actuals if np.size(a) and np.isfinite(a).any()]
    if not peaks or not np.isfinite(value):
        return value
    return float(min(value, max(peaks)))


def calibrate_factor(bases: Sequence[float], actuals: Sequence[np.ndarray], profile: Profile) -> float | None:
    """The smallest factor ``k`` with at most ``target_violation`` of the points above ``k × base``.

    Learnt from past periods only (each a base and the usage that followed it); clamped to
    the profile's ``[min_factor, max_factor]``. None when there is nothing to learn from.
    """
    ratios = []
    for base, y in zip(bases, actuals, strict=True):
        y = np.asarray(y, dtype="float64")
        if not np.isfinite(base) or base <= 0 or not y.size:
            continue
        ratios.append(y[np.isfinite(y)] / base)
    if not ratios:
        return None
    k = factor_of_ratios(np.concatenate(ratios), profile.target_violation)
    return None if k is None else float(min(max(k, profile.min_factor), profile.max_factor))


def factor_of_ratios(ratios: np.ndarray, target_violation: float) -> float | None:
    """The smallest ``k`` with at most ``target_violation`` of ``ratios`` (usage / base) above it."""
    ratios = np.asarray(ratios, dtype="float64")
    ratios = ratios[np.isfinite(ratios)]
    if not ratios.size:
        return None
    allowed = int(np.floor(target_violation * ratios.size + 1e-9))  # points allowed above
    return float(np.partition(ratios, ratios.size - allowed - 1)[ratios.size - allowed - 1])


def default_factor(profile: Profile) -> float:
    return 1.0 + profile.margin


def confidence(history_days: float, relative_error: float | None) -> float:
    """How much to trust a recommendation, in [0, 1].

    The product of a history term (``history_days / 7``, capped at 1) and an accuracy
    term ``1 / (1 + e)`` where ``e`` is the forecast's recent mean absolute error relative
    to the mean usage; 0.5 stands in for the accuracy term when no error is known yet.
    """
    history = min(1.0, max(0.0, history_days) / FULL_CONFIDENCE_DAYS)
    if relative_error is None or not math.isfinite(relative_error):
        accuracy = 0.5
    else:
        accuracy = 1.0 / (1.0 + max(0.0, relative_error))
    return round(history * accuracy, 3)


def relative_error(means: Sequence[np.ndarray], actuals: Sequence[np.ndarray]) -> float | None:
    """Mean absolute error over mean absolute usage, pooled over past periods; None without data."""
    if not means:
        return None
    m = np.concatenate([np.ravel(x) for x in means])
    y = np.concatenate([np.ravel(x) for x in actuals])
    ok = np.isfinite(m) & np.isfinite(y)
    if not ok.any():
        return None
    scale = float(np.mean(np.abs(y[ok])))
    if scale <= 0:
        return 0.0 if float(np.mean(np.abs(m[ok] - y[ok]))) == 0 else None
    return float(np.mean(np.abs(m[ok] - y[ok])) / scale)


@dataclass
class Sizing:
    """A request, a limit and a replica count, rounded."""

    request: float
    limit: float
    replicas: int
    request_display: str
    limit_display: str


def limit_ratio(profile: Profile, resource: str) -> float:
    if resource == "memory":
        return profile.memory_limit_ratio
    if resource == "cpu":
        return profile.cpu_limit_ratio
    return 1.0


def size(value: float, resource: str, unit: str, profile: Profile, peak: float | None = None,
         replica_capacity: float | None = None) -> Sizing:
    """Round ``value`` into a request, derive the limit and the replica count.

    Args:
        value: the unrounded request (base × factor).
        peak: the forecast peak the replicas must absorb (default: the request).
        replica_capacity: what one replica can use; default the request itself, so the
            count says how many replicas of the recommended size keep each one at or under
            the profile's target utilisation at the peak.
    """
    request = round_resource(value, unit, resource)
    limit = round_resource(request * limit_ratio(profile, resource), unit, resource)
    capacity = replica_capacity if replica_capacity and replica_capacity > 0 else request
    peak_value = peak if peak is not None and math.isfinite(peak) else request
    replicas = max(1, math.ceil(max(peak_value, 0.0) / (profile.target_utilisation * capacity) - 1e-9))
    return Sizing(request, limit, replicas, format_quantity(request, unit, resource),
                  format_quantity(limit, unit, resource))


# ---------------------------------------------------------------------------
# Recommendations from a nightly run's backtest and live forecasts


def recommend(result, profile: str | Profile = "balanced", series_table: pd.DataFrame | None = None,
              replica_capacity: dict[str, float] | None = None) -> pd.DataFrame:
    """Daily sizes and the next window's plan per series, from a backtest result with live forecasts.

    ``result`` is a ``BacktestResult`` run with ``future=True`` and ``keep_models=True``
    (what the nightly evaluate step produces). Per series, with the champion model (or
    seasonal naive where the champion has no fitted model for it):

    - ``kind="window"``: the next 30-minute window (the live forecast's steps): base =
      maximum upper bound over the steps, factor learnt from the backtest's held-out day
      (the same base per cutoff against the actuals that followed it);
    - ``kind="daily"``: the next day from the fitted model's forecast: base = the profile's
      quantile of the upper-bound curve, factor = 1 + the profile's margin.

    A series the backtest skipped (too short, too gappy: under two days of history), or
    with no usable forecast, gets rows with no values and the ``reason``.

    Returns:
        Frame with ``RECOMMENDATION_COLUMNS``.
    """
    prof = get_profile(profile)
    units = _units(series_table)
    spec = result.spec
    freq = to_timedelta(spec.freq)
    backtests = result.forecasts
    future = result.future_forecasts if result.future_forecasts is not None else pd.DataFrame()
    rows: list[dict] = []
    for uid in result.series:
        metric, entity = split_unique_id(uid)
        resource = resource_of(metric)
        unit = units.get(uid) or guess_unit(metric)
        model = _model_for(result, uid)
        common = {"unique_id": uid, "entity": entity, "metric": metric, "resource": resource, "unit": unit,
                  "model": model, "profile": prof.name}
        history_days = float(spec.history_days)
        bt = backtests[(backtests["unique_id"] == uid) & (backtests["model"] == model)] if len(backtests) else backtests
        bases, actuals, means = _backtest_windows(bt, prof)
        learnt = calibrate_factor(bases, actuals, prof)
        factor_w = learnt or default_factor(prof)
        conf = confidence(history_days, relative_error(means, actuals))
        # as in the replay: a learnt factor never takes the request above the usage it was learnt from
        cap = actuals if learnt is not None else None
        rows.append(_window_row(common, future, uid, model, prof, factor_w, conf, freq, replica_capacity, cap))
        rows.append(_daily_row(common, result, uid, model, prof, conf, freq, replica_capacity))
    for skipped in result.skipped:
        uid = str(skipped["unique_id"])
        metric, entity = split_unique_id(uid)
        common = {"unique_id": uid, "entity": entity, "metric": metric, "resource": resource_of(metric),
                  "unit": units.get(uid) or guess_unit(metric), "model": None, "profile": prof.name}
        reason = f"no recommendation: {skipped['reason']}"
        rows += [_empty_row(common, kind, reason) for kind in ("window", "daily")]
    return pd.DataFrame(rows, columns=RECOMMENDATION_COLUMNS)


def _units(series_table: pd.DataFrame | None) -> dict[str, str]:
    if series_table is None or series_table.empty or "unit" not in series_table:
        return {}
    return dict(zip(series_table["unique_id"].astype(str), series_table["unit"].astype(str), strict=False))


def _model_for(result, uid: str) -> str:
    champion = result.champion
    if (champion, uid) in result.models:
        return champion
    for name in ("seasonal_naive", "naive"):
        if (name, uid) in result.models:
            return name
    return champion


def _backtest_windows(bt: pd.DataFrame, profile: Profile) -> tuple[list[float], list[np.ndarray], list[np.ndarray]]:
    bases, actuals, means = [], [], []
    if bt is None or bt.empty or "y" not in bt:
        return bases, actuals, means
    col = f"yhat_hi_{profile.level}"
    if col not in bt:
        return bases, actuals, means
    for _, group in bt.groupby("cutoff", sort=True):
        bases.append(float(group[col].max()))
        actuals.append(group["y"].to_numpy("float64"))
        means.append(group["yhat"].to_numpy("float64"))
    return bases, actuals, means


def _empty_row(common: dict, kind: str, reason: str) -> dict:
    row = dict.fromkeys(RECOMMENDATION_COLUMNS)
    row.update(common)
    row.update({"kind": kind, "reason": reason})
    return row


def _window_row(common: dict, future: pd.DataFrame, uid: str, model: str, prof: Profile, factor: float,
                conf: float, freq: pd.Timedelta, replica_capacity: dict[str, float] | None,
                cap: Sequence[np.ndarray] | None = None) -> dict:
    rows = future[(future["unique_id"] == uid) & (future["model"] == model)] if len(future) else future
    col = f"yhat_hi_{prof.level}"
    if rows is None or rows.empty or col not in rows or not np.isfinite(rows[col]).any():
        return _empty_row(common, "window", "no live forecast for this series; run the backtest with future=True")
    base = float(rows[col].max())
    if cap:
        factor = cap_to_observed(base * factor, cap) / base if base > 0 else factor
    return _sized_row(common, "window", rows["cutoff"].min(), rows["ds"].max(), base, factor, conf, prof, base,
                      replica_capacity)


def _daily_row(common: dict, result, uid: str, model: str, prof: Profile, conf: float, freq: pd.Timedelta,
               replica_capacity: dict[str, float] | None) -> dict:
    fitted = result.models.get((model, uid))
    if fitted is None:
        return _empty_row(common, "daily", f"no fitted {model} model kept for this series; "
                                           "run the backtest with keep_models=True")
    horizon = int(result.spec.season_length)
    try:
        forecast = copy.deepcopy(fitted).predict(horizon, levels=tuple(sorted({80, 95, prof.level})))
    except Exception as exc:  # a model that cannot forecast a day ahead: say so, keep the others
        log.warning("daily forecast failed for %s with %s: %s", uid, model, exc)
        return _empty_row(common, "daily", f"{model} could not forecast a day ahead: {exc}")
    base = daily_base(forecast, prof)
    if not math.isfinite(base):
        return _empty_row(common, "daily", f"{model} gave no finite upper bound for the next day")
    future = result.future_forecasts
    start = None
    if future is not None and len(future):
        rows = future[future["unique_id"] == uid]
        start = rows["cutoff"].min() if len(rows) else None
    end = start + horizon * freq if start is not None else None
    peak = float(np.nanmax(forecast[upper_key(prof)]))
    return _sized_row(common, "daily", start, end, base, default_factor(prof), conf, prof, peak, replica_capacity)


def _sized_row(common: dict, kind: str, start, end, base: float, factor: float, conf: float, prof: Profile,
               peak: float, replica_capacity: dict[str, float] | None) -> dict:
    capacity = (replica_capacity or {}).get(common["resource"])
    sizing = size(base * factor, common["resource"], common["unit"], prof, peak=peak * factor,
                  replica_capacity=capacity)
    row = dict.fromkeys(RECOMMENDATION_COLUMNS)
    row.update(common)
    row.update({"kind": kind, "period_start": start, "period_end": end, "base": base, "factor": round(factor, 4),
                "confidence": conf, **asdict(sizing)})
    return row
