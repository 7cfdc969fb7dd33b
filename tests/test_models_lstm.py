from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import make_daily_series
from global_model_support import KEYS, ORIGINS, H, M, actuals, periodic, split

from foresight_lib.errors import ConfigError, SeriesTooShortError
from foresight_lib.forecasting.backtest import BacktestSpec, run_backtest
from foresight_lib.forecasting.models import make_model
from foresight_lib.forecasting.models.base import GlobalForecaster
from foresight_lib.forecasting.models.lstm import LSTM

SMALL = dict(horizon=H, input_steps=12, lookback_days=2, hidden_size=16, head_size=16, windows_per_epoch=1024,
             batch_size=256, max_epochs=6, learning_rate=1e-2, n_threads=1, device="cpu")


@pytest.fixture(scope="module")
def fitted():
    ys = periodic()
    train, test = split(ys)
    model = LSTM(**SMALL, seed=1).fit_many(train, M)
    return model, train, test


def test_registry_gives_a_global_model():
    model = make_model("lstm", **SMALL)
    assert isinstance(model, GlobalForecaster)
    assert model.get_params()["horizon"] == H


def test_beats_naive_at_30_minutes(fitted):
    model, train, test = fitted
    results = model.forecast_origins_many(train, test, ORIGINS, H)
    lstm_err, naive_err = [], []
    for history, future, fc in zip(train, test, results, strict=True):
        assert fc["mean"].shape == (len(ORIGINS), H)
        last = np.array([history[-1] if o == 0 else future[o - 1] for o in ORIGINS])
        act = actuals(future, ORIGINS)
        lstm_err.append(np.abs(fc["mean"][:, -1] - act[:, -1]).mean())
        naive_err.append(np.abs(last - act[:, -1]).mean())
    assert np.mean(lstm_err) < 0.6 * np.mean(naive_err)


def test_intervals_are_ordered_and_cover(fitted):
    model, train, test = fitted
    results = model.forecast_origins_many(train, test, ORIGINS, H, levels=(50, 80, 95))
    for fc in results:
        for key in KEYS:
            assert np.isfinite(fc[key]).all()
        assert (fc["lo-95"] <= fc["lo-80"]).all() and (fc["lo-80"] <= fc["lo-50"]).all()
        assert (fc["lo-50"] <= fc["mean"]).all() and (fc["mean"] <= fc["hi-50"]).all()
        assert (fc["hi-50"] <= fc["hi-80"]).all() and (fc["hi-80"] <= fc["hi-95"]).all()
    act = np.concatenate([actuals(f, ORIGINS) for f in test])
    lo = np.concatenate([fc["lo-95"] for fc in results])
    hi = np.concatenate([fc["hi-95"] for fc in results])
    assert ((act >= lo) & (act <= hi)).mean() > 0.8


def test_same_seed_gives_identical_forecasts(fitted):
    model, train, test = fitted
    again = LSTM(**SMALL, seed=1).fit_many(train, M)
    first = model.forecast_origins_many(train, test, ORIGINS, H)
    second = again.forecast_origins_many(train, test, ORIGINS, H)
    for a, b in zip(first, second, strict=True):
        for key in KEYS:
            np.testing.assert_array_equal(a[key], b[key])
    other = LSTM(**SMALL, seed=2).fit_many(train, M).forecast_origins_many(train, test, ORIGINS, H)
    assert not np.array_equal(first[0]["mean"], other[0]["mean"])


def test_pickle_round_trip_gives_identical_forecasts(fitted):
    model, train, test = fitted
    restored = pickle.loads(pickle.dumps(model))
    assert restored._net is None  # rebuilt lazily from the stored weights
    before = model.forecast_origins_many(train, test, ORIGINS, H)
    after = restored.forecast_origins_many(train, test, ORIGINS, H)
    for a, b in zip(before, after, strict=True):
        for key in KEYS:
            np.testing.assert_array_equal(a[key], b[key])


def test_forecasts_made_a_few_series_per_pass_equal_those_made_at_once(fitted, monkeypatch):
    """Forecasting cuts the windows into passes to bound memory; no forecast depends on the cut."""
    from foresight_lib.forecasting.models import lstm

    model, train, test = fitted
    at_once = model.forecast_origins_many(train, test, ORIGINS, H)
    monkeypatch.setattr(lstm, "PREDICT_WINDOWS", len(ORIGINS))  # one series per pass
    by_series = model.forecast_origins_many(train, test, ORIGINS, H)
    assert len(by_series) == len(at_once) == len(train)
    for a, b in zip(at_once, by_series, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-6, atol=1e-9)


def test_poisoned_future_after_an_origin_changes_nothing_before_it(fitted):
    model, train, test = fitted
    origin = 12
    clean = model.forecast_origins_many(train, test, [0, 6, origin], H)
    poisoned_test = [f.copy() for f in test]
    for f in poisoned_test:
        f[origin:] = 1e6
    poisoned = model.forecast_origins_many(train, poisoned_test, [0, 6, origin], H)
    for a, b in zip(clean, poisoned, strict=True):
        for key in KEYS:
            np.testing.assert_array_equal(a[key], b[key])


def test_predict_from_matches_the_origin_forecast(fitted):
    model, train, test = fitted
    context = np.concatenate([train[0], test[0][:12]])
    live = model.predict_from(context, H)
    batch = model.forecast_origins_many([train[0]], [test[0]], [12], H)[0]
    assert live["mean"].shape == (H,)
    # the scale comes from the context's history, which now includes 12 more values
    np.testing.assert_allclose(live["mean"], batch["mean"][0], rtol=0.05, atol=0.5)


def test_longer_than_horizon_is_made_block_by_block(fitted):
    model, train, test = fitted
    fc = model.forecast_origins_many(train, test, [0, 6], 2 * H + 3)
    for f in fc:
        assert f["mean"].shape == (2, 2 * H + 3)
        assert np.isfinite(f["hi-95"]).all()
        width = f["hi-95"] - f["lo-95"]
        assert width[:, -1].mean() >= width[:, 0].mean()
    direct = model.forecast_origins_many(train, test, [0, 6], H)
    np.testing.assert_allclose(fc[0]["mean"][:, :H], direct[0]["mean"])


def test_early_stopping_stops_on_an_easy_problem(caplog):
    train, _ = split(periodic(n_series=3, days=10, noise=0.05, seed=3))
    with caplog.at_level("INFO", logger="foresight_lib"):
        model = LSTM(**{**SMALL, "max_epochs": 40, "patience": 2}).fit_many(train, M)
    progress = [r.getMessage() for r in caplog.records if "lstm epoch" in r.getMessage()]
    assert len(progress) == model.epochs_, "one progress line per epoch"
    assert progress[0].startswith("lstm epoch 1/40") and "left" in progress[0]
    assert model.epochs_ < 40
    assert model.best_epoch_ <= model.epochs_
    assert len(model.val_losses_) == model.epochs_
    assert model.val_losses_[model.best_epoch_ - 1] == min(model.val_losses_)


def test_nonnegative_history_gives_nonnegative_forecasts(fitted):
    model, _, _ = fitted
    spiky = np.zeros(10 * M)
    spiky[::M] = 50.0
    fc = model.predict_from(spiky, H)
    assert (fc["lo-95"] >= 0).all() and (fc["mean"] >= 0).all()


def test_bad_settings_and_short_series_are_reported():
    with pytest.raises(ConfigError, match="device"):
        LSTM(device="tpu")
    with pytest.raises(ConfigError, match="horizon"):
        LSTM(**{**SMALL, "horizon": M + 1}).fit_many(periodic(1), M)
    with pytest.raises(SeriesTooShortError, match="long enough"):
        LSTM(**SMALL).fit_many([np.arange(20.0)], M)
    with pytest.raises(ConfigError, match="not fitted"):
        LSTM(**SMALL).predict_from(np.arange(100.0), H)


@pytest.mark.slow
def test_runs_in_the_backtest_runner():
    df = make_daily_series(days=16, n_series=3, noise=0.3)
    params = {"lstm": {**SMALL, "horizon": 6, "input_steps": 24, "lookback_days": 3}}
    spec = BacktestSpec(models=["naive", "lstm"], n_jobs=1, model_params=params)
    result = run_backtest(df, spec)
    assert not result.fallbacks
    mase = result.leaderboard.set_index(["model", "horizon"])["mase"]
    assert mase[("lstm", "30m")] < mase[("naive", "30m")]
