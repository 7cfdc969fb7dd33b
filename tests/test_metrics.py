from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from foresight_lib.errors import DataError
from foresight_lib.forecasting import metrics


def test_point_metrics_match_hand_computed_values():
    y = np.array([1.0, 2.0, 4.0, 0.0])
    yhat = np.array([2.0, 2.0, 1.0, 0.0])
    assert metrics.mae(y, yhat) == pytest.approx((1 + 0 + 3 + 0) / 4)
    assert metrics.rmse(y, yhat) == pytest.approx(np.sqrt((1 + 0 + 9 + 0) / 4))
    # sMAPE: 2|e|/(|y|+|yhat|): 2/3, 0, 6/5, and 0 for the point where both are zero
    assert metrics.smape(y, yhat) == pytest.approx(100 * (2 / 3 + 0 + 6 / 5 + 0) / 4)
    assert metrics.mase(y, yhat, scale=2.0) == pytest.approx(1.0 / 2.0)


def test_interval_metrics():
    y = np.array([1.0, 5.0, 3.0, 10.0])
    lo = np.array([0.0, 0.0, 3.0, 0.0])
    hi = np.array([2.0, 4.0, 4.0, 9.0])
    assert metrics.coverage(y, lo, hi) == pytest.approx(0.5)  # 1 and 3 inside (bounds inclusive)
    assert metrics.width(lo, hi) == pytest.approx((2 + 4 + 1 + 9) / 4)


def test_seasonal_naive_scale_uses_one_season_lag():
    season = 4
    y = np.array([0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5], dtype=float)  # each season is +1
    assert metrics.seasonal_naive_scale(y, season) == pytest.approx(1.0)


def test_seasonal_naive_scale_flat_series_stays_positive():
    assert metrics.seasonal_naive_scale(np.ones(20), 4) > 0


def test_evaluate_scores_only_the_horizon_step_and_leaderboard_ranks_by_mase():
    rows = []
    for model, err in (("good", 1.0), ("bad", 3.0)):
        for cutoff in range(2):
            for step in (1, 2, 3):
                rows.append({"unique_id": "cpu/a", "cutoff": cutoff, "step": step, "model": model,
                             "y": 10.0, "yhat": 10.0 + err * step,
                             "yhat_lo_80": 10.5, "yhat_hi_80": 11.0, "yhat_lo_95": 8.0, "yhat_hi_95": 20.0})
    frame = pd.DataFrame(rows)
    per_series = metrics.evaluate(frame, {"cpu/a": 2.0}, {"5m": 1, "15m": 3})
    good_15 = per_series.query("model == 'good' and horizon == '15m'").iloc[0]
    assert good_15["mae"] == pytest.approx(3.0)  # step 3 only: error 1 * 3
    assert good_15["mase"] == pytest.approx(1.5)
    assert good_15["coverage_80"] == 0.0 and good_15["coverage_95"] == 1.0
    board = metrics.leaderboard(per_series, ["5m", "15m"])
    assert list(board.columns) == metrics.LEADERBOARD_COLUMNS
    assert {"mase", "wql", "coverage_80", "coverage_95"} <= set(board.columns)
    assert board["model"].iloc[0] == "good"
    assert list(board["horizon"][:2]) == ["5m", "15m"]
    assert metrics.champion(board) == "good"


def test_seasonal_naive_scale_flat_series_stays_positive_for_model_scaling():
    # the unguarded scale models normalise by (the LSTM) never divides by zero
    assert metrics.seasonal_naive_scale(np.zeros(20), 4) > 0


def test_mase_scale_is_the_seasonal_naive_mae_for_a_regular_series():
    rng = np.random.default_rng(1)
    y = 10 + np.tile(np.arange(4.0), 5) + rng.normal(0, 0.1, 20)
    scale = metrics.mase_scale(y, 4)
    assert scale.note is None and scale.scorable
    assert scale.value == pytest.approx(np.mean(np.abs(y[4:] - y[:-4])))


@pytest.mark.parametrize(("values", "words"), [
    (np.zeros(40), "constant training part (every value 0)"),
    (np.full(40, 7.5), "constant training part (every value 7.5)"),
    (np.r_[np.ones(39), np.inf], "1 non-finite training value(s)"),
    (np.r_[np.ones(39), np.nan], "1 non-finite training value(s)"),
    (np.ones(1), "1 training value(s)"),
])
def test_mase_scale_refuses_series_it_cannot_score(values, words):
    scale = metrics.mase_scale(values, 4)
    assert not scale.scorable and np.isnan(scale.value)
    assert words in scale.note and "not scored" in scale.note


def test_mase_scale_floors_a_near_constant_series_at_its_level():
    level = 2e9  # memory in bytes that moved by one byte once: seasonal-naive MAE ~ 1e-2
    y = np.full(40, level)
    y[20:] += 1.0
    scale = metrics.mase_scale(y, 4)
    floor = metrics.MASE_MIN_RELATIVE_SCALE * level
    assert scale.scorable and scale.value == pytest.approx(floor, rel=1e-6)
    assert "below 1e-06 x the mean level" in scale.note
    # an exactly periodic series has a zero seasonal-naive MAE: the lag-1 MAE stands in
    periodic = np.tile([1.0, 3.0], 20)
    scale = metrics.mase_scale(periodic, 2)
    assert scale.value == pytest.approx(2.0) and "lag-1" in scale.note


def test_evaluate_leaves_out_unscorable_series_and_every_score_is_finite():
    rows = []
    for uid, actual in (("cpu/a", 10.0), ("cpu/zero", 0.0)):
        for model, err in (("good", 1.0), ("bad", 3.0)):
            for cutoff in range(3):
                rows.append({"unique_id": uid, "cutoff": cutoff, "step": 1, "model": model, "y": actual,
                             "yhat": actual + (err if uid == "cpu/a" else 0.0),
                             "yhat_lo_80": 0.0, "yhat_hi_80": 20.0, "yhat_lo_95": 0.0, "yhat_hi_95": 20.0})
    frame = pd.DataFrame(rows)
    scales, notes = metrics.mase_scales({"cpu/a": np.arange(10.0), "cpu/zero": np.zeros(10)}, 4)
    assert set(notes) == {"cpu/zero"}
    per_series = metrics.evaluate(frame, scales, {"5m": 1})
    assert set(per_series["unique_id"]) == {"cpu/a"}  # the all-zero series would score MASE 0 for both
    assert np.isfinite(per_series[["mae", "rmse", "smape", "mase"]].to_numpy()).all()
    board = metrics.leaderboard(per_series, ["5m"]).set_index("model")
    assert board.loc["good", "mase"] == pytest.approx(1.0 / 4.0)  # lag-4 MAE of 0..9 is 4
    assert board.loc["bad", "mase"] == pytest.approx(3.0 / 4.0)
    empty = metrics.evaluate(frame, {"cpu/a": float("nan"), "cpu/zero": 0.0}, {"5m": 1})
    assert empty.empty and "mase" in empty.columns


def test_champion_without_any_finite_score_is_a_clear_error():
    board = pd.DataFrame({"model": ["a", "b"], "horizon": ["5m", "5m"], "mase": [np.nan, np.nan]})
    with pytest.raises(DataError, match="no model has a finite mean MASE"):
        metrics.champion(board)
    board.loc[1, "mase"] = 0.7
    assert metrics.champion(board) == "b"


def test_quantile_columns_are_the_median_and_the_interval_bounds():
    assert metrics.quantile_columns((80, 95)) == {"yhat": 0.5, "yhat_lo_80": 0.1, "yhat_hi_80": 0.9,
                                                  "yhat_lo_95": 0.025, "yhat_hi_95": 0.975}


def test_pinball_and_wql_match_hand_computed_values():
    y = np.array([2.0, 4.0])
    assert metrics.pinball(y, np.array([3.0, 3.0]), 0.5) == pytest.approx([0.5, 0.5])
    assert metrics.pinball(y, np.array([1.0, 1.0]), 0.1) == pytest.approx([0.1, 0.3])  # under: q x (y - yhat)
    assert metrics.pinball(y, np.array([5.0, 5.0]), 0.9) == pytest.approx([0.3, 0.1])  # over: (1 - q) x (yhat - y)
    # one quantile: 2 x sum(pinball) / sum(|y|) = 2 x 1.0 / 6
    assert metrics.wql(y, {0.5: np.array([3.0, 3.0])}) == pytest.approx(1 / 3)
    bands = {0.5: [3.0, 3.0], 0.1: [1.0, 1.0], 0.9: [5.0, 5.0], 0.025: [0.0, 0.0], 0.975: [6.0, 6.0]}
    # pinball sums per quantile 1.0, 0.4, 0.4, 0.15, 0.15; each x 2 / 6, then the mean over the five
    expected = (2 * (1.0 + 0.4 + 0.4 + 0.15 + 0.15) / 6) / 5
    assert metrics.wql(y, {q: np.array(v) for q, v in bands.items()}) == pytest.approx(expected)
    assert expected == pytest.approx(0.14)
    # a perfect forecast of every quantile loses nothing; the sign of y does not matter (|y|)
    assert metrics.wql(y, {q: y for q in bands}) == 0.0
    assert metrics.wql(-y, {0.5: -np.array([3.0, 3.0])}) == pytest.approx(1 / 3)


@pytest.mark.parametrize("y", [np.zeros(3), np.array([1.0, np.inf, 2.0]), np.array([1.0, np.nan, 2.0])])
def test_wql_is_nan_where_sum_of_abs_y_is_zero_or_not_finite(y):
    assert np.isnan(metrics.wql(y, {0.5: np.ones(3)}))


def test_wql_is_nan_without_finite_quantiles():
    assert np.isnan(metrics.wql(np.ones(3), {0.5: np.ones(3), 0.9: np.array([1.0, np.nan, 1.0])}))
    assert np.isnan(metrics.wql(np.ones(3), {}))


def _frame_with_bands(models: dict[str, float], actuals: dict[str, float], cutoffs: int = 3) -> pd.DataFrame:
    """One step; yhat = actual + error, 80 % band ±1 and 95 % band ±2 around yhat."""
    rows = []
    for uid, actual in actuals.items():
        for model, err in models.items():
            for cutoff in range(cutoffs):
                yhat = actual + err
                rows.append({"unique_id": uid, "cutoff": cutoff, "step": 1, "model": model, "y": actual,
                             "yhat": yhat, "yhat_lo_80": yhat - 1, "yhat_hi_80": yhat + 1,
                             "yhat_lo_95": yhat - 2, "yhat_hi_95": yhat + 2})
    return pd.DataFrame(rows)


def test_evaluate_scores_wql_over_the_median_and_both_bands():
    frame = _frame_with_bands({"exact": 0.0, "off": 3.0}, {"cpu/a": 10.0})
    per_series = metrics.evaluate(frame, {"cpu/a": 1.0}, {"5m": 1})
    by_model = per_series.set_index("model")["wql"]
    y = np.full(3, 10.0)
    for model, err in (("exact", 0.0), ("off", 3.0)):
        yhat = y + err
        quantiles = {0.5: yhat, 0.1: yhat - 1, 0.9: yhat + 1, 0.025: yhat - 2, 0.975: yhat + 2}
        assert by_model[model] == pytest.approx(metrics.wql(y, quantiles))
    # exact median, bands at ±1 and ±2: only the bounds lose, q x distance each
    assert by_model["exact"] == pytest.approx(2 * (0.1 * 1 + 0.1 * 1 + 0.025 * 2 + 0.025 * 2) / 10 / 5)
    board = metrics.leaderboard(per_series, ["5m"]).set_index("model")
    assert board.loc["exact", "wql"] == pytest.approx(by_model["exact"])
    assert metrics.wql_left_out(per_series) == []


def test_a_series_whose_actuals_are_zero_is_not_scored_for_wql_but_stays_for_mase():
    frame = _frame_with_bands({"good": 1.0, "bad": 3.0}, {"cpu/a": 10.0, "cpu/idle": 0.0})
    per_series = metrics.evaluate(frame, {"cpu/a": 2.0, "cpu/idle": 2.0}, {"5m": 1})
    idle = per_series[per_series["unique_id"] == "cpu/idle"]
    assert idle["wql"].isna().all() and np.isfinite(idle["mase"]).all()
    board = metrics.leaderboard(per_series, ["5m"]).set_index("model")
    scored = per_series[per_series["unique_id"] == "cpu/a"].set_index("model")
    assert board.loc["good", "wql"] == pytest.approx(scored.loc["good", "wql"])  # the mean leaves it out
    assert board.loc["good", "mase"] == pytest.approx(per_series.query("model == 'good'")["mase"].mean())
    assert metrics.wql_left_out(per_series) == [
        {"unique_id": "cpu/idle", "horizon": "5m",
         "reason": "sum of |y| over the scored points is 0 or not finite: wql not scored"}]


def test_a_model_without_finite_bands_gets_no_wql_and_keeps_its_mase_rank(caplog):
    frame = _frame_with_bands({"good": 1.0, "pointonly": 0.5}, {"cpu/a": 10.0, "cpu/b": 20.0})
    point_only = frame["model"] == "pointonly"
    frame.loc[point_only & (frame["unique_id"] == "cpu/b"), ["yhat_lo_95", "yhat_hi_95"]] = np.nan
    with caplog.at_level("WARNING", logger="foresight_lib.forecasting.metrics"):
        per_series = metrics.evaluate(frame, {"cpu/a": 1.0, "cpu/b": 1.0}, {"5m": 1})
    assert "model pointonly: quantile bands not finite on 3 of 6 scored forecasts" in caplog.text
    # not finite on one series: no wql on any, so that it is never compared on other series than the rest
    assert per_series.loc[per_series["model"] == "pointonly", "wql"].isna().all()
    assert np.isfinite(per_series.loc[per_series["model"] == "good", "wql"]).all()
    board = metrics.leaderboard(per_series, ["5m"])
    assert board["model"].iloc[0] == "pointonly" and metrics.champion(board) == "pointonly"  # MASE still ranks
    assert np.isnan(board.set_index("model").loc["pointonly", "wql"])
    [row] = metrics.wql_left_out(per_series)
    assert row["model"] == "pointonly" and "no finite quantile bands" in row["reason"]


def test_a_leaderboard_of_scores_made_before_wql_has_it_as_nan():
    frame = _frame_with_bands({"good": 1.0}, {"cpu/a": 10.0})
    old = metrics.evaluate(frame, {"cpu/a": 1.0}, {"5m": 1}).drop(columns="wql")
    board = metrics.leaderboard(old, ["5m"])
    assert list(board.columns) == metrics.LEADERBOARD_COLUMNS and board["wql"].isna().all()
    assert metrics.wql_left_out(old) == []


def test_wql_is_pooled_over_metrics_like_mase():
    board = pd.DataFrame({c: [0.5] for c in metrics.LEADERBOARD_COLUMNS}).assign(model="m", horizon="5m")
    pooled = metrics.pooled_leaderboard(board, metrics=2)
    assert {"mase", "smape", "wql", "coverage_80", "coverage_95"} <= set(pooled.columns)
    assert not {"mae", "rmse", "width_80", "width_95"} & set(pooled.columns)
