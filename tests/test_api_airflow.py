"""The operations API behind a real Airflow api-server: its JWT, its roles and its REST API.

Airflow (api-server and dag-processor, SQLite, the simple auth manager with an admin and
a viewer) loads the plugin from the repository's ``plugins/``. Checked here:

- every endpoint but ``/foresight/metrics`` answers 401 without a token, with a bad bearer
  token and with a bad ``_token`` cookie; a valid token (header or the UI's cookie) works;
- a viewer reads (dashboard, models, predict, jobs) but gets 403 on train, cancel and
  activate;
- ``/foresight/metrics`` needs ``FORESIGHT_METRICS_TOKEN`` when it is set;
- a training job goes through Airflow's REST API: started with the caller's token,
  listed, followed, cancelled (its pending tasks skipped, its last task failed, so that the
  scheduler's own rule settles the run ``failed`` once the teardown has run); an unknown
  job is 404;
- a POST with the admin's cookie from another origin (a page on another port) changes
  nothing (403), the same POST from the UI's origin works; a viewer's request naming a
  foreign ``Host`` makes the api-server call no other address.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from airflow_support import REPO_ROOT, VENV_BIN, airflow_env, migrate, run_python
from api_support import METRIC, SOURCE_METRIC, build_world, history

from foresight_lib.orchestration.dags import NIGHTLY_DAG
from foresight_lib.orchestration.ports import free_port
from foresight_lib.orchestration.rest import AirflowClient

pytestmark = pytest.mark.slow

PASSWORDS = {"admin": "admin-" + secrets.token_hex(4), "viewer": "viewer-" + secrets.token_hex(4)}
METRICS_TOKEN = "metrics-" + secrets.token_hex(8)
READY_S = 300


class ApiServer:
    """Airflow's api-server and dag-processor on SQLite with the plugin from ``plugins/``."""

    def __init__(self, home: Path, config: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        home.mkdir(parents=True, exist_ok=True)
        self.passwords = home / "passwords.json"
        self.passwords.write_text(json.dumps(PASSWORDS))
        self.env = airflow_env(
            home,
            AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO_ROOT / "plugins"),
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,viewer:viewer",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(self.passwords),
            AIRFLOW__API__BASE_URL=self.base, AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32), AIRFLOW__API__SECRET_KEY=secrets.token_hex(16),
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5", AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
            FORESIGHT_CONFIG=str(config), FORESIGHT_METRICS_TOKEN=METRICS_TOKEN,
            OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
        )
        self.logs = home / "process-logs"
        self.logs.mkdir(exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        migrate(self.env)
        for name, args in {"api-server": ["api-server", "--port", str(self.port), "--host", "127.0.0.1"],
                           "dag-processor": ["dag-processor"]}.items():
            out = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            self.procs[name] = subprocess.Popen([str(VENV_BIN / "airflow"), *args], env=self.env, stdout=out,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
                                                start_new_session=True)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
                         for p in sorted(self.logs.glob("*.log")))

    def token(self, user: str) -> str:
        with AirflowClient(self.base) as client:
            return client.login(user, PASSWORDS[user])

    def wait_ready(self) -> str:
        """The API issues tokens and the dag-processor has stored the nightly DAG; returns the admin's token."""
        def alive() -> None:
            dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            assert not dead, f"Airflow exited: {dead}\n{self.log_tail()}"

        with AirflowClient(self.base) as client:
            try:
                client.wait_ready(READY_S, passwords=self.passwords, check=alive)
            except TimeoutError as exc:
                raise AssertionError(f"{exc}\n{self.log_tail()}") from exc
            return client.token


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-airflow")
    world = build_world(root / "world")
    server = ApiServer(root / "airflow", world["config"])
    server.start()
    try:
        admin = server.wait_ready()
        yield {"server": server, "admin": admin, "viewer": server.token("viewer"), "world": world}
    finally:
        server.close()


def call(airflow, method: str, path: str, token: str | None = None, cookie: str | None = None,
         headers: dict | None = None, **kwargs):
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    cookies = {"_token": cookie} if cookie else {}
    return requests.request(method, f"{airflow['server'].base}/foresight{path}", headers=headers, cookies=cookies,
                            timeout=60, **kwargs)


def endpoints(airflow) -> list[tuple[str, str]]:
    """Every operation of the schema (path parameters filled in) plus the page, docs and static files."""
    schema = call(airflow, "GET", "/openapi.json", airflow["admin"]).json()
    out = [("GET", "/"), ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/static/dashboard.js")]
    for path, methods in schema["paths"].items():
        filled = path.replace("{metric}", METRIC).replace("{version}", "1").replace("{job_id}", "nope")
        out += [(method.upper(), filled) for method in methods if path != "/metrics"]
    return out


def test_every_endpoint_but_metrics_refuses_a_missing_or_bad_token_with_401(airflow):
    found = endpoints(airflow)
    assert ("POST", "/predict") in found and ("POST", "/models/cpu_cores/versions/1/activate") in found
    refused = {}
    for method, path in found:
        for how, kwargs in {"none": {}, "bad bearer": {"token": "not-a-jwt"},
                            "bad cookie": {"cookie": "not-a-jwt"}}.items():
            answer = call(airflow, method, path, json={}, **kwargs)
            if answer.status_code != 401:
                refused[(method, path, how)] = (answer.status_code, answer.text[:200])
    assert not refused, refused


def test_a_valid_token_or_the_uis_cookie_works(airflow):
    admin = airflow["admin"]
    assert call(airflow, "GET", "/models", admin).status_code == 200
    page = call(airflow, "GET", "/", cookie=admin)
    assert page.status_code == 200 and 'id="forecast-chart"' in page.text
    assert call(airflow, "GET", "/overview", cookie=admin).status_code == 200
    assert call(airflow, "GET", "/docs", cookie=admin).status_code == 200
    for path in ("/openapi.json", "/static/dashboard.js", "/static/swagger/swagger-ui-bundle.js"):
        assert call(airflow, "GET", path, cookie=admin).status_code == 200, path  # what the page and docs load
    predicted = call(airflow, "POST", "/predict", admin, json={"history": history(airflow["world"]["bundle"]),
                                                               "steps": 6})
    assert predicted.status_code == 200, predicted.text
    assert len(predicted.json()["forecasts"]) == 6


def test_a_viewer_reads_but_may_not_train_cancel_or_activate(airflow):
    viewer = airflow["viewer"]
    assert call(airflow, "GET", "/models", viewer).status_code == 200
    assert call(airflow, "GET", "/train/jobs", viewer).status_code == 200
    assert call(airflow, "POST", "/predict", viewer, json={"history": history(airflow["world"]["bundle"]),
                                                           "steps": 1}).status_code == 200
    for method, path, body in (("POST", "/train", {"publish": "never"}), ("POST", "/train/jobs/x/cancel", None),
                               ("POST", f"/models/{METRIC}/versions/2/activate", None)):
        answer = call(airflow, method, path, viewer, json=body)
        assert answer.status_code == 403, (path, answer.status_code, answer.text)


def test_metrics_needs_its_own_token_when_set(airflow):
    assert call(airflow, "GET", "/metrics").status_code == 401
    assert call(airflow, "GET", "/metrics", airflow["admin"]).status_code == 401  # not an Airflow JWT
    ok = call(airflow, "GET", "/metrics", METRICS_TOKEN)
    assert ok.status_code == 200 and "foresight_api_requests_total" in ok.text


def test_a_training_job_is_started_followed_and_cancelled_through_airflows_rest_api(airflow):
    admin = airflow["admin"]
    started = call(airflow, "POST", "/train", admin, json={"models": ["naive"], "publish": "never",
                                                           "metrics": [SOURCE_METRIC], "note": "api test"})
    assert started.status_code == 201, started.text
    job_id = started.json()["job_id"]
    assert started.json()["conf"] == {"models": ["naive"], "publish": "never", "metrics": [SOURCE_METRIC]}
    listed = call(airflow, "GET", "/train/jobs", admin).json()
    assert job_id in [job["job_id"] for job in listed["jobs"]]
    detail = call(airflow, "GET", f"/train/jobs/{job_id}", admin)
    assert detail.status_code == 200 and detail.json()["state"] in ("queued", "running"), detail.text
    foreign = call(airflow, "POST", f"/train/jobs/{job_id}/cancel", cookie=admin,
                   headers={"Origin": f"http://127.0.0.1:{free_port()}"})
    assert foreign.status_code == 403, foreign.text
    assert call(airflow, "GET", f"/train/jobs/{job_id}", admin).json()["state"] in ("queued", "running")
    cancelled = call(airflow, "POST", f"/train/jobs/{job_id}/cancel", admin)
    assert cancelled.status_code == 200, cancelled.text
    # Airflow skips every pending task but the teardown, which releases the date's run lock; the
    # last task before it is failed too, so that the run cannot settle "success".
    tasks = {t["task_id"]: t["state"] for t in cancelled.json()["tasks"]}
    assert tasks.get("publish") == "failed", tasks
    assert tasks and sum(state == "skipped" for state in tasks.values()) >= len(tasks) - 2, tasks
    assert cancelled.json()["state"] in ("failed", "queued"), cancelled.text
    # The teardown runs (here: marked done through the REST API), then the scheduler settles the
    # run's state with its own rule (here: called as the scheduler calls it; no scheduler runs).
    released = requests.patch(f"{airflow['server'].base}/api/v2/dags/{NIGHTLY_DAG}/dagRuns/{job_id}"
                              "/taskInstances/release", json={"new_state": "success"},
                              headers={"Authorization": f"Bearer {admin}"}, timeout=60)
    assert released.status_code == 200, released.text
    settled = run_python(SETTLE.format(dag_id=NIGHTLY_DAG, run_id=job_id), airflow["server"].env)
    assert settled["state"] == "failed", settled
    detail = call(airflow, "GET", f"/train/jobs/{job_id}", admin).json()
    assert detail["state"] == "failed" and detail["error"]["task_id"] == "publish", detail
    missing = call(airflow, "GET", "/train/jobs/no-such-run", admin)
    assert missing.status_code == 404 and "no-such-run" in missing.text


def test_a_password_in_a_runs_settings_reaches_airflow_but_no_answer_or_api_server_log(airflow):
    secret = "pl4nted-" + secrets.token_hex(6)
    url = f"http://ops:{secret}@prometheus.internal:9090"
    started = call(airflow, "POST", "/train", airflow["admin"], json={
        "publish": "never", "note": f"source {url}",
        "overrides": {"source": {"kind": "prometheus", "prometheus": {"url": url}}}})
    assert started.status_code == 201, started.text
    job_id = started.json()["job_id"]
    answers = [started, call(airflow, "GET", "/train/jobs", airflow["viewer"]),
               call(airflow, "GET", f"/train/jobs/{job_id}", airflow["viewer"]),
               call(airflow, "POST", f"/train/jobs/{job_id}/cancel", airflow["admin"])]
    assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers]
    for answer in answers:
        assert secret not in answer.text, answer.text
    assert "ops:***@prometheus.internal" in answers[1].text
    logs = {p.name: p.read_text(errors="replace") for p in airflow["server"].logs.glob("*.log")}
    assert logs and not [name for name, text in logs.items() if secret in text]


SETTLE = """
    from sqlalchemy import select
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == {dag_id!r}, DagRun.run_id == {run_id!r}))
        run.state = "running"  # as the cancel leaves it while the teardown runs
        run.dag = DBDagBag().get_dag_for_run(dag_run=run, session=session)
        run.update_state(session=session, execute_callbacks=False)
        report({{"state": str(run.state)}})
"""


class Listener:
    """A TCP port that records every connection made to it (and answers nothing)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def test_a_viewers_foreign_host_header_makes_the_server_call_no_other_address(airflow):
    listener = Listener()
    try:
        for path in ("/train/jobs", "/train/jobs/no-such-run"):
            answer = call(airflow, "GET", path, airflow["viewer"], headers={"Host": f"127.0.0.1:{listener.port}"})
            assert answer.status_code in (200, 404), answer.text
        time.sleep(0.5)
        assert listener.connections == 0
    finally:
        listener.close()


def test_a_cross_origin_post_with_the_admins_cookie_changes_nothing(airflow):
    """Last: the POST from the UI's own origin moves the champion."""
    admin = airflow["admin"]
    world = airflow["world"]["versions"]

    def champion() -> int:
        models = call(airflow, "GET", f"/models?metric={METRIC}", admin).json()
        return models["models"][0]["aliases"]["champion"]

    before = champion()
    assert before == world["champion"]
    path = f"/models/{METRIC}/versions/{world['challenger']}/activate"
    for headers in ({"Origin": f"http://127.0.0.1:{free_port()}"}, {"Origin": "http://localhost.evil.example"},
                    {"Referer": f"http://localhost:{free_port()}/attack.html"}, {}):
        answer = call(airflow, "POST", path, cookie=admin, headers=headers)
        assert answer.status_code == 403, (headers, answer.status_code, answer.text)
    assert champion() == before
    started = call(airflow, "POST", "/train", cookie=admin, headers={"Origin": "http://localhost:1"},
                   json={"publish": "never"})
    assert started.status_code == 403
    same = call(airflow, "POST", path, cookie=admin, headers={"Origin": airflow["server"].base})
    assert same.status_code == 200, same.text
    assert same.json()["activated_by"] == "admin" and champion() == world["challenger"]
