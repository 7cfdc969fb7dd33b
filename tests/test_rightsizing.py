"""Recommendations: rounding, profiles, learnt factors, sizes and the nightly recommend()."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_series

from foresight_lib import rightsizing as rs
from foresight_lib.backtest import BacktestSpec, run_backtest
from foresight_lib.errors import ConfigError


@pytest.mark.parametrize(("value", "unit", "resource", "expected"), [
    (0.2431, "cores", "cpu", 0.25),          # 243.1m -> 250m (10m steps)
    (1.2012, "cores", "cpu", 1.25),          # 1201.2m -> 1250m (50m steps)
    (0.0, "cores", "cpu", 0.01),             # never zero: one step
    (-3.0, "cores", "cpu", 0.01),            # never negative
    (432.0, "MHz", "cpu", 440.0),
    (2501.0, "MHz", "cpu", 2550.0),
    (300 * 2**20 + 1, "bytes", "memory", 301 * 2**20),  # to Mi
    (1500.0, "KB", "memory", 2048.0),
    (37.2, "percent", "cpu", 37.5),
    (12345.0, "requests", "other", 12400.0),  # three significant digits
])
def test_round_resource(value, unit, resource, expected):
    assert rs.round_resource(value, unit, resource) == pytest.approx(expected)
    assert rs.round_many(np.array([value]), unit, resource)[0] == pytest.approx(expected)


def test_round_many_keeps_nan_and_never_returns_zero():
    out = rs.round_many(np.array([np.nan, 0.0, -1.0, 0.004]), "cores", "cpu")
    assert np.isnan(out[0])
    assert (out[1:] == 0.01).all()


def test_format_quantity():
    assert rs.format_quantity(0.25, "cores", "cpu") == "250m"
    assert rs.format_quantity(2.0, "cores", "cpu") == "2"
    assert rs.format_quantity(512 * 2**20, "bytes", "memory") == "512Mi"


def test_resource_of():
    assert rs.resource_of("cpu_usage_mhz") == "cpu"
    assert rs.resource_of("container_cpu_cores") == "cpu"
    assert rs.resource_of("memory_usage_bytes") == "memory"
    assert rs.resource_of("net_rx_kbps") == "other"


def test_unknown_profile_is_a_config_error():
    with pytest.raises(ConfigError, match="cost"):
        rs.get_profile("cheap")


def test_profiles_are_ordered_by_headroom():
    cost, bal, perf = (rs.PROFILES[n] for n in ("cost", "balanced", "performance"))
    assert cost.target_violation > bal.target_violation > perf.target_violation
    assert cost.margin < bal.margin < perf.margin
    assert cost.memory_limit_ratio < bal.memory_limit_ratio < perf.memory_limit_ratio


def test_calibrate_factor_hits_target_violation_share():
    prof = rs.PROFILES["balanced"]  # 2 % above the request allowed
    y = np.arange(1.0, 101.0)  # 100 points; base 50 -> ratios 0.02 .. 2.0
    k = rs.calibrate_factor([50.0], [y], prof)
    # the smallest factor with at most 2 of 100 points above: the 98th value / 50
    assert k == pytest.approx(98 / 50)
    assert (y > k * 50).mean() <= prof.target_violation
    assert rs.calibrate_factor([], [], prof) is None
    assert rs.calibrate_factor([np.nan], [y], prof) is None
    # clamped to the profile's range
    assert rs.calibrate_factor([1.0], [y], prof) == prof.max_factor


def test_size_derives_limit_and_replicas():
    prof = rs.PROFILES["balanced"]
    s = rs.size(0.243, "cpu", "cores", prof, peak=0.6)
    assert s.request == pytest.approx(0.25)
    assert s.limit == pytest.approx(0.5)  # x 2.0
    # 0.6 at 70 % of a 0.25-core replica -> ceil(3.43) = 4
    assert s.replicas == 4
    assert s.request_display == "250m"
    m = rs.size(100 * 2**20, "memory", "bytes", prof, replica_capacity=1e12)
    assert m.limit == pytest.approx(125 * 2**20)
    assert m.replicas == 1


def test_confidence_grows_with_history_and_accuracy():
    assert rs.confidence(7, 0.0) == 1.0
    assert rs.confidence(3.5, 0.0) == 0.5
    assert rs.confidence(7, 1.0) == 0.5
    assert rs.confidence(7, None) == 0.5
    assert 0 < rs.confidence(2, 0.3) < rs.confidence(7, 0.3)


def test_daily_and_window_bases():
    prof = rs.PROFILES["balanced"]
    fc = {"hi-80": np.arange(100.0)}
    assert rs.daily_base(fc, prof) == pytest.approx(np.quantile(np.arange(100.0), 0.95))
    assert rs.window_base({"hi-80": np.array([[1.0, 3.0], [5.0, 2.0]])}, prof).tolist() == [3.0, 5.0]


def test_recommend_from_a_nightly_backtest():
    frame = make_daily_series(days=4, n_series=2)
    frame["unique_id"] = frame["unique_id"].str.replace("cpu_cores/", "container_cpu_cores/")
    short = frame[frame["unique_id"] == "container_cpu_cores/c0"].head(300).assign(
        unique_id="memory_working_set_bytes/tiny")
    frame = pd.concat([frame, short.assign(y=short["y"] * 2**28)], ignore_index=True)
    spec = BacktestSpec(models=["naive", "seasonal_naive"], history_days=2, test_days=1, n_jobs=1,
                        future=True, keep_models=True)
    result = run_backtest(frame, spec)
    recs = rs.recommend(result, "balanced")
    assert list(recs.columns) == rs.RECOMMENDATION_COLUMNS
    good = recs[recs["reason"].isna()]
    assert set(good["kind"]) == {"daily", "window"}
    assert len(good) == 4  # two series x (daily, window)
    assert (good["request"] > 0).all() and (good["limit"] >= good["request"]).all()
    assert (good["replicas"] >= 1).all()
    assert good["confidence"].between(0, 1).all()
    # cpu in cores: rounded to 10m steps below one core, 50m above
    for value in good["request"]:
        step = 0.01 if value < 1 else 0.05
        assert abs(value / step - round(value / step)) < 1e-6
    # the window request covers the live forecast's upper bound times the learnt factor
    row = good[(good["kind"] == "window") & (good["unique_id"] == "container_cpu_cores/c0")].iloc[0]
    future = result.future_forecasts
    hi = future[(future["unique_id"] == row["unique_id"]) & (future["model"] == row["model"])]["yhat_hi_80"].max()
    assert row["request"] >= hi * row["factor"] - 1e-9
    # ... and a learnt factor never takes it above the highest usage of the day it was learnt on
    held_out = result.forecasts[(result.forecasts["unique_id"] == row["unique_id"])
                                & (result.forecasts["model"] == row["model"])]["y"].max()
    assert row["base"] * row["factor"] <= held_out + 1e-9
    # the too-short series gets no recommendation, and says why
    tiny = recs[recs["unique_id"] == "memory_working_set_bytes/tiny"]
    assert len(tiny) == 2 and tiny["request"].isna().all()
    assert tiny["reason"].str.contains("no recommendation").all()


def test_recommend_caps_a_learnt_window_factor_at_the_past_peak():
    """An on/off series: the learnt factor would multiply the burst level too; the cap stops it there."""
    frame = make_daily_series(days=4, n_series=1, noise=0.0)
    rng = np.random.default_rng(3)
    y = np.where(rng.random(len(frame)) < 0.05, 4.0, 0.1)
    y[-1] = 4.0  # the live forecast starts from a burst
    frame["y"] = y
    spec = BacktestSpec(models=["naive"], history_days=2, test_days=1, n_jobs=1, future=True, keep_models=True)
    result = run_backtest(frame, spec)
    row = rs.recommend(result, "balanced").query("kind == 'window'").iloc[0]
    assert row["request"] <= 4.0
    assert row["request"] > 0


def test_daily_mean_base_uses_the_mean_curve_not_the_upper_bound():
    forecast = {"mean": np.arange(100.0), "hi-80": np.arange(100.0) + 50.0}
    assert rs.daily_mean_base(forecast, rs.PROFILES["balanced"]) == pytest.approx(np.quantile(np.arange(100.0), 0.95))
    assert np.isnan(rs.daily_mean_base({"mean": np.array([np.nan])}, rs.PROFILES["balanced"]))


def test_window_peak_base_scales_the_level_by_the_median_ratio_never_below_one():
    assert rs.window_peak_base(10.0, [1.2, 3.0, 1.5, np.nan]) == pytest.approx(15.0)  # median of 1.2, 1.5, 3.0
    assert rs.window_peak_base(10.0, [0.5, 0.8]) == pytest.approx(10.0)  # a peak is not below its level
    assert rs.window_peak_base(10.0, []) == pytest.approx(10.0)
    assert rs.peak_to_level(30.0, 10.0) == pytest.approx(3.0)
    assert np.isnan(rs.peak_to_level(30.0, 0.0))


def test_cap_to_observed_limits_the_request_to_the_past_peak():
    past = [np.array([1.0, 5.0]), np.array([2.0, 3.0])]
    assert rs.cap_to_observed(20.0, past) == 5.0
    assert rs.cap_to_observed(4.0, past) == 4.0
    assert rs.cap_to_observed(20.0, []) == 20.0
    # a capped request of an all-zero past still rounds to one step, never zero
    assert rs.round_resource(rs.cap_to_observed(3.0, [np.zeros(4)]), "cores", "cpu") == pytest.approx(0.01)
