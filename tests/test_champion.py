from __future__ import annotations

import logging
import pickle

import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_series

from foresight_lib.errors import ConfigError, DataError
from foresight_lib.forecasting.backtest import BacktestSpec, run_backtest
from foresight_lib.forecasting.champion import ChampionBundle, HistoryMismatchError, mean_mase

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
    with caplog.at_level(logging.WARNING, logger="foresight_lib.forecasting.champion"):
        fc = bundle.forecast(rows, h_steps=2)
    assert (fc["cutoff"] == bundle.last_ds[uid] + 4 * STEP).all()
    assert np.allclose(fc["yhat"], 13.0)
    assert "2 missing point(s)" in caplog.text


@pytest.mark.parametrize("model", MODELS)
def test_unknown_series_is_fitted_fresh(bundles, frame, caplog, model):
    bundle = bundles[model]
    history = series_of(frame, "cpu_cores/c0").tail(2 * 288).assign(unique_id="cpu_cores/new")
    with caplog.at_level(logging.INFO, logger="foresight_lib.forecasting.champion"):
        fc = bundle.forecast(history)
    assert set(fc["unique_id"]) == {"cpu_cores/new"}
    assert (fc["model"] == model).all()
    assert (fc["cutoff"] == history["ds"].max()).all()
    assert_ordered(fc)
    assert "cpu_cores/new is new to the" in caplog.text


def test_unknown_short_series_falls_back(bundles, caplog):
    history = pd.DataFrame({"unique_id": "cpu_cores/tiny", "y": [1.0, 2.0, 3.0, 4.0],
                            "ds": pd.date_range("2024-03-09", periods=4, freq=STEP, tz="UTC")})
    with caplog.at_level(logging.INFO, logger="foresight_lib.forecasting.champion"):
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
    with caplog.at_level(logging.INFO, logger="foresight_lib.forecasting.champion"):
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
    with caplog.at_level(logging.INFO, logger="foresight_lib.forecasting.champion"):
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


# ---------------------------------------------------------------------------
# History unlike the training data


def recent(frame: pd.DataFrame, rows: int = 24) -> pd.DataFrame:
    return frame.groupby("unique_id").tail(rows).reset_index(drop=True)


def newer(bundle: ChampionBundle, frame: pd.DataFrame, scale: float = 1.0, shift: float = 0.0) -> pd.DataFrame:
    """The last two hours of each series, replayed as the next two hours, times ``scale`` plus ``shift``."""
    return pd.concat([new_actuals(bundle, uid, series_of(frame, uid)["y"].tail(24) * scale + shift)
                      for uid in bundle.series], ignore_index=True)


def test_bundle_records_its_metrics_training_scale(bundles, frame):
    profile = bundles["naive"].profiles["cpu_cores"]
    assert profile.unit == "cores"  # from the metric's name
    assert profile.nonnegative and not profile.counter
    assert profile.minimum == pytest.approx(frame["y"].min())
    assert profile.median == pytest.approx(frame["y"].median(), rel=0.05)
    assert profile.high == pytest.approx(frame["y"].abs().quantile(0.99), rel=0.05)
    assert set(profile.series) == {"cpu_cores/c0", "cpu_cores/c1"}
    c1 = series_of(frame, "cpu_cores/c1")["y"]
    assert profile.series["cpu_cores/c1"][0] == pytest.approx(c1.median(), rel=0.05)
    restored = pickle.loads(pickle.dumps(bundles["naive"]))
    assert restored.profiles["cpu_cores"] == profile


@pytest.mark.parametrize("model", MODELS)
def test_own_metrics_history_is_accepted(bundles, frame, model):
    fc = bundles[model].forecast(recent(frame))
    assert len(fc) == 2 * 6 and np.isfinite(fc["yhat"]).all()
    # a series the model never saw, of the same metric and scale, too
    other = series_of(frame, "cpu_cores/c0").tail(2 * 288).assign(unique_id="cpu_cores/web-9", y=lambda f: f["y"] * 3)
    assert len(bundles[model].forecast(other)) == 6


def test_history_a_million_times_larger_is_refused(bundles, frame):
    history = recent(frame).assign(y=lambda f: f["y"] * 1e6)
    with pytest.raises(HistoryMismatchError) as caught:
        bundles["naive"].forecast(history)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, DataError)
    assert "'cpu_cores/c0'" in message and "'cpu_cores/c1'" in message
    assert "cpu_cores (cores), the metric this naive champion was trained for" in message
    assert "99th percentile" in message and "limit 100x" in message
    assert "check_history" in message
    # the factor is configurable: 1e6 times is within a factor of 1e7
    assert len(bundles["naive"].forecast(history, scale_factor=1e7)) == 2 * 6


def test_another_metrics_counter_is_refused(bundles, frame):
    """CPU seconds counted since start (about 1.5e6), given to the CPU-cores model."""
    ds = pd.date_range(frame["ds"].max() - 23 * STEP, periods=24, freq=STEP)
    counter = 1.5e6 + np.cumsum(np.full(24, 300.0))
    history = pd.DataFrame({"unique_id": "container_cpu_usage_seconds_total/web-1", "ds": ds, "y": counter})
    with pytest.raises(HistoryMismatchError, match=r"a series of container_cpu_usage_seconds_total.*cpu_cores") as c:
        bundles["seasonal_naive"].forecast(history)
    assert "like a counter" in str(c.value) and "99th percentile" in str(c.value)  # and far too large
    # a counter at the gauge's own scale is still a counter
    small = history.assign(unique_id="cpu_cores/c0", y=np.linspace(5.0, 7.0, 24))
    with pytest.raises(HistoryMismatchError, match="rises at 100% of its steps like a counter"):
        bundles["naive"].forecast(small)


def test_negative_and_far_too_small_values_are_refused(bundles, frame):
    negative = recent(frame).assign(y=lambda f: f["y"] - 10.0)
    with pytest.raises(HistoryMismatchError, match=r"values go down to -\d.*never negative in training"):
        bundles["naive"].forecast(negative)
    tiny = recent(frame).assign(y=lambda f: f["y"] * 1e-6)  # bytes given as terabytes, say
    with pytest.raises(HistoryMismatchError, match="below the quietest training series' median"):
        bundles["naive"].forecast(tiny)
    idle = newer(bundles["naive"], frame, scale=0.0)  # an idle container is not refused: zero carries no unit
    assert (bundles["naive"].forecast(idle)["yhat"] == 0.0).all()
    quiet = newer(bundles["naive"], frame, scale=1e-3)  # nor one that went quiet, a thousand times below its usual
    assert len(bundles["naive"].forecast(quiet)) == 2 * 6


def test_warn_mode_forecasts_and_logs_what_is_off(bundles, frame, caplog):
    history = newer(bundles["naive"], frame, scale=1e6)
    with caplog.at_level(logging.WARNING, logger="foresight_lib.forecasting.champion"):
        fc = bundles["naive"].forecast(history, check_history="warn")
    assert len(fc) == 2 * 6
    assert fc["yhat"].min() > 1e6  # forecast from the history as given
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and all("Forecasting anyway" in r.getMessage() for r in warned)
    assert "cpu_cores/c0" in warned[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="foresight_lib.forecasting.champion"):
        bundles["naive"].forecast(history, check_history="off")
    assert not caplog.records
    with pytest.raises(ConfigError, match="check_history must be one of"):
        bundles["naive"].forecast(history, check_history="ignore")


def test_forecasts_of_a_non_negative_metric_never_go_below_zero(bundles):
    bundle = bundles["naive"]
    uid = "cpu_cores/c0"
    near_zero = new_actuals(bundle, uid, [0.3, 0.1, 0.0])
    fc = bundle.forecast(near_zero)
    bounds = [c for c in fc.columns if c.startswith("yhat")]
    assert (fc[bounds] >= 0).all().all()
    assert (fc["yhat_lo_95"] == 0.0).any()
    # the same bundle without its training profile (one pickled before profiles existed) is not clipped
    old = pickle.loads(pickle.dumps(bundle))
    old.__dict__.pop("profiles")
    raw = old.forecast(near_zero)
    assert (raw["yhat_lo_95"] < 0).any()
    pd.testing.assert_frame_equal(fc[bounds], raw[bounds].clip(lower=0.0))
    # and, knowing nothing of its training data, checks nothing
    assert len(old.forecast(near_zero.assign(y=lambda f: f["y"] + 1e9))) == 6


# ---------------------------------------------------------------------------
# The pyfunc model refuses what the REST API refuses (one set of checks)


def _refused_histories(bundle: ChampionBundle) -> dict[str, tuple[pd.DataFrame, str]]:
    uid = "cpu_cores/c0"
    rows = new_actuals(bundle, uid, [5.0, 5.1, 5.2, 5.3])
    conflicting = pd.concat([rows, rows.iloc[[1]].assign(y=9.0)], ignore_index=True)
    return {
        "inf": (rows.assign(y=[5.0, np.inf, 5.2, 5.3]), "non-finite values"),
        "nan": (rows.assign(y=[5.0, np.nan, 5.2, 5.3]), "non-finite values"),
        "one row of a new series": (pd.DataFrame({"unique_id": ["cpu_cores/new"], "ds": [rows["ds"].iloc[0]],
                                                  "y": [1.0]}), "too little history for new series"),
        "a point 30 days on": (pd.DataFrame({"unique_id": [uid], "ds": [bundle.last_ds[uid] + pd.Timedelta("30D")],
                                             "y": [5.0]}), "too little history for series"),
        "conflicting duplicates": (conflicting, "duplicate timestamps"),
        "a long gap": (pd.concat([rows.iloc[:2], new_actuals(bundle, uid, [5.0] * 40).iloc[-2:]],
                                 ignore_index=True), "has gaps"),
    }


@pytest.mark.parametrize("case", ["inf", "nan", "one row of a new series", "a point 30 days on",
                                  "conflicting duplicates", "a long gap"])
def test_the_pyfunc_refuses_what_the_rest_api_refuses(bundles, case):
    from foresight_lib.forecasting.champion import HistoryRefused
    from foresight_lib.tracking.registry import ForesightPyfunc

    model = ForesightPyfunc()
    model.bundle = bundles["ensemble"]
    history, words = _refused_histories(model.bundle)[case]
    with pytest.raises(HistoryRefused, match=words):
        model.predict(None, history)


def test_the_pyfunc_takes_a_gap_setting_and_can_refuse_new_series(bundles):
    from foresight_lib.forecasting.champion import HistoryRefused
    from foresight_lib.tracking.registry import ForesightPyfunc

    model = ForesightPyfunc()
    model.bundle = bundles["naive"]
    history, _ = _refused_histories(model.bundle)["a long gap"]
    assert len(model.predict(None, history, params={"max_gap_points": 100})) == model.bundle.max_steps
    new = series_of(make_daily_series(days=2, n_series=1, seed=9), "cpu_cores/c0").assign(unique_id="cpu_cores/n")
    assert set(model.predict(None, new)["unique_id"]) == {"cpu_cores/n"}
    with pytest.raises(HistoryRefused, match="unknown series") as caught:
        model.predict(None, new, params={"allow_new_series": False})
    assert caught.value.status == 404
