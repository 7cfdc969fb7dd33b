"""
### Foresight nightly forecasting

Every night: **extract** the metrics → **validate** them (Great Expectations; failing
series are quarantined) → build **features** (counters to rates, resampling, gap
filling) → **train** every model (one mapped task per model, rolling-origin backtest)
→ **evaluate** (leaderboard, champion by mean MASE) → **publish** (MLflow parent and
child runs, the champion registered as `foresight-<metric>`, forecasts written to the
run folder and then to `latest`).

**Trigger with parameters** to choose metrics, models and horizons; `overrides`
takes any other setting of `include/foresight.yaml` (e.g. `{"history_days": 3}`).
A backfill of a past date only sees data up to that date, and a re-run of a date
replaces exactly that date's run folder and MLflow run. A failed run leaves the
previous champion and the published forecasts in place.

Results: the run folder (`<data_root>/runs/<date>`), the MLflow UI (experiment
`foresight-nightly`) and `<data_root>/latest`.
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from airflow.sdk import ExceptionRetryPolicy, Param, RetryAction, RetryRule, dag, task

from foresight_lib.durations import duration_seconds
from foresight_lib.errors import ForesightError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = Path(os.environ.get("FORESIGHT_CONFIG") or REPO_ROOT / "include" / "foresight.yaml")
PROMETHEUS_CONN_ID = "foresight_prometheus"
ALL_MODELS = ["naive", "seasonal_naive", "arima", "ets", "fourier", "prophet", "lstm", "ensemble"]


def _settings() -> dict:
    """The few settings the DAG's shape needs, read from the YAML file only (cheap at parse time)."""
    try:
        with open(CONFIG_PATH, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError):
        loaded = {}  # the extract task loads the config again and reports what is wrong with it
    return loaded if isinstance(loaded, dict) else {}


def _retry_delay(text: object) -> timedelta:
    """The configured delay (``2m``, ``90s``, ``1h``); two minutes when it is not one (the config check says why)."""
    try:
        return timedelta(seconds=duration_seconds(str(text)))
    except ForesightError:
        return timedelta(minutes=2)


SETTINGS = _settings()
SOURCE = SETTINGS.get("source") if isinstance(SETTINGS.get("source"), dict) else {}

# Errors that another try cannot fix: bad settings, bad data, failed validation.
NO_RETRY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=[
                "foresight_lib.errors.ConfigError",
                "foresight_lib.errors.DataError",
                "foresight_lib.errors.ValidationFailed",
            ],
            action=RetryAction.FAIL,
            reason="fix the settings or the data, then clear the task",
        ),
    ],
)


def _prometheus_connection() -> dict | None:
    """The ``foresight_prometheus`` connection as a plain dict, or None when it is not defined."""
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(PROMETHEUS_CONN_ID)
    except Exception:  # noqa: BLE001 - an undefined connection means: use the URL from the config
        return None
    return {
        "host": conn.host, "schema": conn.schema, "port": conn.port, "login": conn.login,
        "password": conn.password, "extra": conn.extra_dejson,
    }


@dag(
    dag_id="foresight_nightly",
    schedule=SETTINGS.get("schedule", "0 2 * * *"),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["foresight", "forecasting", "mlflow"],
    default_args={
        "owner": "foresight",
        "retries": int(SETTINGS.get("retries", 2)),
        "retry_delay": _retry_delay(SETTINGS.get("retry_delay", "2m")),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "retry_policy": NO_RETRY,
    },
    params={
        "metrics": Param(
            list(SOURCE.get("metrics") or []), type="array", items={"type": "string"},
            title="Metrics", description="Metrics to forecast, one per line; empty = every metric of the source.",
        ),
        "models": Param(
            list(SETTINGS.get("models") or ["naive", "seasonal_naive", "ets", "ensemble"]), type="array",
            items={"type": "string", "enum": ALL_MODELS}, examples=ALL_MODELS, title="Models",
            description="Models to train and compare; the ensemble combines the others.",
        ),
        "horizons": Param(
            list(SETTINGS.get("horizons") or ["5m", "15m", "30m"]), type="array", items={"type": "string"},
            title="Horizons", description="Forecast horizons as durations (5m, 15m, 30m, 1h).",
        ),
        "overrides": Param(
            {}, type="object", title="Other settings",
            description="Any other setting of include/foresight.yaml, e.g. {\"history_days\": 3}.",
        ),
    },
)
def foresight_nightly():
    @task
    def extract(params=None, run_id=None, data_interval_start=None, data_interval_end=None,
                logical_date=None, dag_run=None) -> dict:
        from foresight_lib import pipeline

        return pipeline.extract(
            run_id=run_id, data_interval_start=data_interval_start,
            data_interval_end=data_interval_end or logical_date or dag_run.run_after,
            params=dict(params or {}), connection=_prometheus_connection,
        )

    @task
    def validate(run: dict) -> dict:
        from foresight_lib import pipeline

        return pipeline.validate(run)

    @task
    def build_features(run: dict) -> dict:
        from foresight_lib import pipeline

        return pipeline.build_features(run)

    @task
    def select_models(run: dict) -> list[str]:
        from foresight_lib import pipeline

        return pipeline.models_to_train(run)

    @task(map_index_template="{{ task.op_kwargs['model'] }}")
    def train(run: dict, model: str) -> dict:
        from foresight_lib import pipeline

        return pipeline.train(run, model)

    @task
    def evaluate(run: dict, trained: list[dict]) -> dict:
        from foresight_lib import pipeline

        return pipeline.evaluate(run, list(trained))

    @task
    def publish(run: dict) -> dict:
        from foresight_lib import pipeline

        return pipeline.publish(run)

    features = build_features(validate(extract()))
    trained = train.partial(run=features).expand(model=select_models(features))
    publish(evaluate(features, trained))


nightly = foresight_nightly()
