"""Baselines: naive (last value) and seasonal naive (same time one season ago)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from foresight_lib.forecasting.models.base import Forecast, Forecaster, gaussian_intervals
from foresight_lib.frames import LEVELS


class Naive(Forecaster):
    """Repeats the last value; intervals from a random walk with the in-sample step error."""

    alias = "naive"

    def fit(self, y: np.ndarray, season_length: int, ds: pd.DatetimeIndex | None = None) -> Naive:
        y = np.asarray(y, dtype="float64")
        diffs = np.diff(y)
        self.sigma_ = float(np.sqrt(np.mean(diffs**2))) if diffs.size else 0.0
        self.last_ = float(y[-1])
        return self

    def predict(self, h: int, levels: Sequence[int] = LEVELS) -> Forecast:
        mean = np.full(h, self.last_)
        sigma = self.sigma_ * np.sqrt(np.arange(1, h + 1))
        return gaussian_intervals(mean, sigma, levels)

    def update(self, y_new: np.ndarray) -> Naive:
        if len(y_new):
            self.last_ = float(y_new[-1])
        return self

    def forecast_origins(self, y_future, origins, h, levels=LEVELS) -> Forecast:
        y_future = np.asarray(y_future, dtype="float64")
        last = np.array([self.last_ if o == 0 else y_future[o - 1] for o in origins])
        mean = np.repeat(last[:, None], h, axis=1)
        sigma = np.broadcast_to(self.sigma_ * np.sqrt(np.arange(1, h + 1)), mean.shape)
        if len(origins) and origins[-1] > 0:
            self.last_ = float(y_future[origins[-1] - 1])
        return gaussian_intervals(mean, sigma, levels)


class SeasonalNaive(Forecaster):
    """Repeats the value one season (one day) earlier; intervals from seasonal differences."""

    alias = "seasonal_naive"
    min_seasons = 1.0

    def fit(self, y: np.ndarray, season_length: int, ds: pd.DatetimeIndex | None = None) -> SeasonalNaive:
        y = np.asarray(y, dtype="float64")
        self.season_length_ = int(season_length)
        if y.size <= self.season_length_:
            raise ValueError(f"seasonal naive needs more than one season ({season_length} values), got {y.size}")
        diffs = y[self.season_length_ :] - y[: -self.season_length_]
        self.sigma_ = float(np.sqrt(np.mean(diffs**2)))
        self.tail_ = y[-self.season_length_ :].copy()
        return self

    def predict(self, h: int, levels: Sequence[int] = LEVELS) -> Forecast:
        m = self.season_length_
        idx = np.arange(h) % m
        mean = self.tail_[idx]
        sigma = self.sigma_ * np.sqrt(np.floor(np.arange(h) / m) + 1)
        return gaussian_intervals(mean, sigma, levels)

    def update(self, y_new: np.ndarray) -> SeasonalNaive:
        y_new = np.asarray(y_new, dtype="float64")
        if y_new.size:
            self.tail_ = np.concatenate([self.tail_, y_new])[-self.season_length_ :]
        return self
