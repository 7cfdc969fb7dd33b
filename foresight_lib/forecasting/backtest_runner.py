"""Running models over series: fitting and forecasting, in worker processes, with fallback.

The runner knows nothing of the evaluation protocol: a :class:`ForecastTask` says which
models to fit on which series and from which origins to forecast, and :func:`run_models`
returns their :class:`RunOutcome`. Local models run one series at a time, in parallel across
series (one process per core); global models (the LSTM, LightGBM) are fitted once across all
series, with the series' training timestamps when the model reads them (``needs_timestamps``).
A model that fails on a series, or whose forecasts there are not finite, is replaced on that
series by the fallback model (the seasonal naive, else the naive: the first whose forecasts
are finite), and the outcome lists it. The protocol, its splits and the assembly of the
results are in :mod:`foresight_lib.forecasting.backtest`.
"""
from __future__ import annotations

import inspect
import logging
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from typing import TYPE_CHECKING, Protocol

import numpy as np

from foresight_lib.errors import DataError
from foresight_lib.forecasting.models import FALLBACK_MODEL, make_model, model_class
from foresight_lib.forecasting.models.base import Forecast, GlobalForecaster
from foresight_lib.forecasting.threads import cpu_count, limit_threads

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ForecastTask", "RunOutcome", "Split", "check_forecast", "fallback_forecast", "merge_outcome",
           "run_models"]

log = logging.getLogger(__name__)


class Split(Protocol):
    """One series as the runner reads it (``backtest.SeriesSplit`` is one): the values a model is
    fitted on, the values after them that its forecasts are conditioned on, and the timestamps."""

    unique_id: str
    ds: pd.DatetimeIndex
    """Timestamps of train + test (regular)."""
    train: np.ndarray
    test: np.ndarray


@dataclass
class ForecastTask:
    """``models`` fitted on every series of ``splits``, each forecasting ``h`` steps from every origin.

    An origin is the count of ``test`` values known at the cutoff; no model is refitted between
    origins.
    """

    splits: list[Split]
    models: list[str]
    origins: list[int]
    h: int
    levels: tuple[int, ...]
    season_length: int
    model_params: dict[str, dict]
    keep_models: bool


@dataclass
class RunOutcome:
    """What running models over series gave: forecasts, seconds, fallbacks and the fitted models.

    Backtest parts pickle it (``backtest.BacktestPart``).
    """

    forecasts: dict[tuple[str, str], Forecast] = field(default_factory=dict)
    """(model, unique_id) -> forecasts, one row per origin."""
    fit_seconds: dict[str, float] = field(default_factory=dict)
    predict_seconds: dict[str, float] = field(default_factory=dict)
    fallbacks: list[dict] = field(default_factory=list)
    """Per model and series replaced by the fallback: ``model``, ``unique_id``, ``error``."""
    models: dict = field(default_factory=dict)
    """(model, unique_id) -> fitted local model, and model -> fitted global model (``keep_models``)."""


_LocalOutcome = RunOutcome
"""The name backtest parts pickled before the outcome was public give it: they still load."""


def run_models(task: ForecastTask, n_jobs: int = 0, progress: Callable[[int], None] | None = None) -> RunOutcome:
    """Fit and forecast every model of ``task`` on every series of it.

    Args:
        n_jobs: worker processes for local models; 0 = one per core, 1 = in this process.
        progress: called with the number of series finished by the local models.
    """
    local = [m for m in task.models if not issubclass(model_class(m), GlobalForecaster)]
    global_ = [m for m in task.models if issubclass(model_class(m), GlobalForecaster)]
    total = _run_local_models(replace(task, models=local), n_jobs, progress)
    for name in global_:
        _run_global_model(name, task, total)
    return total


def merge_outcome(total: RunOutcome, outcome: RunOutcome) -> None:
    """Add ``outcome`` into ``total``: forecasts, fitted models and fallbacks, seconds summed."""
    total.forecasts.update(outcome.forecasts)
    total.models.update(outcome.models)
    total.fallbacks.extend(outcome.fallbacks)
    for name, seconds in outcome.fit_seconds.items():
        total.fit_seconds[name] = total.fit_seconds.get(name, 0.0) + seconds
    for name, seconds in outcome.predict_seconds.items():
        total.predict_seconds[name] = total.predict_seconds.get(name, 0.0) + seconds


def _run_local(task: ForecastTask) -> RunOutcome:
    """Fit and forecast every local model on every series of ``task`` (in a worker process)."""
    limit_threads()
    out = RunOutcome()
    for split in task.splits:
        for name in task.models:
            forecast, model, seconds = _fit_forecast(name, split, task, out)
            out.forecasts[(name, split.unique_id)] = forecast
            if task.keep_models and model is not None:
                out.models[(name, split.unique_id)] = model
            out.fit_seconds[name] = out.fit_seconds.get(name, 0.0) + seconds[0]
            out.predict_seconds[name] = out.predict_seconds.get(name, 0.0) + seconds[1]
    return out


def _fit_forecast(name: str, split: Split, task: ForecastTask, out: RunOutcome):
    """One model on one series; on failure the fallback's forecast, recorded in ``out``."""
    train_ds = split.ds[: len(split.train)]
    t0 = time.perf_counter()
    try:
        with np.errstate(all="ignore"):
            model = make_model(name, **task.model_params.get(name, {}))
            model.fit(split.train, task.season_length, ds=train_ds)
            t1 = time.perf_counter()
            forecast = model.forecast_origins(split.test, task.origins, task.h, task.levels)
        check_forecast(forecast, len(task.origins), task.h)
        return forecast, model, (t1 - t0, time.perf_counter() - t1)
    except Exception as exc:  # noqa: BLE001 - any model failure falls back, and is reported
        elapsed = time.perf_counter() - t0
        reason = f"{type(exc).__name__}: {exc}".strip()[:500]
        log.warning("model %s failed on %s (%s); using %s", name, split.unique_id, reason, FALLBACK_MODEL)
        log.debug("%s", traceback.format_exc())
        out.fallbacks.append({"model": name, "unique_id": split.unique_id, "error": reason})
        fallback = fallback_forecast(split, task.season_length, task.origins, task.h, task.levels)
        return fallback, None, (elapsed, 0.0)


def fallback_forecast(split: Split, m: int, origins: list[int], h: int, levels: tuple[int, ...]) -> Forecast:
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
            check_forecast(forecast, len(origins), h)
            return forecast
        except Exception as exc:  # noqa: BLE001 - try the next fallback, report all if none works
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    raise DataError(f"series {split.unique_id}: no fallback model gives finite forecasts ({'; '.join(errors)}); "
                    "check its values (validation and split_series should have removed it)")


def check_forecast(forecast: Forecast, n_origins: int, h: int) -> None:
    """Every array of ``forecast`` is ``n_origins`` x ``h`` and finite.

    Raises:
        ValueError: which array is not, and how.
    """
    for key, values in forecast.items():
        if values.shape != (n_origins, h):
            raise ValueError(f"forecast '{key}' has shape {values.shape}, expected {(n_origins, h)}")
        if not np.isfinite(values).all():
            raise ValueError(f"forecast '{key}' has non-finite values")


def _n_workers(n_jobs: int, n_series: int) -> int:
    cores = cpu_count()
    workers = cores if n_jobs <= 0 else n_jobs
    return max(1, min(workers, n_series))


def _run_local_models(task: ForecastTask, n_jobs: int, progress: Callable[[int], None] | None) -> RunOutcome:
    total = RunOutcome()
    if not task.models or not task.splits:
        return total
    workers = _n_workers(n_jobs, len(task.splits))
    if workers == 1:
        outcomes = []
        for split in task.splits:
            outcomes.append(_run_local(replace(task, splits=[split])))
            if progress:
                progress(1)
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            outcomes = []
            for outcome in pool.map(_run_local, [replace(task, splits=[s]) for s in task.splits]):
                outcomes.append(outcome)
                if progress:
                    progress(1)
    for outcome in outcomes:
        merge_outcome(total, outcome)
    return total


def _timestamps(model: GlobalForecaster, splits: list[Split]) -> dict:
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


def _run_global_model(name: str, task: ForecastTask, total: RunOutcome) -> None:
    """Fit a global model on all series at once and forecast them; fall back per series on failure."""
    splits, origins = task.splits, task.origins
    t0 = time.perf_counter()
    try:
        model = make_model(name, **task.model_params.get(name, {}))
        stamps = _timestamps(model, splits)
        model.fit_many([s.train for s in splits], task.season_length, **stamps)
        t1 = time.perf_counter()
        results = model.forecast_origins_many(
            [s.train for s in splits], [s.test for s in splits], origins, task.h, task.levels, **stamps
        )
        if len(results) != len(splits):
            raise ValueError(f"{len(results)} forecasts for {len(splits)} series")
        for split, forecast in zip(splits, results, strict=True):
            try:
                check_forecast(forecast, len(origins), task.h)
            except ValueError as exc:  # this series only: the model worked on the others
                log.warning("model %s failed on %s (%s); using %s", name, split.unique_id, exc, FALLBACK_MODEL)
                total.fallbacks.append({"model": name, "unique_id": split.unique_id, "error": f"ValueError: {exc}"})
                forecast = fallback_forecast(split, task.season_length, origins, task.h, task.levels)
            total.forecasts[(name, split.unique_id)] = forecast
        total.fit_seconds[name] = total.fit_seconds.get(name, 0.0) + (t1 - t0)
        total.predict_seconds[name] = total.predict_seconds.get(name, 0.0) + (time.perf_counter() - t1)
        if task.keep_models:
            total.models[name] = model
    except Exception as exc:  # noqa: BLE001 - a failed global model falls back on every series
        reason = f"{type(exc).__name__}: {exc}".strip()[:500]
        log.warning("global model %s failed (%s); using %s on every series", name, reason, FALLBACK_MODEL)
        total.fit_seconds[name] = total.fit_seconds.get(name, 0.0) + (time.perf_counter() - t0)
        for split in splits:
            total.fallbacks.append({"model": name, "unique_id": split.unique_id, "error": reason})
            total.forecasts[(name, split.unique_id)] = fallback_forecast(
                split, task.season_length, origins, task.h, task.levels
            )
