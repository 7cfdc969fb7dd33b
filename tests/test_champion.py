from __future__ import annotations

import logging
import pickle

import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_series

from foresight_lib.backtest import BacktestSpec, run_backtest
from foresight_lib.champion import ChampionBundle, mean_mase
from foresight_lib.errors import ConfigError, DataError

MODELS = ["naive", "seasonal_naive", "ensemble"]
STEP = pd.Timedelta("5min")


def make_spec(**kw) -> BacktestSpec:
    base = dict(models=MODELS, n_jobs=1, history_days=3, future=True, keep_models=True)
    base.update(kw)
    return BacktestSpec(**base)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_daily_series(days=5, n_series=2, seed=3)


@pytest.fixture(scope="module")
def result(frame):
    return run_backtest(frame, make_spec())


@pytest.fixture(scope="module")
def bundles(result, frame) -> dict[str, ChampionBundle]:
    return {m: ChampionBundle.from_result(result, m, frame) for m in MODELS}


def series_of(frame: pd.DataFrame, uid: str) -> pd.DataFrame:
    return frame[frame["unique_id"] == uid].reset_index(drop=True)


def new_actuals(bundle: ChampionBundle, uid: str, values) -> pd.DataFrame:
    start = bundle.last_ds[uid] + STEP
    return pd.DataFrame({"unique_id": uid, "ds": pd.date_range(start, periods=len(values), freq=STEP),
                         "y": np.asarray(values, dtype="float64")})


def seen_row(bundle: ChampionBundle, uid: str) -> pd.DataFrame:
    """History that holds nothing newer than what the bundle has seen."""
    return pd.DataFrame({"unique_id": [uid], "ds": [bundle.last_ds[uid]], "y": [0.0]})


def assert_ordered(fc: pd.DataFrame) -> None:
    cols = ["yhat_lo_95", "yhat_lo_80", "yhat", "yhat_hi_80", "yhat_hi_95"]
    values = fc[cols].to_numpy()
    assert np.isfinite(values).all()
    assert (np.diff(values, axis=1) >= -1e-12).all()


def test_bundle_keeps_state_to_the_end_of_the_data(bundles, frame, result):
    bundle = bundles["naive"]
    assert bundle.series == ["cpu_cores/c0", "cpu_cores/c1"]
    assert bundle.last_ds["cpu_cores/c0"] == frame["ds"].max()
    assert bundle.mean_mase == pytest.approx(mean_mase(result.leaderboard, "naive"))
    # with no newer actuals the naive forecast repeats the last value of the data
    last = series_of(frame, "cpu_cores/c0")["y"].iloc[-1]
    fc = bundle.forecast(frame[frame["unique_id"] == "cpu_cores/c0"].tail(5))
    assert list(fc["step"]) == [1, 2, 3, 4, 5, 6]
    assert (fc["cutoff"] == frame["ds"].max()).all()
    assert (fc["ds"] == fc["cutoff"] + fc["step"] * STEP).all()
    assert np.allclose(fc["yhat"], last)
    # the live forecast of the backtest is what the bundle gives from the same data
    live = result.future_forecasts
    live = live[(live["model"] == "naive") & (live["unique_id"] == "cpu_cores/c0")]
    assert np.allclose(live["yhat"].to_numpy(), fc["yhat"].to_numpy())


def test_forecast_conditions_on_new_actuals_without_changing_the_bundle(bundles):
    bundle = bundles["naive"]
    uid = "cpu_cores/c1"
    before = bundle.forecast(seen_row(bundle, uid))
    shifted = new_actuals(bundle, uid, [50.0, 51.0, 52.0])
    after = bundle.forecast(shifted, horizons="15m")
    assert len(after) == 3
    assert np.allclose(after["yhat"], 52.0)
    assert (after["cutoff"] == shifted["ds"].max()).all()
    assert after["yhat"].iloc[0] > before["yhat"].iloc[0] + 30
    # a copy was conditioned: the bundle still starts from its own last value
    again = bundle.forecast(seen_row(bundle, uid))
    assert np.allclose(again["yhat"], before["yhat"])


def test_update_state_keeps_the_conditioning(frame, result):
    bundle = ChampionBundle.from_result(result, "seasonal_naive", frame)
    uid = "cpu_cores/c0"
    last = bundle.last_ds[uid]
    bundle.forecast(new_actuals(bundle, uid, [100.0] * 6), h_steps=1, update_state=True)
    assert bundle.last_ds[uid] == last + 6 * STEP
    # one season later the seasonal naive repeats the new values
    fc = bundle.forecast(seen_row(bundle, uid), h_steps=bundle.season_length)
    assert np.allclose(fc["yhat"].iloc[-6:], 100.0)


def test_gaps_in_new_actuals_are_interpolated(bundles, caplog):
    bundle = bundles["naive"]
    uid = "cpu_cores/c0"
    rows = new_actuals(bundle, uid, [10.0, 11.0, 12.0, 13.0]).drop(index=[1, 2])
    with caplog.at_level(logging.WARNING, logger="foresight_lib.champion"):
        fc = bundle.forecast(rows, h_steps=2)
    assert (fc["cutoff"] == bundle.last_ds[uid] + 4 * STEP).all()
    assert np.allclose(fc["yhat"], 13.0)
    assert "2 missing point(s)" in caplog.text


@pytest.mark.parametrize("model", MODELS)
def test_unknown_series_is_fitted_fresh(bundles, frame, caplog, model):
    bundle = bundles[model]
    history = series_of(frame, "cpu_cores/c0").tail(2 * 288).assign(unique_id="cpu_cores/new")
    with caplog.at_level(logging.INFO, logger="foresight_lib.champion"):
        fc = bundle.forecast(history)
    assert set(fc["unique_id"]) == {"cpu_cores/new"}
    assert (fc["model"] == model).all()
    assert (fc["cutoff"] == history["ds"].max()).all()
    assert_ordered(fc)
    assert "cpu_cores/new is new to the" in caplog.text


def test_unknown_short_series_falls_back(bundles, caplog):
    history = pd.DataFrame({"unique_id": "cpu_cores/tiny", "y": [1.0, 2.0, 3.0, 4.0],
                            "ds": pd.date_range("2024-03-09", periods=4, freq=STEP, tz="UTC")})
    with caplog.at_level(logging.INFO, logger="foresight_lib.champion"):
        fc = bundles["seasonal_naive"].forecast(history, h_steps=2)
    assert np.allclose(fc["yhat"], 4.0)  # the naive fallback repeats the last value
    assert "fitted naive on its 4 values" in caplog.text


@pytest.mark.parametrize("model", MODELS)
def test_intervals_are_nested_and_pickle_round_trips(bundles, frame, model):
    bundle = bundles[model]
    history = frame.groupby("unique_id").tail(12)
    fc = bundle.forecast(history)
    assert_ordered(fc)
    assert len(fc) == 2 * 6
    restored = pickle.loads(pickle.dumps(bundle))
    assert restored._eval_frame is None
    pd.testing.assert_frame_equal(restored.forecast(history), fc)


def test_ensemble_refuses_steps_it_was_not_weighted_for(bundles, frame):
    with pytest.raises(ConfigError, match="weighted for up to 6 steps"):
        bundles["ensemble"].forecast(frame.tail(3), horizons="1h")


def test_from_result_needs_kept_models(frame):
    plain = run_backtest(frame, make_spec(models=["naive"], keep_models=False))
    with pytest.raises(ConfigError, match="keep_models=True"):
        ChampionBundle.from_result(plain, "naive", frame)
    with pytest.raises(DataError, match="no actuals"):
        ChampionBundle.from_result(run_backtest(frame, make_spec(models=["naive"])), "naive", frame).forecast(
            frame.head(0))


@pytest.mark.parametrize("model", MODELS)
def test_older_champion_is_scored_on_the_newer_held_out_day_without_refit(frame, model, caplog):
    older = frame[frame["ds"] < frame["ds"].max() - pd.Timedelta("1D") + STEP]
    old_result = run_backtest(older, make_spec())
    champion = ChampionBundle.from_result(old_result, model, older)
    new_result = run_backtest(frame, make_spec())
    with caplog.at_level(logging.INFO, logger="foresight_lib.champion"):
        score = champion.score_on(frame, new_result.spec)
    assert "afresh" not in caplog.text
    assert np.isfinite(score)
    if model != "ensemble":
        # conditioning the old naive models on the new actuals gives exactly the new models' forecasts
        assert score == pytest.approx(mean_mase(new_result.leaderboard, model))
    forecasts = champion.backtest_on(frame, new_result.spec)
    new_fc = new_result.forecasts[new_result.forecasts["model"] == model]
    assert len(forecasts) == len(new_fc)
    assert (forecasts["cutoff"].to_numpy() == new_fc["cutoff"].to_numpy()).all()


def test_champion_that_saw_the_held_out_day_is_refitted(bundles, result, frame, caplog):
    with caplog.at_level(logging.INFO, logger="foresight_lib.champion"):
        score = bundles["seasonal_naive"].score_on(frame, result.spec)
    assert "fitted afresh" in caplog.text
    assert score == pytest.approx(mean_mase(result.leaderboard, "seasonal_naive"))
    # the ensemble keeps its validation-day weights, so it scores like the backtest did
    assert bundles["ensemble"].score_on(frame, result.spec) == pytest.approx(
        mean_mase(result.leaderboard, "ensemble"))


def test_score_on_other_frequency_is_refused(bundles):
    hourly = make_daily_series(days=5, n_series=1, freq="1h")
    spec = BacktestSpec(models=["naive"], freq="1h", horizons=["1h"], stride="1h", history_days=3, n_jobs=1)
    with pytest.raises(ConfigError, match="cannot be compared"):
        bundles["naive"].score_on(hourly, spec)
