"""The plugin against other sites and its own callers: origins, addresses, secrets, headers, run checks.

In process, as ``test_api_operations``: a real MLflow registry and publish, Airflow's JWT
check stood in for, its REST API scripted (``api_support.FakeAirflow``, which records the
address of every call). The same cases against a real api-server (the UI's cookie from
another origin, a foreign ``Host``) are in ``test_api_airflow``.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import re
from pathlib import Path

import pytest
from api_support import SOURCE_METRIC, FakeAirflow, served_world
from browser_support import launched_chromium
from fastapi.testclient import TestClient

from foresight_lib.orchestration.ports import free_port
from foresight_lib.serving.operations import security

PASSWORD = "pl4nted-Secr3t-91"
PROM_URL = f"http://ops:{PASSWORD}@prometheus.internal:9090"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-security")
    with served_world(root, "foresight_plugin_security_test") as (built, plugin, mp):
        mp.setenv("AIRFLOW__API__PORT", "18080")
        mp.delenv("AIRFLOW__API__BASE_URL", raising=False)
        mp.delenv("AIRFLOW__API__HOST", raising=False)
        yield {**built, "root": root, "plugin": plugin, "client": TestClient(plugin.app)}


@pytest.fixture
def airflow(world, monkeypatch):
    fake = FakeAirflow()
    monkeypatch.setattr(world["plugin"], "_airflow", fake.patch(world["plugin"]))
    return fake


# ---------------------------------------------------------------------------
# cross-origin requests


UI = "http://localhost:8080"


@pytest.mark.parametrize(("headers", "cookies", "refused"), [
    ({"origin": "http://localhost:9999"}, {"_token": "jwt"}, True),  # another port of the same host
    ({"origin": "http://evil.localhost:8080"}, {"_token": "jwt"}, True),  # a sibling name
    ({"referer": "http://localhost:9999/page.html"}, {"_token": "jwt"}, True),
    ({"origin": "null"}, {"_token": "jwt"}, True),
    ({}, {"_token": "jwt"}, True),  # a cookie and nothing to say where the form was
    ({"origin": UI}, {"_token": "jwt"}, False),
    ({"origin": "http://127.0.0.1:8080"}, {"_token": "jwt"}, False),
    ({"referer": f"{UI}/foresight/docs"}, {"_token": "jwt"}, False),
    ({"origin": "http://airflow.example:8443"}, {"_token": "jwt"}, False),  # the request's own origin
    ({"origin": "https://proxy.example"}, {"_token": "jwt"}, False),  # listed in FORESIGHT_UI_ORIGINS
    ({"origin": "http://localhost:9999", "authorization": "Bearer jwt"}, {"_token": "jwt"}, False),
    ({"origin": "http://localhost:9999"}, {}, False),  # no cookie: authentication decides (401)
])
def test_a_state_changing_request_with_the_uis_cookie_must_come_from_the_ui(headers, cookies, refused):
    allowed = security.allowed_origins({"AIRFLOW__API__PORT": "8080",
                                        security.ORIGINS_ENV: "https://proxy.example, http://other.example"})
    reason = security.cross_origin_refusal("POST", headers, cookies, "http://airflow.example:8443", allowed)
    assert (reason is not None) == refused, reason
    assert security.cross_origin_refusal("GET", headers, cookies, "http://airflow.example:8443", allowed) is None


def test_the_default_origins_are_what_make_ui_and_docker_compose_serve():
    assert security.allowed_origins({}) == {"http://localhost:8080", "http://127.0.0.1:8080"}
    assert security.allowed_origins({"AIRFLOW__API__PORT": "8090",
                                     "AIRFLOW__API__BASE_URL": "https://airflow.example/sub/"}) == {
        "http://localhost:8090", "http://127.0.0.1:8090", "https://airflow.example"}
    assert security.origin_of("HTTP://LocalHost:80/x") == "http://localhost"
    assert security.origin_of("javascript:alert(1)") is None


# ---------------------------------------------------------------------------
# outbound calls


def test_airflows_api_is_called_at_its_configured_address_never_the_requests_host(world, airflow):
    client = world["client"]
    for path in ("/train/jobs", "/train/jobs/manual__1"):
        answer = client.get(path, headers={"Host": "169.254.169.254:80", "Authorization": "Bearer viewer-jwt"})
        assert answer.status_code == 200, answer.text
    answer = client.post("/train", json={"publish": "never"}, headers={"Host": "10.0.0.9:22"})
    assert answer.status_code == 201, answer.text
    assert airflow.hosts == {"127.0.0.1:18080"}
    assert security.airflow_api_base({"AIRFLOW__API__BASE_URL": "https://airflow.example/sub/"}) == \
        "https://airflow.example/sub"
    assert security.airflow_api_base({"AIRFLOW__API__HOST": "10.1.2.3", "AIRFLOW__API__PORT": "8090"}) == \
        "http://10.1.2.3:8090"


def test_what_airflow_answers_is_summarised_not_echoed(world, monkeypatch):
    import httpx

    from foresight_lib.serving.operations import jobs

    page = "<html>" + "internal page " * 200 + f"token={PASSWORD}</html>"
    answers = iter([httpx.Response(500, text=page), httpx.Response(200, text=page),
                    httpx.Response(409, json={"detail": f"conflict with {PROM_URL} " + "x" * 1000})])

    def scripted(request):
        return jobs.AirflowApi("http://127.0.0.1:18080", None, transport=httpx.MockTransport(lambda r: next(answers)))

    monkeypatch.setattr(world["plugin"], "_airflow", scripted)
    for _ in range(3):
        answer = world["client"].get("/train/jobs")
        assert answer.status_code in (409, 502)
        assert "internal page" not in answer.text and PASSWORD not in answer.text, answer.text
        assert len(answer.text) < 500


# ---------------------------------------------------------------------------
# secrets


def test_a_planted_password_reaches_no_log_answer_or_stored_byte(world, airflow, caplog):
    client, plugin = world["client"], world["plugin"]
    caplog.set_level(logging.DEBUG)
    prometheus = {"kind": "prometheus", "prometheus": {"url": PROM_URL, "labels": {"auth_token": PASSWORD}}}
    answers = []
    started = client.post("/train", json={"overrides": {"source": prometheus}, "publish": "never",
                                          "note": f"try {PROM_URL}"})
    answers.append(started)
    assert started.status_code == 201, started.text
    assert PASSWORD in str(airflow.calls[-1][2])  # Airflow gets the run's real settings: it runs it
    airflow.runs["manual__2"]["note"] = f"password={PASSWORD}"
    airflow.runs["manual__3"] = {"dag_run_id": "manual__3", "state": "failed", "conf": {"overrides": {
        "source": prometheus}}, "data_interval_end": "2024-03-05T00:00:00Z"}
    airflow.task_states["manual__3"] = {"extract": "failed"}
    airflow.logs["manual__3/extract"] = [{"event": "Task failed with exception", "level": "error", "error_detail": [
        {"exc_type": "SourceError", "exc_value": f"Prometheus at {PROM_URL} refused the query"}]}]
    answers += [client.get("/train/jobs"), client.get("/train/jobs/manual__2"), client.get("/train/jobs/manual__3"),
                client.post("/train/jobs/manual__2/cancel"),
                client.post("/train", json={"overrides": {"source": prometheus, "history_days": PROM_URL}}),
                client.post("/train", json={"overrides": {"source": {**prometheus, "kind": PROM_URL}}}),
                client.post("/train", json={"note": PASSWORD * 100})]
    failed = answers[3].json()
    assert failed["error"]["task_id"] == "extract" and "SourceError" in failed["error"]["message"]
    assert [a.status_code for a in answers[5:]] == [422, 422, 422]
    seen = {"answers": "\n".join(a.text + str(a.headers) for a in answers), "log": caplog.text}
    root = Path(world["root"])
    stored = [p for p in root.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert not stored, stored
    for where, text in seen.items():
        assert PASSWORD not in text, (where, text[text.find(PASSWORD) - 200:text.find(PASSWORD) + 50])
    listed = answers[1].json()["jobs"]
    masked = next(j for j in listed if j["job_id"] == "manual__2")
    assert masked["conf"]["overrides"]["source"]["prometheus"] == {"url": "http://ops:***@prometheus.internal:9090",
                                                                   "labels": {"auth_token": "***"}}
    assert plugin  # the same plugin served every answer


# ---------------------------------------------------------------------------
# run checks, cancellation, a failed job's error


@pytest.mark.parametrize(("body", "said"), [
    ({"horizons": ["7m"]}, "not a whole number of 5m steps"),
    ({"metrics": ["gpu_watts"]}, "not in the source"),
    ({"overrides": {"histroy_days": 3}}, "histroy_days: unknown setting"),
    ({"overrides": {"history_days": "many"}}, "history_days"),
])
def test_train_refuses_what_the_run_would_fail_on_and_triggers_nothing(world, airflow, body, said):
    answer = world["client"].post("/train", json=body)
    assert answer.status_code == 422 and said in answer.json()["detail"], answer.text
    assert not [c for c in airflow.calls if c[0] == "POST"]


def test_a_valid_run_configuration_is_triggered(world, airflow):
    answer = world["client"].post("/train", json={"metrics": [SOURCE_METRIC], "horizons": ["5m", "15m"],
                                                  "overrides": {"history_days": 3}})
    assert answer.status_code == 201, answer.text


def test_a_cancelled_job_has_its_last_task_failed_so_that_the_run_ends_failed(world, airflow):
    client = world["client"]
    cancelled = client.post("/train/jobs/manual__1/cancel").json()
    assert airflow.task_states["manual__1"] == {"publish": "failed"}
    assert cancelled["state"] == "failed" and cancelled["error"]["task_id"] == "publish"


def test_a_failed_job_carries_its_error(world, airflow):
    airflow.runs["manual__1"]["state"] = "failed"
    airflow.task_states["manual__1"] = {"validate": "failed"}
    airflow.logs["manual__1/validate"] = [
        {"event": "starting", "level": "info"},
        {"event": "Task failed with exception", "level": "error", "error_detail": [
            {"exc_type": "ValidationFailed", "exc_value": "12 of 33 series failed validation (limit 10 %)"}]}]
    detail = world["client"].get("/train/jobs/manual__1").json()
    assert detail["error"]["task_id"] == "validate"
    assert detail["error"]["message"] == "ValidationFailed: 12 of 33 series failed validation (limit 10 %)"


# ---------------------------------------------------------------------------
# headers


def test_pages_and_answers_carry_security_headers(world):
    client = world["client"]
    for path in ("/", "/docs", "/models", "/openapi.json", "/static/dashboard.js", "/nope"):
        answer = client.get(path)
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["x-frame-options"] == "SAMEORIGIN", path
        assert "frame-ancestors 'self'" in answer.headers["content-security-policy"], path
    too_large = client.post("/predict", content=b"x" * 9_000_000, headers={"Content-Type": "application/json"})
    assert too_large.status_code == 413 and too_large.headers["x-content-type-options"] == "nosniff"
    page = client.get("/").headers["content-security-policy"]
    assert "script-src 'self';" in page and "unsafe-eval" not in page
    docs = client.get("/docs")
    inline = re.findall(r"<script>(.*?)</script>", docs.text, re.DOTALL)
    assert inline  # Swagger UI's start-up script: allowed by its hash, nothing else inline
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in docs.headers["content-security-policy"]


@pytest.mark.slow
def test_the_dashboard_and_the_docs_work_in_a_browser_under_their_policy(world, tmp_path):
    """Chromium loads the page (its chart drawn) and the docs (Swagger UI rendered) with no policy violation."""
    import threading

    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Mount("/foresight", world["plugin"].app)]),
                                           host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            threading.Event().wait(0.1)
        base = f"http://127.0.0.1:{server.config.port}/foresight"
        with launched_chromium() as browser:
            page = browser.new_page()
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text
                    else None)
            page.add_init_script("document.addEventListener('securitypolicyviolation', e => "
                                 "console.log('Content Security Policy: ' + e.violatedDirective + ' ' + "
                                 "e.blockedURI))")
            page.goto(f"{base}/", wait_until="networkidle")
            page.wait_for_selector("#champions tr", timeout=30_000)
            page.goto(f"{base}/docs", wait_until="networkidle")
            page.wait_for_selector(".opblock-tag", timeout=30_000)
            assert not violations, violations
    finally:
        server.should_exit = True
        thread.join(timeout=10)
