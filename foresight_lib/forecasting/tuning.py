"""Automatic tuning of a model's hyperparameters with Optuna, on the validation split only.

The validation split is the evaluation protocol moved one day back: the held-out
``test_days`` of every series are cut off before anything else happens, so the last day
that remains (the last day of each series' training part) is held out instead, the model
is fitted on the ``history_days`` before it and forecasts it from a cutoff every
``stride``. Every trial is such a backtest (:func:`foresight_lib.forecasting.backtest.run_backtest`
on the shortened frame), scored by the mean MASE over the configured horizons. The held-out
test day is never read, so the nightly's scores stay honest.

The parameters the model has before tuning (its defaults, or ``base_params``) are scored
first; the search then runs for at most ``n_trials`` trials and ``timeout_s`` seconds in all
(Optuna checks the time between trials, so the last trial may end after it). The result
keeps the base parameters unless a trial beat them, so tuning never makes the validation
MASE worse.

:class:`ParamStore` keeps the tuned parameters as one JSON file per model, so that a
nightly run can reuse them (as ``model_params``) until the next scheduled re-tune; a nightly run
chooses between reusing and tuning with :func:`params_for_run` (config section ``tuning``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from foresight_lib.errors import ConfigError
from foresight_lib.forecasting.backtest import BacktestSpec, run_backtest
from foresight_lib.forecasting.models import ENSEMBLE, MODEL_PATHS, TUNABLE_MODELS
from foresight_lib.frames import check_series_frame
from foresight_lib.runs.storage import DataRoot

log = logging.getLogger(__name__)

SearchSpace = Callable[[Any], dict]
"""Takes an ``optuna.Trial`` and returns the constructor parameters it suggests."""


def _lightgbm_space(trial) -> dict:
    return {
        "num_leaves": trial.suggest_int("num_leaves", 8, 128, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 20, 500, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        "lags": trial.suggest_int("lags", 6, 36, step=6),
        "short_window": trial.suggest_int("short_window", 6, 36, step=6),
        "lookback_days": trial.suggest_int("lookback_days", 1, 6),
    }


def _lstm_space(trial) -> dict:
    return {
        "hidden_size": trial.suggest_int("hidden_size", 16, 96, step=16),
        "head_size": trial.suggest_int("head_size", 32, 128, step=32),
        "input_steps": trial.suggest_int("input_steps", 12, 48, step=12),
        "lookback_days": trial.suggest_int("lookback_days", 1, 5),
        "learning_rate": trial.suggest_float("learning_rate", 1e-3, 1e-2, log=True),
    }


SEARCH_SPACES: dict[str, SearchSpace] = {"lightgbm": _lightgbm_space, "lstm": _lstm_space}
"""Models with a built-in search space; any other model needs ``search_space=``."""
assert list(SEARCH_SPACES) == TUNABLE_MODELS
TUNING = "tuning"
"""The folder under the data root that holds the tuned parameters, one JSON file per model."""


@dataclass
class TuningResult:
    """What a tuning run found, and how the validation MASE moved."""

    model: str
    best_params: dict
    """Parameters to use: the base ones updated with the best trial's (the base ones alone when no
    trial beat them)."""
    base_params: dict
    mase_before: float
    """Validation MASE (mean over horizons and series) with ``base_params``."""
    mase_after: float
    """Validation MASE with ``best_params`` (never above ``mase_before``)."""
    n_trials: int
    """Search trials run (the scoring of the base parameters not counted)."""
    seconds: float
    stopped_by: str
    """``trials``, ``timeout`` or ``time spent on the base parameters``."""
    series: int
    trials: list[dict] = field(default_factory=list)
    """Per trial: number, params, mase, seconds."""
    protocol: dict = field(default_factory=dict)
    tuned_at: str = ""
    data_end: str = ""
    """The last timestamp the tuning read (the end of the validation split): a run whose held-out
    day starts before it must not reuse these parameters."""

    @property
    def improved(self) -> bool:
        return self.mase_after < self.mase_before

    def to_dict(self) -> dict:
        return asdict(self)


def validation_frame(df: pd.DataFrame, spec: BacktestSpec) -> pd.DataFrame:
    """``df`` without the last ``spec.test_days`` of every series (the held-out test day).

    The backtest of the frame returned holds out each series' next-to-last day instead:
    the last day of the training part of the backtest of ``df``.
    """
    df = check_series_frame(df)
    held_out = pd.Timedelta(days=spec.test_days)
    end = df.groupby("unique_id")["ds"].transform("max")
    return df[df["ds"] <= end - held_out].reset_index(drop=True)


def validation_mase(df: pd.DataFrame, spec: BacktestSpec, model: str, params: dict | None = None,
                    _frame: pd.DataFrame | None = None) -> tuple[float, dict]:
    """Mean MASE of ``model`` with ``params`` on the validation split of ``df`` (never its test day).

    Returns:
        The MASE (inf when the model fell back on every series) and a short report
        (series, fallbacks, seconds).
    """
    frame = validation_frame(df, spec) if _frame is None else _frame
    val_spec = BacktestSpec(
        models=[model], freq=spec.freq, horizons=spec.horizons, test_days=spec.test_days,
        history_days=spec.history_days, stride=spec.stride, season=spec.season, levels=spec.levels,
        n_jobs=spec.n_jobs, model_params={model: dict(params or {})},
    )
    result = run_backtest(frame, val_spec)
    fallbacks = {f["unique_id"] for f in result.fallbacks if f["model"] == model}
    board = result.leaderboard[result.leaderboard["model"] == model]
    mase = float(board["mase"].mean()) if not board.empty else math.inf
    if result.series and len(fallbacks) == len(result.series):
        mase = math.inf  # the parameters broke the model: its fallback's score must not count for them
    report = {"series": len(result.series), "fallbacks": len(fallbacks), "seconds": round(result.seconds, 3)}
    return mase, report


def tune(
    df: pd.DataFrame,
    spec: BacktestSpec,
    model: str = "lightgbm",
    n_trials: int = 20,
    timeout_s: float = 1800.0,
    seed: int = 0,
    base_params: dict | None = None,
    search_space: SearchSpace | None = None,
    fixed_params: dict | None = None,
) -> TuningResult:
    """Tune ``model``'s parameters on the validation split of ``df`` with Optuna (TPE, seeded).

    Args:
        df: long frame on the ``spec.freq`` grid, as the backtest takes it (with its test day:
            it is cut off here and never read).
        spec: the evaluation protocol (freq, horizons, test_days, history_days, stride, n_jobs).
        model: a registered model name (not the ensemble).
        n_trials: most search trials.
        timeout_s: time budget in seconds for the whole tuning, the base parameters' scoring
            included; the trial running when it runs out finishes.
        seed: seeds the sampler (with a deterministic model, a rerun gives the same result).
        base_params: parameters before tuning (the model's defaults when None); the search's
            suggestions override them.
        search_space: ``trial -> params``; the built-in one of ``model`` when None.
        fixed_params: passed to every fit but not part of the result (e.g. the task's thread count).

    Raises:
        ConfigError: an unknown model, the ensemble, no search space, or a bad budget.
    """
    import optuna

    if model == ENSEMBLE or model not in MODEL_PATHS:
        raise ConfigError(f"cannot tune '{model}'; choose one of {list(MODEL_PATHS)}")
    space = search_space or SEARCH_SPACES.get(model)
    if space is None:
        raise ConfigError(f"no search space for '{model}'; pass search_space= or choose one of {list(SEARCH_SPACES)}")
    if int(n_trials) < 0 or not float(timeout_s) > 0:
        raise ConfigError(f"tuning needs n_trials >= 0 and timeout_s > 0, got {n_trials} and {timeout_s}")
    started = time.perf_counter()
    base = dict(base_params or {})
    fixed = dict(fixed_params or {})
    frame = validation_frame(df, spec)
    before, report = validation_mase(df, spec, model, {**base, **fixed}, _frame=frame)
    log.info("tuning %s: validation MASE %.4f with the base parameters (%d series, %.1f s)",
             model, before, report["series"], time.perf_counter() - started)
    trials: list[dict] = []

    def objective(trial) -> float:
        t0 = time.perf_counter()
        params = {**base, **space(trial), **fixed}
        mase, rep = validation_mase(df, spec, model, params, _frame=frame)
        trials.append({"number": trial.number, "params": space_params(trial), "mase": mase,
                       "fallbacks": rep["fallbacks"], "seconds": round(time.perf_counter() - t0, 3)})
        log.info("tuning %s: trial %d MASE %.4f in %.1f s", model, trial.number, mase, time.perf_counter() - t0)
        return mase if math.isfinite(mase) else 1e300

    left = float(timeout_s) - (time.perf_counter() - started)
    stopped_by = "time spent on the base parameters"
    if left > 0 and n_trials > 0:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(objective, n_trials=int(n_trials), timeout=left, catch=(Exception,))
        stopped_by = "trials" if len(study.trials) >= n_trials else "timeout"
    elif n_trials == 0:
        stopped_by = "trials"
    best_params, after = base, before
    scored = [t for t in trials if math.isfinite(t["mase"])]
    if scored:
        best = min(scored, key=lambda t: t["mase"])
        if best["mase"] < before:
            best_params, after = {**base, **best["params"]}, best["mase"]
    result = TuningResult(
        model=model, best_params=best_params, base_params=base, mase_before=before, mase_after=after,
        n_trials=len(trials), seconds=time.perf_counter() - started, stopped_by=stopped_by,
        series=report["series"], trials=trials,
        protocol={"split": "validation: each series' last day before its held-out test_days",
                  "freq": spec.freq, "horizons": spec.horizons, "test_days": spec.test_days,
                  "history_days": spec.history_days, "stride": spec.stride},
        tuned_at=datetime.now(UTC).isoformat(timespec="seconds"),
        data_end=pd.Timestamp(frame["ds"].max()).isoformat() if len(frame) else "",
    )
    log.info("tuning %s: validation MASE %.4f -> %.4f after %d trials in %.1f s (stopped by %s)",
             model, before, after, result.n_trials, result.seconds, stopped_by)
    return result


def space_params(trial) -> dict:
    """The parameters a trial suggested, as plain Python values."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in trial.params.items()}


class ParamStore:
    """Tuned parameters under a data root (local or S3): ``<data_root>/tuning/<model>.json``, written atomically."""

    def __init__(self, root: DataRoot | str | os.PathLike):
        self.root = root if isinstance(root, DataRoot) else DataRoot(str(root))

    def path(self, model: str) -> str:
        return self.root._join(TUNING, f"{model}.json")

    def save(self, result: TuningResult) -> str:
        """Store ``result`` (its best parameters, MASE before/after, trials and time); returns where."""
        path = self.path(result.model)
        data = json.dumps(result.to_dict(), indent=2, default=_json_default) + "\n"
        self.root._write_atomic(path, data.encode("utf-8"))
        return self.root._uri(path)

    def load(self, model: str) -> TuningResult | None:
        """The stored result for ``model``, or None when it was never tuned."""
        path = self.path(model)
        if not self.root._exists(path):
            return None
        try:
            return TuningResult(**json.loads(self.root._read(path, f"tuned parameters of {model}")))
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"tuned parameters in {self.root._uri(path)} cannot be read ({exc}); delete the file to re-tune"
            ) from exc

    def params(self, model: str) -> dict:
        """The tuned parameters of ``model`` to pass as its ``model_params`` ({} when never tuned)."""
        stored = self.load(model)
        return dict(stored.best_params) if stored else {}

    def due(self, model: str, every_days: float, now: datetime | None = None) -> bool:
        """Whether ``model`` should be (re-)tuned: never tuned, or tuned ``every_days`` or more ago."""
        return _age_reason(self.load(model), every_days, now) is not None


def _age_reason(stored: TuningResult | None, every_days: float, now: datetime | None) -> str | None:
    if stored is None or not stored.tuned_at:
        return "never tuned"
    now = now or datetime.now(UTC)
    if now - datetime.fromisoformat(stored.tuned_at) >= timedelta(days=float(every_days)):
        return f"last tuned {stored.tuned_at}, {every_days:g} day(s) or more ago"
    return None


def params_for_run(df: pd.DataFrame, spec: BacktestSpec, model: str, settings, store: ParamStore,
                   base_params: dict | None = None, fixed_params: dict | None = None,
                   now: datetime | None = None) -> tuple[dict, dict]:
    """The parameters ``model`` runs with in a nightly run, and a record of how they were chosen.

    Stored parameters are reused until ``settings.every_days`` have passed, unless the
    configured (base) parameters changed or the stored tuning read data after this run's
    validation split (a backfill of an earlier date): then the model is tuned again on this
    run's validation split, within ``settings.trials`` and ``settings.timeout_s``. A new
    tuning is stored unless the stored one read newer data, so a backfill never replaces the
    parameters the nightly reuses.

    ``settings`` has ``trials``, ``timeout_s``, ``every_days`` and ``seed`` (``TuningConfig``).
    """
    base = dict(base_params or {})
    frame = validation_frame(df, spec)
    val_end = pd.Timestamp(frame["ds"].max()) if len(frame) else None
    stored = store.load(model)
    why = _age_reason(stored, settings.every_days, now)
    if why is None and stored.base_params != base:
        why = "its configured parameters changed since it was tuned"
    if why is None and stored.data_end and val_end is not None and pd.Timestamp(stored.data_end) > val_end:
        why = f"the stored tuning read data up to {stored.data_end}, after this run's validation split"
    if why is None:
        log.info("%s: reusing the parameters tuned at %s (validation MASE %.4f -> %.4f)", model, stored.tuned_at,
                 stored.mase_before, stored.mase_after)
        return dict(stored.best_params), {**_summary(stored), "action": "reused", "stored_at": store.root._uri(
            store.path(model))}
    log.info("%s: tuning (%s)", model, why)
    result = tune(df, spec, model, n_trials=settings.trials, timeout_s=settings.timeout_s, seed=settings.seed,
                  base_params=base, fixed_params=fixed_params)
    newer = stored is None or not stored.data_end or not result.data_end or \
        pd.Timestamp(result.data_end) >= pd.Timestamp(stored.data_end)
    where = store.save(result) if newer else None
    return dict(result.best_params), {**_summary(result), "action": "tuned", "why": why, "stored_at": where,
                                      "trials": result.trials}


def _summary(result: TuningResult) -> dict:
    keys = ("best_params", "mase_before", "mase_after", "n_trials", "seconds", "stopped_by", "series",
            "tuned_at", "data_end")
    return {k: getattr(result, k) for k in keys}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot store {type(value).__name__} in JSON")
