"""The generated demo data set: deterministic, realistic, with its documented quirks."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from foresight_lib.errors import DataError
from foresight_lib.frames import SERIES_TABLE_COLUMNS, check_series_frame
from foresight_lib.sources.demo import BROKEN_ENTITY, COUNTERS, CPU, MEMORY, METRICS, RESTART_AT, generate_demo

END = pd.Timestamp("2024-03-15T02:00:00Z")


@pytest.fixture(scope="module")
def demo():
    return generate_demo(END)


def rate(g: pd.DataFrame) -> pd.Series:
    """Per-second rate of a counter on the 5-minute grid (gaps stay missing)."""
    s = g.set_index("ds")["y"]
    return (s.diff() / s.index.to_series().diff().dt.total_seconds()).resample("5min").mean()


def test_shape_contract_and_window(demo):
    frame, series = demo
    assert list(frame.columns) == ["unique_id", "ds", "y"]
    pd.testing.assert_frame_equal(check_series_frame(frame), frame)  # already sorted, typed, UTC
    assert str(frame["ds"].dtype) == "datetime64[ns, UTC]"
    assert frame["ds"].max() == END
    assert frame["ds"].min() == END - pd.Timedelta(days=16) + pd.Timedelta("5min")
    assert list(series.columns) == SERIES_TABLE_COLUMNS
    assert set(series["unique_id"]) == set(frame["unique_id"])
    assert series["unique_id"].is_unique and not frame.duplicated(["unique_id", "ds"]).any()
    # 3 services, 8 pods, 4 metrics each, plus the broken series
    assert len(series) == 8 * 4 + 1
    assert set(series["metric"]) == set(METRICS)
    labels = series["labels"].map(json.loads)
    assert all({"namespace", "pod", "container", "service"} <= set(lab) for lab in labels)
    assert set(labels.map(lambda lab: lab["service"])) == {"frontend", "api", "worker", "legacy-exporter"}
    assert (series["unique_id"] == series["metric"] + "/" + series["entity"]).all()
    assert set(series.loc[series["metric"] == MEMORY, "unit"]) == {"bytes"}
    assert set(series.loc[series["metric"] == CPU, "unit"]) == {"seconds"}


def test_end_is_floored_and_naive_taken_as_utc():
    frame, _ = generate_demo("2024-03-15 02:04:30", days=1)
    assert frame["ds"].max() == END
    assert frame.groupby("unique_id").size().max() == 288


def test_deterministic_for_a_seed(demo):
    again, series_again = generate_demo(END)
    pd.testing.assert_frame_equal(again, demo[0])
    pd.testing.assert_frame_equal(series_again, demo[1])
    other, _ = generate_demo(END, seed=1)
    assert not np.allclose(other["y"].to_numpy()[:1000], demo[0]["y"].to_numpy()[:1000])


def test_overlapping_windows_agree(demo):
    """A backfill one day earlier sees the same gauge values on the overlap (same world, shifted window)."""
    frame, _ = demo
    earlier, _ = generate_demo(END - pd.Timedelta("1D"))
    assert earlier["ds"].max() == END - pd.Timedelta("1D")
    gauges = (frame["unique_id"].str.startswith(MEMORY) & ~frame["unique_id"].str.contains("/shop/api-")
              & ~frame["unique_id"].str.endswith(BROKEN_ENTITY))
    both = frame[gauges].merge(earlier, on=["unique_id", "ds"])
    assert len(both) > 10_000
    np.testing.assert_allclose(both["y_x"], both["y_y"])


def test_daily_and_weekly_cycles(demo):
    frame, _ = demo
    for service in ("frontend", "worker"):
        uid = frame.loc[frame["unique_id"].str.startswith(f"{CPU}/") & frame["unique_id"].str.contains(
            f"/{service}-"), "unique_id"].iloc[0]
        cores = rate(frame[frame["unique_id"] == uid])
        assert cores.autocorr(288) > 0.7, service  # one day
        assert cores.autocorr(144) < cores.autocorr(288) - 0.3, service  # half a day is clearly less alike
        assert 0.01 < cores.median() < 3
    frontend = frame[frame["unique_id"].str.startswith(f"{CPU}/shop/frontend-")]
    cores = rate(frontend[frontend["unique_id"] == frontend["unique_id"].iloc[0]])
    weekend = cores[cores.index.dayofweek >= 5].mean()
    weekday = cores[cores.index.dayofweek < 5].mean()
    assert weekend < 0.8 * weekday


def test_counters_monotonic_except_the_one_restart(demo):
    frame, _ = demo
    drops = {}
    for uid, g in frame.groupby("unique_id"):
        if uid.split("/")[0] in COUNTERS:
            d = np.diff(g["y"].to_numpy())
            drops[uid] = g["ds"].to_numpy()[1:][d < 0]
    reset = {uid: when for uid, when in drops.items() if len(when)}
    assert len(reset) == 3  # cpu, network and disk counters of the restarted container
    assert len({uid.split("/", 1)[1] for uid in reset}) == 1
    assert all(len(when) == 1 for when in reset.values())
    start = frame["ds"].min()
    expected = start + int(16 * 288 * RESTART_AT) * pd.Timedelta("5min")
    for when in reset.values():
        assert abs(pd.Timestamp(when[0]) - expected) <= pd.Timedelta("1h")


def test_gaps_spikes_and_broken_series(demo):
    frame, series = demo
    sizes = frame.groupby("unique_id").size()
    assert (sizes < 16 * 288).sum() >= 5  # some scrape gaps
    assert (sizes >= 0.9 * 16 * 288).all()  # but no series loses more than a tenth
    broken = series[series["entity"] == BROKEN_ENTITY]
    assert len(broken) == 1 and "broken" in json.loads(broken["labels"].iloc[0])
    values = frame.loc[frame["unique_id"] == broken["unique_id"].iloc[0], "y"]
    assert (values < 0).all()
    healthy = frame[frame["unique_id"] != broken["unique_id"].iloc[0]]
    assert (healthy["y"] >= 0).all() and healthy["y"].notna().all()
    memory = healthy[healthy["unique_id"].str.startswith(MEMORY)].groupby("unique_id")["y"]
    assert (memory.max() / memory.median()).max() > 1.3  # occasional spikes


def test_bad_arguments():
    with pytest.raises(DataError, match="at least 1 day"):
        generate_demo(END, days=0)
