"""Fitting and forecasting the models of a backtest, in worker processes, with fallback.

Local models run one series at a time, in parallel across series (one process per
core); global models (the LSTM, LightGBM) are fitted once across all series, with the
series' training timestamps when the model reads them (``needs_timestamps``). A model that fails
on a series, or whose forecasts there are not finite, is replaced on that series by the
fallback model (the seasonal naive, else the naive: the first whose forecasts are
finite), and the outcome lists it. The protocol and the assembly of the results are in
:mod:`foresight_lib.forecasting.backtest`.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import TYPE_CHECKING

import numpy as np

from foresight_lib.errors import DataError
from foresight_lib.forecasting.models import FALLBACK_MODEL, make_model, model_class
from foresight_lib.forecasting.models.base import Forecast, GlobalForecaster

if TYPE_CHECKING:
    from foresight_lib.forecasting.backtest import BacktestSpec, SeriesSplit

log = logging.getLogger(__name__)


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
    """The fallback model's forecasts, else the naive's: the first that are finite.

    Raises:
        DataError: neither gives finite forecasts (split_series keeps only finite, bounded
            values, so this means a bug rather than bad data).
    """
    names = [FALLBACK_MODEL, "naive"] if len(split.train) > m else ["naive"]
    errors = []
    for name in names:
        try:
            with np.errstate(all="ignore"):
                model = make_model(name).fit(split.train, m)
                forecast = model.forecast_origins(split.test, origins, h, levels)
            _check_forecast(forecast, len(origins), h)
            return forecast
        except Exception as exc:  # noqa: BLE001 - try the next fallback, report all if none works
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    raise DataError(f"series {split.unique_id}: no fallback model gives finite forecasts ({'; '.join(errors)}); "
                    "check its values (validation and split_series should have removed it)")


def _check_forecast(forecast: Forecast, n_origins: int, h: int) -> None:
    for key, values in forecast.items():
        if values.shape != (n_origins, h):
            raise ValueError(f"forecast '{key}' has shape {values.shape}, expected {(n_origins, h)}")
        if not np.isfinite(values).all():
            raise ValueError(f"forecast '{key}' has non-finite values")


def _limit_threads(threads: int = 1) -> None:
    """At most ``threads`` BLAS/OpenMP/torch threads in this process.

    One per worker by default: the workers already fill the cores. A train task of the
    DAG passes its share of the CPUs, since other train tasks run beside it.
    """
    threads = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    with contextlib.suppress(ImportError):  # threadpoolctl ships with scikit-learn; without it the variables do
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    torch = sys.modules.get("torch")  # only when loaded: a local model's task never pays for importing it
    if torch is not None:
        torch.set_num_threads(threads)


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity, e.g. a container's cpuset), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def cpu_share(tasks_at_once: int) -> int:
    """The CPUs one of ``tasks_at_once`` tasks running side by side may use, at least 1."""
    return max(1, cpu_count() // max(1, int(tasks_at_once)))


def _n_workers(n_jobs: int, n_series: int) -> int:
    cores = cpu_count()
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


def _timestamps(model: GlobalForecaster, splits: list[SeriesSplit]) -> dict:
    """``{"ds": [train timestamps per series]}`` for a global model that reads timestamps, else ``{}``.

    Only models whose class sets ``needs_timestamps`` and whose ``fit_many`` and
    ``forecast_origins_many`` both take ``ds`` get them (the LSTM, for one, takes none).
    """
    if not getattr(type(model), "needs_timestamps", False):
        return {}
    for method in (model.fit_many, model.forecast_origins_many):
        if "ds" not in inspect.signature(method).parameters:
            return {}
    return {"ds": [s.ds[: len(s.train)] for s in splits]}


def _run_global_model(
    name: str, splits: list[SeriesSplit], origins: list[int], spec: BacktestSpec, total: _LocalOutcome
) -> None:
    """Fit a global model on all series at once and forecast them; fall back per series on failure."""
    t0 = time.perf_counter()
    try:
        model = make_model(name, **spec.model_params.get(name, {}))
        stamps = _timestamps(model, splits)
        model.fit_many([s.train for s in splits], spec.season_length, **stamps)
        t1 = time.perf_counter()
        results = model.forecast_origins_many(
            [s.train for s in splits], [s.test for s in splits], origins, spec.max_steps, spec.levels, **stamps
        )
        if len(results) != len(splits):
            raise ValueError(f"{len(results)} forecasts for {len(splits)} series")
        for split, forecast in zip(splits, results, strict=True):
            try:
                _check_forecast(forecast, len(origins), spec.max_steps)
            except ValueError as exc:  # this series only: the model worked on the others
                log.warning("model %s failed on %s (%s); using %s", name, split.unique_id, exc, FALLBACK_MODEL)
                total.fallbacks.append({"model": name, "unique_id": split.unique_id, "error": f"ValueError: {exc}"})
                forecast = _fallback_forecast(split, spec.season_length, origins, spec.max_steps, spec.levels)
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


def _merge_outcome(total: _LocalOutcome, outcome: _LocalOutcome) -> None:
    total.forecasts.update(outcome.forecasts)
    total.models.update(outcome.models)
    total.fallbacks.extend(outcome.fallbacks)
    for name, seconds in outcome.fit_seconds.items():
        total.fit_seconds[name] = total.fit_seconds.get(name, 0.0) + seconds
    for name, seconds in outcome.predict_seconds.items():
        total.predict_seconds[name] = total.predict_seconds.get(name, 0.0) + seconds
