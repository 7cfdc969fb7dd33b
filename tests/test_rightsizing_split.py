"""The tuning/evaluation split of the rightsizing traces, and tuning code that reads only its part."""
from __future__ import annotations

import importlib.util
from dataclasses import replace as dc_replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from foresight_lib.rightsizing import sizing as rs
from foresight_lib.rightsizing import splits
from foresight_lib.rightsizing.replay_spec import ReplaySpec
from foresight_lib.rightsizing.tuning import (
    tune,
    tune_daily_base,
    tune_daily_pooling,
    tune_window_memory,
    tune_window_target,
)

ROOT = Path(__file__).resolve().parents[1]


def _ids(part: str, n: int, trace: str = "bitbrains") -> list[str]:
    """``n`` synthetic entities of ``part``, each with a CPU and a memory series."""
    out, k = [], 0
    while len(out) < 2 * n:
        entity = f"vm{k}"
        if splits.part_of(trace, entity) == part:
            out += [f"cpu_usage_mhz/{entity}", f"memory_usage_bytes/{entity}"]
        k += 1
    return out


def _frame(ids: list[str], days: int = 5) -> pd.DataFrame:
    ds = pd.date_range("2024-01-01", periods=days * 288, freq="5min", tz="UTC")
    rng = np.random.default_rng(0)
    parts = []
    for uid in ids:
        base = 2e9 if uid.startswith("memory") else 500.0
        y = base * (1 + 0.3 * np.sin(np.arange(ds.size) * 2 * np.pi / 288)) + rng.normal(0, base * 0.02, ds.size)
        parts.append(pd.DataFrame({"unique_id": uid, "ds": ds, "y": np.abs(y)}))
    return pd.concat(parts, ignore_index=True)


def _recording_loader(days: int = 5):
    """A loader of synthetic series that records every id it is asked for."""
    read: list[str] = []

    def loader(ids):
        read.extend(ids)
        return _frame(ids, days=days), None

    return loader, read


def test_split_is_deterministic_and_keeps_an_entity_together():
    assert splits.part_of("bitbrains", "cpu_usage_mhz/vm140") == splits.TUNING  # bucket 8
    assert splits.part_of("bitbrains", "cpu_usage_mhz/vm100") == splits.EVALUATION  # bucket 67
    assert splits.bucket("bitbrains", "vm100") == 67
    for entity in ("vm100", "vm140", "m_1932", "abc"):
        parts = {splits.part_of("bitbrains", f"{m}/{entity}") for m in ("cpu_usage_mhz", "memory_usage_bytes")}
        assert len(parts) == 1


def test_split_of_the_shared_bitbrains_vms_is_about_half():
    vms = [f"vm{n}" for n in range(20, 520, 20)]  # the 25 VMs of bitbrains_rnd/2013-8
    tuning = splits.ids_in("bitbrains", vms, splits.TUNING)
    assert len(tuning) == 11 and "vm20" in tuning
    assert len(splits.ids_in("bitbrains", vms, splits.EVALUATION)) == 14


def test_unknown_trace_or_part_is_refused():
    with pytest.raises(Exception, match="unknown trace"):
        splits.part_of("nowhere", "x/y")
    with pytest.raises(Exception, match="unknown part"):
        splits.ids_in("bitbrains", ["x/y"], "test")


TUNING_STEPS = [
    (tune, {"peak_days": (1, 3), "min_factors": (1.05,), "step_changes": ((2.0, 24, 6),)}),
    (tune_window_target, {"scales": (1.0, 2.0), "leads": (0,)}),
    (tune_window_memory, {"floor_days": (0, 2)}),
    (tune_daily_pooling, {}),
    (tune_daily_base, {"days": (0, 2)}),
]


@pytest.mark.parametrize(("step", "kwargs"), TUNING_STEPS, ids=lambda v: getattr(v, "__name__", ""))
def test_tuning_never_loads_an_evaluation_series(step, kwargs):
    tuning, evaluation = _ids(splits.TUNING, 2), _ids(splits.EVALUATION, 1)
    loader, read = _recording_loader(days=5)

    with pytest.raises(splits.EvaluationDataError, match="evaluation part"):
        step("bitbrains", tuning + evaluation, loader, **kwargs)
    assert read == []  # refused before anything was loaded

    step("bitbrains", tuning, loader, **kwargs)
    assert read and all(splits.part_of("bitbrains", i) == splits.TUNING for i in read)


def test_tuning_chooses_among_memory_settings_only():
    loader, _ = _recording_loader()
    result = tune("bitbrains", _ids(splits.TUNING, 2), loader, peak_days=(1, 3), min_factors=(1.05,),
                  step_changes=((2.0, 24, 6),))
    assert set(result.table["metric"]) == {"cpu_usage_mhz", "memory_usage_bytes"}
    assert set(result.chosen) == {"memory_usage_bytes"}


def test_tuning_refuses_a_loader_that_returns_evaluation_series():
    tuning, evaluation = _ids(splits.TUNING, 1), _ids(splits.EVALUATION, 1)

    def leaky(ids):
        return _frame(ids + evaluation), None

    with pytest.raises(splits.EvaluationDataError):
        tune("bitbrains", tuning, leaky, peak_days=(3,), min_factors=(1.05,), step_changes=((2.0, 24, 6),))


def test_tuning_script_lists_only_tuning_files(monkeypatch):
    spec = importlib.util.spec_from_file_location("rightsizing_tune", ROOT / "benchmarks" / "rightsizing_tune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen: list[str] = []
    monkeypatch.setattr(module, "vm_ids", lambda: _ids(splits.TUNING, 2) + _ids(splits.EVALUATION, 2))

    def fake_tune(trace, ids, load, **kwargs):
        seen.extend(ids)
        raise SystemExit(0)

    monkeypatch.setattr(module, "tune", fake_tune)
    with pytest.raises(SystemExit):
        module.main()
    assert seen and all(splits.part_of("bitbrains", i) == splits.TUNING for i in seen)


def test_profiles_have_a_memory_target_far_below_cpu():
    for name in ("cost", "balanced", "performance"):
        prof = rs.get_profile(name)
        assert prof.target_for("memory") <= prof.target_for("cpu") / 5
    assert rs.get_profile("balanced").target_for("memory") == pytest.approx(0.001)


def test_window_target_tuning_picks_the_largest_kept_multiple():
    loader, _ = _recording_loader(days=4)
    result = tune_window_target("bitbrains", _ids(splits.TUNING, 2), loader, scales=(1.0, 2.0, 40.0), leads=(0, 2))
    table = result.table
    assert set(table["metric"]) == {"cpu_usage_mhz"}  # memory keeps its target
    assert sorted(set(table["lead_windows"])) == [0, 2]
    assert set(result.chosen) == {"cpu_usage_mhz lead 0", "cpu_usage_mhz lead 2"}
    for lead in (0, 2):
        cpu = table[table["lead_windows"] == lead].set_index("window_target_scale")
        assert cpu.loc[40.0, "violations"] > cpu.loc[1.0, "violations"]  # aiming higher lets more points over
        assert cpu.loc[40.0, "slack"] < cpu.loc[1.0, "slack"]
        kept = cpu[cpu["kept"]]
        chosen = result.chosen[f"cpu_usage_mhz lead {lead}"]["window_target_scale"]
        assert chosen == (kept.index.max() if len(kept) else 1.0)


def test_window_factors_aim_at_the_scaled_target_for_cpu_only():
    prof = rs.get_profile("balanced")
    assert rs.learnt_target(prof, "cpu", "window", 1.5) == pytest.approx(0.03)
    assert rs.learnt_target(prof, "other", "window", 1.5) == pytest.approx(0.03)
    assert rs.learnt_target(prof, "memory", "window", 1.5) == pytest.approx(0.001)
    assert rs.learnt_target(prof, "cpu", "daily", 1.5) == pytest.approx(0.02)
    assert rs.learnt_target(prof, "cpu", "window", 100.0) == 0.5
    assert rs.window_target_scale(0) == rs.WINDOW_TARGET_SCALES[0]
    assert rs.window_target_scale(99) == rs.WINDOW_TARGET_SCALES[-1]  # longer leads: the last one
    assert ReplaySpec(mode="window", lead_windows=1).window_scale == rs.WINDOW_TARGET_SCALES[1]
    assert ReplaySpec(mode="window", window_target_scale=2.0).window_scale == 2.0
    # a spec copied to another lead aims at that lead's multiple, not the one it was copied from
    assert dc_replace(ReplaySpec(mode="window"), lead_windows=3).window_scale == rs.WINDOW_TARGET_SCALES[3]


def test_window_memory_tuning_reads_memory_series_only():
    loader, _ = _recording_loader(days=4)
    result = tune_window_memory("bitbrains", _ids(splits.TUNING, 2), loader, floor_days=(0, 2))
    assert set(result.table["metric"]) == {"memory_usage_bytes"}
    assert sorted(result.table["window_memory_floor_days"]) == [0, 2]
    assert result.chosen["memory_usage_bytes"]["window_memory_floor_days"] in (0, 2)


def test_daily_pooling_tuning_scores_both_ways():
    loader, _ = _recording_loader(days=4)
    result = tune_daily_pooling("bitbrains", _ids(splits.TUNING, 2), loader)
    table = result.table
    assert set(table["metric"]) == {"cpu_usage_mhz", "memory_usage_bytes"}
    assert sorted(table["pool_daily_factors"].tolist()) == [False, False, True, True]
    for metric, g in table.groupby("metric"):
        kept = g[g["kept"]]
        best = kept.sort_values("slack").iloc[0] if len(kept) else g.sort_values("violations").iloc[0]
        assert result.chosen[metric]["pool_daily_factors"] == best["pool_daily_factors"]


def test_daily_base_tuning_judges_at_the_vpa_rate():
    loader, _ = _recording_loader(days=5)
    result = tune_daily_base("bitbrains", _ids(splits.TUNING, 2), loader, days=(0, 2))
    table = result.table.set_index("daily_base_days")
    assert set(table["metric"]) == {"cpu_usage_mhz"}  # memory has its own base
    assert sorted(table.index) == [0, 2]
    best = table["slack_at_vpa_rate"].idxmin() if table["slack_at_vpa_rate"].notna().any() else 0
    assert result.chosen["cpu_usage_mhz"]["daily_base_days"] == best
