"""Prophet adapter with a residual correction for short horizons.

Prophet (MAP fit, cmdstanpy backend) models the recent history as a piecewise linear
trend plus a daily cycle (and a weekly one when the window spans two weeks). Its
curve alone is a poor 5-30 minute forecast: resource usage wanders away from any
smooth curve for hours. Prophet keeps no state to condition on new actuals, so each
forecast adds an exponentially weighted mean of the latest residuals (actual minus
curve) that decays with the step, the same correction the Fourier model uses; its
smoothing and decay are chosen on the history's last day. Intervals are per-step
quantiles of the in-sample errors of curve plus correction, so no sampling is needed.

The fitted Prophet is kept as its JSON serialisation (``prophet.serialize``) and
rebuilt on first use after unpickling, so the adapter pickles across processes and
into MLflow.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from foresight_lib.errors import ConfigError, DataError
from foresight_lib.forecasting.models.base import Forecast, Forecaster, empty_forecast
from foresight_lib.forecasting.models.fourier import (
    abs_error_quantiles,
    check_history,
    ewm,
    interval_from_widths,
    step_errors,
)
from foresight_lib.frames import LEVELS

log = logging.getLogger(__name__)

ERROR_STEPS = 288
"""Steps ahead for which in-sample error quantiles are kept; wider ones grow with sqrt(step)."""
QUIET_LOGGERS = ("cmdstanpy", "prophet", "prophet.plot")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence cmdstanpy's per-chain INFO lines and Prophet's notices while fitting."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    saved = [(lg.level, lg.disabled) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    loggers[0].disabled = True  # cmdstanpy resets its level on first use; disabling sticks
    try:
        yield
    finally:
        for lg, (level, disabled) in zip(loggers, saved, strict=True):
            lg.setLevel(level)
            lg.disabled = disabled


def _import_prophet():
    with _quiet():
        logging.getLogger("prophet.plot").disabled = True  # "Importing plotly failed" is noise here
        from prophet import Prophet as _Prophet
        from prophet.serialize import model_from_json, model_to_json
    return _Prophet, model_from_json, model_to_json


def _naive_utc(ds: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Timestamps as tz-naive UTC, the form Prophet accepts."""
    ds = pd.DatetimeIndex(ds)
    if ds.tz is not None:
        ds = ds.tz_convert("UTC").tz_localize(None)
    return ds.as_unit("ns")


class Prophet(Forecaster):
    """Prophet's trend + daily (and weekly) seasonality, with a decaying residual correction."""

    alias = "prophet"
    needs_timestamps = True
    min_seasons = 2.0

    def __init__(
        self, window_days: float = 7.0, daily_order: int = 10, weekly: str | bool = "auto", weekly_order: int = 3,
        hourly_order: int = 6,
        growth: str = "flat", changepoint_prior_scale: float = 0.05, changepoint_range: float = 0.9,
        seasonality_prior_scale: float = 10.0, tune_horizon: int = 6,
        alphas: Sequence[float] = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9, 1.0),
        decays: Sequence[float] = (0.8, 0.9, 0.95, 0.98, 1.0), levels: Sequence[int] = (50, *LEVELS, 99),
    ):
        """
        Args:
            window_days: Prophet is fitted on this many of the latest seasons (days) only;
                recent habits matter most and the fit stays fast.
            daily_order: Fourier order of the daily seasonality.
            weekly: add a weekly seasonality: True, False or "auto" (when the window
                holds at least two weeks).
            hourly_order: Fourier order of an hourly seasonality (0 = none): jobs that run
                every 5, 10, 15, 20, 30 or 60 minutes leave such a cycle in resource usage.
            growth: Prophet's trend, "flat" or "linear". Flat by default: the residual
                correction carries the level, and extrapolating the last trend segment
                made the largest errors on real traces with level shifts.
            changepoint_prior_scale, changepoint_range, seasonality_prior_scale: passed to Prophet.
            tune_horizon: steps 1..tune_horizon are scored when choosing the correction.
            alphas: candidate smoothing weights of the residual correction.
            decays: candidate per-step decay of that correction.
            levels: interval levels kept at fit time.
        """
        if weekly not in (True, False, "auto"):
            raise ConfigError(f"prophet: weekly must be true, false or 'auto', got {weekly!r}")
        if window_days <= 0:
            raise ConfigError(f"prophet: window_days must be positive, got {window_days}")
        if growth not in ("linear", "flat"):
            raise ConfigError(f"prophet: growth must be 'linear' or 'flat', got {growth!r}")
        self.window_days = float(window_days)
        self.growth = growth
        self.daily_order = int(daily_order)
        self.weekly = weekly
        self.weekly_order = int(weekly_order)
        self.hourly_order = int(hourly_order)
        self.changepoint_prior_scale = float(changepoint_prior_scale)
        self.changepoint_range = float(changepoint_range)
        self.seasonality_prior_scale = float(seasonality_prior_scale)
        self.tune_horizon = int(tune_horizon)
        self.alphas = tuple(float(a) for a in alphas)
        self.decays = tuple(float(d) for d in decays)
        self.levels = tuple(int(v) for v in levels)
        self._prophet = None

    # -- pickling: keep the JSON, rebuild Prophet lazily ------------------------

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_prophet"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @property
    def prophet_(self):
        """The fitted ``prophet.Prophet`` (rebuilt from its JSON after unpickling)."""
        if self._prophet is None:
            if not hasattr(self, "model_json_"):
                raise ConfigError("prophet: the model is not fitted; call fit() first")
            _, model_from_json, _ = _import_prophet()
            self._prophet = model_from_json(self.model_json_)
        return self._prophet

    # -- curve -----------------------------------------------------------------

    def _curve(self, positions: np.ndarray) -> np.ndarray:
        """Prophet's curve at positions counted from the first value of the fit window."""
        positions = np.asarray(positions, dtype="int64")
        if positions.size == 0:
            return np.empty(0)
        if self.flat_ is not None:
            return np.full(positions.size, self.flat_)
        ds = pd.to_datetime(self.start_ns_ + positions * self.step_ns_, unit="ns")
        return self._predict(self.prophet_, ds)

    def _fit_prophet(self, x: np.ndarray, x_ds: pd.DatetimeIndex, period_days: float):
        """A MAP-fitted ``prophet.Prophet`` with the daily (and weekly) seasonality."""
        ProphetModel, _, _ = _import_prophet()
        model = ProphetModel(
            growth=self.growth, yearly_seasonality=False, weekly_seasonality=False, daily_seasonality=False,
            changepoint_prior_scale=self.changepoint_prior_scale, changepoint_range=self.changepoint_range,
            seasonality_prior_scale=self.seasonality_prior_scale, uncertainty_samples=0,
        )
        model.add_seasonality(name="daily", period=period_days, fourier_order=self.daily_order)
        if self.weekly_:
            model.add_seasonality(name="weekly", period=7.0, fourier_order=self.weekly_order)
        # an hourly cycle is only visible when an hour holds at least two steps per harmonic
        hourly_order = min(self.hourly_order, int(pd.Timedelta(hours=1).value // (2 * self.step_ns_)))
        if hourly_order > 0:
            model.add_seasonality(name="hourly", period=1.0 / 24.0, fourier_order=hourly_order)
        with _quiet():
            model.fit(pd.DataFrame({"ds": x_ds, "y": x}))
        return model

    @staticmethod
    def _predict(model, ds: pd.DatetimeIndex) -> np.ndarray:
        with _quiet():
            out = model.predict(pd.DataFrame({"ds": ds}))
        return out["yhat"].to_numpy("float64")

    def _tune(self, resid: np.ndarray, first_origin: int) -> tuple[float, float]:
        """The (alpha, decay) of the correction with the lowest mean absolute error from ``first_origin`` on."""
        origins = np.arange(first_origin, resid.size - 1)
        best = (np.inf, 1.0, 1.0)
        for alpha in self.alphas:
            for decay in self.decays:
                err = step_errors(resid, alpha, decay, self.tune_horizon, origins)
                score = float(np.nanmean(np.abs(err)))
                if score < best[0]:
                    best = (score, alpha, decay)
        return best[1], best[2]

    # -- interface -------------------------------------------------------------

    def fit(self, y: np.ndarray, season_length: int, ds: pd.DatetimeIndex | None = None) -> Prophet:
        """Fit Prophet on the latest ``window_days`` of ``y``; ``ds`` are its UTC timestamps.

        Without ``ds`` the series is placed on a grid of ``season_length`` steps per day
        starting at midnight, so the daily cycle keeps its shape but not its clock time.
        """
        m = int(season_length)
        y = check_history(y, "prophet", max(2 * m, 4 * self.tune_horizon, 8))
        if ds is None:
            step = pd.Timedelta(days=1) / max(m, 1)
            ds = pd.date_range("2000-01-03", periods=y.size, freq=step)
        ds = _naive_utc(ds)
        if len(ds) != y.size:
            raise DataError(f"prophet: got {y.size} values but {len(ds)} timestamps; pass one timestamp per value")
        steps = np.diff(ds.asi8)
        if steps.size and (steps[0] <= 0 or not (steps == steps[0]).all()):
            raise DataError("prophet: timestamps are not a regular increasing grid; resample the series first")
        step_ns = int(steps[0]) if steps.size else int(pd.Timedelta(days=1).value // max(m, 1))
        window = min(y.size, max(2 * m, int(round(self.window_days * m))))
        x, x_ds = y[-window:], ds[-window:]
        self.step_ns_ = step_ns
        self.start_ns_ = int(x_ds.asi8[0])
        self.n_ = window
        self.season_length_ = m
        period_days = m * step_ns / pd.Timedelta(days=1).value
        span_days = window * step_ns / pd.Timedelta(days=1).value
        self.weekly_ = bool(self.weekly) if self.weekly != "auto" else span_days >= 14.0
        self.flat_ = float(x[0]) if np.ptp(x) == 0 else None
        holdout = m if window >= 3 * m and m >= 4 * self.tune_horizon else max(4 * self.tune_horizon, window // 4)
        if self.flat_ is None:
            # the correction is tuned, and the intervals measured, on a day the curve has not seen
            tune_model = self._fit_prophet(x[:-holdout], x_ds[:-holdout], period_days)
            resid = x - self._predict(tune_model, x_ds)
            model = self._fit_prophet(x, x_ds, period_days)
            self._prophet = model
            self.model_json_ = _import_prophet()[2](model)
        else:
            resid = np.zeros(window)
        self.alpha_, self.decay_ = self._tune(resid, window - holdout)
        err_steps = min(ERROR_STEPS, max(self.tune_horizon, holdout // 2))
        errors = step_errors(resid, self.alpha_, self.decay_, err_steps, np.arange(window - holdout, window - 1))
        self.widths_ = abs_error_quantiles(errors, self.levels)
        final_resid = x - self._curve(np.arange(window))
        self.correction_ = float(ewm(final_resid, self.alpha_, 0.0)[-1])
        log.debug("prophet: window %d, weekly %s, alpha %.2f, decay %.2f", window, self.weekly_,
                  self.alpha_, self.decay_)
        return self

    def _mean(self, curve: np.ndarray, correction: float | np.ndarray, h: int) -> np.ndarray:
        return curve + np.asarray(correction)[..., None] * self.decay_ ** np.arange(1, h + 1)

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_"):
            raise ConfigError("prophet: the model is not fitted; call fit() first")

    def predict(self, h: int, levels: Sequence[int] = LEVELS) -> Forecast:
        self._check_fitted()
        curve = self._curve(np.arange(self.n_, self.n_ + h))
        mean = self._mean(curve, self.correction_, h)
        return interval_from_widths(mean, self.widths_, np.arange(1, h + 1), levels)

    def update(self, y_new: np.ndarray) -> Prophet:
        self._check_fitted()
        y_new = np.asarray(y_new, dtype="float64").ravel()
        if y_new.size:
            resid = y_new - self._curve(np.arange(self.n_, self.n_ + y_new.size))
            self.correction_ = float(ewm(resid, self.alpha_, self.correction_)[-1])
            self.n_ += y_new.size
        return self

    def forecast_origins(self, y_future, origins, h, levels=LEVELS) -> Forecast:
        """One Prophet prediction over the whole period, then the per-origin corrections."""
        self._check_fitted()
        y_future = np.asarray(y_future, dtype="float64").ravel()
        origins = np.asarray(origins, dtype="int64")
        if origins.size == 0:
            return empty_forecast(h, levels)
        last = int(origins.max())
        if last > y_future.size:
            raise DataError(f"prophet: an origin needs {last} future values but only {y_future.size} were given")
        curve = self._curve(np.arange(self.n_, self.n_ + last + h))
        resid = y_future[:last] - curve[:last]
        after = ewm(resid, self.alpha_, self.correction_)
        corrections = np.array([after[o - 1] if o > 0 else self.correction_ for o in origins])
        curves = curve[origins[:, None] + np.arange(h)[None, :]]
        mean = self._mean(curves, corrections, h)
        out = interval_from_widths(mean, self.widths_, np.arange(1, h + 1), levels)
        if last:
            self.correction_ = float(after[last - 1])
            self.n_ += last
        return out
