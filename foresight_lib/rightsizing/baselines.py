"""Baseline recommenders the forecast-driven rightsizing is compared with, from their published rules.

- ``VPARecommender``: the Kubernetes Vertical Pod Autoscaler's recommender. Usage samples
  go into a histogram with exponentially growing buckets (first bucket ``first_bucket``,
  each next one 5 % wider); every sample's weight doubles every ``half_life`` (24 h) of
  its timestamp, which is the same as halving the weight of older samples. The CPU target
  is the 90th percentile of that histogram; memory goes in as one sample per 24 h
  aggregation interval, the interval's peak, and the target is the 90th percentile of
  those peaks, the last ``VPA_MEMORY_PEAKS`` (8) of them. A 15 % safety margin is added,
  and no pod gets less than 250 MiB of memory (``VPA_MIN_MEMORY_BYTES``, where the unit is
  bytes or a multiple). The percentile returns the *end* of the bucket where the
  cumulative weight reaches the threshold, as the VPA does. After an OOM the VPA records
  a sample of at least the larger of +100 MiB and ×1.2 of the usage that went over
  (``VPARecommender.oom``), and the next size is at least that.
- ``crane_percentile``: Crane's percentile recommender: P99 of the last 7 days × 1.15.
- ``reactive_peak``: a reactive scaler: the previous window's peak × 1.15.

All take values in the series' own unit and return the recommendation in that unit,
before rounding (``rightsizing.round_resource`` rounds every method the same way).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from foresight_lib.errors import ConfigError

VPA_BUCKET_RATIO = 1.05
VPA_HALF_LIFE_S = 24 * 3600.0
VPA_TARGET_PERCENTILE = 0.9
VPA_SAFETY_MARGIN = 0.15
VPA_MEMORY_INTERVAL_S = 24 * 3600.0
VPA_MEMORY_PEAKS = 8
"""Daily peaks the memory histogram keeps (the VPA's 8-day memory aggregation window)."""
VPA_MIN_MEMORY_BYTES = 250 * 2**20
"""The VPA's least memory per pod (``podMinMemoryMb`` = 250, times 1024 × 1024)."""
VPA_OOM_BUMP_RATIO = 1.2
VPA_OOM_MIN_BUMP_BYTES = 100 * 2**20
BYTES_PER_UNIT: dict[str, float] = {"bytes": 1.0, "KB": 1024.0, "KiB": 1024.0, "MB": 2.0**20, "MiB": 2.0**20,
                                    "GB": 2.0**30, "GiB": 2.0**30}
"""Memory units the VPA's constants in bytes convert to (a share of a machine has none)."""
CRANE_PERCENTILE = 0.99
CRANE_MARGIN = 0.15
CRANE_HISTORY_S = 7 * 24 * 3600.0
REACTIVE_MARGIN = 0.15

FIRST_BUCKET_BY_UNIT: dict[str, float] = {
    "cores": 0.01,          # the VPA's 10 millicores
    "millicores": 10.0,
    "MHz": 10.0,
    "GHz": 0.01,
    "bytes": 1e7,           # the VPA's 10 MB
    "KB": 1e7 / 1024.0,
    "KiB": 1e7 / 1024.0,
    "MB": 10.0,
    "MiB": 10.0,
    "percent": 0.1,
    "fraction": 0.001,
}
"""The VPA's smallest bucket (10 millicores, 10 MB) expressed in each unit."""


def vpa_memory_constants(unit: str | None) -> tuple[float, float]:
    """The VPA's least memory per pod and least OOM bump in ``unit``; (0, 0) for a unit that
    is not an amount of bytes (e.g. a percent of a machine): then only the ×1.2 bump applies."""
    per = BYTES_PER_UNIT.get(unit or "")
    if per is None:
        return 0.0, 0.0
    return VPA_MIN_MEMORY_BYTES / per, VPA_OOM_MIN_BUMP_BYTES / per


def first_bucket_for(unit: str | None, values: np.ndarray | None = None) -> float:
    """The histogram's first bucket size for ``unit``; for an unknown unit 0.1 % of the values' peak."""
    if unit in FIRST_BUCKET_BY_UNIT:
        return FIRST_BUCKET_BY_UNIT[unit]
    if values is not None and values.size and np.nanmax(values) > 0:
        return float(np.nanmax(values)) * 1e-3
    return 1e-3


@dataclass
class DecayingHistogram:
    """The VPA's decaying histogram with exponential buckets.

    Bucket ``i`` starts at ``first_bucket * (ratio**i - 1) / (ratio - 1)``; a sample at time
    ``t`` (seconds) weighs ``weight * 2 ** ((t - reference) / half_life)``. The reference
    time is fixed at the first sample, so that weights only need rescaling when they grow
    large (the VPA shifts its reference the same way).
    """

    first_bucket: float
    ratio: float = VPA_BUCKET_RATIO
    half_life: float = VPA_HALF_LIFE_S
    max_value: float = float("inf")
    weights: dict[int, float] = field(default_factory=dict)
    reference: float | None = None

    def __post_init__(self) -> None:
        if self.first_bucket <= 0 or self.ratio <= 1 or self.half_life <= 0:
            raise ConfigError("a decaying histogram needs first_bucket > 0, ratio > 1 and half_life > 0")

    def bucket_start(self, index: int) -> float:
        return self.first_bucket * (self.ratio**index - 1.0) / (self.ratio - 1.0)

    def bucket_of(self, value: float) -> int:
        """The bucket holding ``value`` (values below the first bucket's end go to bucket 0)."""
        value = min(max(value, 0.0), self.max_value)
        if value < self.first_bucket:
            return 0
        index = int(np.floor(np.log(value * (self.ratio - 1.0) / self.first_bucket + 1.0) / np.log(self.ratio)))
        # guard against floating-point error at bucket edges
        while self.bucket_start(index) > value:
            index -= 1
        while self.bucket_start(index + 1) <= value:
            index += 1
        return index

    def buckets_of(self, values: np.ndarray) -> np.ndarray:
        """``bucket_of`` for many values at once."""
        values = np.clip(np.asarray(values, dtype="float64"), 0.0, self.max_value)
        index = np.floor(np.log(values * (self.ratio - 1.0) / self.first_bucket + 1.0) / np.log(self.ratio))
        index = index.astype("int64")
        index -= self._starts(index) > values
        index += self._starts(index + 1) <= values
        return np.maximum(index, 0)

    def _starts(self, index: np.ndarray) -> np.ndarray:
        return self.first_bucket * (self.ratio ** index.astype("float64") - 1.0) / (self.ratio - 1.0)

    def add(self, value: float, time_s: float, weight: float = 1.0) -> None:
        if not np.isfinite(value):
            return
        if self.reference is None:
            self.reference = float(time_s)
        exponent = (float(time_s) - self.reference) / self.half_life
        if exponent > 50:  # rescale before the weights overflow
            factor = 2.0 ** (-exponent)
            self.weights = {k: w * factor for k, w in self.weights.items()}
            self.reference = float(time_s)
            exponent = 0.0
        bucket = self.bucket_of(float(value))
        self.weights[bucket] = self.weights.get(bucket, 0.0) + weight * 2.0**exponent

    def add_many(self, values: np.ndarray, times_s: np.ndarray) -> None:
        """Add samples in time order (vectorised; the same result as ``add`` one by one)."""
        values = np.asarray(values, dtype="float64")
        times_s = np.asarray(times_s, dtype="float64")
        keep = np.isfinite(values)
        values, times_s = values[keep], times_s[keep]
        if not values.size:
            return
        if self.reference is None:
            self.reference = float(times_s[0])
        last_exponent = (float(times_s[-1]) - self.reference) / self.half_life
        if last_exponent > 50:
            factor = 2.0 ** (-last_exponent)
            self.weights = {k: w * factor for k, w in self.weights.items()}
            self.reference = float(times_s[-1])
        weights = 2.0 ** ((times_s - self.reference) / self.half_life)
        buckets = self.buckets_of(values)
        unique, inverse = np.unique(buckets, return_inverse=True)
        sums = np.bincount(inverse, weights=weights)
        for bucket, weight in zip(unique.tolist(), sums.tolist(), strict=True):
            self.weights[bucket] = self.weights.get(bucket, 0.0) + weight

    @property
    def total_weight(self) -> float:
        return float(sum(self.weights.values()))

    def percentile(self, p: float) -> float:
        """The end of the bucket where the cumulative weight first reaches ``p`` of the total; 0 when empty."""
        total = self.total_weight
        if total <= 0:
            return 0.0
        threshold = p * total
        partial = 0.0
        buckets = sorted(self.weights)
        chosen = buckets[-1]
        for bucket in buckets:
            partial += self.weights[bucket]
            if partial >= threshold:
                chosen = bucket
                break
        return self.bucket_start(chosen + 1)


@dataclass
class VPARecommender:
    """A VPA-style target for one series, fed incrementally as the replay walks the trace.

    ``resource`` is ``cpu`` (every sample into the histogram) or ``memory`` (one peak per
    ``memory_interval`` into the histogram). Call ``observe`` with new samples in time
    order, then ``target()``.
    """

    resource: str
    first_bucket: float
    half_life: float = VPA_HALF_LIFE_S
    percentile: float = VPA_TARGET_PERCENTILE
    margin: float = VPA_SAFETY_MARGIN
    memory_interval: float = VPA_MEMORY_INTERVAL_S
    memory_peaks: int | None = VPA_MEMORY_PEAKS
    """Memory: the closed intervals' peaks kept (None: all)."""
    min_bump: float = 0.0
    """Memory: the least OOM bump in the series' unit (``vpa_memory_constants``)."""
    histogram: DecayingHistogram = field(init=False)
    _peak: float = field(init=False, default=float("nan"))
    _interval_start: float | None = field(init=False, default=None)
    _closed: list = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.histogram = DecayingHistogram(self.first_bucket, half_life=self.half_life)

    def oom(self, usage: float, time_s: float) -> float:
        """Record an OOM at ``usage``: the running interval's peak becomes at least the larger
        of ``usage + min_bump`` and ``usage × 1.2``, as the VPA's OOM sample does. Returns that bump."""
        bump = max(usage + self.min_bump, usage * VPA_OOM_BUMP_RATIO)
        if not np.isfinite(self._peak) or bump > self._peak:
            self._peak, self._peak_time = bump, time_s
        if self._interval_start is None:
            self._interval_start = time_s
        return bump

    def observe(self, values: np.ndarray, times_s: np.ndarray) -> None:
        values = np.asarray(values, dtype="float64")
        times_s = np.asarray(times_s, dtype="float64")
        if self.resource != "memory":
            self.histogram.add_many(values, times_s)
            return
        for value, t in zip(values, times_s, strict=True):
            if self._interval_start is None:
                self._interval_start = t
            if t - self._interval_start >= self.memory_interval:
                self._close_interval()
                self._interval_start = t
            if np.isfinite(value):
                self._peak = value if not np.isfinite(self._peak) else max(self._peak, value)
                self._peak_time = t

    def _close_interval(self) -> None:
        if np.isfinite(self._peak):
            if self.memory_peaks is None:
                self.histogram.add(self._peak, self._peak_time)
            else:  # only the last memory_peaks peaks: rebuilt from them
                self._closed = [*self._closed, (self._peak, self._peak_time)][-self.memory_peaks:]
                self.histogram = DecayingHistogram(self.first_bucket, half_life=self.half_life)
                for peak, t in self._closed:
                    self.histogram.add(peak, t)
        self._peak = float("nan")

    def target(self, with_margin: bool = True) -> float:
        """The recommendation: the percentile (memory: of the closed intervals' peaks and the open one's) × margin."""
        if self.resource == "memory" and np.isfinite(self._peak):
            # the VPA counts the running interval's peak too: take it on a copy
            hist = DecayingHistogram(self.histogram.first_bucket, self.histogram.ratio, self.histogram.half_life,
                                     weights=dict(self.histogram.weights), reference=self.histogram.reference)
            hist.add(self._peak, self._peak_time)
        else:
            hist = self.histogram
        value = hist.percentile(self.percentile)
        return value * (1.0 + self.margin) if with_margin else value


def vpa_target(values: np.ndarray, times_s: np.ndarray, resource: str, first_bucket: float,
               with_margin: bool = True) -> float:
    """The VPA-style target from a whole history at once (see ``VPARecommender``)."""
    rec = VPARecommender(resource, first_bucket)
    rec.observe(values, times_s)
    return rec.target(with_margin)


def crane_percentile(values: np.ndarray, times_s: np.ndarray, now_s: float | None = None,
                     percentile: float = CRANE_PERCENTILE, margin: float = CRANE_MARGIN,
                     history_s: float = CRANE_HISTORY_S) -> float:
    """P99 of the samples in the last 7 days before ``now_s`` (default: after the last sample) × 1.15.

    The percentile is numpy's linear interpolation between order statistics. NaN when
    there is no sample in the window.
    """
    values = np.asarray(values, dtype="float64")
    times_s = np.asarray(times_s, dtype="float64")
    if now_s is None:
        now_s = float(times_s[-1]) + 1e-9 if times_s.size else 0.0
    keep = (times_s >= now_s - history_s) & (times_s < now_s) & np.isfinite(values)
    if not keep.any():
        return float("nan")
    return float(np.percentile(values[keep], 100.0 * percentile)) * (1.0 + margin)


def reactive_peak(previous_window: np.ndarray, margin: float = REACTIVE_MARGIN) -> float:
    """The previous window's peak × 1.15 (NaN when the window is empty)."""
    previous_window = np.asarray(previous_window, dtype="float64")
    previous_window = previous_window[np.isfinite(previous_window)]
    if not previous_window.size:
        return float("nan")
    return float(previous_window.max()) * (1.0 + margin)
