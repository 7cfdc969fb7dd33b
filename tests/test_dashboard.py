"""The plugin's dashboard at /foresight/: its JSON, its page, its static files and the offline API docs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from api_support import reading_plugin
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_exposition import CUTOFF, FREQ, SERIES, make_actuals, make_forecasts

from foresight_lib import pipeline
from foresight_lib.forecasting.metrics import leaderboard
from foresight_lib.runs.storage import RunStore
from foresight_lib.serving import dashboard

REPO = Path(__file__).resolve().parents[1]
MLFLOW_UI = "http://mlflow.example:5000"
AIRFLOW_RUN = "scheduled__2024-03-01T02:00:00+00:00"
HOOKS = ['select id="metric"', 'select id="entity"', 'select id="model"', 'div id="forecast-chart"',
         'table id="champions"', 'table id="leaderboard"', 'table id="recommendations"', 'id="plan-state"',
         'a id="airflow-run"', 'a id="mlflow-run"', 'id="published-at"', 'id="empty-state"']


@pytest.fixture(scope="module")
def plugin():
    with reading_plugin("foresight_plugin_dashboard_test") as module:
        yield module


@pytest.fixture
def serve(plugin, monkeypatch):
    """A client of the plugin mounted at /foresight (as Airflow's api-server mounts it) over a data root."""
    def client(data_root: Path) -> TestClient:
        monkeypatch.setenv("FORESIGHT_DATA_ROOT", str(data_root))
        monkeypatch.setenv("FORESIGHT_MLFLOW_UI_URL", MLFLOW_UI)
        root = FastAPI()
        root.mount("/foresight", plugin.app)
        return TestClient(root)

    return client


def _urls(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', page) + re.findall(r"url: '([^']*)'", page)


# ---------------------------------------------------------------------------
# A small publish made with the exposition tests' helpers (fast)


def _scores() -> pd.DataFrame:
    """Per-metric MASE: arima beats naive on cpu_cores, naive beats arima on memory_bytes; wQL and coverage beside."""
    rows = []
    for metric, best in (("cpu_cores", "arima"), ("memory_bytes", "naive")):
        for model in ("naive", "arima"):
            for i, horizon in enumerate(["5m", "15m", "30m"]):
                rows.append({"metric": metric, "model": model, "horizon": horizon,
                             "mase": 0.6 + 0.1 * i + (0.0 if model == best else 0.5),
                             "wql": 0.05 + 0.01 * i + (0.0 if model == best else 0.02),
                             "coverage_80": 0.8 - 0.02 * i, "coverage_95": 0.95 - 0.01 * i})
    return pd.DataFrame(rows)


def _publish_small(data_root: Path, with_plan: bool = True) -> pd.DataFrame:
    forecasts = make_forecasts()
    champion = {"cpu_cores": "arima", "memory_bytes": "naive"}
    forecasts["champion"] = [champion[uid.split("/")[0]] == model
                             for uid, model in zip(forecasts["unique_id"], forecasts["model"], strict=True)]
    recs = pd.DataFrame({"unique_id": SERIES, "entity": ["shop/web-1/nginx", "shop/web-1"],
                         "metric": ["cpu_cores", "memory_bytes"], "resource": ["cpu", "memory"],
                         "kind": ["daily", "daily"], "lead": ["0m", "0m"], "period_start": [CUTOFF, CUTOFF],
                         "request": [0.5, 2e9], "request_display": ["500m", "2Gi"], "replicas": [2, 1],
                         "reason": [None, "<script>alert(1)</script>"]})
    scores = _scores()
    store = RunStore(str(data_root), "2024-03-01T020000Z")
    store.write_frame("forecasts", forecasts)
    store.write_frame("actuals", make_actuals({SERIES[0]: 12.0, SERIES[1]: 23.0}))
    store.write_frame("recommendations", recs)
    store.write_frame("leaderboard", scores.groupby(["model", "horizon"], sort=False)["mase"].mean().reset_index())
    store.write_json("summary.json", {
        "run_key": "2024-03-01T020000Z", "run_id": AIRFLOW_RUN, "data_interval_end": CUTOFF.isoformat(),
        "champion": "arima", "mlflow_parent_run": "abc123", "mlflow_experiment_id": "7",
        "champion_versions": {"cpu_cores": 3, "memory_bytes": 1},
        "metric_leaderboard": scores.to_dict(orient="records")})
    store.publish_latest(["forecasts", "actuals", "recommendations", "leaderboard", "summary.json"],
                         extra={"data_interval_end": CUTOFF.isoformat()})
    if with_plan:
        plan = RunStore(str(data_root), "2024-03-01T023000Z", folder="plans")
        plan.write_frame("scaling_plan", recs.assign(kind="window", period_start=CUTOFF + 6 * FREQ))
        plan.publish_latest(["scaling_plan"], manifest_name="_plan_manifest.json")
    return scores


def test_the_overview_names_the_run_the_champions_and_their_mase_per_horizon(tmp_path, serve):
    scores = _publish_small(tmp_path / "data")
    answer = serve(tmp_path / "data").get("/foresight/overview")
    assert answer.status_code == 200
    data = answer.json()
    assert data["published"] is True and data["message"] is None and data["errors"] == []
    assert data["data_root"] == str(tmp_path / "data") and data["published_at"]
    assert data["run"]["airflow_run_id"] == AIRFLOW_RUN
    assert data["run"]["data_interval_end"] == CUTOFF.isoformat()
    assert data["links"]["airflow"]["url"] == ("/dags/foresight_nightly/runs/"
                                               "scheduled__2024-03-01T02%3A00%3A00%2B00%3A00")
    assert data["links"]["mlflow"]["url"] == f"{MLFLOW_UI}/#/experiments/7/runs/abc123"
    assert data["horizons"] == ["5m", "15m", "30m"]
    champions = {c["metric"]: c for c in data["champions"]}
    assert {m: (c["model"], c["version"]) for m, c in champions.items()} == {
        "cpu_cores": ("arima", 3), "memory_bytes": ("naive", 1)}
    for metric, champion in champions.items():
        rows = scores[(scores["metric"] == metric) & (scores["model"] == champion["model"])]
        assert champion["mase"] == pytest.approx(dict(zip(rows["horizon"], rows["mase"], strict=True)))
    board = {(r["metric"], r["model"]): r for r in data["leaderboard"]}
    assert len(board) == 4 and data["leaderboard_scope"] == "metric"
    assert [k for k, r in board.items() if r["champion"]] == [("cpu_cores", "arima"), ("memory_bytes", "naive")]
    assert board[("cpu_cores", "naive")]["mase"]["30m"] == pytest.approx(1.3)
    # the weighted quantile loss and the coverage per horizon beside MASE, as published
    assert board[("cpu_cores", "naive")]["wql"] == pytest.approx({"5m": 0.07, "15m": 0.08, "30m": 0.09})
    assert board[("memory_bytes", "naive")]["coverage_80"] == pytest.approx({"5m": 0.8, "15m": 0.78, "30m": 0.76})
    assert board[("memory_bytes", "arima")]["coverage_95"]["30m"] == pytest.approx(0.93)
    assert data["metrics"] == ["cpu_cores", "memory_bytes"]
    assert {s["unique_id"] for s in data["series"]} == set(SERIES)
    recs = data["recommendations"]  # the nightly's daily sizes and the newer scaling plan's windows
    assert recs["count"] == 4 and "request_display" in recs["columns"]
    assert sorted(r["kind"] for r in recs["rows"]) == ["daily", "daily", "window", "window"]


def test_the_scaling_plan_state_says_when_and_how_many_and_whether_stale(tmp_path):
    root = tmp_path / "data"
    _publish_small(root)
    published = pd.Timestamp(json.loads((root / "latest" / "_plan_manifest.json").read_text())["published_at"])
    fresh = dashboard.overview(str(root), now=published + pd.Timedelta("10min"))["plan"]
    assert fresh["published"] and fresh["stale"] is False and fresh["entities"] == 2 and fresh["windows"] == 2
    assert "published" in fresh["message"] and "2 entities" in fresh["message"]
    stale = dashboard.overview(str(root), now=published + pd.Timedelta("2h"))["plan"]
    assert stale["stale"] is True and "foresight_scaling_plan" in stale["message"]

    bare = tmp_path / "bare"
    _publish_small(bare, with_plan=False)
    plan = dashboard.overview(str(bare))["plan"]
    assert plan["published"] is False and "no plan published yet" in plan["message"]


def test_the_series_endpoint_gives_actuals_and_the_champions_forecast_with_both_bands(tmp_path, serve):
    _publish_small(tmp_path / "data")
    client = serve(tmp_path / "data")
    data = client.get("/foresight/series", params={"series": SERIES[0]}).json()
    assert (data["unique_id"], data["metric"], data["entity"]) == (SERIES[0], "cpu_cores", "shop/web-1/nginx")
    assert data["model"] == "arima" and data["champion"] is True and data["levels"] == ["80", "95"]
    assert len(data["forecast"]) == 6 and data["cutoff"] == CUTOFF.isoformat()
    first = data["forecast"][0]
    assert first["ds"] == (CUTOFF + FREQ).isoformat() and first["yhat"] == 11.5
    assert (first["yhat_lo_95"], first["yhat_lo_80"], first["yhat_hi_80"], first["yhat_hi_95"]) == (
        9.5, 10.5, 12.5, 13.5)
    assert len(data["actuals"]) == 288 and data["actuals"][-1] == {"ds": CUTOFF.isoformat(), "y": 12.0}
    by_parts = client.get("/foresight/series", params={"metric": "memory_bytes", "entity": "shop/web-1"}).json()
    assert by_parts["unique_id"] == SERIES[1] and by_parts["model"] == "naive"
    other = client.get("/foresight/series", params={"series": SERIES[1], "model": "arima"}).json()
    assert other["model"] == "arima" and other["champion"] is False

    unknown = client.get("/foresight/series", params={"series": "cpu_cores/nowhere"})
    assert unknown.status_code == 404
    assert "no series 'cpu_cores/nowhere'" in unknown.json()["detail"] and "/foresight/overview" in (
        unknown.json()["detail"])
    assert client.get("/foresight/series", params={"series": SERIES[0], "model": "prophet"}).status_code == 404
    assert client.get("/foresight/series").status_code == 400


def test_older_publishes_fall_back_to_the_run_folders_scores_then_the_overall_leaderboard(tmp_path):
    root = tmp_path / "data"
    store = RunStore(str(root), "r1")
    store.write_frame("forecasts", make_forecasts())
    per_series = _scores().assign(unique_id=lambda f: f["metric"].map(dict(zip(["cpu_cores", "memory_bytes"],
                                                                                   SERIES, strict=True))))
    store.write_frame("per_series", per_series.drop(columns="metric"))
    store.write_frame("leaderboard", pd.DataFrame({"model": ["naive"], "horizon": ["5m"], "mase": [0.9]}))
    store.publish_latest(["forecasts", "leaderboard"])
    data = dashboard.overview(str(root), MLFLOW_UI)
    assert data["leaderboard_scope"] == "metric"
    board = {(r["metric"], r["model"]): r for r in data["leaderboard"]}
    assert board[("cpu_cores", "arima")]["wql"]["5m"] == pytest.approx(0.05)  # from the per-series scores
    assert {c["metric"]: c["model"] for c in data["champions"]} == {"cpu_cores": "arima", "memory_bytes": "naive"}
    assert data["links"]["mlflow"]["url"] == MLFLOW_UI and data["links"]["airflow"]["url"] == "/dags/foresight_nightly"

    store.write_frame("forecasts", make_forecasts(offset=1.0))  # a new publish, its run folder without scores
    (Path(store.path("per_series"))).unlink()
    store.publish_latest(["forecasts", "leaderboard"])
    data = dashboard.overview(str(root))
    assert data["leaderboard_scope"] == "all"
    # a leaderboard published before the weighted quantile loss: no scores beside MASE
    assert data["leaderboard"] == [{"metric": None, "model": "naive", "mase": {"5m": 0.9}, "mean_mase": 0.9,
                                    "score": 0.9, "champion": True, "wql": {}, "coverage_80": {},
                                    "coverage_95": {}}]
    assert {c["model"] for c in data["champions"]} == {"naive"}


def test_nothing_published_is_an_empty_state_not_an_error(tmp_path, serve):
    client = serve(tmp_path / "nothing")
    answer = client.get("/foresight/overview")
    assert answer.status_code == 200
    data = answer.json()
    assert data["published"] is False and data["published_at"] is None
    assert f"nothing published yet under {tmp_path / 'nothing'}" in data["message"]
    assert "foresight_nightly" in data["message"]
    assert data["champions"] == [] and data["leaderboard"] == [] and data["series"] == []
    assert data["recommendations"] is None and data["plan"]["published"] is False
    assert data["links"]["airflow"]["url"] == "/dags/foresight_nightly"
    missing = client.get("/foresight/series", params={"series": SERIES[0]})
    assert missing.status_code == 404 and "nothing published yet" in missing.json()["detail"]
    assert client.get("/foresight/").status_code == 200


def test_non_finite_scores_and_odd_values_still_give_valid_json(tmp_path, serve):
    root = tmp_path / "data"
    _publish_small(root, with_plan=False)
    summary = json.loads((root / "latest" / "summary.json").read_text())
    summary["metric_leaderboard"][0]["mase"] = float("nan")
    (root / "latest" / "summary.json").write_text(json.dumps(summary))
    forecasts = pd.read_parquet(root / "latest" / "forecasts.parquet")
    forecasts.loc[0, "yhat_hi_95"] = np.inf
    forecasts.to_parquet(root / "latest" / "forecasts.parquet")
    client = serve(root)
    board = client.get("/foresight/overview").json()["leaderboard"]
    assert any(value is None for row in board for value in row["mase"].values())
    series = client.get("/foresight/series", params={"series": forecasts.loc[0, "unique_id"],
                                                     "model": forecasts.loc[0, "model"]}).json()
    assert series["forecast"][0]["yhat_hi_95"] is None


# ---------------------------------------------------------------------------
# The page, its static files and the API docs: all served by the plugin


def test_the_page_has_the_hooks_and_asks_only_for_the_plugins_own_urls(tmp_path, serve):
    page = serve(tmp_path).get("/foresight/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for hook in HOOKS:
        assert hook in page.text, hook
    assert not re.search(r"https?://", page.text)
    urls = [u for u in _urls(page.text) if u not in ("#", "data:,")]
    assert urls and all(u.startswith("/foresight/") for u in urls), urls
    assert "/foresight/static/plotly.min.js?v=" in page.text


def test_the_pages_script_and_style_use_no_outside_url_and_insert_text_only(tmp_path, serve):
    client = serve(tmp_path)
    script = client.get("/foresight/static/dashboard.js")
    style = client.get("/foresight/static/dashboard.css")
    assert script.status_code == style.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    for text in (script.text, style.text):
        assert not re.search(r"https?://", text) and "@import" not in text
    assert "innerHTML" not in script.text and "insertAdjacentHTML" not in script.text
    for attribute in ('"data-series"', '"data-points"', '"data-ready"'):
        assert attribute in script.text


def test_plotly_is_served_from_the_installed_package_with_a_long_cache(tmp_path, serve):
    answer = serve(tmp_path).get("/foresight/static/plotly.min.js")
    assert answer.status_code == 200 and len(answer.content) > 1_000_000
    assert b"plotly" in answer.content[:2000].lower()
    assert "max-age=31536000" in answer.headers["cache-control"]
    client = serve(tmp_path)
    assert client.get("/foresight/static/nope.js").status_code == 404
    assert client.get("/foresight/static/../foresight_plugin.py").status_code == 404


def test_the_api_docs_use_the_plugins_own_swagger_files(tmp_path, serve):
    client = serve(tmp_path)
    docs = client.get("/foresight/docs")
    assert docs.status_code == 200
    assert not re.search(r"https?://", docs.text)
    urls = _urls(docs.text)
    assert "/foresight/openapi.json" in urls
    assets = [u for u in urls if "/static/swagger/" in u]
    assert {re.sub(r"\?.*", "", u).rsplit("/", 1)[1] for u in assets} == {
        "swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}
    for url in assets:
        assert url.startswith("/foresight/static/swagger/")
        answer = client.get(url)
        assert answer.status_code == 200 and len(answer.content) > 1000, url
    assert client.get("/foresight/redoc").status_code == 404
    spec = client.get("/foresight/openapi.json").json()
    assert {"/overview", "/series", "/metrics", "/forecasts", "/recommendations"} <= set(spec["paths"])
    assert not any(path.startswith(("/static", "/docs")) for path in spec["paths"])


# ---------------------------------------------------------------------------
# On what the nightly pipeline really publishes


@pytest.fixture(scope="module")
def nightly(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard-nightly")
    settings = {"history_days": 3, "data_root": str(root / "data"), "models": ["naive", "seasonal_naive"],
                "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "art")}}
    out = pipeline.run_nightly("2024-03-15T02:00:00", settings)
    assert out["published"] is True
    return root / "data"


@pytest.mark.slow
def test_a_nightly_publish_shows_each_metrics_champion_with_its_published_scores(nightly, serve):
    data = serve(nightly).get("/foresight/overview").json()
    summary = json.loads((nightly / "latest" / "summary.json").read_text())
    assert data["published"] is True and data["errors"] == [] and data["leaderboard_scope"] == "metric"
    assert data["run"]["airflow_run_id"] == summary["run_id"]
    assert data["links"]["mlflow"]["url"] == (f"{MLFLOW_UI}/#/experiments/{summary['mlflow_experiment_id']}"
                                              f"/runs/{summary['mlflow_parent_run']}")
    per_series = RunStore(str(nightly), summary["run_key"]).read_frame("per_series")
    metric_of = per_series["unique_id"].str.split("/").str[0]
    forecasts = pd.read_parquet(nightly / "latest" / "forecasts.parquet")
    marked = forecasts[forecasts["champion"]].assign(metric=lambda f: f["unique_id"].str.split("/").str[0])
    assert {c["metric"] for c in data["champions"]} == set(metric_of)
    for champion in data["champions"]:
        metric, model = champion["metric"], champion["model"]
        assert set(marked.loc[marked["metric"] == metric, "model"]) == {model}
        assert champion["version"] == summary["champion_versions"][metric]
        board = leaderboard(per_series[metric_of == metric], data["horizons"])
        mine = board[board["model"] == model]
        assert champion["mase"] == pytest.approx(dict(zip(mine["horizon"], mine["mase"], strict=True)))
        published = [r for r in summary["metric_leaderboard"] if r["metric"] == metric and r["model"] == model]
        assert champion["mase"] == pytest.approx({r["horizon"]: r["mase"] for r in published})
    assert sum(row["champion"] for row in data["leaderboard"]) == len(data["champions"])


@pytest.mark.slow
def test_a_nightly_series_has_its_last_day_and_the_champions_bands(nightly, serve):
    client = serve(nightly)
    overview = client.get("/foresight/overview").json()
    first = overview["series"][0]
    data = client.get("/foresight/series", params={"series": first["unique_id"]}).json()
    champion = {c["metric"]: c["model"] for c in overview["champions"]}[first["metric"]]
    assert data["model"] == champion and data["champion"] is True and data["levels"] == ["80", "95"]
    assert len(data["forecast"]) == 6 and [r["horizon"] for r in data["forecast"]][:3] == ["5m", "10m", "15m"]
    for row in data["forecast"]:
        assert row["yhat_lo_95"] <= row["yhat_lo_80"] <= row["yhat"] <= row["yhat_hi_80"] <= row["yhat_hi_95"]
    assert 100 < len(data["actuals"]) <= 288 and data["actuals"][-1]["ds"] < data["forecast"][0]["ds"]
    assert overview["recommendations"]["count"] > 0


def _activate(data_root: Path, metric: str, version: int, model: str, by: str = "alice") -> dict:
    """What an activation writes: latest/summary.json (and nothing else under latest/) rewritten in place."""
    path = data_root / "latest" / "summary.json"
    summary = json.loads(path.read_text())
    record = {"metric": metric, "version": version, "model": model, "by": by,
              "previous_version": summary["champion_versions"][metric], "at": "2024-03-01T09:30:00+00:00"}
    summary["champion_versions"][metric] = version
    summary["activations"] = [*summary.get("activations", []), record]
    path.write_text(json.dumps(summary))
    return record


def test_an_activation_shows_at_the_next_request_with_who_and_when(tmp_path, serve):
    _publish_small(tmp_path / "data")
    client = serve(tmp_path / "data")
    before = client.get("/foresight/overview").json()
    assert {c["metric"]: c["model"] for c in before["champions"]}["cpu_cores"] == "arima"
    assert before["activations"] == []
    _activate(tmp_path / "data", "cpu_cores", 5, "naive")
    data = client.get("/foresight/overview").json()  # same process, same cache: no restart, no new publish
    cpu = next(c for c in data["champions"] if c["metric"] == "cpu_cores")
    assert (cpu["model"], cpu["version"]) == ("naive", 5)
    assert cpu["activation"] == {"metric": "cpu_cores", "version": 5, "model": "naive", "previous_version": 3,
                                 "by": "alice", "at": "2024-03-01T09:30:00+00:00"}
    assert data["activations"] == [cpu["activation"]]
    assert {(r["metric"], r["model"]) for r in data["leaderboard"] if r["champion"]} == {
        ("cpu_cores", "naive"), ("memory_bytes", "naive")}
    chart = client.get("/foresight/series", params={"series": SERIES[0]}).json()
    assert chart["model"] == "naive" and chart["champion"] is True


def test_a_paused_nightly_dag_with_queued_runs_says_why_they_wait(tmp_path):
    _publish_small(tmp_path / "data")
    data = dashboard.overview(str(tmp_path / "data"), dag_state={"paused": True, "queued": 2})
    assert data["dag"]["paused"] is True and data["dag"]["queued"] == 2
    assert "wait in Queued because the DAG is paused" in data["dag"]["message"]
    running = dashboard.overview(str(tmp_path / "data"), dag_state={"paused": False, "queued": 2})
    assert running["dag"]["message"] is None
    assert dashboard.overview(str(tmp_path / "data"))["dag"] is None  # Airflow could not say


def test_an_activated_model_without_published_forecasts_charts_the_published_champion(tmp_path, serve):
    _publish_small(tmp_path / "data")
    _activate(tmp_path / "data", "cpu_cores", 9, "lstm")
    client = serve(tmp_path / "data")
    cpu = next(c for c in client.get("/foresight/overview").json()["champions"] if c["metric"] == "cpu_cores")
    assert (cpu["model"], cpu["version"]) == ("lstm", 9)
    assert client.get("/foresight/series", params={"series": SERIES[0]}).json()["model"] == "arima"
