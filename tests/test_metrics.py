from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from foresight_lib import metrics


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
    assert board["model"].iloc[0] == "good"
    assert list(board["horizon"][:2]) == ["5m", "15m"]
    assert metrics.champion(board) == "good"
