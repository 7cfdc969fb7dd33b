"""Replay: scoring by hand, the daily and window walks, and the command on real Bitbrains data."""
from __future__ import annotations

import json
import struct

import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_series

from foresight_lib.cli import main
from foresight_lib.errors import ConfigError, DataError
from foresight_lib.rightsizing.replay import replay
from foresight_lib.rightsizing.replay_report import compare, score
from foresight_lib.rightsizing.replay_spec import ReplaySpec


def test_score_by_hand():
    usage = np.array([1.0, 2.0, 3.0, 5.0])
    s = score(4.0, usage, limit=4.5)
    # provisioned 4 x 4 = 16; unused 3 + 2 + 1 + 0 = 6; one point (5) above the request and the limit
    assert s["provisioned"] == 16.0
    assert s["unused"] == 6.0
    assert s["slack"] == pytest.approx(6 / 16)
    assert s["violations"] == pytest.approx(1 / 4)
    assert s["violations_limit"] == pytest.approx(1 / 4)
    per_point = score(np.array([2.0, 2.0, 4.0, 4.0]), usage)
    # unused 1 + 0 + 1 + 0 = 2 of 12; above the request: only 5 > 4 (2 > 2 is not above)
    assert per_point["slack"] == pytest.approx(2 / 12)
    assert per_point["violations"] == pytest.approx(1 / 4)
    assert "violations_limit" not in per_point


def _trace(days: int, pattern: np.ndarray, metric: str = "cpu_cores", entity: str = "web") -> pd.DataFrame:
    ds = pd.date_range("2024-03-01", periods=days * 288, freq="5min", tz="UTC")
    return pd.DataFrame({"unique_id": f"{metric}/{entity}", "ds": ds, "y": np.tile(pattern, days)})


def test_daily_replay_scores_a_hand_made_trace():
    # a day of 288 points: 0.1 core all day, 0.5 core for one hour (12 points)
    day = np.full(288, 0.1)
    day[100:112] = 0.5
    frame = _trace(4, day)
    result = replay(frame, ReplaySpec(mode="daily", model="seasonal_naive", min_history_days=2))
    rec = result.records
    assert sorted(rec["method"].unique()) == ["crane", "forecast", "vpa"]
    assert rec["period_start"].dt.day.tolist().count(3) == 3  # days 3 and 4 scored, three methods each
    # Crane: P99 of the history (two identical days) x 1.15, rounded up to 10m
    crane = rec[rec["method"] == "crane"].iloc[0]
    expected = np.percentile(np.tile(day, 2), 99) * 1.15
    assert crane["request"] == pytest.approx(np.ceil(expected / 0.01 - 1e-9) * 0.01)
    # its slack and violations recomputed by hand from the request
    assert crane["slack"] == pytest.approx(np.maximum(crane["request"] - day, 0).sum() / (288 * crane["request"]))
    assert crane["violations"] == pytest.approx((day > crane["request"]).mean())
    # every request is positive and on the 10m grid
    assert (rec["request"] > 0).all()
    assert np.allclose(np.round(rec["request"] / 0.01), rec["request"] / 0.01)
    # totals pool the records' sums
    tot = result.totals.set_index("method").loc["crane"]
    crane_rows = rec[rec["method"] == "crane"]
    assert tot["slack"] == pytest.approx(crane_rows["unused"].sum() / crane_rows["provisioned"].sum())


def test_window_replay_reactive_and_forecast():
    rng = np.random.default_rng(1)
    day = 1.0 + 0.5 * np.sin(np.linspace(0, 2 * np.pi, 288, endpoint=False))
    frame = _trace(4, day)
    frame["y"] += rng.normal(0, 0.02, len(frame))
    result = replay(frame, ReplaySpec(mode="window", model="naive", min_history_days=2, max_days=1))
    rec = result.records
    assert set(rec["method"]) == {"forecast", "reactive"}
    assert (rec.groupby("method").size() == 48).all()  # 48 windows of 30 minutes in the scored day
    y = frame["y"].to_numpy()
    first = rec[rec["method"] == "reactive"].iloc[0]
    start = 2 * 288
    peak = y[start - 6:start].max() * 1.15  # above one core: rounded up to 50m
    assert peak > 1.0
    assert first["request"] == pytest.approx(np.ceil(peak / 0.05 - 1e-9) * 0.05)
    assert first["period_end"] - first["period_start"] == pd.Timedelta("30min")
    # the forecast plan never sees the window it sizes: changing the future leaves the request unchanged
    changed = frame.copy()
    changed.loc[start + 6:, "y"] += 100.0
    again = replay(changed, ReplaySpec(mode="window", model="naive", min_history_days=2, max_days=1)).records
    first_two = again[again["method"] == "forecast"]["request"].iloc[:2].to_numpy()
    assert np.allclose(first_two, rec[rec["method"] == "forecast"]["request"].iloc[:2].to_numpy())
    assert len(result.sweep) == 2 * len(ReplaySpec().margins)


def test_window_plan_learns_before_the_first_scored_day_and_never_exceeds_the_past_peak():
    # on/off usage: 0.1 core, with eight one-hour 4-core bursts a day at random window starts
    rng = np.random.default_rng(3)
    y = np.full(4 * 288, 0.1)
    for d in range(4):
        for at in rng.choice(np.arange(0, 276, 6), 8, replace=False):
            y[d * 288 + at:d * 288 + at + 12] = 4.0
    frame = _trace(4, np.zeros(288))
    frame["y"] = y
    result = replay(frame, ReplaySpec(mode="window", model="naive", min_history_days=2))
    fc = result.records[result.records["method"] == "forecast"]
    # the day before the first scored one was walked: the very first window has a learnt factor
    assert fc["factor"].iloc[0] != pytest.approx(1.1)
    # the unannounced bursts teach a large factor (idle windows get more than 0.1 core) ...
    assert fc["factor"].max() > 2.0
    # ... but during a burst the level times that factor is capped at the past peak, 4 cores
    assert fc["request"].max() == pytest.approx(4.0)


def test_daily_plan_caps_at_the_past_peak():
    day = np.full(288, 1.0)
    day[::20] = 2.0
    frame = _trace(5, day)
    fc = replay(frame, ReplaySpec(mode="daily", model="seasonal_naive", min_history_days=2)).records
    fc = fc[fc["method"] == "forecast"]
    # first scored day: no past, upper bound x the fixed margin; later days: learnt, and at most the past peak
    assert fc["factor"].iloc[0] == pytest.approx(1.1)
    assert (fc["request"].iloc[1:] <= 2.0 + 1e-9).all()
    assert (fc["violations"].iloc[1:] == 0).all()


def test_compare_ignores_a_nan_limit_column_for_cpu():
    totals = pd.DataFrame([
        {"metric": "cpu", "method": "forecast", "slack": 0.3, "violations": 0.02, "violations_limit": np.nan},
        {"metric": "cpu", "method": "reactive", "slack": 0.4, "violations": 0.03, "violations_limit": np.nan},
        {"metric": "mem", "method": "forecast", "slack": 0.3, "violations": 0.02, "violations_limit": 0.02},
        {"metric": "mem", "method": "reactive", "slack": 0.4, "violations": 0.03, "violations_limit": 0.01},
    ])
    verdicts = {c["metric"]: c["dominates"] for c in compare(totals, "window")}
    assert verdicts == {"cpu": True, "mem": False}  # memory loses on the limit


def test_memory_is_scored_against_the_limit_too():
    day = np.full(288, 300.0 * 2**20)
    day[::50] = 600.0 * 2**20
    frame = _trace(3, day, metric="memory_usage_bytes", entity="db")
    rec = replay(frame, ReplaySpec(mode="daily", min_history_days=2)).records
    assert rec["violations_limit"].notna().all()
    assert (rec["limit"] >= rec["request"]).all()
    mib = rec["request"] / 2**20
    assert np.allclose(mib, np.round(mib))


def test_report_has_frontier_verdicts_and_memory_per_entity_day():
    day = np.full(288, 300.0 * 2**20)
    day[::50] = 600.0 * 2**20
    frame = pd.concat([_trace(5, day, metric="memory_usage_bytes", entity="db"),
                       _trace(5, day * 0.5, metric="memory_usage_bytes", entity="web")])
    report = replay(frame, ReplaySpec(mode="daily", min_history_days=2)).report()
    frontiers = {(c["metric"], c["baseline"]): c for c in report["frontiers"]}
    assert set(frontiers) == {("memory_usage_bytes", "vpa"), ("memory_usage_bytes", "crane")}
    for c in frontiers.values():
        assert c["plan_frontier"] and c["baseline_frontier"] and isinstance(c["reached"], bool) and c["why"]
    days = {d["method"]: d for d in report["entity_days"]}
    assert set(days) == {"forecast", "vpa", "crane"}
    assert days["vpa"]["entities"] == 2 and days["vpa"]["entity_days"] == 6
    assert 0 <= days["vpa"]["oom_free"] <= 1 and days["vpa"]["young_entities"] == []


def test_the_vpa_baseline_bumps_after_a_day_over_its_limit_and_keeps_250_mib():
    small = np.full(288, 10.0 * 2**20)  # 10 MiB: below the VPA's 250 MiB per pod
    jump = small.copy()
    jump[100:] = 400.0 * 2**20  # the fourth day goes over
    frame = _trace(3, small, metric="memory_usage_bytes", entity="db")
    frame = pd.concat([frame, _trace(2, jump, metric="memory_usage_bytes", entity="db").assign(
        ds=lambda f: f["ds"] + pd.Timedelta("3D"))])
    frame["y"] = np.r_[np.tile(small, 3), jump, np.full(288, 10.0 * 2**20)]
    rec = replay(frame, ReplaySpec(mode="daily", min_history_days=2)).records
    vpa = rec[rec["method"] == "vpa"].sort_values("period_start")
    assert (vpa["request"] >= 250 * 2**20).all()
    assert vpa["request"].iloc[-1] >= 1.2 * 400 * 2**20  # the day after the OOM


def test_too_short_series_are_skipped_with_a_reason():
    frame = pd.concat([make_daily_series(days=4, n_series=1), _trace(1, np.ones(288), entity="new")])
    result = replay(frame, ReplaySpec(mode="daily", model="naive"))
    assert [s["unique_id"] for s in result.skipped] == ["cpu_cores/new"]
    assert "too little history" in result.skipped[0]["reason"]
    with pytest.raises(DataError, match="no series can be replayed"):
        replay(_trace(1, np.ones(288)), ReplaySpec(mode="daily"))


def test_bad_spec_is_a_config_error():
    with pytest.raises(ConfigError):
        ReplaySpec(mode="hourly")
    with pytest.raises(ConfigError):
        ReplaySpec(window="7m")
    with pytest.raises(ConfigError):
        ReplaySpec(profile="cheap")


def test_compare_checks_both_axes():
    totals = pd.DataFrame([
        {"metric": "cpu", "method": "forecast", "slack": 0.3, "violations": 0.02, "violations_limit": None},
        {"metric": "cpu", "method": "vpa", "slack": 0.4, "violations": 0.03, "violations_limit": None},
        {"metric": "cpu", "method": "crane", "slack": 0.5, "violations": 0.01, "violations_limit": None},
    ])
    verdicts = {c["baseline"]: c["dominates"] for c in compare(totals, "daily")}
    assert verdicts == {"vpa": True, "crane": False}


@pytest.mark.parametrize("mode", ["daily", "window"])
def test_dominating_is_no_worse_on_both_axes_and_better_on_one(mode):
    def verdict(forecast: tuple[float, float], baseline: tuple[float, float]) -> bool:
        totals = pd.DataFrame([
            {"metric": "mem", "method": "forecast", "slack": forecast[0], "violations": forecast[1],
             "violations_limit": 0.0},
            {"metric": "mem", "method": "base", "slack": baseline[0], "violations": baseline[1],
             "violations_limit": 0.0},
        ])
        return compare(totals, mode)[0]["dominates"]

    assert verdict((0.09, 0.0), (0.15, 0.0))  # less slack, neither goes over
    assert verdict((0.15, 0.01), (0.15, 0.02))  # fewer violations, the same slack
    assert not verdict((0.15, 0.02), (0.15, 0.02))  # the same point
    assert not verdict((0.10, 0.03), (0.15, 0.02))  # a trade-off, not a win


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["daily", "window"])
def test_command_end_to_end_on_bitbrains(shared_data, tmp_path, mode, capsys):
    out, plot = tmp_path / "report.json", tmp_path / "slack_violations.png"
    code = main([
        "rightsize-replay", "--input", str(shared_data / "bitbrains_rnd" / "2013-8" / "[13]00.csv"),
        "--format", "bitbrains", "--metrics", "cpu_usage_mhz,memory_usage_kb", "--mode", mode,
        "--profile", "balanced", "--model", "seasonal_naive", "--last-days", "4",
        "--output", str(out), "--plot", str(plot),
    ])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["mode"] == mode and report["plot"] == str(plot)
    assert report["series"] == 4  # two VMs x (cpu, memory)
    methods = {"daily": {"forecast", "vpa", "crane"}, "window": {"forecast", "reactive"}}[mode]
    assert {t["method"] for t in report["totals"]} == methods
    assert {t["metric"] for t in report["totals"]} == {"cpu_usage_mhz", "memory_usage_bytes"}
    records = pd.DataFrame(report["records"])
    assert (records["request"] > 0).all()
    per_period = 1 if mode == "daily" else 48
    assert len(records) == 4 * len(methods) * per_period  # 4 days kept, 2 of history, 1 complete UTC day scored
    # every record re-scores to its stored figures
    assert (records["slack"] >= 0).all() and (records["slack"] <= 1).all()
    assert records["violations"].between(0, 1).all()
    assert plot.stat().st_size > 20_000
    width, height = _png_size(plot)
    assert width > 600 and height > 300
    printed = capsys.readouterr().out
    assert "forecast vs" in printed and "frontiers:" in printed and "per entity-day" in printed
    assert {c["baseline"] for c in report["frontiers"]} == methods - {"forecast"}


def test_a_window_sized_ahead_sees_only_the_data_before_its_decision_point():
    rng = np.random.default_rng(2)
    day = 1.0 + 0.5 * np.sin(np.linspace(0, 2 * np.pi, 288, endpoint=False))
    frame = _trace(4, day)
    frame["y"] += rng.normal(0, 0.05, len(frame))
    spec = ReplaySpec(mode="window", model="naive", min_history_days=2, max_days=1, lead_windows=2)
    rec = replay(frame, spec).records
    fc = rec[rec["method"] == "forecast"].reset_index(drop=True)
    k = 10  # the eleventh window of the scored day, decided two windows (an hour) before it starts
    decided = 2 * 288 + 6 * k - 12
    changed = frame.copy()
    changed.loc[decided:, "y"] += 100.0
    again = replay(changed, spec).records
    again = again[again["method"] == "forecast"].reset_index(drop=True)
    assert again.loc[k, "request"] == pytest.approx(fc.loc[k, "request"])
    assert again.loc[k, "factor"] == pytest.approx(fc.loc[k, "factor"])
    with pytest.raises(ConfigError, match="lead_windows"):
        ReplaySpec(mode="window", lead_windows=48)
    with pytest.raises(ConfigError, match="window mode only"):
        ReplaySpec(mode="daily", lead_windows=1)


def _series_from(start: str, days: float, entity: str) -> pd.DataFrame:
    """A CPU series with a daily cycle from ``start``, ``days`` long."""
    ds = pd.date_range(start, periods=int(days * 288), freq="5min", tz="UTC")
    minutes = (ds.hour * 60 + ds.minute).to_numpy()
    y = 1.0 + 0.5 * np.sin(2 * np.pi * minutes / 1440) + 0.01 * (np.arange(len(ds)) % 7)
    return pd.DataFrame({"unique_id": f"cpu_cores/{entity}", "ds": ds, "y": y})


def test_a_series_one_method_cannot_size_is_left_out_of_every_method():
    # With one day of minimum history, the series that starts at midnight reaches its first
    # scored day with exactly one day of history: too little for seasonal naive (and its
    # fallback, the same model), so the forecast gives no size there. The series that starts
    # at noon has a day and a half behind its first scored day.
    spec = ReplaySpec(mode="daily", model="seasonal_naive", min_history_days=1)
    short = _series_from("2024-03-01", 3, "short-past")
    ok = _series_from("2024-02-29 12:00", 3.5, "long-past")
    result = replay(pd.concat([short, ok], ignore_index=True), spec)
    assert [s["unique_id"] for s in result.skipped] == ["cpu_cores/short-past"]
    reason = result.skipped[0]["reason"]
    assert "no forecast recommendation for 1 of 2 scored day(s), the first at 2024-03-02T00:00:00+00:00" in reason
    assert "model seasonal_naive gave no finite forecast" in reason and "left out of every method" in reason
    # every method is scored on the same series, the one every method could size ...
    rec = result.records
    assert set(rec["unique_id"]) == {"cpu_cores/long-past"}
    assert rec.groupby("method")["unique_id"].nunique().to_dict() == {"crane": 1, "forecast": 1, "vpa": 1}
    assert (result.totals["series"] == 1).all()
    assert result.report()["series"] == 1
    # ... with exactly the figures of a replay of that series alone (daily sizes pool nothing across series)
    alone = replay(ok, spec)
    pd.testing.assert_frame_equal(result.totals, alone.totals)
    pd.testing.assert_frame_equal(result.sweep, alone.sweep)
    pd.testing.assert_frame_equal(result.targets, alone.targets)
    pd.testing.assert_frame_equal(result.records, alone.records)
    with pytest.raises(DataError, match="no series could be sized by every method.*short-past"):
        replay(short, spec)


def test_non_finite_values_are_skipped_with_the_right_reason():
    good = _series_from("2024-03-01", 4, "good")
    infinite = _series_from("2024-03-01", 4, "inf")
    infinite.loc[[300, 301], "y"] = [np.inf, -np.inf]
    missing = _series_from("2024-03-01", 4, "nan")
    missing.loc[400, "y"] = np.nan
    result = replay(pd.concat([good, infinite, missing], ignore_index=True), ReplaySpec(mode="daily"))
    reasons = {s["unique_id"]: s["reason"] for s in result.skipped}
    assert set(reasons) == {"cpu_cores/inf", "cpu_cores/nan"}
    assert reasons["cpu_cores/inf"].startswith("contains 2 infinite value(s) (±Inf, the first at "
                                               f"{infinite.loc[300, 'ds'].isoformat()})")
    assert "missing" not in reasons["cpu_cores/inf"] and "remove or correct" in reasons["cpu_cores/inf"]
    assert reasons["cpu_cores/nan"].startswith(f"contains 1 missing value(s) (NaN, the first at "
                                               f"{missing.loc[400, 'ds'].isoformat()})")
    assert set(result.records["unique_id"]) == {"cpu_cores/good"}


def test_the_command_lists_every_series_left_out_with_its_reason(tmp_path, capsys):
    # the features step fills gaps but keeps ±Inf: the replay is where such a series is left out
    good = _series_from("2024-03-01", 4, "good")
    broken = _series_from("2024-03-01", 4, "broken")
    broken.loc[500, "y"] = np.inf
    data = tmp_path / "usage.csv"
    pd.concat([good, broken]).to_csv(data, index=False)
    out = tmp_path / "report.json"
    assert main(["rightsize-replay", "--input", str(data), "--format", "long", "--mode", "daily",
                 "--model", "seasonal_naive", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    left_out = [s for s in report["skipped"] if s["stage"] == "replay"]
    assert [s["unique_id"] for s in left_out] == ["cpu_cores/broken"]
    assert "infinite value(s)" in left_out[0]["reason"]
    assert "1 file(s) or series left out" in printed
    assert f"cpu_cores/broken (replay): {left_out[0]['reason']}" in printed
    assert {r["unique_id"] for r in report["records"]} == {"cpu_cores/good"}


def _benchmark(name: str):
    """A script of ``benchmarks/`` loaded as a module (its ``main`` is not run)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replay_benchmark_compares_a_baseline_at_the_plans_violation_rate():
    module = _benchmark("rightsizing_replay")
    sweep = [{"method": "vpa", "metric": "cpu", "margin": m, "slack": s, "violations": v}
             for m, s, v in ((0.0, 0.30, 0.10), (0.1, 0.40, 0.04), (0.2, 0.50, 0.02))]
    sweep.append({"method": "crane", "metric": "cpu", "margin": 0.0, "slack": 0.9, "violations": 0.03})
    assert module.baseline_at(sweep, "vpa", "cpu", 0.03) == pytest.approx(0.45)
    assert module.baseline_at(sweep, "vpa", "cpu", 0.04) == pytest.approx(0.40)
    assert module.baseline_at(sweep, "vpa", "cpu", 0.01) is None  # beyond the sweep: not extrapolated
    assert module.baseline_at(sweep, "vpa", "mem", 0.03) is None


def test_replay_benchmark_bounds_window_cpu_with_sizes_chosen_knowing_each_window():
    module = _benchmark("rightsizing_replay")
    ds = pd.date_range("2024-01-01", periods=120, freq="5min", tz="UTC")
    y = np.ones(120)
    y[5] = 10.0  # one burst in the first window
    frame = pd.DataFrame({"unique_id": "cpu_cores/a", "ds": ds, "y": y})
    starts = ds[::6]
    records = pd.DataFrame({"unique_id": "cpu_cores/a", "metric": "cpu_cores", "method": "forecast",
                            "period_start": starts, "period_end": starts + pd.Timedelta("30min")})
    other = records.assign(method="reactive", period_end=starts + pd.Timedelta("5min"))  # not the plan's: ignored
    bound = module.perfect_foresight(frame, pd.concat([records, other], ignore_index=True))
    assert (bound["windows"], bound["points"]) == (20, 120)
    # no violation: the burst window at 10, the others at 1; one point in 120 over is within 1 %
    assert bound["no_violation"] == pytest.approx(45 / 174)
    assert bound["at_curve_rate"] == pytest.approx(0.0)


def test_peak_regression_benchmark_bumps_after_a_day_over_and_eases_back():
    module = _benchmark("rightsizing_peak_regression")
    days = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC")
    used = [np.array([5.0, 8.0]), np.array([5.0, 12.0]), np.array([5.0]), np.array([5.0])]
    table = pd.DataFrame({"unique_id": "memory_bytes/a", "day": days, "shipped": 10.0, "used": used})
    table = table.iloc[[2, 0, 3, 1]]  # out of order: sized in day order all the same
    requests = pd.Series(module.with_feedback(table, 0.5), index=table.index).sort_index()
    # day 2 went over 10 by 12: day 3 is sized 10 x 1.2; under it, the bump eases back by half (not below 1)
    assert requests.tolist() == pytest.approx([10.0, 10.0, 12.0, 10.0])
