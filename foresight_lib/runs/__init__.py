"""A run's identity, settings and folder: what every step of both DAGs shares.

A run is keyed by the end of its data interval (``run_key_for``); the dict every step
returns (``run_key``, ``attempt``, ``run_id``, ``overrides``, ...) is enough to open its
settings and attempt folder again (``open_run``), checking that it still holds its date's
lock. The names of the files each step writes live here too.

Below every step, this package holds the rest of what a run is made in:

- ``storage``: the data root, run folders (``RunStore``) and the attempt's promotion;
- ``lock``: one run at a time per data root and date (``RunLock``);
- ``transaction``: publishing as one transaction, its journal and its recovery.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pandas as pd

from foresight_lib.durations import duration_seconds
from foresight_lib.errors import ConfigError
from foresight_lib.frames import utc_timestamp
from foresight_lib.redaction import redact_config
from foresight_lib.runs.lock import RunLock
from foresight_lib.runs.storage import RUNS, RunStore

RUN_KEY_FORMAT = "%Y-%m-%dT%H%M%SZ"

# Names of the files each step writes in the run folder.
RAW, SERIES, VALIDATED, QUARANTINE = "raw", "series", "validated", "quarantine"
FEATURES, FEATURE_SERIES = "features", "features_series"
LEADERBOARD, PER_SERIES, BACKTEST_FORECASTS, FORECASTS = "leaderboard", "per_series", "backtest_forecasts", "forecasts"
RECOMMENDATIONS, ACTUALS = "recommendations", "actuals"
ACTUAL_TAIL = pd.Timedelta("1D")
"""The latest actuals published beside the forecasts (for the anomaly flags and charts)."""
VALIDATION_HTML = "validation/report.html"
RESULT = "backtest_result.pkl"


# ---------------------------------------------------------------------------
# Run identity and settings


def run_key_for(when: datetime | str | pd.Timestamp) -> str:
    """The run folder's name for a data interval end: ``2024-03-15T020000Z``."""
    return utc_timestamp(when).strftime(RUN_KEY_FORMAT)


def overrides_from_params(params: dict | None) -> dict:
    """Settings overrides from the DAG's trigger form: metrics, models, horizons and ``overrides``.

    An empty metrics list means every metric of the source.
    """
    params = dict(params or {})
    overrides = json_copy(params.get("overrides") or {})
    if not isinstance(overrides, dict):
        raise ConfigError(f"the 'overrides' parameter must be an object of settings, got {type(overrides).__name__}")
    if params.get("publish"):
        overrides["publish"] = {**(overrides.get("publish") or {}), "latest": params["publish"]}
    if params.get("models"):
        overrides["models"] = list(params["models"])
    if params.get("horizons"):
        overrides["horizons"] = list(params["horizons"])
    if params.get("metrics"):
        source = overrides.get("source") or {}
        overrides["source"] = {**source, "metrics": list(params["metrics"])}
    return overrides


def json_copy(value: Any) -> Any:
    """A deep copy of settings as JSON holds them (anything else becomes text)."""
    return json.loads(json.dumps(value, default=str))


def load_run_config(overrides: dict | None = None):
    """The validated settings for a run (``include/foresight.yaml`` plus ``overrides``)."""
    from foresight_lib.config import load_config

    return load_config(overrides=overrides or None)


def open_run(run: dict):
    """Settings and attempt folder of a run dict returned by a previous step.

    Raises:
        RunLocked: another run of the same date took the date's lock over from this one.
    """
    if not isinstance(run, dict) or "run_key" not in run:
        raise ConfigError(f"expected the run dict returned by the previous step, got {redact_config(run)!r}")
    cfg = load_run_config(run.get("overrides"))
    store = RunStore(cfg.data_root, run["run_key"], folder=run.get("folder") or RUNS, attempt=run.get("attempt"))
    if run.get("attempt"):
        run_lock(cfg, store).check(run["attempt"])
    return cfg, store


def run_lock(cfg, store):
    """The lock of the store's date under its data root (``foresight_lib.runs.lock``)."""
    return RunLock(store, store.folder, store.safe_id, duration(cfg.publish.lock_timeout))


def new_attempt() -> str:
    """A sortable, unique name for one attempt at a run: ``20240315T020312Z-1a2b3c``."""
    import uuid

    return f"{pd.Timestamp.now(tz='UTC').strftime(RUN_KEY_FORMAT)}-{uuid.uuid4().hex[:6]}"


def config_dict(cfg) -> dict:
    """The settings as stored (run.json, MLflow params and artifacts): secrets replaced by ``***``."""
    return redact_config(cfg.to_dict())


def base_models(cfg) -> list[str]:
    """The models trained by their own task (every configured model but the ensemble)."""
    from foresight_lib.forecasting.models import ENSEMBLE, check_model_names

    return [m for m in check_model_names(list(cfg.models)) if m != ENSEMBLE]


def backtest_spec(cfg):
    """The evaluation protocol's settings for this run."""
    from foresight_lib.forecasting.backtest import BacktestSpec

    return BacktestSpec(
        models=list(cfg.models), freq=cfg.freq, horizons=list(cfg.horizons), test_days=float(cfg.test_days),
        history_days=float(cfg.history_days), stride=cfg.stride, levels=tuple(cfg.levels),
        model_params=dict(cfg.model_params or {}), criterion=cfg.champion.criterion_obj(),
        future=True, keep_models=True, select_members=bool(cfg.ensemble_selection),
    )


def duration(text: str) -> pd.Timedelta:
    """A duration setting (``30m``, ``6h``) as a timedelta."""
    return pd.Timedelta(seconds=duration_seconds(text))


