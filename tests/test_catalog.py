"""The metrics a source offers to the Trigger form, from its settings alone."""
from __future__ import annotations

from foresight_lib.quality.features import prepare_series
from foresight_lib.sources import demo
from foresight_lib.sources.catalog import DEMO_METRICS, default_prometheus_metrics, forecast_names, source_metrics
from foresight_lib.sources.promql import load_promql


def test_the_demo_offers_the_metrics_it_generates():
    assert source_metrics({"kind": "demo"}) == list(DEMO_METRICS) == list(demo.METRICS)
    _, table = demo.generate_demo("2024-03-20", days=1)
    assert sorted(set(table["metric"])) == sorted(DEMO_METRICS)


def test_the_forecast_names_the_form_shows_are_those_the_features_step_gives():
    frame, table = demo.generate_demo("2024-03-20", days=1)
    derived = set(prepare_series(frame, table).series["metric"])
    names = forecast_names(list(DEMO_METRICS))
    assert set(names) == {m for m in DEMO_METRICS if m.endswith("_total")}
    assert {names.get(m, m) for m in DEMO_METRICS} == derived
    assert names["container_cpu_usage_seconds_total"] == "container_cpu_usage_cores"


def test_prometheus_offers_its_configured_queries_else_the_default_catalog():
    assert default_prometheus_metrics() == list(load_promql().metrics)
    assert source_metrics({"kind": "prometheus"}) == list(load_promql().metrics)
    assert source_metrics({"kind": "prometheus", "prometheus": {"queries": {"gpu_util": "avg(x)"}}}) == ["gpu_util"]


def test_files_offer_only_what_is_configured():
    assert source_metrics({"kind": "files", "path": "x"}) == []
    assert source_metrics({"kind": "files", "metrics": ["cpu", "mem"]}) == ["cpu", "mem"]
    assert source_metrics({"kind": "demo", "metrics": ["extra"]}) == [*DEMO_METRICS, "extra"]


def test_an_unreadable_promql_file_offers_nothing(tmp_path):
    bad = tmp_path / "promql.yaml"
    bad.write_text("metrics: [unclosed")
    assert default_prometheus_metrics(bad) == []
    assert default_prometheus_metrics(tmp_path / "missing.yaml") == []
