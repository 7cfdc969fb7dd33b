"""Prometheus exposition of the latest forecasts: gauges, files read at scrape time, servers, plugin, push."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from airflow_support import migrate
from api_support import reading_plugin
from prom_server import ScriptedServer
from prometheus_client.parser import text_string_to_metric_families

from foresight_lib.commands.serve_metrics import make_server
from foresight_lib.errors import DataError, SourceError
from foresight_lib.publishing import pushgateway
from foresight_lib.runs.storage import RunStore
from foresight_lib.serving import exposition, json_views

REPO = Path(__file__).resolve().parents[1]
CUTOFF = pd.Timestamp("2024-03-01 02:00", tz="UTC")
FREQ = pd.Timedelta("5min")
SERIES = ["cpu_cores/shop/web-1/nginx", "memory_bytes/shop/web-1"]


def make_forecasts(offset: float = 0.0) -> pd.DataFrame:
    """Two series, two models, six 5-minute steps, 80 and 95 % intervals; yhat = 10*series + step + offset."""
    rows = []
    for i, uid in enumerate(SERIES):
        for model, shift in (("naive", 0.0), ("arima", 0.5)):
            for step in range(1, 7):
                yhat = 10.0 * (i + 1) + step + shift + offset
                rows.append({"unique_id": uid, "cutoff": CUTOFF, "ds": CUTOFF + step * FREQ, "step": step,
                             "model": model, "yhat": yhat, "yhat_lo_80": yhat - 1, "yhat_hi_80": yhat + 1,
                             "yhat_lo_95": yhat - 2, "yhat_hi_95": yhat + 2})
    return pd.DataFrame(rows)


def make_actuals(last: dict[str, float]) -> pd.DataFrame:
    """A day of history per series ending at the cutoff with the given last values."""
    ds = pd.date_range(end=CUTOFF, periods=288, freq=FREQ)
    frames = [pd.DataFrame({"unique_id": uid, "ds": ds, "y": np.r_[np.full(287, 1.0), last[uid]]}) for uid in SERIES]
    return pd.concat(frames, ignore_index=True)


def samples(body: bytes | str, name: str) -> dict[tuple, float]:
    text = body.decode() if isinstance(body, bytes) else body
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def key(**labels) -> tuple:
    return tuple(sorted(labels.items()))


def publish(data_root: Path, run_id: str, forecasts: pd.DataFrame, actuals: pd.DataFrame | None = None,
            recommendations: pd.DataFrame | None = None) -> None:
    """Publish like the nightly run does: datasets in the run folder, then copied to latest/."""
    store = RunStore(str(data_root), run_id)
    store.write_frame("forecasts", forecasts)
    names = ["forecasts"]
    if actuals is not None:
        store.write_frame("features", actuals)
    if recommendations is not None:
        store.write_frame("recommendations", recommendations)
        names.append("recommendations")
    store.publish_latest(names)


# ---------------------------------------------------------------------------
# Gauges from frames


def registry_text(forecasts, actuals=None, recommendations=None, **kwargs) -> str:
    snapshot = exposition.Snapshot(forecasts=forecasts, actuals=actuals, recommendations=recommendations)
    body, _ = exposition.render(exposition.static_registry(snapshot, **kwargs))
    return body.decode()


def test_forecast_gauges_carry_yhat_bounds_and_anomaly_per_series_model_and_horizon():
    # web-1/nginx ends at 60: outside every band (11..18 +- 2); memory ends at 23: inside some bands
    text = registry_text(make_forecasts(), make_actuals({SERIES[0]: 60.0, SERIES[1]: 23.0}))
    got = samples(text, "foresight_forecast")
    base = {"series": SERIES[0], "metric": "cpu_cores", "entity": "shop/web-1/nginx", "model": "arima"}
    assert got[key(**base, horizon="15m", value_type="yhat")] == 13.5
    assert got[key(**base, horizon="15m", value_type="yhat_lower")] == 11.5  # the 95 % interval
    assert got[key(**base, horizon="15m", value_type="yhat_upper")] == 15.5
    assert got[key(**base, horizon="30m", value_type="yhat")] == 16.5
    assert got[key(**base, horizon="15m", value_type="anomaly")] == 1.0
    mem = {"series": SERIES[1], "metric": "memory_bytes", "entity": "shop/web-1", "model": "naive"}
    # memory, naive, 5m: 21 +- 2 holds 23; 30m: 26 +- 2 does not
    assert got[key(**mem, horizon="5m", value_type="anomaly")] == 0.0
    assert got[key(**mem, horizon="30m", value_type="anomaly")] == 1.0
    assert len(got) == 2 * 2 * 6 * 4
    assert samples(text, "foresight_forecast_timestamp_seconds")[key(**base)] == CUTOFF.timestamp()
    assert samples(text, "foresight_actual")[key(series=SERIES[0], metric="cpu_cores",
                                                 entity="shop/web-1/nginx")] == 60.0


def test_the_actual_at_the_forecasts_own_time_is_used_when_known():
    actuals = make_actuals({SERIES[0]: 60.0, SERIES[1]: 23.0})
    later = pd.DataFrame({"unique_id": [SERIES[0]], "ds": [CUTOFF + FREQ], "y": [11.2]})  # inside naive 5m: 11 +- 2
    text = registry_text(make_forecasts(), pd.concat([actuals, later]))
    got = samples(text, "foresight_forecast")
    base = {"series": SERIES[0], "metric": "cpu_cores", "entity": "shop/web-1/nginx", "model": "naive"}
    assert got[key(**base, horizon="5m", value_type="anomaly")] == 0.0
    # later horizons compare the latest actual (11.2): 15m naive is 13 +- 2 -> inside, 30m is 16 +- 2 -> outside
    assert got[key(**base, horizon="15m", value_type="anomaly")] == 0.0
    assert got[key(**base, horizon="30m", value_type="anomaly")] == 1.0


def test_horizon_filter_level_choice_and_no_actuals():
    text = registry_text(make_forecasts(), None, horizons=["5m", "30m"], level=80)
    got = samples(text, "foresight_forecast")
    assert {dict(k)["horizon"] for k in got} == {"5m", "30m"}
    assert {dict(k)["value_type"] for k in got} == {"yhat", "yhat_lower", "yhat_upper"}  # no actuals: no anomaly
    arima = {"series": SERIES[0], "metric": "cpu_cores", "entity": "shop/web-1/nginx", "model": "arima"}
    assert got[key(**arima, horizon="5m", value_type="yhat_lower")] == 10.5
    with pytest.raises(DataError, match="interval level 99 is not in the forecasts"):
        exposition.forecast_families(make_forecasts(), level=99)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['cutoff'\]"):
        exposition.forecast_families(make_forecasts().drop(columns="cutoff"))


def test_only_the_latest_cutoff_is_exposed():
    older = make_forecasts(offset=100.0)
    older["cutoff"] -= pd.Timedelta("1D")
    older["ds"] -= pd.Timedelta("1D")
    got = samples(registry_text(pd.concat([older, make_forecasts()])), "foresight_forecast")
    assert max(got.values()) < 100


def test_recommendation_gauges_take_every_numeric_column_as_a_value_type():
    recs = pd.DataFrame({
        "unique_id": ["cpu_cores/shop/web-1/nginx", "cpu_cores/shop/web-1/nginx", "memory_bytes/x"],
        "entity": ["shop/web-1/nginx", "shop/web-1/nginx", "x"], "resource": ["cpu", "cpu", "memory"],
        "kind": ["window", "daily", "daily"], "request": [0.25, 0.5, np.nan], "limit": [0.5, 1.0, None],
        "replicas": [2, 3, 1], "period_start": [CUTOFF, CUTOFF, pd.NaT], "request_display": ["250m", "500m", ""],
        "reason": [None, None, "too short"],
    })
    text = registry_text(None, recommendations=recs)
    got = samples(text, "foresight_recommendation")
    daily = {"series": "cpu_cores/shop/web-1/nginx", "entity": "shop/web-1/nginx", "resource": "cpu", "kind": "daily"}
    assert got[key(**daily, value_type="request")] == 0.5
    assert got[key(**daily, value_type="limit")] == 1.0
    assert got[key(**daily, value_type="replicas")] == 3
    assert got[key(**daily, value_type="period_start_timestamp_seconds")] == CUTOFF.timestamp()
    memory = {"series": "memory_bytes/x", "entity": "x", "resource": "memory", "kind": "daily"}
    assert key(**memory, value_type="request") not in got  # empty values are not exposed
    assert got[key(**memory, value_type="replicas")] == 1
    assert all("reason" not in dict(k) and "request_display" not in dict(k) for k in got)


def test_a_network_recommendation_has_a_request_but_no_limit_or_replicas():
    recs = pd.DataFrame({"unique_id": ["net/x", "cpu_cores/x"], "entity": ["x", "x"], "resource": ["other", "cpu"],
                         "kind": ["daily", "daily"], "request": [5.84e6, 0.5], "limit": [5.84e6, 1.0],
                         "replicas": [2, 1]})
    got = samples(registry_text(None, recommendations=recs), "foresight_recommendation")
    assert {dict(k)["value_type"] for k in got if dict(k)["resource"] == "other"} == {"request"}
    assert {dict(k)["value_type"] for k in got if dict(k)["resource"] == "cpu"} == {"request", "limit", "replicas"}
    only_network = samples(registry_text(None, recommendations=recs.iloc[:1]), "foresight_recommendation")
    assert [dict(k)["value_type"] for k in only_network] == ["request"]


# ---------------------------------------------------------------------------
# Files under <data_root>/latest, read at scrape time


def test_metrics_follow_each_publish_without_a_restart(tmp_path):
    root = tmp_path / "data"
    body, headers = exposition.metrics_response(str(root))
    assert samples(body, "foresight_forecast") == {}
    assert samples(body, "foresight_exposition_read_errors")[()] == 0
    assert headers["Content-Type"].startswith("text/plain")

    publish(root, "scheduled__2024-03-01T02:00:00+00:00", make_forecasts(),
            make_actuals({SERIES[0]: 60.0, SERIES[1]: 23.0}))
    body, _ = exposition.metrics_response(str(root), horizons=["15m"])
    got = samples(body, "foresight_forecast")
    naive = {"series": SERIES[0], "metric": "cpu_cores", "entity": "shop/web-1/nginx", "model": "naive"}
    assert got[key(**naive, horizon="15m", value_type="yhat")] == 13.0
    assert got[key(**naive, horizon="15m", value_type="anomaly")] == 1.0  # actuals from the run's features
    assert samples(body, "foresight_published_timestamp_seconds")[()] > CUTOFF.timestamp()

    publish(root, "scheduled__2024-03-02T02:00:00+00:00", make_forecasts(offset=1000.0))
    body, _ = exposition.metrics_response(str(root), horizons=["15m"])
    got = samples(body, "foresight_forecast")
    assert got[key(**naive, horizon="15m", value_type="yhat")] == 1013.0
    assert key(**naive, horizon="15m", value_type="anomaly") not in got  # that run kept no features


def test_a_corrupt_file_is_counted_and_the_rest_still_served(tmp_path):
    root = tmp_path / "data"
    publish(root, "r1", make_forecasts())
    (root / "latest" / "recommendations.parquet").write_bytes(b"not parquet")
    body, _ = exposition.metrics_response(str(root))
    assert samples(body, "foresight_exposition_read_errors")[()] == 1
    assert len(samples(body, "foresight_forecast")) == 2 * 2 * 6 * 3


def test_actuals_lost_with_the_run_folder_are_a_read_error_not_silence(tmp_path):
    root = tmp_path / "data"
    publish(root, "r1", make_forecasts(), make_actuals({SERIES[0]: 60.0, SERIES[1]: 23.0}))
    assert exposition.LatestFiles(str(root)).snapshot().errors == []
    shutil.rmtree(root / "runs" / "r1")
    snapshot = exposition.LatestFiles(str(root)).snapshot()  # what a restarted server reads
    assert len(snapshot.errors) == 1 and "is gone" in snapshot.errors[0]
    assert snapshot.forecasts is not None  # the forecasts are still served


def test_the_champion_of_each_metric_is_a_series_of_its_own():
    forecasts = make_forecasts()
    forecasts["champion"] = forecasts["model"] == "naive"
    families = {f.name: f for f in exposition.forecast_families(forecasts)}
    samples_ = {tuple(sorted(s.labels.items())): s.value for s in families["foresight_champion"].samples}
    assert samples_ == {(("metric", "cpu_cores"), ("model", "naive")): 1.0,
                        (("metric", "memory_bytes"), ("model", "naive")): 1.0}
    assert "foresight_champion" not in {f.name for f in exposition.forecast_families(make_forecasts())}


def test_openmetrics_and_gzip_are_served_when_asked(tmp_path):
    root = tmp_path / "data"
    publish(root, "r1", make_forecasts())
    body, headers = exposition.metrics_response(
        str(root), accept="application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        accept_encoding="gzip")
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert headers["Content-Encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert text.rstrip().endswith("# EOF") and "foresight_forecast{" in text


def test_json_views_of_the_published_files(tmp_path):
    root = tmp_path / "data"
    assert json_views.forecasts_payload(str(root))["count"] == 0
    recs = pd.DataFrame({"entity": ["shop/web-1"], "resource": ["memory"], "request": [2.0e9]})
    publish(root, "r1", make_forecasts(), recommendations=recs)
    payload = json_views.forecasts_payload(str(root), metric="cpu_cores", model="naive", limit=4)
    assert payload["count"] == 6 and payload["truncated"] and len(payload["forecasts"]) == 4
    first = payload["forecasts"][0]
    assert first["ds"] == (CUTOFF + FREQ).isoformat() and first["yhat"] == 11.0 and payload["run_id"] == "r1"
    assert json_views.recommendations_payload(str(root))["recommendations"][0]["request"] == 2.0e9


# ---------------------------------------------------------------------------
# foresight serve-metrics


def test_serve_metrics_answers_metrics_health_and_404(tmp_path):
    root = tmp_path / "data"
    publish(root, "r1", make_forecasts())
    server = make_server(str(root), "127.0.0.1", 0, horizons=["5m"])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        answer = requests.get(f"{url}/metrics", timeout=5)
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain; version=")
        assert len(samples(answer.text, "foresight_forecast")) == 2 * 2 * 3
        assert requests.get(f"{url}/-/healthy", timeout=5).text == "ok\n"
        assert requests.get(f"{url}/nope", timeout=5).status_code == 404
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_serve_metrics_is_a_cli_command():
    from foresight_lib.cli import build_parser

    args = build_parser().parse_args(["serve-metrics", "--port", "9999", "--data-root", "/tmp/x", "--horizons", "all"])
    assert (args.port, args.data_root, args.horizons) == (9999, "/tmp/x", "all")


# ---------------------------------------------------------------------------
# The Airflow plugin


@pytest.fixture(scope="module")
def plugin():
    with reading_plugin("foresight_plugin_under_test") as module:
        yield module


def test_plugin_registers_the_app_and_the_menu_links(plugin):
    from airflow.plugins_manager import is_valid_plugin

    assert is_valid_plugin(plugin.ForesightPlugin)
    (app,) = plugin.ForesightPlugin.fastapi_apps
    assert app["url_prefix"] == "/foresight" and app["app"] is plugin.app
    names = {view["name"]: view for view in plugin.ForesightPlugin.external_views}
    assert names["Forecasts"]["href"] == "/foresight/" and names["MLflow"]["href"].startswith("http")


def test_plugin_serves_metrics_forecasts_and_recommendations(plugin, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    root = tmp_path / "data"
    monkeypatch.setenv("FORESIGHT_DATA_ROOT", str(root))
    client = TestClient(plugin.app)
    assert client.get("/recommendations").status_code == 404
    publish(root, "r1", make_forecasts(), make_actuals({SERIES[0]: 12.0, SERIES[1]: 23.0}),
            recommendations=pd.DataFrame({"entity": ["shop/web-1"], "resource": ["cpu"], "request": [0.5]}))
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    got = samples(answer.text, "foresight_forecast")
    assert {dict(k)["horizon"] for k in got} == {"5m", "15m", "30m"}  # the config's horizons
    assert samples(answer.text, "foresight_recommendation")[key(entity="shop/web-1", resource="cpu",
                                                                value_type="request")] == 0.5
    forecasts = client.get("/forecasts", params={"series": SERIES[1], "model": "arima"}).json()
    assert forecasts["count"] == 6 and {r["unique_id"] for r in forecasts["forecasts"]} == {SERIES[1]}
    assert client.get("/recommendations").json()["count"] == 1
    assert '<div id="forecast-chart"' in client.get("/").text  # the dashboard (tests/test_dashboard.py)


# ---------------------------------------------------------------------------
# Pushgateway (the real one: test_prometheus_integration)


def test_push_sends_the_same_gauges_and_retries_5xx():
    with ScriptedServer([(500, "busy"), (200, "")]) as server:
        count = pushgateway.push_forecasts(server.url, make_forecasts(), job="nightly",
                                           grouping_key={"env": "test"}, horizons=["5m"], backoff_s=0.01)
    assert [r[1]["_method"] for r in server.requests] == ["PUT", "PUT"]
    assert server.requests[-1][0] == "/metrics/job/nightly/env/test"
    pushed = samples(server.requests[-1][1]["_body"], "foresight_forecast")
    assert len(pushed) == 2 * 2 * 3 and count >= len(pushed)


def test_push_failure_is_a_source_error_naming_the_url():
    with ScriptedServer([(400, "bad")]) as server:
        with pytest.raises(SourceError, match=f"Pushgateway at {server.url}"):
            pushgateway.push_forecasts(server.url, make_forecasts(), backoff_s=0.01)
        assert len(server.requests) == 1  # a rejected push is not retried


@pytest.mark.slow
def test_airflow_api_server_mounts_the_plugin_at_foresight(tmp_path):
    """Airflow's own FastAPI app (what ``airflow api-server`` runs) serves /foresight/metrics."""
    root = tmp_path / "data"
    publish(root, "r1", make_forecasts())
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "FORESIGHT_DATA_ROOT": str(root), "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}"}
    migrate(env)  # the plugin's JSON endpoints check Airflow's permissions on the nightly DAG
    out = tmp_path / "answers.json"
    script = (
        "import json, sys\n"
        "from airflow.api_fastapi.app import create_app\n"
        "from fastapi.testclient import TestClient\n"
        "client = TestClient(create_app())\n"
        "metrics = client.get('/foresight/metrics')\n"
        "token = client.get('/auth/token').json()['access_token']\n"
        "forecasts = client.get('/foresight/forecasts', params={'model': 'naive'},"
        " headers={'Authorization': f'Bearer {token}'})\n"
        "json.dump({'status': metrics.status_code, 'metrics': metrics.text, 'forecasts': forecasts.json()},"
        " open(sys.argv[1], 'w'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(out.read_text())
    assert answers["status"] == 200
    assert len(samples(answers["metrics"], "foresight_forecast")) == 2 * 2 * 3 * 3  # the config's three horizons
    assert answers["forecasts"]["count"] == 12  # with a token: Airflow's JWT guards all but /metrics


def test_the_data_age_is_exposed_from_the_published_summary(tmp_path):
    from foresight_lib.publishing.publish_step import data_freshness

    store = RunStore(str(tmp_path), "2024-03-05T000000Z")
    store.write_json("validation/summary.json", {"summary": {
        "data_interval_end": "2024-03-05T00:00:00+00:00", "last_timestamp": "2024-03-04T23:55:00+00:00",
        "data_age_s": 300.0, "series_stale": 1, "passed": True}, "reasons": {}})
    freshness = data_freshness(store)
    assert freshness == {"data_interval_end": "2024-03-05T00:00:00+00:00",
                         "last_timestamp": "2024-03-04T23:55:00+00:00", "data_age_s": 300.0, "series_stale": 1}
    families = {f.name: f.samples[0].value for f in exposition.freshness_families(freshness)}
    assert families == {"foresight_data_last_timestamp_seconds": pd.Timestamp("2024-03-04T23:55Z").timestamp(),
                        "foresight_data_age_seconds": 300.0}
    assert exposition.freshness_families({}) == []
    assert data_freshness(RunStore(str(tmp_path), "2024-03-06T000000Z")) == {}


def test_only_each_metrics_champion_is_exposed_unless_all_models_are_asked_for():
    forecasts = make_forecasts()
    forecasts["champion"] = (forecasts["model"] == "arima") == forecasts["unique_id"].str.startswith("cpu")
    champion_only = samples(registry_text(forecasts), "foresight_forecast")
    assert {(dict(k)["metric"], dict(k)["model"]) for k in champion_only} == {("cpu_cores", "arima"),
                                                                             ("memory_bytes", "naive")}
    assert len(champion_only) == 2 * 6 * 3  # series x horizons x (yhat, bounds); no actuals: no anomaly flag
    every = samples(registry_text(forecasts, models="all"), "foresight_forecast")
    assert len(every) == 2 * len(champion_only)
    with pytest.raises(DataError, match="champion"):
        exposition.forecast_families(forecasts, models="some")


def test_an_activation_moves_the_champion_gauge_at_the_next_scrape(tmp_path):
    root = tmp_path / "data"
    forecasts = make_forecasts()
    forecasts["champion"] = forecasts["model"] == "naive"
    store = RunStore(str(root), "r1")
    store.write_frame("forecasts", forecasts)
    store.write_json("summary.json", {"run_key": "r1", "champion_versions": {"cpu_cores": 1},
                                      "registrations": {"cpu_cores": {"model": "naive", "version": 1}}})
    store.publish_latest(["forecasts", "summary.json"])
    body, _ = exposition.metrics_response(str(root))
    assert samples(body, "foresight_champion")[key(metric="cpu_cores", model="naive")] == 1.0
    summary = json.loads((root / "latest" / "summary.json").read_text())
    summary["activations"] = [{"metric": "cpu_cores", "version": 2, "model": "arima", "by": "bob",
                               "at": "2024-03-01T10:00:00+00:00"}]
    (root / "latest" / "summary.json").write_text(json.dumps(summary))
    body, _ = exposition.metrics_response(str(root))
    assert samples(body, "foresight_champion") == {key(metric="cpu_cores", model="arima"): 1.0,
                                                   key(metric="memory_bytes", model="naive"): 1.0}
    assert {dict(k)["model"] for k in samples(body, "foresight_forecast") if dict(k)["metric"] == "cpu_cores"} == {
        "arima"}
    # an activated model this publish made no forecast with: the champion gauge names it, the forecasts stay the
    # published champion's (not every model's)
    summary["activations"][0]["model"] = "prophet"
    (root / "latest" / "summary.json").write_text(json.dumps(summary))
    body, _ = exposition.metrics_response(str(root))
    assert samples(body, "foresight_champion")[key(metric="cpu_cores", model="prophet")] == 1.0
    assert {dict(k)["model"] for k in samples(body, "foresight_forecast") if dict(k)["metric"] == "cpu_cores"} == {
        "naive"}
