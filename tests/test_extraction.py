"""The extract step's source: the run's window, reading files or the demo, replaying a trace, keeping metrics."""
from __future__ import annotations

import pandas as pd
import pytest

from foresight_lib.config import load_config
from foresight_lib.errors import ConfigError, DataError
from foresight_lib.sources.extraction import extract_window, read_window, replay


def test_extract_window():
    cfg = load_config(overrides={"history_days": 3, "test_days": 1})
    start, end = extract_window("2024-03-15T02:00:00Z", cfg)
    assert end == pd.Timestamp("2024-03-15T02:00:00Z")
    assert end - start == pd.Timedelta(days=5)


def test_replay_moves_each_series_to_end_before_the_interval_end():
    frame = pd.DataFrame({
        "unique_id": ["a", "a", "b", "b"],
        "ds": pd.to_datetime(["2014-01-01 00:00", "2014-01-01 00:05", "2013-06-01 10:02", "2013-06-01 10:07"],
                             utc=True),
        "y": [1.0, 2.0, 3.0, 4.0],
    })
    out, shifts = replay(frame, pd.Timestamp("2024-03-15T02:00Z"), "5min")
    last = out.groupby("unique_id")["ds"].max()
    assert (last == pd.Timestamp("2024-03-15T01:55Z")).all()
    assert out["y"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert set(shifts) == {"a", "b"}


def test_an_unknown_metric_names_the_setting_where_it_was_set_and_what_the_source_has(tmp_path):
    ds = pd.date_range("2024-03-14", periods=48, freq="5min", tz="UTC")
    path = tmp_path / "series.csv"
    pd.concat([pd.DataFrame({"unique_id": f"{m}/a", "ds": ds, "y": 1.0}) for m in ("cpu_cores", "memory_bytes")]
              ).to_csv(path, index=False)
    overrides = {"source": {"kind": "files", "path": str(path), "metrics": ["gpu_cores"]}}
    cfg = load_config(overrides=overrides)
    start, end = extract_window("2024-03-14T04:00:00Z", cfg)
    with pytest.raises(ConfigError) as caught:
        read_window(cfg, start, end, None, overrides)
    assert str(caught.value) == ("source.metrics (set by the run's parameters): metric(s) ['gpu_cores'] are not "
                                 "in the source; it has ['cpu_cores', 'memory_bytes']")


def test_a_replayed_trace_is_judged_fresh_after_its_time_shift():
    """NAB files from 2014 replayed to the run's end: no series is stale at the data interval end."""
    from foresight_lib.quality.validation import validate_frame

    ds = pd.date_range("2014-02-14", periods=288 * 2, freq="5min", tz="UTC")
    frame = pd.DataFrame({"unique_id": "cpu_utilization/a", "ds": ds, "y": 10 + (ds.hour.to_numpy() % 7)})
    end = pd.Timestamp("2024-03-15T02:00Z")
    stale = validate_frame(frame, cfg=load_config(), data_end=end, raise_on_failure=False)
    assert stale.summary["source_stale"]
    shifted, _ = replay(frame, end, "5min")
    fresh = validate_frame(shifted, cfg=load_config(), data_end=end)
    assert fresh.reasons == {} and fresh.summary["data_age_s"] == 300


def test_a_metric_unknown_to_the_format_names_the_setting(tmp_path):
    (tmp_path / "ec2_cpu_utilization_1.csv").write_text("timestamp,value\n2024-03-14 00:00:00,1\n")
    cfg = load_config(overrides={"source": {"kind": "files", "path": str(tmp_path), "format": "nab"}})
    cfg.source.metrics = ["gpu"]
    start, end = extract_window("2024-03-14T04:00:00Z", cfg)
    with pytest.raises(ConfigError, match=r"^source.metrics \(set in .*foresight.yaml\): no NAB file of metric\(s\) "
                                          r"\['gpu'\] in .*; it has \['cpu_utilization'\]"):
        read_window(cfg, start, end, None, {})


def test_a_window_with_no_data_says_what_the_source_holds(tmp_path):
    ds = pd.date_range("2014-02-14", periods=12, freq="5min", tz="UTC")
    path = tmp_path / "series.csv"
    pd.DataFrame({"unique_id": "cpu_cores/a", "ds": ds, "y": 1.0}).to_csv(path, index=False)
    cfg = load_config(overrides={"source": {"kind": "files", "path": str(path)}})
    start, end = extract_window("2024-03-14T04:00:00Z", cfg)
    with pytest.raises(DataError, match=r"no data between .* \(it holds 2014-02-14 00:00:00\+00:00 .. "
                                         r"2014-02-14 00:55:00\+00:00\); .*source.replay: true"):
        read_window(cfg, start, end)
    cfg.source.replay = True
    window = read_window(cfg, start, end)
    assert window.frame["ds"].max() == end - pd.Timedelta("5min") and len(window.frame) == 12
    assert window.info["kind"] == "files" and set(window.info["replay_shifts"]) == {"cpu_cores/a"}


def test_the_demo_source_is_cut_to_the_window():
    cfg = load_config(overrides={"history_days": 1, "test_days": 1})
    start, end = extract_window("2024-03-15T02:00:00Z", cfg)
    frame, series, info = read_window(cfg, start, end)
    assert info == {"kind": "demo"}
    assert frame["ds"].min() >= start and frame["ds"].max() < end
    assert set(series["unique_id"]) == set(frame["unique_id"].unique())
