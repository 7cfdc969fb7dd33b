"""The nightly DAG end to end with ``dag.test()``: demo data and a replayed real data set.

Each scenario runs the DAG once in a child process (Airflow on a throw-away SQLite
database) and the tests then look at what it left: task states, the run folder, the
published ``latest`` folder and MLflow (runs, registered champions, aliases).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from airflow_support import airflow_env, dag_test, migrate

from foresight_lib import pipeline
from foresight_lib.config import load_config
from foresight_lib.runs.storage import DataRoot, RunStore

FIRST_DATE = "2024-03-15T02:00:00"
FAILED_DATE = "2024-03-16T02:00:00"
REAL_DATE = "2024-05-01T02:00:00"
NAB_FILES = ["ec2_cpu_utilization_5f5533.csv", "ec2_cpu_utilization_77c1ca.csv", "ec2_cpu_utilization_825cc2.csv"]
TASKS = {"extract", "validate", "build_features", "select_models", "rightsize_shards", "rightsize", "evaluate",
         "publish", "release"}


FAST_MODELS = ["naive", "seasonal_naive", "ets", "ensemble"]
"""Baselines, exponential smoothing and the ensemble of them: quick enough for every run."""


def _conf(root: Path, **overrides) -> dict:
    """Trigger parameters: fast models, three days of history, everything under ``root``, published.

    Settings overridden at trigger time make an ad-hoc run, which publishes only when told so.
    """
    settings = {
        "history_days": 3, "data_root": str(root / "data"),
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "artifacts")},
        **overrides,
    }
    return {"models": FAST_MODELS, "horizons": ["5m", "15m", "30m"], "overrides": settings, "publish": "always"}


def _config(conf: dict):
    return load_config(overrides=pipeline.overrides_from_params(conf))


def _champion_versions(tracking_uri: str) -> dict[str, str]:
    """Registered model name -> version holding the ``champion`` alias."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    out = {}
    for model in client.search_registered_models():
        if "champion" in (model.aliases or {}):
            out[model.name] = str(model.aliases["champion"])
    return out


def _all_succeeded(result: dict) -> None:
    assert result["state"] == "success", result
    states = result["tasks"]
    assert TASKS <= {k.split("[")[0] for k in states}
    trains = [k for k in states if k.startswith("train")]
    assert len(trains) == len(FAST_MODELS) - 1, states  # one mapped task per base model
    assert set(states.values()) == {"success"}, states


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """An Airflow home with a migrated SQLite database, shared by every scenario of this module."""
    environment = airflow_env(tmp_path_factory.mktemp("airflow-e2e"))
    migrate(environment)
    return environment


@pytest.fixture(scope="module")
def demo(env, tmp_path_factory):
    """The demo data set: a first run, the same date again, then a run whose validation fails."""
    root = tmp_path_factory.mktemp("demo")
    conf = _conf(root)
    cfg = _config(conf)
    first = dag_test(env, FIRST_DATE, conf)
    key = pipeline.run_key_for(FIRST_DATE)
    store = RunStore(cfg.data_root, key)
    state = {
        "root": root, "conf": conf, "cfg": cfg, "first": first, "store": store,
        "first_forecasts": store.read_frame(pipeline.FORECASTS) if first["state"] == "success" else None,
        "first_files": store.list_files() if first["state"] == "success" else None,
    }
    state["second"] = dag_test(env, FIRST_DATE, conf)
    state["champions_before"] = _champion_versions(cfg.mlflow.tracking_uri)
    latest = Path(DataRoot(cfg.data_root).latest_uri(pipeline.FORECASTS))
    state["latest_before"] = latest.read_bytes() if latest.exists() else None
    state["manifest_before"] = DataRoot(cfg.data_root).latest_manifest()
    # Every metric's values out of range: all series quarantined, the run must stop at validate.
    impossible = {"min": 1e15, "max": 1e16, "mostly": 1.0}
    failing = _conf(root, validation={
        "max_failed_share": 0.3,
        "ranges": {k: impossible for k in [*load_config().validation.ranges, "*"]},
    })
    state["failed"] = dag_test(env, FAILED_DATE, failing)
    state["champions_after"] = _champion_versions(cfg.mlflow.tracking_uri)
    state["latest_after"] = latest.read_bytes() if latest.exists() else None
    state["manifest_after"] = DataRoot(cfg.data_root).latest_manifest()
    return state


@pytest.mark.slow
def test_demo_run_succeeds_and_writes_the_run_folder(demo):
    _all_succeeded(demo["first"])
    files = set(demo["first_files"])
    for name in ("raw", "validated", "features", "leaderboard", "per_series", "forecasts", "backtest_forecasts",
                 "recommendations"):
        assert f"{name}.parquet" in files, files
    assert "validation/report.html" in files
    assert all(f"backtests/{m}.pkl" in files for m in FAST_MODELS if m != "ensemble")
    forecasts = demo["first_forecasts"]
    cfg = demo["cfg"]
    assert set(forecasts["model"]) == set(FAST_MODELS)
    end = pd.Timestamp(FIRST_DATE, tz="UTC")
    assert forecasts["cutoff"].max() < end <= forecasts["ds"].min(), "forecasts start at the data interval end"
    assert forecasts["step"].max() == max(cfg.horizon_steps.values())
    raw = demo["store"].read_frame("raw")
    assert raw["ds"].max() < end, "a run never reads data at or after its data interval end"
    assert raw["ds"].min() >= end - pd.Timedelta(days=cfg.history_days + cfg.test_days + 1)


@pytest.mark.slow
def test_demo_run_is_logged_to_mlflow(demo):
    import mlflow
    from mlflow import MlflowClient

    from foresight_lib.tracking import registry

    cfg = demo["cfg"]
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_registry_uri(cfg.mlflow.tracking_uri)
    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri, registry_uri=cfg.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    key = pipeline.run_key_for(FIRST_DATE)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and key in str(r.data.tags)]
    current = [r for r in parents if "foresight.superseded_by" not in r.data.tags]
    assert len(current) == 1, "a re-run of the same date replaces its parent run"
    parent = current[0]
    for kept in parents:  # an earlier one stays only as the source of a registered version
        if kept is not parent:
            assert kept.data.tags["foresight.superseded_by"] == parent.info.run_id
            assert registry.versions_from_run(kept.info.run_id, cfg.mlflow.model_name_prefix)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(c.data.tags.get("model", c.info.run_name) for c in children) == sorted(FAST_MODELS)
    for child in children:
        assert any(k.startswith("mase_") for k in child.data.metrics), child.data.metrics
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "run")}
    assert {"run/forecasts.parquet", "run/leaderboard.parquet", "run/recommendations.parquet"} <= logged, logged

    champions = _champion_versions(cfg.mlflow.tracking_uri)
    prefix = cfg.mlflow.model_name_prefix
    metrics = sorted(demo["store"].read_frame("features_series")["metric"].unique())
    assert set(champions) == {f"{prefix}{m}" for m in metrics}
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_registry_uri(cfg.mlflow.tracking_uri)
    features = demo["store"].read_frame("features")
    for metric in metrics:
        model = mlflow.pyfunc.load_model(f"models:/{prefix}{metric}@champion")
        history = features[features["unique_id"].str.startswith(f"{metric}/")]
        history = history.groupby("unique_id").tail(48)
        predicted = model.predict(history)
        assert len(predicted) > 0
        assert {"unique_id", "ds", "yhat"} <= set(predicted.columns)
        assert predicted["yhat"].notna().all()
        assert set(predicted["unique_id"]) == set(history["unique_id"])
        assert predicted["ds"].min() > history["ds"].max()


@pytest.mark.slow
def test_same_date_twice_gives_same_forecasts_and_one_run_folder(demo):
    _all_succeeded(demo["second"])
    again = demo["store"].read_frame(pipeline.FORECASTS)
    pd.testing.assert_frame_equal(again, demo["first_forecasts"])
    runs = Path(demo["cfg"].data_root) / "runs"
    folders = sorted(p.name for p in runs.iterdir())
    assert folders == [pipeline.run_key_for(FIRST_DATE)], "a failed run never becomes a date's run folder"
    assert demo["store"].list_files() == demo["first_files"]
    assert demo["store"].attempts() == [], "the first attempt's folder was replaced, not kept beside"


@pytest.mark.slow
def test_failed_validation_leaves_champion_and_published_forecasts(demo):
    failed = demo["failed"]
    assert failed["state"] == "failed", failed
    tasks = failed["tasks"]
    assert tasks["extract"] == "success"
    assert tasks["validate"] == "failed"
    assert tasks["publish"] == "upstream_failed"
    assert demo["champions_before"], "the first runs registered champions"
    assert demo["champions_after"] == demo["champions_before"]
    assert demo["latest_before"] is not None
    assert demo["latest_after"] == demo["latest_before"]
    assert demo["manifest_after"] == demo["manifest_before"]
    failed_date = RunStore(demo["cfg"].data_root, pipeline.run_key_for(FAILED_DATE))
    assert failed_date.list_files() == [], "a failed run never becomes the date's run folder"
    [attempt] = failed_date.attempts()
    failed_store = RunStore(demo["cfg"].data_root, pipeline.run_key_for(FAILED_DATE), attempt=attempt)
    assert failed_store.exists("validation/report.html"), "the report of the failed validation is kept"
    assert not failed_store.exists(pipeline.FORECASTS)
    assert tasks["release"] == "success", "the teardown frees the date's lock"
    assert not (Path(demo["cfg"].data_root) / "locks" / "runs" / f"{pipeline.run_key_for(FAILED_DATE)}.json").exists()


PLAN_DATE = "2024-03-15T10:30:00"
PLAN_TASKS = {"extract", "validate", "build_features", "size_windows", "publish", "release"}


@pytest.fixture(scope="module")
def demo_plan(env, demo):
    """The scaling-plan DAG on the demo data, eight and a half hours after the first nightly run."""
    result = dag_test(env, PLAN_DATE, {"overrides": demo["conf"]["overrides"]}, dag_id="foresight_scaling_plan")
    return {**demo, "plan": result, "manifest_after_plan": DataRoot(demo["cfg"].data_root).latest_manifest()}


@pytest.mark.slow
def test_scaling_plan_dag_resizes_the_windows_between_nightly_runs(demo_plan):
    from foresight_lib import scaling_plan
    from foresight_lib.serving import exposition

    result = demo_plan["plan"]
    assert result["state"] == "success", result
    assert set(result["tasks"]) == PLAN_TASKS and set(result["tasks"].values()) == {"success"}, result
    data_root = demo_plan["cfg"].data_root
    windows = DataRoot(data_root).read_latest(scaling_plan.SCALING_PLAN)
    start = pd.Timestamp(PLAN_DATE, tz="UTC")
    assert set(windows["kind"]) == {"window"} and windows["request"].notna().all()
    assert windows.loc[windows["lead"] == "0m", "period_start"].eq(start).all()
    # the nightly's publish is untouched; the served windows are the plan's, the daily sizes the nightly's
    assert demo_plan["manifest_after_plan"] == demo_plan["manifest_after"]
    served = exposition.LatestFiles(data_root).snapshot().recommendations
    assert served.loc[served["kind"] == "window", "period_start"].min() == start
    nightly = DataRoot(data_root).read_latest(pipeline.RECOMMENDATIONS)
    daily = nightly[nightly["kind"] == "daily"].reset_index(drop=True)
    pd.testing.assert_frame_equal(served[served["kind"] == "daily"].reset_index(drop=True).astype({"unique_id": str}),
                                  daily.astype({"unique_id": str}), check_dtype=False)
    assert RunStore(data_root, pipeline.run_key_for(PLAN_DATE), folder=scaling_plan.PLAN_FOLDER).exists(
        scaling_plan.SCALING_PLAN)


@pytest.fixture(scope="module")
def nab(env, tmp_path_factory, nab_data):
    """Three NAB EC2 CPU traces (2014) replayed so that they end at the run's date."""
    root = tmp_path_factory.mktemp("nab")
    source = root / "nab"
    source.mkdir()
    for name in NAB_FILES:
        shutil.copy(nab_data / "nab_aws" / "realAWSCloudwatch" / name, source / name)
    conf = _conf(root, source={"kind": "files", "path": str(source), "format": "nab", "replay": True})
    result = dag_test(env, REAL_DATE, conf)
    cfg = _config(conf)
    return {"result": result, "cfg": cfg, "store": RunStore(cfg.data_root, pipeline.run_key_for(REAL_DATE))}


@pytest.mark.slow
def test_real_data_replayed_end_to_end(nab):
    _all_succeeded(nab["result"])
    store, cfg = nab["store"], nab["cfg"]
    raw = store.read_frame("raw")
    end = pd.Timestamp(REAL_DATE, tz="UTC")
    assert raw["unique_id"].nunique() == len(NAB_FILES)
    assert (raw.groupby("unique_id")["ds"].max() == end - pd.Timedelta(cfg.freq)).all()
    forecasts = store.read_frame(pipeline.FORECASTS)
    assert forecasts["ds"].min() == end
    summary = pipeline.latest_summary(pipeline.overrides_from_params({"overrides": {
        "data_root": cfg.data_root, "mlflow": {"tracking_uri": cfg.mlflow.tracking_uri}}}))
    assert summary["run_key"] == pipeline.run_key_for(REAL_DATE)
    champions = _champion_versions(cfg.mlflow.tracking_uri)
    assert f"{cfg.mlflow.model_name_prefix}cpu_utilization" in champions

    import mlflow

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_registry_uri(cfg.mlflow.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{cfg.mlflow.model_name_prefix}cpu_utilization@champion")
    history = store.read_frame("features").groupby("unique_id").tail(24)
    predicted = model.predict(history)
    assert predicted["yhat"].notna().all() and len(predicted) >= len(NAB_FILES)


def test_run_key_for():
    assert pipeline.run_key_for("2024-03-15T02:00:00+00:00") == "2024-03-15T020000Z"
    assert pipeline.run_key_for(pd.Timestamp("2024-03-15 04:00", tz="Europe/Paris")) == "2024-03-15T030000Z"


def test_params_become_overrides():
    params = {"metrics": ["cpu_cores"], "models": ["naive", "ensemble"], "horizons": ["5m"],
              "overrides": {"history_days": 3, "source": {"kind": "demo"}}}
    overrides = pipeline.overrides_from_params(params)
    assert overrides == {"history_days": 3, "source": {"kind": "demo", "metrics": ["cpu_cores"]},
                         "models": ["naive", "ensemble"], "horizons": ["5m"]}
    assert pipeline.overrides_from_params({"metrics": [], "models": [], "horizons": []}) == {}


def test_bad_overrides_and_dates_are_config_errors():
    from foresight_lib.errors import ConfigError

    with pytest.raises(ConfigError, match="overrides"):
        pipeline.overrides_from_params({"overrides": ["history_days", 3]})
    with pytest.raises(ConfigError, match="not a date"):
        pipeline.run_key_for("yesterday-ish")


def test_the_printed_summary_says_how_old_the_data_was():
    summary = {"run_key": "k", "run_id": "r", "leaderboard": [{"model": "naive", "horizon": "5m", "mase": 1.0}],
               "champion": "naive", "run_folder": "f", "mlflow_tracking_uri": "u", "mlflow_parent_run": "p",
               "data_freshness": {"last_timestamp": "2024-03-15T01:55:00+00:00", "data_age_s": 300.0,
                                  "data_interval_end": "2024-03-15T02:00:00+00:00", "series_stale": 1}}
    text = pipeline.format_summary(summary)
    assert ("Data: last point 2024-03-15T01:55:00+00:00, 300 s before the data interval end "
            "2024-03-15T02:00:00+00:00; 1 stale series quarantined") in text
