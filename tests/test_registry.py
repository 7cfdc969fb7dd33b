"""The MLflow side of a safe publish, on a real local MLflow store (SQLite) and real servers.

- a re-run never deletes the run a champion was logged in (``retire_earlier_runs``);
- snapshot -> register -> restore leaves the aliases exactly as they were, and
  ``discard_versions`` leaves no orphan version;
- ``check_tracking_server`` fails within its deadline whatever the server does, and
  MLflow's own HTTP client gives up in bounded time.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from conftest import make_daily_series
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prom_server import ScriptedServer, wait_for

from foresight_lib.errors import ConfigError, SourceError
from foresight_lib.forecasting.backtest import BacktestSpec, run_backtest
from foresight_lib.forecasting.champion import ChampionBundle, HistoryMismatchError
from foresight_lib.orchestration.ports import free_port
from foresight_lib.tracking import mlflow_runs, mlflow_store, registry

MODELS = ["naive", "seasonal_naive"]
SECRET = "s3cr3t-pw"
MARGIN_S = 3.0
"""Slack over a deadline for a loaded 2-core machine."""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-registry")
    experiment_id = mlflow_store.configure(root=root, experiment="foresight-registry-test")
    return {"root": root, "experiment_id": experiment_id, "client": MlflowClient()}


@pytest.fixture(scope="module")
def backtest():
    frame = make_daily_series(days=4, n_series=2, seed=11)
    spec = BacktestSpec(models=MODELS, n_jobs=1, history_days=2, future=True, keep_models=True)
    result = run_backtest(frame, spec)
    return {"result": result, "bundle": ChampionBundle.from_result(result, "naive", frame)}


@pytest.fixture
def elsewhere(store):
    """A test that points MLflow at another store; the module's store is set back after it."""
    yield
    root = store["root"]
    mlflow_store.configure(f"sqlite:///{root / 'mlflow.db'}", root=root, experiment="foresight-registry-test")


def nightly(key: str, backtest) -> str:
    return mlflow_runs.log_nightly(key, backtest["result"], {}, {}, None)["parent_run_id"]


def register(backtest, metric: str, score: float, current: float, parent: str) -> dict:
    """A registration with the scores given, so the alias rule's outcome is known in advance."""
    return registry.register_champion(backtest["bundle"], metric, new_score=score,
                                      current_score_fn=lambda champ: current, run_key="k", parent_run_id=parent)


def stage(client: MlflowClient, run_id: str) -> str:
    return client.get_run(run_id).info.lifecycle_stage


def children_of(client: MlflowClient, experiment_id: str, parent: str) -> list[str]:
    runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'",
                              run_view_type=ViewType.ALL)
    return [r.info.run_id for r in runs]


# ---------------------------------------------------------------------------
# A re-run keeps the champion's run


def test_rerun_keeps_the_run_behind_the_champion_and_deletes_the_others(store, backtest):
    client, exp = store["client"], store["experiment_id"]
    key = "scheduled__2024-03-04T00:00:00+00:00"
    first = nightly(key, backtest)
    champion = register(backtest, "cpu", 1.0, 0.0, first)
    assert champion["alias"] == "champion"
    killed = nightly(key, backtest)  # a re-run killed before it registered anything
    rerun = nightly(key, backtest)
    challenger = register(backtest, "cpu", 2.0, 1.0, rerun)  # the re-run only produced a challenger
    assert challenger["alias"] == "challenger"
    # logging deletes nothing any more: every attempt is still there until the publish succeeded
    assert {stage(client, run) for run in (first, killed, rerun)} == {"active"}

    out = mlflow_runs.retire_earlier_runs(key, rerun)

    assert out["kept"] == {first: [f"foresight-cpu/{champion['version']}"]}
    killed_family = [*children_of(client, exp, killed), killed]
    assert sorted(out["deleted"]) == sorted(killed_family)
    assert len(killed_family) == 1 + len(MODELS)
    assert {stage(client, run) for run in killed_family} == {"deleted"}
    for run in [first, *children_of(client, exp, first)]:
        kept = client.get_run(run)
        assert kept.info.lifecycle_stage == "active"
        assert kept.data.tags[mlflow_runs.SUPERSEDED_TAG] == rerun
    assert stage(client, rerun) == "active"
    mv = client.get_model_version_by_alias("foresight-cpu", "champion")
    assert mv.run_id == first and stage(client, mv.run_id) == "active"
    # the version's logged model names the parent as its source run, without a copy of the parent's metrics
    logged = client.get_logged_model(mv.source.removeprefix("models:/").split("/", 1)[0])
    assert logged.source_run_id == first and client.get_run(first).data.metrics
    assert not logged.metrics, "the parent's metrics are not copied onto every champion"
    model = mlflow.pyfunc.load_model("models:/foresight-cpu@champion")
    history = make_daily_series(days=1, n_series=2, seed=11).groupby("unique_id").tail(6)
    assert len(model.predict(history, params={"horizons": "5m"})) == 2
    # a second retire has nothing left to delete, and keeps the champion's run
    again = mlflow_runs.retire_earlier_runs(key, rerun)
    assert again["deleted"] == [] and set(again["kept"]) == {first}


def test_retire_refuses_a_run_that_is_not_a_parent_of_the_key(store, backtest):
    parent = nightly("manual__2024-03-06", backtest)
    with pytest.raises(ConfigError, match="not an active parent run of run key other"):
        mlflow_runs.retire_earlier_runs("other", parent)
    assert mlflow_runs.retire_earlier_runs("manual__2024-03-06", parent) == {"deleted": [], "kept": {}}


# ---------------------------------------------------------------------------
# The registered champion refuses the wrong history


def next_actuals(bundle: ChampionBundle, values: list[float]) -> pd.DataFrame:
    """``values`` as the next actuals of every series the bundle knows."""
    step = pd.Timedelta("5min")
    return pd.concat([pd.DataFrame({"unique_id": uid, "y": values,
                                    "ds": pd.date_range(last + step, periods=len(values), freq=step)})
                      for uid, last in bundle.last_ds.items()], ignore_index=True)


def test_registered_champion_refuses_another_metrics_counter_unless_told_to_warn(store, backtest, caplog):
    bundle = backtest["bundle"]
    parent = nightly("manual__2024-03-10", backtest)
    version = register(backtest, "cores", 1.0, 0.0, parent)["version"]
    tags = store["client"].get_model_version("foresight-cores", str(version)).tags
    assert (tags["unit"], tags["nonnegative"], tags["counter"]) == ("cores", "true", "false")
    assert float(tags["trained_p99"]) == pytest.approx(bundle.profiles["cpu_cores"].high, rel=1e-5)
    model = mlflow.pyfunc.load_model("models:/foresight-cores@champion")
    params = {p["name"]: p["default"] for p in model.metadata.signature.params.to_dict()}
    assert params == {"horizons": "5m,15m,30m", "check_history": "raise", "history_scale_factor": 100.0,
                      "allow_new_series": True, "max_gap_points": 12}

    own = next_actuals(bundle, [5.0, 5.5, 6.0])
    assert len(model.predict(own, params={"horizons": "15m"})) == 2 * 3  # its own metric: accepted
    ds = pd.date_range("2024-03-03 22:00", periods=300, freq="5min", tz="UTC")  # a new series: one season at least
    counter = pd.DataFrame({"unique_id": "container_cpu_usage_seconds_total/web-1", "ds": ds,
                            "y": 1.5e6 + np.cumsum(np.full(300, 300.0))})
    with pytest.raises(HistoryMismatchError, match=r"web-1.*cpu_cores \(cores\).*like a counter"):
        model.predict(counter)
    with caplog.at_level(logging.WARNING, logger="foresight_lib.forecasting.champion"):
        fc = model.predict(counter, params={"check_history": "warn", "horizons": "5m"})
    assert len(fc) == 1 and fc["yhat"].iloc[0] > 1e6
    assert "Forecasting anyway" in caplog.text and "container_cpu_usage_seconds_total/web-1" in caplog.text
    with pytest.raises(HistoryMismatchError, match="limit 100x"):
        model.predict(own.assign(y=own["y"] * 1e4))
    assert len(model.predict(own.assign(y=own["y"] * 1e4), params={"history_scale_factor": 1e5})) == 2 * 6
    # a usage forecast never goes below zero, bounds included
    low = model.predict(next_actuals(bundle, [0.3, 0.1, 0.0]))
    assert (low[[c for c in low.columns if c.startswith("yhat")]] >= 0).all().all()
    assert (low["yhat_lo_95"] == 0).any()


# ---------------------------------------------------------------------------
# Snapshot, restore, discard


def test_failed_publish_restores_aliases_exactly_and_leaves_no_orphan_version(store, backtest):
    client = store["client"]
    before_run = nightly("manual__2024-03-07", backtest)
    v1 = register(backtest, "mem", 1.0, 0.0, before_run)["version"]
    v2 = register(backtest, "mem", 3.0, 1.0, before_run)["version"]
    snapshot = json.loads(json.dumps(registry.snapshot_aliases(["mem", "disk"], "foresight-")))
    assert snapshot == {"foresight-disk": {"champion": None, "challenger": None},
                        "foresight-mem": {"champion": v1, "challenger": v2}}
    assert registry.champion_versions(["mem", "disk"], "foresight") == {"disk": None, "mem": v1}

    attempt = nightly("manual__2024-03-08", backtest)  # the publish that fails after registering
    v3 = register(backtest, "mem", 0.5, 1.0, attempt)
    disk = register(backtest, "disk", 1.0, 0.0, attempt)
    assert v3["alias"] == "champion" and disk["alias"] == "champion"
    assert registry.champion_versions(["mem", "disk"]) == {"disk": disk["version"], "mem": v3["version"]}

    registry.restore_aliases(snapshot)

    assert registry.snapshot_aliases(["mem", "disk"]) == snapshot
    assert client.get_registered_model("foresight-disk").aliases == {}
    created = registry.versions_from_run(attempt, "foresight")
    assert created == [("foresight-disk", disk["version"]), ("foresight-mem", v3["version"])]
    out = registry.discard_versions([*[list(v) for v in created], ("foresight-mem", v1), ("foresight-mem", 99)])
    assert out["deleted"] == [["foresight-disk", disk["version"]], ["foresight-mem", v3["version"]]]
    assert out["kept"] == [["foresight-mem", v1, ["champion"]]]
    assert registry.versions_from_run(attempt) == []
    assert sorted(int(mv.version) for mv in client.search_model_versions("name = 'foresight-mem'")) == [v1, v2]
    for name, number in created:
        with pytest.raises(MlflowException, match="not found"):
            client.get_model_version(name, str(number))
    assert registry.load_champion("mem") is not None
    assert int(client.get_model_version_by_alias("foresight-mem", "challenger").version) == v2
    # the failed attempt's run is no longer a source: a later successful publish deletes it
    assert registry.source_versions([attempt, before_run]) == {before_run: [("foresight-mem", v1),
                                                                            ("foresight-mem", v2)]}


def test_restore_reports_an_alias_it_cannot_set(store, backtest):
    parent = nightly("manual__2024-03-09", backtest)
    version = register(backtest, "net", 1.0, 0.0, parent)["version"]
    with pytest.raises(registry.RegistryError, match=r"foresight-net@challenger -> 99"):
        registry.restore_aliases({"foresight-net": {"champion": version, "challenger": 99}})
    assert registry.champion_versions(["net"]) == {"net": version}


def test_a_registry_that_fails_is_not_taken_for_no_champion(store, backtest, http_limits):
    mlflow_store.apply_http_limits(1, 0)
    dead = f"http://127.0.0.1:{free_port()}"
    try:
        mlflow.set_registry_uri(dead)
        started = time.monotonic()
        with pytest.raises(MlflowException):
            registry.register_champion(backtest["bundle"], "cpu", new_score=0.0, current_score_fn=lambda c: 1.0)
        with pytest.raises(registry.RegistryError, match="cannot read the aliases of registered model foresight-cpu"):
            registry.snapshot_aliases(["cpu"])
        assert time.monotonic() - started < 2 * MARGIN_S
    finally:
        mlflow.set_registry_uri(mlflow.get_tracking_uri())


# ---------------------------------------------------------------------------
# Fail fast on a dead store


class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers, or answers one byte at a time."""

    def __init__(self, trickle_s: float | None = None):
        self.trickle_s = trickle_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        self.accepts = 0

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepts += 1
            self.conns.append(conn)
            if self.trickle_s is not None:
                threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        payload = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 100_000
        for i in range(len(payload)):
            if self.stop.wait(self.trickle_s):
                return
            try:
                conn.sendall(payload[i:i + 1])
            except OSError:
                return

    def __enter__(self) -> SilentServer:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for conn in self.conns:
            conn.close()
        self.sock.close()


@pytest.fixture
def http_limits(monkeypatch):
    """MLflow's HTTP limits as the user left them (unset), whatever earlier tests configured."""
    for name in (mlflow_store.HTTP_TIMEOUT_ENV, mlflow_store.HTTP_RETRIES_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(mlflow_store, "_own_env", {})


def with_password(url: str) -> str:
    return url.replace("http://", f"http://foresight:{SECRET}@")


def assert_fails_fast(uri: str, timeout_s: float, match: str) -> str:
    started = time.monotonic()
    with pytest.raises(SourceError, match=match) as caught:
        mlflow_store.check_tracking_server(uri, timeout_s=timeout_s)
    assert time.monotonic() - started < timeout_s + MARGIN_S
    message = str(caught.value)
    assert SECRET not in message and "***" in message
    assert "mlflow.tracking_uri" in message
    return message


def test_check_fails_fast_on_a_refused_port():
    port = free_port()
    message = assert_fails_fast(with_password(f"http://127.0.0.1:{port}"), 5, "cannot be reached")
    assert f"127.0.0.1:{port}" in message


@pytest.mark.parametrize("trickle_s", [None, 0.05], ids=["silent", "trickling"])
def test_check_fails_fast_on_a_server_that_never_answers(trickle_s):
    with SilentServer(trickle_s) as server:
        message = assert_fails_fast(with_password(server.url), 1.5, r"did not answer within 1.5 s")
        assert server.url.removeprefix("http://") in message
        assert server.accepts >= 1


def test_check_names_refused_credentials_without_showing_them(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "foresight")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    answer = lambda path, fields: (200, "OK") if path == "/health" else (401, '{"error_code": "UNAUTHENTICATED"}')
    with ScriptedServer(answer) as server:
        with pytest.raises(SourceError, match="refused the credentials") as caught:
            mlflow_store.check_tracking_server(server.url, timeout_s=5)
    assert SECRET not in str(caught.value) and "MLFLOW_TRACKING_PASSWORD" in str(caught.value)
    assert [path for path, _ in server.requests] == ["/health", "/api/2.0/mlflow/experiments/search"]
    assert server.requests[1][1]["_authorization"].startswith("Basic ")


def test_check_of_local_and_database_stores(tmp_path, elsewhere):
    mlflow_store.check_tracking_server(f"sqlite:///{tmp_path / 'new' / 'folder' / 'mlflow.db'}", timeout_s=5)
    assert (tmp_path / "new" / "folder").is_dir()
    mlflow_store.configure(root=tmp_path / "existing", experiment="check")
    mlflow_store.check_tracking_server(f"sqlite:///{tmp_path / 'existing' / 'mlflow.db'}", timeout_s=5)
    mlflow_store.check_tracking_server(str(tmp_path / "plain"), timeout_s=5)

    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(SourceError, match="cannot be created or written"):
        mlflow_store.check_tracking_server(f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}", timeout_s=5)
    (tmp_path / "broken.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SourceError, match="not a usable SQLite database"):
        mlflow_store.check_tracking_server(f"sqlite:///{tmp_path / 'broken.db'}", timeout_s=5)

    port = free_port()
    message = assert_fails_fast(f"postgresql://foresight:{SECRET}@127.0.0.1:{port}/mlflow", 5,
                                "postgresql://foresight:\\*\\*\\*@127.0.0.1")
    assert "install" in message or "cannot be reached" in message


def test_http_limits_bound_mlflow_and_keep_what_the_user_set(http_limits, monkeypatch):
    assert mlflow_store.apply_http_limits(1, 1) == {"MLFLOW_HTTP_REQUEST_TIMEOUT": "1",
                                                    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    with SilentServer() as server:
        started = time.monotonic()
        with pytest.raises(MlflowException, match="(?i)timed? ?out"):
            MlflowClient(server.url).search_experiments(max_results=1)
        # at most 2 tries of 1 s (no back-off before the first retry), not 8 tries of 120 s
        assert time.monotonic() - started < 2 + MARGIN_S
        assert 1 <= server.accepts <= 2
    assert mlflow_store.apply_http_limits(30, 2)["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"  # its own value moves
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    assert mlflow_store.apply_http_limits(30, 2)["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"  # the user's stays
    with pytest.raises(ConfigError, match="http_timeout_s"):
        mlflow_store.apply_http_limits(0, 2)


# ---------------------------------------------------------------------------
# A real MLflow server


@pytest.mark.slow
def test_real_mlflow_server_passes_then_fails_fast_once_it_dies(tmp_path, http_limits, elsewhere):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--default-artifact-root", str(tmp_path / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # its own group: the server and its workers
    )
    try:
        wait_for(lambda: _up(url, server, tmp_path / "server.log"), timeout=90, what=f"mlflow server at {url}")
        mlflow_store.check_tracking_server(url, timeout_s=10)
        experiment_id = mlflow_store.configure(url, experiment="foresight-server", http_timeout_s=2, http_max_retries=1)
        run = MlflowClient(url).create_run(experiment_id)
        os.killpg(server.pid, signal.SIGKILL)  # the server dies mid-run
        server.wait(timeout=30)
        assert_fails_fast(with_password(url), 3, "cannot be reached")
        started = time.monotonic()
        with pytest.raises(MlflowException):
            MlflowClient(url).log_param(run.info.run_id, "after", "death")
        assert time.monotonic() - started < 2 * 2 + 2 + MARGIN_S  # two tries, one short back-off
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        log.close()


def _up(url: str, server: subprocess.Popen, log: Path) -> bool:
    if server.poll() is not None:
        raise RuntimeError(f"mlflow server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
    try:
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False

