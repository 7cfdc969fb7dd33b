"""Forecast accuracy metrics, one signature each, combined by ``evaluate``.

Every metric takes aligned arrays of actuals and forecasts for one series and
horizon (plus what it needs: the MASE scale, interval bounds) and returns a float.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


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
    """MAE divided by ``scale``, the in-sample MAE of the one-day seasonal naive."""
    return mae(y, yhat) / scale if scale > 0 else float("nan")


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


LEADERBOARD_COLUMNS = [
    "model", "horizon", "mae", "rmse", "smape", "mase",
    "coverage_80", "coverage_95", "width_80", "width_95",
]


def evaluate(forecasts: pd.DataFrame, scales: dict[str, float], horizons: dict[str, int],
             levels=(80, 95)) -> pd.DataFrame:
    """Per series, model and horizon metrics from a backtest forecast frame.

    Args:
        forecasts: forecast frame with an ``y`` column of actuals.
        scales: MASE scale per ``unique_id``.
        horizons: horizon label -> step (only that step is scored for the horizon).

    Returns:
        Columns ``unique_id, model, horizon`` and one column per metric.
    """
    rows = []
    step_to_label = {step: label for label, step in horizons.items()}
    subset = forecasts[forecasts["step"].isin(step_to_label)]
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


def champion(board: pd.DataFrame) -> str:
    """The model with the lowest mean MASE over the horizons in ``board``."""
    means = board.groupby("model")["mase"].mean().dropna()
    return str(means.idxmin())
