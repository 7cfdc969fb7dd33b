"""What a metric's training data looked like: the yardstick a champion holds new history against.

``MetricProfile`` keeps the unit, scale, sign and whether the series rose like counters,
per metric and per series; ``ChampionBundle`` refuses history unlike it (another
metric's series, a raw counter, values off by orders of magnitude).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from foresight_lib.errors import DataError
from foresight_lib.forecasting.backtest import BacktestSpec, split_series
from foresight_lib.frames import guess_unit, split_unique_id

__all__ = ["COUNTER_MIN_POINTS", "COUNTER_SHARE", "MetricProfile", "metric_profiles", "seen_test_steps"]

COUNTER_MIN_POINTS = 24
"""A series rises like a counter only when seen over at least this many points (a gauge may rise for an hour)."""
COUNTER_SHARE = 0.95
"""Share of rising steps from which a series is a counter."""


@dataclass
class MetricProfile:
    """What one metric's training data looked like: the yardstick new history is held against.

    ``median`` of every value, ``high`` the 99th percentile of absolute values, ``low``
    the quietest series' median absolute value (0 when one sat at zero), ``counter``
    whether every series rose like a counter, ``series``: unique_id -> (median, high).
    """

    metric: str
    unit: str | None
    median: float
    high: float
    low: float
    minimum: float
    nonnegative: bool
    counter: bool
    series: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, metric: str, values: dict[str, np.ndarray], unit: str | None = None) -> MetricProfile:
        """The profile of ``values`` (unique_id -> training values) of ``metric``."""
        clean = {uid: y[np.isfinite(y)] for uid, y in values.items()}
        clean = {uid: y for uid, y in clean.items() if y.size}
        if not clean:
            raise DataError(f"no finite training values of {metric} to profile")
        pooled = np.concatenate(list(clean.values()))
        per_series = {uid: (float(np.median(y)), float(np.quantile(np.abs(y), 0.99))) for uid, y in clean.items()}
        guessed = unit or guess_unit(metric)
        return cls(
            metric=metric, unit=None if guessed == "unknown" else guessed, median=float(np.median(pooled)),
            high=float(np.quantile(np.abs(pooled), 0.99)),
            low=float(min(np.median(np.abs(y)) for y in clean.values())), minimum=float(pooled.min()),
            nonnegative=bool(pooled.min() >= 0),
            counter=all(_counter_share(y) >= COUNTER_SHARE for y in clean.values()),
            series=per_series,
        )

    def problems(self, uid: str, y: np.ndarray, factor: float) -> list[str]:
        """What makes ``y`` (one series' history) unlike this metric's training data; empty when nothing."""
        y = y[np.isfinite(y)]
        if not y.size:
            return []
        unit = f" {self.unit}" if self.unit else ""
        out = []
        high = max(self.high, self.series.get(uid, (0.0, 0.0))[1])
        if self.nonnegative and y.min() < -1e-9 * max(high, 1.0):
            out.append(f"values go down to {y.min():.4g}, but {self.metric} was never negative in training")
        share = _counter_share(y)
        if not self.counter and share >= COUNTER_SHARE:
            out.append(f"it rises at {share:.0%} of its steps like a counter (a *_total before rate()), but "
                       f"{self.metric} was trained as a gauge")
        level, top = float(np.median(np.abs(y))), float(np.abs(y).max())
        if high > 0 and level > factor * high:
            out.append(f"its median {level:.4g} is {level / high:.3g}x the training data's 99th percentile "
                       f"{high:.4g}{unit} (limit {factor:g}x)")
        elif self.low > 0 and 0 < top < self.low / factor**2:  # an idle series may sit far below its usual level
            out.append(f"its largest value {top:.4g} is {self.low / top:.3g}x below the quietest training series' "
                       f"median {self.low:.4g}{unit} (limit {factor**2:g}x)")
        return out


def _counter_share(y: np.ndarray) -> float:
    """Share of steps that rise, when ``y`` is long enough and never falls but for a reset; else 0."""
    steps = np.diff(y[np.isfinite(y)])
    if steps.size < COUNTER_MIN_POINTS - 1 or (steps < 0).sum() > max(1, steps.size // 50):
        return 0.0
    return float((steps > 0).mean())


def seen_test_steps(spec: BacktestSpec) -> int:
    """How many held-out steps the fitted models have seen (every one when they forecast the future)."""
    return spec.test_steps if spec.future else spec.origins[-1]


def metric_profiles(frame: pd.DataFrame, spec: BacktestSpec, units: dict[str, str] | None = None,
                    ids: set[str] | None = None) -> dict[str, MetricProfile]:
    """metric -> the profile of the values its models have seen, over ``frame``'s series (or ``ids``)."""
    seen_test = seen_test_steps(spec)
    seen: dict[str, dict[str, np.ndarray]] = {}
    for split in split_series(frame, spec)[0]:
        if ids is None or split.unique_id in ids:
            y_seen = np.concatenate([split.train, split.test[:seen_test]])
            seen.setdefault(split_unique_id(split.unique_id)[0], {})[split.unique_id] = y_seen
    return {metric: MetricProfile.of(metric, values, (units or {}).get(metric)) for metric, values in seen.items()}
