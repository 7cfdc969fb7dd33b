from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_series
from fake_models import ConstantForecaster

from foresight_lib.errors import ConfigError, DataError, HorizonError
from foresight_lib.forecasting import models
from foresight_lib.forecasting.backtest import BacktestSpec, backtest_part, finish_backtest, run_backtest
from foresight_lib.forecasting.models.base import GlobalForecaster


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


class NonFiniteForecaster(ConstantForecaster):
    """Forecasts NaN on series whose training mean is between 5.5 and 6.5 (``cpu_cores/c1``)."""

    alias = "nonfinite"

    def predict(self, h, levels=(80, 95)):
        out = super().predict(h, levels)
        if 5.5 < self.mean_ < 6.5:
            out["mean"] = np.full(h, np.nan)
        return out


class GlobalNonFinite(GlobalForecaster):
    """A global model (fitted across series) that forecasts the last value, but +inf on ``cpu_cores/c1``."""

    alias = "globalnonfinite"

    def fit_many(self, ys, season_length):
        return self

    def forecast_origins_many(self, histories, futures, origins, h, levels=(80, 95)):
        out = []
        for history, future in zip(histories, futures, strict=True):
            series = np.concatenate([history, future])
            last = np.array([series[len(history) + o - 1] for o in origins])[:, None] * np.ones(h)
            if 5.5 < np.mean(history) < 6.5:
                last = np.full_like(last, np.inf)
            out.append({"mean": last, **{f"{side}-{lv}": last for lv in levels for side in ("lo", "hi")}})
        return out


@pytest.fixture
def nonfinite_model(monkeypatch, fake_models):
    monkeypatch.setitem(models.MODEL_PATHS, "nonfinite", "test_backtest:NonFiniteForecaster")
    monkeypatch.setitem(models.MODEL_PATHS, "globalnonfinite", "test_backtest:GlobalNonFinite")
    monkeypatch.setattr(models, "ALL_MODELS", [*models.MODEL_PATHS, models.ENSEMBLE])


FORECAST_VALUES = ["yhat", "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]


def test_non_finite_forecasts_fall_back_on_that_series_only(nonfinite_model, daily_series):
    result = run_backtest(daily_series, spec(models=["nonfinite", "seasonal_naive", "ensemble"], future=True))
    assert [(f["model"], f["unique_id"]) for f in result.fallbacks] == [("nonfinite", "cpu_cores/c1")]
    assert "non-finite" in result.fallbacks[0]["error"]
    # the validation day of the ensemble fails the same way, and is counted apart
    assert [(f["model"], f["unique_id"]) for f in result.validation_fallbacks] == [("nonfinite", "cpu_cores/c1")]
    report = result.report()
    assert report["fallback_counts"] == {"nonfinite": 1}
    assert report["validation_fallback_counts"] == {"nonfinite": 1}
    for frame in (result.forecasts, result.future_forecasts):
        assert np.isfinite(frame[FORECAST_VALUES].to_numpy()).all()
    fc = result.forecasts.set_index(["unique_id", "cutoff", "step", "model"])["yhat"].unstack("model")
    assert np.allclose(fc.loc["cpu_cores/c1", "nonfinite"], fc.loc["cpu_cores/c1", "seasonal_naive"])
    assert not np.allclose(fc.loc["cpu_cores/c0", "nonfinite"], fc.loc["cpu_cores/c0", "seasonal_naive"])
    assert set(result.leaderboard["model"]) == {"nonfinite", "seasonal_naive", "ensemble"}
    assert np.isfinite(result.leaderboard["mase"]).all() and result.skipped_models == []


def test_fallbacks_are_counted_once_per_series_with_the_ensemble(fake_models, daily_series):
    result = run_backtest(daily_series, spec(models=["failing", "seasonal_naive", "ensemble"], future=True))
    report = result.report()
    n_series = daily_series["unique_id"].nunique()
    assert report["fallback_counts"] == {"failing": n_series}
    assert report["validation_fallback_counts"] == {"failing": n_series}
    assert len(result.fallbacks) == n_series and len(result.validation_fallbacks) == n_series
    assert "ensemble" in set(result.leaderboard["model"])


def test_infinite_and_absurd_values_skip_the_series_with_reasons(daily_series):
    frame = daily_series.copy()
    rows = frame.index[frame["unique_id"] == "cpu_cores/c0"]
    frame.loc[rows[1000:1005], "y"] = np.inf
    rows = frame.index[frame["unique_id"] == "cpu_cores/c1"]
    frame.loc[rows[-100], "y"] = 1e300  # in the held-out day
    result = run_backtest(frame, spec(models=["naive", "seasonal_naive", "ensemble"], future=True))
    reasons = {s["unique_id"]: s["reason"] for s in result.skipped}
    assert "5 infinite value(s) in the backtest window" in reasons["cpu_cores/c0"]
    assert "1 absurd value(s) beyond ±1e+18" in reasons["cpu_cores/c1"] and "1e+300" in reasons["cpu_cores/c1"]
    assert result.series == ["cpu_cores/c2"]
    assert set(result.leaderboard["model"]) == {"naive", "seasonal_naive", "ensemble"}
    assert np.isfinite(result.leaderboard.drop(columns=["model", "horizon"]).to_numpy()).all()
    assert np.isfinite(result.future_forecasts[FORECAST_VALUES].to_numpy()).all()


def test_constant_series_are_forecast_but_left_out_of_the_scores(daily_series):
    s = spec(models=["naive", "seasonal_naive", "ensemble"])
    plain = run_backtest(daily_series, s)
    ds = daily_series["ds"].unique()
    constant = pd.concat([pd.DataFrame({"unique_id": "cpu_cores/zero", "ds": ds, "y": 0.0}),
                          pd.DataFrame({"unique_id": "cpu_cores/flat", "ds": ds, "y": 3.0})], ignore_index=True)
    result = run_backtest(pd.concat([daily_series, constant], ignore_index=True), s)
    assert {"cpu_cores/zero", "cpu_cores/flat"} <= set(result.series)
    assert {u["unique_id"] for u in result.unscored} == {"cpu_cores/zero", "cpu_cores/flat"}
    assert all("constant training part" in u["reason"] for u in result.unscored)
    assert not set(result.per_series["unique_id"]) & {"cpu_cores/zero", "cpu_cores/flat"}
    # MASE 0/0 no longer deflates the means: the board is the one without those series
    pd.testing.assert_frame_equal(result.leaderboard, plain.leaderboard)
    guard = {g["unique_id"]: g for g in result.report()["mase_guard"]}
    assert not guard["cpu_cores/zero"]["scored"] and np.isnan(guard["cpu_cores/zero"]["scale"])
    assert (result.forecasts.loc[result.forecasts["unique_id"] == "cpu_cores/zero", "yhat"] == 0).all()
    with pytest.raises(DataError, match="no series can be scored"):
        run_backtest(constant, s)


def test_a_series_idle_on_the_held_out_day_is_scored_for_mase_and_reported_for_wql(daily_series):
    frame = daily_series.copy()
    idle = frame.index[frame["unique_id"] == "cpu_cores/c2"]
    frame.loc[idle[-288:], "y"] = 0.0  # the held-out day: every actual 0, so sum(|y|) is 0 at each step
    result = run_backtest(frame, spec(models=["naive", "seasonal_naive", "ensemble"]))
    assert "cpu_cores/c2" in set(result.per_series["unique_id"])  # its training part has a MASE scale
    rows = result.per_series[result.per_series["unique_id"] == "cpu_cores/c2"]
    assert rows["wql"].isna().all() and np.isfinite(rows["mase"]).all()
    assert np.isfinite(result.leaderboard["wql"]).all() and (result.leaderboard["wql"] > 0).all()
    report = result.report()
    assert {(r["unique_id"], r["horizon"]) for r in report["wql_left_out"]} == {
        ("cpu_cores/c2", h) for h in ("5m", "15m", "30m")}
    assert not any("model" in r for r in report["wql_left_out"])  # every model here gives finite bands


def test_ensemble_weights_stay_finite_for_huge_errors():
    from foresight_lib.forecasting.backtest import fit_ensemble_weights

    y_val = np.full(12, 1e200)
    origins, h = [0, 3, 6], 3
    val = {name: {"mean": np.full((3, h), 1e200 + err)} for name, err in (("a", 1e199), ("b", 2e199), ("c", 4e199))}
    ens = fit_ensemble_weights(val, y_val, origins, h, (80,))
    assert np.isfinite(ens.weights).all() and np.allclose(ens.weights.sum(axis=1), 1.0)
    # inverse squared MAE: a : b : c = 1 : 1/4 : 1/16
    assert np.allclose(ens.weights[0], np.array([16, 4, 1]) / 21)
    combined = ens.combine(val, (80,))
    assert all(np.isfinite(v).all() for v in combined.values())
    exact = {**val, "d": {"mean": np.full((3, h), 1e200)}}
    ens = fit_ensemble_weights(exact, y_val, origins, h, (80,))
    assert np.allclose(ens.weights[:, 3], 1.0)  # an exact model takes all the weight


def test_a_model_without_a_finite_score_is_listed_never_silently_dropped():
    from foresight_lib.forecasting.backtest import scored_leaderboard

    board = pd.DataFrame({"model": ["naive", "ensemble"], "horizon": ["5m", "5m"], "mase": [0.9, np.nan]})
    kept, skipped = scored_leaderboard(board, ["naive", "seasonal_naive", "ensemble"])
    assert list(kept["model"]) == ["naive"]
    reasons = {s["model"]: s["reason"] for s in skipped}
    assert set(reasons) == {"seasonal_naive", "ensemble"}
    assert "not finite" in reasons["ensemble"] and "no scored forecasts" in reasons["seasonal_naive"]


def test_a_global_model_falls_back_only_where_its_forecasts_are_not_finite(nonfinite_model, daily_series):
    result = run_backtest(daily_series, spec(models=["globalnonfinite", "seasonal_naive"], future=True))
    assert [(f["model"], f["unique_id"]) for f in result.fallbacks] == [("globalnonfinite", "cpu_cores/c1")]
    fc = result.forecasts.set_index(["unique_id", "cutoff", "step", "model"])["yhat"].unstack("model")
    assert np.allclose(fc.loc["cpu_cores/c1", "globalnonfinite"], fc.loc["cpu_cores/c1", "seasonal_naive"])
    naive = run_backtest(daily_series, spec(models=["naive", "seasonal_naive"])).forecasts
    naive = naive[(naive["model"] == "naive") & (naive["unique_id"] == "cpu_cores/c0")]["yhat"].to_numpy()
    assert np.allclose(fc.loc["cpu_cores/c0", "globalnonfinite"].to_numpy(), naive)  # kept where finite
    assert np.isfinite(result.future_forecasts[FORECAST_VALUES].to_numpy()).all()
