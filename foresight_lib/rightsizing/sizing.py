"""Rightsizing primitives: profiles, bases, learnt factors, rounding and sizes.

A recommendation starts from a *base*, a forecast of the usage the period must hold:
for a static daily size the profile's quantile of the next day's mean forecast curve
(``daily_mean_base``); for a 30-minute window a forecast of its peak
(``window_base_for``: for CPU the level forecast from the latest actuals times the
seasonal peak-to-level ratio, for memory the smoothed peaks of the windows before).
The base is multiplied by a *factor* learnt from the entity's own past: the smallest
factor that would have kept the share of 5-minute points above the request at or under
the profile's target violation rate over the recent periods (``calibrate_factor``;
window factors are shrunk toward the fleet's, ``shrink_factor``), and the request is
capped at the highest usage of those periods (``cap_to_observed``). With no past to
learn from, the upper bound of the model's interval (``daily_base``) times the profile's
fixed margin is used. Limits are the request times the profile's limit ratio; every
value is rounded up to units a platform accepts (CPU to 10m/50m millicore steps, memory
to Mi) and is never zero or negative.

Profiles (constants, not fitted to any replay's results):

============  =====  ========  ==========  ======  =========  =========  ===========
profile       level  quantile  violations  margin  cpu limit  mem limit  utilisation
============  =====  ========  ==========  ======  =========  =========  ===========
cost          80     0.90      5 %         5 %     × 1.5      × 1.1      85 %
balanced      80     0.95      2 %         10 %    × 2.0      × 1.25     70 %
performance   95     0.99      0.5 %       25 %    × 3.0      × 1.5      60 %
============  =====  ========  ==========  ======  =========  =========  ===========

The walk that applies them period by period is ``foresight_lib.rightsizing.replay`` (scored there
against the baselines); ``foresight_lib.rightsizing.plan`` runs the same walk on the latest data for
the nightly recommendations.
"""
from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from foresight_lib.errors import ConfigError

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
    "unique_id", "entity", "metric", "resource", "unit", "kind", "lead", "period_start", "period_end", "model",
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
"""Weight of the latest period's peak in the smoothed peaks (memory): an older period's
weight halves at every period, so a window's burst is remembered for a few hours and a
day's peak for a few days (the VPA's memory histogram halves its weights daily too)."""


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
        return memory_base(level, smoothed_peak)
    if not np.isfinite(level):
        return float("nan")
    return window_peak_base(level, past_ratios)


def daily_base_for(resource: str, mean_base: float, smoothed_peak: float) -> float:
    """A static daily base, by resource: the mean forecast's quantile (``daily_mean_base``);
    for memory, held once touched, the smoothed daily peaks where those are higher."""
    return memory_base(mean_base, smoothed_peak) if resource == "memory" else mean_base


def memory_base(forecast: float, smoothed_peak: float) -> float:
    """The larger of a forecast and the smoothed peaks of the periods before (NaN when neither is known)."""
    known = [v for v in (forecast, smoothed_peak) if np.isfinite(v)]
    return float(max(known)) if known else float("nan")


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


def cap_to_observed(value: float, past_peak: float | None) -> float:
    """``value`` capped at ``past_peak``, the highest usage of the periods the factor was learnt from.

    The learnt factor is the smallest one that kept the past points at or under the
    target violation rate; any request above the highest past point prevented no past
    violation, so the evidence cannot justify it (a multiplicative factor learnt on a
    bursty on/off series would otherwise multiply the burst level too). Unchanged when
    there is no past usage.
    """
    if past_peak is None or not np.isfinite(past_peak) or not np.isfinite(value):
        return value
    return float(min(value, past_peak))


def calibrate_factor(ratios: np.ndarray, profile: Profile) -> float | None:
    """The smallest factor ``k`` with at most ``target_violation`` of the past points above ``k × base``.

    ``ratios`` are the past periods' usage over their bases (learnt from past periods
    only); the factor is clamped to the profile's ``[min_factor, max_factor]``. None when
    there is nothing to learn from.
    """
    k = factor_of_ratios(ratios, profile.target_violation)
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


class RecentError:
    """The forecast's mean absolute error over the mean absolute usage of the last ``size``
    periods, pooled over their points (kept as running sums: it is read at every period)."""

    def __init__(self, size: int) -> None:
        self._parts: deque[tuple[float, float, int]] = deque(maxlen=size)
        self._error = self._usage = 0.0
        self._points = 0

    def add(self, mean: np.ndarray, actual: np.ndarray) -> None:
        m, y = np.ravel(np.asarray(mean, dtype="float64")), np.ravel(np.asarray(actual, dtype="float64"))
        ok = np.isfinite(m) & np.isfinite(y)
        part = (float(np.abs(m[ok] - y[ok]).sum()), float(np.abs(y[ok]).sum()), int(ok.sum()))
        if len(self._parts) == self._parts.maxlen:
            old = self._parts[0]
            self._error, self._usage, self._points = (self._error - old[0], self._usage - old[1],
                                                      self._points - old[2])
        self._parts.append(part)
        self._error, self._usage, self._points = (self._error + part[0], self._usage + part[1],
                                                  self._points + part[2])

    def value(self) -> float | None:
        """None without data; 0 when usage and error are both zero."""
        if self._points <= 0:
            return None
        error, usage = max(self._error, 0.0), self._usage
        if usage <= 1e-12 * max(1.0, error):
            return 0.0 if error == 0 else None
        return error / usage


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
