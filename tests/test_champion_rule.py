"""The one champion rule (``champion.criterion``): one score, the same choice everywhere.

The default (mean MASE over the horizons) gives today's choices; a rule that weighs the
horizons changes the choice where it should, and the leaderboard, each metric's champion,
the champion bundle, the registry's no-regression gate and the MLflow tags all follow it.
A bad setting is refused with the setting's name.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_series
from mlflow.tracking import MlflowClient

from foresight_lib.config import load_config
from foresight_lib.errors import ConfigError
from foresight_lib.forecasting.backtest import BacktestSpec, run_backtest
from foresight_lib.forecasting.champion import ChampionBundle
from foresight_lib.forecasting.metrics import (
    DEFAULT_CRITERION,
    LEADERBOARD_COLUMNS,
    ChampionCriterion,
    champion,
    leaderboard,
    metric_champions,
)
from foresight_lib.runs import backtest_spec
from foresight_lib.tracking import mlflow_runs, mlflow_store, registry

MODELS = ["naive", "seasonal_naive"]
WEIGHTS = {"5m": 4.0}
"""On this data naive is best at 5 minutes and seasonal naive on the plain mean: weighing 5m flips them."""


def scored(board: pd.DataFrame, uid: str = "cpu/x") -> pd.DataFrame:
    """Per-series scores (one series) with ``board``'s MASE and every other metric column."""
    extra = {c: 0.0 for c in LEADERBOARD_COLUMNS[2:] if c not in board}
    return board.assign(unique_id=uid, **extra)


def board_of(rows: dict[str, list[float]], horizons=("5m", "15m", "30m")) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "horizon": h, "mase": v} for m, values in rows.items()
                         for h, v in zip(horizons, values, strict=True)])


def test_default_rule_is_the_plain_mean_mase():
    board = board_of({"a": [1.0, 2.0, 3.0], "b": [2.5, 1.5, 1.9]})
    scores = DEFAULT_CRITERION.scores(board)
    assert scores.to_dict() == pytest.approx({"a": 2.0, "b": 5.9 / 3})
    assert champion(board) == "b" == ChampionCriterion.from_setting(None).champion(board)
    assert DEFAULT_CRITERION.label == "mean_mase" and DEFAULT_CRITERION.is_default
    assert ChampionCriterion.from_setting({"criterion": "mean_mase", "horizon_weights": {}}) == DEFAULT_CRITERION


def test_horizon_weights_change_the_choice_and_the_ranking():
    board = board_of({"a": [1.0, 2.0, 3.0], "b": [2.5, 1.5, 1.9]})
    short = ChampionCriterion.from_setting({"criterion": "mean_mase", "horizon_weights": {"5m": 5}})
    assert short.score(board, "a") == pytest.approx((5 * 1.0 + 2.0 + 3.0) / 7)
    assert short.champion(board) == "a"
    per_series = scored(board)
    assert list(dict.fromkeys(leaderboard(per_series, ["5m", "15m", "30m"])["model"])) == ["b", "a"]
    assert list(dict.fromkeys(leaderboard(per_series, ["5m", "15m", "30m"], short)["model"])) == ["a", "b"]
    assert short.label == "mean_mase[5m=5]" and not short.is_default
    # a horizon with no finite MASE does not count; a model with none has no score and cannot win
    gaps = board_of({"a": [np.nan, 1.0, 1.0], "b": [np.nan, np.nan, np.nan], "c": [0.5, 4.0, 4.0]})
    assert short.scores(gaps)["a"] == pytest.approx(1.0)
    assert np.isnan(short.scores(gaps)["b"])
    assert short.champion(gaps) == "a"


def test_bad_settings_are_refused_with_the_setting_name():
    with pytest.raises(ConfigError, match=r"champion\.horizon_weights.*45m"):
        load_config(overrides={"champion": {"horizon_weights": {"45m": 2}}})
    with pytest.raises(ConfigError, match=r"champion\.horizon_weights.*at least 0"):
        load_config(overrides={"champion": {"horizon_weights": {"30m": -1}}})
    with pytest.raises(ConfigError, match=r"champion\.horizon_weights.*every horizon a weight of 0"):
        load_config(overrides={"champion": {"horizon_weights": {"5m": 0, "15m": 0, "30m": 0}}})
    with pytest.raises(ConfigError, match=r"champion\.criterion"):
        load_config(overrides={"champion": {"criterion": "lowest_rmse"}})
    with pytest.raises(ConfigError, match=r"champion\.rule.*unknown setting"):
        load_config(overrides={"champion": {"rule": "mean_mase"}})
    cfg = load_config(overrides={"champion": {"horizon_weights": {"5m": 4}}})
    assert backtest_spec(cfg).criterion == ChampionCriterion("mean_mase", (("5m", 4.0),))
    assert backtest_spec(load_config()).criterion == DEFAULT_CRITERION


def test_one_metric_mapping_the_series_table_first():
    per_series = pd.concat([scored(board_of({"naive": [1.0], "ets": [2.0]}, ["5m"]), "odd-id"),
                            scored(board_of({"naive": [3.0], "ets": [1.0]}, ["5m"]), "cpu/a")], ignore_index=True)
    result = type("Result", (), {"per_series": per_series, "spec": BacktestSpec(models=["naive", "ets"],
                                                                               horizons=["5m"])})()
    series = pd.DataFrame({"unique_id": ["odd-id"], "metric": ["memory"]})
    assert metric_champions(result, series) == {"cpu": "ets", "memory": "naive"}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_daily_series(days=4, n_series=2, seed=0)


def spec(criterion: ChampionCriterion | None = None) -> BacktestSpec:
    extra = {"criterion": criterion} if criterion is not None else {}
    return BacktestSpec(models=MODELS, n_jobs=1, history_days=2, future=True, keep_models=True, **extra)


@pytest.fixture(scope="module")
def results(frame) -> dict:
    weighted = ChampionCriterion.from_setting({"horizon_weights": WEIGHTS})
    return {"default": run_backtest(frame, spec()), "weighted": run_backtest(frame, spec(weighted)),
            "criterion": weighted}


def test_weighted_rule_is_followed_by_leaderboard_champions_and_bundle(results, frame):
    default, weighted, criterion = results["default"], results["weighted"], results["criterion"]
    assert default.champion == "seasonal_naive" and weighted.champion == "naive"  # the data flips them
    assert default.leaderboard["model"].iloc[0] == "seasonal_naive"
    assert weighted.leaderboard["model"].iloc[0] == "naive"
    assert metric_champions(default) == {"cpu_cores": "seasonal_naive"}
    assert metric_champions(weighted) == {"cpu_cores": "naive"}
    pd.testing.assert_frame_equal(default.per_series, weighted.per_series)  # same backtest, another rule
    bundle = ChampionBundle.from_result(weighted, None, frame)
    assert bundle.model == "naive" and bundle.criterion == "mean_mase[5m=4]"
    assert bundle.score == pytest.approx(criterion.score(weighted.leaderboard, "naive"))
    assert bundle.mean_mase == pytest.approx(DEFAULT_CRITERION.score(weighted.leaderboard, "naive"))
    assert bundle.score < bundle.mean_mase
    assert bundle.score_on(frame, weighted.spec) == pytest.approx(bundle.score)
    plain = ChampionBundle.from_result(default, None, frame)
    assert plain.model == "seasonal_naive" and plain.score == pytest.approx(plain.mean_mase)


def test_registry_gate_and_tracking_tags_use_the_rule(results, frame, tmp_path):
    mlflow_store.configure(root=tmp_path, experiment="foresight-champion-rule")
    weighted = results["weighted"]
    parent = mlflow_runs.log_nightly("rule", weighted, {}, {}, None)["parent_run_id"]
    client = MlflowClient()
    run = client.get_run(parent)
    assert run.data.tags["foresight.champion"] == "naive"
    assert run.data.tags["foresight.champion.cpu_cores"] == "naive"
    assert run.data.tags["foresight.champion_criterion"] == "mean_mase[5m=4]"
    assert run.data.params["champion.criterion"] == "mean_mase[5m=4]"
    criterion = results["criterion"]
    assert run.data.metrics["champion_score"] == pytest.approx(criterion.score(weighted.leaderboard, "naive"))
    assert run.data.metrics["champion_mean_mase"] == pytest.approx(
        DEFAULT_CRITERION.score(weighted.leaderboard, "naive"))
    assert run.data.metrics["score_seasonal_naive"] == pytest.approx(
        criterion.score(weighted.leaderboard, "seasonal_naive"))

    # seasonal naive first (the plain rule's champion), then naive: better by the weighted rule only
    loser = ChampionBundle.from_result(weighted, "seasonal_naive", frame)
    winner = ChampionBundle.from_result(weighted, "naive", frame)
    assert winner.mean_mase > loser.mean_mase and winner.score < loser.score
    first = registry.register_champion(loser, "cpu", run_key="rule", parent_run_id=parent)
    second = registry.register_champion(winner, "cpu", run_key="rule", parent_run_id=parent)
    assert second["alias"] == registry.CHAMPION_ALIAS, second
    assert second["criterion"] == "mean_mase[5m=4]"
    assert second["score"] == pytest.approx(winner.score)
    assert second["champion_score"] == pytest.approx(loser.score)  # the current champion, scored by the same rule
    assert second["new_mean_mase"] == pytest.approx(winner.mean_mase) and second["champion_mean_mase"] is None
    assert "score (mean_mase[5m=4])" in second["reason"]
    version = client.get_model_version(second["registered_model"], str(second["version"]))
    assert version.tags["criterion"] == "mean_mase[5m=4]"
    assert float(version.tags["score"]) == pytest.approx(winner.score, rel=1e-5)
    assert float(version.tags["mean_mase"]) == pytest.approx(winner.mean_mase, rel=1e-5)
    # under the plain rule the same pair goes the other way: naive would not beat seasonal naive
    assert first["alias"] == registry.CHAMPION_ALIAS
    again = registry.register_champion(loser, "cpu", run_key="rule", parent_run_id=parent)
    assert again["alias"] == registry.CHALLENGER_ALIAS


def test_dashboard_shows_the_servers_score_under_the_published_rule(tmp_path):
    from foresight_lib.runs.storage import RunStore
    from foresight_lib.serving import dashboard

    board = board_of({"a": [1.0, 2.0, 3.0], "b": [2.5, 1.5, 1.9]}).assign(metric="cpu")
    short = ChampionCriterion.from_setting({"horizon_weights": {"5m": 5}})
    store = RunStore(str(tmp_path / "data"), "r1")
    store.write_frame("leaderboard", board.drop(columns="metric"))
    store.write_json("summary.json", {"run_key": "r1", "metric_leaderboard": board.to_dict(orient="records"),
                                      "criterion": {**short.to_setting(), "label": short.label}})
    store.publish_latest(["leaderboard", "summary.json"])
    data = dashboard.overview(str(tmp_path / "data"))
    assert data["criterion"] == "mean_mase[5m=5]"
    assert [(r["model"], r["champion"]) for r in data["leaderboard"]] == [("a", True), ("b", False)]
    assert data["leaderboard"][0]["score"] == pytest.approx(short.score(board, "a"))
    assert data["leaderboard"][0]["mean_mase"] == pytest.approx(2.0)
    assert [(c["metric"], c["model"]) for c in data["champions"]] == [("cpu", "a")]
    assert data["champions"][0]["score"] == pytest.approx(short.score(board, "a"))
