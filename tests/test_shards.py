"""Series shards of the train step: the split, the mapped tasks, merging the parts, and bad shards."""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from foresight_lib import pipeline
from foresight_lib.errors import ConfigError, DataError
from foresight_lib.forecasting.backtest import BacktestPart, SeriesSplit
from foresight_lib.forecasting.backtest_runner import RunOutcome
from foresight_lib.forecasting.shard_results import (
    champion_bundles,
    read_backtest_forecasts,
    result_name,
    subset_part,
)
from foresight_lib.forecasting.shards import (
    features_name,
    load_parts,
    part_name,
    shard_count,
    split_ids,
    task_label,
    train_tasks,
)
from foresight_lib.rightsizing import plan_step
from foresight_lib.runs.storage import RunStore

DATE = "2024-03-15T02:00:00"
METRIC = "container_memory_working_set_bytes"
"""One metric of the demo: 9 series, so every shard size is tried in a few seconds."""
MODELS = ["naive", "seasonal_naive", "ets", "ensemble"]
LOCAL = [m for m in MODELS if m != "ensemble"]
BASELINES = ["naive", "seasonal_naive"]
COMPARED = [pipeline.FORECASTS, pipeline.LEADERBOARD, pipeline.PER_SERIES]


def _settings(root: Path, shard_series: int | None, models: list[str]) -> dict:
    return {"history_days": 3, "data_root": str(root / "data"), "models": models,
            "source": {"metrics": [METRIC]}, "train": {"shard_series": shard_series},
            "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "art")}}


@contextlib.contextmanager
def _features(root: Path, shard_series: int | None, models: list[str] = MODELS):
    """A run of the demo up to its features (the date's lock held), and its attempt folder."""
    run = pipeline.extract(None, None, DATE, overrides=_settings(root, shard_series, models), owner_pid=os.getpid())
    try:
        run = pipeline.validate(run)
        run = pipeline.build_features(run)
        yield run, RunStore(str(root / "data"), run["run_key"], attempt=run["attempt"])
    finally:
        pipeline.release(run)


def _train_and_evaluate(run: dict) -> tuple[list[dict], dict]:
    """Every train task as the DAG maps them, then evaluate."""
    trained = [pipeline.train(run, **task, tasks_at_once=1) for task in pipeline.train_tasks(run)]
    return trained, pipeline.evaluate(run, trained)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The demo's date backtested in one task per model, and in shards of 2 series."""
    out = {}
    for name, shard_series in (("whole", 0), ("sharded", 2)):
        root = tmp_path_factory.mktemp(name)
        with _features(root, shard_series) as (run, store):
            trained, evaluated = _train_and_evaluate(run)
            walked = [pipeline.rightsize(run, **task) for task in pipeline.rightsize_tasks(run)]
            cfg, _ = pipeline.open_run(run)
            plans = plan_step.recommendations(cfg, store, run, store.read_frame(pipeline.FEATURES),
                                              store.read_frame(pipeline.FEATURE_SERIES))
            out[name] = {"run": evaluated, "store": store, "trained": trained, "walked": walked, "plans": plans,
                         "frames": {**{n: store.read_frame(n) for n in COMPARED},
                                    "backtest_forecasts": read_backtest_forecasts(store, run["shards"])},
                         "report": json.loads(store.read_bytes("backtest_report.json"))}
    return out


def test_local_models_forecast_and_score_the_same_sharded_or_not(runs):
    whole, sharded = runs["whole"], runs["sharded"]
    n_series = whole["run"]["feature_series"]
    assert whole["run"]["shards"] == 1 and sharded["run"]["shards"] == shard_count(n_series, 2) > 1
    for name in [*COMPARED, "backtest_forecasts"]:
        pd.testing.assert_frame_equal(sharded["frames"][name], whole["frames"][name], obj=name)
    assert sharded["run"]["champion"] == whole["run"]["champion"]
    assert sharded["report"]["series_ids"] == whole["report"]["series_ids"] == sorted(whole["report"]["series_ids"])
    assert sharded["report"]["skipped_shards"] == [] and sharded["report"]["shards"] == sharded["run"]["shards"]


def test_the_ensembles_members_are_chosen_over_every_shard_as_over_the_whole(runs):
    whole, sharded = runs["whole"], runs["sharded"]
    members = whole["report"]["ensemble_members"]
    assert set(members) == {METRIC} and members[METRIC]["members"]
    assert sharded["report"]["ensemble_members"] == members
    result = pickle.loads(sharded["store"].read_bytes(pipeline.RESULT))
    assert {m: c.members for m, c in result.ensemble_members.items()} == {METRIC: members[METRIC]["members"]}


def test_the_rightsizing_plan_is_the_same_walked_in_shards_or_at_once(runs):
    whole, sharded = runs["whole"], runs["sharded"]
    shards = sharded["run"]["shards"]
    assert [w["shard"] for w in sharded["walked"]] == list(range(1, shards + 1))
    assert [w["shard"] for w in whole["walked"]] == [None]
    assert sum(w["series"] for w in sharded["walked"]) == whole["walked"][0]["series"]
    plans = whole["plans"]
    assert plans["request"].notna().any() and set(plans["kind"]) == {"daily", "window"}, plans
    # the window factors pool across a metric's series, which the shards split: still the same sizes
    pd.testing.assert_frame_equal(sharded["plans"], plans)
    # and the same as the plan made in one go, as the scaling plan makes it
    cfg = pipeline.load_run_config(whole["run"].get("overrides"))
    store = whole["store"]
    pd.testing.assert_frame_equal(pipeline.recommend(cfg, store.read_frame(pipeline.FEATURES),
                                                     store.read_frame(pipeline.FEATURE_SERIES)), plans)


def test_a_missing_shard_walk_is_named_and_none_at_all_are_walked_in_publish(runs, tmp_path):
    sharded = runs["sharded"]
    store, run = sharded["store"], sharded["run"]
    cfg = pipeline.load_run_config(run.get("overrides"))
    features, series = store.read_frame(pipeline.FEATURES), store.read_frame(pipeline.FEATURE_SERIES)
    name = plan_step.walk_name(2)
    saved = store.read_bytes(name)
    store.fs.delete_file(store.path(name))
    try:
        with pytest.raises(DataError, match="shard-2"):
            plan_step.recommendations(cfg, store, run, features, series)
    finally:
        store.write_bytes(name, saved)
    empty = RunStore(str(tmp_path / "data"), run["run_key"], attempt=run["attempt"])  # no walks: walked in publish
    pd.testing.assert_frame_equal(plan_step.recommendations(cfg, empty, run, features, series), sharded["plans"])


def test_each_train_task_backtests_only_its_shard(runs):
    sharded = runs["sharded"]
    store, shards = sharded["store"], sharded["run"]["shards"]
    features = store.read_frame(pipeline.FEATURES)
    expected = split_ids(features["unique_id"], shards)
    assert len(sharded["trained"]) == len(LOCAL) * shards
    for shard, ids in enumerate(expected, start=1):
        assert sorted(store.read_frame(features_name(shard))["unique_id"].unique()) == ids
        for model in LOCAL:
            part = pickle.loads(store.read_bytes(part_name(model, shard)))
            assert [s.unique_id for s in part.splits] == ids, (model, shard)
    assert not store.exists(part_name("naive")), "a sharded model has no part over every series"
    assert all(runs["whole"]["store"].exists(part_name(m)) for m in LOCAL), "one part per model when unsharded"


def test_shards_are_deterministic_balanced_and_cover_every_series_once():
    ids = [f"cpu_cores/c{i:02d}" for i in range(23)]
    shuffled = random.Random(0).sample(ids, len(ids))
    shards = split_ids(shuffled, shard_count(len(ids), 5))
    assert shards == split_ids(reversed(ids), 5), "the split depends on the ids only, not their order"
    assert [len(s) for s in shards] == [5, 5, 5, 4, 4]
    assert [uid for shard in shards for uid in shard] == sorted(ids), "consecutive runs of the sorted ids"
    assert shard_count(32, 500) == 1 and shard_count(32, 0) == 1 and shard_count(32, None) == 1
    assert shard_count(1000, 500) == 2 and shard_count(1001, 500) == 3
    assert [len(s) for s in split_ids(ids[:2], 3)] == [1, 1, 0]


def test_train_tasks_are_local_models_times_shards_and_the_lstm_once():
    tasks = train_tasks(["naive", "lstm", "ets"], 3)
    assert tasks == [
        *({"model": "naive", "shard": i, "shards": 3} for i in (1, 2, 3)),
        {"model": "lstm", "shard": None, "shards": 1},
        *({"model": "ets", "shard": i, "shards": 3} for i in (1, 2, 3)),
    ]
    assert [task_label(t) for t in tasks[2:5]] == ["naive · shard 3/3", "lstm", "ets · shard 1/3"]
    assert train_tasks(["naive", "lstm"], 1) == [{"model": "naive", "shard": None, "shards": 1},
                                                 {"model": "lstm", "shard": None, "shards": 1}]


def _shorten(store: RunStore, frame: pd.DataFrame, ids: list[str], name: str) -> pd.DataFrame:
    """``frame`` with the series ``ids`` cut to their last day (too short to backtest), written as ``name``."""
    last_day = frame["ds"] >= frame["ds"].max() - pd.Timedelta("1D")
    out = frame[~frame["unique_id"].isin(ids) | last_day].reset_index(drop=True)
    store.write_frame(name, out)
    return out


def test_a_shard_of_too_short_series_is_skipped_and_the_run_succeeds(tmp_path):
    with _features(tmp_path, 4, [*BASELINES, "ensemble"]) as (run, store):
        shards = run["shards"]
        last = split_ids(store.read_frame(pipeline.FEATURES)["unique_id"], shards)[-1]
        _shorten(store, store.read_frame(features_name(shards)), last, features_name(shards))
        _shorten(store, store.read_frame(pipeline.FEATURES), last, pipeline.FEATURES)
        trained, evaluated = _train_and_evaluate(run)
        report = json.loads(store.read_bytes("backtest_report.json"))
    skipped_tasks = [t for t in trained if t.get("skipped")]
    assert [(t["model"], t["shard"]) for t in skipped_tasks] == [(m, shards) for m in BASELINES]
    assert all("too short" in t["skipped"] for t in skipped_tasks)
    assert evaluated["skipped_shards"] == report["skipped_shards"]
    assert [(s["model"], s["shard"], s["series"]) for s in report["skipped_shards"]] == \
        [(m, shards, len(last)) for m in BASELINES]
    assert "every series of the shard was skipped" in report["skipped_shards"][0]["reason"]
    assert report["series"] == run["feature_series"] - len(last)
    assert [s["unique_id"] for s in report["skipped"]] == last
    assert evaluated["champion"] in [*BASELINES, "ensemble"]


def test_no_series_left_in_any_shard_fails_the_run(tmp_path):
    with _features(tmp_path, 4, ["naive"]) as (run, store):
        with pytest.raises(ConfigError, match="no train task 'naive · shard 9/"):
            pipeline.train(run, "naive", 9, run["shards"])
        for shard, ids in enumerate(split_ids(store.read_frame(pipeline.FEATURES)["unique_id"], run["shards"]), 1):
            _shorten(store, store.read_frame(features_name(shard)), ids, features_name(shard))
        for task in pipeline.train_tasks(run):
            assert pipeline.train(run, **task, tasks_at_once=1)["skipped"]
        with pytest.raises(DataError, match="no series can be backtested"):
            pipeline.evaluate(run)


class _Parts:
    """The part files of a run folder, in memory."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files

    def exists(self, name: str) -> bool:
        return name in self.files

    def read_bytes(self, name: str) -> bytes:
        return self.files[name]


def test_a_missing_shard_part_is_named(runs):
    store, shards = runs["sharded"]["store"], runs["sharded"]["run"]["shards"]
    files = {part_name(m, s): store.read_bytes(part_name(m, s)) for m in LOCAL for s in range(1, shards + 1)}
    parts, skipped = load_parts(_Parts(files), LOCAL, shards, "run-1")
    assert [p.models for p in parts] == [[m] for m in LOCAL] and skipped == []
    del files[part_name("ets", 2)]
    with pytest.raises(ConfigError, match=f"no backtest for ets · shard 2/{shards} "
                                          r"\(backtests/ets/shard-2.pkl\) in run run-1"):
        load_parts(_Parts(files), LOCAL, shards, "run-1")


def _bundles(store: RunStore, model: str) -> dict:
    """Each metric's bundle of ``model``, built by publish's path from the run's stored results."""
    result = pickle.loads(store.read_bytes(pipeline.RESULT))
    features = store.read_frame(pipeline.FEATURES)
    metric_of = {uid: uid.split("/", 1)[0] for uid in result.series}
    return dict(champion_bundles(store, result, {METRIC: model}, features, metric_of))


@pytest.mark.parametrize("model", ["ets", "ensemble"])
def test_a_champion_built_from_the_shards_forecasts_as_one_built_at_once(runs, model):
    whole, sharded = runs["whole"], runs["sharded"]
    one, pieced = _bundles(whole["store"], model)[METRIC], _bundles(sharded["store"], model)[METRIC]
    assert pieced.series == one.series and len(pieced.local_models) == len(one.local_models) > 0
    assert pieced.mean_mase == pytest.approx(one.mean_mase, rel=1e-12)
    assert pieced.profiles == one.profiles
    assert set(pieced.ensemble_weights) == set(one.ensemble_weights)
    assert pieced.members == one.members
    history = whole["store"].read_frame(pipeline.FEATURES)
    pd.testing.assert_frame_equal(pieced.forecast(history), one.forecast(history))
    pd.testing.assert_frame_equal(pieced.example, one.example)
    for bundle in (one, pieced):  # publish scores the previous champion on it
        assert sorted(bundle._eval_frame["unique_id"].unique()) == bundle.series


def test_evaluate_keeps_the_fitted_models_in_the_shards_results_only(runs):
    sharded = runs["sharded"]
    store, shards = sharded["store"], sharded["run"]["shards"]
    result = pickle.loads(store.read_bytes(pipeline.RESULT))
    assert result.models == {} and result.ensemble_weights == {}
    assert result.shard_results == [result_name(i) for i in range(1, shards + 1)]
    expected = split_ids(store.read_frame(pipeline.FEATURES)["unique_id"], shards)
    for name, ids in zip(result.shard_results, expected, strict=True):
        piece = pickle.loads(store.read_bytes(name))
        assert piece.series == ids and {k[1] for k in piece.models} == set(ids), name
    # MLflow plots each model's best, median and worst series: their backtest forecasts are kept
    assert set(result.forecasts["unique_id"]) and set(result.forecasts["unique_id"]) <= set(result.series)
    assert set(result.fitted_params) >= set(LOCAL)
    whole = pickle.loads(runs["whole"]["store"].read_bytes(pipeline.RESULT))
    assert whole.shard_results == [result_name(None)] and whole.models == {}


def test_a_global_models_part_is_cut_to_a_shard_with_its_network_whole():
    ds = pd.date_range("2024-01-01", periods=4, freq="5min")
    splits = [SeriesSplit(uid, ds, np.zeros(3), np.zeros(1)) for uid in ("m/a", "m/b", "m/c")]
    network = object()

    def outcome():
        return RunOutcome({("lstm", s.unique_id): {"mean": np.zeros((1, 1))} for s in splits},
                          {"lstm": 5.0}, {"lstm": 1.0},
                          [{"model": "lstm", "unique_id": "m/b", "error": "x"}], {"lstm": network})

    part = BacktestPart(["lstm"], splits, [{"unique_id": "m/z", "reason": "too short"}], outcome(), outcome(), 6.0)
    cut = subset_part(part, {"m/b", "m/z"}, keep_seconds=False)
    assert [s.unique_id for s in cut.splits] == ["m/b"] and cut.skipped == part.skipped
    for out in (cut.outcome, cut.validation):
        assert list(out.forecasts) == [("lstm", "m/b")] and out.models == {"lstm": network}
        assert out.fallbacks == [{"model": "lstm", "unique_id": "m/b", "error": "x"}] and out.fit_seconds == {}
    assert subset_part(part, {"m/a"}, keep_seconds=True).outcome.fit_seconds == {"lstm": 5.0}
    assert len(part.splits) == 3, "the part itself is left whole"
