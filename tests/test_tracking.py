from __future__ import annotations

import json
import logging
import re

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_series
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from foresight_lib.errors import ConfigError
from foresight_lib.forecasting.backtest import BacktestSpec, backtest_part, run_backtest
from foresight_lib.forecasting.champion import ChampionBundle
from foresight_lib.tracking import mlflow_runs, mlflow_store, registry

MODELS = ["naive", "seasonal_naive", "ensemble"]
STEP = pd.Timedelta("5min")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    experiment_id = mlflow_store.configure(root=root, experiment="foresight-test")
    assert (root / "mlflow.db").is_file()
    assert (root / "artifacts").is_dir()
    return {"root": root, "experiment_id": experiment_id, "client": MlflowClient()}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_daily_series(days=4, n_series=2, seed=5)


@pytest.fixture(scope="module")
def spec() -> BacktestSpec:
    return BacktestSpec(models=MODELS, n_jobs=1, history_days=2, future=True, keep_models=True)


@pytest.fixture(scope="module")
def result(frame, spec):
    return run_backtest(frame, spec)


@pytest.fixture(scope="module")
def logged(store, result, tmp_path_factory):
    extra = tmp_path_factory.mktemp("run") / "forecasts.csv"
    result.future_forecasts.to_csv(extra, index=False)
    out = mlflow_runs.log_nightly(
        "scheduled__2024-03-04T00:00:00+00:00", result, {"mlflow": {"experiment": "x"}, "models": MODELS},
        {"forecasts": str(extra), "remote": "s3://bucket/runs/forecasts.parquet"},
        "<html><body>validation ok</body></html>", logical_date="2024-03-04",
        started_at="2024-03-04T00:01:00+00:00",
    )
    return out


def active_runs(client, experiment_id, run_key):
    return client.search_runs([experiment_id], f"tags.`foresight.run_id` = '{run_key}'",
                              run_view_type=ViewType.ACTIVE_ONLY)


def artifact_paths(client, run_id, path=None) -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_parent_and_child_runs_with_metrics_params_and_artifacts(store, logged, result):
    client = store["client"]
    parent = client.get_run(logged["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "2024-03-04 00:00 nightly"
    assert parent.data.tags["foresight.run_kind"] == "nightly"
    # timed from the DAG run's start, not from when logging began
    assert parent.info.start_time == pd.Timestamp("2024-03-04T00:01:00+00:00").timestamp() * 1000
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow opens it on its runs
    assert "Overall champion" in parent.data.tags["mlflow.note.content"]
    assert parent.data.tags["foresight.run_id"] == "scheduled__2024-03-04T00:00:00+00:00"
    assert parent.data.tags["foresight.logical_date"] == "2024-03-04"
    assert parent.data.tags["foresight.metric"] == "cpu_cores"
    assert parent.data.params["config.mlflow.experiment"] == "x"
    assert parent.data.metrics["series"] == 2
    for model in MODELS:  # beside each model's mean MASE, its mean weighted quantile loss
        rows = result.leaderboard[result.leaderboard.model == model]
        assert parent.data.metrics[f"mean_wql_{model}"] == pytest.approx(rows["wql"].mean())
    paths = artifact_paths(client, parent.info.run_id)
    assert {"leaderboard.csv", "leaderboard_by_metric.csv", "leaderboard.json", "backtest_report.json", "config.json",
            "validation/validation_report.html", "plots/leaderboard_cpu_cores.png", "run/forecasts.csv",
            "links.json"} <= paths
    board = json.loads(open(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id,
                                                                artifact_path="leaderboard.json")).read())
    assert {row["model"] for row in board["rows"]} == set(MODELS)

    assert set(logged["child_run_ids"]) == set(MODELS)
    for model, run_id in logged["child_run_ids"].items():
        child = client.get_run(run_id)
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["foresight.model"] == model
        metrics = child.data.metrics
        for name in ("mase_5m", "mase_15m", "mase_30m", "smape_30m", "coverage_80_30m", "coverage_95_5m",
                     "wql_5m", "wql_15m", "wql_30m", "mean_wql", "cpu_cores/wql_15m",
                     "mean_mase", "mean_smape", "cpu_cores/mae_5m", "cpu_cores/rmse_15m", "cpu_cores/width_80_15m",
                     "cpu_cores/mase_30m", "cpu_cores/mean_mase", "fit_seconds", "predict_seconds", "fallbacks"):
            assert name in metrics, (model, name)
        # MAE, RMSE and widths carry the data's unit: never pooled over metrics
        assert not {"mae_5m", "rmse_15m", "width_80_15m", "mean_mae", "mean_rmse"} & set(metrics)
        row = result.leaderboard[(result.leaderboard.model == model) & (result.leaderboard.horizon == "15m")]
        assert metrics["mase_15m"] == pytest.approx(float(row["mase"].iloc[0]))
        assert metrics["wql_15m"] == pytest.approx(float(row["wql"].iloc[0])) and metrics["wql_15m"] > 0
        assert child.data.params["model.name"] == model
        assert child.data.params["protocol.freq"] == "5min"
        assert "plots/forecasts_vs_actuals.png" in artifact_paths(client, run_id)
        curve = {m.step: m.value for m in client.get_metric_history(run_id, "mase_by_horizon")}
        assert curve == pytest.approx({5: metrics["mase_5m"], 15: metrics["mase_15m"], 30: metrics["mase_30m"]})
        curve = {m.step: m.value for m in client.get_metric_history(run_id, "wql_by_horizon")}
        assert curve == pytest.approx({5: metrics["wql_5m"], 15: metrics["wql_15m"], 30: metrics["wql_30m"]})
    ensemble = client.get_run(logged["child_run_ids"]["ensemble"])
    assert ensemble.data.params["model.members"] == "naive,seasonal_naive"


def test_relogging_the_same_run_key_leaves_one_parent_once_retired(store, frame, spec, result):
    key = "manual__2024-03-05"
    first = mlflow_runs.log_nightly(key, result, {}, {}, None)
    parts = [backtest_part(frame, spec, models=["naive", "seasonal_naive"])]
    second = mlflow_runs.log_nightly(key, parts, {}, {}, None, spec=spec)
    # until the publish has succeeded, the earlier attempt stays
    parents = [r for r in active_runs(store["client"], store["experiment_id"], key)
               if "mlflow.parentRunId" not in r.data.tags]
    assert {r.info.run_id for r in parents} == {first["parent_run_id"], second["parent_run_id"]}

    retired = mlflow_runs.retire_earlier_runs(key, second["parent_run_id"])

    runs = active_runs(store["client"], store["experiment_id"], key)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in parents] == [second["parent_run_id"]]
    assert len(runs) == 1 + len(MODELS)
    assert store["client"].get_run(first["parent_run_id"]).info.lifecycle_stage == "deleted"
    assert sorted(retired["deleted"]) == sorted([first["parent_run_id"], *first["child_run_ids"].values()])
    assert retired["kept"] == {}
    with pytest.raises(ConfigError, match="BacktestSpec"):
        mlflow_runs.log_nightly(key, parts, {}, {}, None)


def history_after(bundle: ChampionBundle, frame: pd.DataFrame, shift: float) -> pd.DataFrame:
    """The last hour of every series, then 3 new actuals per series shifted by ``shift``."""
    recent = frame.groupby("unique_id").tail(12)
    new = []
    for uid, last in bundle.last_ds.items():
        new.append(pd.DataFrame({"unique_id": uid, "ds": pd.date_range(last + STEP, periods=3, freq=STEP),
                                 "y": [shift] * 3}))
    return pd.concat([recent, *new], ignore_index=True)


def test_register_load_predict_and_alias_rule(store, logged, result, frame):
    client = store["client"]
    parent = logged["parent_run_id"]
    bundles = {m: ChampionBundle.from_result(result, m, frame) for m in MODELS}
    scores = {m: b.mean_mase for m, b in bundles.items()}
    ranked = sorted(MODELS, key=scores.get)  # best first
    middle, worst, best = ranked[1], ranked[2], ranked[0]

    first = registry.register_champion(bundles[middle], "cpu", run_key="k", parent_run_id=parent)
    assert first["alias"] == "champion" and first["previous_version"] is None
    version = client.get_model_version("foresight-cpu", str(first["version"]))
    assert version.tags["model"] == middle
    assert float(version.tags["mean_mase"]) == pytest.approx(scores[middle], rel=1e-5)
    assert version.tags["run_id"] == "k"

    model = mlflow.pyfunc.load_model("models:/foresight-cpu@champion")
    assert model.metadata.signature.params.to_dict()[0]["name"] == "horizons"
    history = history_after(bundles[middle], frame, 500.0)
    fc = model.predict(history.assign(ds=history["ds"].dt.tz_convert(None)), params={"horizons": "5m,15m"})
    assert set(fc["unique_id"]) == {"cpu_cores/c0", "cpu_cores/c1"}
    assert len(fc) == 2 * 3
    cols = ["yhat_lo_95", "yhat_lo_80", "yhat", "yhat_hi_80", "yhat_hi_95"]
    assert (np.diff(fc[cols].to_numpy(), axis=1) >= 0).all()
    assert (fc["cutoff"] == history.groupby("unique_id")["ds"].max().reindex(fc["unique_id"]).to_numpy()).all()
    # the registered model is the bundle, conditioned on the new actuals
    pd.testing.assert_frame_equal(fc, bundles[middle].forecast(history, horizons="5m,15m"))
    assert (fc["cutoff"] > bundles[middle].last_ds["cpu_cores/c0"]).all()
    as_strings = model.predict(history.assign(ds=history["ds"].astype(str)))
    assert len(as_strings) == 2 * 6

    worse = registry.register_champion(bundles[worst], "cpu", run_key="k", parent_run_id=parent)
    assert worse["alias"] == "challenger"
    assert worse["previous_version"] == first["version"]
    assert worse["champion_mean_mase"] == pytest.approx(scores[middle])
    assert int(client.get_model_version_by_alias("foresight-cpu", "champion").version) == first["version"]
    assert int(client.get_model_version_by_alias("foresight-cpu", "challenger").version) == worse["version"]

    better = registry.register_champion(bundles[best], "cpu", run_key="k", parent_run_id=parent)
    assert better["alias"] == "champion"
    assert better["new_mean_mase"] < better["champion_mean_mase"]
    assert int(client.get_model_version_by_alias("foresight-cpu", "champion").version) == better["version"]
    assert registry.load_champion("cpu").model == best


def test_explicit_scores_and_an_incomparable_champion(store, result, frame):
    bundle = ChampionBundle.from_result(result, "naive", frame)
    registry.register_champion(bundle, "mem", new_score=1.0, current_score_fn=lambda champ: 0.0)
    worse = registry.register_champion(bundle, "mem", new_score=1.5, current_score_fn=lambda champ: 1.0)
    assert worse["alias"] == "challenger"
    tie = registry.register_champion(bundle, "mem", new_score=1.0, current_score_fn=lambda champ: 1.0)
    assert tie["alias"] == "champion"

    def refuse(champ):
        raise ConfigError("the champion forecasts at 1h")

    taken = registry.register_champion(bundle, "mem", new_score=2.0, current_score_fn=refuse)
    assert taken["alias"] == "champion"
    assert "not comparable" in taken["reason"]
    assert registry.load_champion("disk") is None


# ---------------------------------------------------------------------------
# MLflow a person can read


def test_parent_runs_are_named_time_first_with_their_kind():
    assert mlflow_runs.run_name("scheduled__2024-03-15T02:00:00+00:00") == "2024-03-15 02:00 nightly"
    assert mlflow_runs.run_name("2024-03-15T020000Z") == "2024-03-15 02:00 nightly"
    assert mlflow_runs.run_name("anything", "2024-03-16T23:30:00-02:00") == "2024-03-17 01:30 nightly"  # UTC
    assert mlflow_runs.run_name("manual__today") == "manual__today ad hoc"
    assert mlflow_runs.run_name("backfill__2024-03-10T02:00:00+00:00") == "2024-03-10 02:00 backfill"
    assert mlflow_runs.run_name("2024-03-15T020000Z", kind="ad hoc") == "2024-03-15 02:00 ad hoc"
    assert mlflow_runs.run_kind("scheduled__2024-03-15T02:00:00+00:00", ad_hoc=True) == "ad hoc"  # settings changed


def test_a_published_parent_says_so_in_its_tag_and_name(store, logged):
    client = store["client"]
    parent = logged["parent_run_id"]
    mlflow_runs.mark_published(parent, False, "an older data interval than latest/")
    run = client.get_run(parent)
    assert run.data.tags["foresight.published"] == "false" and not run.info.run_name.endswith("published")
    mlflow_runs.mark_published(parent, True, "newest run")
    mlflow_runs.mark_published(parent, True, "newest run")
    run = client.get_run(parent)
    assert run.data.tags["foresight.published"] == "true"
    assert run.info.run_name == "2024-03-04 00:00 nightly, published"


@pytest.fixture(scope="module")
def two_metrics():
    """CPU cores (about 5) and memory bytes (about 5e9): one backtest, units that must not mix."""
    cpu = make_daily_series(days=4, n_series=2, seed=7)
    memory = cpu[cpu["unique_id"] == "cpu_cores/c0"].assign(unique_id="memory_bytes/c0", y=lambda f: f["y"] * 1e9)
    frame = pd.concat([cpu, memory], ignore_index=True)
    spec = BacktestSpec(models=["naive", "seasonal_naive"], n_jobs=1, history_days=2, future=True)
    return run_backtest(frame, spec)


def test_unit_bearing_metrics_are_logged_per_metric_and_scale_free_ones_pooled(store, two_metrics):
    result = two_metrics
    out = mlflow_runs.log_nightly("scheduled__2024-03-06T02:00:00+00:00", result, {}, {}, None)
    client = store["client"]
    parent = client.get_run(out["parent_run_id"])
    per_series = result.per_series.assign(metric=result.per_series["unique_id"].str.split("/").str[0])
    champions = {}
    for metric in ("cpu_cores", "memory_bytes"):
        rows = per_series[per_series["metric"] == metric]
        champions[metric] = rows.groupby("model")["mase"].mean().idxmin()
        assert parent.data.tags[f"foresight.champion.{metric}"] == champions[metric]
        assert parent.data.params[f"champion.{metric}"] == champions[metric]
        best = rows[(rows["model"] == champions[metric]) & (rows["horizon"] == "15m")]
        assert parent.data.metrics[f"{metric}/mae_15m"] == pytest.approx(best["mae"].mean())
        assert parent.data.metrics[f"{metric}/rmse_15m"] == pytest.approx(best["rmse"].mean())
        assert parent.data.metrics[f"{metric}/series"] == rows["unique_id"].nunique()
    assert parent.data.metrics["cpu_cores/series"] == 2 and parent.data.metrics["memory_bytes/series"] == 1
    # the two units stay apart: memory's error is in bytes, CPU's in cores
    assert parent.data.metrics["memory_bytes/mae_15m"] > 1e6 * parent.data.metrics["cpu_cores/mae_15m"]

    child = client.get_run(out["child_run_ids"]["naive"]).data.metrics
    naive = per_series[(per_series["model"] == "naive") & (per_series["horizon"] == "5m")]
    for metric in ("cpu_cores", "memory_bytes"):
        rows = naive[naive["metric"] == metric]
        assert child[f"{metric}/mae_5m"] == pytest.approx(rows["mae"].mean())
        assert child[f"{metric}/width_95_5m"] == pytest.approx(rows["width_95"].mean())
        assert child[f"{metric}/mase_5m"] == pytest.approx(rows["mase"].mean())
    # MASE is scale-free, so its pooled mean over both metrics is logged as before
    assert child["mase_5m"] == pytest.approx(naive["mase"].mean())
    assert not [name for name in child if re.match(r"(mae|rmse|width_\d+)_", name) or name in ("mean_mae", "mean_rmse")]
    by_metric = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id,
                                                                artifact_path="leaderboard_by_metric.csv"))
    assert set(by_metric["metric"]) == {"cpu_cores", "memory_bytes"}


@pytest.fixture
def elsewhere(store):
    """A test that points MLflow at other stores; the module's store is set back after it."""
    yield
    root = store["root"]
    mlflow_store.configure(f"sqlite:///{root / 'mlflow.db'}", root=root, experiment="foresight-test")


def test_experiment_is_a_model_training_one(store, tmp_path, elsewhere):
    kind = mlflow_store.EXPERIMENT_KIND_TAG
    assert store["client"].get_experiment(store["experiment_id"]).tags[kind] == "custom_model_development"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    untagged = client.create_experiment("old", artifact_location=(tmp_path / "a").as_uri())
    guessed = client.create_experiment("guessed", artifact_location=(tmp_path / "b").as_uri(),
                                       tags={kind: "genai_development"})  # what the UI stores for an empty one
    chosen = client.create_experiment("chosen", artifact_location=(tmp_path / "c").as_uri(),
                                      tags={kind: "forecasting"})
    for name, experiment_id in (("old", untagged), ("guessed", guessed)):
        assert mlflow_store.configure(uri, root=tmp_path, experiment=name) == experiment_id
        assert client.get_experiment(experiment_id).tags[kind] == "custom_model_development"
    mlflow_store.configure(uri, root=tmp_path, experiment="chosen")
    assert client.get_experiment(chosen).tags[kind] == "forecasting"  # already a model-training kind


def test_a_successful_publish_prints_no_mlflow_noise(store, result, frame, caplog, capfd):
    bundle = ChampionBundle.from_result(result, "naive", frame)
    caplog.set_level(logging.WARNING)
    caplog.set_level(logging.DEBUG, logger="foresight_lib")
    capfd.readouterr()

    parent = mlflow_runs.log_nightly("scheduled__2024-03-07T02:00:00+00:00", result, {}, {}, None)["parent_run_id"]
    first = registry.register_champion(bundle, "quiet", run_key="q", parent_run_id=parent)
    second = registry.register_champion(bundle, "quiet", run_key="q", parent_run_id=parent)  # loads the champion

    out, err = capfd.readouterr()
    assert (first["version"], second["version"]) == (1, 2)
    assert "it/s" not in err and "Downloading artifacts" not in err  # no progress bar
    assert err.strip() == "", err  # Airflow shows every stderr line as an ERROR
    assert "registered model" not in out
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]
    debug = [r.getMessage() for r in caplog.records if r.name == "foresight_lib.tracking.mlflow_store"]
    assert any("python_model" in m for m in debug)  # MLflow's by-design warning, kept at DEBUG
    assert any("registered foresight-quiet v2" in r.getMessage() for r in caplog.records)
    # outside a publish MLflow logs as it did; inside, a real warning still reaches the log as a warning
    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

    assert MLFLOW_LOGGING_STREAM.enabled
    assert not any(isinstance(h, mlflow_store._ForwardToLog) for h in logging.getLogger("mlflow").handlers)
    with mlflow_store.quiet_mlflow():
        logging.getLogger("mlflow.store").warning("artifact store is full")
    assert capfd.readouterr().err == ""
    assert [r.levelno for r in caplog.records if "artifact store is full" in r.getMessage()] == [logging.WARNING]


def _configure_at(uri: str, artifacts: str, barrier, results) -> None:
    barrier.wait()
    try:
        results.put(("ok", mlflow_store.configure(uri, artifact_location=artifacts, experiment="foresight-race")))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(("failed", f"{type(exc).__name__}: {exc}"))


@pytest.mark.slow
def test_two_runs_started_together_on_a_fresh_sqlite_store_both_go_on(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for pair in range(3):
        uri = f"sqlite:///{tmp_path / f'pair{pair}' / 'mlflow.db'}"
        barrier, results = context.Barrier(2), context.Queue()
        workers = [context.Process(target=_configure_at, args=(uri, str(tmp_path / f"art{pair}"), barrier, results))
                   for _ in range(2)]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        assert [kind for kind, _ in outcomes] == ["ok", "ok"], outcomes
        assert outcomes[0][1] == outcomes[1][1], "both runs use the one experiment"
