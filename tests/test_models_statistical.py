from __future__ import annotations

import copy
import pickle

import numpy as np
import pandas as pd
import pytest

from foresight_lib.errors import ConfigError, SeriesTooShortError
from foresight_lib.forecasting.models import make_model
from foresight_lib.forecasting.models.arima import AutoARIMA, psi_weights
from foresight_lib.forecasting.models.ets import ETS
from foresight_lib.forecasting.models.fourier import Fourier, seasonal_profile
from foresight_lib.forecasting.models.naive import Naive, SeasonalNaive

M = 24  # a short "day" keeps the tests fast
KEYS = ["mean", "lo-80", "hi-80", "lo-95", "hi-95"]
ALL = ["naive", "seasonal_naive", "arima", "ets", "fourier"]


def ar1(n: int, phi: float = 0.6, mu: float = 5.0, sigma: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    e = rng.normal(0, sigma, n)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return mu + x


def arma11(n: int, phi: float = 0.7, theta: float = 0.4, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n)
    x = np.zeros(n)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t] + theta * e[t - 1]
    return x


def daily(n: int, m: int = M, noise: float = 0.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 10 + 3 * np.sin(2 * np.pi * t / m) + rng.normal(0, noise, n)


@pytest.fixture(scope="module")
def series() -> np.ndarray:
    """Twelve short days: a daily cycle, a wandering level and noise."""
    rng = np.random.default_rng(7)
    n = 12 * M
    return daily(n, noise=0.4) + np.cumsum(rng.normal(0, 0.1, n))


def check_intervals(fc: dict) -> None:
    assert set(KEYS) <= set(fc)
    for key in KEYS:
        assert np.isfinite(fc[key]).all()
    assert (fc["lo-95"] <= fc["lo-80"] + 1e-12).all()
    assert (fc["lo-80"] <= fc["mean"] + 1e-12).all()
    assert (fc["mean"] <= fc["hi-80"] + 1e-12).all()
    assert (fc["hi-80"] <= fc["hi-95"] + 1e-12).all()


# ---------------------------------------------------------------------------
# Baselines


def test_naive_on_random_walk_repeats_last_value_with_sqrt_h_intervals():
    rng = np.random.default_rng(3)
    y = np.cumsum(rng.normal(0, 2.0, 3000))
    model = Naive().fit(y, M)
    fc = model.predict(9)
    assert np.allclose(fc["mean"], y[-1])
    assert model.sigma_ == pytest.approx(2.0, rel=0.05)
    half = fc["hi-95"] - fc["mean"]
    assert np.allclose(half / half[0], np.sqrt(np.arange(1, 10)))
    check_intervals(fc)


def test_seasonal_naive_on_periodic_signal_is_exact():
    t = np.arange(5 * M)
    y = np.sin(2 * np.pi * t / M) + (t % M == 3) * 5.0
    model = SeasonalNaive().fit(y[: 4 * M], M)
    assert np.allclose(model.predict(M)["mean"], y[4 * M :])
    model.update(y[4 * M : 4 * M + 5])
    assert np.allclose(model.predict(M)["mean"], y[3 * M + 5 : 4 * M + 5])


def test_seasonal_naive_needs_a_season():
    with pytest.raises(ValueError, match="more than one season"):
        SeasonalNaive().fit(np.ones(M), M)


@pytest.mark.parametrize("name", ALL)
def test_intervals_are_ordered_and_widen_with_the_step(name, series):
    model = make_model(name).fit(series, M)
    fc = model.predict(2 * M + 1)
    check_intervals(fc)
    width = fc["hi-95"] - fc["lo-95"]
    assert (np.diff(width) >= -1e-9).all()
    assert width[-1] > width[0]


@pytest.mark.parametrize("name", ALL)
def test_update_moves_the_state(name, series):
    model = make_model(name).fit(series[:-M], M)
    before = model.predict(6)["mean"]
    model.update(series[-M:] + 5.0)
    after = model.predict(6)["mean"]
    refit = make_model(name).fit(series, M).predict(6)["mean"]
    assert not np.allclose(before, after)
    # the new actuals were 5 higher than the series: the forecast moves up, not just anywhere
    assert after.mean() > refit.mean() + 0.5


@pytest.mark.parametrize("name", ALL)
def test_forecast_origins_equals_a_loop_of_update_and_predict(name, series):
    fitted = make_model(name).fit(series[: 10 * M], M)
    future = series[10 * M :]
    origins = [0, 3, 3, 10, 24, 30]
    batched = copy.deepcopy(fitted).forecast_origins(future, origins, 6)
    loop = copy.deepcopy(fitted)
    seen, rows = 0, []
    for origin in origins:
        loop.update(future[seen:origin])
        seen = origin
        rows.append(loop.predict(6))
    for key in KEYS:
        assert batched[key].shape == (len(origins), 6)
        assert np.allclose(batched[key], np.vstack([r[key] for r in rows]))


@pytest.mark.parametrize("name", ALL)
def test_forecasts_at_a_cutoff_ignore_values_after_it(name, series):
    fitted = make_model(name).fit(series[: 9 * M], M)
    future = series[9 * M :].copy()
    origins = list(range(0, 3 * M - 6 + 1, 3))
    clean = copy.deepcopy(fitted).forecast_origins(future, origins, 6)
    poison_at = M
    future[poison_at:] = 1e6
    poisoned = copy.deepcopy(fitted).forecast_origins(future, origins, 6)
    before = np.array(origins) <= poison_at
    for key in KEYS:
        assert np.allclose(clean[key][before], poisoned[key][before])
    assert not np.allclose(clean["mean"][~before], poisoned["mean"][~before])


@pytest.mark.parametrize("name", ["arima", "ets", "fourier"])
def test_models_pickle_with_their_state(name, series):
    model = make_model(name).fit(series[:-M], M).update(series[-M:-5])
    restored = pickle.loads(pickle.dumps(model))
    for key in KEYS:
        assert np.array_equal(restored.predict(12)[key], model.predict(12)[key])
    assert len(pickle.dumps(model)) < 50_000  # state, not data or statsmodels results


@pytest.mark.parametrize("cls", [AutoARIMA, ETS, Fourier])
def test_short_or_gappy_history_is_refused_clearly(cls):
    with pytest.raises(SeriesTooShortError, match="needs at least"):
        cls().fit(np.ones(5), M)
    y = daily(4 * M)
    y[10] = np.nan
    with pytest.raises(ValueError, match="fill gaps"):
        cls().fit(y, M)


@pytest.mark.parametrize("cls", [AutoARIMA, ETS, Fourier])
def test_models_work_without_a_season(cls):
    y = np.sin(np.arange(80) / 3) + 0.01 * np.arange(80)
    fc = cls().fit(y, 1).predict(3)
    check_intervals(fc)
    assert np.abs(fc["mean"] - y[-1]).max() < 1.0


def test_bad_settings_raise_config_errors():
    with pytest.raises(ConfigError, match="seasonal"):
        AutoARIMA(seasonal="sometimes")
    with pytest.raises(ConfigError, match="trend"):
        ETS(trends=("multiplicative",))
    with pytest.raises(ConfigError, match="max_d"):
        AutoARIMA(max_d=3)


@pytest.mark.parametrize("name", ALL)
def test_registry_and_forecaster_interface(name):
    model = make_model(name)
    assert model.alias == name
    assert isinstance(model.get_params(), dict)


# ---------------------------------------------------------------------------
# ARIMA


def test_arima_recovers_an_ar1_and_its_analytic_forecast():
    y = ar1(2000, phi=0.6, mu=5.0)
    model = AutoARIMA(window_days=1000, seasonal="no", outlier_clip=None).fit(y, 1)
    assert model.order_ == (1, 0, 0)
    assert model.ar_[0] == pytest.approx(0.6, abs=0.05)
    assert model.mu_ == pytest.approx(5.0, abs=0.2)
    assert model.sigma_ == pytest.approx(1.0, abs=0.05)
    fc = model.predict(10)
    steps = np.arange(1, 11)
    analytic = model.mu_ + model.ar_[0] ** steps * (y[-1] - model.mu_)
    assert np.allclose(fc["mean"], analytic)
    var = model.sigma_**2 * np.cumsum(model.ar_[0] ** (2 * (steps - 1)))
    assert np.allclose(fc["hi-95"] - fc["mean"], 1.959964 * np.sqrt(var), rtol=1e-4)
    # conditioning on one more actual without refit
    model.update([9.0])
    assert model.predict(1)["mean"][0] == pytest.approx(model.mu_ + model.ar_[0] * (9.0 - model.mu_))


def test_arima_recovers_an_arma11_and_matches_statsmodels():
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    y = arma11(1500) + 3.0
    model = AutoARIMA(window_days=1500, seasonal="no", outlier_clip=None).fit(y, 1)
    assert model.order_ in {(1, 0, 1), (2, 0, 0), (2, 0, 1), (1, 0, 2)}
    if model.order_ == (1, 0, 1):
        assert model.ar_[0] == pytest.approx(0.7, abs=0.08)
        assert model.ma_[0] == pytest.approx(0.4, abs=0.1)
    p, _, q = model.order_
    reference = SARIMAX(y - model.mu_, order=(p, 0, q)).filter(np.r_[model.ar_, model.ma_, model.sigma_**2])
    assert np.allclose(model.predict(8)["mean"], reference.forecast(8) + model.mu_, atol=1e-6)


def test_arima_robust_filter_limits_what_one_spike_does():
    y = ar1(1500, phi=0.6, mu=5.0)
    plain = AutoARIMA(window_days=1500, seasonal="no", outlier_clip=None).fit(y, 1)
    robust = AutoARIMA(window_days=1500, seasonal="no", outlier_clip=3.0).fit(y, 1)
    assert robust.clip_ == pytest.approx(3.0, rel=0.1)  # 3 robust standard deviations of N(0, 1) errors
    plain.update([1000.0])
    robust.update([1000.0])
    assert plain.predict(1)["mean"][0] > 500
    assert robust.predict(1)["mean"][0] < robust.mu_ + robust.ar_[0] * 3.5


def test_arima_differences_a_random_walk():
    rng = np.random.default_rng(5)
    y = 100 + np.cumsum(rng.normal(size=1200))
    model = AutoARIMA(window_days=1200, seasonal="no").fit(y, 1)
    assert model.d_ == 1
    fc = model.predict(5)
    assert np.allclose(fc["mean"], y[-1], atol=0.5)
    assert np.allclose(psi_weights(np.zeros(0), np.zeros(0), 1, 5), 1.0)


def test_arima_interval_coverage_on_simulated_data():
    y = ar1(3000, phi=0.8, mu=0.0, seed=11)
    model = AutoARIMA(window_days=2000, seasonal="no").fit(y[:2000], 1)
    origins = list(range(0, 990))
    fc = model.forecast_origins(y[2000:], origins, 3)
    actual = np.stack([y[2000 + o : 2000 + o + 3] for o in origins])
    cover95 = np.mean((actual >= fc["lo-95"]) & (actual <= fc["hi-95"]), axis=0)
    cover80 = np.mean((actual >= fc["lo-80"]) & (actual <= fc["hi-80"]), axis=0)
    assert ((cover95 > 0.92) & (cover95 < 0.98)).all()
    assert ((cover80 > 0.75) & (cover80 < 0.85)).all()


def test_arima_and_ets_keep_a_daily_profile_only_when_it_repeats():
    t = np.arange(10 * M)
    rng = np.random.default_rng(2)
    spikes = 10.0 + 8.0 * (t % M == 5) + rng.normal(0, 0.3, t.size)
    assert AutoARIMA(window_days=3).fit(spikes, M).use_profile_
    assert ETS(window_days=3).fit(spikes, M).use_profile_
    noise = 10.0 + rng.normal(0, 0.3, t.size)
    assert not AutoARIMA(window_days=3).fit(noise, M).use_profile_
    assert not ETS(window_days=3).fit(noise, M).use_profile_
    # the profile carries the spike into the forecast
    fc = ETS(window_days=3).fit(spikes, M).predict(M)["mean"]
    assert fc[5] - np.median(fc) > 6.0


# ---------------------------------------------------------------------------
# ETS


def test_ets_on_level_plus_noise_is_flat_at_the_level():
    rng = np.random.default_rng(4)
    y = 20.0 + rng.normal(0, 1.0, 1500)
    model = ETS(window_days=1500, seasonal="no").fit(y, 1)
    fc = model.predict(12)
    assert model.alpha_ < 0.1
    assert np.allclose(fc["mean"], 20.0, atol=0.3)
    assert np.ptp(fc["mean"]) < 0.05
    assert model.sigma_ == pytest.approx(1.0, abs=0.08)
    check_intervals(fc)


def test_ets_update_applies_the_error_correction_equation():
    y = 20.0 + np.random.default_rng(4).normal(0, 1.0, 600)
    model = ETS(window_days=600, seasonal="no", trends=("none",), outlier_clip=None).fit(y, 1)
    level = model.predict(1)["mean"][0]
    model.update([level + 10.0])
    assert model.predict(1)["mean"][0] == pytest.approx(level + model.alpha_ * 10.0)


def test_ets_robust_update_limits_what_one_spike_does():
    y = 20.0 + np.random.default_rng(4).normal(0, 1.0, 600)
    model = ETS(window_days=600, seasonal="no", trends=("none",), outlier_clip=3.0).fit(y, 1)
    level = model.predict(1)["mean"][0]
    model.update([level + 1000.0])
    assert model.predict(1)["mean"][0] == pytest.approx(level + model.alpha_ * model.clip_)
    assert model.clip_ == pytest.approx(3.0, rel=0.15)


def test_ets_follows_a_trend_with_a_damped_trend():
    t = np.arange(1500)
    y = 0.05 * t + np.random.default_rng(6).normal(0, 0.2, t.size)
    model = ETS(window_days=1500, seasonal="no").fit(y, 1)
    assert model.trend_ == "damped"
    assert model.predict(5)["mean"] == pytest.approx(0.05 * (t[-1] + np.arange(1, 6)), abs=0.5)


def test_ets_interval_coverage_on_simulated_data():
    rng = np.random.default_rng(8)
    y = 50.0 + np.cumsum(rng.normal(0, 0.3, 3000)) + rng.normal(0, 1.0, 3000)
    model = ETS(window_days=2000, seasonal="no").fit(y[:2000], 1)
    origins = list(range(0, 990))
    fc = model.forecast_origins(y[2000:], origins, 3)
    actual = np.stack([y[2000 + o : 2000 + o + 3] for o in origins])
    cover95 = np.mean((actual >= fc["lo-95"]) & (actual <= fc["hi-95"]), axis=0)
    assert ((cover95 > 0.9) & (cover95 < 0.99)).all()


# ---------------------------------------------------------------------------
# Fourier


def test_fourier_recovers_sinusoids_with_a_trend_almost_exactly():
    m = 96
    t = np.arange(8 * m)
    y = 10 + 0.01 * t + 3 * np.sin(2 * np.pi * t / m) + np.cos(2 * np.pi * t / (m / 4) + 1.0)
    model = Fourier().fit(y[: 7 * m], m)
    fc = model.predict(m)
    assert np.abs(fc["mean"] - y[7 * m :]).max() < 0.02
    assert (fc["hi-95"] - fc["lo-95"]).max() < 0.1


def test_fourier_intervals_for_a_level_not_kept_at_fit_time():
    model = Fourier().fit(daily(6 * M), M)
    fc = model.predict(4, levels=(80, 90, 95))
    assert (fc["hi-80"] <= fc["hi-90"]).all() and (fc["hi-90"] <= fc["hi-95"]).all()
    assert (fc["lo-90"] < fc["mean"]).all()


def test_fourier_level_correction_follows_a_shift():
    m = 48
    t = np.arange(10 * m)
    rng = np.random.default_rng(9)
    y = 5 + np.sin(2 * np.pi * t / m) + rng.normal(0, 0.2, t.size)
    model = Fourier().fit(y[: 9 * m], m)
    before = model.predict(3)["mean"]
    shifted = y[9 * m : 9 * m + 12] + 4.0
    model.update(shifted)
    after = model.predict(3)["mean"]
    truth = 5 + np.sin(2 * np.pi * (9 * m + 12 + np.arange(3)) / m)
    assert model.alpha_ > 0.0
    assert after.mean() - truth.mean() > 1.0  # the correction moved towards the shifted level
    assert not np.allclose(before, after)


def test_fourier_interval_coverage_on_simulated_data():
    m = 48
    y = daily(30 * m, m=m, noise=0.5, seed=12)
    model = Fourier().fit(y[: 20 * m], m)
    origins = list(range(0, 10 * m - 3))
    fc = model.forecast_origins(y[20 * m :], origins, 3)
    actual = np.stack([y[20 * m + o : 20 * m + o + 3] for o in origins])
    cover95 = np.mean((actual >= fc["lo-95"]) & (actual <= fc["hi-95"]), axis=0)
    assert ((cover95 > 0.9) & (cover95 < 0.99)).all()


def test_seasonal_profile_is_a_robust_zero_mean_daily_shape():
    t = np.arange(8 * M)
    shape = np.sin(2 * np.pi * np.arange(M) / M)
    y = 3.0 + 0.01 * t + shape[t % M]
    y[40] += 100.0  # one outlier does not bend a median profile
    profile = seasonal_profile(y, M)
    assert abs(profile.mean()) < 1e-12
    assert np.allclose(profile, shape, atol=0.05)
    # phases follow absolute positions: a slice starting mid-day gives the same profile
    assert np.allclose(seasonal_profile(y[7:], M, offset=7), profile, atol=0.05)
    assert np.allclose(seasonal_profile(y[:M], M), 0.0)


# ---------------------------------------------------------------------------
# Real data: the evaluation protocol on one NAB CPU series


@pytest.mark.slow
def test_statistical_models_beat_the_baselines_on_real_cpu(nab_data):
    from foresight_lib.forecasting.backtest import BacktestSpec, run_backtest

    path = nab_data / "nab_aws" / "realAWSCloudwatch" / "ec2_cpu_utilization_24ae8d.csv"
    raw = pd.read_csv(path)
    ds = pd.to_datetime(raw["timestamp"], utc=True).dt.floor("5min")
    y = raw.groupby(ds)["value"].mean().asfreq("5min").interpolate()
    frame = pd.DataFrame({"unique_id": "cpu/24ae8d", "ds": y.index, "y": y.to_numpy()})
    result = run_backtest(frame, BacktestSpec(models=["naive", "seasonal_naive", *ALL[2:]], n_jobs=1))
    assert not result.fallbacks
    mase = result.leaderboard.groupby("model")["mase"].mean()
    for name in ("arima", "ets", "fourier"):
        assert mase[name] < mase["naive"]
        assert mase[name] < mase["seasonal_naive"]
    assert result.fit_seconds["arima"] < 5.0
