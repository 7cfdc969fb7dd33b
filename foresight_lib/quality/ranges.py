"""The plausible values of each metric: which range rule applies, its bounds, clipping forecasts.

One place decides what a value of a metric may be, so that validation (what a series
may hold) and publishing (what a forecast may say) agree:

- the range rule of ``validation.ranges`` that matches the metric (an exact name, else
  the first matching pattern) gives its explicit ``min`` and ``max``;
- ``validation.max_abs_value`` caps every magnitude where the rule allows no more, so
  that even a metric without a rule rejects absurd values (1e300, overflowed counters);
- a bound the rule leaves out is the cap on that side.
"""
from __future__ import annotations

import fnmatch
import logging
import re
from typing import Any

import numpy as np
import pandas as pd

from foresight_lib.config import ForesightConfig, RangeConfig, ValidationConfig
from foresight_lib.errors import ConfigError, DataError
from foresight_lib.frames import split_unique_id

log = logging.getLogger(__name__)

FORECAST_VALUE = re.compile(r"^yhat(_(lo|hi)_\d+)?$")
"""Columns of a forecast frame that hold forecast values: ``yhat``, ``yhat_lo_<L>``, ``yhat_hi_<L>``."""


def validation_settings(cfg: ForesightConfig | ValidationConfig | None) -> ValidationConfig:
    """The ``validation`` section of ``cfg`` (the defaults when None).

    Raises:
        ConfigError: ``cfg`` is neither the whole config nor its validation section.
    """
    if isinstance(cfg, ForesightConfig):
        return cfg.validation
    if cfg is None:
        return ValidationConfig()
    if not isinstance(cfg, ValidationConfig):
        raise ConfigError(
            f"validation settings must be a ForesightConfig or ValidationConfig, got {type(cfg).__name__}")
    return cfg


def match_range_rule(metric: str, rules: dict[str, Any]) -> str | None:
    """The key of ``rules`` that applies to ``metric``: an exact name, else the first matching pattern."""
    if metric in rules:
        return metric
    for key in rules:
        if fnmatch.fnmatchcase(metric, key):
            return key
    return None


def magnitude_cap(rule: RangeConfig | None, vcfg: ValidationConfig) -> float:
    """Largest magnitude a value may have: ``max_abs_value``, or more where the rule explicitly allows it."""
    cap = float(vcfg.max_abs_value)
    if rule is not None:
        for bound in (rule.min, rule.max):
            if bound is not None:
                cap = max(cap, abs(float(bound)))
    return cap


def physical_bounds(metric: str, cfg: ForesightConfig | ValidationConfig | None) -> tuple[float, float]:
    """``(low, high)`` a value of ``metric`` may take: the rule's bounds, the magnitude cap where it has none."""
    vcfg = validation_settings(cfg)
    key = match_range_rule(metric, vcfg.ranges)
    rule = vcfg.ranges[key] if key is not None else None
    cap = magnitude_cap(rule, vcfg)
    low = float(rule.min) if rule is not None and rule.min is not None else -cap
    high = float(rule.max) if rule is not None and rule.max is not None else cap
    return low, high


def metric_of_series(unique_ids: pd.Series, series: pd.DataFrame | None) -> pd.Series:
    """The metric of each ``unique_id``: from the series table, else the part before the first ``/``."""
    known: dict[str, str] = {}
    if series is not None and {"unique_id", "metric"} <= set(series.columns):
        known = dict(zip(series["unique_id"].astype(str), series["metric"].astype(str), strict=False))
    ids = unique_ids.astype(str)
    return ids.map(lambda uid: known.get(uid) or split_unique_id(uid)[0])


def clip_to_physical_range(forecasts: pd.DataFrame, series: pd.DataFrame | None,
                           cfg: ForesightConfig | ValidationConfig | None) -> pd.DataFrame:
    """A copy of ``forecasts`` with every forecast value inside its metric's physical range.

    Published forecasts must be finite and plausible: a lower bound of a usage metric is
    never below 0 (the rule's ``min``), and no value exceeds the rule's ``max`` (or the
    magnitude cap). Clipping keeps ``yhat_lo_* <= yhat <= yhat_hi_*`` since it is monotone.

    Args:
        forecasts: forecast frame (``unique_id``, ``yhat``, ``yhat_lo_<L>``, ``yhat_hi_<L>``, ...);
            other columns are kept as they are.
        series: series table with ``unique_id, metric`` (None: metric from the ``unique_id``).
        cfg: the whole config or its ``validation`` section.

    Raises:
        DataError: a forecast value is NaN or infinite (the backtest replaces such forecasts
            by its fallback, so they must never reach publishing), or columns are missing.
    """
    vcfg = validation_settings(cfg)
    if not isinstance(forecasts, pd.DataFrame) or "unique_id" not in forecasts or "yhat" not in forecasts:
        raise DataError("clip_to_physical_range needs a forecast frame with unique_id and yhat columns")
    out = forecasts.copy()
    columns = [c for c in out.columns if FORECAST_VALUE.match(str(c))]
    if out.empty:
        return out
    values = out[columns].to_numpy(dtype="float64")
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        example = out.iloc[rows[0]]
        where = f"unique_id={example['unique_id']}" + (f", model={example['model']}" if "model" in out else "")
        cols = [c for c, hit in zip(columns, bad.any(axis=0), strict=True) if hit]
        raise DataError(
            f"{int(bad.sum())} forecast value(s) are NaN or infinite (columns {cols}; e.g. {where}); "
            "nothing non-finite may be published. Forecasts from the backtest (finish_backtest) are "
            "always finite: publish those, or find the step that changed them"
        )
    metrics = metric_of_series(out["unique_id"], series)
    bounds = {m: physical_bounds(m, vcfg) for m in metrics.unique()}
    low = metrics.map(lambda m: bounds[m][0]).to_numpy("float64")[:, None]
    high = metrics.map(lambda m: bounds[m][1]).to_numpy("float64")[:, None]
    clipped = np.clip(values, low, high)
    changed = int((clipped != values).sum())
    if changed:
        log.info("clipped %d of %d forecast values to their metric's physical range", changed, values.size)
    out[columns] = clipped
    return out
