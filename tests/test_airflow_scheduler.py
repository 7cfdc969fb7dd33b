"""The nightly DAG under a real Airflow: api-server, scheduler and dag-processor.

Airflow runs on a throw-away SQLite database with the LocalExecutor, on the embedded
default (demo data) made quick by a test config (fast models, three days of history).
A run is triggered through the REST API (``/api/v2``, JWT from ``/auth/token``), and two-day
backfills are created with ``airflow backfill create``, five in a row while busy loops keep
every CPU core busy: on SQLite every process shares one database file, and a writer slowed
down by the load once made the backfill command fail with ``database is locked``.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from airflow_support import (
    REPO_ROOT,
    SQLITE_AIRFLOW_ENV,
    VENV_BIN,
    airflow_env,
    fast_config,
    migrate,
    run_python,
)
from sqlalchemy.exc import OperationalError

from foresight_dags.sqlite import CONNECT_ARGS, LOCK_TIMEOUT_S
from foresight_lib.orchestration.dags import NIGHTLY_DAG
from foresight_lib.orchestration.ports import free_port
from foresight_lib.orchestration.rest import FINISHED, AirflowClient, wait_for

TRIGGERED_DATE = "2024-03-20T02:00:00Z"
# Five two-day backfills one after the other: 03-01..03-03 (runs at 03-01T02:00 and
# 03-02T02:00), 03-03..03-05, ..., 03-09..03-11; none overlaps the triggered run.
BACKFILLS = 5
FIRST_BACKFILL_DAY = date(2024, 3, 1)
# The backfilled runs forecast one metric: the same tasks and database traffic, less CPU per run.
BACKFILL_CONF = {"metrics": ["container_cpu_usage_seconds_total"]}
TIMEOUT_S = 900
# The busy loops end by themselves after this long even if the test process is killed.
LOAD_LIMIT_S = 1800
BUSY_LOOP = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


class Airflow:
    """api-server, scheduler and dag-processor as child processes, stopped on ``close``."""

    def __init__(self, home: Path, root: Path):
        self.port = free_port()
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
            FORESIGHT_CONFIG=str(fast_config(root)),
        )
        self.logs = home / "process-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.client = AirflowClient(self.base)

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
        self.client.close()
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

    def log_text(self) -> str:
        """Everything the api-server, scheduler and dag-processor have written so far."""
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.logs.glob("*.log")))

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

    # -- REST API (all admins: a token for the asking) -------------------------------
    def wait_ready(self, timeout: float = 240) -> None:
        """The API answers, a token is issued and the dag-processor has serialized the DAG."""
        try:
            self.client.wait_ready(timeout, check=self.check_alive)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from exc

    def wait_runs(self, pick, count: int, timeout: float = TIMEOUT_S) -> list[dict]:
        """Poll until ``count`` runs chosen by ``pick`` are finished; returns them."""
        def finished() -> list[dict] | None:
            chosen = [r for r in self.client.runs() if pick(r)]
            return chosen if len(chosen) >= count and all(r["state"] in FINISHED for r in chosen) else None

        try:
            return wait_for(finished, "runs not finished", timeout, every=5, check=self.check_alive)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {[(r['dag_run_id'], r['state']) for r in self.client.runs() if pick(r)]}"
                                 f"\n{self.log_tail()}") from exc

    def wait_backfills_complete(self, timeout: float = 120) -> None:
        """Poll until the scheduler has marked every backfill of the DAG complete (one may run at a time)."""
        def complete() -> bool | None:
            backfills = self.client.pages("/backfills", "backfills", "to list backfills", {"dag_id": NIGHTLY_DAG})
            return True if all(b["completed_at"] is not None for b in backfills) else None

        try:
            wait_for(complete, "backfills not complete", timeout, check=self.check_alive)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from exc

    def failed_tasks(self, run_id: str) -> list[str]:
        return [f"{t['task_id']}: {t['state']}" for t in self.client.task_instances(run_id) if t["state"] != "success"]


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    server = Airflow(tmp_path_factory.mktemp("airflow-scheduler"), tmp_path_factory.mktemp("foresight"))
    try:
        server.start()
        server.wait_ready()
        server.client.unpause()
        yield server
    finally:
        server.close()


@pytest.mark.slow
def test_run_triggered_through_the_rest_api_succeeds(airflow):
    run_id = airflow.client.trigger(TRIGGERED_DATE, {"horizons": ["5m", "15m", "30m"]})["dag_run_id"]
    (run,) = airflow.wait_runs(lambda r: r["dag_run_id"] == run_id, 1)
    assert run["state"] == "success", airflow.failed_tasks(run_id)


def _backfill_windows() -> list[tuple[date, date]]:
    """``--from-date``/``--to-date`` of each backfill: two daily runs each, back to back."""
    return [(FIRST_BACKFILL_DAY + timedelta(days=2 * i), FIRST_BACKFILL_DAY + timedelta(days=2 * i + 2))
            for i in range(BACKFILLS)]


@pytest.fixture
def cpu_load():
    """One busy loop per CPU core, bounded in time, killed when the test ends."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(LOAD_LIMIT_S)], stdin=subprocess.DEVNULL,
                              start_new_session=True) for _ in range(cores)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=30)


def _savepoint_read_then_write(path: Path, connect_args: dict, writer_wait: float | None) -> list[int]:
    """``Session.begin_nested()`` reads, another connection writes a row, then the savepoint writes.

    The pattern of ``airflow backfill create`` (one savepoint per run it creates) while the
    scheduler writes. The savepoint waits ``writer_wait`` seconds for the other writer
    (``None``: until it has committed). Returns the rows of ``t`` at the end.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    engine = create_engine(f"sqlite:///{path}", connect_args=connect_args)
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    other = sqlite3.connect(path, timeout=LOCK_TIMEOUT_S, check_same_thread=False)
    writer = threading.Thread(target=lambda: (other.execute("INSERT INTO t VALUES (1)"), other.commit()))
    try:
        with Session(engine) as session:
            with session.begin_nested():
                session.execute(text("SELECT count(*) FROM t")).scalar()
                writer.start()
                writer.join(writer_wait)
                session.execute(text("INSERT INTO t VALUES (2)"))
            session.commit()
    finally:
        writer.join(LOCK_TIMEOUT_S)
        other.close()
    with engine.connect() as conn:
        rows = sorted(conn.exec_driver_sql("SELECT x FROM t").scalars())
    engine.dispose()
    return rows


def test_a_savepoint_that_reads_first_fails_at_once_on_sqlite_whatever_the_timeout(tmp_path):
    """Why a longer timeout alone is not enough: SQLite refuses the late write lock without waiting."""
    started = time.monotonic()
    with pytest.raises(OperationalError, match="database is locked"):
        _savepoint_read_then_write(tmp_path / "plain.db", {"timeout": LOCK_TIMEOUT_S}, writer_wait=None)
    assert time.monotonic() - started < LOCK_TIMEOUT_S / 2


def test_with_the_connect_args_the_savepoint_takes_the_write_lock_first(tmp_path):
    """The other writer waits for the savepoint's transaction; both rows are written."""
    # The other writer cannot commit before the savepoint's transaction ends: wait a little only.
    assert _savepoint_read_then_write(tmp_path / "immediate.db", CONNECT_ARGS, writer_wait=0.5) == [1, 2]


def test_airflow_opens_sqlite_with_the_connect_args(tmp_path):
    """Airflow's sync and async engines wait ``LOCK_TIMEOUT_S`` for a lock, in WAL mode, and a savepoint
    opens its transaction with the write lock (another connection cannot take it meanwhile)."""
    result = run_python("""
        import asyncio, sqlite3
        from airflow import settings

        db_path = settings.engine.url.database

        def probe(conn):
            pragmas = [conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in ("busy_timeout", "journal_mode")]
            conn.exec_driver_sql("SAVEPOINT probe")
            other = sqlite3.connect(db_path, timeout=0)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.rollback()
                locked = False
            except sqlite3.OperationalError:
                locked = True
            finally:
                other.close()
            conn.exec_driver_sql("RELEASE probe")
            return [*pragmas, locked]

        async def async_probe():
            async with settings.async_engine.connect() as conn:
                return await conn.run_sync(probe)

        with settings.engine.connect() as conn:
            sync = probe(conn)
        report({"sync": sync, "async": asyncio.run(async_probe())})
    """, airflow_env(tmp_path / "airflow"), timeout=300)
    wait_ms = int(LOCK_TIMEOUT_S * 1000)
    assert result == {"sync": [wait_ms, "wal", True], "async": [wait_ms, "wal", True]}


def test_make_exports_the_same_sqlite_settings():
    """``make run``/``make ui`` give Airflow the connect arguments the tests use."""
    proc = subprocess.run(["make", "-s", "--no-print-directory", "--eval", "probe-env: ; @env", "probe-env"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")})
    assert proc.returncode == 0, proc.stderr
    exported = dict(line.split("=", 1) for line in proc.stdout.splitlines() if line.startswith("AIRFLOW__DATABASE__"))
    assert exported == SQLITE_AIRFLOW_ENV


def test_make_derives_every_url_from_the_port_settings():
    """A custom ``AIRFLOW_PORT``/``MLFLOW_PORT`` reaches the execution API URL and the plugin's MLflow link."""
    proc = subprocess.run(["make", "-s", "--no-print-directory", "--eval", "probe-env: ; @env", "probe-env",
                           "AIRFLOW_PORT=8090", "MLFLOW_PORT=5090"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith("AIRFLOW__") and k != "FORESIGHT_MLFLOW_UI_URL"})
    assert proc.returncode == 0, proc.stderr
    exported = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert exported["AIRFLOW__API__PORT"] == "8090"
    assert exported["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://localhost:8090/execution/"
    assert exported["FORESIGHT_MLFLOW_UI_URL"] == "http://localhost:5090"


@pytest.mark.slow
def test_two_day_backfill_succeeds_five_times_in_a_row_under_cpu_load(airflow, cpu_load):
    """Each ``airflow backfill create`` succeeds while the scheduler runs, and so do its runs."""
    for number, (start, end) in enumerate(_backfill_windows(), 1):
        assert all(proc.poll() is None for proc in cpu_load), "the CPU load ended before the backfills"
        proc = subprocess.run(
            [str(VENV_BIN / "airflow"), "backfill", "create", "--dag-id", NIGHTLY_DAG, "--from-date", start.isoformat(),
             "--to-date", end.isoformat(), "--dag-run-conf", json.dumps(BACKFILL_CONF)],
            env=airflow.env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, f"backfill {number} ({start}..{end}):\n{proc.stdout}{proc.stderr}"
        assert "database is locked" not in proc.stdout + proc.stderr
        window = (start.isoformat(), end.isoformat())
        runs = airflow.wait_runs(lambda r, w=window: r["run_type"] == "backfill" and w[0] <= r["logical_date"] < w[1],
                                 2)
        assert sorted(r["logical_date"][:10] for r in runs) == [start.isoformat(), (start + timedelta(1)).isoformat()]
        for run in runs:
            assert run["dag_id"] == NIGHTLY_DAG and run["conf"] == BACKFILL_CONF
            assert run["state"] == "success", (number, airflow.failed_tasks(run["dag_run_id"]))
        airflow.wait_backfills_complete()
    backfill_runs = [r for r in airflow.client.runs() if r["run_type"] == "backfill"]
    assert len(backfill_runs) == 2 * BACKFILLS
    assert "database is locked" not in airflow.log_text()
