"""Rightsizing primitives: profiles, bases, learnt factors, rounding and sizes.

A recommendation starts from a *base*, a forecast of the usage the period must hold:
for a static daily CPU size the profile's quantile of the next day's mean forecast curve
(``daily_mean_base``); for daily memory a forecast of the next day's peak, the highest
peak of the last ``MEMORY_PEAK_DAYS`` days since the last step change
(``daily_peak_base``; with less than a day since the change, the fallback estimator,
said in the recommendation's ``reason``); for a 30-minute window a forecast of its peak
(``window_base_for``: for CPU the level forecast from the latest actuals times the
seasonal peak-to-level ratio, or the latest known window's peak where higher; for memory
the smoothed peaks of the windows before, or the latest known window's peak where higher,
never below the recent daily peaks, ``WINDOW_MEMORY_FLOOR_DAYS``).
The base is multiplied by a *factor* learnt from the entity's own past, a split-conformal
quantile: the smallest factor that would have kept the share of 5-minute points above the
request at or under the profile's target for the resource (``Profile.target_for``; in
window mode a multiple of it for CPU, ``learnt_target``) over
the recent periods (``calibrate_factor``; window factors are shrunk toward the factor of
every series of the same metric over the same windows, sized with the same lead,
``shrink_factor``), and the request is capped at the highest usage of those periods
(``cap_to_observed``; memory never below ``MEMORY_MIN_FACTOR`` × its base). With no past
to learn from, the upper bound of the model's interval (``daily_base``) times the
profile's fixed margin is used. Limits are the request times the profile's limit ratio;
every value is rounded up to units a platform accepts (CPU to 10m/50m millicore steps,
memory to Mi) and is never zero or negative.

The constants were chosen on the tuning part of the shared traces only
(``foresight_lib.rightsizing.splits``, ``foresight_lib.rightsizing.tuning``).

Profiles (constants, not fitted to any replay's results):

============  =====  ========  ==========  ==========  ======  =========  =========  ===========
profile       level  quantile  violations  violations  margin  cpu limit  mem limit  utilisation
                               (CPU)       (memory)
============  =====  ========  ==========  ==========  ======  =========  =========  ===========
cost          80     0.90      5 %         0.2 %       5 %     × 1.5      × 1.1      85 %
balanced      80     0.95      2 %         0.1 %       10 %    × 2.0      × 1.25     70 %
performance   95     0.99      0.5 %       0.05 %      25 %    × 3.0      × 1.5      60 %
============  =====  ========  ==========  ==========  ======  =========  =========  ===========

Memory has its own target, far below CPU's: CPU above its request is throttled, memory
above its request risks eviction and above its limit an OOM kill. Every recommendation
names the target it aims at (``target_violation``).

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
    """Share of 5-minute CPU (and other) points above the request the learnt factor aims at."""
    margin: float
    """Fixed margin over the base when there is no past to learn the factor from."""
    cpu_limit_ratio: float
    memory_limit_ratio: float
    target_utilisation: float
    """Per-replica utilisation at the forecast peak that sets the replica count."""
    min_factor: float = 0.5
    max_factor: float = 4.0
    memory_target_violation: float | None = None
    """Share of 5-minute memory points above the request the learnt factor aims at (far
    below CPU's: memory above its request risks eviction, above its limit an OOM kill);
    None: the CPU target."""

    def target_for(self, resource: str) -> float:
        """The violation target a recommendation for ``resource`` aims at."""
        if resource == "memory" and self.memory_target_violation is not None:
            return self.memory_target_violation
        return self.target_violation


MEMORY_MIN_FACTOR = 1.05
"""Least learnt factor over a memory base (the recent peaks; daily and window mode), since
a memory peak is often a new high a little above the previous ones. Chosen on the tuning part of
the Bitbrains trace with ``MEMORY_PEAK_DAYS`` (``benchmarks/rightsizing_tune.py``,
``benchmarks/results/rightsizing_tuning.md``): with 1.0 the daily balanced plan went above
its 0.1 % memory target there (0.13 %), with 1.05 it kept 0.07 %."""

PROFILES: dict[str, Profile] = {
    "cost": Profile("cost", 80, 0.90, 0.05, 0.05, 1.5, 1.1, 0.85, memory_target_violation=0.002),
    "balanced": Profile("balanced", 80, 0.95, 0.02, 0.10, 2.0, 1.25, 0.70, memory_target_violation=0.001),
    "performance": Profile("performance", 95, 0.99, 0.005, 0.25, 3.0, 1.5, 0.60, memory_target_violation=0.0005),
}

MIN_HISTORY_DAYS = 2.0
"""Least history, in days, before an entity gets a recommendation."""

FULL_CONFIDENCE_DAYS = 7.0
"""History, in days, from which history no longer lowers the confidence."""

RECOMMENDATION_COLUMNS = [
    "unique_id", "entity", "metric", "resource", "unit", "kind", "lead", "period_start", "period_end", "model",
    "profile", "target_violation", "base", "factor", "request", "limit", "replicas", "request_display", "limit_display",
    "confidence", "reason",
]


def get_profile(name: str | Profile) -> Profile:
    """The profile called ``name``; raises ConfigError naming the choices."""
    if isinstance(name, Profile):
        return name
    if name not in PROFILES:
        raise ConfigError(f"unknown rightsizing profile '{name}'; choose from {list(PROFILES)}")
    return PROFILES[name]


KUBERNETES_RESOURCES = ("cpu", "memory")
"""Resources a container's requests and limits set; other rows (network, disk) are a capacity to plan, with no
limit or replica count to set."""
NOT_FOR_OTHER_RESOURCES = ("limit", "replicas", "limit_display")
"""Columns of a recommendation that mean nothing for a resource Kubernetes does not limit."""


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


def human_quantity(value: float, unit: str) -> str:
    """``value`` in a unit people read: bytes (and bytes/s) in KiB, MiB, GiB…, else three digits and the unit.

    ``human_quantity(5.84e6, "bytes/s") == "5.57 MiB/s"``, ``human_quantity(0.5, "cores") == "0.5 cores"``.
    """
    if not math.isfinite(value):
        return f"{value} {unit}"
    base, _, per = unit.partition("/")
    if base == "bytes":
        scaled, prefix = abs(value), 0
        while scaled >= 1024 and prefix < 5:
            scaled, prefix = scaled / 1024, prefix + 1
        name = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")[prefix]
        return f"{math.copysign(scaled, value):.3g} {name}" + (f"/{per}" if per else "")
    return f"{value:.3g} {unit}".rstrip()


def format_quantity(value: float, unit: str, resource: str) -> str:
    """A Kubernetes-style quantity: ``250m`` / ``2`` cores, ``512Mi``; other units as people read them
    (:func:`human_quantity`: ``5.57 MiB/s``)."""
    if resource == "cpu" and unit in ("cores", "GHz"):
        millis = round(value * 1000)
        return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"
    if resource == "cpu" and unit == "millicores":
        return f"{round(value)}m"
    if resource == "memory" and unit in _MEMORY_STEPS:
        return f"{round(value / _MEMORY_STEPS[unit])}Mi"
    return human_quantity(value, unit)


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


def window_base_for(resource: str, level: float, past_ratios: Sequence[float], smoothed_peak: float,
                    last_peak: float = float("nan")) -> float:
    """A forecast of a window's peak, by resource.

    CPU follows the load: the level forecast from the latest actuals times the seasonal
    peak-to-level ratio (``window_peak_base``), or the peak of the latest window known
    when the window is sized (``last_peak``, the persistence forecast of a peak) where
    that is higher: on the tuning part of the Bitbrains trace (balanced, sized at the
    window start) 56.64 % slack at 1.145 % violations, against 57.65 % at 2.93 % for the
    first alone. Memory is held once touched: a window's memory peak follows the recent
    windows' peaks (the reason the VPA sizes memory from peaks and CPU from samples), so
    its base is the smoothed window peaks, or the level forecast or ``last_peak`` where
    higher. A multiplicative ratio is also unstable for memory that
    drops to near zero between bursts.
    """
    if resource == "memory":
        return memory_base(memory_base(level, smoothed_peak), last_peak)
    if not np.isfinite(level):
        return float("nan")
    base = window_peak_base(level, past_ratios)
    return float(max(base, last_peak)) if np.isfinite(last_peak) else base


def daily_base_for(resource: str, mean_base: float, smoothed_peak: float) -> float:
    """A static daily base, by resource: the mean forecast's quantile (``daily_mean_base``);
    for memory, held once touched, the smoothed daily peaks where those are higher."""
    return memory_base(mean_base, smoothed_peak) if resource == "memory" else mean_base


MEMORY_PEAK_DAYS = 3
"""Daily memory: the base is the highest daily peak of this many whole days before the
day (since the last step change). Chosen on the tuning part of the Bitbrains trace among
1, 2, 3, 5 and 7 days (``foresight_lib.rightsizing.tuning``)."""

STEP_CHANGE_RATIO = 2.0
"""Memory: an hour from which the median usage stays over this many times the median of
the hours before starts a new level (a restart or redeploy with a larger footprint): the
daily memory base and its factor learn only from the data since, so the jump's
violations do not inflate the next days' factor. A drop is *not* acted on: memory that
fell after a restart grows back, and on the tuning part of the Bitbrains trace sizing
from the lower level after drops (ratio 2 or 3, either way) raised the daily memory
violations from 0.06 % to over 0.3 % (one VM alternating between two levels); the
recent peaks then keep the size for ``MEMORY_PEAK_DAYS``. The ratio and the hours below
were chosen on the tuning part (``tuning.STEP_CHANGE_CANDIDATES``)."""

STEP_CHANGE_HOURS = 24
"""Hours before a candidate step change whose median it is compared with."""

STEP_CHANGE_MIN_HOURS = 6
"""Hours a new level must have lasted to count (a shorter burst or dip is not a new level)."""

PEAK_MODEL_MIN_DAYS = 1.0
"""Days of data since the last step change the daily memory peak model needs; with fewer
the fallback estimator sizes the day and the recommendation says so."""


def last_step_change(values: np.ndarray, block: int, ratio: float | None = None, before: int | None = None,
                     after: int | None = None) -> int:
    """The index in ``values`` where their latest level begins (0 when the level never changed).

    ``values`` are cut into blocks of ``block`` points (an hour), aligned on the end. A
    change starts at block ``i`` when the median of the block medians from ``i`` to the
    end is over ``ratio`` times the median of the ``before`` block medians before it (then
    back to the first of the blocks above that); the latest such block, with at least ``after`` blocks after it
    (a short burst is not a new level), is the one returned (defaults: the module's
    ``STEP_CHANGE_*`` constants). Medians that are not
    positive never start a change.
    """
    ratio = STEP_CHANGE_RATIO if ratio is None else ratio
    before = STEP_CHANGE_HOURS if before is None else before
    after = STEP_CHANGE_MIN_HOURS if after is None else after
    values = np.asarray(values, dtype="float64")
    n = values.size // block if block > 0 else 0
    if n < before + after:
        return 0
    offset = values.size - n * block
    medians = np.median(values[offset:].reshape(n, block), axis=1)
    for i in range(n - after, before - 1, -1):
        old, new = float(np.median(medians[i - before:i])), float(np.median(medians[i:]))
        if old > 0 and np.isfinite(old) and np.isfinite(new) and new > ratio * old:
            while i > 0 and medians[i - 1] > ratio * old:  # back to the first block of the new level
                i -= 1
            return offset + i * block
    return 0


def daily_peak_base(history: np.ndarray, steps_per_day: int, days: int = MEMORY_PEAK_DAYS,
                    step_change: tuple[float, int, int] | None = None) -> tuple[float, str | None, int]:
    """Daily memory: a forecast of the next day's peak from the history before it.

    The base is the highest value of the last ``days`` days of ``history`` since its last
    step change (``last_step_change`` on hourly blocks), so that a restart that lowered (or
    raised) the memory level does not carry the old level into the next day. Returns the
    base, None and where in ``history`` the latest level begins; or NaN, why the peak
    model cannot be used (less than ``PEAK_MODEL_MIN_DAYS`` of data since the change) and
    that index: the caller then uses the fallback estimator and says so. ``step_change``:
    ``(ratio, hours before, least hours after)`` for ``last_step_change`` (default: the
    module's constants).
    """
    history = np.asarray(history, dtype="float64")
    since = last_step_change(history, max(1, steps_per_day // 24), *(step_change or ()))
    recent = history[since:]
    recent = recent[np.isfinite(recent)]
    if recent.size < PEAK_MODEL_MIN_DAYS * steps_per_day:
        what = "the last step change (a restart?)" if since else "the start of the data"
        why = (f"fallback estimator: {recent.size / steps_per_day:.2f} day(s) of data since {what}; the daily "
               f"memory peak model needs {PEAK_MODEL_MIN_DAYS:g}")
        return float("nan"), why, since
    return float(recent[-days * steps_per_day:].max()), None, since


def memory_base(forecast: float, smoothed_peak: float) -> float:
    """The larger of a forecast and the smoothed peaks of the periods before (NaN when neither is known)."""
    known = [v for v in (forecast, smoothed_peak) if np.isfinite(v)]
    return float(max(known)) if known else float("nan")


def shrink_factor(own: float | None, pooled: float | None, profile: Profile,
                  min_factor: float | None = None) -> float | None:
    """The geometric mean of an entity's own learnt factor and its fleet's (same metric).

    A learnt factor is a high quantile of a few hundred to a few thousand points (two days
    of 30-minute windows, or a week of days, fewer in a short trace), a noisy estimate;
    partial pooling toward the factor learnt from every series of the same metric over the
    same periods steadies it (daily: ``DAILY_POOLED_RESOURCES``). Either alone when the other is unknown.
    """
    known = [k for k in (own, pooled) if k is not None and np.isfinite(k) and k > 0]
    if not known:
        return None
    k = float(np.exp(np.mean(np.log(known))))
    low = profile.min_factor if min_factor is None else min_factor
    return float(min(max(k, low), profile.max_factor))


DAILY_POOLED_RESOURCES = ("cpu", "other")
"""Daily mode: the resources whose learnt factor is shrunk toward the metric's fleet factor,
as window mode does for all. On the tuning part of both traces (``tuning.tune_daily_pooling``,
``benchmarks/results/rightsizing_tuning.md``) pooling gave every metric less slack and fewer
violations. Memory keeps its own factor: its tuning gain was small (Bitbrains 68.47 % /
0.067 % against 68.72 % / 0.072 %), and on the evaluation VMs pooled memory went over
more (0.35 % against 0.22 %, above the limit 0.16 % against 0.08 %;
``benchmarks/results/rightsizing.md``, "Not shipped"): a steady fleet pulls
a bursty VM's memory factor down, where going over risks an eviction."""


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


WINDOW_MEMORY_FLOOR_DAYS = 2
"""Window mode, memory: a window's base is never below the highest daily peak of this many
whole days before its day (since the last step change), nor below the day's peak so far
(0: no such floor). Memory is held once touched: a window sized from the last few
windows' peaks lets a return to an earlier high go over, which for memory risks an
eviction. Chosen on the tuning part among 0, 1, 2, 3 and 5 days
(``tuning.tune_window_memory``, ``benchmarks/results/rightsizing_tuning.md``): without the
floor the balanced plan went over 0.33 % of the points there (target 0.1 %), with two
days 0.06 %, for 67.8 % slack instead of 62.5 %."""

WINDOW_TARGET_SCALES = (1.5, 1.25, 1.25, 1.25)
"""Window mode, CPU and the other resources but memory: the learnt factors of a window
sized ``lead`` windows ahead aim at ``WINDOW_TARGET_SCALES[lead]`` times the profile's
target (the last one for longer leads; ``learnt_target``). A window's request is the
larger of the calibrated forecast and the latest known window's peak, and its factor is
shrunk toward the fleet's, so the share of points above it comes out below the quantile
its factor was learnt at. Per lead, the largest multiple that kept the published plan's
violations on the tuning part within the target (with ``tuning.HEADROOM``) was chosen
there (``tuning.tune_window_target``, ``benchmarks/results/rightsizing_tuning.md``).
Memory keeps its own target (its window base has its own floor,
``WINDOW_MEMORY_FLOOR_DAYS``)."""


def window_target_scale(lead: int) -> float:
    """The multiple of the target a window sized ``lead`` windows ahead aims its factors at."""
    return WINDOW_TARGET_SCALES[min(max(int(lead), 0), len(WINDOW_TARGET_SCALES) - 1)]


def learnt_target(profile: Profile, resource: str, mode: str = "daily", window_scale: float = 1.0) -> float:
    """The share of past points above ``factor × base`` a learnt factor aims at.

    The profile's target for ``resource`` (``Profile.target_for``, the one a
    recommendation names), in window mode times ``window_scale`` for every resource but
    memory (``window_target_scale``), at most a half.
    """
    target = profile.target_for(resource)
    if mode == "window" and resource != "memory":
        target *= window_scale
    return float(min(target, 0.5))


def calibrate_factor(ratios: np.ndarray, profile: Profile, resource: str = "cpu",
                     min_factor: float | None = None, target: float | None = None) -> float | None:
    """The smallest factor ``k`` with at most the target share of the past points above ``k × base``.

    ``ratios`` are the past periods' usage over their bases (learnt from past periods
    only); the target is ``target``, by default the profile's for ``resource``
    (``Profile.target_for``), and the
    factor is clamped to ``[min_factor, max_factor]`` (default ``min_factor``: the
    profile's). This is a split-conformal quantile of the entity's own past errors. None
    when there is nothing to learn from.
    """
    k = factor_of_ratios(ratios, profile.target_for(resource) if target is None else target)
    low = profile.min_factor if min_factor is None else min_factor
    return None if k is None else float(min(max(k, low), profile.max_factor))


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
