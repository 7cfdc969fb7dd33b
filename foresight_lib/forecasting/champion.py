"""The champion bundle: a nightly model, frozen with what it needs to forecast tomorrow.

A ``ChampionBundle`` holds, per series, the fitted model of the night (or the global
model and the tail of the series it reads as context), the ensemble's weights when the
champion is the ensemble, and the last timestamp each model has seen. Between two
nightly trainings it forecasts from fresh actuals by conditioning on the values newer
than that timestamp, with no refit: exactly what the evaluation protocol measures.

It also records what its training data looked like, per metric (``MetricProfile`` in
``foresight_lib.forecasting.profiles``: unit, scale, sign, counter or gauge), and refuses
history that does not match (another metric's series, a raw counter, values off by
orders of magnitude) instead of forecasting nonsense from it; its forecasts of a non-negative metric never go below 0.

``score_on`` runs an older champion through a newer run's held-out day with the same
protocol, so that the alias rule compares the current champion and a new model on the
same backtest. The MLflow side (pyfunc model, registry, aliases, ``register_champion``)
lives in ``foresight_lib.tracking.registry``.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from foresight_lib.errors import ConfigError, DataError
from foresight_lib.forecasting.backtest import (
    BacktestResult,
    BacktestSpec,
    EnsembleWeights,
    SeriesSplit,
    forecast_frame,
    split_series,
)
from foresight_lib.forecasting.metrics import ChampionCriterion, criterion_of, evaluate, leaderboard, mase_scales
from foresight_lib.forecasting.models import ENSEMBLE, FALLBACK_MODEL, model_class
from foresight_lib.forecasting.models.base import Forecast, GlobalForecaster
from foresight_lib.forecasting.profiles import MetricProfile, seen_test_steps
from foresight_lib.frames import check_series_frame, split_unique_id
from foresight_lib.horizons import horizon_steps, parse_horizons, to_timedelta

log = logging.getLogger(__name__)

EXAMPLE_ROWS = 12
"""Rows of recent history kept as the registered model's input example."""
CHECK_MODES = ("raise", "warn", "off")
"""What ``forecast`` does with history unlike the training data: refuse it, log a warning, or nothing."""
DEFAULT_SCALE_FACTOR = 100.0
"""History whose level is this many times off the training data's is refused."""
MAX_GAP_POINTS = 12
"""Missing points among a series' new actuals that are interpolated at most, or half of them if more."""


class HistoryMismatchError(DataError, ValueError):
    """The history given to a champion does not look like the metric it was trained on."""


class HistoryRefused(DataError, ValueError):
    """History a champion cannot be conditioned on (``ChampionBundle.refuse_unusable``).

    ``status``: 404 for series the model does not know (when new series are not allowed),
    422 for anything else, as the REST API answers it.
    """

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def mean_mase(board: pd.DataFrame, model: str) -> float:
    """Mean over the leaderboard's horizons of ``model``'s MASE (the default criterion's score)."""
    return ChampionCriterion().score(board, model)


def _is_global(name: str) -> bool:
    return issubclass(model_class(name), GlobalForecaster)


def _fallback_name(n_values: int, season_length: int) -> str:
    return FALLBACK_MODEL if n_values > season_length else "naive"


def fit_local(name: str, params: dict, y: np.ndarray, ds: pd.DatetimeIndex, season_length: int):
    """Fit the local model ``name`` on ``y``; on failure (or too little history) the fallback.

    Returns:
        The fitted model and the name of what was actually fitted.
    """
    cls = model_class(name)
    needed = int(np.ceil(float(getattr(cls, "min_seasons", 0.0)) * season_length))
    if len(y) > needed:
        try:
            with np.errstate(all="ignore"):
                return cls(**params).fit(y, season_length, ds=ds), name
        except Exception as exc:  # noqa: BLE001 - any model failure falls back, and is logged
            log.warning("model %s could not be fitted (%s: %s); using the fallback", name, type(exc).__name__, exc)
    fallback = _fallback_name(len(y), season_length)
    return model_class(fallback)().fit(y, season_length, ds=ds), fallback


def _ensemble_members(result: BacktestResult, splits: list[SeriesSplit]) -> list[str]:
    """The base models the ensemble of these series combines: those its weights name (the members
    chosen for their metric); a model no series' weights name is neither kept nor forecast."""
    bases = result.spec.base_models
    named = {m for s in splits if s.unique_id in result.ensemble_weights
             for m in result.ensemble_weights[s.unique_id].models}
    if any(s.unique_id not in result.ensemble_weights for s in splits) or not named:
        return bases  # a series whose ensemble fell back: every base model, as before
    return [m for m in bases if m in named]


@dataclass
class ChampionBundle:
    """A picklable champion: fitted state per series plus the protocol it was trained under."""

    model: str
    freq: str
    horizons: list[str]
    levels: tuple[int, ...]
    season_length: int
    horizon_steps: dict[str, int]
    max_steps: int
    history_steps: int
    members: list[str]
    """The base models it runs: ``[model]``, or the ensemble's members."""
    model_params: dict[str, dict]
    local_models: dict[tuple[str, str], Any]
    """(member, unique_id) -> fitted local ``Forecaster``, conditioned up to ``last_ds``."""
    global_models: dict[str, GlobalForecaster]
    contexts: dict[str, np.ndarray]
    """unique_id -> the series' values up to ``last_ds`` that a global member reads."""
    ensemble_weights: dict[str, EnsembleWeights]
    last_ds: dict[str, pd.Timestamp]
    fitted_as: dict[tuple[str, str], str] = field(default_factory=dict)
    """(member, unique_id) -> the model actually fitted, where the member failed and fell back."""
    mean_mase: float = float("nan")
    """Mean MASE over the horizons of this model on its own backtest (over these series)."""
    score: float = float("nan")
    """Its score under the champion criterion (``criterion``) on that backtest: what the registry compares."""
    criterion: str = "mean_mase"
    """The label of the champion criterion ``score`` was made by (``ChampionCriterion.label``)."""
    example: pd.DataFrame | None = None
    """A few rows of recent history: the registered model's input example."""
    spec: BacktestSpec | None = None
    profiles: dict[str, MetricProfile] | None = None
    """metric -> its training data's profile (None in bundles pickled before profiles existed)."""
    scale_factor: float = DEFAULT_SCALE_FACTOR
    """History whose level is this many times off the training data's is refused."""
    _eval_frame: pd.DataFrame | None = field(default=None, repr=False)
    """The frame it was built from; kept in memory only, to score the previous champion on."""

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_eval_frame"] = None
        return state

    # ------------------------------------------------------------------ building

    @classmethod
    def from_result(cls, result: BacktestResult, model_name: str | None = None,
                    frame: pd.DataFrame | None = None, *, unit: str | None = None,
                    scale_factor: float = DEFAULT_SCALE_FACTOR) -> ChampionBundle:
        """Freeze ``model_name`` (default: the backtest's champion) from a backtest result.

        Args:
            result: a backtest run with ``keep_models=True`` (and ``future=True`` so the
                models have seen every actual up to the end of the data).
            model_name: the model to keep.
            frame: the prepared long frame the backtest ran on; only its series are kept
                (pass a subset, e.g. one metric's series, to build that metric's champion).
            unit: the unit of the metric's values (default: guessed from its name,
                ``_cores`` -> cores, ``_bytes`` -> bytes).
            scale_factor: history whose level is this many times off the training
                data's is refused at forecast time.

        Raises:
            ConfigError: the result kept no models or does not hold ``model_name``.
            DataError: ``frame`` shares no series with the backtest.
        """
        spec = result.spec
        name = model_name or result.champion
        if name not in spec.models:
            raise ConfigError(f"model '{name}' was not backtested; choose one of {spec.models}")
        if not spec.keep_models or not result.models:
            raise ConfigError("the backtest kept no fitted models; run it with keep_models=True to build a champion")
        if frame is None:
            raise DataError("from_result needs the prepared frame the backtest ran on (for the series' context)")
        wanted = set(result.series)
        splits, _ = split_series(frame, spec)
        splits = [s for s in splits if s.unique_id in wanted]
        if not splits:
            raise DataError(
                f"the frame shares no series with the backtest (it covered {len(result.series)} series, "
                f"e.g. {result.series[:3]}); pass the frame the backtest ran on"
            )
        members = _ensemble_members(result, splits) if name == ENSEMBLE else [name]
        seen_test = seen_test_steps(spec)
        bundle = cls(
            model=name, freq=spec.freq, horizons=list(spec.horizons), levels=tuple(spec.levels),
            season_length=spec.season_length, horizon_steps=dict(spec.horizon_steps), max_steps=spec.max_steps,
            history_steps=spec.history_steps, members=list(members), model_params=dict(spec.model_params),
            local_models={}, global_models={}, contexts={}, ensemble_weights={}, last_ds={}, spec=spec,
            scale_factor=float(scale_factor),
        )
        seen: dict[str, dict[str, np.ndarray]] = {}
        for member in members:
            if _is_global(member) and member in result.models:
                bundle.global_models[member] = result.models[member]
        for split in splits:
            uid = split.unique_id
            y_seen = np.concatenate([split.train, split.test[:seen_test]])
            ds_seen = split.ds[: len(y_seen)]
            bundle.last_ds[uid] = ds_seen[-1]
            seen.setdefault(split_unique_id(uid)[0], {})[uid] = y_seen
            for member in members:
                if member in bundle.global_models:
                    bundle.contexts[uid] = y_seen[-bundle.history_steps:].copy()
                    continue
                fitted = result.models.get((member, uid))
                if fitted is None:  # the member failed on this series in the backtest
                    fitted, fitted_as = fit_local(FALLBACK_MODEL, {}, y_seen, ds_seen, spec.season_length)
                    bundle.fitted_as[(member, uid)] = fitted_as
                    log.info("champion %s: %s had fallen back on %s; keeping a %s there",
                             name, member, uid, fitted_as)
                bundle.local_models[(member, uid)] = fitted
            if name == ENSEMBLE:
                bundle.ensemble_weights[uid] = result.ensemble_weights[uid]
        bundle.profiles = {metric: MetricProfile.of(metric, values, unit) for metric, values in seen.items()}
        ids = set(bundle.last_ds)
        bundle.set_scores(result.per_series[result.per_series["unique_id"].isin(ids)])
        first = splits[0]
        tail = slice(len(first.train) + seen_test - EXAMPLE_ROWS, len(first.train) + seen_test)
        bundle.example = pd.DataFrame({
            "unique_id": first.unique_id, "ds": first.ds[tail],
            "y": np.concatenate([first.train, first.test])[tail],
        })
        bundle._eval_frame = frame[frame["unique_id"].astype(str).isin(ids)]
        return bundle

    def set_scores(self, per_series: pd.DataFrame) -> None:
        """Its mean MASE and criterion score from the per-series scores of its own series."""
        criterion = criterion_of(self.spec)
        self.mean_mase, self.score, self.criterion = float("nan"), float("nan"), criterion.label
        if not per_series.empty and self.model in set(per_series["model"]):
            board = leaderboard(per_series, self.spec.horizons, criterion)
            self.mean_mase = mean_mase(board, self.model)
            self.score = criterion.score(board, self.model)

    def score_value(self) -> float:
        """``score``, or ``mean_mase`` for a bundle pickled before it had a criterion score."""
        value = getattr(self, "score", float("nan"))
        return float(self.mean_mase if value != value else value)

    @property
    def series(self) -> list[str]:
        return sorted(self.last_ds)

    @property
    def step(self) -> pd.Timedelta:
        return to_timedelta(self.freq)

    def steps_for(self, horizons: str | Sequence[str] | None) -> int:
        """Steps needed for ``horizons`` (default: the ones it was trained for)."""
        if horizons is None:
            return self.max_steps
        return max(horizon_steps(h, self.freq) for h in parse_horizons(horizons))

    # ------------------------------------------------------------------ forecasting

    def forecast(self, history: pd.DataFrame, h_steps: int | None = None,
                 horizons: str | Sequence[str] | None = None, update_state: bool = False, *,
                 check_history: str = "raise", scale_factor: float | None = None) -> pd.DataFrame:
        """Forecast every series of ``history`` from its newest actual.

        Each known series is conditioned on the actuals of ``history`` newer than the last
        timestamp its model has seen (no refit); an unknown series gets a fresh fit of the
        same model class (or the fallback) on ``history``. Missing grid points among the new
        actuals are interpolated. Forecasts of a metric that was never negative in
        training are clipped at 0 (bounds included).

        Args:
            history: long frame ``unique_id, ds, y`` of recent actuals.
            h_steps: steps ahead; or ``horizons`` (``"5m,15m,30m"``): every step up to the
                longest one. Default: the horizons it was trained for.
            update_state: keep the conditioning (serve from it next time) instead of
                working on copies.
            check_history: ``raise`` (default): refuse history unlike the training data
                (see ``check``); ``warn``: log it and forecast anyway; ``off``.
            scale_factor: how many times off the training level history may be
                (default: the bundle's, 100).

        Returns:
            Forecast frame ``unique_id, cutoff, ds, step, model, yhat, yhat_lo_<L>, yhat_hi_<L>``.

        Raises:
            DataError: ``history`` is empty or not a long frame.
            HistoryMismatchError: ``history`` does not look like the training data.
            ConfigError: the horizons are longer than the ensemble was weighted for.
        """
        h = int(h_steps) if h_steps is not None else self.steps_for(horizons)
        if h < 1:
            raise ConfigError(f"h_steps must be at least 1, got {h_steps}")
        df = check_series_frame(history, "history")
        df = df[df["y"].notna()]
        if df.empty:
            raise DataError("history has no actuals; pass recent rows of unique_id, ds, y for the series to forecast")
        self.check(df, check_history, scale_factor)
        frames = []
        for uid, group in df.groupby("unique_id", sort=True):
            ds = pd.DatetimeIndex(group["ds"])
            y = group["y"].to_numpy("float64")
            if uid in self.last_ds:
                new = self._on_grid(uid, ds, y, self.last_ds[uid])
                fc = self._forecast_known(uid, new, h, update_state)
                cutoff = self.last_ds[uid] + len(new) * self.step
                if update_state:
                    self.last_ds[uid] = cutoff
                    if uid in self.contexts:
                        self.contexts[uid] = np.concatenate([self.contexts[uid], new])[-self.history_steps:]
            else:
                values = self._on_grid(uid, ds, y, ds[0] - self.step)
                fc, fitted = self._forecast_unknown(uid, values, ds[0], h)
                cutoff = ds[0] + (len(values) - 1) * self.step
                log.info("series %s is new to the %s champion: fitted %s on its %d values",
                         uid, self.model, fitted, len(values))
            frames.append(self._clipped(uid, self._frame(uid, cutoff, fc, h)))
        return pd.concat(frames, ignore_index=True)

    def refuse_unusable(self, history: pd.DataFrame, allow_new_series: bool = True,
                        max_gap_points: int = MAX_GAP_POINTS) -> pd.DataFrame:
        """Refuse history this model cannot be conditioned on; the one set of checks of every way to predict.

        Both the pyfunc model (``models:/…@champion``) and ``POST /foresight/predict`` call it,
        with the same messages: non-finite values, duplicate timestamps, unknown series (when
        ``allow_new_series`` is false), timestamps off the model's grid, a known series whose
        history does not follow on from the last actual the model has seen, a new series
        shorter than one season, and more than ``max_gap_points`` (or half the points sent,
        if more) missing among the new actuals.

        Returns:
            ``history`` as a checked long frame (UTC timestamps, sorted).

        Raises:
            HistoryRefused: naming the series and what is wrong.
        """
        df = check_series_frame(history, "history")
        if df.empty:
            raise HistoryRefused("history has no actuals; pass recent rows of unique_id, ds, y for the series to "
                                 "forecast")
        y = df["y"].to_numpy("float64")
        bad = ~np.isfinite(y)
        if bad.any():
            first = df[bad].iloc[0]
            raise HistoryRefused(f"non-finite values: {int(bad.sum())} row(s) of the history are NaN or infinite, "
                                 f"e.g. series {first['unique_id']!r} at {first['ds'].isoformat()}; send finite "
                                 "values only (leave a missing point out)")
        dup = df.duplicated(["unique_id", "ds"], keep=False)
        if dup.any():
            first = df[dup].iloc[0]
            raise HistoryRefused(f"duplicate timestamps: {int(dup.sum())} rows share a (unique_id, ds), e.g. series "
                                 f"{first['unique_id']!r} at {first['ds'].isoformat()}; send one value per series "
                                 "and timestamp")
        unknown = sorted(set(df["unique_id"]) - set(self.last_ds))
        if unknown and not allow_new_series:
            raise HistoryRefused(f"unknown series {unknown[:5]}{' …' if len(unknown) > 5 else ''}: the model was "
                                 f"trained on {len(self.last_ds)} series (e.g. {self.series[:3]}); set "
                                 "allow_new_series to fit them afresh on the history sent", status=404)
        step = self.step
        for uid, group in df.groupby("unique_id", sort=True):
            ds = pd.DatetimeIndex(group["ds"])
            known = uid in self.last_ds
            anchor = pd.Timestamp(self.last_ds[uid]) if known else pd.Timestamp(0, tz="UTC")
            offsets = (ds.as_unit("ns").asi8 - anchor.as_unit("ns").value) % step.value
            if offsets.any():
                bad_ds = ds[offsets != 0][0]
                raise HistoryRefused(f"timestamps off the model's {self.freq} grid: series {uid!r} has a row at "
                                     f"{bad_ds.isoformat()}; the grid is {anchor.isoformat()} + k × {self.freq}")
            first_new = pd.Timestamp(self.last_ds[uid]) + step if known else ds[0]
            newer = ds[ds >= first_new]
            if known:
                last = pd.Timestamp(self.last_ds[uid])
                if len(newer) and newer[0] > last + step:
                    missing = int((newer[0] - last) / step) - 1
                    raise HistoryRefused(f"too little history for series {uid!r}: the model has seen it up to "
                                         f"{last.isoformat()} and is conditioned on every actual since; the history "
                                         f"sent starts at {newer[0].isoformat()} ({missing} point(s) missing): send "
                                         f"the rows from {(last + step).isoformat()} on")
            elif len(ds) < self.season_length:
                raise HistoryRefused(f"too little history for new series {uid!r}: {len(ds)} point(s), a new series "
                                     f"needs at least {self.season_length} (one season of {self.freq} data)")
            if len(newer):
                points = int((newer[-1] - first_new) / step) + 1
                missing = points - len(newer)
                if missing > max(int(max_gap_points), len(newer)):
                    raise HistoryRefused(f"the history of series {uid!r} has gaps: {missing} of the {points} "
                                         f"{self.freq} points from {first_new.isoformat()} to "
                                         f"{newer[-1].isoformat()} are missing; send the actuals in between")
        return df

    def profile_for(self, unique_id: str) -> MetricProfile | None:
        """The training profile a series is held against: its metric's, else the only one there is."""
        profiles = getattr(self, "profiles", None) or {}
        metric = split_unique_id(str(unique_id))[0]
        if metric in profiles:
            return profiles[metric]
        return next(iter(profiles.values())) if len(profiles) == 1 else None

    def check(self, history: pd.DataFrame, mode: str = "raise", scale_factor: float | None = None) -> dict[str, list]:
        """Hold each series of ``history`` against the training data of the metric it is forecast as.

        Off: a median ``scale_factor`` times above the training's 99th percentile, or every
        value ``scale_factor`` squared times below its quietest series' median (an idle series may
        sit far below its usual level; all zeros passes), a rise like a counter over 24+
        points for a gauge model, negative values for a metric never negative in training.

        Returns:
            unique_id -> what is off, for the series that do not match (``warn`` mode).

        Raises:
            HistoryMismatchError: some series does not match and ``mode`` is ``raise``.
            ConfigError: ``mode`` is not one of ``raise``, ``warn``, ``off``.
        """
        if mode not in CHECK_MODES:
            raise ConfigError(f"check_history must be one of {list(CHECK_MODES)}, got {mode!r}")
        factor = float(scale_factor or getattr(self, "scale_factor", DEFAULT_SCALE_FACTOR))
        if factor <= 1:
            raise ConfigError(f"the history scale factor must be above 1, got {scale_factor}")
        if mode == "off":
            return {}
        found, lines = {}, []
        for uid, group in history.groupby("unique_id", sort=True):
            profile, given = self.profile_for(uid), split_unique_id(uid)[0]
            problems = profile.problems(uid, group["y"].to_numpy("float64"), factor) if profile else []
            if not problems:
                continue
            found[uid] = problems
            other = f", a series of {given}," if given != profile.metric and "/" in uid else ""
            unit = f" ({profile.unit})" if profile.unit else ""
            lines.append(f"History of series {uid!r}{other} does not look like {profile.metric}{unit}, the metric "
                         f"this {self.model} champion was trained for: {'; '.join(problems)}.")
        if not found:
            return {}
        if mode == "raise":
            more = f" (and {len(lines) - 3} more series)" if len(lines) > 3 else ""
            raise HistoryMismatchError(
                f"{' '.join(lines[:3])}{more} Pass recent history of the metric this model was trained for, or "
                "predict with params={'check_history': 'warn'} to forecast anyway")
        for line in lines:
            log.warning("%s Forecasting anyway (check_history=warn)", line)
        return found

    def _clipped(self, uid: str, frame: pd.DataFrame) -> pd.DataFrame:
        """Forecasts of a metric never negative in training, with every value at least 0."""
        profile = self.profile_for(uid)
        if profile is not None and profile.nonnegative:
            columns = [c for c in frame.columns if c == "yhat" or c.startswith(("yhat_lo_", "yhat_hi_"))]
            frame[columns] = frame[columns].clip(lower=0.0)
        return frame

    def _on_grid(self, uid: str, ds: pd.DatetimeIndex, y: np.ndarray, anchor: pd.Timestamp) -> np.ndarray:
        """Values at anchor + k steps (k = 1..K), averaged onto the grid, gaps interpolated."""
        step_ns = self.step.value
        k = np.rint((ds.as_unit("ns").asi8 - pd.Timestamp(anchor).as_unit("ns").value) / step_ns).astype("int64")
        keep = k >= 1
        if not keep.any():
            return np.empty(0)
        values = pd.Series(y[keep]).groupby(k[keep]).mean()
        full = values.reindex(range(1, int(values.index.max()) + 1))
        missing = int(full.isna().sum())
        if missing:
            log.warning("series %s: %d missing point(s) among the new actuals, interpolated", uid, missing)
            full = full.interpolate(limit_direction="both")
        return full.to_numpy("float64")

    def _check_ensemble_steps(self, uid: str, h: int) -> int:
        weighted = self.ensemble_weights[uid].weights.shape[0] if uid in self.ensemble_weights else self.max_steps
        if h > weighted:
            raise ConfigError(
                f"the ensemble champion was weighted for up to {weighted} steps ({self.horizons[-1]}); "
                "ask for shorter horizons or train with longer ones"
            )
        return weighted

    def _member_predict(self, member: str, uid: str, new: np.ndarray, h: int, update_state: bool) -> Forecast:
        key = (member, uid)
        if key in self.local_models:
            model = self.local_models[key]
            if new.size:
                if not update_state:
                    model = copy.deepcopy(model)
                model.update(new)
            return model.predict(h, self.levels)
        context = np.concatenate([self.contexts[uid], new])
        model = self.global_models[member]
        stamps = _stamps(model, len(context), self.last_ds[uid] + len(new) * self.step, self.step)
        return model.predict_from(context, h, self.levels, **({"ds": stamps[0]} if stamps else {}))

    def _forecast_known(self, uid: str, new: np.ndarray, h: int, update_state: bool) -> Forecast:
        if self.model != ENSEMBLE:
            return self._member_predict(self.model, uid, new, h, update_state)
        weighted = self._check_ensemble_steps(uid, h)
        by_member = {m: _as_origins(self._member_predict(m, uid, new, weighted, update_state)) for m in self.members}
        combined = self.ensemble_weights[uid].combine(by_member, self.levels)
        return {k: v[0, :h] for k, v in combined.items()}

    def _fresh_member(self, member: str, y: np.ndarray, first_ds: pd.Timestamp, h: int) -> tuple[Forecast, str]:
        ds = pd.date_range(first_ds, periods=len(y), freq=self.step)
        if member in self.global_models:
            try:
                model = self.global_models[member]
                stamps = {"ds": ds} if getattr(type(model), "needs_timestamps", False) else {}
                return model.predict_from(y, h, self.levels, **stamps), member
            except Exception as exc:  # noqa: BLE001 - too short a context falls back
                log.warning("global model %s cannot forecast from %d values (%s); using the fallback",
                            member, len(y), exc)
                member = FALLBACK_MODEL
        model, fitted = fit_local(member, self.model_params.get(member, {}), y, ds, self.season_length)
        return model.predict(h, self.levels), fitted

    def _forecast_unknown(self, uid: str, y: np.ndarray, first_ds: pd.Timestamp, h: int) -> tuple[Forecast, str]:
        if self.model != ENSEMBLE:
            return self._fresh_member(self.model, y, first_ds, h)
        self._check_ensemble_steps(uid, h)
        results = {m: self._fresh_member(m, y, first_ds, h) for m in self.members}
        by_member = {m: _as_origins(fc) for m, (fc, _) in results.items()}
        ens = _equal_weights(self.members, by_member, self.levels, h)
        combined = ens.combine(by_member, self.levels)
        return {k: v[0] for k, v in combined.items()}, "+".join(fitted for _, fitted in results.values())

    def _frame(self, uid: str, cutoff: pd.Timestamp, fc: Forecast, h: int) -> pd.DataFrame:
        steps = np.arange(1, h + 1)
        data = {
            "unique_id": uid, "cutoff": cutoff, "ds": cutoff + steps * self.step, "step": steps,
            "model": self.model, "yhat": np.asarray(fc["mean"], dtype="float64")[:h],
        }
        for level in self.levels:
            data[f"yhat_lo_{level}"] = np.asarray(fc[f"lo-{level}"], dtype="float64")[:h]
            data[f"yhat_hi_{level}"] = np.asarray(fc[f"hi-{level}"], dtype="float64")[:h]
        out = pd.DataFrame(data)
        out["cutoff"] = pd.to_datetime(out["cutoff"], utc=True).astype("datetime64[ns, UTC]")
        out["ds"] = pd.to_datetime(out["ds"], utc=True).astype("datetime64[ns, UTC]")
        out["step"] = out["step"].astype("int64")
        return out

    # ------------------------------------------------------------------ scoring

    def backtest_on(self, frame: pd.DataFrame, spec: BacktestSpec) -> pd.DataFrame:
        """This champion's forecasts over a (newer) backtest's held-out day, with actuals.

        Same protocol as the backtest: origins every stride across the held-out day, each
        conditioned on the actuals up to its cutoff, no refit. A series whose model has
        already seen part of that day, lies too far back, or is unknown is fitted afresh on
        the training part (same model class), like the new models were.

        Raises:
            ConfigError: ``spec`` uses another frequency or other interval levels.
            DataError: no series of ``frame`` can be backtested.
        """
        if to_timedelta(spec.freq) != self.step:
            raise ConfigError(
                f"the champion forecasts at {self.freq} but the backtest runs at {spec.freq}; "
                "they cannot be compared on the same backtest"
            )
        if not set(spec.levels) <= set(self.levels):
            raise ConfigError(f"the champion has intervals {self.levels}, the backtest asks for {spec.levels}")
        splits, skipped = split_series(frame, spec)
        if not splits:
            reasons = "; ".join(f"{s['unique_id']}: {s['reason']}" for s in skipped[:5])
            raise DataError(f"no series of the frame can be backtested: {reasons}")
        forecasts, refitted = {}, []
        for split in splits:
            fc, conditioned = self._origins_forecast(split, spec)
            forecasts[(self.model, split.unique_id)] = fc
            if not conditioned:
                refitted.append(split.unique_id)
        if refitted:
            log.info("champion %s: %d of %d series fitted afresh on the training part (unknown, stale or already "
                     "past the held-out start), e.g. %s", self.model, len(refitted), len(splits), refitted[:3])
        return forecast_frame(forecasts, splits, spec.origins, spec.max_steps, spec.levels, [self.model],
                         self.step, True)

    def score_on(self, frame: pd.DataFrame, spec: BacktestSpec) -> float:
        """This champion's score under ``spec``'s criterion (the new run's rule) on ``frame``'s backtest."""
        forecasts = self.backtest_on(frame, spec)
        splits, _ = split_series(frame, spec)
        scales, _ = mase_scales({s.unique_id: s.train for s in splits}, spec.season_length)  # as the backtest's
        per_series = evaluate(forecasts, scales, spec.horizon_steps, spec.levels)
        criterion = criterion_of(spec)
        return criterion.score(leaderboard(per_series, spec.horizons, criterion), self.model)

    def _gap(self, split: SeriesSplit) -> np.ndarray | None:
        """Training values after ``last_ds``, when the model can be conditioned on them."""
        last = self.last_ds.get(split.unique_id)
        if last is None:
            return None
        n_train = len(split.train)
        offset = (last - split.ds[0]) / self.step
        if offset != int(offset) or offset < -1 or offset >= n_train:
            return None  # off the grid, older than the window or already past the held-out start
        return split.train[int(offset) + 1:]

    def _origins_forecast(self, split: SeriesSplit, spec: BacktestSpec) -> tuple[Forecast, bool]:
        gap = self._gap(split)
        h = spec.max_steps
        if self.model == ENSEMBLE:
            weighted = self._check_ensemble_steps(split.unique_id, h)
            by_member = {m: self._member_origins(m, split, spec, gap, weighted) for m in self.members}
            if split.unique_id in self.ensemble_weights:  # validation-day weights never see the test day
                ens = self.ensemble_weights[split.unique_id]
            else:
                ens = _equal_weights(self.members, by_member, self.levels, weighted)
            combined = ens.combine(by_member, self.levels)
            return {k: v[:, :h] for k, v in combined.items()}, gap is not None
        return self._member_origins(self.model, split, spec, gap, h), gap is not None

    def _member_origins(self, member: str, split: SeriesSplit, spec: BacktestSpec,
                        gap: np.ndarray | None, h: int) -> Forecast:
        origins, uid = spec.origins, split.unique_id
        if member in self.global_models:
            history = np.concatenate([self.contexts[uid], gap]) if gap is not None else split.train
            model = self.global_models[member]  # the history ends with the training part, whatever its start
            stamps = _stamps(model, len(history), split.ds[len(split.train) - 1], self.step)
            return model.forecast_origins_many([history], [split.test], origins, h, self.levels,
                                               **({"ds": stamps} if stamps else {}))[0]
        if gap is not None:
            model = copy.deepcopy(self.local_models[(member, uid)])
            if gap.size:
                model.update(gap)
        else:
            params = self.model_params.get(member, {})
            model, _ = fit_local(member, params, split.train, split.ds[: len(split.train)], spec.season_length)
        return model.forecast_origins(split.test, origins, h, self.levels)


def _stamps(model: GlobalForecaster, n: int, last: pd.Timestamp, step: pd.Timedelta) -> list | None:
    """``[timestamps]`` of ``n`` values ending at ``last``, for a global model that reads them, else None."""
    if not getattr(type(model), "needs_timestamps", False):
        return None
    return [pd.date_range(end=last, periods=n, freq=step)]


def _as_origins(fc: Forecast) -> Forecast:
    """(h,) arrays as (1, h), the shape ``EnsembleWeights.combine`` takes."""
    return {k: np.atleast_2d(np.asarray(v, dtype="float64")) for k, v in fc.items()}


def _equal_weights(
    members: list[str], by_member: dict[str, Forecast], levels: Sequence[int], h: int
) -> EnsembleWeights:
    """Equal weights and the widest member's half-widths: the ensemble of a series with no validation day."""
    half_widths = {
        level: np.max([(by_member[m][f"hi-{level}"][0, :h] - by_member[m][f"lo-{level}"][0, :h]) / 2
                       for m in members], axis=0)
        for level in levels
    }
    return EnsembleWeights(list(members), np.full((h, len(members)), 1.0 / len(members)), half_widths)

