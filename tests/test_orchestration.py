"""The orchestration helpers: the one Airflow REST client (paging, refusals summarised, login, waiting)."""
from __future__ import annotations

import httpx
import pytest

from foresight_lib.orchestration.dags import NIGHTLY_DAG
from foresight_lib.orchestration.rest import AirflowApiError, AirflowClient, wait_for


def _client(handler) -> AirflowClient:
    return AirflowClient("http://airflow.test", "tok", transport=httpx.MockTransport(handler))


def test_task_instances_are_read_page_by_page():
    tis = [{"task_id": "train", "map_index": i, "state": "success"} for i in range(230)]
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.split(b"?")[0].decode()
        assert path == f"/api/v2/dags/{NIGHTLY_DAG}/dagRuns/manual__a%2Fb/taskInstances"
        assert request.headers["authorization"] == "Bearer tok"
        limit, offset = int(request.url.params["limit"]), int(request.url.params["offset"])
        seen.append((limit, offset))
        return httpx.Response(200, json={"task_instances": tis[offset:offset + min(limit, 100)],
                                         "total_entries": len(tis)})

    assert _client(handler).task_instances("manual__a/b") == tis
    assert seen == [(100, 0), (100, 100), (100, 200)]


def test_a_refusal_is_summarised_and_redacted():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"detail": "conflict with http://u:hunter2@prom:9090", "trace": "x" * 9000})

    with pytest.raises(AirflowApiError) as caught:
        _client(handler).trigger("2024-03-20T02:00:00Z", {"metrics": ["m"]})
    assert caught.value.status == 409 and "hunter2" not in caught.value.message
    assert caught.value.message.startswith(f"Airflow refused to start a run of {NIGHTLY_DAG}: 409 conflict with")
    assert "xxx" not in caught.value.message


def test_no_answer_is_an_error_without_a_status():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(AirflowApiError, match="did not answer") as caught:
        _client(handler).run("r")
    assert caught.value.status is None


def test_login_then_wait_for_the_dag_and_a_run():
    states = iter(["queued", "running", "success"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            assert request.method == "POST" and b'"username":"admin"' in request.content.replace(b" ", b"")
            return httpx.Response(201, json={"access_token": "fresh"})
        assert request.headers["authorization"] == "Bearer fresh"
        if request.url.path.endswith("/dagRuns/r1"):
            return httpx.Response(200, json={"dag_run_id": "r1", "state": next(states)})
        return httpx.Response(200, json={"dag_id": NIGHTLY_DAG})

    client = AirflowClient("http://airflow.test", transport=httpx.MockTransport(handler))
    client.login("admin", "pw")
    client.wait_ready(timeout=5)
    assert client.wait_run("r1", timeout=5, every=0.01)["state"] == "success"


def test_wait_for_names_what_it_waited_for_and_the_last_error():
    def probe():
        raise AirflowApiError(404, "Airflow refused to read DAG x: 404 not found")

    with pytest.raises(TimeoutError, match=r"DAG x not served after 0 s \(AirflowApiError: .*404"):
        wait_for(probe, "DAG x not served", timeout=0, every=0)
