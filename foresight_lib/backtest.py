"""The backtest runner: the evaluation protocol of DESIGN.md, for every model.

Per series the last ``test_days`` are held out and each model is fitted once on the
``history_days`` before them. From a cutoff every ``stride`` across the held-out
part it forecasts 1..H steps, conditioned on the actuals up to the cutoff, with no
refit. Local models run in parallel across series (one process per core); global
models (the LSTM) are fitted once across all series. A model that fails on a series
is replaced there by the fallback model, and the report counts it.

The ensemble needs errors that the test day has not seen: the base models are also
fitted on the history minus its last day and forecast that day with the same
protocol; those errors set the ensemble's weights and interval widths per step.
"""
from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context

import numpy as np
import pandas as pd

from foresight_lib.errors import ConfigError, DataError
from foresight_lib.frames import LEVELS, check_series_frame
from foresight_lib.horizons import horizon_steps, parse_horizons, season_length, to_timedelta
from foresight_lib.metrics import champion, evaluate, leaderboard, seasonal_naive_scale
from foresight_lib.models import ENSEMBLE, FALLBACK_MODEL, check_model_names, make_model, model_class
from foresight_lib.models.base import Forecast, GlobalForecaster

log = logging.getLogger(__name__)

MIN_TRAIN_SEASONS = 2.0
"""Least history, in seasons (days), a series needs before its held-out part."""


@dataclass
class BacktestSpec:
    """What to backtest and how; defaults are DESIGN.md's evaluation protocol."""

    models: list[str]
    freq: str = "5min"
    horizons: list[str] = field(default_factory=lambda: ["5m", "15m", "30m"])
    test_days: float = 1.0
    history_days: float = 14.0
    stride: str = "30m"
    season: str = "1d"
    levels: tuple[int, ...] = LEVELS
    n_jobs: int = 0
    """Worker processes for local models; 0 = one per core, 1 = in this process."""
    model_params: dict[str, dict] = field(default_factory=dict)
    future: bool = False
    """Also forecast H steps after the end of the data (the live forecast)."""
    keep_models: bool = False
    """Return the fitted models (updated to the end of the data)."""

    def __post_init__(self) -> None:
        self.models = check_model_names(list(self.models))
        self.horizons = parse_horizons(self.horizons)
        self.season_length = season_length(self.freq, self.season)
        self.horizon_steps = {h: horizon_steps(h, self.freq) for h in self.horizons}
        self.max_steps = max(self.horizon_steps.values())
        self.stride_steps = horizon_steps(self.stride, self.freq)
        self.test_steps = _days_to_steps(self.test_days, self.season_length, "test_days")
        self.history_steps = _days_to_steps(self.history_days, self.season_length, "history_days")
        if self.max_steps > self.test_steps:
            raise ConfigError(
                f"the longest horizon ({self.horizons[-1]}) is longer than the held-out part "
                f"({self.test_days} day(s)); raise test_days or shorten the horizons"
            )
        if self.models == [ENSEMBLE]:
            raise ConfigError("the ensemble combines other models; name at least one more model")

    @property
    def base_models(self) -> list[str]:
        return [m for m in self.models if m != ENSEMBLE]

    @property
    def origins(self) -> list[int]:
        """Counts of held-out actuals known at each cutoff."""
        return list(range(0, self.test_steps - self.max_steps + 1, self.stride_steps))


def _days_to_steps(days: float, steps_per_day: int, name: str) -> int:
    steps = int(round(days * steps_per_day))
    if steps < 1:
        raise ConfigError(f"{name} must be positive, got {days}")
    return steps


@dataclass
class SeriesSplit:
    """One series cut for the protocol: training values and the held-out values after them."""

    unique_id: str
    ds: pd.DatetimeIndex
    """Timestamps of train + test (regular)."""
    train: np.ndarray
    test: np.ndarray


@dataclass
class BacktestResult:
    """Forecasts, scores and bookkeeping of one backtest."""

    forecasts: pd.DataFrame
    per_series: pd.DataFrame
    leaderboard: pd.DataFrame
    champion: str
    series: list[str]
    skipped: list[dict]
    fallbacks: list[dict]
    fit_seconds: dict[str, float]
    predict_seconds: dict[str, float]
    seconds: float
    spec: BacktestSpec
    future_forecasts: pd.DataFrame | None = None
    models: dict = field(default_factory=dict)
    """(model, unique_id) -> fitted local model, and model -> fitted global model."""
    ensemble_weights: dict = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)
    """MASE scale per series: in-sample MAE of the one-day seasonal naive on the training part."""

    def report(self) -> dict:
        """The JSON report: leaderboard rows, champion, series, timings, skips, fallbacks."""
        return {
            "champion": self.champion,
            "leaderboard": self.leaderboard.to_dict(orient="records"),
            "series": len(self.series),
            "series_ids": self.series,
            "seconds": round(self.seconds, 3),
            "fit_seconds": {k: round(v, 3) for k, v in self.fit_seconds.items()},
            "predict_seconds": {k: round(v, 3) for k, v in self.predict_seconds.items()},
            "skipped": self.skipped,
            "fallbacks": self.fallbacks,
            "fallback_counts": _count_by(self.fallbacks, "model"),
            "protocol": {
                "freq": self.spec.freq, "horizons": self.spec.horizons,
                "test_days": self.spec.test_days, "history_days": self.spec.history_days,
                "stride": self.spec.stride, "season_length": self.spec.season_length,
                "cutoffs_per_series": len(self.spec.origins), "models": self.spec.models,
            },
        }


def _count_by(rows: list[dict], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[key]] = counts.get(row[key], 0) + 1
    return counts


def split_series(df: pd.DataFrame, spec: BacktestSpec) -> tuple[list[SeriesSplit], list[dict]]:
    """Cut every series of a regular long frame; too short or gappy ones are skipped with a reason."""
    df = check_series_frame(df)
    step = to_timedelta(spec.freq)
    min_seasons = max([MIN_TRAIN_SEASONS] + [_min_seasons(m) for m in spec.base_models])
    min_train = int(np.ceil(min_seasons * spec.season_length))
    splits, skipped = [], []
    for uid, group in df.groupby("unique_id", sort=True):
        ds = pd.DatetimeIndex(group["ds"])
        y = group["y"].to_numpy("float64")
        if ds.has_duplicates:
            skipped.append({"unique_id": uid, "reason": "duplicate timestamps; run the features step first"})
            continue
        if len(ds) > 1 and not (np.diff(ds.asi8) == step.value).all():
            skipped.append({
                "unique_id": uid,
                "reason": f"not on a regular {spec.freq} grid; resample it (features step) before the backtest",
            })
            continue
        n_test = spec.test_steps
        n_train = min(len(y) - n_test, spec.history_steps)
        if n_train < min_train:
            skipped.append({
                "unique_id": uid,
                "reason": (
                    f"too short: {len(y)} values, needs {n_test} held out + at least {min_train} of history "
                    f"({min_seasons:g} day(s) at {spec.freq}); give it more history or lower test_days"
                ),
            })
            continue
        window = slice(len(y) - n_test - n_train, len(y))
        y_window, ds_window = y[window], ds[window]
        if np.isnan(y_window).any():
            missing = int(np.isnan(y_window).sum())
            skipped.append({
                "unique_id": uid,
                "reason": f"{missing} missing value(s) left after gap filling in the backtest window",
            })
            continue
        splits.append(SeriesSplit(uid, ds_window, y_window[:n_train], y_window[n_train:]))
    return splits, skipped


def _min_seasons(model: str) -> float:
    return float(getattr(model_class(model), "min_seasons", 0.0))


# ---------------------------------------------------------------------------
# Local models, one series at a time (runs in worker processes)


@dataclass
class _LocalTask:
    splits: list[SeriesSplit]
    models: list[str]
    origins: list[int]
    h: int
    levels: tuple[int, ...]
    season_length: int
    model_params: dict[str, dict]
    keep_models: bool


@dataclass
class _LocalOutcome:
    forecasts: dict[tuple[str, str], Forecast]
    fit_seconds: dict[str, float]
    predict_seconds: dict[str, float]
    fallbacks: list[dict]
    models: dict


def _run_local(task: _LocalTask) -> _LocalOutcome:
    """Fit and forecast every local model on every series of ``task``."""
    _limit_threads()
    out = _LocalOutcome({}, {}, {}, [], {})
    for split in task.splits:
        for name in task.models:
            forecast, model, seconds = _fit_forecast(name, split, task, out)
            out.forecasts[(name, split.unique_id)] = forecast
            if task.keep_models and model is not None:
                out.models[(name, split.unique_id)] = model
            out.fit_seconds[name] = out.fit_seconds.get(name, 0.0) + seconds[0]
            out.predict_seconds[name] = out.predict_seconds.get(name, 0.0) + seconds[1]
    return out


def _fit_forecast(name: str, split: SeriesSplit, task: _LocalTask, out: _LocalOutcome):
    """One model on one series; on failure the fallback's forecast, recorded in ``out``."""
    train_ds = split.ds[: len(split.train)]
    t0 = time.perf_counter()
    try:
        with np.errstate(all="ignore"):
            model = make_model(name, **task.model_params.get(name, {}))
            model.fit(split.train, task.season_length, ds=train_ds)
            t1 = time.perf_counter()
            forecast = model.forecast_origins(split.test, task.origins, task.h, task.levels)
        _check_forecast(forecast, len(task.origins), task.h)
        return forecast, model, (t1 - t0, time.perf_counter() - t1)
    except Exception as exc:  # noqa: BLE001 - any model failure falls back, and is reported
        elapsed = time.perf_counter() - t0
        reason = f"{type(exc).__name__}: {exc}".strip()[:500]
        log.warning("model %s failed on %s (%s); using %s", name, split.unique_id, reason, FALLBACK_MODEL)
        log.debug("%s", traceback.format_exc())
        out.fallbacks.append({"model": name, "unique_id": split.unique_id, "error": reason})
        fallback = _fallback_forecast(split, task.season_length, task.origins, task.h, task.levels)
        return fallback, None, (elapsed, 0.0)


def _fallback_forecast(split: SeriesSplit, m: int, origins, h, levels) -> Forecast:
    name = FALLBACK_MODEL if len(split.train) > m else "naive"
    model = make_model(name).fit(split.train, m)
    return model.forecast_origins(split.test, origins, h, levels)


def _check_forecast(forecast: Forecast, n_origins: int, h: int) -> None:
    for key, values in forecast.items():
        if values.shape != (n_origins, h):
            raise ValueError(f"forecast '{key}' has shape {values.shape}, expected {(n_origins, h)}")
        if not np.isfinite(values).all():
            raise ValueError(f"forecast '{key}' has non-finite values")


def _limit_threads() -> None:
    """One BLAS/OpenMP/torch thread per worker: the workers already fill the cores."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass


def _n_workers(n_jobs: int, n_series: int) -> int:
    cores = os.cpu_count() or 1
    workers = cores if n_jobs <= 0 else n_jobs
    return max(1, min(workers, n_series))


def _run_local_models(
    splits: list[SeriesSplit], models: list[str], origins: list[int], spec: BacktestSpec,
    progress: Callable[[int], None] | None,
) -> _LocalOutcome:
    total = _LocalOutcome({}, {}, {}, [], {})
    if not models or not splits:
        return total
    make_task = lambda chunk: _LocalTask(  # noqa: E731
        chunk, models, origins, spec.max_steps, spec.levels, spec.season_length,
        spec.model_params, spec.keep_models,
    )
    workers = _n_workers(spec.n_jobs, len(splits))
    if workers == 1:
        outcomes = []
        for split in splits:
            outcomes.append(_run_local(make_task([split])))
            if progress:
                progress(1)
    else:
        chunks = [[s] for s in splits]
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            outcomes = []
            for outcome in pool.map(_run_local, [make_task(c) for c in chunks]):
                outcomes.append(outcome)
                if progress:
                    progress(1)
    for outcome in outcomes:
        _merge_outcome(total, outcome)
    return total


def _run_global_model(
    name: str, splits: list[SeriesSplit], origins: list[int], spec: BacktestSpec, total: _LocalOutcome
) -> None:
    """Fit a global model on all series at once and forecast them; fall back per series on failure."""
    t0 = time.perf_counter()
    try:
        model = make_model(name, **spec.model_params.get(name, {}))
        model.fit_many([s.train for s in splits], spec.season_length)
        t1 = time.perf_counter()
        results = model.forecast_origins_many(
            [s.train for s in splits], [s.test for s in splits], origins, spec.max_steps, spec.levels
        )
        for split, forecast in zip(splits, results, strict=True):
            _check_forecast(forecast, len(origins), spec.max_steps)
            total.forecasts[(name, split.unique_id)] = forecast
        total.fit_seconds[name] = total.fit_seconds.get(name, 0.0) + (t1 - t0)
        total.predict_seconds[name] = total.predict_seconds.get(name, 0.0) + (time.perf_counter() - t1)
        if spec.keep_models:
            total.models[name] = model
    except Exception as exc:  # noqa: BLE001 - a failed global model falls back on every series
        reason = f"{type(exc).__name__}: {exc}".strip()[:500]
        log.warning("global model %s failed (%s); using %s on every series", name, reason, FALLBACK_MODEL)
        total.fit_seconds[name] = total.fit_seconds.get(name, 0.0) + (time.perf_counter() - t0)
        for split in splits:
            total.fallbacks.append({"model": name, "unique_id": split.unique_id, "error": reason})
            total.forecasts[(name, split.unique_id)] = _fallback_forecast(
                split, spec.season_length, origins, spec.max_steps, spec.levels
            )


def _forecast_all(
    splits: list[SeriesSplit], spec: BacktestSpec, origins: list[int],
    progress: Callable[[int], None] | None = None,
) -> _LocalOutcome:
    local = [m for m in spec.base_models if not issubclass(model_class(m), GlobalForecaster)]
    global_ = [m for m in spec.base_models if issubclass(model_class(m), GlobalForecaster)]
    total = _run_local_models(splits, local, origins, spec, progress)
    for name in global_:
        _run_global_model(name, splits, origins, spec, total)
    return total


# ---------------------------------------------------------------------------
# Ensemble


@dataclass
class EnsembleWeights:
    """Per step: the weight of each base model and the interval half-widths."""

    models: list[str]
    weights: np.ndarray
    """Shape (h, n_models), rows sum to 1."""
    half_widths: dict[int, np.ndarray]
    """Level -> shape (h,) half-width from the validation errors."""

    def combine(self, forecasts: dict[str, Forecast], levels: Sequence[int]) -> Forecast:
        stacked = np.stack([forecasts[m]["mean"] for m in self.models], axis=-1)
        mean = np.einsum("ohm,hm->oh", stacked, self.weights)
        out: Forecast = {"mean": mean}
        for level in levels:
            out[f"lo-{level}"] = mean - self.half_widths[level]
            out[f"hi-{level}"] = mean + self.half_widths[level]
        return out


TOP_MODELS = 3


def fit_ensemble_weights(
    val_forecasts: dict[str, Forecast], y_val: np.ndarray, origins: Sequence[int], h: int,
    levels: Sequence[int],
) -> EnsembleWeights:
    """Inverse-squared-MAE weights of the best ``TOP_MODELS`` models per step, and
    split-conformal interval half-widths from the combined validation errors."""
    models = list(val_forecasts)
    actual = _actuals_matrix(y_val, origins, h)
    mae_by_model = np.stack(
        [np.mean(np.abs(val_forecasts[m]["mean"] - actual), axis=0) for m in models], axis=-1
    )  # (h, n_models)
    weights = np.zeros_like(mae_by_model)
    for step in range(h):
        order = np.argsort(mae_by_model[step])[:TOP_MODELS]
        inv = 1.0 / np.maximum(mae_by_model[step, order], 1e-12) ** 2
        weights[step, order] = inv / inv.sum()
    ens = EnsembleWeights(models, weights, {})
    combined = np.einsum(
        "ohm,hm->oh", np.stack([val_forecasts[m]["mean"] for m in models], axis=-1), weights
    )
    abs_err = np.abs(actual - combined)
    n = abs_err.shape[0]
    for level in levels:
        # finite-sample conformal quantile
        q = min(1.0, np.ceil((n + 1) * level / 100.0) / n)
        ens.half_widths[level] = np.quantile(abs_err, q, axis=0, method="higher")
    return ens


def _actuals_matrix(y_future: np.ndarray, origins: Sequence[int], h: int) -> np.ndarray:
    return np.stack([y_future[o : o + h] for o in origins])


def _validation_splits(splits: list[SeriesSplit], spec: BacktestSpec) -> tuple[list[SeriesSplit], list[int]]:
    """The last day of each training part, held out the same way the test day is."""
    val_steps = spec.season_length
    val_origins = list(range(0, val_steps - spec.max_steps + 1, spec.stride_steps))
    min_train = int(np.ceil(MIN_TRAIN_SEASONS * spec.season_length))
    val_splits = [
        SeriesSplit(s.unique_id, s.ds[: len(s.train)], s.train[:-val_steps], s.train[-val_steps:])
        for s in splits
        if len(s.train) - val_steps >= min_train
    ]
    return val_splits, val_origins


def _ensemble_forecasts(
    splits: list[SeriesSplit], spec: BacktestSpec, test_forecasts: dict, val_forecasts: dict,
) -> dict[str, EnsembleWeights]:
    """Validation-day weights per series, then the ensemble's forecasts into ``test_forecasts``."""
    _, val_origins = _validation_splits(splits, spec)
    val_steps = spec.season_length
    weights: dict[str, EnsembleWeights] = {}
    bases = spec.base_models
    for split in splits:
        uid = split.unique_id
        if all((m, uid) in val_forecasts for m in bases):
            val_fc = {m: val_forecasts[(m, uid)] for m in bases}
            ens = fit_ensemble_weights(val_fc, split.train[-val_steps:], val_origins, spec.max_steps, spec.levels)
        else:  # too short to validate: equal weights, widths from the widest member
            ens = EnsembleWeights(bases, np.full((spec.max_steps, len(bases)), 1.0 / len(bases)), {})
            for level in spec.levels:
                ens.half_widths[level] = np.max(
                    [(test_forecasts[(m, uid)][f"hi-{level}"][0] - test_forecasts[(m, uid)][f"lo-{level}"][0]) / 2
                     for m in bases], axis=0,
                )
        weights[uid] = ens
        test_forecasts[(ENSEMBLE, uid)] = ens.combine({m: test_forecasts[(m, uid)] for m in bases}, spec.levels)
    return weights


def _spec_fields(spec: BacktestSpec) -> dict:
    return {
        "models": spec.models, "freq": spec.freq, "horizons": spec.horizons,
        "test_days": spec.test_days, "history_days": spec.history_days, "stride": spec.stride,
        "season": spec.season, "levels": spec.levels, "n_jobs": spec.n_jobs,
        "model_params": spec.model_params, "future": spec.future, "keep_models": spec.keep_models,
    }


# ---------------------------------------------------------------------------
# Assembly


def forecast_frame(
    forecasts: dict[tuple[str, str], Forecast], splits: list[SeriesSplit], origins: list[int],
    h: int, levels: Sequence[int], models: list[str], freq: pd.Timedelta, with_actuals: bool,
) -> pd.DataFrame:
    """Long forecast frame (``unique_id, cutoff, ds, step, model, yhat, yhat_lo_80…``)."""
    frames = []
    steps = np.arange(1, h + 1)
    for split in splits:
        n_train = len(split.train)
        last_known = np.array([n_train + o - 1 for o in origins])
        start_ns = split.ds.as_unit("ns").asi8[0]
        cutoff = np.repeat(start_ns + last_known * freq.value, h)
        ds = cutoff + np.tile(steps, len(origins)) * freq.value
        target_idx = (np.array(origins)[:, None] + steps[None, :] - 1).ravel()
        for model in models:
            fc = forecasts[(model, split.unique_id)]
            data = {
                "unique_id": split.unique_id, "cutoff": cutoff, "ds": ds,
                "step": np.tile(steps, len(origins)), "model": model, "yhat": fc["mean"].ravel(),
            }
            for level in levels:
                data[f"yhat_lo_{level}"] = fc[f"lo-{level}"].ravel()
                data[f"yhat_hi_{level}"] = fc[f"hi-{level}"].ravel()
            if with_actuals:
                data["y"] = split.test[target_idx]
            frames.append(pd.DataFrame(data))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    for col in ("cutoff", "ds"):
        out[col] = pd.to_datetime(out[col], unit="ns", utc=True)
    out["step"] = out["step"].astype("int64")
    return out


@dataclass
class BacktestPart:
    """The forecasts of some of the models: what one mapped training task produces.

    Parts of the same frame and spec are merged by ``finish_backtest``; a part pickles
    (arrays and fitted models), so a DAG task can store it for the evaluate step.
    """

    models: list[str]
    splits: list[SeriesSplit]
    skipped: list[dict]
    outcome: _LocalOutcome
    validation: _LocalOutcome | None
    seconds: float


def backtest_part(
    df: pd.DataFrame, spec: BacktestSpec, models: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None, on_start: Callable[[int], None] | None = None,
) -> BacktestPart:
    """Fit and forecast ``models`` (default: every base model of ``spec``) on every series.

    When ``spec`` includes the ensemble, the models also forecast each series' validation
    day (the last day of its training part), which sets the ensemble's weights.

    Raises:
        DataError: no series is long and regular enough (the reasons per series are listed).
    """
    started = time.perf_counter()
    models = [m for m in (models or spec.base_models) if m != ENSEMBLE]
    check_model_names(models)
    splits, skipped = split_series(df, spec)
    if not splits:
        reasons = "; ".join(f"{s['unique_id']}: {s['reason']}" for s in skipped[:5])
        raise DataError(f"no series can be backtested ({len(skipped)} skipped): {reasons}")
    for row in skipped:
        log.warning("skipping series %s: %s", row["unique_id"], row["reason"])
    if on_start:
        on_start(len(splits))
    part_spec = BacktestSpec(**{**_spec_fields(spec), "models": models})
    origins = spec.origins + ([spec.test_steps] if spec.future else [])
    outcome = _forecast_all(splits, part_spec, origins, progress)
    validation = None
    if ENSEMBLE in spec.models:
        val_splits, val_origins = _validation_splits(splits, spec)
        val_spec = BacktestSpec(**{**_spec_fields(part_spec), "keep_models": False, "future": False})
        validation = _forecast_all(val_splits, val_spec, val_origins)
    return BacktestPart(models, splits, skipped, outcome, validation, time.perf_counter() - started)


def finish_backtest(parts: Sequence[BacktestPart], spec: BacktestSpec) -> BacktestResult:
    """Merge parts, add the ensemble, score every model and rank them."""
    started = time.perf_counter()
    splits = parts[0].splits
    ids = [s.unique_id for s in splits]
    total = _LocalOutcome({}, {}, {}, [], {})
    val = _LocalOutcome({}, {}, {}, [], {})
    for part in parts:
        if [s.unique_id for s in part.splits] != ids:
            raise ConfigError("backtest parts cover different series; run every part on the same frame and spec")
        _merge_outcome(total, part.outcome)
        if part.validation is not None:
            _merge_outcome(val, part.validation)
    missing = [m for m in spec.base_models if (m, ids[0]) not in total.forecasts]
    if missing:
        raise ConfigError(f"no forecasts for model(s) {missing}; run their training before the evaluation")

    ensemble_weights: dict = {}
    if ENSEMBLE in spec.models:
        t0 = time.perf_counter()
        ensemble_weights = _ensemble_forecasts(splits, spec, total.forecasts, val.forecasts)
        for name, seconds in val.fit_seconds.items():
            total.fit_seconds[f"{name}@validation"] = seconds
        total.fit_seconds[ENSEMBLE] = time.perf_counter() - t0
        total.predict_seconds[ENSEMBLE] = 0.0
        total.fallbacks.extend({**f, "phase": "ensemble validation"} for f in val.fallbacks)

    freq = to_timedelta(spec.freq)
    n_scored = len(spec.origins)
    scored = {k: {kk: vv[:n_scored] for kk, vv in v.items()} for k, v in total.forecasts.items()}
    forecasts = forecast_frame(scored, splits, spec.origins, spec.max_steps, spec.levels, spec.models, freq, True)
    future = None
    if spec.future:
        last = {k: {kk: vv[n_scored:] for kk, vv in v.items()} for k, v in total.forecasts.items()}
        future = forecast_frame(last, splits, [spec.test_steps], spec.max_steps, spec.levels, spec.models, freq, False)

    scales = {s.unique_id: seasonal_naive_scale(s.train, spec.season_length) for s in splits}
    per_series = evaluate(forecasts, scales, spec.horizon_steps, spec.levels)
    board = leaderboard(per_series, spec.horizons)
    return BacktestResult(
        forecasts=forecasts, per_series=per_series, leaderboard=board, champion=champion(board),
        series=ids, skipped=parts[0].skipped, fallbacks=total.fallbacks,
        fit_seconds=total.fit_seconds, predict_seconds=total.predict_seconds,
        seconds=max(p.seconds for p in parts) + time.perf_counter() - started, spec=spec,
        future_forecasts=future, models=total.models, ensemble_weights=ensemble_weights, scales=scales,
    )


def _merge_outcome(total: _LocalOutcome, outcome: _LocalOutcome) -> None:
    total.forecasts.update(outcome.forecasts)
    total.models.update(outcome.models)
    total.fallbacks.extend(outcome.fallbacks)
    for name, seconds in outcome.fit_seconds.items():
        total.fit_seconds[name] = total.fit_seconds.get(name, 0.0) + seconds
    for name, seconds in outcome.predict_seconds.items():
        total.predict_seconds[name] = total.predict_seconds.get(name, 0.0) + seconds


def run_backtest(
    df: pd.DataFrame, spec: BacktestSpec, progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Backtest ``spec.models`` on every series of the regular long frame ``df``.

    Args:
        df: long frame on the ``spec.freq`` grid (after the features step).
        progress: called with the number of series finished, for a progress bar.
        on_start: called once with the number of series that will be backtested.

    Raises:
        DataError: no series is long and regular enough (the reasons per series are listed).
    """
    started = time.perf_counter()
    part = backtest_part(df, spec, progress=progress, on_start=on_start)
    result = finish_backtest([part], spec)
    result.seconds = time.perf_counter() - started
    return result
