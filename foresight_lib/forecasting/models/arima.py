"""Automatic ARIMA on a deseasonalised recent window.

A seasonal ARIMA with a 288-step season is far too slow, so the daily cycle is a
robust daily profile removed before modelling (kept only when it predicts the
recent window better than no profile, with the profile estimated on the days before
that window). The order is chosen quickly: ``d`` from KPSS and ADF unit-root tests,
then every (p, q) up to the bounds is estimated by Hannan-Rissanen regressions
(statsmodels) and scored by AICc on its one-step errors; the best is refined by
conditional sum of squares. The fitted state is the last differenced values and
innovations, so conditioning on new actuals is the ARMA recursion, with no refit
and nothing heavier than numpy arrays to pickle.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.signal import lfilter

from foresight_lib.errors import ConfigError
from foresight_lib.forecasting.models.base import Forecast, Forecaster, gaussian_intervals
from foresight_lib.forecasting.models.ets import SEASONAL_CHOICES, check_choice, check_profile_days, profile_candidates
from foresight_lib.forecasting.models.fourier import check_history, seasonal_profile
from foresight_lib.frames import LEVELS

log = logging.getLogger(__name__)

UNIT_ROOT_ALPHA = 0.05
ADF_LAGS = 6


def _is_stable(coefs: np.ndarray) -> bool:
    """True when the roots of 1 - c1 z - c2 z^2 ... lie outside the unit circle (with a margin)."""
    if coefs.size == 0 or not np.any(coefs):
        return True
    roots = np.roots(np.r_[-coefs[::-1], 1.0])
    return bool(np.all(np.abs(roots) > 1.0 + 1e-3))


def arma_innovations(w: np.ndarray, ar: np.ndarray, ma: np.ndarray) -> np.ndarray:
    """One-step errors of a zero-mean ARMA on ``w``, started from zero pre-sample values."""
    return lfilter(np.r_[1.0, -ar], np.r_[1.0, ma], w)


def aicc(sse: float, n: int, k: int) -> float:
    """AICc of a Gaussian model with ``k`` parameters and sum of squared errors ``sse`` over ``n`` values."""
    if n - k - 1 <= 0 or sse <= 0:
        return np.inf if sse > 0 else -np.inf
    return n * np.log(sse / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)


def psi_weights(ar: np.ndarray, ma: np.ndarray, d: int, h: int) -> np.ndarray:
    """MA(infinity) weights psi_0..psi_{h-1} of an ARIMA(p, d, q)."""
    poly = np.r_[1.0, -ar]
    for _ in range(d):
        poly = np.convolve(poly, [1.0, -1.0])
    a = -poly[1:]
    psi = np.zeros(h)
    psi[0] = 1.0
    for j in range(1, h):
        acc = ma[j - 1] if j <= ma.size else 0.0
        for i in range(1, min(j, a.size) + 1):
            acc += a[i - 1] * psi[j - i]
        psi[j] = acc
    return psi


class AutoARIMA(Forecaster):
    """ARIMA(p, d, q) with an automatic order, on the recent window minus a daily profile."""

    alias = "arima"
    min_seasons = 1.0

    def __init__(self, window_days: float = 3.0, max_p: int = 3, max_q: int = 2, max_d: int = 1,
                 profile_days: Sequence[int] = (1, 7), seasonal: str = "auto", outlier_clip: float | None = 4.0):
        """
        Args:
            window_days: the model is fitted on this many recent days (seasons).
            max_p, max_q, max_d: bounds of the order search.
            profile_days: candidate numbers of days the daily profile is estimated from.
            seasonal: ``auto`` (kept when it lowers the AICc), ``yes`` or ``no``.
            outlier_clip: one-step errors are clipped at this many robust standard deviations
                when they enter the state (``None``: off, the plain ARMA recursion).
        """
        if min(max_p, max_q, max_d) < 0 or max_d > 2:
            raise ConfigError("ARIMA bounds must be max_p >= 0, max_q >= 0 and 0 <= max_d <= 2")
        self.window_days = float(window_days)
        self.max_p, self.max_q, self.max_d = int(max_p), int(max_q), int(max_d)
        self.profile_days = check_profile_days(profile_days)
        self.seasonal = check_choice("seasonal", seasonal, SEASONAL_CHOICES)
        self.outlier_clip = float(outlier_clip) if outlier_clip else None

    # -- order selection -----------------------------------------------------

    def _choose_d(self, x: np.ndarray) -> int:
        """Differences needed: one more while KPSS rejects stationarity and ADF does not reject a unit root.

        Asking both tests to agree keeps a stationary series that KPSS rejects by chance
        (it does so at its size, 5%) from being differenced into a worse model.
        """
        from statsmodels.tsa.stattools import adfuller, kpss

        d = 0
        while d < self.max_d:
            series = np.diff(x, d) if d else x
            if np.ptp(series) == 0:
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stationary = kpss(series, regression="c", nlags="auto")[1] >= UNIT_ROOT_ALPHA
                if not stationary:
                    # a fixed lag: an AIC lag search costs one regression per lag
                    lags = min(ADF_LAGS, series.size // 4)
                    stationary = adfuller(series, maxlag=lags, autolag=None)[1] < UNIT_ROOT_ALPHA
            if stationary:
                break
            d += 1
        return d

    def _screen(self, w: np.ndarray, burn: int) -> tuple[float, int, int, np.ndarray, np.ndarray]:
        """Best (aicc, p, q, ar, ma) over the grid by Hannan-Rissanen estimates."""
        from statsmodels.tsa.arima.estimators.hannan_rissanen import hannan_rissanen

        n = w.size - burn
        best = (aicc(float(np.sum(w[burn:] ** 2)), n, 1), 0, 0, np.zeros(0), np.zeros(0))
        for p in range(self.max_p + 1):
            for q in range(self.max_q + 1):
                if p == q == 0:
                    continue
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        est, _ = hannan_rissanen(w, ar_order=p, ma_order=q, demean=False)
                except (ValueError, np.linalg.LinAlgError):
                    continue
                ar, ma = np.asarray(est.ar_params, float), np.asarray(est.ma_params, float)
                if not (_is_stable(ar) and _is_stable(-ma)):
                    continue
                score = aicc(float(np.sum(arma_innovations(w, ar, ma)[burn:] ** 2)), n, p + q + 1)
                if score < best[0]:
                    best = (score, p, q, ar, ma)
        return best

    @staticmethod
    def _refine(w: np.ndarray, p: int, q: int, ar: np.ndarray, ma: np.ndarray, burn: int,
                ) -> tuple[np.ndarray, np.ndarray]:
        """Conditional-sum-of-squares ARMA(p, q) from the screening estimates; those when it fails.

        CSS needs one ``lfilter`` per evaluation where exact likelihood needs a Kalman filter
        and a Lyapunov solve, and on these window lengths the two agree closely.
        """
        if p == q == 0:
            return ar, ma

        def errors(params: np.ndarray) -> np.ndarray:
            return arma_innovations(w, params[:p], params[p:])[burn:]

        try:
            with np.errstate(all="ignore"):
                res = least_squares(errors, np.r_[ar, ma], method="lm", max_nfev=200 * (p + q + 1))
        except (ValueError, np.linalg.LinAlgError):
            return ar, ma
        new_ar, new_ma = res.x[:p], res.x[p:]
        if not (np.isfinite(res.x).all() and _is_stable(new_ar) and _is_stable(-new_ma)):
            return ar, ma
        return new_ar, new_ma

    def _candidate(self, x: np.ndarray, burn: int):
        """Order and coefficients for the series ``x``; score on the errors after ``burn``."""
        d = self._choose_d(x)
        w = np.diff(x, d) if d else x.copy()
        mu = float(np.mean(w)) if d == 0 else 0.0
        w = w - mu
        burn_w = max(0, burn - d)
        _, p, q, ar, ma = self._screen(w, burn_w)
        ar, ma = self._refine(w, p, q, ar, ma, burn_w)
        e = arma_innovations(w, ar, ma)
        score = aicc(float(np.sum(e[burn_w:] ** 2)), e.size - burn_w, p + q + 1 + (d == 0))
        return score, d, mu, ar, ma

    # -- interface -----------------------------------------------------------

    def fit(self, y: np.ndarray, season_length: int, ds: pd.DatetimeIndex | None = None) -> AutoARIMA:
        m = max(int(season_length), 1)
        y = check_history(y, "arima", 20)
        n = y.size
        start = max(0, n - max(20, int(round(self.window_days * m))))
        burn = min(max(10, (n - start) // 10), 50)
        best = None
        for days, s in profile_candidates(y, m, start, self.seasonal, self.profile_days).items():
            cand = self._candidate(y[start:] - s, burn)
            if best is None or cand[0] < best[0][0]:
                best = (cand, days)
        (_, self.d_, self.mu_, self.ar_, self.ma_), self.profile_days_ = best
        self.use_profile_ = self.profile_days_ > 0
        self.order_ = (self.ar_.size, self.d_, self.ma_.size)
        self.season_length_ = m
        self.profile_ = seasonal_profile(y, m, 0, self.profile_days_) if self.use_profile_ else np.zeros(m)
        # the state after the window, with the final profile
        x = y[start:] - self.profile_[np.arange(start, n) % m]
        w = (np.diff(x, self.d_) if self.d_ else x) - self.mu_
        e = arma_innovations(w, self.ar_, self.ma_)
        burn = min(burn, e.size // 2)
        self.clip_ = np.inf
        if self.outlier_clip:
            mad = float(np.median(np.abs(e[burn:] - np.median(e[burn:]))))
            if mad > 0:
                self.clip_ = self.outlier_clip * 1.4826 * mad
        p, q = self.order_[0], self.order_[2]
        self.w_hist_, self.e_hist_ = np.zeros(p), np.zeros(q)
        self.x_tail_ = x[: self.d_].copy()
        self.n_ = start + self.d_
        errors = np.array([self._step(v) for v in y[start + self.d_ :].tolist()])
        self.sigma_ = float(np.sqrt(np.mean(errors[burn:] ** 2)))
        log.debug("arima: order %s, profile days %d", self.order_, self.profile_days_)
        return self

    def _step(self, value: float) -> float:
        """Condition on one new actual; returns its one-step error.

        An error beyond ``clip_`` moves the state as if the actual had been that far off
        (a robust filter), so one spike does not echo through the AR and MA terms.
        """
        x = value - self.profile_[self.n_ % self.season_length_]
        w = (np.diff(np.r_[self.x_tail_, x], self.d_)[-1] if self.d_ else x) - self.mu_
        pred = float(self.ar_ @ self.w_hist_) + float(self.ma_ @ self.e_hist_)
        e = w - pred
        e_used = min(max(e, -self.clip_), self.clip_)
        if e_used != e:
            w, x = w - (e - e_used), x - (e - e_used)
        if self.ar_.size:
            self.w_hist_ = np.r_[w, self.w_hist_[:-1]]
        if self.ma_.size:
            self.e_hist_ = np.r_[e_used, self.e_hist_[:-1]]
        if self.d_:
            self.x_tail_ = np.r_[self.x_tail_[1:], x]
        self.n_ += 1
        return e

    def _mean(self, h: int) -> np.ndarray:
        w_hist, e_hist = list(self.w_hist_), list(self.e_hist_)
        w_hat = np.empty(h)
        for j in range(h):
            value = float(self.ar_ @ np.asarray(w_hist)) if w_hist else 0.0
            value += float(self.ma_ @ np.asarray(e_hist)) if e_hist else 0.0
            w_hat[j] = value
            if w_hist:
                w_hist = [value, *w_hist[:-1]]
            if e_hist:
                e_hist = [0.0, *e_hist[:-1]]
        if self.d_ == 0:
            x_hat = w_hat + self.mu_
        else:  # undo the differences: the last value of each lower difference, then a running sum
            x_hat = w_hat
            for k in range(self.d_ - 1, -1, -1):
                x_hat = np.diff(self.x_tail_, k)[-1] + np.cumsum(x_hat)
        phases = (self.n_ + np.arange(h)) % self.season_length_
        return x_hat + self.profile_[phases]

    def _sigma_steps(self, h: int) -> np.ndarray:
        psi = psi_weights(self.ar_, self.ma_, self.d_, h)
        return self.sigma_ * np.sqrt(np.cumsum(psi**2))

    def predict(self, h: int, levels: Sequence[int] = LEVELS) -> Forecast:
        return gaussian_intervals(self._mean(h), self._sigma_steps(h), levels)

    def update(self, y_new: np.ndarray) -> AutoARIMA:
        for value in np.asarray(y_new, dtype="float64").ravel().tolist():
            self._step(value)
        return self

    def forecast_origins(self, y_future, origins, h, levels=LEVELS) -> Forecast:
        y_future = np.asarray(y_future, dtype="float64").ravel()
        sigma = self._sigma_steps(h)
        means, seen = [], 0
        for origin in origins:
            for value in y_future[seen:origin].tolist():
                self._step(value)
            seen = max(seen, int(origin))
            means.append(self._mean(h))
        mean = np.vstack(means)
        return gaussian_intervals(mean, np.broadcast_to(sigma, mean.shape), levels)
