"""Exponential smoothing (ETS) with an automatic choice of trend and daily seasonality.

A daily cycle of 288 five-minute steps is too long for a seasonal ETS state, so the
seasonality is a robust daily profile that is removed before smoothing and added
back to the forecasts. The candidates (no trend or a damped additive trend, with or
without the profile) are fitted with statsmodels on the recent window and the lowest
AICc wins; when the decision is made the profile is estimated only on the days
before that window, so a profile that does not repeat is not rewarded. The fitted
state is a level and a trend that ``update`` moves with the error-correction
equations, with no refit.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from foresight_lib.errors import ConfigError
from foresight_lib.forecasting.models.base import Forecast, Forecaster, gaussian_intervals
from foresight_lib.forecasting.models.fourier import check_history, seasonal_profile
from foresight_lib.frames import LEVELS

log = logging.getLogger(__name__)

TRENDS = ("none", "damped")
SEASONAL_CHOICES = ("auto", "yes", "no")


def profile_candidates(y: np.ndarray, m: int, start: int, seasonal: str,
                       profile_days: Sequence[int]) -> dict[int, np.ndarray]:
    """Seasonal terms over ``y[start:]`` to try, keyed by profile days (0: no profile, zeros).

    With ``seasonal="auto"`` each profile comes from the values before ``start`` and is only
    tried when there are at least two seasons of them; ``"yes"`` falls back to the whole history.
    """
    phases = np.arange(start, y.size) % m
    out: dict[int, np.ndarray] = {}
    if seasonal in ("auto", "no"):
        out[0] = np.zeros(y.size - start)
    if seasonal in ("auto", "yes") and m > 1:
        for days in profile_days:
            if start >= 2 * m:
                out[days] = seasonal_profile(y[:start], m, 0, days)[phases]
            elif seasonal == "yes":
                out[days] = seasonal_profile(y, m, 0, days)[phases]
    return out


def check_profile_days(profile_days: Sequence[int]) -> tuple[int, ...]:
    days = tuple(int(d) for d in profile_days)
    if not days or min(days) < 1:
        raise ConfigError(f"profile_days must be one or more whole numbers of days >= 1, got {list(profile_days)}")
    return days


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, got '{value}'")
    return value


class ETS(Forecaster):
    """Simple or damped-trend exponential smoothing on a deseasonalised series."""

    alias = "ets"
    min_seasons = 1.0

    def __init__(self, window_days: float = 4.0, profile_days: Sequence[int] = (1, 7), trends: Sequence[str] = TRENDS,
                 seasonal: str = "auto", outlier_clip: float | None = 3.0):
        """
        Args:
            window_days: the model is fitted on this many recent days (seasons).
            profile_days: candidate numbers of days the daily profile is estimated from.
            trends: candidate trends, ``none`` and/or ``damped``.
            seasonal: ``auto`` (chosen by AICc), ``yes`` or ``no``.
            outlier_clip: one-step errors are clipped at this many robust standard deviations
                when they move the state, so a lone spike does not drag the level (``None``: off).
        """
        self.window_days = float(window_days)
        self.profile_days = check_profile_days(profile_days)
        self.trends = tuple(check_choice("trend", t, TRENDS) for t in trends)
        if not self.trends:
            raise ConfigError(f"give at least one ETS trend from {list(TRENDS)}")
        self.seasonal = check_choice("seasonal", seasonal, SEASONAL_CHOICES)
        self.outlier_clip = float(outlier_clip) if outlier_clip else None

    def fit(self, y: np.ndarray, season_length: int, ds: pd.DatetimeIndex | None = None) -> ETS:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        m = max(int(season_length), 1)
        y = check_history(y, "ets", 10)
        n = y.size
        start = max(0, n - max(10, int(round(self.window_days * m))))
        best = None
        for days, s in profile_candidates(y, m, start, self.seasonal, self.profile_days).items():
            x = y[start:] - s
            for trend in self.trends:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = ExponentialSmoothing(
                        x, trend="add" if trend == "damped" else None, damped_trend=trend == "damped",
                        initialization_method="estimated",
                    ).fit()
                aicc = float(res.aicc) if np.isfinite(res.aicc) else np.inf
                if best is None or aicc < best[0]:
                    best = (aicc, days, trend, res.params)
        _, self.profile_days_, self.trend_, params = best
        self.use_profile_ = self.profile_days_ > 0
        self.alpha_ = float(np.clip(params["smoothing_level"], 1e-4, 1.0))
        damped = self.trend_ == "damped"
        self.phi_ = float(params["damping_trend"]) if damped else 0.0
        self.beta_ = self.alpha_ * float(params["smoothing_trend"]) if damped else 0.0
        self.profile_ = seasonal_profile(y, m, 0, self.profile_days_) if self.use_profile_ else np.zeros(m)
        self.season_length_ = m
        # run the fitted equations over the window with the final profile: state and residual scale
        level = float(params["initial_level"])
        trend = float(params["initial_trend"]) if damped and np.isfinite(params["initial_trend"]) else 0.0
        self.clip_ = np.inf
        self.level_, self.slope_, self.n_ = level, trend, start
        resid = self._filter(y[start:])
        if self.outlier_clip:
            # errors beyond a few robust standard deviations move the state as if they were that size
            mad = float(np.median(np.abs(resid - np.median(resid))))
            if mad > 0:
                self.clip_ = self.outlier_clip * 1.4826 * mad
                self.level_, self.slope_, self.n_ = level, trend, start
                resid = self._filter(y[start:])
        burn = min(resid.size // 4, m)
        self.sigma_ = float(np.sqrt(np.mean(resid[burn:] ** 2)))
        log.debug("ets: trend %s, profile days %d, alpha %.3f", self.trend_, self.profile_days_, self.alpha_)
        return self

    def _filter(self, values: np.ndarray, record: Sequence[int] | None = None):
        """Move the state through ``values``; one-step errors, or the states after the ``record`` counts."""
        level, slope, n = self.level_, self.slope_, self.n_
        alpha, beta, phi, profile, m = self.alpha_, self.beta_, self.phi_, self.profile_, self.season_length_
        x = values - profile[(n + np.arange(values.size)) % m]
        resid = np.empty(values.size)
        wanted = set(record or ())
        states = {0: (level, slope)} if 0 in wanted else {}
        clip = self.clip_
        for i, xi in enumerate(x.tolist()):
            e = xi - (level + phi * slope)
            resid[i] = e
            e = min(max(e, -clip), clip)
            level = level + phi * slope + alpha * e
            slope = phi * slope + beta * e
            if i + 1 in wanted:
                states[i + 1] = (level, slope)
        self.level_, self.slope_, self.n_ = level, slope, n + values.size
        return states if record is not None else resid

    def _sigma_steps(self, h: int) -> np.ndarray:
        j = np.arange(1, h)
        damp_sum = np.cumsum(self.phi_ ** j) if self.phi_ > 0 else np.zeros(h - 1)
        c = self.alpha_ + self.beta_ * damp_sum
        return self.sigma_ * np.sqrt(1.0 + np.r_[0.0, np.cumsum(c**2)])

    def _mean(self, n: np.ndarray, level: np.ndarray, slope: np.ndarray, h: int) -> np.ndarray:
        steps = np.arange(1, h + 1)
        damp = np.cumsum(self.phi_**steps) if self.phi_ > 0 else np.zeros(h)
        phases = (np.asarray(n)[..., None] + steps - 1) % self.season_length_
        return np.asarray(level)[..., None] + np.asarray(slope)[..., None] * damp + self.profile_[phases]

    def predict(self, h: int, levels: Sequence[int] = LEVELS) -> Forecast:
        mean = self._mean(np.asarray(self.n_), np.asarray(self.level_), np.asarray(self.slope_), h)
        return gaussian_intervals(mean, self._sigma_steps(h), levels)

    def update(self, y_new: np.ndarray) -> ETS:
        y_new = np.asarray(y_new, dtype="float64").ravel()
        if y_new.size:
            self._filter(y_new)
        return self

    def forecast_origins(self, y_future, origins, h, levels=LEVELS) -> Forecast:
        y_future = np.asarray(y_future, dtype="float64").ravel()
        origins = [int(o) for o in origins]
        n0 = self.n_
        states = self._filter(y_future[: max(origins, default=0)], record=origins)
        level = np.array([states[o][0] for o in origins])
        slope = np.array([states[o][1] for o in origins])
        mean = self._mean(n0 + np.asarray(origins), level, slope, h)
        sigma = np.broadcast_to(self._sigma_steps(h), mean.shape)
        return gaussian_intervals(mean, sigma, levels)
