"""Rightsizing primitives: rounding, profiles, bases, learnt factors and sizes."""
from __future__ import annotations

import numpy as np
import pytest

from foresight_lib.errors import ConfigError
from foresight_lib.rightsizing import sizing as rs


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
    assert rs.format_quantity(5.84e6, "bytes/s", "other") == "5.57 MiB/s"  # not "5.84e+06 bytes/s"
    assert rs.format_quantity(1.15e9, "bytes", "other") == "1.07 GiB"
    assert rs.format_quantity(512.0, "bytes/s", "other") == "512 B/s"
    assert rs.format_quantity(12.5, "percent", "other") == "12.5 percent"


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
    k = rs.calibrate_factor(y / 50.0, prof)
    # the smallest factor with at most 2 of 100 points above: the 98th value / 50
    assert k == pytest.approx(98 / 50)
    assert (y > k * 50).mean() <= prof.target_violation
    assert rs.calibrate_factor(np.array([]), prof) is None
    assert rs.calibrate_factor(y / np.nan, prof) is None
    # clamped to the profile's range
    assert rs.calibrate_factor(y / 1.0, prof) == prof.max_factor


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


def test_daily_base_is_the_upper_bound_quantile():
    prof = rs.PROFILES["balanced"]
    fc = {"hi-80": np.arange(100.0)}
    assert rs.daily_base(fc, prof) == pytest.approx(np.quantile(np.arange(100.0), 0.95))


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
    assert rs.cap_to_observed(20.0, 5.0) == 5.0
    assert rs.cap_to_observed(4.0, 5.0) == 4.0
    assert rs.cap_to_observed(20.0, None) == 20.0
    # a capped request of an all-zero past still rounds to one step, never zero
    assert rs.round_resource(rs.cap_to_observed(3.0, 0.0), "cores", "cpu") == pytest.approx(0.01)


def test_window_base_by_resource():
    # cpu: the level times the median seasonal ratio; memory: the smoothed peaks, or the level where higher
    assert rs.window_base_for("cpu", 10.0, [2.0, 3.0, 4.0], smoothed_peak=100.0) == pytest.approx(30.0)
    assert rs.window_base_for("memory", 10.0, [2.0, 3.0], smoothed_peak=25.0) == pytest.approx(25.0)
    assert rs.window_base_for("memory", 40.0, [], smoothed_peak=25.0) == pytest.approx(40.0)
    assert rs.window_base_for("memory", float("nan"), [], smoothed_peak=25.0) == pytest.approx(25.0)
    # smoothing halves an old peak's weight each window; the first peak starts it
    assert rs.smooth_peak(float("nan"), 8.0) == 8.0
    assert rs.smooth_peak(8.0, 0.0) == 4.0
    assert rs.smooth_peak(4.0, float("nan")) == 4.0


def test_shrink_factor_is_the_geometric_mean_within_the_profile_bounds():
    prof = rs.PROFILES["balanced"]
    assert rs.shrink_factor(1.0, 4.0, prof) == pytest.approx(2.0)
    assert rs.shrink_factor(None, 1.5, prof) == pytest.approx(1.5)
    assert rs.shrink_factor(None, None, prof) is None
    assert rs.shrink_factor(100.0, 100.0, prof) == prof.max_factor
    assert rs.factor_of_ratios(np.array([1.0, 2.0, np.nan, 3.0, 4.0]), 0.25) == pytest.approx(3.0)


def test_daily_memory_base_keeps_the_smoothed_peaks():
    assert rs.daily_base_for("memory", 2.0, smoothed_peak=5.0) == 5.0
    assert rs.daily_base_for("memory", 6.0, smoothed_peak=5.0) == 6.0
    assert rs.daily_base_for("cpu", 2.0, smoothed_peak=5.0) == 2.0  # CPU is throttled, not killed: no peak floor
    assert np.isnan(rs.memory_base(float("nan"), float("nan")))


def test_recent_error_pools_the_last_periods():
    recent = rs.RecentError(2)
    assert recent.value() is None
    recent.add(np.array([1.0, 1.0]), np.array([2.0, 2.0]))  # error 2 over usage 4
    assert recent.value() == pytest.approx(0.5)
    recent.add(np.array([3.0, np.nan]), np.array([3.0, 9.0]))  # one known point, no error
    assert recent.value() == pytest.approx(2 / 7)
    recent.add(np.array([0.0]), np.array([1.0]))  # the first period drops out: error 1 over usage 4
    assert recent.value() == pytest.approx(1 / 4)
    zero = rs.RecentError(3)
    zero.add(np.zeros(3), np.zeros(3))
    assert zero.value() == 0.0
