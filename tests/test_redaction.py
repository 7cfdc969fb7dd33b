"""Secrets are used for requests but never stored or logged.

Unit tests of ``foresight_lib.redaction``, then whole nightly runs against a scripted
Prometheus that only answers basic auth with a planted password: afterwards no file
under the data root or the MLflow folder, no log line and no error message holds it.
"""
from __future__ import annotations

import base64
import json
import logging
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from prom_server import ScriptedServer, matrix

from foresight_lib import pipeline
from foresight_lib.config import DEFAULT_CONFIG_PATH
from foresight_lib.errors import SourceError
from foresight_lib.orchestration.ports import free_port
from foresight_lib.redaction import MASK, is_secret_key, redact_config, redact_text, redact_url
from foresight_lib.runs import config_dict

SECRET = "PLANTED-SECRET-xyz"
USER = "ops"
RUN_DATE = "2024-05-20T02:00:00"


# ---------------------------------------------------------------------------
# The functions


@pytest.mark.parametrize(("url", "redacted"), [
    ("http://ops:pw@prom:9090", "http://ops:***@prom:9090"),
    ("https://ops:p%40ss@prom.example/prometheus/", "https://ops:***@prom.example/prometheus/"),
    ("http://ops:p@ss@prom:9090/x", "http://ops:***@prom:9090/x"),  # an unescaped "@" in the password
    ("http://ops:1234@prom", "http://ops:***@prom"),  # a password of digits is not a port
    ("postgresql://airflow:pw@db:5432/mlflow", "postgresql://airflow:***@db:5432/mlflow"),
    ("https://h/p?token=abc&step=5m", "https://h/p?token=***&step=5m"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=f00d&X-Amz-Expires=60",
     "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60"),
    ("https://h/?password=a&api_key=b&secret=c&access_token=d&query=up",
     "https://h/?password=***&api_key=***&secret=***&access_token=***&query=up"),
    ("http://prom:9090/users/@me", "http://prom:9090/users/@me"),  # a port and a path, no password
    ("http://ops@prom:9090", "http://ops@prom:9090"),  # a user alone says who, not how
    ("sqlite:////var/mlflow/mlflow.db", "sqlite:////var/mlflow/mlflow.db"),
    ("s3://bucket/prefix", "s3://bucket/prefix"),
    ("prometheus:9090", "prometheus:9090"),
])
def test_redact_url(url, redacted):
    assert redact_url(url) == redacted
    assert redact_url(redacted) == redacted  # idempotent


def test_redact_text_finds_credentials_inside_messages():
    text = ("HTTPConnectionPool(host='h', port=1): Max retries exceeded with url: http://u:s3cr3t@h:1/api/v1 "
            "(Caused by NewConnectionError); DSN host=db password=hunter2 user=x; "
            "Authorization: Bearer abcdefghijklmnop; {\"token\": \"tok-123\"}; at https://h/?sig=deadbeef")
    out = redact_text(text)
    for secret in ("s3cr3t", "hunter2", "abcdefghijklmnop", "tok-123", "deadbeef"):
        assert secret not in out
    # what is not secret still says where and what
    assert "http://u:***@h:1/api/v1" in out and "host=db" in out and "user=x" in out and "Max retries" in out
    harmless = "query: sum(rate(x[5m])); max_tokens=5 at 2024-01-01T00:00:00; KeyError: 'pod'"
    assert redact_text(harmless) == harmless


@pytest.mark.parametrize(("key", "secret"), [
    ("password", True), ("db_password", True), ("PASSWORD", True), ("client_secret", True), ("token", True),
    ("auth_token", True), ("bearer_token", True), ("apiKey", True), ("api_key", True), ("key", True),
    ("aws_secret_access_key", True), ("credentials", True), ("Authorization", True), ("X-Amz-Signature", True),
    ("conn_id", False), ("token_file", False), ("key_file", False), ("secret_name", False), ("max_tokens", False),
    ("keys", False), ("monkey", False), ("metrics", False), ("api_token_requests_total", False),
    ("tracking_uri", False), ("url", False),
])
def test_secret_keys_are_told_by_their_last_word(key, secret):
    assert is_secret_key(key) is secret


def test_redact_config_masks_urls_and_secret_values_but_keeps_harmless_settings():
    config = {
        "source": {"kind": "prometheus", "metrics": ["container_cpu_usage_cores", "secret_count"],
                   "prometheus": {"url": "http://ops:pw@prom:9090", "conn_id": "foresight_prometheus",
                                  "queries": {"api_token_requests_total": "sum(rate(api_token_requests_total[5m]))"},
                                  "timeout_s": 30.0, "token": None, "password": "", "key_file": "/etc/k.pem",
                                  "headers": {"Authorization": "Bearer x", "X-Scope-OrgID": "tenant"}}},
        "mlflow": {"tracking_uri": "postgresql://mlflow:dbpw@db/mlflow", "experiment": "foresight-nightly"},
        "storage": {"credentials": {"access_key": "AKIA", "nested": ["a", 1]}},
        "horizons": ["5m", "15m"], "history_days": 3,
    }
    out = redact_config(config)
    prom = out["source"]["prometheus"]
    assert prom["url"] == "http://ops:***@prom:9090"
    assert out["mlflow"]["tracking_uri"] == "postgresql://mlflow:***@db/mlflow"
    assert prom["headers"] == {"Authorization": MASK, "X-Scope-OrgID": "tenant"}
    assert out["storage"]["credentials"] == {"access_key": MASK, "nested": [MASK, MASK]}
    assert (prom["token"], prom["password"]) == (None, "")  # "not set" stays readable
    # everything else is as it was
    assert prom["conn_id"] == "foresight_prometheus" and prom["key_file"] == "/etc/k.pem"
    assert prom["queries"] == config["source"]["prometheus"]["queries"]
    assert out["source"]["metrics"] == config["source"]["metrics"]
    assert (out["horizons"], out["history_days"], prom["timeout_s"]) == (["5m", "15m"], 3, 30.0)
    assert config["source"]["prometheus"]["url"] == "http://ops:pw@prom:9090"  # a copy; the input is untouched
    assert "pw" not in json.dumps(out).replace("pw_", "")


def test_the_real_config_keeps_every_default_setting():
    from foresight_lib.config import load_config

    cfg = load_config(overrides={"source": {"prometheus": {"url": f"http://{USER}:{SECRET}@prom:9090"}}})
    stored = config_dict(cfg)
    plain = cfg.to_dict()
    assert SECRET not in json.dumps(stored)
    stored["source"]["prometheus"]["url"] = plain["source"]["prometheus"]["url"]
    assert stored == plain  # nothing else was masked


# ---------------------------------------------------------------------------
# Whole runs with a planted password


def _prometheus(auth_seen: list[str]):
    """A query_range that answers only the planted basic-auth credentials: two containers' CPU."""
    expected = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()

    def answer(path: str, fields: dict) -> tuple[int, str]:
        auth_seen.append(fields["_authorization"])
        if fields["_authorization"] != expected:
            return 401, "Unauthorized"
        start, end, step = float(fields["start"]), float(fields["end"]), float(fields["step"])
        times = [start + k * step for k in range(int((end - start) // step) + 1)]
        series = []
        for i, container in enumerate(["app", "nginx"]):
            values = [(t, repr(1.0 + i + 0.5 * math.sin(2 * math.pi * t / 86400))) for t in times]
            series.append(({"namespace": "shop", "pod": "web-1", "container": container}, values))
        return 200, matrix(series)

    return answer


def _params(root: Path, prometheus: dict | None = None) -> dict:
    settings = {
        "history_days": 2, "data_root": str(root / "data"),
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
                   "artifact_location": str(root / "mlflow" / "artifacts")},
        "source": {"kind": "prometheus", "prometheus": {"aggregation": "container", "retries": 1, "timeout_s": 10,
                                                        **(prometheus or {})}},
    }
    return {"models": ["naive", "seasonal_naive", "ensemble"], "metrics": ["container_cpu_usage_cores"],
            "horizons": ["5m", "15m", "30m"], "overrides": settings}


def _config_file(tmp_path: Path, url: str) -> Path:
    """The default config with the URL (and its credentials) in ``source.prometheus.url``."""
    settings = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    settings.setdefault("source", {}).setdefault("prometheus", {})["url"] = url
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "foresight.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _files_holding(root: Path, needle: str) -> list[str]:
    """Files under ``root`` whose bytes (or, for Parquet, whose decoded cells and metadata) hold ``needle``."""
    import pyarrow.parquet as pq

    raw = needle.encode()
    encoded = base64.b64encode(f"{USER}:{needle}".encode())
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if raw in data or encoded in data:
            found.append(str(path))
        elif data[:4] == b"PAR1":  # compressed pages would hide the text from a byte search
            table = pq.read_table(path)
            if needle in str(table.schema.metadata) or needle in json.dumps(table.to_pylist(), default=str):
                found.append(str(path))
    return found


@pytest.fixture
def all_logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.mark.slow
def test_a_planted_password_is_used_but_stored_and_logged_nowhere(tmp_path, monkeypatch, all_logs):
    seen: list[str] = []
    with ScriptedServer(_prometheus(seen)) as server:
        url = server.url.replace("http://", f"http://{USER}:{SECRET}@")
        monkeypatch.setenv("FORESIGHT_CONFIG", str(_config_file(tmp_path / "conf", url)))
        summary = pipeline.run_nightly(RUN_DATE, params=_params(tmp_path))
    assert summary["forecast_rows"] > 0
    # the credentials were sent with every request (the server answers nothing else)
    assert seen and all(a.startswith("Basic ") for a in seen) and len(set(seen)) == 1
    # the URL itself is stored, with the password masked
    run_json = next((tmp_path / "data").rglob("run.json"))
    stored = json.loads(run_json.read_text())["config"]["source"]["prometheus"]["url"]
    assert stored == server.url.replace("http://", f"http://{USER}:***@")
    assert (tmp_path / "mlflow" / "mlflow.db").stat().st_size > 0
    assert _files_holding(tmp_path / "data", SECRET) == []
    assert _files_holding(tmp_path / "mlflow", SECRET) == []
    assert SECRET not in all_logs.text
    assert all(SECRET not in str(r.args) for r in all_logs.records)


@pytest.mark.slow
def test_a_planted_password_in_the_trigger_parameters_is_stored_nowhere(tmp_path, all_logs):
    seen: list[str] = []
    with ScriptedServer(_prometheus(seen)) as server:
        url = server.url.replace("http://", f"http://{USER}:{SECRET}@")
        summary = pipeline.run_nightly(RUN_DATE, params=_params(tmp_path, {"url": url}))
    assert summary["forecast_rows"] > 0
    assert seen and all(a.startswith("Basic ") for a in seen) and len(set(seen)) == 1
    assert _files_holding(tmp_path, SECRET) == []
    assert SECRET not in all_logs.text


@pytest.mark.parametrize("down", ["503", "refused"])
def test_a_failing_prometheus_reports_no_secret(tmp_path, all_logs, down):
    def unavailable(path: str, fields: dict) -> tuple[int, str]:
        return 503, json.dumps({"status": "error", "errorType": "unavailable", "error": "overloaded"})

    server = ScriptedServer(unavailable)
    base = server.url if down == "503" else f"http://127.0.0.1:{free_port()}"
    url = base.replace("http://", f"http://{USER}:{SECRET}@")
    connection = {"conn_id": "foresight_prometheus", "host": "ignored", "login": USER, "password": SECRET}
    with server, pytest.raises(SourceError) as caught:
        pipeline.extract("manual__down", None, RUN_DATE, params=_params(tmp_path, {"url": url, "retries": 1}),
                         connection=connection)
    message = str(caught.value)
    assert SECRET not in message and SECRET not in all_logs.text
    assert "container_cpu_usage_seconds_total" in message and f"URL: {base}" in message
    assert ("HTTP 503" in message) if down == "503" else ("cannot connect" in message)
    if down == "503":  # the connection's credentials were sent, as the URL's would have been
        assert len(server.requests) == 2
        assert {f["_authorization"] for _, f in server.requests} == {
            "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()}
    assert _files_holding(tmp_path, SECRET) == []


def test_an_error_quoting_a_url_with_a_token_in_its_query_masks_it(tmp_path):
    from foresight_lib.sources import prometheus_source as ps
    from foresight_lib.sources.prometheus_settings import PrometheusSettings

    with ScriptedServer([(404, "not found")]) as server:
        client = ps.PrometheusClient(PrometheusSettings(url=f"{server.url}/prom?token={SECRET}", retries=0))
        with pytest.raises(SourceError) as caught:
            client.query_range("up", pd.Timestamp(0, tz="UTC"), pd.Timestamp(0, tz="UTC"), pd.Timedelta("5min"))
    assert SECRET not in str(caught.value) and "token=***" in str(caught.value)


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_credentials_echoed_back_by_the_server_are_masked(all_logs, auth):
    from foresight_lib.sources import prometheus_source as ps
    from foresight_lib.sources.prometheus_settings import PrometheusSettings

    def echo(path: str, fields: dict) -> tuple[int, str]:
        raw = fields["_authorization"].split(" ", 1)[1]
        return 400, json.dumps({"status": "error", "errorType": "bad_data",
                                "error": f"tenant {SECRET} unknown (credentials {raw})"})

    credentials = {"token": SECRET} if auth == "bearer" else {"username": USER, "password": SECRET}
    with ScriptedServer(echo) as server:
        client = ps.PrometheusClient(PrometheusSettings(url=server.url, retries=0, **credentials))
        with pytest.raises(SourceError) as caught:
            client.query_range("up", pd.Timestamp(0, tz="UTC"), pd.Timestamp(0, tz="UTC"), pd.Timedelta("5min"))
    sent = server.requests[0][1]["_authorization"]
    assert SECRET in sent or base64.b64decode(sent.split(" ", 1)[1]).decode() == f"{USER}:{SECRET}"
    message = str(caught.value)
    assert "HTTP 400 bad_data: tenant *** unknown" in message
    assert SECRET not in message and sent.split(" ", 1)[1] not in message
    assert SECRET not in all_logs.text


def test_a_config_error_about_a_secret_looking_setting_keeps_its_message():
    """``bearer_token: unknown setting`` says what is wrong; a value after a key still is masked."""
    from foresight_lib.config import load_config
    from foresight_lib.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_config(DEFAULT_CONFIG_PATH, {"bearer_token": SECRET, "mlflow": {"api_key": 12345}})
    message = redact_text(str(caught.value))
    assert "bearer_token: unknown setting; allowed here:" in message
    assert "mlflow.api_key: unknown setting" in message and SECRET not in message and "12345" not in message
    for text in ("password: hunter2", "token: abc123", "api_key: Zx9 ok", "password=hunter2 was wrong"):
        assert MASK in redact_text(text), text
    assert "abcdefghijkl" not in redact_text("Authorization: Bearer abcdefghijkl")
