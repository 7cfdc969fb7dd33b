"""docker-compose.yaml: valid for Debian's ``docker-compose config`` (no engine needed), secrets from ``.env``.

Also the monitoring it provisions: Prometheus scrapes the Airflow plugin's
``/foresight/metrics``, and Grafana's dashboard and alert query only metric names,
labels and label values that the exposition really serves (read from the exposition
of a small real published data set).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import make_daily_series
from prom_server import require_binary
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DEPLOY = REPO_ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "foresight.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
SCRAPE_LABELS = {"job", "instance"}
"""Labels Prometheus adds to every scraped series."""
AIRFLOW_SERVICES = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker"]


def _compose(*args: str, env_file: Path | None) -> subprocess.CompletedProcess:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail("docker-compose is not installed; run .ci/install-packages.sh (apt-get install docker-compose)")
    cmd = [tool, "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE)]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(REPO_ROOT)}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, env=env,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def resolved() -> dict:
    proc = _compose("config", env_file=ENV_EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_config_is_valid_with_the_example_env(resolved):
    services = resolved["services"]
    expected = {"postgres", "redis", "airflow-init", "mlflow", "mlflow-db", "minio", "minio-init", "prometheus",
                "grafana", *AIRFLOW_SERVICES}
    assert expected <= set(services)


def test_airflow_runs_celery_on_postgres_and_redis(resolved):
    services = resolved["services"]
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis")
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["FORESIGHT_DATA_ROOT"].startswith("s3://")
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    commands = {name: " ".join(services[name]["command"]) if isinstance(services[name]["command"], list)
                else services[name]["command"] for name in AIRFLOW_SERVICES}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-worker"] == "celery worker"


def test_mlflow_server_uses_postgres_and_minio(resolved):
    command = " ".join(resolved["services"]["mlflow"]["command"])
    assert "--backend-store-uri=postgresql+psycopg2://" in command
    assert "--artifacts-destination=s3://" in command
    assert resolved["services"]["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_image_is_built_from_the_airflow_base():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.11$", dockerfile, re.MULTILINE)
    assert "requirements.txt" in dockerfile


def test_secrets_come_from_env_file_only():
    text = COMPOSE.read_text()
    for secret in ("POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "MINIO_ROOT_PASSWORD", "AIRFLOW_JWT_SECRET",
                   "GRAFANA_ADMIN_PASSWORD"):
        assert f"${{{secret}" in text, f"{secret} is not read from the environment"
    assert "change-me" not in text, "no secret value in docker-compose.yaml"
    ignored = (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in ignored


def test_missing_secrets_are_reported(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = _compose("config", env_file=empty)
    assert proc.returncode != 0
    assert "set POSTGRES_USER in .env" in proc.stderr or "set POSTGRES_PASSWORD in .env" in proc.stderr


# ---------------------------------------------------------------------------
# Prometheus and Grafana


def mounts(service: dict) -> dict[str, str]:
    """A resolved service's bind mounts: container path -> host path."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            out[volume["target"]] = volume["source"]
            continue
        source, target = volume.split(":")[:2]
        out[target] = source
    return out


def test_prometheus_scrapes_the_plugins_metrics_with_the_mounted_config(resolved, tmp_path):
    service = resolved["services"]["prometheus"]
    config_arg = next(a for a in service["command"] if a.startswith("--config.file="))
    assert Path(mounts(service)[config_arg.split("=", 1)[1]]) == PROMETHEUS_CONFIG
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    foresight = [job for job in config["scrape_configs"] if job.get("metrics_path") == "/foresight/metrics"]
    assert len(foresight) == 1
    targets = [t for group in foresight[0]["static_configs"] for t in group["targets"]]
    assert targets == ["airflow-apiserver:8080"]
    assert "8080:8080" in str(resolved["services"]["airflow-apiserver"]["ports"]) or \
        resolved["services"]["airflow-apiserver"]["ports"][0]["target"] == 8080
    token_file = foresight[0]["authorization"]["credentials_file"]
    assert foresight[0]["authorization"].get("type", "Bearer") == "Bearer"
    checked = tmp_path / "prometheus.yml"
    (tmp_path / "token").write_text("")
    checked.write_text(PROMETHEUS_CONFIG.read_text().replace(token_file, str(tmp_path / "token")))
    done = subprocess.run([require_binary("promtool"), "check", "config", str(checked)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_sends_the_metrics_token_the_api_server_requires(tmp_path):
    """With FORESIGHT_METRICS_TOKEN in .env, the api-server requires it and Prometheus's entrypoint writes it
    to the credentials file its scrape config reads, readable by Prometheus alone."""
    env_file = tmp_path / "token.env"
    env_file.write_text(ENV_EXAMPLE.read_text().replace("FORESIGHT_METRICS_TOKEN=", "FORESIGHT_METRICS_TOKEN=t0k3n"))
    proc = _compose("config", env_file=env_file)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    assert services["airflow-apiserver"]["environment"]["FORESIGHT_METRICS_TOKEN"] == "t0k3n"
    prometheus = services["prometheus"]
    assert prometheus["environment"]["FORESIGHT_METRICS_TOKEN"] == "t0k3n"
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = [job for job in config["scrape_configs"] if job.get("metrics_path") == "/foresight/metrics"]
    token_file = job["authorization"]["credentials_file"]
    # Run the entrypoint's script as the container would, with its paths moved under tmp_path.
    shell, flag, script, name = prometheus["entrypoint"]
    assert (shell, flag, name) == ("/bin/sh", "-c", "prometheus") and "exec /bin/prometheus" in script
    script = script.replace("$$", "$").replace("/prometheus/secrets", str(tmp_path / "secrets"))
    script = script.replace("exec /bin/prometheus", "exec echo")
    ran = subprocess.run(["sh", "-c", script, name, *prometheus["command"]], capture_output=True, text=True,
                         timeout=30, env={"PATH": "/usr/bin:/bin", "FORESIGHT_METRICS_TOKEN": "t0k3n"})
    assert ran.returncode == 0 and "--config.file=/etc/prometheus/prometheus.yml" in ran.stdout, ran.stderr
    written = tmp_path / "secrets" / Path(token_file).name
    assert token_file.startswith("/prometheus/secrets/") and written.read_text() == "t0k3n"
    assert written.stat().st_mode & 0o077 == 0


def test_grafana_is_pinned_and_mounts_the_provisioning_folders(resolved):
    service = resolved["services"]["grafana"]
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", service["image"])
    assert service["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "change-me-grafana"  # from .env.example
    assert service["ports"][0]["target"] == 3000 and service["ports"][0]["published"] == 3000
    bound = mounts(service)
    assert Path(bound["/etc/grafana/provisioning"]) == PROVISIONING  # Grafana's default provisioning path
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "foresight.yaml").read_text())["providers"][0]
    dashboards = provider["options"]["path"]
    assert Path(bound[dashboards]) == DASHBOARD.parent and DASHBOARD.is_file()
    assert service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == f"{dashboards}/{DASHBOARD.name}"
    for kind in ("datasources", "dashboards", "alerting"):
        assert list((PROVISIONING / kind).glob("*.yaml")), f"nothing provisioned under {kind}"
    source = datasource()
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "prometheus" in resolved["services"]


def datasource() -> dict:
    (only,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())["datasources"]
    return only


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, dict[str, set[str]]]:
    """metric name -> label -> values, as the exposition serves a small published nightly run and plan."""
    from foresight_lib import scaling_plan
    from foresight_lib.forecasting.backtest import BacktestSpec, run_backtest
    from foresight_lib.rightsizing import plan
    from foresight_lib.runs.storage import RunStore
    from foresight_lib.serving import exposition

    frame = make_daily_series(days=4, n_series=2)
    frame["unique_id"] = frame["unique_id"].str.replace("cpu_cores/", "container_cpu_usage_cores/shop/")
    memory = frame[frame["unique_id"].str.endswith("/c0")]
    frame = pd.concat([frame, memory.assign(unique_id="container_memory_working_set_bytes/shop/c0",
                                            y=memory["y"] * 2**28)], ignore_index=True)
    result = run_backtest(frame, BacktestSpec(models=["naive"], n_jobs=1, history_days=2, future=True))
    recommendations = plan.recommend(frame, windows=2)
    root = str(tmp_path_factory.mktemp("published"))
    nightly = RunStore(root, "2024-03-05T000000Z")
    nightly.write_frame("forecasts", result.future_forecasts.assign(champion=True))  # one model: the champion
    nightly.write_frame("features", frame)
    nightly.write_frame("recommendations", recommendations)
    nightly.write_json("summary.json", {"data_freshness": {"last_timestamp": "2024-03-04T23:55:00+00:00",
                                                           "data_age_s": 300.0}})
    nightly.publish_latest(["forecasts", "recommendations", "summary.json"])
    windows = RunStore(root, "2024-03-05T003000Z", folder=scaling_plan.PLAN_FOLDER)
    windows.write_frame(scaling_plan.SCALING_PLAN, recommendations[recommendations["kind"] == "window"])
    windows.publish_latest([scaling_plan.SCALING_PLAN], manifest_name=scaling_plan.PLAN_MANIFEST)
    body, _ = exposition.metrics_response(root, horizons=["5m", "15m", "30m"])
    out: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = out.setdefault(sample.name, {})
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)
    assert {"foresight_forecast", "foresight_actual", "foresight_recommendation",
            "foresight_scaling_plan_published_timestamp_seconds"} <= set(out)
    return out


_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w$:.])([a-zA-Z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def promql_parts(expr: str) -> tuple[list[tuple[str, str, str, str]], set[str], set[str]]:
    """The label matchers ``(metric, label, op, value)``, the grouping labels and the metric names of ``expr``."""
    matchers = []
    for metric, body in _SELECTOR.findall(expr):
        matchers += [(metric, label, op, value) for label, op, value in _MATCHER.findall(body)]
    grouping = {label.strip() for group in _GROUPING.findall(expr) for label in group.split(",") if label.strip()}
    bare = _GROUPING.sub(" ", _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", expr))
    bare = re.sub(r"\[[^]]*\]", " ", re.sub(r'"(?:[^"\\]|\\.)*"', " ", bare))
    bare = re.sub(r"\$\{?\w+\}?", " ", bare)
    metrics = {name for name, call in _IDENT.findall(bare) if not call and name not in _KEYWORDS}
    return matchers, grouping, metrics


def check_promql(expr: str, served: dict[str, dict[str, set[str]]], legend: str = "") -> None:
    """Every metric, label and literal label value in ``expr`` (and its legend) is one the exposition serves."""
    matchers, grouping, metrics = promql_parts(expr)
    assert metrics, f"no metric in {expr!r}"
    unknown = metrics - set(served)
    assert not unknown, f"{expr!r} queries {sorted(unknown)}, which /foresight/metrics does not serve"
    labels = set().union(*(served[m] for m in metrics)) | SCRAPE_LABELS
    for metric, label, op, value in matchers:
        own = set(served[metric]) | SCRAPE_LABELS if metric else labels
        assert label in own, f"{expr!r}: {metric or 'the selector'} has no label {label!r} (it has {sorted(own)})"
        if op == "=" and "$" not in value and label in served.get(metric, {}):
            assert value in served[metric][label], f"{expr!r}: {metric}{{{label}}} is never {value!r}"
    assert grouping <= labels, f"{expr!r} groups by {sorted(grouping - labels)}, labels no served metric has"
    legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    assert legend_labels <= labels, f"legend {legend!r} of {expr!r} names labels the series do not have"


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((target["expr"], target.get("legendFormat", "")))
    return out


def test_promql_parts_reads_selectors_grouping_and_names():
    matchers, grouping, metrics = promql_parts(
        'max without (value_type) (foresight_recommendation{metric="$metric", value_type="request"}) * 1000 '
        '- on(series) time() + rate(x_total[5m] offset 1h)')
    assert metrics == {"foresight_recommendation", "x_total"}
    assert grouping == {"value_type", "series"}
    assert ("foresight_recommendation", "value_type", "=", "request") in matchers


def test_dashboard_queries_only_what_the_exposition_serves(served):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "foresight" and dashboard["title"] == "Foresight"
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 10
    for expr, legend in queries:
        check_promql(expr, served, legend)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"metric", "series", "model", "horizon"}
    for variable in variables.values():
        call = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
        assert call, variable["definition"]
        selector, label = call.groups()
        check_promql(selector, served)
        (metric,) = promql_parts(selector)[2]
        assert label in served[metric]
        assert variable["query"]["query"] == variable["definition"]
    used = {name for expr, _ in queries for name in re.findall(r"\$(\w+)", expr)}
    assert used <= set(variables), f"queries use undefined variables {used - set(variables)}"
    uid = datasource()["uid"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"])


def test_dashboard_shows_bands_anomalies_recommendations_and_the_plans_age():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = {p["title"]: p for p in dashboard["panels"]}
    band = next(p for p in panels.values() if p["type"] == "timeseries")
    legends = {t["legendFormat"]: t["expr"] for t in band["targets"]}
    assert {"actual", "yhat", "yhat_lower", "yhat_upper"} <= set(legends)
    assert 'value_type="yhat_upper"' in legends["yhat_upper"]
    fill = {o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
            for o in band["fieldConfig"]["overrides"]}
    assert fill["yhat_upper"]["custom.fillBelowTo"] == "yhat_lower"  # the band between the bounds
    assert band["repeat"] == "series"
    anomaly = [p for p in panels.values() if any('value_type="anomaly"' in t["expr"] for t in p["targets"])]
    assert {p["type"] for p in anomaly} >= {"state-timeline", "stat"}
    table = next(p for p in panels.values() if p["type"] == "table")
    assert all("foresight_recommendation" in t["expr"] and t["format"] == "table" for t in table["targets"])
    age = panels["Scaling plan age"]
    assert age["type"] == "stat" and age["fieldConfig"]["defaults"]["unit"] == "s"
    assert age["targets"][0]["expr"] == "time() - foresight_scaling_plan_published_timestamp_seconds"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_bands_are_in_the_metrics_unit_and_the_model_is_the_champion():
    dashboard = json.loads(DASHBOARD.read_text())
    band = next(p for p in dashboard["panels"] if p["type"] == "timeseries")
    units = {o["matcher"]["options"]: o["properties"][0]["value"] for o in band["fieldConfig"]["overrides"]
             if o["matcher"]["id"] == "byFrameRefID"}
    assert {t["refId"] for t in band["targets"]} == set(units)
    for target in band["targets"]:  # each metric family's queries carry that family's unit
        if 'metric=~".*_bytes"' in target["expr"]:
            assert units[target["refId"]] == "bytes", target
        elif 'metric=~".*_bytes_per_second"' in target["expr"]:
            assert units[target["refId"]] == "binBps", target
        else:
            assert 'metric!~".*_bytes(_per_second)?"' in target["expr"] and units[target["refId"]] == "none"
    assert "short" not in json.dumps(dashboard), "bytes read as 1.15B with Grafana's 'short' unit"
    table = next(p for p in dashboard["panels"] if p["type"] == "table")
    shown = {o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
             for o in table["fieldConfig"]["overrides"]}
    sized = [t for t in table["targets"] if re.search(r'value_type="(request|limit)"', t["expr"])]
    assert len(sized) == 6, "request and limit, each in the three units"
    for target in sized:
        field = shown[f"Value #{target['refId']}"]
        assert field["displayName"] in ("request", "limit")
        assert field["unit"] == ("bytes" if 'metric=~".*_bytes"' in target["expr"] else
                                 "binBps" if 'metric=~".*_bytes_per_second"' in target["expr"] else "none")
    model = next(v for v in dashboard["templating"]["list"] if v["name"] == "model")
    assert model["definition"] == 'label_values(foresight_champion{metric="$metric"}, model)'
    assert not model.get("current"), "the first (only) value, the champion, is the default"


def documented_stale_plan_expression() -> str:
    """The stale-plan alert expression as the rightsizing page gives it."""
    page = (REPO_ROOT / "docs" / "rightsizing.md").read_text()
    match = re.search(r"`(\(time\(\) - foresight_scaling_plan_published_timestamp_seconds > \d+\) or on\(\) "
                      r"absent\(foresight_scaling_plan_published_timestamp_seconds\))`", page)
    assert match, "docs/rightsizing.md no longer gives the stale-plan alert expression"
    return match.group(1)


def alert_rule(uid: str) -> dict:
    """The provisioned Grafana alert rule of that uid."""
    groups = yaml.safe_load((PROVISIONING / "alerting" / "foresight.yaml").read_text())["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r["uid"] == uid]
    return rule


def test_stale_plan_alert_is_provisioned_with_the_documented_expression(served):
    rule = alert_rule("foresight-scaling-plan-stale")
    queries = {q["refId"]: q for q in rule["data"]}
    assert rule["condition"] in queries
    expr = queries["A"]["model"]["expr"]
    assert expr == documented_stale_plan_expression()
    assert queries["A"]["datasourceUid"] == datasource()["uid"]
    check_promql(expr, served)
    assert rule["noDataState"] == "OK"  # the query returns nothing while the plan is fresh
    for ref, query in queries.items():
        if ref != "A":
            assert query["datasourceUid"] == "__expr__" and query["model"]["expression"] in queries


def test_stale_plan_expression_fires_on_a_plan_older_than_an_hour_or_on_none(tmp_path):
    """The alert's PromQL run by Prometheus' own rule tester: a plan published every half hour never fires; a plan
    published once and never again fires after an hour; no plan ever published fires at once."""
    promtool_rule_test(tmp_path, "ForesightScalingPlanStale", documented_stale_plan_expression(), """\
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              # published once at t=0, then never again
              - series: 'foresight_scaling_plan_published_timestamp_seconds{job="stalled"}'
                values: '0x200'
              # published every 30 minutes: the value is the time of the last publish
              - series: 'foresight_scaling_plan_published_timestamp_seconds{job="healthy"}'
                values: '0x29 1800x29 3600x29 5400x29 7200x29 9000x29 10800x29'
            alert_rule_test:
              - eval_time: 50m
                alertname: ForesightScalingPlanStale
                exp_alerts: []
              - eval_time: 2h
                alertname: ForesightScalingPlanStale
                exp_alerts:
                  - exp_labels: {alertname: ForesightScalingPlanStale, job: stalled}
          - interval: 1m
            input_series:
              # the plan DAG never ran (paused since it was first seen): the exposition serves no plan time
              - series: 'foresight_published_timestamp_seconds{job="foresight"}'
                values: '0x60'
            alert_rule_test:
              - eval_time: 10m
                alertname: ForesightScalingPlanStale
                exp_alerts:
                  - exp_labels: {alertname: ForesightScalingPlanStale}
        """)


def test_stale_data_alert_and_panel_query_the_served_data_age(served):
    rule = alert_rule("foresight-data-stale")
    queries = {q["refId"]: q for q in rule["data"]}
    expr = queries["A"]["model"]["expr"]
    assert expr == "time() - foresight_data_last_timestamp_seconds > 93600"
    check_promql(expr, served)
    assert "foresight_data_age_seconds" in served
    assert rule["noDataState"] == "OK" and queries[rule["condition"]]["model"]["expression"] in queries
    panels = {p["title"]: p for p in json.loads(DASHBOARD.read_text())["panels"]}
    assert panels["Data age"]["targets"][0]["expr"] == "time() - foresight_data_last_timestamp_seconds"


def test_stale_data_expression_fires_only_when_no_fresh_data_was_published_for_26_hours(tmp_path):
    expr = alert_rule("foresight-data-stale")["data"][0]["model"]["expr"]
    promtool_rule_test(tmp_path, "ForesightDataStale", expr, """\
        evaluation_interval: 10m
        tests:
          - interval: 1h
            input_series:
              # nightly runs publish data up to the run's time: the last one at t=0, then none (dead exporter)
              - series: 'foresight_data_last_timestamp_seconds{job="dead"}'
                values: '0x40'
              # a run every 24 hours with fresh data
              - series: 'foresight_data_last_timestamp_seconds{job="healthy"}'
                values: '0x23 86400x23'
            alert_rule_test:
              - eval_time: 25h
                alertname: ForesightDataStale
                exp_alerts: []
              - eval_time: 27h
                alertname: ForesightDataStale
                exp_alerts:
                  - exp_labels: {alertname: ForesightDataStale, job: dead}
        """)


def promtool_rule_test(folder: Path, alert: str, expr: str, tests: str) -> None:
    """Prometheus' own rule tester on ``alert`` firing on ``expr``: ``tests`` is promtool's test file without
    its ``rule_files`` line (indented as written in the test; dedented here)."""
    (folder / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "foresight", "rules": [
        {"alert": alert, "expr": expr}]}]}))
    (folder / "test.yml").write_text("rule_files: [rules.yml]\n" + textwrap.dedent(tests))
    done = subprocess.run([require_binary("promtool"), "test", "rules", "test.yml"], cwd=folder,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_missing_grafana_password_is_reported(tmp_path):
    env = tmp_path / "no-grafana.env"
    env.write_text("\n".join(line for line in ENV_EXAMPLE.read_text().splitlines()
                             if not line.startswith("GRAFANA_ADMIN_PASSWORD=")))
    proc = _compose("config", env_file=env)
    assert proc.returncode != 0
    assert "set GRAFANA_ADMIN_PASSWORD in .env" in proc.stderr


def test_a_real_prometheus_scrapes_the_plugin_with_the_token_when_it_is_set(tmp_path, monkeypatch):
    """The repository's scrape job, pointed at the plugin served here with FORESIGHT_METRICS_TOKEN set:
    its target is up; the same job without the token is refused (down)."""
    import threading

    import uvicorn
    from api_support import load_plugin
    from prom_server import PrometheusProcess, wait_for
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from foresight_lib.orchestration.ports import free_port

    monkeypatch.setenv("FORESIGHT_METRICS_TOKEN", "scrape-t0k3n")
    monkeypatch.setenv("FORESIGHT_DATA_ROOT", str(tmp_path / "data"))
    plugin = load_plugin("foresight_plugin_scrape_test")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Mount("/foresight", plugin.app)]), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    token_file = tmp_path / "foresight_metrics_token"
    token_file.write_text("scrape-t0k3n")
    (job,) = [job for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
              if job.get("metrics_path") == "/foresight/metrics"]
    job = {**job, "scrape_interval": "1s", "scrape_timeout": "1s",
           "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
           "authorization": {**job["authorization"], "credentials_file": str(token_file)}}
    without = {k: v for k, v in job.items() if k != "authorization"} | {"job_name": "foresight-without-token"}

    class RepositoryJob(PrometheusProcess):
        def args(self) -> list[str]:
            args = super().args()
            config = Path(args[0].split("=", 1)[1])
            config.write_text(json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": [job, without]}))
            return args

    try:
        wait_for(lambda: server.started, timeout=20, what="the plugin served")
        with RepositoryJob(tmp_path / "prometheus") as prometheus:
            def up() -> dict[str, str]:
                found = {r["metric"]["job"]: r["value"][1] for r in prometheus.query("up")}
                return found if len(found) == 2 else {}

            assert wait_for(up, timeout=30, what="both jobs scraped") == {"foresight": "1",
                                                                         "foresight-without-token": "0"}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
