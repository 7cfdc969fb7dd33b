from __future__ import annotations

import copy
import pickle

import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_series

from foresight_lib.errors import ConfigError, DataError
from foresight_lib.forecasting.backtest import BacktestSpec, run_backtest
from foresight_lib.forecasting.models import make_model
from foresight_lib.forecasting.models.prophet import Prophet

M = 288  # 5-minute data, one-day season
H = 6
KEYS = ["mean", "lo-80", "hi-80", "lo-95", "hi-95"]
DAYS = 8


def truth(t: np.ndarray) -> np.ndarray:
    """A daily sinusoid on a slow upward trend."""
    return 10 + 0.002 * t + 3 * np.sin(2 * np.pi * t / M)


@pytest.fixture(scope="module")
def data():
    n = (DAYS + 1) * M
    t = np.arange(n)
    y = truth(t) + np.random.default_rng(0).normal(0, 0.2, n)
    ds = pd.date_range("2024-03-01", periods=n, freq="5min", tz="UTC")
    return y[: DAYS * M], y[DAYS * M :], ds


@pytest.fixture(scope="module")
def fitted(data):
    train, _, ds = data
    return Prophet(growth="linear").fit(train, M, ds=ds[: train.size])


def test_registry_and_interface():
    model = make_model("prophet", window_days=3)
    assert model.needs_timestamps
    assert model.get_params()["window_days"] == 3.0


def test_recovers_a_daily_sinusoid_with_trend(fitted, data):
    train, test, _ = data
    model = copy.deepcopy(fitted)
    curve = model._curve(np.arange(model.n_, model.n_ + M))
    expected = truth(np.arange(train.size, train.size + M))
    assert np.abs(curve - expected).mean() < 0.25
    assert np.abs(model.predict(M)["mean"] - expected).mean() < 0.3
    fc = model.forecast_origins(test, list(range(0, M - H + 1, H)), H)
    actual = np.stack([test[o : o + H] for o in range(0, M - H + 1, H)])
    assert np.abs(fc["mean"] - actual).mean() < 0.3  # the noise alone gives about 0.16


def test_residual_correction_follows_a_level_shift(fitted, data):
    _, test, _ = data
    model = copy.deepcopy(fitted)
    shifted = test + 5.0
    origins = list(range(24, 120, 6))
    curve_only = np.stack([model._curve(np.arange(model.n_ + o, model.n_ + o + H)) for o in origins])
    fc = model.forecast_origins(shifted, origins, H)
    actual = np.stack([shifted[o : o + H] for o in origins])
    assert np.abs(curve_only - actual).mean() > 4.0  # the curve alone misses the shift...
    assert np.abs(fc["mean"][:, 0] - actual[:, 0]).mean() < 1.5  # ...the corrected forecast follows it


def test_forecast_origins_equals_update_and_predict(fitted, data):
    _, test, _ = data
    origins = [0, 1, 7, 30, 31, 100]
    vectorised = copy.deepcopy(fitted).forecast_origins(test, origins, H, levels=(50, 80, 95))
    looped = copy.deepcopy(fitted)
    seen = 0
    for i, origin in enumerate(origins):
        looped.update(test[seen:origin])
        seen = origin
        single = looped.predict(H, levels=(50, 80, 95))
        for key, values in single.items():
            np.testing.assert_allclose(vectorised[key][i], values, rtol=1e-9, atol=1e-9)


def test_intervals_are_ordered_and_calibrated(fitted, data):
    _, test, _ = data
    origins = list(range(0, M - H + 1, 3))
    fc = copy.deepcopy(fitted).forecast_origins(test, origins, H)
    for key in KEYS:
        assert fc[key].shape == (len(origins), H)
        assert np.isfinite(fc[key]).all()
    assert (fc["lo-95"] <= fc["lo-80"]).all() and (fc["lo-80"] <= fc["mean"]).all()
    assert (fc["mean"] <= fc["hi-80"]).all() and (fc["hi-80"] <= fc["hi-95"]).all()
    actual = np.stack([test[o : o + H] for o in origins])
    coverage = ((actual >= fc["lo-80"]) & (actual <= fc["hi-80"])).mean()
    assert 0.6 < coverage < 0.97


def test_pickle_round_trip_gives_the_same_forecasts(fitted, data):
    _, test, _ = data
    restored = pickle.loads(pickle.dumps(fitted))
    assert restored._prophet is None  # rebuilt from its JSON on first use
    origins = [0, 12, 48]
    before = copy.deepcopy(fitted).forecast_origins(test, origins, H)
    after = restored.forecast_origins(test, origins, H)
    for key in KEYS:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-9, atol=1e-9)


def test_timestamps_are_checked():
    y = np.sin(np.arange(3 * M) * 2 * np.pi / M) + 5
    ds = pd.date_range("2024-03-01", periods=y.size, freq="5min", tz="Europe/Paris")
    with pytest.raises(DataError, match="timestamps"):
        Prophet().fit(y, M, ds=ds[:-1])
    with pytest.raises(DataError, match="regular"):
        Prophet().fit(y, M, ds=ds.delete(10).append(pd.DatetimeIndex([ds[-1] + pd.Timedelta("5min")])))
    with pytest.raises(ConfigError, match="growth"):
        Prophet(growth="logistic")
    with pytest.raises(ConfigError, match="not fitted"):
        Prophet().predict(H)


def test_flat_series_and_missing_timestamps():
    flat = Prophet().fit(np.full(3 * M, 4.0), M)
    fc = flat.predict(H)
    np.testing.assert_allclose(fc["mean"], 4.0)
    np.testing.assert_allclose(fc["hi-95"], 4.0)


@pytest.mark.slow
def test_runs_in_the_backtest_runner():
    df = make_daily_series(days=16, n_series=2, noise=0.3)
    result = run_backtest(df, BacktestSpec(models=["naive", "prophet"], n_jobs=1))
    assert not result.fallbacks
    mase = result.leaderboard.set_index(["model", "horizon"])["mase"]
    assert mase[("prophet", "30m")] < mase[("naive", "30m")]
