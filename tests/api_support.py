"""A small Foresight world for the operations API: a config, a real MLflow registry and a publish.

``build_world(root)`` backtests naive and seasonal naive on two days of 5-minute CPU data,
logs the nightly run to a throw-away MLflow SQLite store, registers versions of
``foresight-cpu_cores`` the way the publish does, and publishes a ``latest/summary.json``
that agrees with the aliases:

- v1: the champion (scores in its nightly run);
- v2: the challenger, from a second nightly run (scores too);
- v3: registered outside a nightly run (no backtest scores);
- v4: a version of ``memory_bytes`` registered under ``foresight-cpu_cores`` by mistake.

Used by the API tests, the schema fuzz and ``benchmarks/predict_latency.py``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import yaml
from conftest import make_daily_series

from foresight_lib.orchestration.dags import NIGHTLY_DAG

REPO = Path(__file__).resolve().parents[1]
METRIC = "cpu_cores"
NAME = f"foresight-{METRIC}"
SOURCE_METRIC = "container_cpu_usage_seconds_total"
"""A metric the configured (demo) source offers: what a training job may ask for."""
FREQ = pd.Timedelta("5min")
RUN_KEY = "2024-03-05T000000Z"


def series(days: int = 4, n_series: int = 2, seed: int = 11) -> pd.DataFrame:
    """Daily cycles plus noise, ``cpu_cores/c<i>``."""
    return make_daily_series(days, n_series, seed=seed)


def write_config(root: Path) -> Path:
    config = yaml.safe_load((REPO / "include" / "foresight.yaml").read_text())
    config.update({
        "models": ["naive", "seasonal_naive"], "history_days": 2, "data_root": str(root / "data"),
        "mlflow": {**config.get("mlflow", {}), "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
                   "artifact_location": str(root / "artifacts"), "experiment": "foresight-api-test"},
    })
    path = root / "foresight.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def build_world(root: Path) -> dict:
    """Config, registry and publish under ``root``; returns what the tests need to know."""
    from foresight_lib.forecasting.backtest import BacktestSpec, run_backtest
    from foresight_lib.forecasting.champion import ChampionBundle
    from foresight_lib.runs.storage import RunStore
    from foresight_lib.tracking import mlflow_runs, mlflow_store, registry

    root.mkdir(parents=True, exist_ok=True)
    config = write_config(root)
    mlflow_store.configure(f"sqlite:///{root / 'mlflow.db'}", artifact_location=str(root / "artifacts"),
                       experiment="foresight-api-test")
    frame = series()
    spec = BacktestSpec(models=["naive", "seasonal_naive"], n_jobs=1, history_days=2, future=True, keep_models=True)
    result = run_backtest(frame, spec)
    bundle = ChampionBundle.from_result(result, "naive", frame)
    first = mlflow_runs.log_nightly("2024-03-02T000000Z", result, {}, {}, None)["parent_run_id"]
    second = mlflow_runs.log_nightly(RUN_KEY, result, {}, {}, None)["parent_run_id"]
    v1 = registry.register_champion(bundle, METRIC, new_score=1.0, current_score_fn=lambda c: 2.0,
                                    run_key="2024-03-02T000000Z", parent_run_id=first)
    v2 = registry.register_champion(bundle, METRIC, new_score=3.0, current_score_fn=lambda c: 1.0,
                                    run_key=RUN_KEY, parent_run_id=second)
    v3 = registry.register_champion(bundle, METRIC, new_score=3.0, current_score_fn=lambda c: 1.0)
    other = registry.register_champion(bundle, "memory_bytes", new_score=1.0, current_score_fn=lambda c: 1.0)
    source = mlflow.tracking.MlflowClient().get_model_version("foresight-memory_bytes", str(other["version"])).source
    v4 = mlflow.register_model(source, NAME)
    store = RunStore(str(root / "data"), RUN_KEY)
    store.write_json("summary.json", {"run_key": RUN_KEY, "champion": "naive",
                                      "champion_versions": {METRIC: v1["version"]}})
    store.publish_latest(["summary.json"], extra={"data_interval_end": "2024-03-05T00:00:00+00:00"})
    return {"config": config, "data_root": root / "data", "bundle": bundle, "frame": frame,
            "versions": {"champion": v1["version"], "challenger": v2["version"], "unscored": v3["version"],
                         "other_metric": int(v4.version)}}


def history(bundle, uid: str = f"{METRIC}/c0", points: int = 12, start_offset: int = 1) -> list[dict]:
    """Rows right after what the champion has seen of ``uid``, as JSON."""
    last = pd.Timestamp(bundle.last_ds[uid])
    rng = np.random.default_rng(3)
    return [{"unique_id": uid, "ds": (last + (start_offset + k) * FREQ).isoformat(),
             "y": float(5 + rng.normal(0, 0.3))} for k in range(points)]


def load_plugin(name: str = "foresight_plugin_api_test"):
    """The plugin module, loaded from ``plugins/`` as Airflow loads it."""
    spec = importlib.util.spec_from_file_location(name, REPO / "plugins" / "foresight_plugin.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def reading_plugin(name: str) -> Iterator:
    """The plugin loaded under ``name``, its read access granted (Airflow's JWT: test_api_airflow)."""
    module = load_plugin(name)
    module.app.dependency_overrides[module.read_access] = lambda: "tester"
    try:
        yield module
    finally:
        sys.modules.pop(name, None)


def allow_all(plugin, user: str = "tester") -> None:
    """Stand in for Airflow's JWT check (covered against a real api-server in test_api_airflow)."""
    for dependency in (plugin.read_access, plugin.run_access, plugin.run_edit_access, plugin.dag_edit_access):
        plugin.app.dependency_overrides[dependency] = lambda: user


@contextlib.contextmanager
def served_world(root: Path, plugin_name: str = "foresight_plugin_api_test") -> Iterator[tuple]:
    """A published world under ``root`` and the plugin serving it (every user allowed, a cold model cache)."""
    import pytest

    from foresight_lib.serving.operations import predict as operations_predict

    with pytest.MonkeyPatch.context() as mp:
        built = build_world(root)
        mp.setenv("FORESIGHT_CONFIG", str(built["config"]))
        for name in ("FORESIGHT_DATA_ROOT", "MLFLOW_TRACKING_URI", "FORESIGHT_METRICS_TOKEN"):
            mp.delenv(name, raising=False)
        plugin = load_plugin(plugin_name)
        allow_all(plugin)
        operations_predict.CACHE.clear()
        yield built, plugin, mp


class FakeAirflow:
    """Answers the REST calls the jobs module makes, and records them."""

    TASKS = [{"task_id": "extract", "downstream_task_ids": ["train", "release"], "trigger_rule": "all_success"},
             {"task_id": "train", "downstream_task_ids": ["publish"], "trigger_rule": "all_success"},
             {"task_id": "publish", "downstream_task_ids": ["release"], "trigger_rule": "all_success"},
             {"task_id": "release", "downstream_task_ids": [], "trigger_rule": "all_done_setup_success"}]

    def __init__(self):
        self.calls: list[tuple[str, str, dict, str]] = []
        self.hosts: set[str] = set()
        self.task_states: dict[str, dict[str, str]] = {}
        self.logs: dict[str, list[dict]] = {}
        self.runs = {"manual__1": {"dag_run_id": "manual__1", "state": "running", "run_type": "manual",
                                   "data_interval_end": "2024-03-05T00:00:00Z", "conf": {}},
                     "manual__0": {"dag_run_id": "manual__0", "state": "success", "run_type": "manual",
                                   "data_interval_end": "2024-03-05T00:00:00Z", "conf": {}}}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        self.calls.append((request.method, request.url.path, body, request.headers.get("authorization", "")))
        self.hosts.add(f"{request.url.host}:{request.url.port}")
        path = request.url.path.removeprefix(f"/api/v2/dags/{NIGHTLY_DAG}")
        if request.method == "GET" and path == "/tasks":
            return httpx.Response(200, json={"tasks": self.TASKS, "total_entries": len(self.TASKS)})
        if request.method == "POST" and path == "/dagRuns":
            run = {"dag_run_id": "manual__2", "state": "queued", "conf": body["conf"], "run_type": "manual",
                   "logical_date": body["logical_date"]}
            self.runs["manual__2"] = run
            return httpx.Response(200, json=run)
        if request.method == "GET" and path == "/dagRuns":
            return httpx.Response(200, json={"dag_runs": list(self.runs.values()), "total_entries": len(self.runs)})
        parts = path.split("/")
        run = self.runs.get(parts[2]) if len(parts) > 2 else None
        if run is None:
            return httpx.Response(404, json={"detail": f"The DagRun with dag_id: `{NIGHTLY_DAG}` and run_id: "
                                                       f"`{parts[2] if len(parts) > 2 else ''}` was not found"})
        if len(parts) == 4 and parts[3] == "taskInstances":
            # As the api-server pages: at most 100 a call.
            tis, offset = self.task_instances(parts[2]), int(request.url.params.get("offset", 0))
            page = tis[offset:offset + min(int(request.url.params.get("limit", 50)), 100)]
            return httpx.Response(200, json={"task_instances": page, "total_entries": len(tis)})
        if len(parts) == 5 and parts[3] == "taskInstances" and request.method == "PATCH":
            self.task_states.setdefault(parts[2], {})[parts[4]] = body["new_state"]
            return httpx.Response(200, json={"task_instances": [], "total_entries": 1})
        if len(parts) == 7 and parts[5] == "logs":
            return httpx.Response(200, json={"content": self.logs.get(f"{parts[2]}/{parts[4]}", [])})
        if request.method == "PATCH":
            run["state"] = body["state"]
        return httpx.Response(200, json=run)

    def task_instances(self, run_id: str) -> list[dict]:
        tis = [{"task_id": "extract", "map_index": -1, "state": "success", "try_number": 1},
               {"task_id": "train", "map_index": 0, "state": "running", "try_number": 1}]
        tis += [{"task_id": task_id, "map_index": -1, "state": state, "try_number": 1}
                for task_id, state in self.task_states.get(run_id, {}).items()]
        return tis

    def patch(self, plugin):
        """A stand-in for ``plugin._airflow`` that sends the REST calls here."""
        from foresight_lib.serving.operations import jobs

        original = plugin._airflow

        def scripted(request):
            api = original(request)
            return jobs.AirflowApi(api.base_url, plugin._caller_token(request), transport=httpx.MockTransport(self))

        return scripted
