"""The nightly DAG under a real Airflow: api-server, scheduler and dag-processor.

Airflow runs on a throw-away SQLite database with the LocalExecutor, on the embedded
default (demo data) made quick by a test config (fast models, three days of history).
A run is triggered through the REST API (``/api/v2``, JWT from ``/auth/token``) and a
two-day backfill is created with ``airflow backfill create``; both must succeed.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml
from airflow_support import REPO_ROOT, VENV_BIN, airflow_env, migrate

DAG_ID = "foresight_nightly"
TRIGGERED_DATE = "2024-03-20T02:00:00Z"
BACKFILL_FROM, BACKFILL_TO = "2024-03-10", "2024-03-12"  # runs at 03-10T02:00 and 03-11T02:00
TIMEOUT_S = 900


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _test_config(root: Path) -> Path:
    """The shipped config with fast models, a short history and state under ``root``."""
    config = yaml.safe_load((REPO_ROOT / "include" / "foresight.yaml").read_text())
    config.update({
        "models": ["naive", "seasonal_naive", "ensemble"], "history_days": 3, "data_root": str(root / "data"),
        "mlflow": {**config.get("mlflow", {}), "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
                   "artifact_location": str(root / "artifacts")},
    })
    validation = config.setdefault("validation", {})
    validation["suite_dir"] = str(REPO_ROOT / validation.get("suite_dir", "include/gx"))
    path = root / "foresight.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Airflow:
    """api-server, scheduler and dag-processor as child processes, stopped on ``close``."""

    def __init__(self, home: Path, root: Path):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = airflow_env(
            home,
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.base}/execution/",
            AIRFLOW__API__BASE_URL=self.base,
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            AIRFLOW__API__SECRET_KEY=secrets.token_hex(16),
            AIRFLOW__CORE__PARALLELISM="4",
            AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL="5",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
            FORESIGHT_CONFIG=str(_test_config(root)),
        )
        self.logs = home / "process-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.token: str | None = None

    def start(self) -> None:
        migrate(self.env)
        commands = {
            "api-server": ["api-server", "--port", str(self.port), "--host", "127.0.0.1"],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
        }
        for name, args in commands.items():
            out = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            self.procs[name] = subprocess.Popen(
                [str(VENV_BIN / "airflow"), *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=REPO_ROOT, start_new_session=True,
            )

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    def check_alive(self) -> None:
        dead = {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise AssertionError(f"Airflow processes exited: {dead}\n{self.log_tail()}")

    # -- REST API --------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return requests.request(method, f"{self.base}{path}", headers=headers, timeout=30, **kwargs)

    def wait_ready(self, timeout: float = 240) -> None:
        """The API answers, a token is issued and the dag-processor has serialized the DAG."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if self.token is None:
                    resp = requests.get(f"{self.base}/auth/token", timeout=10)
                    if resp.status_code in (200, 201):
                        self.token = resp.json()["access_token"]
                if self.token:
                    resp = self.request("GET", f"/api/v2/dags/{DAG_ID}")
                    if resp.status_code == 200:
                        return
                    last = f"{resp.status_code} {resp.text[:200]}"
            except requests.ConnectionError as exc:
                last = str(exc)
            time.sleep(2)
        raise AssertionError(f"Airflow not ready after {timeout:.0f} s ({last})\n{self.log_tail()}")

    def runs(self) -> list[dict]:
        resp = self.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", params={"limit": 100})
        resp.raise_for_status()
        return resp.json()["dag_runs"]

    def wait_runs(self, pick, count: int, timeout: float = TIMEOUT_S) -> list[dict]:
        """Poll until ``count`` runs chosen by ``pick`` are finished; returns them."""
        deadline = time.monotonic() + timeout
        chosen: list[dict] = []
        while time.monotonic() < deadline:
            self.check_alive()
            chosen = [r for r in self.runs() if pick(r)]
            if len(chosen) >= count and all(r["state"] in ("success", "failed") for r in chosen):
                return chosen
            time.sleep(5)
        raise AssertionError(f"runs not finished after {timeout:.0f} s: "
                             f"{[(r['dag_run_id'], r['state']) for r in chosen]}\n{self.log_tail()}")

    def failed_tasks(self, run_id: str) -> list[str]:
        resp = self.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
        resp.raise_for_status()
        return [f"{t['task_id']}: {t['state']}" for t in resp.json()["task_instances"] if t["state"] != "success"]


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    server = Airflow(tmp_path_factory.mktemp("airflow-scheduler"), tmp_path_factory.mktemp("foresight"))
    try:
        server.start()
        server.wait_ready()
        resp = server.request("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
        assert resp.status_code == 200, resp.text
        yield server
    finally:
        server.close()


@pytest.mark.slow
def test_run_triggered_through_the_rest_api_succeeds(airflow):
    resp = airflow.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={
        "logical_date": TRIGGERED_DATE, "conf": {"horizons": ["5m", "15m", "30m"]},
    })
    assert resp.status_code in (200, 201), resp.text
    run_id = resp.json()["dag_run_id"]
    (run,) = airflow.wait_runs(lambda r: r["dag_run_id"] == run_id, 1)
    assert run["state"] == "success", airflow.failed_tasks(run_id)


@pytest.mark.slow
def test_two_day_backfill_succeeds(airflow):
    proc = subprocess.run(
        [str(VENV_BIN / "airflow"), "backfill", "create", "--dag-id", DAG_ID,
         "--from-date", BACKFILL_FROM, "--to-date", BACKFILL_TO],
        env=airflow.env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = airflow.wait_runs(lambda r: r["run_type"] == "backfill", 2)
    assert sorted(r["logical_date"][:10] for r in runs) == ["2024-03-10", "2024-03-11"]
    for run in runs:
        assert run["state"] == "success", airflow.failed_tasks(run["dag_run_id"])
    data = json.loads(json.dumps(runs))
    assert all(r["dag_id"] == DAG_ID for r in data)
