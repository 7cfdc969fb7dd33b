"""Paging and search of what reads the published results: the JSON views, the dashboard's series, ``/metrics``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from api_support import reading_plugin
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_exposition import CUTOFF, make_forecasts, publish, registry_text, samples

from foresight_lib.serving import dashboard, json_views

N_SERIES = 12


def fleet(n: int = N_SERIES) -> pd.DataFrame:
    """``n`` series (``cpu_cores/ns/app-<i>`` and every third ``memory_bytes/...``), two models, six steps."""
    template = make_forecasts()
    template = template[template["unique_id"] == template["unique_id"].iloc[0]]
    frames = []
    for i in range(n):
        metric = "memory_bytes" if i % 3 == 0 else "cpu_cores"
        frames.append(template.assign(unique_id=f"{metric}/ns/app-{i:03d}", yhat=template["yhat"] + i,
                                      champion=template["model"] == "arima"))
    return pd.concat(frames, ignore_index=True)


def recommendations(n: int = N_SERIES) -> pd.DataFrame:
    ids = fleet(n)["unique_id"].drop_duplicates().tolist()
    return pd.DataFrame({"unique_id": ids, "entity": [u.split("/", 1)[1] for u in ids],
                         "metric": [u.split("/", 1)[0] for u in ids], "resource": "cpu", "kind": "daily",
                         "period_start": CUTOFF, "request": [0.1 * (i + 1) for i in range(len(ids))]})


@pytest.fixture
def root(tmp_path) -> Path:
    data = tmp_path / "data"
    publish(data, "r1", fleet(), recommendations=recommendations())
    return data


def test_forecasts_come_a_page_at_a_time_and_the_pages_cover_every_row_once(root):
    rows, offset, seen = [], 0, 0
    while offset is not None:
        page = json_views.forecasts_payload(str(root), limit=25, offset=offset)
        assert page["count"] == N_SERIES * 12 and page["limit"] == 25 and page["offset"] == offset
        assert len(page["forecasts"]) <= 25 and page["truncated"] == (page["next_offset"] is not None)
        rows += page["forecasts"]
        offset, seen = page["next_offset"], seen + 1
    assert seen == 6 and len(rows) == N_SERIES * 12
    assert len({(r["unique_id"], r["model"], r["ds"]) for r in rows}) == len(rows)
    assert [r["unique_id"] for r in rows] == sorted(r["unique_id"] for r in rows)  # sorted by series
    past = json_views.forecasts_payload(str(root), limit=25, offset=10_000)
    assert past["forecasts"] == [] and past["next_offset"] is None and past["count"] == N_SERIES * 12


def test_forecasts_filter_by_series_metric_entity_model_and_search(root):
    one = json_views.forecasts_payload(str(root), series="cpu_cores/ns/app-001")
    assert one["count"] == 12 and {r["unique_id"] for r in one["forecasts"]} == {"cpu_cores/ns/app-001"}
    assert {r["metric"] for r in one["forecasts"]} == {"cpu_cores"} and one["forecasts"][0]["entity"] == "ns/app-001"
    assert json_views.forecasts_payload(str(root), series="cpu_cores/ns/nowhere")["count"] == 0
    assert json_views.forecasts_payload(str(root), metric="memory_bytes", model="naive")["count"] == 4 * 6
    assert json_views.forecasts_payload(str(root), entity="ns/app-003")["count"] == 12
    found = json_views.forecasts_payload(str(root), q="APP-01", model="arima")  # case-insensitive substring
    assert {r["unique_id"] for r in found["forecasts"]} == {"cpu_cores/ns/app-010", "cpu_cores/ns/app-011"}
    assert json_views.forecasts_payload(str(root), q="nothing-like-it")["count"] == 0


def test_recommendations_page_and_search_by_entity(root):
    page = json_views.recommendations_payload(str(root), limit=5)
    assert page["count"] == N_SERIES and len(page["recommendations"]) == 5 and page["next_offset"] == 5
    last = json_views.recommendations_payload(str(root), limit=5, offset=10)
    assert len(last["recommendations"]) == 2 and last["next_offset"] is None and not last["truncated"]
    found = json_views.recommendations_payload(str(root), q="app-00")
    assert found["count"] == 10 and all("app-00" in r["entity"] for r in found["recommendations"])
    assert json_views.recommendations_payload(str(root), entity="ns/app-007")["count"] == 1


def test_the_overview_lists_at_most_a_page_of_series_and_the_search_finds_the_rest(root, monkeypatch):
    monkeypatch.setattr(dashboard, "SERIES_LISTED", 5)
    data = dashboard.overview(str(root))
    assert len(data["series"]) == 5 and data["series_count"] == N_SERIES and data["series_truncated"] is True
    assert data["entity_count"] == N_SERIES and len(data["entities"]) == 5
    assert data["metrics"] == ["cpu_cores", "memory_bytes"]
    found = dashboard.series_search(str(root), metric="cpu_cores", q="app-01")
    assert [s["unique_id"] for s in found["series"]] == ["cpu_cores/ns/app-010", "cpu_cores/ns/app-011"]
    assert found["series"][0] == {"unique_id": "cpu_cores/ns/app-010", "metric": "cpu_cores", "entity": "ns/app-010"}
    first = dashboard.series_search(str(root), metric="cpu_cores", limit=3)
    assert first["count"] == 8 and len(first["series"]) == 3 and first["next_offset"] == 3
    rest = dashboard.series_search(str(root), metric="cpu_cores", limit=10, offset=3)
    assert rest["next_offset"] is None and {s["unique_id"] for s in first["series"] + rest["series"]} == {
        f"cpu_cores/ns/app-{i:03d}" for i in range(N_SERIES) if i % 3}
    chart = dashboard.series_payload(str(root), "memory_bytes/ns/app-009")
    assert chart["model"] == "arima" and len(chart["forecast"]) == 6


def test_the_endpoints_take_paging_and_search_and_refuse_pages_past_the_maximum(root, monkeypatch):
    with reading_plugin("foresight_plugin_pages_test") as plugin:
        monkeypatch.setenv("FORESIGHT_DATA_ROOT", str(root))
        app = FastAPI()
        app.mount("/foresight", plugin.app)
        client = TestClient(app)
        page = client.get("/foresight/forecasts", params={"q": "app-00", "limit": 7, "offset": 7}).json()
        assert page["count"] == 10 * 12 and len(page["forecasts"]) == 7 and page["next_offset"] == 14
        found = client.get("/foresight/series/search", params={"metric": "memory_bytes", "q": "app-00"}).json()
        assert [s["entity"] for s in found["series"]] == ["ns/app-000", "ns/app-003", "ns/app-006", "ns/app-009"]
        recs = client.get("/foresight/recommendations", params={"q": "app-011"}).json()
        assert recs["count"] == 1 and recs["recommendations"][0]["entity"] == "ns/app-011"
        too_many = client.get("/foresight/forecasts", params={"limit": json_views.MAX_PAGE_SIZE + 1})
        assert too_many.status_code == 422
        assert client.get("/foresight/forecasts", params={"offset": -1}).status_code == 422


def test_the_exposition_keeps_within_its_series_budget_and_counts_what_it_left_out():
    forecasts, recs = fleet(), recommendations()
    text = registry_text(forecasts, recommendations=recs, max_series=5)
    exposed = {dict(k)["series"] for k in samples(text, "foresight_forecast")}
    assert exposed == set(sorted(forecasts["unique_id"].unique())[:5])
    assert {dict(k)["series"] for k in samples(text, "foresight_recommendation")} == exposed
    assert samples(text, "foresight_exposition_left_out") == {
        (("family", "forecast"),): N_SERIES - 5.0, (("family", "recommendation"),): N_SERIES - 5.0}
    within = registry_text(forecasts, recommendations=recs, max_series=N_SERIES)
    assert len({dict(k)["series"] for k in samples(within, "foresight_forecast")}) == N_SERIES
    assert set(samples(within, "foresight_exposition_left_out").values()) == {0.0}
    unbounded = registry_text(forecasts, recommendations=recs)  # a push: no budget, no count
    assert "foresight_exposition_left_out" not in unbounded


def test_the_series_budget_is_a_setting_with_a_default():
    from foresight_lib.config import PublishConfig

    assert PublishConfig().exposition_max_series == 10_000
    assert PublishConfig(exposition_max_series=None).exposition_max_series is None
    with pytest.raises(ValueError):
        PublishConfig(exposition_max_series=0)
