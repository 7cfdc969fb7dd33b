"""What the grid tolerance changes on the shared data sets: points re-slotted, series kept, values moved.

Sources stamp points a little off the grid marks; a point within ``features.grid_tolerance``
(a share of the step, default 0.1) before a mark counts for that mark rather than the slot
before it (``foresight_lib.quality.grid``). This script loads each shared data set as the
pipeline does, puts it on the 5-minute grid with no tolerance and with the default one, and
records per data set: the points whose slot changes, the series validation quarantines for
completeness, the series the features step keeps, the filled points, and how many values
on the grid change (and by how much): over every series, over the series the accuracy
benchmarks use (matched by their metric after the features step's renaming, e.g.
``memory_usage_kb`` -> ``memory_usage_bytes``) for the whole data set, and over those series
within the window the accuracy benchmarks cut (``forecast_benchmark.benchmark_window``).

Usage:
    .venv/bin/python benchmarks/grid_tolerance.py            # every data set
    .venv/bin/python benchmarks/grid_tolerance.py --dataset nab
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from results_files import write_results

from foresight_lib.config import ValidationConfig
from foresight_lib.quality.features import prepare_series
from foresight_lib.quality.grid import DEFAULT_GRID_TOLERANCE, grid_slots
from foresight_lib.quality.validation import validate_frame
from foresight_lib.sources.loaders import load_series

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forecast_benchmark import DATASETS as BENCHMARKS  # noqa: E402
from forecast_benchmark import benchmark_window  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FREQ = "5min"
STEP_NS = pd.Timedelta(FREQ).value

DATASETS = {
    # every NAB AWS file (the accuracy benchmark "nab_cpu" uses its cpu_utilization series, whole)
    "nab": dict(path=SHARED / "nab_aws", fmt="nab", benchmark="nab_cpu"),
    # the 25 Bitbrains VMs, every metric (the accuracy benchmark uses cpu_usage_mhz and memory_usage_kb,
    # the last 15 days)
    "bitbrains": dict(path=SHARED / "bitbrains_rnd" / "2013-8", fmt="bitbrains", benchmark="bitbrains"),
    "alibaba2018": dict(path=SHARED / "alibaba2018_machines", fmt="alibaba2018", benchmark=None),
    "alibaba_genai": dict(path=SHARED / "alibaba_genai_pod_memory", fmt="alibaba_genai", benchmark=None),
}


def _features(frame: pd.DataFrame, series: pd.DataFrame, tolerance: float) -> dict:
    result = prepare_series(frame, series, freq=FREQ, grid_tolerance=tolerance)
    totals = result.report["totals"]
    return {"result": result, "series_kept": int(result.report["series_out"]), "series_dropped": len(result.dropped),
            "filled_points": int(totals["interpolated"] + totals["long_gap_points"]),
            "points_out": int(len(result.frame))}


def _incomplete(frame: pd.DataFrame, series: pd.DataFrame, tolerance: float) -> int:
    outcome = validate_frame(frame, series, ValidationConfig(max_failed_share=1.0), freq=FREQ,
                             grid_tolerance=tolerance, raise_on_failure=False)
    return int(outcome.summary["series_failed_by_check"].get("completeness", 0))


def _of_metrics(frame: pd.DataFrame, metrics: list[str], renamed: dict) -> pd.DataFrame:
    """The series of ``metrics`` in a features frame, under the names the features step gave them."""
    names = set(metrics) | {str(new).split("/")[0] for old, new in renamed.items()
                            if str(old).split("/")[0] in metrics}
    return frame[frame["unique_id"].astype(str).str.split("/").str[0].isin(names)]


def _values_moved(strict: pd.DataFrame, tolerant: pd.DataFrame) -> dict:
    """Values on the grid that differ between the two frames (same series, same ``ds``)."""
    a = strict.assign(unique_id=lambda f: f["unique_id"].astype(str))
    b = tolerant.assign(unique_id=lambda f: f["unique_id"].astype(str))
    both = a.merge(b, on=["unique_id", "ds"], how="outer", suffixes=("_0", "_t"))
    paired = both.dropna(subset=["y_0", "y_t"])
    scale = paired.groupby("unique_id")["y_0"].transform(lambda y: np.abs(y).mean()).replace(0, np.nan)
    changed = ~np.isclose(paired["y_0"], paired["y_t"], rtol=1e-9, atol=0)
    relative = (np.abs(paired["y_t"] - paired["y_0"]) / scale)[changed]
    when = paired.loc[changed, "ds"]
    return {"series": int(both["unique_id"].nunique()), "grid_points": int(len(both)),
            "from": str(both["ds"].min()) if len(both) else None, "to": str(both["ds"].max()) if len(both) else None,
            "values_changed": int(changed.sum()),
            "values_changed_share": round(float(changed.sum() / len(both)), 6) if len(both) else 0.0,
            "changed_from": str(when.min()) if len(when) else None,
            "changed_to": str(when.max()) if len(when) else None,
            "grid_points_only_one_side": int(len(both) - len(paired)),
            "median_change_of_changed_over_series_mean": round(float(relative.median()), 6) if len(relative) else 0.0}


def _benchmark_values_moved(strict, tolerant, benchmark: str | None) -> dict:
    """Values changed on the benchmark's series: over the whole data set, and within the benchmark's window."""
    if benchmark is None:
        return {}
    spec = BENCHMARKS[benchmark]
    a = _of_metrics(strict.frame, spec["metrics"], strict.report["renamed"])
    b = _of_metrics(tolerant.frame, spec["metrics"], tolerant.report["renamed"])
    return {"benchmark": benchmark, "metrics": spec["metrics"], "last_days": spec["last_days"],
            "whole": _values_moved(a, b),
            "window": _values_moved(benchmark_window(a, spec["last_days"]), benchmark_window(b, spec["last_days"]))}


def measure(name: str) -> dict:
    spec = DATASETS[name]
    started = time.perf_counter()
    loaded = load_series(spec["path"], spec["fmt"])
    frame, series = loaded.frame, loaded.series
    ds = frame["ds"].array.asi8
    strict_slots = grid_slots(ds, STEP_NS, 0.0)
    tolerant_slots = grid_slots(ds, STEP_NS, DEFAULT_GRID_TOLERANCE)
    moved = strict_slots != tolerant_slots
    offsets = ds % STEP_NS
    strict, tolerant = _features(frame, series, 0.0), _features(frame, series, DEFAULT_GRID_TOLERANCE)
    out = {
        "series": int(frame["unique_id"].nunique()), "points": int(len(frame)),
        "native_steps_s": {str(k): int(v) for k, v in
                           (frame.groupby("unique_id")["ds"].diff().dt.total_seconds().round()
                            .value_counts().head(5).items())},
        "points_off_the_marks": int((offsets != 0).sum()),
        "points_reslotted": int(moved.sum()), "points_reslotted_share": round(float(moved.mean()), 6),
        "series_with_reslotted_points": int(frame.loc[moved, "unique_id"].nunique()),
        "validation_incomplete_series": {"tolerance_0": _incomplete(frame, series, 0.0),
                                         "tolerance_0.1": _incomplete(frame, series, DEFAULT_GRID_TOLERANCE)},
        "features": {key: {k: v for k, v in run.items() if k != "result"}
                     for key, run in (("tolerance_0", strict), ("tolerance_0.1", tolerant))},
        "all_series": _values_moved(strict["result"].frame, tolerant["result"].frame),
        "benchmark_series": _benchmark_values_moved(strict["result"], tolerant["result"], spec["benchmark"]),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return out


def _changed(v: dict) -> str:
    return f"{v['values_changed']} of {v['grid_points']} ({v['values_changed_share']:.2%})"


def _span(v: dict) -> str:
    return f"{v['changed_from'][:10]} to {v['changed_to'][:10]}" if v["values_changed"] else "none"


def to_markdown(record: dict) -> str:
    lines = ["# What the grid tolerance changes on the shared data sets", "",
             f"`{record['command']}` ({record['date']}); 5-minute grid, tolerance 0 against "
             f"{DEFAULT_GRID_TOLERANCE} of the step (30 s).", "",
             "| data set | series | points | points re-slotted | series with re-slotted points | "
             "quarantined as incomplete (0 / 0.1) | series kept by features (0 / 0.1) | filled points (0 / 0.1) | "
             "grid values changed, all series |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in record["datasets"].items():
        f0, ft = r["features"]["tolerance_0"], r["features"]["tolerance_0.1"]
        v0, vt = r["validation_incomplete_series"]["tolerance_0"], r["validation_incomplete_series"]["tolerance_0.1"]
        lines.append(f"| {name} | {r['series']} | {r['points']} | {r['points_reslotted']} "
                     f"({r['points_reslotted_share']:.2%}) | {r['series_with_reslotted_points']} | {v0} / {vt} | "
                     f"{f0['series_kept']} / {ft['series_kept']} | {f0['filled_points']} / {ft['filled_points']} | "
                     f"{_changed(r['all_series'])} |")
    lines += ["", "On the series the accuracy benchmarks use:", "",
              "| data set | benchmark (metrics) | series | grid values changed, whole data set | changed between | "
              "benchmark window | grid values changed in the window |",
              "|---|---|---|---|---|---|---|"]
    for name, r in record["datasets"].items():
        b = r["benchmark_series"]
        if not b:
            continue
        whole, window = b["whole"], b["window"]
        span = (f"last {b['last_days']} days ({window['from'][:10]} to {window['to'][:10]})" if b["last_days"]
                else "whole data set")
        lines.append(f"| {name} | {b['benchmark']} ({', '.join(b['metrics'])}) | {whole['series']} | "
                     f"{_changed(whole)} | {_span(whole)} | {span} | {_changed(window)} |")
    medians = ", ".join(f"{n} {r['benchmark_series']['whole']['median_change_of_changed_over_series_mean']:.1%}"
                        for n, r in record["datasets"].items()
                        if r["benchmark_series"] and r["benchmark_series"]["whole"]["values_changed"])
    lines += ["",
              "Points re-slotted: points within 30 s before a 5-minute mark, which now count for that mark instead "
              "of the slot before it. Quarantined as incomplete: validation's completeness check over the whole "
              "folder as loaded (no replay; NAB's files cover different dates, so completeness there counts up to "
              "the latest file's end and is the same either way). Series kept, filled points: the features step. "
              "Grid values changed: values on the 5-minute grid after the features step that differ between the "
              "two tolerances (grid points present on one side only are counted in the total, not as changed). "
              "Benchmark series: those of the metrics `benchmarks/forecast_benchmark.py` loads (NAB "
              "cpu_utilization; Bitbrains cpu_usage_mhz and memory_usage_kb, which the features step names "
              "memory_usage_bytes), over the whole data set and within the window it cuts (each series' last "
              "`last_days` days of the prepared frame; NAB: all of it)."
              + (f" The median change of a changed benchmark value is {medians} of its series' mean level."
                 if medians else "")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(DATASETS), action="append")
    args = parser.parse_args(argv)
    names = args.dataset or list(DATASETS)
    record = {"command": "python benchmarks/grid_tolerance.py" + "".join(f" --dataset {n}" for n in args.dataset or []),
              "argv": shlex.join(sys.argv), "date": datetime.now(UTC).date().isoformat(),
              "machine": platform.platform(), "freq": FREQ, "tolerance": DEFAULT_GRID_TOLERANCE,
              "datasets": {}}
    for name in names:
        record["datasets"][name] = measure(name)
        print(name, json.dumps(record["datasets"][name]), flush=True)
    write_results("grid_tolerance", record, to_markdown(record), echo=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
