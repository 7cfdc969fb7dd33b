from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_series

from foresight_lib import models
from foresight_lib.backtest import BacktestSpec, backtest_part, finish_backtest, run_backtest
from foresight_lib.errors import ConfigError, DataError, HorizonError


@pytest.fixture
def fake_models(monkeypatch):
    monkeypatch.setitem(models.MODEL_PATHS, "constant", "fake_models:ConstantForecaster")
    monkeypatch.setitem(models.MODEL_PATHS, "failing", "fake_models:FailingForecaster")
    monkeypatch.setattr(models, "ALL_MODELS", [*models.MODEL_PATHS, models.ENSEMBLE])


def spec(**kw):
    base = dict(models=["naive", "seasonal_naive"], n_jobs=1)
    base.update(kw)
    return BacktestSpec(**base)


def test_protocol_cutoffs_steps_and_actuals(daily_series):
    result = run_backtest(daily_series, spec())
    fc = result.forecasts
    one = fc[(fc.unique_id == "cpu_cores/c0") & (fc.model == "naive")]
    # one held-out day at 5 min, a cutoff every 30 min, 30m = 6 steps: 48 cutoffs x 6 steps
    assert one["cutoff"].nunique() == 48
    assert len(one) == 48 * 6
    series = daily_series[daily_series.unique_id == "cpu_cores/c0"].set_index("ds")["y"]
    held_out_start = series.index[-288]
    assert one["cutoff"].min() == held_out_start - pd.Timedelta("5min")
    assert (one["ds"] == one["cutoff"] + one["step"] * pd.Timedelta("5min")).all()
    assert np.allclose(one["y"].to_numpy(), series.loc[one["ds"]].to_numpy())
    # naive repeats the last actual known at the cutoff
    assert np.allclose(one["yhat"].to_numpy(), series.loc[one["cutoff"]].to_numpy())
    assert set(result.leaderboard["horizon"]) == {"5m", "15m", "30m"}
    assert result.champion == "seasonal_naive"


def test_history_is_limited_to_history_days(daily_series):
    result = run_backtest(daily_series, spec(history_days=3, keep_models=True))
    model = result.models[("seasonal_naive", "cpu_cores/c0")]
    assert model.season_length_ == 288


def test_poisoned_future_does_not_change_earlier_forecasts(daily_series):
    clean = run_backtest(daily_series, spec(models=["naive", "seasonal_naive", "ensemble"])).forecasts
    poisoned_frame = daily_series.copy()
    poison_at = poisoned_frame["ds"].max() - pd.Timedelta("6h")
    poisoned_frame.loc[poisoned_frame["ds"] >= poison_at, "y"] = 1e6
    poisoned = run_backtest(poisoned_frame, spec(models=["naive", "seasonal_naive", "ensemble"])).forecasts
    before = clean["cutoff"] < poison_at
    cols = ["yhat", "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]
    assert np.allclose(clean.loc[before, cols].to_numpy(), poisoned.loc[before, cols].to_numpy())
    assert not np.allclose(clean.loc[~before, "yhat"].to_numpy(), poisoned.loc[~before, "yhat"].to_numpy())


def test_failing_model_falls_back_and_is_reported(fake_models, daily_series):
    result = run_backtest(daily_series, spec(models=["failing", "seasonal_naive"]))
    assert len(result.fallbacks) == 3
    assert {f["model"] for f in result.fallbacks} == {"failing"}
    assert "cannot fit this series" in result.fallbacks[0]["error"]
    fc = result.forecasts
    # the fallback is the seasonal naive, so the failed model's forecasts equal it
    failing = fc[fc.model == "failing"]["yhat"].to_numpy()
    fallback = fc[fc.model == "seasonal_naive"]["yhat"].to_numpy()
    assert np.allclose(failing, fallback)
    assert result.report()["fallback_counts"] == {"failing": 3}


def test_ensemble_weights_and_forecast(fake_models, daily_series):
    result = run_backtest(daily_series, spec(models=["constant", "naive", "seasonal_naive", "ensemble"]))
    weights = result.ensemble_weights["cpu_cores/c1"]
    assert np.allclose(weights.weights.sum(axis=1), 1.0)
    fc = result.forecasts.set_index(["unique_id", "cutoff", "step", "model"])["yhat"].unstack("model")
    lo = fc[["constant", "naive", "seasonal_naive"]].min(axis=1)
    hi = fc[["constant", "naive", "seasonal_naive"]].max(axis=1)
    assert ((fc["ensemble"] >= lo - 1e-9) & (fc["ensemble"] <= hi + 1e-9)).all()
    board = result.leaderboard.groupby("model")["mase"].mean()
    assert board["ensemble"] <= board["constant"]
    # conformal intervals from the validation day cover roughly their level
    ens = result.leaderboard[result.leaderboard.model == "ensemble"]
    assert (ens["coverage_95"] > 0.8).all()


def test_parts_merge_like_one_run(daily_series):
    s = spec(models=["naive", "seasonal_naive", "ensemble"])
    whole = run_backtest(daily_series, s)
    parts = [backtest_part(daily_series, s, ["naive"]), backtest_part(daily_series, s, ["seasonal_naive"])]
    merged = finish_backtest(parts, s)
    pd.testing.assert_frame_equal(whole.leaderboard, merged.leaderboard)
    with pytest.raises(ConfigError, match="no forecasts for model"):
        finish_backtest(parts[:1], s)


def test_parallel_equals_serial(daily_series):
    serial = run_backtest(daily_series, spec(n_jobs=1)).forecasts
    parallel = run_backtest(daily_series, spec(n_jobs=2)).forecasts
    pd.testing.assert_frame_equal(serial, parallel)


def test_future_forecast_starts_after_the_data(daily_series):
    result = run_backtest(daily_series, spec(future=True))
    future = result.future_forecasts
    assert (future["cutoff"] == daily_series["ds"].max()).all()
    assert future["step"].max() == 6
    assert "y" not in future.columns


def test_short_and_irregular_series_are_skipped_with_reasons(daily_series):
    short = make_daily_series(days=2, n_series=1).assign(unique_id="cpu_cores/short")
    gappy = make_daily_series(days=16, n_series=1).assign(unique_id="cpu_cores/gappy").drop(index=[100, 101])
    frame = pd.concat([daily_series, short, gappy], ignore_index=True)
    result = run_backtest(frame, spec())
    reasons = {s["unique_id"]: s["reason"] for s in result.skipped}
    assert "too short" in reasons["cpu_cores/short"]
    assert "regular 5min grid" in reasons["cpu_cores/gappy"]
    assert len(result.series) == 3
    with pytest.raises(DataError, match="no series can be backtested"):
        run_backtest(short, spec())


def test_bad_specs_are_clear_errors():
    with pytest.raises(HorizonError, match="whole number"):
        spec(horizons=["7m"])
    with pytest.raises(ConfigError, match="unknown model"):
        spec(models=["oracle"])
    with pytest.raises(ConfigError, match="longer than the held-out part"):
        spec(horizons=["2d"])
