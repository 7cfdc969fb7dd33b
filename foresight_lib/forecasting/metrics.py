"""Forecast accuracy metrics, one signature each, combined by ``evaluate``.

Every metric takes aligned arrays of actuals and forecasts for one series and
horizon (plus what it needs: the MASE scale, interval bounds) and returns a float.

MASE divides by the in-sample MAE of the one-day seasonal naive (:func:`mase_scale`),
which is guarded: a constant or non-finite training part cannot be scored (MASE would
be 0/0 or meaningless) and is left out of every mean, and a scale below a millionth of
the series' mean level is raised to it, so that every scored value is finite. The
backtest reports which series were guarded and why.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from foresight_lib.errors import DataError

log = logging.getLogger(__name__)

MASE_MIN_RELATIVE_SCALE = 1e-6
"""Least MASE scale, as a share of the series' mean absolute level over the training part."""


def mae(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.mean(np.abs(y - yhat)))


def rmse(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - yhat) ** 2)))


def smape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Symmetric MAPE in percent (0..200); a point where both are zero counts as 0."""
    denom = np.abs(y) + np.abs(yhat)
    ratio = np.divide(2.0 * np.abs(y - yhat), denom, out=np.zeros_like(denom, dtype="float64"), where=denom > 0)
    return float(100.0 * np.mean(ratio))


def mase(y: np.ndarray, yhat: np.ndarray, scale: float) -> float:
    """MAE divided by ``scale``, the in-sample MAE of the one-day seasonal naive (NaN if it is not positive)."""
    return mae(y, yhat) / scale if scale > 0 and math.isfinite(scale) else float("nan")


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Share of actuals inside [lo, hi]."""
    return float(np.mean((y >= lo) & (y <= hi)))


def width(lo: np.ndarray, hi: np.ndarray) -> float:
    """Mean interval width."""
    return float(np.mean(hi - lo))


def seasonal_naive_scale(y_train: np.ndarray, season_length: int) -> float:
    """In-sample MAE of the seasonal naive forecast; falls back to lag 1 if too short.

    A flat series (scale 0) gets the smallest positive spacing instead so MASE stays finite.
    """
    y_train = np.asarray(y_train, dtype="float64")
    lag = season_length if y_train.size > season_length else 1
    scale = float(np.mean(np.abs(y_train[lag:] - y_train[:-lag]))) if y_train.size > lag else 0.0
    if scale > 0:
        return scale
    fallback = float(np.mean(np.abs(np.diff(y_train)))) if y_train.size > 1 else 0.0
    return fallback if fallback > 0 else max(float(np.abs(y_train).mean()) * 1e-3, 1e-9)


@dataclass(frozen=True)
class MaseScale:
    """A series' MASE scale and, when the plain in-sample MAE could not be used, why."""

    value: float
    """The scale; NaN when the series cannot be scored."""
    note: str | None = None

    @property
    def scorable(self) -> bool:
        return math.isfinite(self.value) and self.value > 0


def mase_scale(y_train: np.ndarray, season_length: int) -> MaseScale:
    """The guarded MASE scale of one series: the in-sample MAE of the seasonal naive.

    The seasonal lag falls back to 1 when the training part is one season or shorter.
    Guards, each with a note: a training part that is constant, has fewer than two
    values or holds non-finite values is not scored (NaN); a scale below
    ``MASE_MIN_RELATIVE_SCALE`` times the mean absolute level becomes the larger of the
    lag-1 in-sample MAE and that floor.
    """
    y = np.asarray(y_train, dtype="float64")
    if y.size < 2:
        return MaseScale(float("nan"), f"{y.size} training value(s): MASE is undefined; not scored")
    if not np.isfinite(y).all():
        bad = int((~np.isfinite(y)).sum())
        return MaseScale(float("nan"), f"{bad} non-finite training value(s): MASE is undefined; not scored")
    with np.errstate(over="ignore", invalid="ignore"):
        level = float(np.mean(np.abs(y)))
        lag = season_length if y.size > season_length else 1
        seasonal = float(np.mean(np.abs(y[lag:] - y[:-lag])))
        lag1 = float(np.mean(np.abs(np.diff(y))))
    if not (math.isfinite(level) and math.isfinite(seasonal) and math.isfinite(lag1)):
        return MaseScale(float("nan"), "training values too large for a finite MASE scale; not scored")
    if lag1 == 0:
        return MaseScale(float("nan"), f"constant training part (every value {y[0]:.6g}): MASE would be 0/0; "
                                       "not scored")
    floor = MASE_MIN_RELATIVE_SCALE * level
    if seasonal >= floor and seasonal > 0:
        return MaseScale(seasonal)
    value = max(lag1, floor)
    source = "the lag-1 in-sample MAE" if lag1 >= floor else f"{MASE_MIN_RELATIVE_SCALE:g} x the mean level"
    return MaseScale(value, f"seasonal-naive in-sample MAE {seasonal:.3g} is below {MASE_MIN_RELATIVE_SCALE:g} x "
                            f"the mean level {level:.3g}; scale set to {value:.3g} ({source})")


def mase_scales(trains: Mapping[str, np.ndarray], season_length: int) -> tuple[dict[str, float], dict[str, str]]:
    """Guarded MASE scales per series and the notes of the guarded ones (see :func:`mase_scale`)."""
    scales, notes = {}, {}
    for uid, y in trains.items():
        scale = mase_scale(y, season_length)
        scales[uid] = scale.value
        if scale.note:
            notes[uid] = scale.note
    return scales, notes


LEADERBOARD_COLUMNS = [
    "model", "horizon", "mae", "rmse", "smape", "mase",
    "coverage_80", "coverage_95", "width_80", "width_95",
]


def evaluate(forecasts: pd.DataFrame, scales: dict[str, float], horizons: dict[str, int],
             levels=(80, 95)) -> pd.DataFrame:
    """Per series, model and horizon metrics from a backtest forecast frame.

    Args:
        forecasts: forecast frame with an ``y`` column of actuals.
        scales: MASE scale per ``unique_id``; a series whose scale is missing, not finite or
            not positive (see :func:`mase_scale`) is not scored, so no mean counts it.
        horizons: horizon label -> step (only that step is scored for the horizon).

    Returns:
        Columns ``unique_id, model, horizon`` and one column per metric.
    """
    rows = []
    step_to_label = {step: label for label, step in horizons.items()}
    scorable = {uid for uid, scale in scales.items() if math.isfinite(scale) and scale > 0}
    subset = forecasts[forecasts["step"].isin(step_to_label)]
    left_out = set(subset["unique_id"].unique()) - scorable
    if left_out:
        log.info("%d series not scored (no usable MASE scale), e.g. %s", len(left_out), sorted(left_out)[:3])
        subset = subset[subset["unique_id"].isin(scorable)]
    for (uid, model, step), g in subset.groupby(["unique_id", "model", "step"], sort=False):
        y = g["y"].to_numpy("float64")
        yhat = g["yhat"].to_numpy("float64")
        row = {
            "unique_id": uid, "model": model, "horizon": step_to_label[step],
            "mae": mae(y, yhat), "rmse": rmse(y, yhat), "smape": smape(y, yhat),
            "mase": mase(y, yhat, scales[uid]),
        }
        for level in levels:
            lo = g[f"yhat_lo_{level}"].to_numpy("float64")
            hi = g[f"yhat_hi_{level}"].to_numpy("float64")
            row[f"coverage_{level}"] = coverage(y, lo, hi)
            row[f"width_{level}"] = width(lo, hi)
        rows.append(row)
    if not rows:
        columns = ["unique_id", "model", "horizon", "mae", "rmse", "smape", "mase"]
        columns += [f"{kind}_{level}" for level in levels for kind in ("coverage", "width")]
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(rows)


def leaderboard(per_series: pd.DataFrame, horizon_order: list[str]) -> pd.DataFrame:
    """Mean of per-series metrics per model and horizon, models ranked by mean MASE."""
    board = per_series.groupby(["model", "horizon"], sort=False)[LEADERBOARD_COLUMNS[2:]].mean().reset_index()
    rank = board.groupby("model")["mase"].mean().sort_values()
    board["model"] = pd.Categorical(board["model"], categories=list(rank.index), ordered=True)
    board["horizon"] = pd.Categorical(board["horizon"], categories=horizon_order, ordered=True)
    board = board.sort_values(["model", "horizon"]).reset_index(drop=True)
    board["model"] = board["model"].astype(str)
    board["horizon"] = board["horizon"].astype(str)
    return board[LEADERBOARD_COLUMNS]


IN_DATA_UNIT = ("mae", "rmse", "width_")
"""Leaderboard columns in the data's unit (``width_80``, ``width_95``…): meaningless pooled over metrics."""


def pooled_leaderboard(board: pd.DataFrame, metrics: int) -> pd.DataFrame:
    """A leaderboard pooled over ``metrics`` resource metrics, as files and summaries publish it.

    Over one metric it is whole. Over several, the columns in the data's unit (MAE, RMSE,
    interval widths) would average cores with bytes, so they are left out: the scale-free
    ones (MASE, sMAPE, coverage) stay, and the per-metric leaderboards keep every column.
    """
    if metrics <= 1:
        return board
    return board[[c for c in board.columns if not str(c).startswith(IN_DATA_UNIT)]]


def champion(board: pd.DataFrame) -> str:
    """The model with the lowest mean MASE over the horizons in ``board``.

    Raises:
        DataError: no model has a finite mean MASE (no series could be scored).
    """
    means = board.groupby("model")["mase"].mean()
    means = means[np.isfinite(means.to_numpy(dtype="float64"))]
    if means.empty:
        raise DataError("no model has a finite mean MASE, so there is no champion: no series could be scored "
                        "(constant or non-finite training data); check the backtest report's unscored series")
    return str(means.idxmin())
