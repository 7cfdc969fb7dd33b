"""The Prometheus source against small local HTTP servers (the real Prometheus: test_prometheus_integration)."""
from __future__ import annotations

import base64
import json
import socket
import threading
import time

import numpy as np
import pandas as pd
import pytest
from prom_server import ScriptedServer, matrix

from foresight_lib.errors import ConfigError, DataError, SourceError
from foresight_lib.orchestration.ports import free_port
from foresight_lib.sources import prometheus_source as ps
from foresight_lib.sources.prometheus_settings import PROMETHEUS_MAX_POINTS, PrometheusSettings, resolve_settings
from foresight_lib.sources.promql import (
    AGGREGATION_LEVELS,
    build_selector,
    load_promql,
    quote_promql_string,
    render_query,
)

T0 = 1_700_000_100  # a multiple of 300 s


def fake_prometheus(data: dict[tuple, dict[int, str]], limit: int = PROMETHEUS_MAX_POINTS):
    """A query_range answering with stored samples at start + k * step (and Prometheus' point limit)."""

    def answer(path: str, fields: dict) -> tuple[int, str]:
        start, end, step = float(fields["start"]), float(fields["end"]), float(fields["step"])
        if (end - start) / step > limit:
            return 400, json.dumps({"status": "error", "errorType": "bad_data",
                                    "error": "exceeded maximum resolution of 11,000 points per timeseries"})
        times = [start + k * step for k in range(int((end - start) // step) + 1)]
        result = []
        for labels, samples in data.items():
            values = [(t, samples[int(t)]) for t in times if int(t) in samples]
            if values:
                result.append((dict(labels), values))
        return 200, matrix(result)

    return answer


def settings(url: str, **kwargs) -> PrometheusSettings:
    return PrometheusSettings(url=url, backoff_s=0.01, max_backoff_s=0.05, **kwargs)


# ---------------------------------------------------------------------------
# Chunks


@pytest.mark.parametrize("points", [1, 2, 9, 10, 11, 25, 100, 11_000, 11_001, 25_000])
@pytest.mark.parametrize("max_points", [2, 3, 10, 11_000])
def test_chunks_hold_every_evaluation_time_once_and_stay_under_the_limit(points, max_points):
    step = 300_000
    start = T0 * 1000
    last = start + (points - 1) * step + 123  # an end between two steps is not evaluated
    chunks = ps.plan_chunks(start, last, step, max_points)
    times = [t for a, b in chunks for t in range(a, b + 1, step)]
    assert times == list(range(start, start + points * step, step))
    assert all((b - a) // step + 1 <= max_points - 1 for a, b in chunks)
    assert all(next_start == end + step for (_, end), (next_start, _) in zip(chunks, chunks[1:], strict=False))


def test_a_window_over_the_limit_is_read_in_chunks_with_nothing_lost_or_doubled():
    values = {T0 + 300 * k: f"{k * 1.25}" for k in range(25)}
    data = {(("__name__", "up"), ("job", "a")): values}
    with ScriptedServer(fake_prometheus(data, limit=9)) as server:
        result = ps.extract_prometheus(server.url, "up", T0, T0 + 300 * 24, "5m",
                                       settings=settings(server.url, max_points=10))
    assert len(server.requests) == 3  # 9 + 9 + 7 points
    starts = [float(f["start"]) for _, f in server.requests]
    ends = [float(f["end"]) for _, f in server.requests]
    assert starts == [T0, T0 + 9 * 300, T0 + 18 * 300]
    assert ends == [T0 + 8 * 300, T0 + 17 * 300, T0 + 24 * 300]
    frame = result.frame
    assert frame["unique_id"].unique().tolist() == ["up/job=a"]
    assert frame["ds"].tolist() == [pd.Timestamp(t, unit="s", tz="UTC") for t in sorted(values)]
    assert frame["y"].tolist() == [float(v) for _, v in sorted(values.items())]
    assert str(frame["ds"].dtype) == "datetime64[ns, UTC]"


def test_special_values_nan_and_inf_are_read_as_missing_with_a_note():
    answer = matrix([({"__name__": "x", "pod": "a"}, [(T0, "NaN"), (T0 + 300, "+Inf"), (T0 + 600, "-Inf"),
                                                      (T0 + 900, "1e-3")])])
    with ScriptedServer([(200, answer)]) as server:
        result = ps.extract_prometheus(server.url, "x", T0, T0 + 900, 300)
    assert np.isnan(result.frame["y"].iloc[:3]).all()
    assert result.frame["y"].iloc[3] == 0.001
    assert result.notes and "Inf" in result.notes[0]["note"]


# ---------------------------------------------------------------------------
# Retries and errors


def test_5xx_and_malformed_json_are_retried_with_growing_backoff():
    good = matrix([({"__name__": "x"}, [(T0, "2")])])
    script = [(500, "internal"), (200, "{not json"), (200, '{"status": "success", "data": {}}'), (200, good)]
    waits: list[float] = []
    with ScriptedServer(script) as server:
        client = ps.PrometheusClient(settings(server.url), sleep=waits.append)
        series = client.query_range("x", pd.Timestamp(T0, unit="s", tz="UTC"), pd.Timestamp(T0, unit="s", tz="UTC"),
                                    pd.Timedelta("5min"))
    assert len(server.requests) == 4
    assert series[0].values[0].tolist() == [2.0]
    assert len(waits) == 3
    assert 0.01 <= waits[0] <= 0.011 and 0.02 <= waits[1] <= 0.022 and 0.04 <= waits[2] <= 0.044


def test_after_the_retries_the_error_names_the_query_the_url_and_the_last_error():
    with ScriptedServer([(503, '{"status":"error","errorType":"unavailable","error":"overloaded"}')]) as server:
        with pytest.raises(SourceError) as info:
            ps.extract_prometheus(server.url, 'sum(rate(x{pod="a"}[5m]))', T0, T0 + 600, "5m",
                                  settings=settings(server.url, retries=2))
    text = str(info.value)
    assert len(server.requests) == 3
    assert "after 3 attempts" in text and "HTTP 503" in text and "overloaded" in text
    assert 'sum(rate(x{pod="a"}[5m]))' in text and server.url in text


def test_malformed_json_every_time_gives_a_clear_error():
    with ScriptedServer([(200, "<html>proxy login</html>")]) as server:
        with pytest.raises(SourceError, match=r"malformed answer: not JSON.*query: up; URL: http://127\.0\.0\.1"):
            ps.extract_prometheus(server.url, "up", T0, T0, "5m", settings=settings(server.url, retries=1))
    assert len(server.requests) == 2


def test_prometheus_down_is_retried_then_reported():
    url = f"http://127.0.0.1:{free_port()}"
    waits: list[float] = []
    client = ps.PrometheusClient(settings(url, retries=2), sleep=waits.append)
    with pytest.raises(SourceError, match=r"after 3 attempts: cannot connect.*query: up; URL: " + url):
        client.query_range("up", pd.Timestamp(T0, unit="s", tz="UTC"), pd.Timestamp(T0, unit="s", tz="UTC"),
                           pd.Timedelta("5min"))
    assert len(waits) == 2


def test_a_slow_answer_passes_its_deadline_and_is_retried():
    with ScriptedServer([(200, matrix([]))], delay_s=1.0) as server:
        with pytest.raises(SourceError, match=r"exceeded the 0.2 s deadline while waiting for the status line"):
            ps.extract_prometheus(server.url, "up", T0, T0, "5m", settings=settings(server.url, retries=1,
                                                                                    timeout_s=0.2))
        assert len(server.requests) == 2


class TrickleServer:
    """A raw HTTP server on 127.0.0.1 that sends its answer ``chunk`` bytes every ``interval_s``.

    ``where="body"`` sends the status line and headers at once, then trickles the body;
    ``where="headers"`` trickles from the first byte of the status line. ``connections``
    records when each request arrived and when the client went away.
    """

    def __init__(self, body: bytes, interval_s: float, chunk: int = 1, where: str = "body"):
        self.body, self.interval_s, self.chunk, self.where = body, interval_s, chunk, where
        self.connections: list[dict] = []
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        seen = {"arrived": time.monotonic(), "left": None}
        self.connections.append(seen)
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
                    "Connection: close\r\n\r\n").encode()
            if self.where == "body":
                conn.sendall(head)
                data = self.body
            else:
                data = head + self.body
            try:
                for i in range(0, len(data), self.chunk):
                    if self.stop.is_set():
                        return
                    conn.sendall(data[i:i + self.chunk])
                    time.sleep(self.interval_s)
                conn.recv(1)  # the client closes once it has read everything
            except OSError:
                seen["closed_early"] = True
            seen["left"] = time.monotonic()

    def __enter__(self) -> TrickleServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_trickling_server_fails_the_request_at_its_deadline(where):
    # 4,000 bytes at one byte per 0.2 s would hold the request for 13 minutes
    body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}, "pad": "x" * 4000})
    timeout_s, retries, backoff = 1.0, 1, 0.01
    with TrickleServer(body.encode(), interval_s=0.2, where=where) as server:
        started = time.monotonic()
        with pytest.raises(SourceError) as info:
            ps.extract_prometheus(server.url, 'sum(rate(x{pod="a"}[5m]))', T0, T0, "5m",
                                  settings=settings(server.url, retries=retries, timeout_s=timeout_s))
        elapsed = time.monotonic() - started
        give_up = time.monotonic() + 3.0  # the server notices a shut connection at its next writes
        while where == "body" and any(c["left"] is None for c in server.connections) and time.monotonic() < give_up:
            time.sleep(0.05)
        connections = list(server.connections)
    text = str(info.value)
    assert "exceeded the 1 s deadline" in text and "after 2 attempts" in text
    assert 'query: sum(rate(x{pod="a"}[5m]))' in text and f"URL: {server.url}" in text
    # each attempt ends at its deadline: timeout x attempts + backoff, plus a small margin
    assert (retries + 1) * timeout_s <= elapsed < (retries + 1) * timeout_s + 2 * backoff + 0.8
    assert len(connections) == retries + 1
    if where == "body":
        assert "while reading the body" in text
        # the connection is shut at the deadline, not left to the server's pace
        assert all(c["left"] is not None and c["left"] - c["arrived"] < timeout_s + 1.0 for c in connections)
    else:
        assert "while waiting for the status line and headers" in text


def test_an_answer_streamed_in_small_pieces_within_the_deadline_is_read_whole():
    body = matrix([({"__name__": "x", "pod": "a"}, [(T0, "1.5"), (T0 + 300, "2.5")])]).encode()
    with TrickleServer(body, interval_s=0.005, chunk=7) as server:
        result = ps.extract_prometheus(server.url, "x", T0, T0 + 300, "5m",
                                       settings=settings(server.url, retries=0, timeout_s=5))
    assert result.frame["y"].tolist() == [1.5, 2.5]


def test_a_bad_query_is_not_retried():
    error = '{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected \\"}\\""}'
    with ScriptedServer([(400, error)]) as server:
        with pytest.raises(SourceError, match=r"after 1 attempt: HTTP 400 bad_data: 1:5: parse error"):
            ps.extract_prometheus(server.url, "up}", T0, T0, "5m", settings=settings(server.url))
    assert len(server.requests) == 1


def test_rejected_credentials_say_what_to_check():
    with ScriptedServer([(401, "Unauthorized")]) as server:
        with pytest.raises(SourceError, match=r"HTTP 401.*check the credentials"):
            ps.extract_prometheus(server.url, "up", T0, T0, "5m", settings=settings(server.url))
    assert len(server.requests) == 1


def test_no_series_in_the_window_is_a_data_error():
    with ScriptedServer([(200, matrix([]))]) as server:
        with pytest.raises(DataError, match="returned no series"):
            ps.extract_prometheus(server.url, "absent_metric", T0, T0 + 600, "5m")


@pytest.mark.parametrize(("start", "end", "step", "match"), [
    ("yesterday", T0, "5m", "not a time"),
    (T0 + 600, T0, "5m", "before start"),
    (T0, T0 + 600, "5 parsecs", "not a duration"),
    (T0, T0 + 600, "0s", "not a duration|at least"),
])
def test_bad_window_arguments_are_config_errors(start, end, step, match):
    with pytest.raises(ConfigError, match=match):
        ps.extract_prometheus("http://127.0.0.1:9", "up", start, end, step)


# ---------------------------------------------------------------------------
# Auth, TLS and settings


def test_bearer_token_and_basic_auth_are_sent():
    with ScriptedServer([(200, matrix([({"__name__": "x"}, [(T0, "1")])]))]) as server:
        ps.extract_prometheus(server.url, "x", T0, T0, "5m", token="s3cret")
        ps.extract_prometheus(server.url, "x", T0, T0, "5m", username="ops", password="pa:ss")
    assert server.requests[0][1]["_authorization"] == "Bearer s3cret"
    assert server.requests[1][1]["_authorization"] == "Basic " + base64.b64encode(b"ops:pa:ss").decode()


def test_settings_from_environment_variables(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {"FORESIGHT_PROMETHEUS_URL": "https://prom.example:9090/", "FORESIGHT_PROMETHEUS_TOKEN_FILE": str(token_file),
           "FORESIGHT_PROMETHEUS_CA_FILE": str(ca), "FORESIGHT_PROMETHEUS_RETRIES": "5"}
    s = PrometheusSettings.from_env(env)
    assert (s.url, s.token, s.ca_file, s.retries) == ("https://prom.example:9090/", "from-file", str(ca), 5)
    assert s.require_url() == "https://prom.example:9090"
    assert s.session().verify == str(ca)
    assert "from-file" not in repr(s)
    insecure = PrometheusSettings.from_env({"FORESIGHT_PROMETHEUS_URL": "https://p:9090",
                                               "FORESIGHT_PROMETHEUS_USER": "u", "FORESIGHT_PROMETHEUS_PASSWORD": "p",
                                               "FORESIGHT_PROMETHEUS_INSECURE_SKIP_VERIFY": "true"})
    session = insecure.session()
    assert session.verify is False and session.auth == ("u", "p")
    with pytest.raises(ConfigError, match="INSECURE_SKIP_VERIFY is 'maybe'"):
        PrometheusSettings.from_env({"FORESIGHT_PROMETHEUS_INSECURE_SKIP_VERIFY": "maybe"})
    with pytest.raises(ConfigError, match="both a bearer token and a user"):
        PrometheusSettings.from_env({"FORESIGHT_PROMETHEUS_TOKEN": "t", "FORESIGHT_PROMETHEUS_USER": "u"})


@pytest.mark.parametrize(("conn", "url", "auth"), [
    ({"host": "prometheus", "port": 9090}, "http://prometheus:9090", "none"),
    ({"conn_type": "http", "host": "prom.example", "schema": "https", "port": 443, "login": "ops",
      "password": "pw"}, "https://prom.example:443", "basic"),
    ({"host": "https://prom.example/prometheus", "password": "tok"}, "https://prom.example/prometheus", "bearer"),
    ({"host": "prom", "extra": '{"token": "t", "path": "/p", "scheme": "https", "insecure_skip_verify": true}'},
     "https://prom/p", "bearer"),
])
def test_settings_from_an_airflow_connection_dict(conn, url, auth):
    s = PrometheusSettings.from_connection_dict(conn)
    assert s.require_url() == url
    assert auth == ("bearer" if s.token else "basic" if s.username else "none")
    if "insecure_skip_verify" in str(conn.get("extra")):
        assert s.insecure_skip_verify is True


def test_connection_errors_are_config_errors():
    with pytest.raises(ConfigError, match="extra is not JSON"):
        PrometheusSettings.from_connection_dict({"host": "p", "extra": "{token"})
    with pytest.raises(ConfigError, match="both a login and a bearer token"):
        PrometheusSettings.from_connection_dict({"host": "p", "login": "u", "extra": {"token": "t"}})
    with pytest.raises(ConfigError, match="no Prometheus URL"):
        PrometheusSettings().require_url()
    with pytest.raises(ConfigError, match="not an http"):
        PrometheusSettings(url="prom:9090").require_url()
    with pytest.raises(ConfigError, match="CA file .* does not exist"):
        PrometheusSettings(url="https://p", ca_file="/nonexistent/ca.pem").session()


def test_credentials_in_the_url_are_moved_out_of_it():
    s = PrometheusSettings(url="http://ops:pw@prom:9090")
    assert (s.url, s.username, s.password) == ("http://prom:9090", "ops", "pw")


def test_config_url_wins_over_connection_and_environment_but_keeps_their_credentials():
    class Section:
        url = "http://from-config:9090"
        timeout_s = 7.0
        retries = 1
        max_points = 500

    env = {"FORESIGHT_PROMETHEUS_URL": "http://from-env:9090", "FORESIGHT_PROMETHEUS_TOKEN": "env-token"}
    conn = {"host": "from-connection", "port": 9090, "login": "ops", "password": "pw"}
    s = resolve_settings(Section(), conn, env)
    assert (s.url, s.username, s.password, s.token) == ("http://from-config:9090", "ops", "pw", None)
    assert (s.timeout_s, s.retries, s.max_points) == (7.0, 1, 500)
    Section.url = None
    assert resolve_settings(Section(), conn, env).url == "http://from-connection:9090"
    assert resolve_settings(Section(), None, env).token == "env-token"


# ---------------------------------------------------------------------------
# PromQL escaping and templates


@pytest.mark.parametrize(("value", "quoted"), [
    ("shop", '"shop"'),
    ('a"} or vector(1) #', '"a\\"} or vector(1) #"'),
    ("back\\slash", '"back\\\\slash"'),
    ("line\nbreak\ttab", '"line\\nbreak\\ttab"'),
    ("bell\x07", '"bell\\x07"'),
    ("ünï ✓", '"ünï ✓"'),
])
def test_label_values_are_quoted_so_they_cannot_leave_the_string(value, quoted):
    assert quote_promql_string(value) == quoted
    # the quoted text is also a JSON string for these values: decoding gives the value back
    if "\\x" not in quoted:
        assert json.loads(quoted) == value


def test_selector_with_config_filters_is_escaped():
    sel = build_selector(['container!=""'], {"namespace": 'shop"}) or up{x="', "pod": ["a.b", "c|d"]})
    assert sel == '{container!="", namespace="shop\\"}) or up{x=\\"", pod=~"a\\\\.b|c\\\\|d"}'
    with pytest.raises(ConfigError, match="not a Prometheus label name"):
        build_selector([], {'namespace="x",evil': "y"})
    with pytest.raises(ConfigError, match="empty list"):
        build_selector([], {"pod": []})


def test_default_catalog_renders_every_metric_at_every_level():
    catalog = load_promql()
    assert set(catalog.metrics) == {
        "container_cpu_usage_cores", "container_memory_working_set_bytes",
        "container_network_receive_bytes_per_second", "container_network_transmit_bytes_per_second",
        "container_fs_reads_bytes_per_second", "container_fs_writes_bytes_per_second"}
    for level in AGGREGATION_LEVELS:
        for name, entry in catalog.metrics.items():
            labels = catalog.labels_for(level, entry)
            text = render_query(entry.query, labels, build_selector(entry.matchers, {"namespace": "x"}),
                                   catalog.rate_window(pd.Timedelta("5min")))
            assert "{aggregation}" not in text and "{selector}" not in text and "{rate_window}" not in text
            assert text.count("(") == text.count(")") and text.count("{") == text.count("}")
            assert f"sum by ({', '.join(labels)})" in text and 'namespace="x"' in text
            assert not name.endswith("_total")  # rates: the features step must not treat them as counters
    cpu = render_query(catalog.metrics["container_cpu_usage_cores"].query,
                          catalog.labels_for("container"), build_selector(['container!=""']),
                          catalog.rate_window(pd.Timedelta("5min")))
    assert cpu == ('sum by (namespace, pod, container) (rate(container_cpu_usage_seconds_total{container!=""}[5m]))')
    network = catalog.metrics["container_network_receive_bytes_per_second"]
    assert catalog.labels_for("container", network) == ("namespace", "pod")
    assert catalog.rate_window(pd.Timedelta("15s")) == pd.Timedelta("1min")


def test_a_broken_catalog_is_a_config_error(tmp_path):
    bad = tmp_path / "promql.yaml"
    bad.write_text("aggregations: {pod: [pod]}\nmetrics:\n  m: {query: 'x{selector}', matchers: ['pod=a']}\n")
    with pytest.raises(ConfigError, match="not label matchers"):
        load_promql(bad)
    with pytest.raises(ConfigError, match="cannot read the PromQL catalog"):
        load_promql(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="uses {aggregation} but no aggregation"):
        render_query("sum by ({aggregation}) (x)", None)


# ---------------------------------------------------------------------------
# The config's set of metrics


def cadvisor_data() -> dict[tuple, dict[int, str]]:
    """Per-query answers keyed by a label set; the fake server ignores the PromQL text."""
    times = [T0 + 300 * k for k in range(6)]
    return {
        (("container", "nginx"), ("namespace", "shop"), ("pod", "web-1")): {t: f"{0.1 * (i + 1)}" for i, t in
                                                                          enumerate(times)},
        (("container", "app"), ("namespace", "shop"), ("pod", "web-1")): {t: "0.5" for t in times},
    }


def test_extract_metrics_renders_the_templates_aligns_the_window_and_names_the_series():
    with ScriptedServer(fake_prometheus(cadvisor_data())) as server:
        result = ps.extract_metrics(settings(server.url), None, T0 - 163, T0 + 300 * 5 + 20, "5min", "container",
                                    labels={"namespace": "shop"}, metrics=["container_cpu_usage_cores"])
    assert len(server.requests) == 1
    sent = server.requests[0][1]
    assert float(sent["start"]) == T0 and float(sent["end"]) == T0 + 1500 and float(sent["step"]) == 300
    assert sent["query"] == ('sum by (namespace, pod, container) (rate(container_cpu_usage_seconds_total'
                             '{container!="", container!="POD", namespace="shop"}[5m]))')
    assert result.queries == {"container_cpu_usage_cores": sent["query"]}
    assert sorted(result.frame["unique_id"].unique()) == ["container_cpu_usage_cores/shop/web-1/app",
                                                          "container_cpu_usage_cores/shop/web-1/nginx"]
    nginx = result.frame[result.frame["unique_id"].str.endswith("nginx")]
    assert nginx["y"].round(10).tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    table = result.series.set_index("unique_id")
    row = table.loc["container_cpu_usage_cores/shop/web-1/nginx"]
    assert (row["metric"], row["entity"], row["unit"], row["freq"]) == ("container_cpu_usage_cores",
                                                                        "shop/web-1/nginx", "cores", "5min")
    assert json.loads(row["labels"]) == {"container": "nginx", "namespace": "shop", "pod": "web-1"}
    frame, series = result  # unpacks like the loaders' result
    assert list(frame.columns) == ["unique_id", "ds", "y"] and len(series) == 2


def test_config_queries_replace_the_defaults_and_empty_results_are_listed():
    data = {(("namespace", "shop"), ("pod", "web-1")): {T0: "42"}}

    def answer(path, fields):
        return fake_prometheus(data)(path, fields) if "memory" in fields["query"] else (200, matrix([]))

    queries = {"mem": "sum by ({aggregation}) (container_memory_working_set_bytes{selector})",
               "gone": "sum by ({aggregation}) (nothing{selector})"}
    with ScriptedServer(answer) as server:
        result = ps.extract_metrics(settings(server.url), queries, T0, T0, "5m", "pod")
    assert result.frame["unique_id"].tolist() == ["mem/shop/web-1"]
    assert result.skipped[0]["unique_id"] == "gone"
    assert server.requests[0][1]["query"] == "sum by (namespace, pod) (container_memory_working_set_bytes)"
    with pytest.raises(ConfigError, match=r"no PromQL for metric\(s\) \['cpu'\]"):
        ps.extract_metrics(settings(server.url), queries, T0, T0, "5m", "pod", metrics=["cpu"])


def test_extract_from_the_config_and_a_connection_dict(monkeypatch):
    from foresight_lib.config import load_config

    with ScriptedServer(fake_prometheus(cadvisor_data())) as server:
        host, port = server.url.rsplit(":", 1)
        cfg = load_config(overrides={"source": {"kind": "prometheus", "metrics": ["container_cpu_usage_cores"],
                                                "prometheus": {"aggregation": "container", "retries": 0}}})
        conn = {"conn_id": "foresight_prometheus", "conn_type": "http", "host": host, "port": int(port),
                "login": None, "password": "tok", "extra": "{}"}
        result = ps.extract(cfg, pd.Timestamp(T0, unit="s", tz="UTC"),
                            pd.Timestamp(T0 + 1500, unit="s", tz="UTC"), connection=conn, environ={})
    assert server.requests[0][1]["_authorization"] == "Bearer tok"
    assert len(result.frame) == 12 and result.series["freq"].unique().tolist() == ["5min"]


def test_series_that_share_the_aggregation_labels_are_told_apart():
    data = {(("instance", "a:9100"), ("pod", "p")): {T0: "1"}, (("instance", "b:9100"), ("pod", "p")): {T0: "2"},
            (("pod", "q"),): {T0: "3"}}
    with ScriptedServer(fake_prometheus(data)) as server:
        result = ps.extract_prometheus(server.url, "x", T0, T0, "5m", metric="m", aggregation=["pod"])
    assert sorted(result.frame["unique_id"]) == ["m/p{instance=a:9100}", "m/p{instance=b:9100}", "m/q"]
