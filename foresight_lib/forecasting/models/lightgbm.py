"""A global gradient-boosting model (LightGBM): one set of trees for every series.

Each series is divided by its scale (by default the in-sample MAE of the one-day seasonal
naive over its last eight days, the MASE denominator, as the LSTM does; ``scale`` also offers
the standard deviation, or the larger of the two), so trees fitted on all series at once see
every series in the same units and the L1 loss weighs series the way the leaderboard does.
From a cutoff ``t`` the features are, all in scaled units and relative to the anchor ``a``,
the median of the last ``anchor_steps`` values (12 by default, an hour at 5-minute data), so
that the level of a series never matters and a lone spike at the cutoff is not taken for
the level the forecast starts from (``anchor_steps=1`` anchors on the last value ``y[t]``):

- lags: ``y[t-j] - a`` for ``j = 0..lags`` (an hour at 5-minute data; ``j = 0``, the last
  value, only when ``a`` is a median);
- rolling statistics over the last ``short_window`` steps and the last day: mean, standard
  deviation, minimum and maximum, and the day's median (all but the deviations less ``a``);
- for the target step ``t+k``: the value at the same time on each of the last
  ``lookback_days`` days and a week earlier (``y[t+k-d*m] - a``), their mean, and the
  change the same hour made yesterday (``y[t+k-m] - y[t-m]``);
- calendar: time of day and weekday of the target timestamp, when the caller passes
  timestamps (``ds``); without them these features are missing, which LightGBM sends down
  the branch it learnt for missing values, and the day-earlier lags carry the daily cycle.

Multi-horizon forecasts are direct: one booster per step ``k = 1..horizon`` predicts the
change ``y[t+k] - a``. Direct models do not feed their own errors back (recursive ones
do, and their error grows with the step), each step gets the seasonal lags of its own
target time, and the protocol's horizons are short (6 steps), so the extra fits are cheap.
Forecasts beyond ``horizon`` are made block by block, feeding the means back.

The last ``val_days`` of every series validate: they stop the boosting early and their
residuals set the interval bounds (split-conformal, per step and level, asymmetric); with
``refit`` the boosters are then refitted on the whole history with the number of rounds
found, so the newest day informs the forecasts too. Training is seeded and deterministic,
with ``n_threads`` threads.
"""
from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from foresight_lib.errors import ConfigError, SeriesTooShortError
from foresight_lib.forecasting.metrics import seasonal_naive_scale
from foresight_lib.forecasting.models.base import Forecast, GlobalForecaster, empty_forecast, known_context, z_value
from foresight_lib.frames import LEVELS

log = logging.getLogger(__name__)

SCALE_DAYS = 8
"""Days of history each series' scale is measured on (recent, but longer than a week)."""
WEEK_DAYS = 7
WINDOW_FLOOR = 0.1
"""Least window scale (with ``window_scale``), in units of the series' scale."""
_NS_PER_DAY = 86_400 * 10**9
SCALES = ("mase", "std", "mase_std")


def _as_stamps(ds, n: int, name: str) -> tuple[float, float]:
    """(first timestamp, step) in nanoseconds of a regular index of ``n`` values; NaN when unknown."""
    if ds is None:
        return np.nan, np.nan
    index = pd.DatetimeIndex(ds)
    if len(index) != n:
        raise ConfigError(f"lightgbm: {name} has {len(index)} timestamps for {n} values; pass one per value")
    if index.tz is not None:
        index = index.tz_convert("UTC")
    ns = index.as_unit("ns").asi8
    if ns.size < 2:
        return (float(ns[0]) if ns.size else np.nan), np.nan
    return float(ns[0]), float(ns[1] - ns[0])


class LightGBM(GlobalForecaster):
    """Gradient-boosted trees across all series; direct forecasts of the next ``horizon`` steps."""

    alias = "lightgbm"
    min_seasons = 2.0
    needs_timestamps = True
    """The runner passes the series' timestamps (``ds``) for the calendar features when it can."""

    def __init__(
        self, horizon: int = 6, lags: int = 12, short_window: int = 12, lookback_days: int = 7,
        num_leaves: int = 31, learning_rate: float = 0.05, n_estimators: int = 400,
        min_data_in_leaf: int = 100, feature_fraction: float = 0.8, bagging_fraction: float = 0.8,
        lambda_l2: float = 1.0, early_stopping_rounds: int = 30, val_days: float = 1.0,
        refit: bool = True, max_train_rows: int = 300_000, calendar: bool = True, window_scale: bool = False,
        anchor_steps: int = 12, scale: str = "mase",
        levels: Sequence[int] = LEVELS, seed: int = 0, n_threads: int = 1,
    ):
        """
        Args:
            horizon: steps predicted directly (one booster each); longer forecasts are made block by block.
            lags: recent values read as lags.
            short_window: steps of the short rolling statistics (the long ones span a day).
            lookback_days: past days whose same-time values are features.
            num_leaves, learning_rate, n_estimators, min_data_in_leaf, feature_fraction,
                bagging_fraction, lambda_l2: LightGBM's parameters (``n_estimators`` is the
                most boosting rounds; early stopping on the validation days picks fewer).
            early_stopping_rounds: rounds without a better validation L1 before stopping.
            val_days: the last ``val_days`` seasons of every series validate and calibrate.
            refit: refit on the whole history with the rounds found (else keep the boosters
                fitted without the validation days).
            max_train_rows: training rows kept per step (a seeded random subset beyond it).
            calendar: use time-of-day and weekday features when timestamps are given.
            anchor_steps: the anchor is the median of this many last values (1: the last value).
            scale: a series' scale over its last eight days: ``mase`` (the seasonal naive's
                in-sample MAE), ``std`` (the standard deviation) or ``mase_std`` (the larger).
            window_scale: also divide each window by its own recent volatility (the mean absolute
                step over the last day, at least ``WINDOW_FLOOR``), so that a series far more
                volatile than in its history is forecast in units the trees have seen.
            levels: interval levels calibrated on the validation days.
            seed: seeds LightGBM and the row subsampling (results repeat exactly).
            n_threads: LightGBM threads.
        """
        for name, value in (("horizon", horizon), ("lags", lags), ("short_window", short_window),
                            ("lookback_days", lookback_days), ("anchor_steps", anchor_steps),
                            ("num_leaves", num_leaves), ("n_estimators", n_estimators),
                            ("min_data_in_leaf", min_data_in_leaf),
                            ("max_train_rows", max_train_rows), ("n_threads", n_threads)):
            if int(value) < 1:
                raise ConfigError(f"lightgbm: {name} must be a positive integer, got {value}")
        for name, value in (("feature_fraction", feature_fraction), ("bagging_fraction", bagging_fraction)):
            if not 0.0 < float(value) <= 1.0:
                raise ConfigError(f"lightgbm: {name} must be in (0, 1], got {value}")
        if float(learning_rate) <= 0:
            raise ConfigError(f"lightgbm: learning_rate must be positive, got {learning_rate}")
        self.horizon = int(horizon)
        self.lags = int(lags)
        self.short_window = int(short_window)
        self.lookback_days = int(lookback_days)
        self.num_leaves = int(num_leaves)
        self.learning_rate = float(learning_rate)
        self.n_estimators = int(n_estimators)
        self.min_data_in_leaf = int(min_data_in_leaf)
        self.feature_fraction = float(feature_fraction)
        self.bagging_fraction = float(bagging_fraction)
        self.lambda_l2 = float(lambda_l2)
        self.early_stopping_rounds = int(early_stopping_rounds)
        self.val_days = float(val_days)
        self.refit = bool(refit)
        self.max_train_rows = int(max_train_rows)
        self.calendar = bool(calendar)
        self.window_scale = bool(window_scale)
        if scale not in SCALES:
            raise ConfigError(f"lightgbm: scale must be one of {SCALES}, got {scale!r}")
        self.anchor_steps = int(anchor_steps)
        self.scale = scale
        self.levels = tuple(int(v) for v in levels)
        self.seed = int(seed)
        self.n_threads = int(n_threads)

    # -- features --------------------------------------------------------------

    @property
    def _context(self) -> int:
        """Values before the cutoff the features read (the cutoff's own value excluded)."""
        m = self.season_length_
        return max(self.lookback_days, WEEK_DAYS) * m + max(self.lags, self.short_window)

    def _lgb_params(self) -> dict:
        return {
            "objective": "l1", "metric": "l1", "num_leaves": self.num_leaves, "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_data_in_leaf, "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction, "bagging_freq": 1 if self.bagging_fraction < 1 else 0,
            "lambda_l2": self.lambda_l2, "num_threads": self.n_threads, "seed": self.seed,
            "deterministic": True, "force_row_wise": True, "verbosity": -1,
        }

    @property
    def _anchor_width(self) -> int:
        """Values the anchor is the median of (1 for models saved before the anchor existed)."""
        return min(getattr(self, "anchor_steps", 1), self._context + 1)

    def _anchor(self, ctx: np.ndarray) -> np.ndarray:
        """Each window's anchor (n,): the value the features and the target are measured from."""
        width = self._anchor_width
        if width == 1:
            return ctx[:, -1]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(ctx[:, -width:], axis=1)

    def _common(self, ctx: np.ndarray) -> np.ndarray:
        """Step-independent features (n, n_common) from contexts (n, context + 1), last column the cutoff."""
        m, P = self.season_length_, self._context
        last = self._anchor(ctx)[:, None]
        lags = ctx[:, P - self.lags : P + (self._anchor_width > 1)] - last  # lag 0 is 0 without a median
        short = ctx[:, P + 1 - self.short_window :]
        day = ctx[:, P + 1 - m :]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices of the left padding
            stats = [np.nanmean(short, axis=1), np.nanstd(short, axis=1), np.nanmin(short, axis=1),
                     np.nanmax(short, axis=1), np.nanmean(day, axis=1), np.nanstd(day, axis=1),
                     np.nanmin(day, axis=1), np.nanmax(day, axis=1), np.nanmedian(day, axis=1)]
        stats = np.stack(stats, axis=1)
        stats[:, [0, 2, 3, 4, 6, 7, 8]] -= last
        return np.concatenate([lags, stats], axis=1)

    def _step(self, ctx: np.ndarray, k: int, stamps: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Features of target step ``k`` (n, n_step): same time on past days, and the calendar.

        ``stamps`` and ``steps`` are each row's cutoff timestamp and grid step in nanoseconds
        (NaN when unknown).
        """
        m, P = self.season_length_, self._context
        last = self._anchor(ctx)
        days = [ctx[:, P - d * m + k] - last for d in range(1, self.lookback_days + 1)]
        week = ctx[:, P - WEEK_DAYS * m + k] - last
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_days = np.nanmean(np.stack(days, axis=1), axis=1)
        yesterday_change = ctx[:, P - m + k] - ctx[:, P - m]
        target_ns = stamps + k * steps
        if self.calendar:
            tod = np.mod(target_ns, _NS_PER_DAY) / _NS_PER_DAY
            weekday = np.mod(np.floor(target_ns / _NS_PER_DAY) + 3, 7)  # 1970-01-01 was a Thursday
        else:
            tod = weekday = np.full(ctx.shape[0], np.nan)
        return np.column_stack([*days, week, mean_days, yesterday_change, tod, weekday])

    def _local(self, ctx: np.ndarray) -> np.ndarray:
        """Per-window scale (n,): ones, or the recent mean absolute step with ``window_scale``."""
        if not getattr(self, "window_scale", False):
            return np.ones(ctx.shape[0])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = np.nanmean(np.abs(np.diff(ctx[:, -self.season_length_ - 1 :], axis=1)), axis=1)
        return np.maximum(np.nan_to_num(r, nan=WINDOW_FLOOR), WINDOW_FLOOR)

    def _scale(self, y: np.ndarray) -> float:
        """A series' scale over its last eight days: the in-sample MAE of the seasonal naive (``mase``),
        the standard deviation (``std``), or the larger of the two (``mase_std``)."""
        m = self.season_length_
        recent = y[-SCALE_DAYS * m :]
        kind = getattr(self, "scale", "mase")
        mase = seasonal_naive_scale(recent, m)
        if kind == "mase":
            return mase
        std = float(np.std(recent))
        if not std > 0:
            return mase
        return std if kind == "std" else max(mase, std)

    def _contexts(self, flat: np.ndarray, cut: np.ndarray) -> np.ndarray:
        """Rows ``flat[cut - context : cut + 1]`` (``flat`` is left-padded with NaN)."""
        return flat[cut[:, None] + np.arange(-self._context, 1)[None, :]]

    # -- training --------------------------------------------------------------

    def fit_many(self, ys: Sequence[np.ndarray], season_length: int, ds: Sequence | None = None) -> LightGBM:
        """Fit one booster per step on every series; the last ``val_days`` of each validate.

        Args:
            ys: training values per series (float, finite, regular grid).
            season_length: steps per day.
            ds: optional timestamps per series (aligned with ``ys``) for the calendar features.

        Raises:
            SeriesTooShortError: no series is long enough for a single training window.
        """
        import lightgbm as lgb

        started = time.perf_counter()
        m = int(season_length)
        self.season_length_ = m
        self.horizon_ = self.horizon
        H, P = self.horizon_, self._context
        ds = list(ds) if ds is not None else [None] * len(ys)
        if len(ds) != len(ys):
            raise ConfigError(f"lightgbm: {len(ys)} series but {len(ds)} timestamp indexes; pass one per series")
        self.timestamps_ = any(d is not None for d in ds)
        flats, cuts, stamp_rows, step_rows, train_end_rows, n_rows = [], [], [], [], [], []
        offset = 0
        for y, stamps in zip(ys, ds, strict=True):
            y = np.asarray(y, dtype="float64").ravel()
            if not np.isfinite(y).all():
                raise ValueError(f"lightgbm got {int((~np.isfinite(y)).sum())} missing value(s); fill gaps first")
            start_ns, step_ns = _as_stamps(stamps, y.size, "ds")
            n = y.size
            val_steps = int(round(self.val_days * m))
            if n - val_steps - m - H < m // 2:  # too short to spare a day: validate on a fifth
                val_steps = max(H + 1, n // 5)
            t = np.arange(m, n - 1)  # cutoffs with at least a day before them
            flats.append(np.concatenate([np.full(P, np.nan), y / self._scale(y)]))
            cuts.append(offset + P + t)
            stamp_rows.append(start_ns + t * step_ns)
            step_rows.append(np.full(t.size, step_ns))
            train_end_rows.append(np.full(t.size, n - val_steps) - t)  # steps from the cutoff to the validation
            n_rows.append(np.full(t.size, n) - t)  # steps from the cutoff to the end
            offset += P + n
        if not cuts or sum(c.size for c in cuts) == 0:
            raise SeriesTooShortError(f"lightgbm: no series is long enough to train on (each needs more than "
                                      f"{m + H} values plus a validation part); give it more history")
        flat = np.concatenate([*flats, np.full(H, np.nan)])  # targets past the end are NaN, never used
        cut = np.concatenate(cuts)
        stamps = np.concatenate(stamp_rows)
        steps = np.concatenate(step_rows)
        to_val = np.concatenate(train_end_rows)
        to_end = np.concatenate(n_rows)
        ctx = self._contexts(flat, cut)
        local = self._local(ctx)
        target_all = (flat[cut[:, None] + np.arange(1, H + 1)[None, :]] - self._anchor(ctx)[:, None]) / local[:, None]
        ctx = ctx / local[:, None]
        common = self._common(ctx)
        rng = np.random.default_rng(self.seed)
        params = self._lgb_params()
        self.boosters_, self.rounds_, self.offsets_ = [], [], {level: [] for level in self.levels}
        val_rows = 0
        for k in range(1, H + 1):
            X = np.concatenate([common, self._step(ctx, k, stamps, steps)], axis=1).astype("float32")
            target = target_all[:, k - 1].astype("float32")
            train = np.flatnonzero(to_val > k)  # target before the validation part
            val = np.flatnonzero((to_val <= 1) & (to_end > k))  # cutoffs from the validation part's eve on
            train = self._subsample(train, rng)
            if train.size == 0:
                raise SeriesTooShortError("lightgbm: no training window before the validation days; "
                                          "give it more history or lower val_days")
            dtrain = lgb.Dataset(X[train], target[train], free_raw_data=True, params={"verbosity": -1})
            callbacks = []
            valid_sets = []
            if val.size:
                dval = lgb.Dataset(X[val], target[val], reference=dtrain, params={"verbosity": -1})
                valid_sets = [dval]
                callbacks = [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]
            booster = lgb.train(params, dtrain, num_boost_round=self.n_estimators, valid_sets=valid_sets,
                                callbacks=callbacks)
            rounds = booster.best_iteration if val.size and booster.best_iteration > 0 else self.n_estimators
            if val.size:
                residual = target[val].astype("float64") - booster.predict(X[val], num_iteration=rounds)
                for level in self.levels:
                    self.offsets_[level].append(_conformal(residual, level))
                val_rows += val.size
            else:
                for level in self.levels:
                    self.offsets_[level].append((0.0, 0.0))
            if self.refit and val.size:
                everything = self._subsample(np.flatnonzero(to_end > k), rng)
                booster = lgb.train(params, lgb.Dataset(X[everything], target[everything],
                                                        params={"verbosity": -1}), num_boost_round=rounds)
            self.boosters_.append(booster)
            self.rounds_.append(int(rounds))
        self.offsets_ = {level: (np.array([lo for lo, _ in v]), np.array([hi for _, hi in v]))
                         for level, v in self.offsets_.items()}
        log.info("lightgbm: %d series, %d steps, rounds %s, %d validation rows, %.1f s", len(ys), H,
                 self.rounds_, val_rows, time.perf_counter() - started)
        return self

    def _subsample(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rows.size <= self.max_train_rows:
            return rows
        return np.sort(rng.choice(rows, size=self.max_train_rows, replace=False))

    # -- forecasting -----------------------------------------------------------

    def _block(self, ctx: np.ndarray, stamps: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scaled mean changes from the anchor for the next ``horizon`` steps, shape (n, horizon),
        and the window scales (n,) they were made in."""
        local = self._local(ctx)
        ctx = ctx / local[:, None]
        common = self._common(ctx)
        out = np.empty((ctx.shape[0], self.horizon_))
        for k, booster in enumerate(self.boosters_, start=1):
            X = np.concatenate([common, self._step(ctx, k, stamps, steps)], axis=1).astype("float32")
            out[:, k - 1] = booster.predict(X, num_threads=self.n_threads)
        return out * local[:, None], local

    def _forecast(self, ctx: np.ndarray, stamps: np.ndarray, steps: np.ndarray, h: int):
        """Scaled means (n, h) and per-level (lower, upper) offsets, block by block."""
        means, offsets = [], {level: ([], []) for level in self.levels}
        carry = {level: (np.zeros(ctx.shape[0]), np.zeros(ctx.shape[0])) for level in self.levels}
        done = 0
        while done < h:
            change, local = self._block(ctx, stamps, steps)
            mean = self._anchor(ctx)[:, None] + change
            means.append(mean)
            for level in self.levels:
                lo, hi = self.offsets_[level]
                c_lo, c_hi = carry[level]
                lo_total = np.sqrt(c_lo[:, None] ** 2 + (local[:, None] * lo[None, :]) ** 2)
                hi_total = np.sqrt(c_hi[:, None] ** 2 + (local[:, None] * hi[None, :]) ** 2)
                offsets[level][0].append(lo_total)
                offsets[level][1].append(hi_total)
                carry[level] = (lo_total[:, -1], hi_total[:, -1])
            ctx = np.concatenate([ctx, mean], axis=1)[:, -ctx.shape[1]:]
            stamps = stamps + self.horizon_ * steps
            done += self.horizon_
        mean = np.concatenate(means, axis=1)[:, :h]
        return mean, {lvl: (np.concatenate(lo, 1)[:, :h], np.concatenate(hi, 1)[:, :h])
                      for lvl, (lo, hi) in offsets.items()}

    def forecast_origins_many(
        self,
        histories: Sequence[np.ndarray],
        futures: Sequence[np.ndarray],
        origins: Sequence[int],
        h: int,
        levels: Sequence[int] = LEVELS,
        ds: Sequence | None = None,
    ) -> list[Forecast]:
        """All series x origins at once; each forecast reads only ``history + future[:origin]``.

        Args:
            ds: optional timestamps of each history (for the calendar features).
        """
        if not hasattr(self, "boosters_"):
            raise ConfigError("lightgbm: the model is not fitted; call fit_many() first")
        if len(histories) != len(futures):
            raise ConfigError(f"lightgbm: {len(histories)} histories but {len(futures)} futures; pass one per series")
        ds = list(ds) if ds is not None else [None] * len(histories)
        if len(ds) != len(histories):
            raise ConfigError(f"lightgbm: {len(histories)} series but {len(ds)} timestamp indexes")
        if self.timestamps_ and self.calendar and all(d is None for d in ds) and histories:
            log.warning("lightgbm was fitted with timestamps but forecasts without them: calendar features missing")
        origins = np.asarray(origins, dtype="int64")
        n_series, n_origins = len(histories), origins.size
        if n_series == 0 or n_origins == 0:
            return [empty_forecast(h, levels) for _ in range(n_series)]
        P = self._context
        ctxs, scales, nonneg, stamp_rows, step_rows = [], [], [], [], []
        for history, future, stamps in zip(histories, futures, ds, strict=True):
            history, known = known_context("lightgbm", history, future, origins)
            start_ns, step_ns = _as_stamps(stamps, history.size, "ds")
            scale = self._scale(history)
            flat = np.concatenate([np.full(P, np.nan), known / scale])
            cut_index = history.size + origins - 1
            ctxs.append(self._contexts(flat, P + cut_index))
            stamp_rows.append(start_ns + cut_index * step_ns)
            step_rows.append(np.full(n_origins, step_ns))
            scales.append(scale)
            nonneg.append(history.min() >= 0)
        mean, offsets = self._forecast(np.concatenate(ctxs), np.concatenate(stamp_rows), np.concatenate(step_rows), h)
        results = []
        for i, (scale, positive) in enumerate(zip(scales, nonneg, strict=True)):
            rows = slice(i * n_origins, (i + 1) * n_origins)
            fc = _intervals(mean[rows], {lv: (lo[rows], hi[rows]) for lv, (lo, hi) in offsets.items()}, levels)
            fc = {k: v * scale for k, v in fc.items()}
            if positive:  # usage never goes below zero when its history never did
                fc = {k: np.maximum(v, 0.0) for k, v in fc.items()}
            results.append(fc)
        return results

    def predict_from(self, y_context: np.ndarray, h: int, levels: Sequence[int] = LEVELS,
                     ds: pd.DatetimeIndex | None = None) -> Forecast:
        """Forecast ``h`` steps after the end of ``y_context`` (shape (h,) arrays)."""
        stamps = None if ds is None else [ds]
        result = self.forecast_origins_many([y_context], [np.empty(0)], [0], h, levels, ds=stamps)[0]
        return {k: v[0] for k, v in result.items()}

    def feature_names(self) -> list[str]:
        """Names of the features, in the order the boosters read them."""
        names = [f"lag_{j}" for j in range(self.lags, -1 if self._anchor_width > 1 else 0, -1)]
        names += [f"{stat}_{w}" for w in ("short", "day") for stat in ("mean", "std", "min", "max")]
        names += ["median_day"]
        names += [f"same_time_{d}d" for d in range(1, self.lookback_days + 1)]
        return [*names, "same_time_7d", "same_time_mean", "yesterday_change", "time_of_day", "weekday"]


def _conformal(residual: np.ndarray, level: int) -> tuple[float, float]:
    """Lower and upper offsets from the mean that cover ``level`` % of the validation residuals
    (split-conformal, each tail at half the miss rate, with the finite-sample correction)."""
    n = residual.size
    tail = (1.0 - level / 100.0) / 2.0
    q_hi = min(1.0, np.ceil((n + 1) * (1.0 - tail)) / n)
    q_lo = max(0.0, np.floor((n + 1) * tail) / n)
    lo = float(np.quantile(residual, q_lo, method="lower"))
    hi = float(np.quantile(residual, q_hi, method="higher"))
    return max(-lo, 0.0), max(hi, 0.0)


def _intervals(mean: np.ndarray, offsets: dict, levels: Sequence[int]) -> Forecast:
    """Mean and bounds per level; wider levels never narrower, levels not calibrated rescaled."""
    out: Forecast = {"mean": mean}
    widths = {}
    for level in sorted(int(v) for v in levels):
        if level in offsets:
            lo, hi = offsets[level]
        else:  # the nearest calibrated level, rescaled as a normal quantile would be
            nearest = min(offsets, key=lambda kept: abs(kept - level))
            ratio = z_value(level) / z_value(nearest)
            lo, hi = offsets[nearest][0] * ratio, offsets[nearest][1] * ratio
        widths[level] = (lo, hi)
    previous = None
    for level in sorted(widths):
        if previous is not None:
            widths[level] = tuple(np.maximum(w, p) for w, p in zip(widths[level], widths[previous], strict=True))
        previous = level
    for level, (lo, hi) in widths.items():
        out[f"lo-{level}"] = mean - lo
        out[f"hi-{level}"] = mean + hi
    return out
