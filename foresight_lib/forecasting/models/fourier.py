"""Fourier extrapolation with a level correction from recent residuals.

The curve is a robust linear trend plus the strongest harmonics of the history's
spectrum; how many harmonics is chosen on the history's last day. Resource usage
drifts away from any periodic curve, so each forecast adds an exponentially
weighted mean of recent residuals that decays with the step; that correction is
what makes the 5-30 minute forecasts good. Intervals are per-step quantiles of the
in-sample absolute errors.

The module also holds the helpers the other statistical models share: the daily
seasonal profile and the per-step error quantiles.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.ndimage import median_filter
from scipy.signal import lfilter

from foresight_lib.errors import SeriesTooShortError
from foresight_lib.forecasting.models.base import Forecast, Forecaster, z_value
from foresight_lib.frames import LEVELS

log = logging.getLogger(__name__)

ERROR_STEPS = 288
"""Steps ahead for which in-sample error quantiles are kept; wider ones grow with sqrt(step)."""
PEAK_WINDOW = 31
"""Spectrum bins in the running median that a spectral line must stand out from."""
RANKINGS = ("peak", "amplitude")
TREND_POINTS = 300
"""Evenly spaced points the Theil-Sen trend is fitted on (its cost grows with their square)."""


# ---------------------------------------------------------------------------
# Shared helpers


def seasonal_profile(y: np.ndarray, m: int, offset: int = 0, days: int = 7) -> np.ndarray:
    """Robust daily profile: per phase, the median deviation from a one-season moving average.

    Args:
        y: values; ``y[i]`` sits at absolute position ``offset + i`` (phase ``(offset + i) % m``).
        m: season length.
        days: only about the last ``days`` seasons are used (one more feeds the moving
            average), so the profile follows recent habits; ``days=1`` is close to the
            seasonal naive's "same time yesterday".

    Returns:
        Shape (m,), zero mean, indexed by phase; zeros when fewer than two seasons are given.
    """
    y = np.asarray(y, dtype="float64")
    if days and y.size > (days + 1) * m:
        offset += y.size - (days + 1) * m
        y = y[-(days + 1) * m :]
    if m < 2 or y.size < 2 * m:
        return np.zeros(max(m, 1))
    if m % 2 == 0:  # centred 2 x m moving average
        kernel = np.r_[0.5, np.ones(m - 1), 0.5] / m
    else:
        kernel = np.ones(m) / m
    trend = np.convolve(y, kernel, mode="valid")
    first = (kernel.size - 1) // 2
    idx = np.arange(first, first + trend.size)
    detrended = y[idx] - trend
    pos = offset + idx
    table = np.full((pos[-1] // m - pos[0] // m + 1, m), np.nan)
    table[pos // m - pos[0] // m, pos % m] = detrended
    with np.errstate(all="ignore"):
        profile = np.nanmedian(table, axis=0) if np.isfinite(table).any(axis=0).all() else np.zeros(m)
    profile = np.nan_to_num(profile)
    return profile - profile.mean()


def abs_error_quantiles(errors: np.ndarray, levels: Sequence[int]) -> dict[int, np.ndarray]:
    """Per step, the ``level`` quantile of absolute errors (``errors`` of shape (n, steps), NaN ignored)."""
    ordered = np.sort(np.abs(errors), axis=0)  # NaN sort last
    counts = np.isfinite(ordered).sum(axis=0)
    cols = np.arange(ordered.shape[1])
    out = {}
    for level in levels:
        pos = np.maximum(counts - 1, 0) * level / 100.0
        below = np.floor(pos).astype("int64")
        above = np.minimum(below + 1, np.maximum(counts - 1, 0))
        frac = pos - below
        q = ordered[below, cols] * (1 - frac) + ordered[above, cols] * frac
        q = np.where(counts > 0, q, np.nan)
        out[int(level)] = np.maximum.accumulate(np.nan_to_num(q))  # never narrower further ahead
    return out


def robust_line(x: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Theil-Sen slope (median of pairwise slopes) and the median intercept."""
    i, j = np.triu_indices(x.size, k=1)
    slope = float(np.median((x[j] - x[i]) / (t[j] - t[i]))) if x.size > 1 else 0.0
    return slope, float(np.median(x - slope * t))


def interval_from_widths(mean: np.ndarray, widths: dict[int, np.ndarray], steps: np.ndarray,
                         levels: Sequence[int]) -> Forecast:
    """Symmetric intervals from stored per-step half-widths (steps beyond them grow with sqrt(step)).

    ``widths`` maps a level to its half-widths per step; a level not in it is rescaled from
    the nearest one by the ratio of normal quantiles.
    """
    out: Forecast = {"mean": mean}
    for level in levels:
        level = int(level)
        if level in widths:
            stored = widths[level]
        else:  # a level not kept at fit time: the nearest kept one, rescaled as a normal quantile would be
            nearest = min(widths, key=lambda kept: abs(kept - level))
            stored = widths[nearest] * z_value(level) / z_value(nearest)
        k = stored.size
        idx = np.minimum(steps, k) - 1
        half = stored[idx] * np.sqrt(np.maximum(steps, k) / k)
        out[f"lo-{level}"] = mean - half
        out[f"hi-{level}"] = mean + half
    return out


def check_history(y: np.ndarray, name: str, least: int) -> np.ndarray:
    """``y`` as float64, checked for length and NaN."""
    y = np.asarray(y, dtype="float64").ravel()
    if y.size < least:
        raise SeriesTooShortError(
            f"{name} needs at least {least} values of history, got {y.size}; give it more history"
        )
    if not np.isfinite(y).all():
        raise ValueError(f"{name} got {int((~np.isfinite(y)).sum())} missing/infinite value(s); fill gaps first")
    return y


def ewm(values: np.ndarray, alpha: float, start: float) -> np.ndarray:
    """Exponentially weighted mean after each value: c_t = (1 - alpha) c_{t-1} + alpha v_t, c_{-1} = start."""
    if values.size == 0:
        return values.copy()
    zi = np.array([(1.0 - alpha) * start])
    out, _ = lfilter([alpha], [1.0, -(1.0 - alpha)], values, zi=zi)
    return out


def step_errors(resid: np.ndarray, alpha: float, decay: float, steps: int, origins: np.ndarray) -> np.ndarray:
    """Errors (origins x steps) of curve + decaying correction, origin ``o`` knowing ``resid[:o]``."""
    level = ewm(resid, alpha, 0.0)
    c = np.where(origins > 0, level[np.maximum(origins - 1, 0)], 0.0)
    powers = decay ** np.arange(1, steps + 1)
    target = origins[:, None] + np.arange(steps)[None, :]
    valid = target < resid.size
    return np.where(valid, resid[np.minimum(target, resid.size - 1)] - c[:, None] * powers[None, :], np.nan)


# ---------------------------------------------------------------------------
# The model


class Fourier(Forecaster):
    """Trend + strongest harmonics, with an exponentially weighted level correction."""

    alias = "fourier"
    min_seasons = 2.0

    def __init__(self, harmonics: Sequence[int] = (0, 2, 4, 8, 16, 32, 64, 128), tune_horizon: int = 6,
                 alphas: Sequence[float] = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9, 1.0),
                 decays: Sequence[float] = (0.8, 0.9, 0.95, 0.98, 1.0), levels: Sequence[int] = (50, *LEVELS, 99)):
        """
        Args:
            harmonics: candidate numbers of harmonics; the one with the lowest error on the
                history's last day wins.
            tune_horizon: steps 1..tune_horizon are scored when choosing the settings.
            alphas: candidate smoothing weights of the residual level correction.
            decays: candidate per-step decay of that correction.
            levels: interval levels kept at fit time.
        """
        self.harmonics = tuple(int(k) for k in harmonics)
        self.tune_horizon = int(tune_horizon)
        self.alphas = tuple(float(a) for a in alphas)
        self.decays = tuple(float(d) for d in decays)
        self.levels = tuple(int(v) for v in levels)

    # -- curve ---------------------------------------------------------------

    @staticmethod
    def _fit_curve(x: np.ndarray, start: int, k: int, rank: str = "peak",
                   ) -> tuple[float, float, np.ndarray, np.ndarray, np.ndarray]:
        """Trend (intercept, slope at absolute positions) and ``k`` harmonics of ``x``.

        ``rank="amplitude"`` keeps the largest amplitudes; ``rank="peak"`` keeps the largest
        ratios to the spectrum's running median, i.e. spectral lines (periodic jobs) rather
        than the slow wander that dominates resource usage spectra.
        """
        t = np.arange(start, start + x.size, dtype="float64")
        stride = max(1, x.size // TREND_POINTS)
        slope, intercept = robust_line(x[::stride], t[::stride])
        spectrum = np.fft.rfft(x - (intercept + slope * t))
        amp = np.abs(spectrum) / x.size
        amp[0] = 0.0
        if x.size % 2 == 0:
            amp[-1] /= 2.0  # Nyquist bin is not doubled
        if rank == "peak":
            baseline = median_filter(amp, size=PEAK_WINDOW, mode="nearest")
            score = amp / (baseline + 1e-12 * (amp.max() + 1e-300))
            score[0] = 0.0
        else:
            score = amp
        top = np.argsort(score)[::-1][: min(k, amp.size - 1)]
        top = top[amp[top] > 0]
        freqs = top / x.size
        # backfitting: the harmonics bias a trend fitted with them in, so refit the trend without them
        mask = np.zeros(spectrum.size, dtype=bool)
        mask[top] = True
        params = ()
        for _ in range(2):
            periodic = x - np.fft.irfft(np.where(mask, spectrum, 0.0), n=x.size) if top.size else x
            slope, intercept = robust_line(periodic[::stride], t[::stride])
            spectrum = np.fft.rfft(x - (intercept + slope * t))
            scale = np.where((top == 0) | ((x.size % 2 == 0) & (top == x.size // 2)), 1.0, 2.0) / x.size
            coef = spectrum[top] * scale * np.exp(-2j * np.pi * freqs * start)  # phase at absolute position 0
            params = (float(intercept), float(slope), freqs, np.abs(coef), np.angle(coef))
        return params

    @staticmethod
    def _curve(params, t: np.ndarray) -> np.ndarray:
        intercept, slope, freqs, amps, phases = params
        t = np.asarray(t, dtype="float64")
        out = intercept + slope * t
        if freqs.size:
            out = out + (amps[None, :] * np.cos(2 * np.pi * freqs[None, :] * t[:, None] + phases[None, :])).sum(axis=1)
        return out

    def _tune(self, resid: np.ndarray, first_origin: int) -> tuple[float, float, float]:
        """Best (score, alpha, decay) for the correction, scored on origins from ``first_origin``."""
        origins = np.arange(first_origin, resid.size - 1)
        best = (np.inf, 1.0, 1.0)
        for alpha in self.alphas:
            for decay in self.decays:
                err = step_errors(resid, alpha, decay, self.tune_horizon, origins)
                score = float(np.nanmean(np.abs(err)))
                if score < best[0]:
                    best = (score, alpha, decay)
        return best

    # -- interface -----------------------------------------------------------

    def fit(self, y: np.ndarray, season_length: int, ds: pd.DatetimeIndex | None = None) -> Fourier:
        m = int(season_length)
        y = check_history(y, "fourier", max(2 * m, 8 * self.tune_horizon))
        n = y.size
        length = (n // m) * m if m > 1 else n
        start = n - length
        x = y[start:]
        enough_days = length >= 3 * m and m >= 4 * self.tune_horizon
        holdout = m if enough_days else max(4 * self.tune_horizon, length // 4)
        train = x[:-holdout]
        best = (np.inf, 0, RANKINGS[0], 1.0, 1.0)
        for rank in RANKINGS:
            for k in self.harmonics:
                if k == 0 and rank != RANKINGS[0]:
                    continue
                params = self._fit_curve(train, start, k, rank)
                resid = x - self._curve(params, np.arange(start, n))
                # the correction is warmed up on the training part and scored on the holdout
                score, alpha, decay = self._tune(resid, train.size)
                if score < best[0]:
                    best = (score, k, rank, alpha, decay)
        _, self.harmonics_, self.ranking_, self.alpha_, self.decay_ = best
        self.curve_ = self._fit_curve(x, start, self.harmonics_, self.ranking_)
        resid = x - self._curve(self.curve_, np.arange(start, n))
        steps = min(ERROR_STEPS, max(self.tune_horizon, m))
        origins = np.arange(0, resid.size - 1)
        errors = step_errors(resid, self.alpha_, self.decay_, steps, origins)
        self.widths_ = abs_error_quantiles(errors[min(m, resid.size // 4):], self.levels)
        self.correction_ = float(ewm(resid, self.alpha_, 0.0)[-1])
        self.n_ = n
        log.debug("fourier: %d harmonics by %s, alpha %.2f, decay %.2f",
                  self.harmonics_, self.ranking_, self.alpha_, self.decay_)
        return self

    def _mean(self, n: int, correction: float | np.ndarray, h: int) -> np.ndarray:
        t = np.asarray(n)[..., None] + np.arange(h)
        curve = self._curve(self.curve_, t.ravel()).reshape(t.shape)
        return curve + np.asarray(correction)[..., None] * self.decay_ ** np.arange(1, h + 1)

    def predict(self, h: int, levels: Sequence[int] = LEVELS) -> Forecast:
        mean = self._mean(self.n_, self.correction_, h)
        return interval_from_widths(mean, self.widths_, np.arange(1, h + 1), levels)

    def update(self, y_new: np.ndarray) -> Fourier:
        y_new = np.asarray(y_new, dtype="float64").ravel()
        if y_new.size:
            resid = y_new - self._curve(self.curve_, np.arange(self.n_, self.n_ + y_new.size))
            self.correction_ = float(ewm(resid, self.alpha_, self.correction_)[-1])
            self.n_ += y_new.size
        return self

    def forecast_origins(self, y_future, origins, h, levels=LEVELS) -> Forecast:
        y_future = np.asarray(y_future, dtype="float64").ravel()
        origins = np.asarray(origins, dtype="int64")
        last = int(origins.max()) if origins.size else 0
        resid = y_future[:last] - self._curve(self.curve_, np.arange(self.n_, self.n_ + last))
        levels_after = ewm(resid, self.alpha_, self.correction_)
        corrections = np.where(origins > 0, levels_after[np.maximum(origins - 1, 0)] if last else 0.0,
                               self.correction_)
        mean = self._mean(self.n_ + origins, corrections, h)
        out = interval_from_widths(mean, self.widths_, np.arange(1, h + 1), levels)
        if last:
            self.correction_ = float(levels_after[-1])
            self.n_ += last
        return out
