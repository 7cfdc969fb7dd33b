"""The nightly DAG with a real Prometheus as its source, by configuration alone.

A Prometheus is started over a TSDB built with ``promtool`` from cAdvisor-style series
(CPU counters and memory gauges of two containers) whose values are six days of NAB's
``cpu_utilization_asg_misconfiguration`` trace. ``dag.test()`` runs the DAG on it; then a
second date is run against a Prometheus that answers 503 to everything: extract fails
after its retries, naming the query, and the champion and published forecasts stay.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from airflow_support import REPO_ROOT, airflow_env, dag_test, migrate
from prom_server import (
    CADVISOR_TYPES,
    PrometheusProcess,
    ScriptedServer,
    build_tsdb,
    cadvisor_series,
    write_openmetrics,
)

from foresight_lib import pipeline
from foresight_lib.config import load_config
from foresight_lib.errors import SourceError
from foresight_lib.runs.storage import DataRoot, RunStore

pytestmark = pytest.mark.slow

NAB_FILE = "nab_aws/realKnownCause/cpu_utilization_asg_misconfiguration.csv"
SERIES_START = pd.Timestamp("2024-05-14 02:00", tz="UTC")  # after the DAG's start_date
POINTS = 6 * 288
RUN_DATE = "2024-05-20T02:00:00"  # the end of the stored series
DOWN_DATE = "2024-05-21T02:00:00"
METRICS = ["container_cpu_usage_cores", "container_memory_working_set_bytes"]
MODELS = ["naive", "seasonal_naive", "ets", "ensemble"]


def _conf(root: Path, url: str, retries: int = 3) -> dict:
    settings = {
        "history_days": 3, "data_root": str(root / "data"),
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "artifacts")},
        "source": {"kind": "prometheus", "prometheus": {
            "url": url, "aggregation": "container", "labels": {"namespace": "shop"}, "retries": retries,
            "timeout_s": 5,
        }},
    }
    return {"models": MODELS, "metrics": METRICS, "horizons": ["5m", "15m", "30m"], "overrides": settings,
            "publish": "always"}


def _champions(tracking_uri: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return {m.name: str(m.aliases["champion"]) for m in client.search_registered_models() if "champion" in m.aliases}


@pytest.fixture(scope="module")
def usage(nab_data) -> dict[str, np.ndarray]:
    """CPU use in cores per container: nginx = NAB % / 100, app = twice that."""
    values = pd.read_csv(nab_data / NAB_FILE)["value"].to_numpy("float64")[:POINTS] / 100.0
    return {"nginx": values, "app": 2.0 * values}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, usage):
    work = tmp_path_factory.mktemp("prom-dag")
    # No Airflow retries (each would wait minutes): the source's own retries are what is tested.
    config = work / "foresight.yaml"
    defaults = (REPO_ROOT / "include" / "foresight.yaml").read_text()
    assert "\nretries: 2\n" in defaults
    config.write_text(defaults.replace("\nretries: 2\n", "\nretries: 0\n"))
    env = airflow_env(work / "airflow", FORESIGHT_CONFIG=str(config))
    migrate(env)
    openmetrics = write_openmetrics(work / "data.om", cadvisor_series(usage, int(SERIES_START.timestamp())),
                                    kind=CADVISOR_TYPES)
    tsdb = build_tsdb(openmetrics, work / "tsdb")
    with PrometheusProcess(work / "prom", storage=tsdb) as server:
        first = dag_test(env, RUN_DATE, _conf(work, server.url))
    cfg = load_config(config, overrides=pipeline.overrides_from_params(_conf(work, "http://unused")))
    latest = Path(DataRoot(cfg.data_root).latest_uri(pipeline.FORECASTS))
    before = {"champions": _champions(cfg.mlflow.tracking_uri), "latest": latest.read_bytes() if latest.exists()
              else None, "manifest": DataRoot(cfg.data_root).latest_manifest()}
    with ScriptedServer(lambda path, params: (503, "service unavailable")) as down:
        failed = dag_test(env, DOWN_DATE, _conf(work, down.url, retries=1))
        requests_seen = len(down.requests)
    after = {"champions": _champions(cfg.mlflow.tracking_uri), "latest": latest.read_bytes() if latest.exists()
             else None, "manifest": DataRoot(cfg.data_root).latest_manifest()}
    return {"env": env, "cfg": cfg, "first": first, "failed": failed, "before": before, "after": after,
            "requests_seen": requests_seen, "work": work}


def test_the_dag_runs_end_to_end_on_prometheus(runs, usage):
    first = runs["first"]
    assert first["state"] == "success", first
    assert set(first["tasks"].values()) == {"success"}, first["tasks"]
    store = RunStore(runs["cfg"].data_root, pipeline.run_key_for(RUN_DATE))
    raw = store.read_frame(pipeline.RAW)
    assert sorted(raw["unique_id"].unique()) == sorted(
        f"{metric}/shop/web-1/{container}" for metric in METRICS for container in usage)
    end = pd.Timestamp(RUN_DATE, tz="UTC")
    assert raw["ds"].max() < end
    cpu = raw[raw["unique_id"] == "container_cpu_usage_cores/shop/web-1/app"].set_index("ds")["y"]
    offsets = ((cpu.index - SERIES_START) / pd.Timedelta("5min")).astype(int)
    np.testing.assert_allclose(cpu.to_numpy(), usage["app"][offsets], rtol=1e-9)  # the rate in cores, as stored
    series = store.read_frame(pipeline.SERIES)
    assert set(series["unit"]) == {"cores", "bytes"}
    forecasts = store.read_frame(pipeline.FORECASTS)
    assert forecasts["ds"].min() == end
    assert set(forecasts["unique_id"]) == set(raw["unique_id"])
    prefix = runs["cfg"].mlflow.model_name_prefix
    assert set(runs["before"]["champions"]) == {f"{prefix}{m}" for m in METRICS}
    assert runs["before"]["latest"] is not None


def test_prometheus_down_fails_the_run_and_keeps_what_was_published(runs):
    failed = runs["failed"]
    assert failed["state"] == "failed", failed
    assert failed["tasks"]["extract"] == "failed"
    assert failed["tasks"]["publish"] == "upstream_failed"
    assert runs["requests_seen"] >= 2, "the query was retried"
    assert runs["after"] == runs["before"]


def test_prometheus_down_is_a_clear_error_naming_the_query(tmp_path):
    with ScriptedServer(lambda path, params: (503, "service unavailable")) as down:
        with pytest.raises(SourceError) as caught:
            pipeline.extract("manual__down", None, DOWN_DATE, params=_conf(tmp_path, down.url, retries=1))
    message = str(caught.value)
    assert "container_cpu_usage_seconds_total" in message and "503" in message and down.url in message, message
