"""The daily memory peak model, per-resource targets, and bad input: short series, restarts, zero sizes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from foresight_lib.errors import ConfigError
from foresight_lib.rightsizing import plan
from foresight_lib.rightsizing import sizing as rs
from foresight_lib.rightsizing.replay import replay
from foresight_lib.rightsizing.replay_spec import ReplaySpec

SPD = 288
MEM = "container_memory_working_set_bytes/app"
CPU = "container_cpu_cores/app"


def _series(uid: str, values: np.ndarray) -> pd.DataFrame:
    ds = pd.date_range("2024-03-04", periods=values.size, freq="5min", tz="UTC")
    return pd.DataFrame({"unique_id": uid, "ds": ds, "y": values.astype("float64")})


def _memory(levels: list[tuple[float, float]], seed: int = 0) -> np.ndarray:
    """Memory at ``level`` bytes for ``days`` days, per (level, days) part, with 1 % noise and a daily bump."""
    rng = np.random.default_rng(seed)
    parts = []
    for level, days in levels:
        n = int(round(days * SPD))
        bump = 1 + 0.05 * np.sin(np.arange(n) * 2 * np.pi / SPD)
        parts.append(level * bump * (1 + 0.01 * rng.standard_normal(n)))
    return np.concatenate(parts)


def test_last_step_change_finds_a_lasting_rise_and_ignores_bursts_and_drops():
    block = 12
    flat = np.full(3 * SPD, 1.0)
    assert rs.last_step_change(flat, block) == 0
    rise = np.concatenate([flat, np.full(SPD // 2, 3.0)])
    assert rs.last_step_change(rise, block) == 3 * SPD
    burst = np.concatenate([flat, np.full(24, 5.0), np.full(SPD, 1.0)])  # two hours, then back
    assert rs.last_step_change(burst, block) == 0
    drop = np.concatenate([flat, np.full(SPD, 0.2)])  # memory that fell grows back: not acted on
    assert rs.last_step_change(drop, block) == 0


def test_daily_peak_base_uses_the_recent_peaks_since_the_change():
    history = _memory([(1e9, 5)])
    base, why, since = rs.daily_peak_base(history, SPD, days=3)
    assert why is None and since == 0
    assert base == pytest.approx(history[-3 * SPD:].max())
    raised = _memory([(1e9, 4), (3e9, 0.5)])
    base, why, since = rs.daily_peak_base(raised, SPD)
    assert np.isnan(base) and "fallback estimator" in why and since == 4 * SPD


def test_memory_step_up_does_not_poison_the_next_days_size():
    """After a restart with a larger footprint the factor is learnt from the new level only."""
    frame = _series(MEM, _memory([(1e9, 5), (3e9, 3)]))
    recs = plan.recommend(frame, profile="balanced", windows=1)
    day = recs[recs["kind"] == "daily"].iloc[0]
    assert day["reason"] is None or pd.isna(day["reason"])
    assert day["factor"] <= rs.MEMORY_MIN_FACTOR + 0.02  # not inflated by the jump's 3x ratios
    assert 3e9 <= day["request"] <= 3e9 * 1.05 * 1.12
    assert day["target_violation"] == pytest.approx(rs.get_profile("balanced").target_for("memory"))


def test_a_series_too_short_for_the_peak_model_gets_the_fallback_and_says_so():
    frame = _series(MEM, _memory([(1e9, 3), (3e9, 0.5)]))
    recs = plan.recommend(frame, profile="balanced", windows=1)
    day = recs[recs["kind"] == "daily"].iloc[0]
    assert "fallback estimator" in day["reason"]
    assert np.isfinite(day["request"]) and day["request"] >= 3e9  # never below the new level


def test_recommendations_name_their_per_resource_target():
    rng = np.random.default_rng(1)
    cpu = 0.5 + 0.2 * np.sin(np.arange(4 * SPD) * 2 * np.pi / SPD) + 0.02 * rng.standard_normal(4 * SPD)
    frame = pd.concat([_series(CPU, cpu), _series(MEM, _memory([(1e9, 4)]))], ignore_index=True)
    for name in ("cost", "balanced", "performance"):
        prof = rs.get_profile(name)
        recs = plan.recommend(frame, profile=name, windows=2)
        by = recs.groupby("resource")["target_violation"].unique()
        assert list(by["cpu"]) == [prof.target_violation]
        assert list(by["memory"]) == [prof.memory_target_violation]


@pytest.mark.parametrize("mode", ["daily", "window"])
def test_no_size_is_ever_zero_negative_or_nan(mode):
    rng = np.random.default_rng(2)
    n = 5 * SPD
    spiky = np.where(rng.random(n) < 0.02, 4.0, 0.01)
    parts = [
        _series("container_cpu_cores/idle", np.zeros(n)),
        _series("container_cpu_cores/spiky", spiky),
        _series("container_memory_working_set_bytes/idle", np.zeros(n)),
        _series("container_memory_working_set_bytes/restart", _memory([(2e9, 2.2), (1e5, 0.3), (2e9, 2.5)])),
        _series("container_memory_working_set_bytes/tiny", np.full(n, 10.0)),
    ]
    frame = pd.concat(parts, ignore_index=True)
    recs = plan.recommend(frame, profile="balanced", windows=4)
    sized = recs[recs["request"].notna()]
    assert len(sized) == len(recs) == 5 * 5  # every series: four windows and a day
    assert (sized["request"] > 0).all() and np.isfinite(sized["request"]).all()
    assert (sized["limit"] >= sized["request"]).all()
    result = replay(frame, ReplaySpec(mode=mode, model="naive" if mode == "window" else "seasonal_naive",
                                      margins=(0.0,)))
    requests = result.records["request"].to_numpy("float64")
    assert requests.size and np.isfinite(requests).all() and (requests > 0).all()


def test_a_memory_window_is_not_sized_below_the_recent_daily_peaks():
    """A job that takes 3 GB for an hour every two or three days: the windows' factors,
    learnt from the last two days, forget it; the floor of the recent daily peaks keeps
    its hour under the request."""
    n = 6 * SPD
    y = np.full(n, 1e9)
    for hour in (1, 68, 100):  # day 0 01:00, day 2 20:00 (67 h later), day 4 04:00
        y[hour * 12:hour * 12 + 12] = 3e9
    steady = [_series(f"container_memory_working_set_bytes/steady{k}", _memory([(1e9, 6)], seed=k)) for k in range(3)]
    frame = pd.concat([_series(MEM, y), *steady], ignore_index=True)

    def scored(floor_days: int) -> pd.DataFrame:
        spec = ReplaySpec(mode="window", model="naive", margins=(0.0,), window_memory_floor_days=floor_days)
        records = replay(frame, spec).records
        return records[(records["method"] == "forecast") & (records["unique_id"] == MEM)]

    without, with_floor = scored(0), scored(rs.WINDOW_MEMORY_FLOOR_DAYS)
    assert rs.WINDOW_MEMORY_FLOOR_DAYS >= 1
    assert without["over"].sum() > 0  # the nightly hour went over the shrunk windows
    assert with_floor["over"].sum() == 0
    assert (with_floor["request"] >= 3e9).all()
    assert without["request"].min() < 3e9


def test_the_window_memory_floor_restarts_after_a_step_down_is_not_acted_on_but_a_step_up_is():
    """A restart with a larger footprint: the windows after it are sized from the new level."""
    frame = _series(MEM, _memory([(1e9, 4), (3e9, 2)]))
    spec = ReplaySpec(mode="window", model="naive", margins=(0.0,))
    records = replay(frame, spec).records
    last_day = records[(records["method"] == "forecast")
                       & (records["period_start"] >= records["period_start"].max().normalize())]
    assert (last_day["request"] >= 3e9 * 0.95).all()
    assert (last_day["request"] <= 3e9 * 1.05 * 1.3).all()


def test_daily_factors_are_shrunk_toward_the_metrics_fleet():
    """A bursty series' daily factor, learnt from a few days, is pulled toward its metric's
    fleet factor (mostly steady series); unpooled, each keeps its own."""
    rng = np.random.default_rng(3)
    n, t = 6 * SPD, np.arange(6 * SPD)
    shape = 0.5 + 0.2 * np.sin(t * 2 * np.pi / SPD)
    bursty = shape * (1 + 0.02 * rng.standard_normal(n)) + np.where(rng.random(n) < 0.08, 0.6, 0.0)
    steady = [shape * (1 + 0.02 * rng.standard_normal(n)) for _ in range(2)]
    frame = pd.concat([_series("container_cpu_cores/bursty", bursty),
                       *(_series(f"container_cpu_cores/steady{k}", y) for k, y in enumerate(steady))],
                      ignore_index=True)

    def factors(**pool) -> pd.DataFrame:
        records = replay(frame, ReplaySpec(mode="daily", model="seasonal_naive", margins=(0.0,), **pool)).records
        records = records[records["method"] == "forecast"]
        return records.pivot_table(index="period_start", columns="unique_id", values="factor")

    own, pooled, default = factors(daily_pooled_resources=()), factors(daily_pooled_resources=("cpu",)), factors()
    assert "cpu" in rs.DAILY_POOLED_RESOURCES and "memory" not in rs.DAILY_POOLED_RESOURCES
    pd.testing.assert_frame_equal(default, pooled)
    learnt = own.index[own.index > own.index[0]]  # the first day has nothing learnt: the fixed margin
    b, s = "container_cpu_cores/bursty", "container_cpu_cores/steady0"
    assert (own.loc[learnt, b] > own.loc[learnt, s]).all()
    assert (pooled.loc[learnt, b] < own.loc[learnt, b]).all()
    assert (pooled.loc[learnt, b] > own.loc[learnt, s]).all()  # toward the fleet, not onto a steady one


def test_a_restart_does_not_poison_the_fleet_factor_of_the_metrics_other_series():
    """The pooled factor leaves out each series' periods before its latest step change."""
    frame = pd.concat([_series(MEM, _memory([(1e9, 5), (3e9, 4)])),
                       _series("container_memory_working_set_bytes/steady", _memory([(2e9, 9)], seed=1))],
                      ignore_index=True)
    spec = ReplaySpec(mode="daily", model="seasonal_naive", margins=(0.0,), daily_pooled_resources=("memory",))
    records = replay(frame, spec).records
    since = pd.Timestamp("2024-03-10", tz="UTC")  # from the day after the restart's
    after = records[(records["method"] == "forecast") & (records["period_start"] >= since)]
    assert set(after["unique_id"]) == {MEM, "container_memory_working_set_bytes/steady"}
    assert (after["factor"] <= rs.MEMORY_MIN_FACTOR + 0.02).all()


def test_a_daily_base_from_the_last_days_usage_is_their_quantile():
    rng = np.random.default_rng(4)
    n = 6 * SPD
    cpu = 0.5 + 0.1 * np.arange(n) / SPD + 0.05 * rng.standard_normal(n)  # rising: each day differs
    frame = _series(CPU, cpu)
    prof = rs.get_profile("balanced")
    for days in (0, 2):
        records = replay(frame, ReplaySpec(mode="daily", model="seasonal_naive", margins=(0.0,),
                                           daily_base_days=days)).records
        row = records[records["method"] == "forecast"].iloc[-1]
        start = int((row["period_start"] - frame["ds"].iloc[0]) / pd.Timedelta("5min"))
        span = days or 1  # seasonal naive: tomorrow is today again
        assert row["base"] == pytest.approx(np.quantile(cpu[start - span * SPD:start], prof.quantile), rel=1e-6)
    with pytest.raises(ConfigError, match="daily_base_days"):
        ReplaySpec(mode="daily", daily_base_days=-1)
