"""DAG policy: every DAG file imports cleanly, cheaply, and declares tags, retries and docs."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from airflow_support import DAGS_FOLDER, REPO_ROOT, airflow_env, run_python

from foresight_lib.durations import duration_seconds
from foresight_lib.forecasting.models import ALL_MODELS
from foresight_lib.sources.catalog import DEMO_METRICS

CONFIG = REPO_ROOT / "include" / "foresight.yaml"

SETTINGS = (yaml.safe_load(CONFIG.read_text()) or {}) if CONFIG.exists() else {}
SCHEDULE = SETTINGS.get("schedule", "0 2 * * *")
PLAN_SCHEDULE = (SETTINGS.get("rightsizing") or {}).get("plan_schedule", "*/30 * * * *")
HEAVY_MODULES = ["torch", "prophet", "mlflow", "pandas", "statsmodels", "great_expectations", "sklearn",
                 "pyarrow", "foresight_lib.pipeline", "foresight_lib.forecasting.backtest"]

PARSE = """
    import os, sys
    from airflow.sdk import BaseHook, Variable

    def forbidden(*args, **kwargs):
        raise RuntimeError("connection or Variable looked up while parsing a DAG file")

    BaseHook.get_connection = classmethod(forbidden)
    Variable.get = staticmethod(forbidden)
    from airflow.dag_processing.dagbag import DagBag

    before = set(sys.modules)
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    loaded = sorted(set(sys.modules) - before)
    dags = {}
    for dag_id, dag in bag.dags.items():
        tasks = {}
        for t in dag.tasks:
            tasks[t.task_id] = {"retries": t.retries, "backoff": t.retry_exponential_backoff,
                                "retry_delay_s": t.retry_delay.total_seconds(), "teardown": bool(t.is_teardown),
                                "mapped": any(c.__name__ == "MappedOperator" for c in type(t).__mro__)}
        dags[dag_id] = {"tags": sorted(dag.tags), "doc_md": dag.doc_md, "catchup": dag.catchup,
                        "schedule": getattr(dag.timetable, "expression", None) or str(dag.timetable), "tasks": tasks,
                        "params": sorted(dag.params.keys()), "fileloc": dag.fileloc,
                        "param_types": {k: dag.params.get_param(k).schema.get("type") for k in dag.params},
                        "metric_choices": dag.params.get_param("metrics").schema.get("examples"),
                        "metric_shown": dag.params.get_param("metrics").schema.get("values_display"),
                        "model_choices": dag.params.get_param("models").schema.get("items", {}).get("enum")
                        if "models" in dag.params else None,
                        "backfill_conf": {"models": dag.params.get_param("models").resolve(["naive", "arima"])}
                        if "models" in dag.params else None,
                        "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}}
    report({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags, "loaded": loaded})
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    env = airflow_env(tmp_path_factory.mktemp("airflow-parse"))
    return run_python(PARSE, env, timeout=180)


def test_every_dag_file_imports_without_errors(parsed):
    assert parsed["errors"] == {}
    files = {Path(p).name for p in (d["fileloc"] for d in parsed["dags"].values())}
    expected = {p.name for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_")}
    assert files == expected, "every DAG file defines at least one DAG"
    assert {"foresight_nightly", "foresight_scaling_plan"} <= set(parsed["dags"])


def test_no_heavy_import_or_lookup_at_parse_time(parsed):
    heavy = [m for m in parsed["loaded"] if m.split(".")[0] in HEAVY_MODULES or m in HEAVY_MODULES]
    assert heavy == [], f"DAG files import heavy modules when parsed: {heavy[:10]}"


@pytest.mark.parametrize("field", ["tags", "doc_md"])
def test_every_dag_is_tagged_and_documented(parsed, field):
    for dag_id, dag in parsed["dags"].items():
        assert dag[field], f"{dag_id} has no {field}"


def test_every_task_retries_with_backoff(parsed):
    for dag_id, dag in parsed["dags"].items():
        for task_id, task in dag["tasks"].items():
            assert task["retries"] >= 2, f"{dag_id}.{task_id} retries {task['retries']} < 2"
            assert task["backoff"], f"{dag_id}.{task_id} has no exponential backoff"


def test_nightly_shape(parsed):
    dag = parsed["dags"]["foresight_nightly"]
    assert dag["catchup"] is False
    assert dag["schedule"] == SCHEDULE
    assert set(dag["params"]) >= {"metrics", "models", "horizons", "publish"}
    assert "null" in dag["param_types"]["metrics"], "empty metrics means all: the form must not require it"
    assert dag["metric_choices"] == list(DEMO_METRICS), "the Trigger form lists the source's metrics"
    # ...each counter shown with the name the dashboard, the registry and the API use for it
    assert dag["metric_shown"]["container_cpu_usage_seconds_total"].startswith("container_cpu_usage_cores ")
    assert "container_memory_working_set_bytes" not in dag["metric_shown"], "a gauge keeps its name"
    up = dag["upstream"]
    assert up["extract"] == []
    assert up["validate"] == ["extract"]
    assert up["build_features"] == ["validate"]
    assert up["select_models"] == ["build_features"]
    assert up["train"] == ["build_features", "select_models"]
    assert dag["tasks"]["train"]["mapped"] is True
    assert up["evaluate"] == ["build_features", "train"]
    assert up["rightsize_shards"] == ["build_features"]
    assert up["rightsize"] == ["build_features", "rightsize_shards"]
    assert dag["tasks"]["rightsize"]["mapped"] is True
    assert up["publish"] == ["evaluate", "rightsize"], "publish sizes from the walks of every shard"
    assert up["release"] == ["extract", "publish"]
    assert dag["tasks"]["release"]["teardown"] is True, "the lock is released however the run ended"
    assert "Foresight nightly" in dag["doc_md"]
    # The Backfill dialog drops its Run Parameters unless told to send them: the docs say how to pass them,
    # and Airflow's backfill check (params deep-merged and validated) accepts what they pass.
    assert "--dag-run-conf" in dag["doc_md"] and "Override parameters on existing runs" in dag["doc_md"]
    assert dag["backfill_conf"]["models"] == ["naive", "arima"]
    assert dag["model_choices"] == ALL_MODELS, "the Trigger form offers every model of the library's registry"


def test_scaling_plan_shape(parsed):
    dag = parsed["dags"]["foresight_scaling_plan"]
    assert dag["catchup"] is False
    assert dag["schedule"] == PLAN_SCHEDULE
    assert set(dag["params"]) >= {"metrics", "overrides"}
    assert dag["metric_choices"] == list(DEMO_METRICS)
    assert dag["upstream"] == {"extract": [], "validate": ["extract"], "build_features": ["validate"],
                               "size_windows": ["build_features"], "publish": ["size_windows"],
                               "release": ["extract", "publish"]}
    assert dag["tasks"]["release"]["teardown"] is True
    assert "Foresight scaling plan" in dag["doc_md"]


@pytest.mark.parametrize("dag_id", ["foresight_nightly", "foresight_scaling_plan"])
def test_retries_come_from_the_config(parsed, dag_id):
    expected_s = duration_seconds(SETTINGS.get("retry_delay", "2m"))
    for task_id, task in parsed["dags"][dag_id]["tasks"].items():
        assert task["retries"] == SETTINGS.get("retries", 2), task_id
        assert task["retry_delay_s"] == expected_s, task_id
