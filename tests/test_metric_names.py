"""Metric names as users have them (Prometheus recording rules, OpenTelemetry, punctuation) reach MLflow whole."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.store.artifact.utils.models import _parse_model_uri
from mlflow.utils.validation import (
    _validate_logged_model_name,
    _validate_metric_name,
    _validate_model_name,
    _validate_tag_name,
)

from foresight_lib import pipeline
from foresight_lib.runs.storage import DataRoot
from foresight_lib.sources.demo import BROKEN_ENTITY, generate_demo
from foresight_lib.tracking.mlflow_store import MLFLOW_NAME_MAX, mlflow_name
from foresight_lib.tracking.registry import METRIC_TAG, registered_model_name

NAMES = [
    "namespace:container_cpu_usage_seconds:sum_rate",  # a Prometheus recording rule
    "system.cpu.utilization",  # OpenTelemetry
    "cpu,cores", "cpu;cores", "cpu_cores", "cpu cores", "CPU_cores", "cpu-cores", "cpu.cores", "cpu:cores",
    "a..b", "..", ".", "-", "_", "métrique", "k8s.pod/../x", "x" * 400, "x" * 399 + "y", "cpu@cores", "50%", "'q'",
]


def test_mlflow_names_are_injective_and_accepted_by_mlflow():
    names = {name: mlflow_name(name) for name in NAMES}
    assert len(set(names.values())) == len(NAMES), "two metrics share an MLflow name"
    assert len({v.lower() for v in names.values()}) == len(NAMES), "two names differ only in case"
    for name, key in names.items():
        assert len(key) <= MLFLOW_NAME_MAX
        for suffix in ("", "/mae_15m", "/width_95_30m", "/mean_mase_seasonal_naive"):
            _validate_metric_name(f"{key}{suffix}")
        _validate_tag_name(f"foresight.champion.{key}")
        _validate_tag_name(f"{METRIC_TAG}.{key}")
        model = registered_model_name(name, "foresight-")
        _validate_model_name(model)
        _validate_logged_model_name(f"champion-{key}")
        parsed = _parse_model_uri(f"models:/{model}@champion")
        assert (parsed.name, parsed.alias) == (model, "champion")
    # a Prometheus name without colons keeps its name
    assert mlflow_name("container_cpu_usage_seconds_total") == "container_cpu_usage_seconds_total"
    assert mlflow_name("system.cpu.utilization") == "system-2ecpu-2eutilization"


# ---------------------------------------------------------------------------
# End to end: the names go through a nightly run and are published

METRICS = ["namespace:container_memory_working_set_bytes:sum", "system.memory.usage", "mem,bytes", "mem;bytes",
           "mem_bytes"]
DATE = "2024-03-16T02:00:00"


def _frame() -> pd.DataFrame:
    """Two demo memory series per metric name, over the run's window."""
    frame, series = generate_demo(pd.Timestamp(DATE, tz="UTC"), days=5, seed=0)
    keep = series[(series["metric"] == "container_memory_working_set_bytes")
                  & ~series["entity"].str.contains(BROKEN_ENTITY, regex=False)]
    ids = sorted(keep["unique_id"])[:2]
    base = frame[frame["unique_id"].isin(ids) & (frame["ds"] < pd.Timestamp(DATE, tz="UTC"))]
    out = []
    for metric in METRICS:
        entity = base["unique_id"].astype(str).str.split("/", n=1).str[1]
        out.append(base.assign(unique_id=metric + "/" + entity))
    return pd.concat(out, ignore_index=True).sort_values(["unique_id", "ds"]).reset_index(drop=True)


@pytest.mark.slow
def test_recording_rule_dotted_and_punctuation_names_publish(tmp_path: Path):
    source = tmp_path / "series.csv"
    _frame().to_csv(source, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = {"history_days": 3, "data_root": str(tmp_path / "data"), "models": ["naive", "seasonal_naive"],
                "source": {"kind": "files", "format": "long", "path": str(source)},
                "mlflow": {"tracking_uri": uri, "artifact_location": str(tmp_path / "art")}}
    out = pipeline.run_nightly(DATE, settings)
    assert out["published"], out
    assert set(out["registrations"]) == set(METRICS)

    summary = pipeline.latest_summary(settings)
    assert set(summary["champion_versions"]) == set(METRICS)
    assert {row["metric"] for row in summary["metric_leaderboard"]} == set(METRICS)
    # the pooled leaderboards leave out what is in each metric's unit; the per-metric ones keep it
    pooled = DataRoot(settings["data_root"]).read_latest("leaderboard")
    assert {"mase", "smape", "coverage_80"} <= set(pooled.columns)
    assert not {"mae", "rmse", "width_80", "width_95"} & set(pooled.columns)
    assert not {"mae", "rmse", "width_80", "width_95"} & {k for row in summary["leaderboard"] for k in row}
    assert {"mae", "rmse", "width_80"} <= {k for row in summary["metric_leaderboard"] for k in row}
    forecasts = DataRoot(settings["data_root"]).read_latest("forecasts")
    assert set(forecasts["unique_id"].str.split("/").str[0]) == set(METRICS)

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for metric in METRICS:
        name = registered_model_name(metric)
        model = client.get_registered_model(name)
        assert model.tags[METRIC_TAG] == metric
        assert int(model.aliases["champion"]) == summary["champion_versions"][metric]
        version = client.get_model_version(name, str(model.aliases["champion"]))
        assert version.tags[METRIC_TAG] == metric
    parent = client.get_run(summary["mlflow_parent_run"]).data
    for metric in METRICS:
        key = mlflow_name(metric)
        assert parent.tags[f"{METRIC_TAG}.{key}"] == metric
        assert parent.tags[f"foresight.champion.{key}"] == summary["registrations"][metric]["model"]
        assert f"{key}/mae_15m" in parent.metrics
    # the operations API lists and serves them under their own names
    from foresight_lib.serving.operations import Settings
    from foresight_lib.serving.operations.models import list_models
    from foresight_lib.serving.operations.predict import HistoryRow, ModelCache, PredictRequest, predict

    ops = Settings(data_root=settings["data_root"], name_prefix="foresight", tracking_uri=uri, artifact_location=None,
                   experiment="foresight", lock_timeout="12h", lock_wait="1s", horizons=("5m", "15m", "30m"))
    assert {m.metric for m in list_models(ops).models} == set(METRICS)
    for metric in METRICS:
        listed = list_models(ops, metric).models[0]
        assert listed.metric == metric and listed.registered_model == registered_model_name(metric)
        champion = next(v for v in listed.versions if "champion" in v.aliases)
        assert champion.backtest.horizons, f"the scores of {metric} are found under its MLflow key"
    actuals = DataRoot(settings["data_root"]).read_latest("actuals")
    uid = str(actuals["unique_id"].astype(str).loc[lambda u: u.str.startswith(METRICS[0] + "/")].iloc[0])
    rows = actuals[actuals["unique_id"].astype(str) == uid].tail(3)
    served = predict(PredictRequest(history=[HistoryRow(unique_id=uid, ds=r.ds.to_pydatetime(), y=float(r.y))
                                             for r in rows.itertuples()], steps=2), ops, ModelCache())
    assert served.models[0].metric == METRICS[0] and len(served.forecasts) == 2
    # the three punctuation-only variants keep one tag and one set of errors each
    assert len({mlflow_name(m) for m in METRICS}) == len(METRICS)
    assert json.loads(json.dumps(summary["registrations"]))["mem,bytes"]["registered_model"] == \
        registered_model_name("mem,bytes")
