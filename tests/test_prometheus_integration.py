"""A real Prometheus (and Pushgateway): read a real data set back, scrape published forecasts, push them.

The TSDB is built from NAB's ``realKnownCause/cpu_utilization_asg_misconfiguration.csv``
(18,050 five-minute points, 2014) with ``promtool tsdb create-blocks-from openmetrics``,
plus a day of cAdvisor-style counters derived from it to run the default PromQL on.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from prom_server import (
    CADVISOR_TYPES,
    PrometheusProcess,
    PushgatewayProcess,
    build_tsdb,
    cadvisor_series,
    require_binary,
    wait_for,
    write_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from foresight_lib.errors import DataError, SourceError
from foresight_lib.orchestration.ports import free_port
from foresight_lib.publishing import pushgateway
from foresight_lib.runs.storage import RunStore
from foresight_lib.sources import prometheus_source as ps
from foresight_lib.sources.prometheus_settings import PrometheusSettings

pytestmark = pytest.mark.slow

NAB_FILE = "nab_aws/realKnownCause/cpu_utilization_asg_misconfiguration.csv"
NAB_LABELS = {"namespace": "nab", "pod": "asg-misconfiguration", "container": "cpu"}
WEIRD_NAMESPACE = 'we"ird\\ns {x}'
COUNTER_START = pd.Timestamp("2014-05-20 00:00", tz="UTC")  # on the 5-minute grid, inside the NAB range
COUNTER_POINTS = 289


@pytest.fixture(scope="module")
def nab(shared_data) -> pd.DataFrame:
    """The NAB series as text values (written to Prometheus as is) with UTC timestamps."""
    path = shared_data / NAB_FILE
    if not path.exists():
        pytest.skip(f"{path} is missing; the shared data sets are needed")
    frame = pd.read_csv(path, dtype={"value": str})
    frame["ds"] = pd.to_datetime(frame["timestamp"]).dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    return frame


@pytest.fixture(scope="module")
def cadvisor(nab) -> dict[str, np.ndarray]:
    """Per-container CPU use (cores) on the 5-minute grid: nginx = NAB % / 100, app = twice that."""
    usage = nab["value"].astype(float).to_numpy()[:COUNTER_POINTS] / 100.0
    return {"nginx": usage, "app": 2.0 * usage}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, nab, cadvisor):
    work = tmp_path_factory.mktemp("prometheus")
    seconds = (nab["ds"].astype("int64") // 10**9).tolist()
    series = [("nab_cpu_utilization", NAB_LABELS, seconds, nab["value"].tolist()),
              ("nab_cpu_utilization", {"namespace": WEIRD_NAMESPACE, "pod": "p", "container": "c"},
               seconds[:10], ["7"] * 10)]
    series += cadvisor_series(cadvisor, int(COUNTER_START.timestamp()))
    openmetrics = write_openmetrics(work / "data.om", series, kind=CADVISOR_TYPES)
    tsdb = build_tsdb(openmetrics, work / "tsdb")
    with PrometheusProcess(work, storage=tsdb) as server:
        yield server


def test_a_window_over_11000_points_comes_back_exactly_across_chunk_edges(prometheus, nab):
    query = 'nab_cpu_utilization{namespace="nab"}'
    start, end = nab["ds"].iloc[0], nab["ds"].iloc[-1]
    expected_y = nab["value"].astype(float).to_numpy()
    for max_points in (11_000, 4_001):
        settings = PrometheusSettings(url=prometheus.url, max_points=max_points, retries=0)
        result = ps.extract_prometheus(query=query, start=start, end=end, step="5m", metric="cpu_utilization",
                                       aggregation="container", settings=settings)
        frame = result.frame
        assert len(frame) == len(nab) == 18_050
        assert frame["unique_id"].unique().tolist() == ["cpu_utilization/nab/asg-misconfiguration/cpu"]
        assert (frame["ds"].to_numpy() == nab["ds"].to_numpy()).all()
        assert np.array_equal(frame["y"].to_numpy(), expected_y)  # bit for bit
        assert not frame.duplicated(["unique_id", "ds"]).any()
    # the same window in one request is over Prometheus' limit: the chunks are needed
    client = ps.PrometheusClient(PrometheusSettings(url=prometheus.url, retries=0))
    params = {"query": query, "start": str(start.timestamp()), "end": str(end.timestamp()), "step": "300"}
    with pytest.raises(SourceError, match="11,000 points"):
        client.request("/api/v1/query_range", params, query, lambda data: data)


def test_default_cadvisor_queries_give_cores_and_bytes_per_container_and_pod(prometheus, cadvisor):
    settings = PrometheusSettings(url=prometheus.url, retries=0)
    start = COUNTER_START + pd.Timedelta("5min")
    end = COUNTER_START + (COUNTER_POINTS - 1) * pd.Timedelta("5min")
    metrics = ["container_cpu_usage_cores", "container_memory_working_set_bytes"]
    result = ps.extract_metrics(settings, None, start, end, "5m", "container", labels={"namespace": "shop"},
                                metrics=metrics)
    frame = result.frame.set_index("unique_id")
    for container, usage in cadvisor.items():
        cpu = frame.loc[f"container_cpu_usage_cores/shop/web-1/{container}", "y"].to_numpy()
        assert len(cpu) == COUNTER_POINTS - 1
        np.testing.assert_allclose(cpu, usage[1:], rtol=1e-9)
        memory = frame.loc[f"container_memory_working_set_bytes/shop/web-1/{container}", "y"].to_numpy()
        np.testing.assert_array_equal(memory, usage[1:] * 1e9)
    assert set(result.series["unit"]) == {"cores", "bytes"}
    by_pod = ps.extract_metrics(settings, None, start, end, "5m", "pod", labels={"namespace": "shop"},
                                metrics=["container_cpu_usage_cores"]).frame
    assert by_pod["unique_id"].unique().tolist() == ["container_cpu_usage_cores/shop/web-1"]
    np.testing.assert_allclose(by_pod["y"].to_numpy(), 3.0 * cadvisor["nginx"][1:], rtol=1e-9)


def test_label_filters_from_the_config_are_matched_literally_never_run(prometheus, nab):
    settings = PrometheusSettings(url=prometheus.url, retries=0)
    queries = {"cpu": "max by ({aggregation}) (nab_cpu_utilization{selector})"}
    window = (nab["ds"].iloc[0], nab["ds"].iloc[9])
    weird = ps.extract_metrics(settings, queries, *window, "5m", "container", labels={"namespace": WEIRD_NAMESPACE},
                               align=False)
    assert weird.frame["unique_id"].unique().tolist() == [f"cpu/{WEIRD_NAMESPACE}/p/c"]
    assert weird.frame["y"].tolist() == [7.0] * 10
    injected = 'nab"}) or vector(1) or (nab_cpu_utilization{namespace="'
    with pytest.raises(DataError, match="no Prometheus query returned any series"):
        ps.extract_metrics(settings, queries, *window, "5m", "container", labels={"namespace": injected},
                           align=False)


def test_a_server_error_from_a_real_prometheus_names_the_query(prometheus):
    settings = PrometheusSettings(url=prometheus.url, retries=2, backoff_s=0.01)
    with pytest.raises(SourceError, match=r"after 1 attempt: HTTP 400 bad_data.*query: rate\(up\[5m\]; URL"):
        ps.extract_prometheus(query="rate(up[5m]", start="2014-05-20T00:00:00Z", end="2014-05-20T01:00:00Z",
                              step="5m", settings=settings)


# ---------------------------------------------------------------------------
# Published forecasts -> foresight serve-metrics -> Prometheus; and the Pushgateway


def forecasts(offset: float) -> pd.DataFrame:
    cutoff = pd.Timestamp.now(tz="UTC").floor("5min")
    rows = []
    ids = ["container_cpu_usage_cores/shop/web-1/nginx", "container_memory_working_set_bytes/shop/web-1"]
    for i, uid in enumerate(ids):
        for step in (1, 3, 6):
            yhat = offset + 10 * i + step + 0.125
            rows.append({"unique_id": uid, "cutoff": cutoff, "ds": cutoff + step * pd.Timedelta("5min"),
                         "step": step, "model": "arima", "yhat": yhat, "yhat_lo_80": yhat - 1, "yhat_hi_80": yhat + 1,
                         "yhat_lo_95": yhat - 2, "yhat_hi_95": yhat + 2})
    return pd.DataFrame(rows)


def expected_samples(frame: pd.DataFrame) -> dict[tuple, float]:
    out = {}
    for row in frame.itertuples():
        horizon = f"{row.step * 5}m"
        out[(row.unique_id, horizon, "yhat")] = row.yhat
        out[(row.unique_id, horizon, "yhat_lower")] = row.yhat_lo_95
        out[(row.unique_id, horizon, "yhat_upper")] = row.yhat_hi_95
    return out


def publish(root: Path, run_id: str, frame: pd.DataFrame) -> None:
    store = RunStore(str(root), run_id)
    store.write_frame("forecasts", frame)
    store.publish_latest(["forecasts"])


def test_prometheus_scraping_serve_metrics_ingests_each_published_forecast(tmp_path):
    require_binary("prometheus")
    root = tmp_path / "data"
    publish(root, "r1", forecasts(100.0))
    port = free_port()
    command = [sys.executable, "-m", "foresight_lib.cli", "serve-metrics", "--host", "127.0.0.1", "--port", str(port),
               "--data-root", str(root), "--horizons", "all"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/-/healthy", timeout=1).ok, timeout=30,
                 what="foresight serve-metrics")
        with PrometheusProcess(tmp_path / "prom", targets=[f"127.0.0.1:{port}"], scrape_interval="1s") as prom:
            def ingested(offset: float):
                result = prom.query('foresight_forecast{value_type!="anomaly"}')
                got = {(r["metric"]["series"], r["metric"]["horizon"], r["metric"]["value_type"]): float(r["value"][1])
                       for r in result}
                return got if got == expected_samples(forecasts(offset)) else None

            got = wait_for(lambda: ingested(100.0), timeout=20, what="forecasts in Prometheus")
            assert len(got) == 2 * 3 * 3
            labels = prom.query('foresight_forecast{value_type="yhat", horizon="30m"}')[0]["metric"]
            assert labels["job"] == "foresight" and labels["model"] == "arima" and "entity" in labels
            publish(root, "r2", forecasts(500.0))  # a new publish, no restart
            wait_for(lambda: ingested(500.0), timeout=20, what="the new forecasts in Prometheus")
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    assert server.returncode == 0, server.stdout.read()


def gateway_samples(url: str, job: str, group: dict[str, str]) -> dict[tuple, float]:
    """The Pushgateway's ``foresight_forecast`` samples (bar anomaly) of one group."""
    got = {}
    for family in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.name == "foresight_forecast" and sample.labels["value_type"] != "anomaly":
                assert sample.labels["job"] == job and all(sample.labels[k] == v for k, v in group.items())
                got[(sample.labels["series"], sample.labels["horizon"], sample.labels["value_type"])] = sample.value
    return got


def test_pushgateway_receives_the_published_forecasts(tmp_path):
    root = tmp_path / "data"
    publish(root, "r1", forecasts(7.0))
    group = {"env": "ci"}
    with PushgatewayProcess(tmp_path / "pg") as gateway:
        pushed = pushgateway.push_latest(gateway.url, str(root), job="foresight_nightly", grouping_key=group)
        got = gateway_samples(gateway.url, "foresight_nightly", group)
        assert got == expected_samples(forecasts(7.0))
        assert pushed >= len(got)
        # a later push replaces the group: a series gone from the publish is gone from the gateway
        publish(root, "r2", forecasts(9.0).iloc[:3])
        pushgateway.push_latest(gateway.url, str(root), job="foresight_nightly", grouping_key=group)
        assert gateway_samples(gateway.url, "foresight_nightly", group) == expected_samples(forecasts(9.0).iloc[:3])
