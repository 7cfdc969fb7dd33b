from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_series
from global_model_support import KEYS, ORIGINS, H, M, actuals, periodic, split

from foresight_lib.errors import ConfigError, SeriesTooShortError
from foresight_lib.forecasting.backtest import BacktestSpec, run_backtest
from foresight_lib.forecasting.models import make_model
from foresight_lib.forecasting.models.base import GlobalForecaster
from foresight_lib.forecasting.models.lightgbm import LightGBM

SMALL = dict(horizon=H, lags=6, short_window=6, lookback_days=2, num_leaves=8, n_estimators=60,
             learning_rate=0.1, min_data_in_leaf=10, n_threads=1)


def stamps(n: int, start: str = "2024-03-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq=pd.Timedelta(days=1) / M, tz="UTC")


@pytest.fixture(scope="module")
def fitted():
    train, test = split(periodic())
    model = LightGBM(**SMALL, seed=1).fit_many(train, M)
    return model, train, test


def test_registry_gives_a_global_model():
    model = make_model("lightgbm", **SMALL)
    assert isinstance(model, GlobalForecaster)
    assert model.get_params()["horizon"] == H and model.get_params()["n_threads"] == 1


def test_shapes_per_horizon_and_ordered_intervals(fitted):
    model, train, test = fitted
    results = model.forecast_origins_many(train, test, ORIGINS, H)
    assert len(results) == len(train)
    for fc in results:
        assert set(fc) == set(KEYS)
        for key in KEYS:
            assert fc[key].shape == (len(ORIGINS), H)
            assert np.isfinite(fc[key]).all()
        assert (fc["lo-95"] <= fc["lo-80"]).all() and (fc["lo-80"] <= fc["mean"]).all()
        assert (fc["mean"] <= fc["hi-80"]).all() and (fc["hi-80"] <= fc["hi-95"]).all()
    act = np.concatenate([actuals(f, ORIGINS) for f in test])
    lo = np.concatenate([fc["lo-95"] for fc in results])
    hi = np.concatenate([fc["hi-95"] for fc in results])
    assert ((act >= lo) & (act <= hi)).mean() > 0.8


def test_beats_naive_at_30_minutes(fitted):
    model, train, test = fitted
    results = model.forecast_origins_many(train, test, ORIGINS, H)
    ours, naive = [], []
    for history, future, fc in zip(train, test, results, strict=True):
        last = np.array([history[-1] if o == 0 else future[o - 1] for o in ORIGINS])
        act = actuals(future, ORIGINS)
        ours.append(np.abs(fc["mean"][:, -1] - act[:, -1]).mean())
        naive.append(np.abs(last - act[:, -1]).mean())
    assert np.mean(ours) < 0.6 * np.mean(naive)


def test_same_seed_gives_identical_forecasts(fitted):
    model, train, test = fitted
    again = LightGBM(**SMALL, seed=1).fit_many(train, M)
    a = model.forecast_origins_many(train, test, ORIGINS, H)
    b = again.forecast_origins_many(train, test, ORIGINS, H)
    for x, y in zip(a, b, strict=True):
        for key in KEYS:
            np.testing.assert_array_equal(x[key], y[key])


def test_pickle_round_trip_gives_identical_forecasts(fitted):
    model, train, test = fitted
    copy = pickle.loads(pickle.dumps(model))
    a = model.forecast_origins_many(train, test, ORIGINS, H)
    b = copy.forecast_origins_many(train, test, ORIGINS, H)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["mean"], y["mean"])


def test_values_after_a_cutoff_never_change_its_forecast(fitted):
    model, train, test = fitted
    base = model.forecast_origins_many(train, test, ORIGINS, H)
    origin_index = 5
    origin = ORIGINS[origin_index]
    poisoned = [f.copy() for f in test]
    for f in poisoned:
        f[origin:] = 1e6  # everything from the cutoff's next step on
    changed = model.forecast_origins_many(train, poisoned, ORIGINS, H)
    for x, y in zip(base, changed, strict=True):
        for key in KEYS:
            np.testing.assert_array_equal(x[key][: origin_index + 1], y[key][: origin_index + 1])
        assert not np.array_equal(x["mean"][origin_index + 1 :], y["mean"][origin_index + 1 :])


def test_constant_and_zero_series_give_finite_forecasts():
    train, test = split(periodic(n_series=2))
    n = train[0].size
    train += [np.full(n, 3.0), np.zeros(n)]
    test += [np.full(2 * M, 3.0), np.zeros(2 * M)]
    model = LightGBM(**SMALL).fit_many(train, M)
    results = model.forecast_origins_many(train, test, ORIGINS, H)
    for fc in results:
        for key in KEYS:
            assert np.isfinite(fc[key]).all()
    np.testing.assert_allclose(results[2]["mean"], 3.0, atol=1e-6)
    np.testing.assert_allclose(results[3]["mean"], 0.0, atol=1e-6)
    assert (results[3]["lo-95"] >= 0).all()  # a usage that never went negative is never forecast so


def test_calendar_features_come_from_timestamps():
    ys = periodic(n_series=3)
    train, test = split(ys)
    ds = [stamps(len(y)) for y in train]
    model = LightGBM(**SMALL).fit_many(train, M, ds=ds)
    assert model.timestamps_
    with_ds = model.forecast_origins_many(train, test, ORIGINS, H, ds=ds)
    shifted = model.forecast_origins_many(train, test, ORIGINS, H, ds=[stamps(len(y), "2024-03-01 06:00")
                                                                          for y in train])
    assert all(np.isfinite(fc["mean"]).all() for fc in with_ds + shifted)
    names = model.feature_names()
    assert {"lag_1", "same_time_1d", "same_time_7d", "time_of_day", "weekday", "mean_day"} <= set(names)
    assert len(names) == model.boosters_[0].num_feature()
    with pytest.raises(ConfigError, match="timestamps"):
        model.fit_many(train, M, ds=[stamps(5)] * len(train))


def test_longer_than_horizon_is_made_block_by_block(fitted):
    model, train, test = fitted
    fc = model.forecast_origins_many(train, test, [0, 6], 2 * H + 1)
    for result in fc:
        assert result["mean"].shape == (2, 2 * H + 1)
        assert (result["hi-95"] - result["lo-95"])[:, -1].min() >= (result["hi-95"] - result["lo-95"])[:, 0].min()
    one = model.predict_from(train[0], H)
    np.testing.assert_array_equal(one["mean"], fc[0]["mean"][0, :H])


def test_bad_settings_and_short_series_are_reported():
    with pytest.raises(ConfigError, match="lags"):
        LightGBM(lags=0)
    with pytest.raises(ConfigError, match="feature_fraction"):
        LightGBM(feature_fraction=1.5)
    with pytest.raises(SeriesTooShortError):
        LightGBM(**SMALL).fit_many([np.arange(10.0)], M)
    with pytest.raises(ConfigError, match="not fitted"):
        LightGBM(**SMALL).forecast_origins_many([np.ones(50)], [np.ones(10)], [0], H)


def test_runs_in_the_backtest_and_enters_the_ensemble():
    df = make_daily_series(days=5, n_series=3, freq="1h")
    params = {"lightgbm": {**SMALL, "min_data_in_leaf": 5}}
    spec = BacktestSpec(models=["naive", "seasonal_naive", "lightgbm", "ensemble"], freq="1h",
                        horizons=["1h", "3h", "6h"], stride="3h", n_jobs=1, model_params=params, keep_models=True)
    result = run_backtest(df, spec)
    assert not [f for f in result.fallbacks if f["model"] == "lightgbm"]
    assert set(result.leaderboard["model"]) == {"naive", "seasonal_naive", "lightgbm", "ensemble"}
    assert isinstance(result.models["lightgbm"], LightGBM)
    ours = result.forecasts[result.forecasts["model"] == "lightgbm"]
    assert len(ours) == 3 * len(spec.origins) * spec.max_steps
    assert (ours["yhat_lo_95"] <= ours["yhat_lo_80"]).all() and (ours["yhat_hi_80"] <= ours["yhat_hi_95"]).all()
    assert any("lightgbm" in w.models for w in result.ensemble_weights.values())
    assert not (result.forecasts[result.forecasts["model"] == "ensemble"]["yhat"]).isna().any()


def test_window_scale_gives_finite_ordered_forecasts_on_a_burst():
    train, test = split(periodic(n_series=3))
    n = train[0].size
    train.append(np.zeros(n))
    test.append(np.zeros(2 * M))
    test[0] = test[0] * 100.0  # far more volatile than anything in its history
    model = LightGBM(**SMALL, window_scale=True).fit_many(train, M)
    for fc in model.forecast_origins_many(train, test, ORIGINS, H):
        for key in KEYS:
            assert np.isfinite(fc[key]).all()
        assert (fc["lo-95"] <= fc["lo-80"]).all() and (fc["lo-80"] <= fc["mean"]).all()
        assert (fc["mean"] <= fc["hi-80"]).all() and (fc["hi-80"] <= fc["hi-95"]).all()


def test_backtest_and_champion_pass_the_series_timestamps(monkeypatch):
    """The calendar features need ``ds``: the runner and the champion must hand it over."""
    from foresight_lib.forecasting.champion import ChampionBundle

    seen: dict[str, list] = {"fit": [], "origins": [], "predict": []}
    fit, origins, predict = LightGBM.fit_many, LightGBM.forecast_origins_many, LightGBM.predict_from

    def fit_many(self, ys, season_length, ds=None):
        seen["fit"].append(ds)
        return fit(self, ys, season_length, ds=ds)

    def forecast_origins_many(self, histories, futures, origins_, h, levels=(80, 95), ds=None):
        seen["origins"].append(ds)
        return origins(self, histories, futures, origins_, h, levels, ds=ds)

    def predict_from(self, y_context, h, levels=(80, 95), ds=None):
        seen["predict"].append(ds)
        return predict(self, y_context, h, levels, ds=ds)

    monkeypatch.setattr(LightGBM, "fit_many", fit_many)
    monkeypatch.setattr(LightGBM, "forecast_origins_many", forecast_origins_many)
    monkeypatch.setattr(LightGBM, "predict_from", predict_from)
    df = make_daily_series(days=5, n_series=2, freq="1h")
    spec = BacktestSpec(models=["lightgbm"], freq="1h", horizons=["1h", "3h"], stride="3h", n_jobs=1,
                        model_params={"lightgbm": {**SMALL, "min_data_in_leaf": 5}}, keep_models=True, future=True)
    result = run_backtest(df, spec)
    assert not result.fallbacks
    model = result.models["lightgbm"]
    assert model.timestamps_  # calendar features were computed, not left missing
    (fit_ds,), (origins_ds,) = seen["fit"], seen["origins"]
    first = df[df["unique_id"] == "cpu_cores/c0"]["ds"]
    for stamps_ in (fit_ds, origins_ds):
        assert stamps_ is not None and len(stamps_) == 2
        assert stamps_[0][0] == first.iloc[0]
        assert stamps_[0][1] - stamps_[0][0] == pd.Timedelta("1h")
    bundle = ChampionBundle.from_result(result, "lightgbm", df)
    uid = "cpu_cores/c0"
    new = pd.DataFrame({"unique_id": uid, "ds": [bundle.last_ds[uid] + pd.Timedelta("1h")], "y": [5.0]})
    bundle.forecast(new, h_steps=3, check_history="off")
    (stamps_,) = seen["predict"]
    assert stamps_ is not None and stamps_[-1] == new["ds"].iloc[0]
    bundle.backtest_on(df, spec)
    assert seen["origins"][-1] is not None


def test_an_isolated_spike_is_not_taken_for_the_new_level():
    """Changes are measured from the median of the last ``anchor_steps`` values, not the last one."""
    rng = np.random.default_rng(0)
    train = periodic(n_series=3)
    n = train[0].size
    spiky = np.zeros(n)
    spiky[rng.choice(n, size=n // 20, replace=False)] = 50.0
    spiky[-1] = 50.0
    model = LightGBM(**SMALL, anchor_steps=6).fit_many([*train, spiky], M)
    mean = model.predict_from(spiky, H)["mean"]
    assert np.isfinite(mean).all() and (mean < 10.0).all()
    with pytest.raises(ConfigError, match="anchor_steps"):
        LightGBM(anchor_steps=0)
    with pytest.raises(ConfigError, match="scale"):
        LightGBM(scale="max")
