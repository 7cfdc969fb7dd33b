"""Baseline recommenders against hand-worked examples."""
from __future__ import annotations

import numpy as np
import pytest

from foresight_lib.errors import ConfigError
from foresight_lib.rightsizing import baselines as bl

DAY = 24 * 3600.0


def test_bucket_edges_grow_by_five_percent():
    h = bl.DecayingHistogram(first_bucket=1.0)
    # starts: 0, 1, 1 + 1.05, 1 + 1.05 + 1.1025
    assert h.bucket_start(0) == 0.0
    assert h.bucket_start(1) == pytest.approx(1.0)
    assert h.bucket_start(2) == pytest.approx(2.05)
    assert h.bucket_start(3) == pytest.approx(3.1525)
    assert [h.bucket_of(v) for v in (0.0, 0.99, 1.0, 2.0, 2.05, 3.2)] == [0, 0, 1, 1, 2, 3]
    values = np.array([0.0, 0.99, 1.0, 2.0, 2.05, 3.2])
    assert h.buckets_of(values).tolist() == [0, 0, 1, 1, 2, 3]


def test_percentile_returns_end_of_bucket_reaching_threshold():
    h = bl.DecayingHistogram(first_bucket=1.0)
    # ten equal-weight samples: 8 in bucket 0, 1 in bucket 1, 1 in bucket 3
    h.add_many(np.array([0.5] * 8 + [1.5, 3.2]), np.zeros(10))
    # P80: cumulative 8/10 reached in bucket 0 -> its end, 1.0
    assert h.percentile(0.8) == pytest.approx(1.0)
    # P90: 9/10 reached in bucket 1 -> its end 2.05
    assert h.percentile(0.9) == pytest.approx(2.05)
    # P95: only the last bucket reaches it -> end of bucket 3
    assert h.percentile(0.95) == pytest.approx(h.bucket_start(4))
    assert bl.DecayingHistogram(first_bucket=1.0).percentile(0.9) == 0.0


def test_half_life_halves_older_samples():
    h = bl.DecayingHistogram(first_bucket=1.0, half_life=DAY)
    # a sample one day old weighs half the newer one: weights 1 (bucket 0) and 2 (bucket 3)
    h.add(0.5, 0.0)
    h.add(3.2, DAY)
    assert h.weights == {0: pytest.approx(1.0), 3: pytest.approx(2.0)}
    # P30 falls in bucket 0 (1/3 of the weight), P40 no longer does
    assert h.percentile(0.3) == pytest.approx(1.0)
    assert h.percentile(0.4) == pytest.approx(h.bucket_start(4))
    # the vectorised path gives the same weights
    v = bl.DecayingHistogram(first_bucket=1.0, half_life=DAY)
    v.add_many(np.array([0.5, 3.2]), np.array([0.0, DAY]))
    assert v.weights == pytest.approx(h.weights)


def test_weights_rescale_without_changing_percentiles():
    h = bl.DecayingHistogram(first_bucket=1.0, half_life=1.0)
    h.add(0.5, 0.0)
    h.add(3.2, 100.0)  # 2**100: rescaled, the old sample's weight underflows towards zero
    assert np.isfinite(h.total_weight)
    assert h.percentile(0.5) == pytest.approx(h.bucket_start(4))


def test_vpa_cpu_target_is_p90_plus_15_percent():
    values = np.array([0.5] * 8 + [1.5, 3.2])
    target = bl.vpa_target(values, np.zeros(10), "cpu", first_bucket=1.0)
    assert target == pytest.approx(2.05 * 1.15)
    assert bl.vpa_target(values, np.zeros(10), "cpu", 1.0, with_margin=False) == pytest.approx(2.05)


def test_vpa_memory_uses_daily_peaks():
    # three days; peaks 1.5, 3.2 and 0.9; each day's many small samples must not count
    times = np.concatenate([d * DAY + np.arange(0, DAY, 3600.0) for d in range(3)])
    values = np.full(times.size, 0.2)
    values[5], values[24 + 7], values[48 + 3] = 1.5, 3.2, 0.9
    rec = bl.VPARecommender("memory", first_bucket=1.0, half_life=1e12)  # no decay: plain P90 of 3 peaks
    rec.observe(values, times)
    # peaks in buckets 1, 3 and 0, equal weights: P90 reaches bucket 3 -> end of bucket 3
    assert rec.target(with_margin=False) == pytest.approx(rec.histogram.bucket_start(4))
    assert rec.target() == pytest.approx(rec.histogram.bucket_start(4) * 1.15)
    # two days closed into the histogram, the third still open
    assert rec.histogram.total_weight == pytest.approx(2.0)


def test_crane_p99_of_last_seven_days_times_1_15():
    times = np.arange(0, 10 * DAY, 3600.0)
    values = np.where(times < 3 * DAY, 1000.0, (times / 3600.0) % 100)  # old huge values fall outside 7 days
    now = 10 * DAY
    recent = values[times >= now - 7 * DAY]
    expected = np.percentile(recent, 99) * 1.15
    assert bl.crane_percentile(values, times, now_s=now) == pytest.approx(expected)
    # hand-worked: 0..100 -> P99 = 99, x 1.15
    assert bl.crane_percentile(np.arange(101.0), np.arange(101.0)) == pytest.approx(99 * 1.15)
    assert np.isnan(bl.crane_percentile(np.array([]), np.array([])))


def test_reactive_previous_peak_times_1_15():
    assert bl.reactive_peak(np.array([1.0, 4.0, 2.0])) == pytest.approx(4.6)
    assert bl.reactive_peak(np.array([np.nan, 2.0])) == pytest.approx(2.3)
    assert np.isnan(bl.reactive_peak(np.array([])))


def test_bad_histogram_settings_raise():
    with pytest.raises(ConfigError):
        bl.DecayingHistogram(first_bucket=0.0)


def test_first_bucket_by_unit():
    assert bl.first_bucket_for("cores") == 0.01
    assert bl.first_bucket_for("bytes") == 1e7
    assert bl.first_bucket_for("widgets", np.array([0.0, 50.0])) == pytest.approx(0.05)


def test_vpa_memory_keeps_the_last_eight_daily_peaks():
    times = np.arange(11) * DAY
    values = np.array([100.0, 100.0] + [1.0] * 9)  # two old high peaks, then 9 low days
    rec = bl.VPARecommender("memory", first_bucket=1.0, half_life=1e12)
    rec.observe(values, times)
    assert rec.histogram.total_weight == pytest.approx(8.0)  # 10 closed, the last 8 kept
    assert rec.target(with_margin=False) < 5.0


def test_vpa_oom_bump_is_the_larger_of_plus_100_mib_and_times_1_2():
    assert bl.vpa_memory_constants("bytes") == (250 * 2**20, 100 * 2**20)
    assert bl.vpa_memory_constants("KB") == (250 * 1024, 100 * 1024)
    assert bl.vpa_memory_constants("percent") == (0.0, 0.0)
    rec = bl.VPARecommender("memory", first_bucket=1e7, min_bump=100 * 2**20)
    assert rec.oom(2**20, 0.0) == pytest.approx(101 * 2**20)  # small: +100 MiB
    assert rec.oom(2**40, 1.0) == pytest.approx(1.2 * 2**40)  # large: x1.2
    assert rec.target(with_margin=False) >= 1.2 * 2**40
