"""The nightly plan: the replay's method on the latest data, for the next window and day."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_series

from foresight_lib.rightsizing import plan
from foresight_lib.rightsizing import sizing as rs
from foresight_lib.rightsizing.replay import replay
from foresight_lib.rightsizing.replay_spec import ReplaySpec

SPD = 288


def _fleet(days: int) -> pd.DataFrame:
    frame = make_daily_series(days=days, n_series=2)
    frame["unique_id"] = frame["unique_id"].str.replace("cpu_cores/", "container_cpu_cores/")
    memory = frame[frame["unique_id"] == "container_cpu_cores/c0"].assign(
        unique_id="container_memory_working_set_bytes/c0")
    return pd.concat([frame, memory.assign(y=memory["y"] * 2**28)], ignore_index=True)


def test_plan_sizes_the_next_window_and_day_of_every_series():
    frame = _fleet(4)
    tiny = frame[frame["unique_id"] == "container_cpu_cores/c1"].tail(300).assign(unique_id="container_cpu_cores/new")
    recs = plan.recommend(pd.concat([frame, tiny], ignore_index=True), profile="balanced", windows=2)
    assert list(recs.columns) == rs.RECOMMENDATION_COLUMNS
    good = recs[recs["reason"].isna()]
    assert len(good) == 9 and set(good["kind"]) == {"daily", "window"}  # three series x (a day, two windows)
    assert (good["request"] > 0).all() and (good["limit"] >= good["request"]).all()
    assert (good["replicas"] >= 1).all() and good["confidence"].between(0, 1).all()
    assert set(good.loc[good["kind"] == "daily", "model"]) == {"seasonal_naive"}
    assert set(good.loc[good["kind"] == "window", "model"]) == {"naive"}
    # the day and the first window start right after the last point, the second window 30 minutes later
    end = frame["ds"].max() + pd.Timedelta("5min")
    leads = good["lead"].map({"0m": pd.Timedelta(0), "30m": pd.Timedelta("30min")})
    assert (good["period_start"] == end + leads).all()
    assert sorted(good.loc[good["kind"] == "window", "lead"].unique()) == ["0m", "30m"]
    lengths = (good["period_end"] - good["period_start"]).groupby(good["kind"]).first()
    assert lengths.to_dict() == {"daily": pd.Timedelta("1D"), "window": pd.Timedelta("30min")}
    # rounding: cores to 10m below one core and 50m above, bytes to whole Mi
    for _, row in good.iterrows():
        if row["resource"] == "cpu":
            step = 0.01 if row["request"] < 1 else 0.05
            assert abs(row["request"] / step - round(row["request"] / step)) < 1e-6
        else:
            assert row["request_display"].endswith("Mi")
    # a series with a day of history gets no recommendation, and says why
    new = recs[recs["unique_id"] == "container_cpu_cores/new"]
    assert len(new) == 3 and new["request"].isna().all()
    assert new["reason"].str.contains("too little history").all()


@pytest.mark.parametrize(("mode", "lead"), [("daily", 0), ("window", 0), ("window", 2)])
def test_the_published_plan_is_what_the_replay_scores(mode, lead):
    """The plan made at a time equals the replay's recommendation for the period it sizes."""
    frame = _fleet(14)  # enough for the plan to walk every day its last window learns from
    last_start = frame["ds"].max().normalize()
    cut = frame[frame["ds"] < last_start - pd.Timedelta(minutes=30 * lead)]
    recs = plan.recommend(cut, profile="balanced", windows=3)
    result = replay(frame, ReplaySpec(mode=mode, model=plan.DEFAULT_MODEL[mode], lead_windows=lead))
    scored = result.records[(result.records["method"] == "forecast") & (result.records["period_start"] == last_start)]
    assert len(scored) == 3
    for _, row in scored.iterrows():
        published = recs[(recs["unique_id"] == row["unique_id"]) & (recs["kind"] == mode)
                         & (recs["lead"] == f"{30 * lead}m")].iloc[0]
        assert published["period_start"] == last_start
        assert published["request"] == pytest.approx(row["request"])
        assert published["factor"] == pytest.approx(row["factor"], abs=1e-4)


def test_plan_caps_a_learnt_window_factor_at_the_past_peak():
    """On/off usage: the factor learnt from the bursts would multiply the burst level too; the cap stops it."""
    frame = make_daily_series(days=4, n_series=1, noise=0.0)
    rng = np.random.default_rng(3)
    y = np.where(rng.random(len(frame)) < 0.08, 4.0, 0.1)  # bursts above the learnt target (3 %)
    y[-1] = 4.0  # the next window starts from a burst
    frame["y"] = y
    row = plan.recommend(frame).query("kind == 'window'").iloc[0]
    assert row["factor"] > 1.5
    assert 0 < row["request"] <= 4.0


def test_plan_learns_from_the_stretch_after_the_last_gap():
    frame = _fleet(4)
    uid = "container_cpu_cores/c0"
    old_gap = frame.index[(frame["unique_id"] == uid)][: SPD // 2]
    recent_gap = frame.index[(frame["unique_id"] == "container_cpu_cores/c1")][-SPD:-SPD + 3]
    frame.loc[old_gap, "y"] = np.nan
    frame.loc[recent_gap, "y"] = np.nan
    recs = plan.recommend(frame).set_index(["unique_id", "kind"])
    assert recs.loc[(uid, "daily"), "request"] > 0  # 3.5 days after the old gap: enough
    assert "too little history" in recs.loc[("container_cpu_cores/c1", "daily"), "reason"]


def test_replicas_for_a_given_capacity_keep_each_at_the_target_utilisation():
    frame = make_daily_series(days=4, n_series=1)
    recs = plan.recommend(frame, profile="balanced", replica_capacity={"cpu": 2.0}).set_index("kind")
    assert len(recs) == 2  # one window by default, and the day
    # the window's mean forecast (naive) is the last value: the replicas of 2 cores hold it at 70 %
    last = frame["y"].iloc[-1]
    assert recs.loc["window", "replicas"] == int(np.ceil(last / (0.7 * 2.0)))
    # the day's (seasonal naive) peaks at yesterday's highest value
    yesterday = frame["y"].iloc[-SPD:].max()
    assert recs.loc["daily", "replicas"] == int(np.ceil(yesterday / (0.7 * 2.0)))
    # without a capacity a replica is the recommended request, which holds the forecast peak
    plain = plan.recommend(frame, profile="balanced").set_index("kind")
    assert (plain["replicas"] >= 1).all()


def test_usage_at_or_below_zero_gets_no_size_and_says_why():
    frame = make_daily_series(days=4, n_series=1)
    frame["y"] = -frame["y"]
    recs = plan.recommend(frame)
    assert recs["request"].isna().all()
    assert recs["reason"].str.contains("below zero cannot be sized").all()



def test_an_idle_workload_gets_the_smallest_size_never_zero():
    """A forecast of zero is sized at one rounding step, as the replay scores it (and as the VPA's minimums do)."""
    frame = make_daily_series(days=4, n_series=1)
    frame["y"] = 0.0
    recs = plan.recommend(frame, windows=2)
    assert recs["reason"].isna().all()
    assert (recs["request"] == 0.01).all()  # 10 millicores
    assert (recs["limit"] > 0).all()


def test_walks_pickle_compactly_and_load_back_the_same():
    """A walk's per-period arrays are stored as one array each (fast to pickle); loaded, they are the same."""
    import pickle

    walks = plan.walk_plan(_fleet(4), windows=2)
    done = [sr for walked, _ in walks["walks"] for sr in walked]
    assert done and any(len(sr.actuals) > 10 for sr in done)
    done[0].means[1] = None  # a period with no forecast
    again = pickle.loads(pickle.dumps(walks))
    for sr, back in zip(done, (sr for walked, _ in again["walks"] for sr in walked), strict=True):
        state = {k: v for k, v in vars(sr).items() if k not in ("actuals", "means")}
        assert {k: v for k, v in vars(back).items() if k not in ("actuals", "means")}.keys() == state.keys()
        assert back.starts == sr.starts and back.notes == sr.notes and back.level_starts == sr.level_starts
        np.testing.assert_array_equal(back.bases, sr.bases)
        for name in ("actuals", "means"):
            assert len(getattr(back, name)) == len(getattr(sr, name))
            for a, b in zip(getattr(sr, name), getattr(back, name), strict=True):
                assert (a is None) == (b is None)
                if a is not None:
                    np.testing.assert_array_equal(b, a)
    assert isinstance(done[0].__getstate__()["actuals"], tuple)  # packed
    pd.testing.assert_frame_equal(plan.plan_from_walks(again), plan.plan_from_walks(walks))
