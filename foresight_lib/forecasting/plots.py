"""Plots logged with each run: forecasts against actuals, and the leaderboard.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so nothing needs a
display and no global backend is switched in the process that imports this.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from foresight_lib.errors import DataError

log = logging.getLogger(__name__)

DPI = 100
PLOT_SERIES = 3
"""Series plotted per model in its MLflow run."""


def pick_series(per_series: pd.DataFrame | None, model: str, candidates: Sequence[str],
                n: int = PLOT_SERIES) -> list[str]:
    """Up to ``n`` series to show for ``model``: its best, median and worst by mean MASE.

    Without per-series scores, the first ``n`` of ``candidates``.
    """
    if per_series is None or per_series.empty:
        return sorted(candidates)[:n]
    rows = per_series[(per_series["model"] == model) & per_series["unique_id"].isin(candidates)]
    scores = rows.groupby("unique_id")["mase"].mean().dropna().sort_values()
    if scores.empty:
        return sorted(candidates)[:n]
    if len(scores) <= n:
        return list(scores.index)
    picks = np.unique(np.linspace(0, len(scores) - 1, n).round().astype(int))
    return [scores.index[i] for i in picks]


def plot_forecasts(
    forecasts: pd.DataFrame, model: str, path: str | Path, series: Sequence[str],
    horizon_steps: dict[str, int], future: pd.DataFrame | None = None, level: int = 80,
) -> Path:
    """Per series: the held-out actuals, the forecasts made ``h`` steps earlier for each
    horizon, the interval of the longest horizon and, when given, the live forecast.

    Args:
        forecasts: backtest forecast frame with an ``y`` column of actuals.
        model: the model to draw.
        path: the PNG to write.
        series: the ``unique_id`` values to draw, one panel each.
        horizon_steps: horizon label -> step (e.g. ``{"5m": 1, "30m": 6}``).
        future: forecast frame from the end of the data (drawn after the actuals).

    Raises:
        DataError: the model has no forecasts for any of ``series``.
    """
    frame = forecasts[(forecasts["model"] == model) & forecasts["unique_id"].isin(series)]
    shown = [uid for uid in series if (frame["unique_id"] == uid).any()]
    if not shown:
        raise DataError(f"no forecasts of model '{model}' for series {list(series)[:3]} to plot")
    longest = max(horizon_steps, key=horizon_steps.get)
    fig = Figure(figsize=(11, 2.8 * len(shown)), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(shown), 1, squeeze=False)[:, 0]
    for ax, uid in zip(axes, shown, strict=True):
        one = frame[frame["unique_id"] == uid]
        actual = one.drop_duplicates("ds").sort_values("ds")
        ax.plot(actual["ds"], actual["y"], color="black", linewidth=1.2, label="actual")
        for label, step in sorted(horizon_steps.items(), key=lambda kv: kv[1]):
            at = one[one["step"] == step].sort_values("ds")
            ax.plot(at["ds"], at["yhat"], linewidth=1.0, label=f"forecast {label} ahead")
        band = one[one["step"] == horizon_steps[longest]].sort_values("ds")
        lo, hi = f"yhat_lo_{level}", f"yhat_hi_{level}"
        if lo in band and hi in band:
            ax.fill_between(band["ds"], band[lo], band[hi], alpha=0.2, label=f"{level}% interval ({longest})")
        if future is not None and not future.empty:
            live = future[(future["model"] == model) & (future["unique_id"] == uid)].sort_values("ds")
            if not live.empty:
                ax.plot(live["ds"], live["yhat"], color="tab:red", linestyle="--", label="live forecast")
                if lo in live and hi in live:
                    ax.fill_between(live["ds"], live[lo], live[hi], color="tab:red", alpha=0.15)
        ax.set_title(f"{uid} — {model}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", ncol=3)
    fig.autofmt_xdate()
    fig.tight_layout()
    return _save(fig, path)


def plot_leaderboard(board: pd.DataFrame, path: str | Path, title: str = "Leaderboard: MASE per horizon") -> Path:
    """Grouped bars of MASE per model and horizon, models in leaderboard order."""
    if board.empty:
        raise DataError("the leaderboard is empty; nothing to plot")
    models = list(dict.fromkeys(board["model"]))
    horizons = list(dict.fromkeys(board["horizon"]))
    table = board.pivot_table(index="model", columns="horizon", values="mase").reindex(index=models, columns=horizons)
    fig = Figure(figsize=(max(6, 1.2 * len(models) + 2), 4), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / max(1, len(horizons))
    x = np.arange(len(models))
    for i, horizon in enumerate(horizons):
        ax.bar(x + i * width, table[horizon].to_numpy(), width, label=horizon)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xticks(x + width * (len(horizons) - 1) / 2, models, rotation=20)
    ax.set_ylabel("MASE (lower is better)")
    ax.set_title(title)
    ax.legend(title="horizon", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    log.debug("wrote plot %s", path)
    return path
