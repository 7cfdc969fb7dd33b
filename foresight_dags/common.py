"""What the Foresight DAG files share: the settings their shape needs, retries, the Prometheus connection
and the tasks both DAGs run (``validate``, ``build_features``: the nightly's steps, reused by the scaling plan;
``release``: the teardown that frees the date's lock however the run ended).

Read at parse time, so it imports only yaml, the Airflow SDK and the pandas-free
``foresight_lib.durations``; every task body imports what it needs itself.
"""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import yaml
from airflow.sdk import ExceptionRetryPolicy, Param, RetryAction, RetryRule, task, teardown

from foresight_lib.durations import duration_seconds
from foresight_lib.errors import ForesightError
from foresight_lib.sources.catalog import forecast_names, source_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = Path(os.environ.get("FORESIGHT_CONFIG") or REPO_ROOT / "include" / "foresight.yaml")
"""The file ``foresight_lib.config`` reads (an installed copy needs ``FORESIGHT_CONFIG``, as docker-compose sets)."""
PROMETHEUS_CONN_ID = "foresight_prometheus"


def _settings() -> dict:
    """The few settings the DAGs' shape needs, read from the YAML file only (cheap at parse time)."""
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


def section(name: str) -> dict:
    """One section of the settings (``source``, ``rightsizing``), empty when it is missing or not a mapping."""
    value = SETTINGS.get(name)
    return value if isinstance(value, dict) else {}


SETTINGS = _settings()


def metrics_param(purpose: str) -> Param:
    """The Trigger form's Metrics: the configured ones by default, the source's known metrics offered.

    The values are the source's names (what extract reads); a counter is shown with the name
    its forecasts go by on the dashboard, in MLflow and in the API
    (``container_cpu_usage_cores ← container_cpu_usage_seconds_total``).
    """
    source = section("source")
    offered = source_metrics(source)
    shown = {m: f"{name} ← {m}" for m, name in forecast_names(offered).items()}
    return Param(list(source.get("metrics") or []), type=["array", "null"], items={"type": "string"},
                 title="Metrics", description=f"{purpose}, by the source's name; a counter is forecast as its "
                 "per-second rate under the name shown first. Empty = every metric of the source.",
                 **({"examples": offered} if offered else {}), **({"values_display": shown} if shown else {}))

# Errors that another try cannot fix: bad settings, bad data, failed validation.
NO_RETRY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=[
                "foresight_lib.errors.ConfigError",
                "foresight_lib.errors.DataError",
                "foresight_lib.errors.ValidationFailed",
                "foresight_lib.errors.RunLocked",
            ],
            action=RetryAction.FAIL,
            reason="fix the settings or the data, then clear the task",
        ),
    ],
)


def default_args(max_retry_delay: timedelta = timedelta(minutes=30)) -> dict:
    """Owner, the configured retries with exponential backoff, and no retry of errors a retry cannot fix."""
    return {
        "owner": "foresight",
        "retries": int(SETTINGS.get("retries", 2)),
        "retry_delay": _retry_delay(SETTINGS.get("retry_delay", "2m")),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": max_retry_delay,
        "retry_policy": NO_RETRY,
    }


def prometheus_connection() -> dict | None:
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


@task
def validate(run: dict) -> dict:
    from foresight_lib import pipeline

    return pipeline.validate(run)


@task
def build_features(run: dict) -> dict:
    from foresight_lib import pipeline

    return pipeline.build_features(run)


def release_lock(run: dict) -> bool:
    """When the run ends, failed or not: finish or undo a killed publish, then release the date's lock (a teardown)."""
    from foresight_lib import pipeline

    return pipeline.release(run)


def release(run):
    """The ``release`` teardown task of one DAG (a fresh one per DAG: a teardown task object is used once)."""
    return teardown(task(task_id="release")(release_lock))(run)
