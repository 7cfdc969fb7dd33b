"""The plugin's operations API in process: predict, models, activation, training jobs, telemetry.

A real MLflow registry (SQLite) with a champion registered the way the publish does it
(``api_support.build_world``); Airflow's JWT check is stood in for here and exercised
against a real api-server in ``test_api_airflow.py``; Airflow's REST API is a scripted
fake here and the real one there.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from api_support import METRIC, NAME, RUN_KEY, SOURCE_METRIC, FakeAirflow, history, served_world
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from foresight_lib.runs.storage import RunStore
from foresight_lib.serving.operations import OperationError
from foresight_lib.serving.operations import models as operations_models
from foresight_lib.serving.operations import predict as operations_predict


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with served_world(tmp_path_factory.mktemp("api-world")) as (built, plugin, _):
        yield {**built, "plugin": plugin, "client": TestClient(plugin.app)}


def registry_state() -> dict:
    client = MlflowClient()
    model = client.get_registered_model(NAME)
    versions = {int(v.version): dict(v.tags) for v in client.search_model_versions(f"name = '{NAME}'")}
    return {"aliases": dict(model.aliases), "versions": versions}


def published(world) -> tuple[bytes, bytes]:
    data = Path(world["data_root"])
    return (data / "latest" / "summary.json").read_bytes(), (data / "runs" / RUN_KEY / "summary.json").read_bytes()


# ---------------------------------------------------------------------------
# predict


def test_predict_forecasts_each_step_with_80_and_95_bands_from_the_champion(world):
    answer = world["client"].post("/predict", json={"history": history(world["bundle"]), "horizons": ["5m", "30m"]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["models"] == [{"metric": METRIC, "registered_model": NAME, "version": world["versions"]["champion"],
                               "alias": "champion", "model": "naive", "freq": "5min", "levels": [80, 95]}]
    rows = body["forecasts"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["horizon"] for r in rows] == ["5m", None, None, None, None, "30m"]
    for r in rows:
        assert r["yhat_lo_95"] <= r["yhat_lo_80"] <= r["yhat"] <= r["yhat_hi_80"] <= r["yhat_hi_95"]
    last = pd.Timestamp(history(world["bundle"])[-1]["ds"])
    assert pd.Timestamp(rows[0]["cutoff"]) == last and pd.Timestamp(rows[0]["ds"]) == last + pd.Timedelta("5min")


def test_predict_serves_a_named_version_or_alias_and_keeps_models_warm(world):
    client = world["client"]
    loads = operations_predict.CACHE.loads
    by_version = client.post("/predict", json={"history": history(world["bundle"]), "steps": 2,
                                               "version": world["versions"]["challenger"]})
    by_alias = client.post("/predict", json={"history": history(world["bundle"]), "steps": 2, "alias": "challenger"})
    assert by_version.status_code == 200 and by_alias.status_code == 200, (by_version.text, by_alias.text)
    assert by_version.json()["models"][0]["version"] == world["versions"]["challenger"]
    assert by_alias.json()["models"][0]["alias"] == "challenger"
    for _ in range(3):
        assert client.post("/predict", json={"history": history(world["bundle"]), "steps": 1}).status_code == 200
    assert operations_predict.CACHE.loads - loads <= 2  # one load per version, then warm


def _rows(world, **change):
    rows = history(world["bundle"])
    rows[2] = {**rows[2], **change}
    return rows


BAD_REQUESTS = {
    "nan": (lambda w: json.dumps({"history": _rows(w, y=float("nan"))}), 422, "finite"),
    "null value": (lambda w: {"history": _rows(w, y=None)}, 422, "y"),
    "duplicate timestamps": (lambda w: {"history": history(w["bundle"]) + history(w["bundle"])[:1]}, 422,
                             "duplicate timestamps"),
    "off grid": (lambda w: {"history": _rows(w, ds=(pd.Timestamp(history(w["bundle"])[2]["ds"])
                                                      + pd.Timedelta("1min")).isoformat())}, 422, "off the model's"),
    "too little history": (lambda w: {"history": history(w["bundle"], start_offset=6)}, 422, "too little history"),
    "unknown series": (lambda w: {"history": history(w["bundle"]), "metric": METRIC, "steps": 1,
                                  "allow_new_series": False} | {"history": [
                           {**r, "unique_id": f"{METRIC}/nowhere"} for r in history(w["bundle"])]}, 404,
                       "unknown series"),
    "new series too short": (lambda w: {"allow_new_series": True, "history": [
        {**r, "unique_id": f"{METRIC}/new"} for r in history(w["bundle"])]}, 422, "too little history for new"),
    "unknown metric": (lambda w: {"history": history(w["bundle"]), "metric": "gpu_watts"}, 404, "unknown metric"),
    "no metric": (lambda w: {"history": [{**r, "unique_id": "c0"} for r in history(w["bundle"])]}, 422,
                  "cannot tell the metric"),
    "unknown version": (lambda w: {"history": history(w["bundle"]), "version": 99}, 404, "unknown version 99"),
    "unknown alias": (lambda w: {"history": history(w["bundle"]), "alias": "nightly"}, 404, "no alias 'nightly'"),
    "horizons and steps": (lambda w: {"history": history(w["bundle"]), "steps": 2, "horizons": ["5m"]}, 422,
                           "either horizons or steps"),
    "off-grid horizon": (lambda w: {"history": history(w["bundle"]), "horizons": ["7m"]}, 422, "7m"),
    "empty history": (lambda w: {"history": []}, 422, "history"),
    "unlike the training data": (lambda w: {"history": [{**r, "y": 5e6} for r in history(w["bundle"])]}, 422,
                                 "does not look like"),
    "gaps": (lambda w: {"history": history(w["bundle"])[:2] + history(w["bundle"], start_offset=40)[:3]}, 422,
             "has gaps"),
    "timestamp out of range": (lambda w: {"history": _rows(w, ds="9999-01-01T00:00:00Z")}, 422, "out of range"),
    "huge horizon": (lambda w: {"history": history(w["bundle"]), "horizons": ["99999999999999d"]}, 422,
                     "99999999999999d"),
    "huge version": (lambda w: {"history": history(w["bundle"]), "version": 10**20}, 422, "version"),
    "unknown field": (lambda w: {"history": history(w["bundle"]), "horizon": "5m"}, 422, "horizon"),
}


SHARED_REFUSALS = ["nan", "duplicate timestamps", "off grid", "too little history", "unknown series",
                   "new series too short", "gaps"]


@pytest.mark.parametrize("case", SHARED_REFUSALS)
def test_the_pyfunc_refuses_with_the_same_message_as_predict(world, case):
    from foresight_lib.forecasting.champion import HistoryRefused
    from foresight_lib.tracking.registry import ForesightPyfunc

    make, status, _ = BAD_REQUESTS[case]
    body = make(world)
    if isinstance(body, str):
        answer = world["client"].post("/predict", content=body, headers={"content-type": "application/json"})
        body = json.loads(body)
    else:
        answer = world["client"].post("/predict", json=body)
    assert answer.status_code == status, answer.text
    model = ForesightPyfunc()
    model.bundle = world["bundle"]
    frame = pd.DataFrame(body["history"])
    with pytest.raises(HistoryRefused) as caught:
        model.predict(None, frame, params={"allow_new_series": bool(body.get("allow_new_series"))})
    assert caught.value.status == status
    assert answer.json()["detail"].endswith(str(caught.value)), (answer.json()["detail"], str(caught.value))


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_each_bad_predict_request_is_refused_naming_the_problem_and_changes_nothing(world, case):
    make, status, words = BAD_REQUESTS[case]
    before = registry_state()
    body = make(world)
    if isinstance(body, str):
        answer = world["client"].post("/predict", content=body, headers={"content-type": "application/json"})
    else:
        answer = world["client"].post("/predict", json=body)
    assert answer.status_code == status, answer.text
    assert words.lower() in json.dumps(answer.json()["detail"]).lower(), answer.text
    assert registry_state() == before


def test_an_oversized_body_or_too_many_rows_is_413_with_the_limit(world, monkeypatch):
    from foresight_lib.serving.operations import telemetry

    monkeypatch.setattr(telemetry, "MAX_BODY_BYTES", 2000)
    big = json.dumps({"history": history(world["bundle"], points=100)})
    answer = world["client"].post("/predict", content=big, headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "limit is 2000 bytes" in answer.json()["detail"]

    def chunks():
        yield big[:1000].encode()
        yield big[1000:].encode()

    streamed = world["client"].post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    monkeypatch.setattr(telemetry, "MAX_BODY_BYTES", 8 * 1024 * 1024)
    monkeypatch.setattr(operations_predict, "MAX_ROWS", 10)
    rows = world["client"].post("/predict", json={"history": history(world["bundle"], points=11)})
    assert rows.status_code == 413 and "limit is 10" in rows.json()["detail"]


# ---------------------------------------------------------------------------
# models


def test_models_lists_versions_aliases_origins_and_scores_per_horizon(world):
    answer = world["client"].get("/models")
    assert answer.status_code == 200, answer.text
    (cpu,) = [m for m in answer.json()["models"] if m["metric"] == METRIC]
    assert cpu["aliases"] == {"champion": world["versions"]["champion"],
                              "challenger": world["versions"]["unscored"]}
    versions = {v["version"]: v for v in cpu["versions"]}
    champion = versions[world["versions"]["champion"]]
    assert champion["aliases"] == ["champion"] and champion["model"] == "naive"
    assert champion["airflow_run"] == "2024-03-02T000000Z" and champion["mlflow_run_id"]
    assert list(champion["backtest"]["horizons"]) == ["5m", "15m", "30m"]
    assert champion["backtest"]["horizons"]["30m"]["mase"] > 0 and champion["backtest"]["horizons"]["5m"]["mae"] > 0
    # the score the registry's gate compared, under the champion criterion it was made by
    assert champion["backtest"]["criterion"] == "mean_mase"
    assert champion["backtest"]["score"] == champion["backtest"]["mean_mase"] == 1.0
    assert versions[world["versions"]["unscored"]]["backtest"]["horizons"] == {}


def test_version_metrics_and_their_404_and_409(world):
    client = world["client"]
    ok = client.get(f"/models/{METRIC}/versions/{world['versions']['challenger']}/metrics")
    assert ok.status_code == 200 and ok.json()["airflow_run"] == RUN_KEY
    assert "mase" in ok.json()["backtest"]["horizons"]["15m"]
    assert client.get(f"/models/{METRIC}/versions/99/metrics").status_code == 404
    unknown = client.get("/models/gpu_watts/versions/1/metrics")
    assert unknown.status_code == 404 and "unknown metric 'gpu_watts'" in unknown.json()["detail"]
    other = client.get(f"/models/{METRIC}/versions/{world['versions']['other_metric']}/metrics")
    assert other.status_code == 409 and "trained for metric 'memory_bytes'" in other.json()["detail"]


@pytest.mark.parametrize("case,status,words", [
    ("unknown version", 404, "unknown version 99"),
    ("unscored", 409, "no backtest scores"),
    ("other metric", 409, "trained for metric 'memory_bytes'"),
    ("unknown metric", 404, "unknown metric"),
])
def test_a_refused_activation_changes_nothing(world, case, status, words):
    version = {"unknown version": 99, "unscored": world["versions"]["unscored"],
               "other metric": world["versions"]["other_metric"], "unknown metric": 1}[case]
    metric = "gpu_watts" if case == "unknown metric" else METRIC
    before, files = registry_state(), published(world)
    answer = world["client"].post(f"/models/{metric}/versions/{version}/activate")
    assert answer.status_code == status and words in answer.json()["detail"], answer.text
    assert registry_state() == before and published(world) == files


def test_an_activation_waits_for_a_publish_in_progress_then_gives_up_with_409(world):
    from foresight_lib.runs import transaction
    from foresight_lib.runs.storage import DataRoot
    from foresight_lib.serving import operations

    settings = operations.settings()
    root = DataRoot(settings.data_root)
    lock, token = transaction.publish_lock(root, pd.Timedelta("1h"), pd.Timedelta(0), "nightly")
    before = registry_state()
    try:
        with pytest.raises(OperationError) as refused:
            operations_models.activate(settings, METRIC, world["versions"]["challenger"], "tester", wait_s=0.5)
    finally:
        lock.release(token)
    assert refused.value.status == 409 and "publish is in progress" in refused.value.detail
    assert registry_state() == before


# ---------------------------------------------------------------------------
# training jobs, against a scripted Airflow REST API


@pytest.fixture
def airflow(world, monkeypatch):
    fake = FakeAirflow()
    monkeypatch.setattr(world["plugin"], "_airflow", fake.patch(world["plugin"]))
    return fake


def test_train_starts_a_nightly_run_with_the_parameters_and_the_callers_token(world, airflow):
    answer = world["client"].post("/train", headers={"Authorization": "Bearer abc"},
                                  json={"metrics": [SOURCE_METRIC], "models": ["naive"], "publish": "never"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["job_id"] == "manual__2"
    method, path, body, auth = airflow.calls[-1]
    assert (method, path, auth) == ("POST", "/api/v2/dags/foresight_nightly/dagRuns", "Bearer abc")
    assert body["conf"] == {"metrics": [SOURCE_METRIC], "models": ["naive"], "publish": "never"}
    assert body["logical_date"]
    assert world["client"].post("/train", json={"publish": "sometimes"}).status_code == 422


def test_jobs_list_detail_with_progress_and_leaderboard_and_cancel(world, airflow):
    client = world["client"]
    listed = client.get("/train/jobs")
    assert listed.status_code == 200 and {j["job_id"] for j in listed.json()["jobs"]} == {"manual__0", "manual__1"}
    RunStore(str(world["data_root"]), RUN_KEY).write_frame(
        "leaderboard", pd.DataFrame({"model": ["naive"], "horizon": ["5m"], "mase": [0.9]}))
    done = client.get("/train/jobs/manual__0").json()
    assert done["state"] == "success" and done["progress"] == {"success": 1, "running": 1}
    assert done["leaderboard"] == [{"model": "naive", "horizon": "5m", "mase": 0.9}]
    running = client.get("/train/jobs/manual__1").json()
    assert running["leaderboard"] is None and [t["task_id"] for t in running["tasks"]] == ["extract", "train"]
    cancelled = client.post("/train/jobs/manual__1/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "failed"
    assert ("PATCH", "/api/v2/dags/foresight_nightly/dagRuns/manual__1", {"state": "failed"}) in [
        call[:3] for call in airflow.calls]
    assert airflow.task_states["manual__1"] == {"publish": "failed"}  # the last task before the teardown
    assert client.post("/train/jobs/manual__0/cancel").status_code == 409
    missing = client.get("/train/jobs/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert client.post("/train/jobs/nope/cancel").status_code == 404


def test_a_job_with_hundreds_of_task_instances_lists_every_one(world, airflow):
    airflow.task_states["manual__1"] = {f"shard_{i:03d}": "success" for i in range(248)}
    job = world["client"].get("/train/jobs/manual__1").json()
    assert len(job["tasks"]) == 250 and job["progress"] == {"success": 249, "running": 1}


# ---------------------------------------------------------------------------
# /metrics: telemetry and its token


def test_metrics_count_requests_by_route_template_and_need_the_token_when_set(world, monkeypatch):
    client = world["client"]
    client.get("/models/gpu_watts/versions/1/metrics")
    text = client.get("/metrics").text
    assert 'foresight_api_requests_total{method="GET",route="/models/{metric}/versions/{version}/metrics",' \
           'status="404"}' in text
    assert 'foresight_api_request_duration_seconds_bucket{le="0.1",method="POST",route="/predict"}' in text
    monkeypatch.setenv("FORESIGHT_METRICS_TOKEN", "s3cret")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret", "Accept-Encoding": "gzip"})
    assert ok.status_code == 200 and "foresight_api_requests_total" in ok.text


def test_openapi_documents_every_operation_with_its_models(world):
    schema = world["client"].get("/openapi.json").json()
    for path in ("/predict", "/train", "/train/jobs", "/train/jobs/{job_id}", "/train/jobs/{job_id}/cancel",
                 "/models", "/models/{metric}/versions/{version}/metrics",
                 "/models/{metric}/versions/{version}/activate", "/metrics", "/forecasts", "/overview"):
        assert path in schema["paths"], path
    predict = schema["paths"]["/predict"]["post"]
    assert {"200", "401", "403", "404", "413", "422"} <= set(predict["responses"])
    assert schema["components"]["schemas"]["PredictRequest"]["examples"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


# ---------------------------------------------------------------------------
# activation (last: it moves the champion)


def test_activation_moves_champion_keeps_previous_records_who_and_agrees_with_latest(world):
    client = world["client"]
    old, new = world["versions"]["champion"], world["versions"]["challenger"]
    assert client.post("/predict", json={"history": history(world["bundle"]), "steps": 1}).json()["models"][0][
        "version"] == old
    answer = client.post(f"/models/{METRIC}/versions/{new}/activate")
    assert answer.status_code == 200, answer.text
    assert answer.json() | {"activated_at": None} == {
        "metric": METRIC, "registered_model": NAME, "version": new, "previous_version": old, "changed": True,
        "activated_by": "tester", "activated_at": None, "summary": answer.json()["summary"]}
    state = registry_state()
    assert int(state["aliases"]["champion"]) == new and int(state["aliases"]["previous_champion"]) == old
    tags = state["versions"][new]
    assert tags["foresight.activated_by"] == "tester" and tags["foresight.activated_replacing"] == str(old)
    assert pd.Timestamp(tags["foresight.activated_at"]).tzinfo is not None
    latest, run_folder = published(world)
    assert latest == run_folder  # latest/ still holds exactly the run folder's files
    summary = json.loads(latest)
    assert summary["champion_versions"] == {METRIC: new}
    assert tags.get("model"), "the version says which model it is"
    assert summary["activations"][-1] | {"at": None} == {"metric": METRIC, "version": new, "model": tags["model"],
                                                         "previous_version": old, "by": "tester", "at": None}
    data = Path(world["data_root"])
    assert not list((data / "locks").rglob("*.json")) and not list(data.rglob(".tmp-*"))
    served = client.post("/predict", json={"history": history(world["bundle"]), "steps": 1})
    assert served.json()["models"][0]["version"] == new  # the in-process cache follows at once
    again = client.post(f"/models/{METRIC}/versions/{new}/activate")
    assert again.status_code == 200 and again.json()["changed"] is False and published(world)[0] == latest
