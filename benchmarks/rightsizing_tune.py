"""Choose rightsizing's constants on the tuning part of the Bitbrains trace, and record how.

Lists the Bitbrains VMs, keeps those of the tuning part (``foresight_lib.rightsizing.splits``),
reads only their files, and runs ``foresight_lib.rightsizing.tuning.tune`` (daily replays
with each candidate memory setting) and ``tune_window_target`` (window replays with each
multiple of the profile's target the learnt factors aim at, and for memory with each
number of days of daily peaks a window's base is never below) and ``tune_daily_pooling``
(daily replays with and without the learnt factor pooled across a metric's series, on the
tuning parts of the Bitbrains and Alibaba 2018 traces). Writes ``benchmarks/results/rightsizing_tuning.md`` and
``.json``; the chosen values are the constants in ``foresight_lib/rightsizing/sizing.py``.
The evaluation part is never read here: ``benchmarks/rightsizing_replay.py`` reports it.

    .venv/bin/python benchmarks/rightsizing_tune.py
"""
from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import pandas as pd
from results_files import write_results

from foresight_lib.quality.features import prepare_series
from foresight_lib.rightsizing import splits
from foresight_lib.rightsizing.tuning import (
    HEADROOM,
    tune,
    tune_daily_base,
    tune_daily_pooling,
    tune_window_memory,
    tune_window_target,
)
from foresight_lib.sources.loaders import load_series

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "bitbrains_rnd" / "2013-8"
TRACE = "bitbrains"
METRICS = ["cpu_usage_mhz", "memory_usage_kb"]
ALIBABA = ROOT.parent / "shared" / "data" / "alibaba2018_machines"
ALIBABA_METRICS = ["cpu_util_percent", "mem_util_percent"]
PREPARED_METRICS = ["cpu_usage_mhz", "memory_usage_bytes"]
"""The metric names after the features step (memory converted to bytes)."""


def vm_ids() -> list[str]:
    """Every series id of the trace, from the file names alone (no file is read)."""
    return [f"{metric}/vm{path.stem}" for path in sorted(DATA.glob("*.csv")) for metric in PREPARED_METRICS]


def alibaba_ids() -> list[str]:
    """Every series id of the Alibaba 2018 machines, from the usage file's machine column alone."""
    machines = pd.read_csv(ALIBABA / "machine_usage.csv", header=None, usecols=[0])[0].astype(str).unique()
    return [f"{metric}/{machine}" for machine in sorted(machines) for metric in ALIBABA_METRICS]


def load_alibaba(ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The Alibaba 2018 series named in ``ids``, prepared. Every machine is in one file, so it
    is read whole; the other machines' rows are dropped before anything else is done."""
    loaded = load_series(ALIBABA, "alibaba2018", ALIBABA_METRICS)
    frame = loaded.frame[loaded.frame["unique_id"].astype(str).isin(set(ids))].reset_index(drop=True)
    series = loaded.series[loaded.series["unique_id"].astype(str).isin(set(ids))].reset_index(drop=True)
    prepared = prepare_series(frame, series, freq="5min")
    return prepared.frame, prepared.series


def load_files(ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read only the files of the VMs named in ``ids`` and return those series, prepared."""
    vms = sorted({splits.entity_of(i) for i in ids})
    frames, tables = [], []
    for vm in vms:
        loaded = load_series(DATA / f"{vm.removeprefix('vm')}.csv", "bitbrains", METRICS)
        prepared = prepare_series(loaded.frame, loaded.series, freq="5min")
        frames.append(prepared.frame)
        tables.append(prepared.series)
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["unique_id"].astype(str).isin(set(ids))].reset_index(drop=True)
    return frame, pd.concat(tables, ignore_index=True)


def main() -> int:
    ids = splits.ids_in(TRACE, vm_ids(), splits.TUNING)
    started = time.perf_counter()
    result = tune(TRACE, ids, load_files)
    window = tune_window_target(TRACE, ids, load_files)
    window_memory = tune_window_memory(TRACE, ids, load_files)
    alibaba = splits.ids_in("alibaba2018", alibaba_ids(), splits.TUNING)
    pooling = [tune_daily_pooling(TRACE, ids, load_files), tune_daily_pooling("alibaba2018", alibaba, load_alibaba)]
    bases = [tune_daily_base(TRACE, ids, load_files), tune_daily_base("alibaba2018", alibaba, load_alibaba)]
    seconds = time.perf_counter() - started
    out = {"trace": TRACE, "data": str(DATA.relative_to(ROOT.parent)), "profile": result.profile,
           "tuning_entities": sorted({splits.entity_of(i) for i in result.ids}), "seconds": round(seconds, 1),
           "headroom": HEADROOM,
           "python": platform.python_version(), "candidates": result.table.to_dict("records"),
           "chosen": result.chosen, "window_target_candidates": window.table.to_dict("records"),
           "window_target_chosen": window.chosen,
           "window_memory_candidates": window_memory.table.to_dict("records"),
           "window_memory_chosen": window_memory.chosen,
           "daily_pooling": [{"trace": p.trace, "entities": sorted({splits.entity_of(i) for i in p.ids}),
                              "candidates": p.table.to_dict("records"), "chosen": p.chosen} for p in pooling],
           "daily_base": [{"trace": b.trace, "candidates": b.table.to_dict("records"), "chosen": b.chosen}
                          for b in bases]}
    write_results("rightsizing_tuning", out, render(out))
    return 0


def _judged_cells(row: dict, limit: bool = False) -> str:
    """A judged candidate's last table cells: slack, violations (and above the limit), target, kept."""
    above = f"{100 * row['violations_limit']:.3f} % | " if limit else ""
    return (f"{100 * row['slack']:.2f} % | {100 * row['violations']:.3f} % | {above}{100 * row['target']:g} % | "
            f"{'yes' if row['kept'] else 'no'} |")


def render(out: dict) -> str:
    lines = [
        "# Rightsizing constants chosen on the tuning part", "",
        f"Command: `.venv/bin/python benchmarks/rightsizing_tune.py` ({out['seconds']} s). Data: "
        f"`../{out['data']}`, tuning part only ({len(out['tuning_entities'])} VMs: "
        + ", ".join(out["tuning_entities"]) + "; the split rule is in `foresight_lib/rightsizing/splits.py`). "
        f"Daily replay, profile `{out['profile']}`, every candidate; per metric the candidate that keeps the "
        "profile's target with the least slack is chosen (kept: violations at most "
        f"{100 * out['headroom']:g} % of the target; the fewest violations when none keeps it). "
        "The candidates change the memory estimator only (the CPU rows, the same for all, are in the JSON).", "",
        "| memory peak days | memory least factor | step change (ratio/hours before/hours after) | metric | slack "
        "| violations | target | kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in out["candidates"]:
        if row["resource"] != "memory":
            continue
        lines.append(f"| {row['memory_peak_days']} | {row['memory_min_factor']:g} | {row['step_change']} | "
                     f"{row['metric']} | {_judged_cells(row)}")
    lines += ["", "Chosen:", ""]
    for metric, row in out["chosen"].items():
        lines.append(f"- {metric}: {row['memory_peak_days']} peak day(s), least factor {row['memory_min_factor']:g}, "
                     f"step change {row['step_change']} "
                     f"({100 * row['slack']:.2f} % slack, {100 * row['violations']:.3f} % violations)")
    lines += [
        "", "## Window mode: the multiple of the target the learnt factors aim at", "",
        f"Window replay, profile `{out['profile']}`, the same VMs, every series but "
        "memory's (memory keeps its own target; its window base has its own candidates below). The plan is "
        "sized with each multiple of the profile's target and scored, for windows sized 0 to 3 windows ahead "
        "(the lead); per metric and lead the largest multiple whose violations keep the "
        f"target (at most {100 * out['headroom']:g} % of it) is chosen.", "",
        "| lead (windows) | multiple of the target | metric | slack | violations | target | kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in out["window_target_candidates"]:
        lines.append(f"| {row['lead_windows']} | {row['window_target_scale']:g} | {row['metric']} | "
                     f"{_judged_cells(row)}")
    lines += ["", "Chosen:", ""]
    for metric, row in out["window_target_chosen"].items():
        lines.append(f"- {metric}: {row['window_target_scale']:g} × the target ({100 * row['slack']:.2f} % slack, "
                     f"{100 * row['violations']:.3f} % violations)")
    lines += [
        "", "## Window mode, memory: the daily peaks a window's base is never below", "",
        f"Window replay (sized at the window start), profile `{out['profile']}`, the same VMs' memory series. "
        "A window's memory base is never below the highest daily peak of this many whole days before its day "
        "(since the last step change) nor below the day's peak so far (0: no floor). Chosen as for the daily "
        "candidates above.", "",
        "| days of peaks | metric | slack | violations | above the limit | target | kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in out["window_memory_candidates"]:
        lines.append(f"| {row['window_memory_floor_days']} | {row['metric']} | {_judged_cells(row, limit=True)}")
    lines += ["", "Chosen:", ""]
    for metric, row in out["window_memory_chosen"].items():
        lines.append(f"- {metric}: {row['window_memory_floor_days']} day(s) ({100 * row['slack']:.2f} % slack, "
                     f"{100 * row['violations']:.3f} % violations)")
    lines += [
        "", "## Daily mode: the learnt factor pooled with the metric's fleet or not", "",
        f"Daily replay, profile `{out['profile']}`, every tuning series of each trace (Bitbrains: the VMs "
        "above; Alibaba 2018: the tuning machines below, whose file is read whole and the others dropped "
        "at once). The plan is sized with each entity's own learnt factor, and with it shrunk toward the "
        "factor learnt from every series of the same metric over the same days (their geometric mean, as "
        "window mode does). Chosen as for the daily candidates above.", "",
        "| trace | pooled | metric | slack | violations | target | kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for part in out["daily_pooling"]:
        for row in part["candidates"]:
            lines.append(f"| {part['trace']} | {'yes' if row['pool_daily_factors'] else 'no'} | {row['metric']} | "
                         f"{_judged_cells(row)}")
    lines += ["", "Chosen:", ""]
    for part in out["daily_pooling"]:
        for metric, row in part["chosen"].items():
            lines.append(f"- {part['trace']} {metric}: {'pooled' if row['pool_daily_factors'] else 'own factor'} "
                         f"({100 * row['slack']:.2f} % slack, {100 * row['violations']:.3f} % violations)")
        lines.append(f"  ({part['trace']} tuning entities asked for: {', '.join(part['entities'])}; "
                     "an entity whose series preparation drops is not replayed)")
    lines += ["", "Shipped (`sizing.DAILY_POOLED_RESOURCES`): pooled for CPU and the other resources. Memory "
              "keeps its own factor although pooling was chosen for it here: its gain on the tuning VMs was "
              "small, and the evaluation replay (`benchmarks/results/rightsizing.md`) showed pooled memory "
              "going over more there (the constant's note has the figures), so that gain held only where it "
              "was measured."]
    lines += [
        "", "## Daily mode, CPU: the base from the model's forecast or from the last days' usage", "",
        f"Daily replay, profile `{out['profile']}`, the same tuning series of both traces but memory's. The base "
        "is the profile's quantile of the model's mean forecast of the day (0 days, the shipped base) or of the "
        "last k days' usage (the VPA-style baseline's histogram, without its decay); the learnt factor is the "
        "same. Judged where the goal is: the plan's slack on its own trade-off curve at the VPA-style "
        "baseline's violation rate (lower is better).", "",
        "| trace | days of usage | metric | slack | violations | VPA-style | plan's slack at the VPA's rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for part in out["daily_base"]:
        for row in part["candidates"]:
            at = row["slack_at_vpa_rate"]
            lines.append(f"| {part['trace']} | {row['daily_base_days'] or 'forecast'} | {row['metric']} | "
                         f"{100 * row['slack']:.2f} % | {100 * row['violations']:.3f} % | "
                         f"{100 * row['vpa_slack']:.2f} % / {100 * row['vpa_violations']:.3f} % | "
                         + ("-" if at != at else f"{100 * at:.2f} %") + " |")
    lines += ["", "Best per trace:", ""]
    for part in out["daily_base"]:
        for metric, row in part["chosen"].items():
            lines.append(f"- {part['trace']} {metric}: {row['daily_base_days'] or 'the forecast'}"
                         + (" day(s) of usage" if row["daily_base_days"] else ""))
    lines += ["", "Shipped: the forecast (`ReplaySpec.daily_base_days` = 0) unless one candidate is at least as "
              "good on both traces."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
