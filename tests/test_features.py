from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from foresight_lib.errors import ConfigError
from foresight_lib.quality.features import CALENDAR_COLUMNS, calendar_features, prepare_series
from foresight_lib.sources.loaders import load_series

UTC = "UTC"
DAY = 288  # 5-minute steps per day


def frame_of(uid: str, ds, y) -> pd.DataFrame:
    return pd.DataFrame({"unique_id": uid, "ds": pd.DatetimeIndex(ds), "y": np.asarray(y, dtype="float64")})


def grid(n: int, start: str = "2024-03-04", freq: str = "5min") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq=freq, tz=UTC)


def daily_pattern(n: int) -> np.ndarray:
    t = np.arange(n)
    return 10 + 3 * np.sin(2 * np.pi * t / DAY)


def assert_regular(frame: pd.DataFrame, step: str = "5min") -> None:
    assert not frame["y"].isna().any()
    for _, g in frame.groupby("unique_id"):
        assert (g["ds"].diff().dropna() == pd.Timedelta(step)).all()


def test_short_gap_is_interpolated_in_time():
    ds = grid(12)
    y = np.arange(12, dtype=float) * 2.0
    keep = np.ones(12, bool)
    keep[[4, 5, 6]] = False  # 15 minutes missing
    result = prepare_series(frame_of("cpu_usage_percent/a", ds[keep], y[keep]), gap_limit="1h", max_filled_share=0.5)
    out = result.frame
    assert out["ds"].tolist() == list(ds)
    np.testing.assert_allclose(out["y"], y)
    info = result.report["series"]["cpu_usage_percent/a"]
    assert info["interpolated"] == 3 and info["short_gaps"] == 1 and info["long_gaps"] == 0
    assert info["filled_share"] == pytest.approx(3 / 12, abs=1e-4)


def test_long_gap_takes_the_previous_day_and_meets_the_edges():
    n = 3 * DAY
    truth = daily_pattern(n)
    truth[2 * DAY:] += 5.0  # the level rises on day 3, before the gap
    ds = grid(n)
    gap = np.arange(2 * DAY + 100, 2 * DAY + 136)  # 3 hours missing, > gap_limit
    keep = np.ones(n, bool)
    keep[gap] = False
    result = prepare_series(frame_of("cpu_usage_percent/a", ds[keep], truth[keep]), gap_limit="1h")
    np.testing.assert_allclose(result.frame["y"].to_numpy(), truth, atol=1e-9)
    info = result.report["series"]["cpu_usage_percent/a"]
    assert info["long_gaps"] == 1
    assert info["long_gap_points"] == 36
    assert info["long_gap_from_previous_day"] == 36
    assert info["interpolated"] == 0


def test_long_gap_on_the_first_day_is_interpolated():
    n = 2 * DAY
    y = np.linspace(0, 100, n)
    keep = np.ones(n, bool)
    keep[50:80] = False  # 2.5 hours on day one: no earlier day to copy
    result = prepare_series(frame_of("m/a", grid(n)[keep], y[keep]), gap_limit="1h")
    np.testing.assert_allclose(result.frame["y"].to_numpy(), y)
    info = result.report["series"]["m/a"]
    assert info["long_gap_interpolated"] == 30 and info["long_gap_points"] == 30


def test_series_with_too_many_filled_points_is_dropped():
    n = 2 * DAY
    y = daily_pattern(n)
    keep = np.ones(n, bool)
    keep[DAY + 10: DAY + 150] = False  # 140 of 576 points missing (24 %)
    frame = pd.concat([frame_of("m/gappy", grid(n)[keep], y[keep]), frame_of("m/fine", grid(n), y)])
    result = prepare_series(frame, max_filled_share=0.2)
    assert result.series["unique_id"].tolist() == ["m/fine"]
    assert result.frame["unique_id"].unique().tolist() == ["m/fine"]
    [dropped] = result.report["dropped"]
    assert dropped["unique_id"] == "m/gappy"
    assert "24%" in dropped["reason"] and "max_filled_share" in dropped["reason"]
    kept = prepare_series(frame, max_filled_share=0.3)
    assert kept.series["unique_id"].tolist() == ["m/fine", "m/gappy"]


def test_counter_with_reset_becomes_a_rate_in_cores():
    ds = grid(7)
    # one core busy the whole time: +300 CPU-seconds per 5 min; reset to 0 between samples 3 and 4
    values = [1000.0, 1300.0, 1600.0, 1900.0, 60.0, 360.0, 660.0]
    result = prepare_series(frame_of("container_cpu_usage_seconds_total/pod-a", ds, values))
    out = result.frame
    assert out["unique_id"].unique().tolist() == ["container_cpu_usage_cores/pod-a"]
    assert out["ds"].tolist() == list(ds[1:])  # the first sample has no rate
    np.testing.assert_allclose(out["y"], [1.0, 1.0, 1.0, 0.2, 1.0, 1.0])
    row = result.series.iloc[0]
    assert row["unit"] == "cores" and row["metric"] == "container_cpu_usage_cores"
    assert json.loads(row["labels"])["source_metric"] == "container_cpu_usage_seconds_total"
    info = result.report["series"]["container_cpu_usage_cores/pod-a"]
    assert info["resets"] == 1 and info["counter"] is True
    assert result.report["renamed"] == {
        "container_cpu_usage_seconds_total/pod-a": "container_cpu_usage_cores/pod-a"}


def test_counter_flagged_in_series_table_and_bytes_total():
    ds = grid(4)
    frame = pd.concat([
        frame_of("net_in/m1", ds, [0.0, 30.0, 60.0, 120.0]),
        frame_of("node_network_receive_bytes_total/n1", ds, [0.0, 3000.0, 6000.0, 9000.0]),
    ])
    table = pd.DataFrame([{"unique_id": "net_in/m1", "metric": "net_in", "entity": "m1", "unit": "normalized",
                           "labels": json.dumps({"metric_type": "counter"}), "freq": "5min"}])
    result = prepare_series(frame, table)
    units = result.series.set_index("unique_id")["unit"].to_dict()
    assert units == {"net_in_per_second/m1": "normalized/s",
                     "node_network_receive_bytes_per_second/n1": "bytes/s"}
    rates = result.frame.groupby("unique_id")["y"].apply(list).to_dict()
    assert rates["net_in_per_second/m1"] == pytest.approx([0.1, 0.1, 0.2])
    assert rates["node_network_receive_bytes_per_second/n1"] == pytest.approx([10.0, 10.0, 10.0])


def test_duplicates_are_averaged_and_counted():
    ds = pd.DatetimeIndex(["2024-03-04 00:00", "2024-03-04 00:05", "2024-03-04 00:05", "2024-03-04 00:05",
                           "2024-03-04 00:10"], tz=UTC)
    result = prepare_series(frame_of("m/a", ds, [1.0, 2.0, 4.0, 9.0, 7.0]))
    assert result.frame["y"].tolist() == [1.0, 5.0, 7.0]
    assert result.report["series"]["m/a"]["duplicates"] == 2
    assert result.report["totals"]["duplicates"] == 2


def test_57_second_samples_are_averaged_into_5_minute_slots():
    ds = pd.date_range("2024-03-04", periods=12, freq="57s", tz=UTC)  # 00:00:00 .. 00:10:27
    result = prepare_series(frame_of("memory_utilization/p", ds, np.arange(12.0)))
    out = result.frame
    assert out["ds"].tolist() == list(grid(3))
    # slot t holds [t - 30 s, t + 4:30) (grid tolerance 10 % of 5 min): 0..4 (to 03:48);
    # 04:45..08:33 (5..9); 09:30.. (10, 11)
    np.testing.assert_allclose(out["y"], [2.0, 7.0, 10.5])
    # without tolerance, [t, t + 5 min): 0..5, 6..10, 11
    exact = prepare_series(frame_of("memory_utilization/p", ds, np.arange(12.0)), grid_tolerance=0.0)
    np.testing.assert_allclose(exact.frame["y"], [2.5, 8.0, 11.0])
    info = result.report["series"]["memory_utilization/p"]
    assert info["downsampled"] is True and info["native_step"] == "57s"
    assert result.series["freq"].tolist() == ["5min"]


def test_odd_minute_offsets_align_to_the_grid():
    ds = pd.date_range("2014-02-14 14:27", periods=4, freq="5min", tz=UTC)
    out = prepare_series(frame_of("cpu_utilization/x", ds, [1.0, 2.0, 3.0, 4.0])).frame
    assert out["ds"].tolist() == list(pd.date_range("2014-02-14 14:25", periods=4, freq="5min", tz=UTC))
    assert out["y"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_coarser_sampling_is_dropped_with_a_reason():
    result = prepare_series(frame_of("m/a", grid(10, freq="15min"), np.ones(10)))
    assert result.frame.empty
    assert "coarser than the 5min grid" in result.report["dropped"][0]["reason"]


def test_units_are_normalised_and_named():
    ds = grid(3)
    frame = pd.concat([frame_of("memory_usage_kb/vm1", ds, [1.0, 2.0, 3.0]),
                       frame_of("disk_read_kbps/vm1", ds, [1.0, 1.0, 1.0]),
                       frame_of("cpu_usage_percent/vm1", ds, [50.0, 50.0, 50.0])])
    table = pd.DataFrame([
        {"unique_id": "memory_usage_kb/vm1", "metric": "memory_usage_kb", "entity": "vm1", "unit": "KB",
         "labels": "{}", "freq": "5min"},
        {"unique_id": "disk_read_kbps/vm1", "metric": "disk_read_kbps", "entity": "vm1", "unit": "KB/s",
         "labels": "{}", "freq": "5min"},
    ])
    result = prepare_series(frame, table)
    by_id = result.frame.groupby("unique_id")["y"].first().to_dict()
    assert by_id == {"memory_usage_bytes/vm1": 1024.0, "disk_read_bytes_per_second/vm1": 1024.0,
                     "cpu_usage_percent/vm1": 50.0}
    assert result.series.set_index("unique_id")["unit"].to_dict() == {
        "cpu_usage_percent/vm1": "percent", "disk_read_bytes_per_second/vm1": "bytes/s",
        "memory_usage_bytes/vm1": "bytes"}
    configured = prepare_series(frame, table, unit_targets={"KB": "KB", "percent": "fraction"})
    by_id = configured.frame.groupby("unique_id")["y"].first().to_dict()
    assert by_id["memory_usage_kb/vm1"] == 1.0
    assert by_id["cpu_usage_fraction/vm1"] == 0.5
    with pytest.raises(ConfigError, match="no conversion from unit 'KB' to 'parsecs'"):
        prepare_series(frame, table, unit_targets={"KB": "parsecs"})


def test_bad_settings():
    frame = frame_of("m/a", grid(3), [1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="divide a day"):
        prepare_series(frame, freq="7min")
    with pytest.raises(ConfigError, match="max_filled_share"):
        prepare_series(frame, max_filled_share=1.5)


def test_real_quirks_nab_dst_and_bitbrains_vm20(shared_data):
    nab = load_series(shared_data / "nab_aws" / "realAWSCloudwatch" / "ec2_disk_write_bytes_1ef3de.csv", "nab")
    result = prepare_series(nab.frame, nab.series)
    assert_regular(result.frame)
    info = result.report["series"]["disk_write_bytes/1ef3de"]
    assert info["duplicates"] == 11
    assert info["interpolated"] == 12  # the skipped 02:00-02:59 hour of the DST jump
    assert result.frame["ds"].iloc[0] == pd.Timestamp("2014-03-01 17:30", tz=UTC)

    vm20 = load_series(shared_data / "bitbrains_rnd" / "2013-8" / "20.csv", "bitbrains", metrics=["cpu_usage_mhz"])
    result = prepare_series(vm20.frame, vm20.series)
    assert_regular(result.frame)
    assert result.report["series"]["cpu_usage_mhz/vm20"]["duplicates"] == 8600
    assert len(result.frame) == result.report["series"]["cpu_usage_mhz/vm20"]["points"]


def test_calendar_features():
    ds = pd.Series(pd.DatetimeIndex(["2024-03-04 00:00", "2024-03-09 06:00", "2024-03-10 18:00"], tz=UTC))
    cal = calendar_features(ds)
    assert list(cal.columns) == CALENDAR_COLUMNS
    np.testing.assert_allclose(cal["tod_sin"], [0.0, 1.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(cal["tod_cos"], [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(cal["dow_sin"], np.sin(2 * np.pi * np.array([0, 5, 6]) / 7))
    assert cal["is_weekend"].tolist() == [0.0, 1.0, 1.0]  # Monday, Saturday, Sunday
    shifted = calendar_features(ds, tz="Europe/Amsterdam")  # UTC+1 in March 2024 before the DST change
    np.testing.assert_allclose(shifted["tod_sin"].iloc[0], np.sin(2 * np.pi / 24), atol=1e-12)


def test_stamps_a_little_off_the_marks_fill_their_own_slot():
    """…00:04:59.9 counts for 00:05 (grid tolerance), so nothing is filled or dropped."""
    ds = grid(288 * 2)
    early = ds.to_series().copy()
    early.iloc[::4] -= pd.Timedelta("0.1s")
    jitter = ds + pd.to_timedelta(np.random.default_rng(1).uniform(-0.1, 0.1, ds.size), unit="s")
    y = daily_pattern(ds.size)
    for stamps in (pd.DatetimeIndex(early), jitter):
        result = prepare_series(frame_of("cpu_cores/a", stamps, y))
        assert result.dropped == []
        assert result.frame["ds"].tolist() == list(ds)
        np.testing.assert_allclose(result.frame["y"], y)
    # with no tolerance a quarter of the slots would be empty and the series dropped as 25 % filled
    strict = prepare_series(frame_of("cpu_cores/a", pd.DatetimeIndex(early), y), grid_tolerance=0.0)
    assert strict.dropped and "25% of its points would be filled" in strict.dropped[0]["reason"]


def test_grid_tolerance_is_checked():
    with pytest.raises(ConfigError, match="grid_tolerance"):
        prepare_series(frame_of("m/a", grid(3), [1.0, 2.0, 3.0]), grid_tolerance=0.6)
