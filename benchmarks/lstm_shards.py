"""The global LSTM fitted once over every series against one fit per series shard: the accuracy effect.

The nightly fits the global LSTM once per run over every series, in a task of its own,
while the local models are backtested shard by shard (``foresight_lib.forecasting.shards``).
This benchmark measures what the other choice, one fit per shard of ``train.shard_series``
series, would do to its accuracy: the same backtest (the nightly's protocol: the last day
held out, 5/15/30-minute horizons, MASE) of the LSTM fitted over every series, then fitted
on each shard separately, on the same series. A second global fit with another seed shows
how much the score moves from the seed alone, so a difference can be read against it.

The series are the real ones of ``benchmarks/scale.py`` (every non-constant Bitbrains Rnd
and Alibaba 2018 series, the last 15 days), without copies. No constant is chosen here:
the figures only compare two ways of running the same model.

Writes ``benchmarks/results/lstm_shards.json`` and ``.md`` with the command. Usage::

    .venv/bin/python benchmarks/lstm_shards.py --shard-series 100,25
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from foresight_lib.forecasting.backtest import BacktestSpec, run_backtest  # noqa: E402
from foresight_lib.forecasting.shards import shard_count, split_ids  # noqa: E402


def _scale_module():
    spec = importlib.util.spec_from_file_location("foresight_scale_benchmark", ROOT / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def backtest_lstm(frame: pd.DataFrame, seed: int, shard_series: int | None) -> tuple[pd.DataFrame, float, int]:
    """Per-series scores of the LSTM, fitted over ``frame`` or over each shard of it; wall seconds; fits."""
    spec = BacktestSpec(models=["lstm"], n_jobs=1, model_params={"lstm": {"seed": seed, "n_threads": 1}})
    ids = sorted(frame["unique_id"].unique())
    groups = [ids] if shard_series is None else split_ids(ids, shard_count(len(ids), shard_series))
    started = time.perf_counter()
    scores = []
    for group in groups:
        result = run_backtest(frame[frame["unique_id"].isin(group)], spec)
        scores.append(result.per_series)
    return pd.concat(scores, ignore_index=True), time.perf_counter() - started, len(groups)


def summary(per_series: pd.DataFrame) -> dict[str, float]:
    """Mean MASE per horizon and over the horizons (the leaderboard's ranking figure), and the median
    over series of each series' MASE averaged over the horizons (a mean is moved by a few series)."""
    by_horizon = per_series.groupby("horizon")["mase"].mean()
    return {**{h: round(float(v), 4) for h, v in by_horizon.items()}, "mean": round(float(by_horizon.mean()), 4),
            "median": round(float(series_mase(per_series).median()), 4)}


def series_mase(per_series: pd.DataFrame) -> pd.Series:
    """Each series' MASE averaged over the horizons."""
    return per_series.groupby("unique_id")["mase"].mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard-series", default="100", help="comma-separated shard sizes (the nightly's: 100)")
    parser.add_argument("--series", type=int, default=0, help="use only the first N series (0: all)")
    args = parser.parse_args()
    command = "python benchmarks/lstm_shards.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    frame = _scale_module().real_series()
    if args.series:
        keep = sorted(frame["unique_id"].unique())[: args.series]
        frame = frame[frame["unique_id"].isin(keep)]
    frame = frame.reset_index(drop=True)
    n = frame["unique_id"].nunique()
    print(f"{n} series, {len(frame)} rows", flush=True)

    runs, reference_series = [], None
    for label, seed, shard in [("global, seed 0", 0, None), ("global, seed 1", 1, None),
                               *[(f"shards of {s}, seed 0", 0, s) for s in map(int, args.shard_series.split(","))]]:
        scores, seconds, fits = backtest_lstm(frame, seed, shard)
        own = series_mase(scores)
        reference_series = own if reference_series is None else reference_series
        paired = pd.concat([own, reference_series], axis=1, keys=["run", "reference"]).dropna()
        runs.append({"run": label, "seed": seed, "shard_series": shard, "fits": fits, "series": int(
            scores["unique_id"].nunique()), "seconds": round(seconds, 1), "mase": summary(scores),
            "series_better_than_global_seed_0": round(float((paired["run"] < paired["reference"]).mean()), 3)})
        print(f"{label}: {fits} fit(s), {seconds:.0f} s, MASE {runs[-1]['mase']}", flush=True)

    reference = runs[0]["mase"]["mean"]
    seed_spread = abs(runs[1]["mase"]["mean"] - reference)
    record = {
        "command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "series": n, "rows": len(frame), "runs": runs,
        "seed_spread_of_mean_mase": round(seed_spread, 4),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lstm_shards.json").write_text(json.dumps(record, indent=2) + "\n")
    horizons = [h for h in ("5m", "15m", "30m") if h in runs[0]["mase"]]
    lines = [
        "# The global LSTM: one fit over every series against one fit per shard",
        "",
        f"Command: `{command}`. {n} real series (Bitbrains Rnd and Alibaba 2018, the last 15 days, as "
        "`benchmarks/scale.py` builds them, without copies); the nightly's backtest protocol (last day held out, "
        "MASE); torch on one thread. Lower is better.",
        "",
        "| run | fits | seconds | " + " | ".join(f"MASE {h}" for h in horizons)
        + " | mean MASE | change | median series MASE | series better than global, seed 0 |",
        "|---|---|---|" + "---|" * (len(horizons) + 4),
    ]
    for run in runs:
        change = (run["mase"]["mean"] - reference) / reference
        lines.append(f"| {run['run']} | {run['fits']} | {run['seconds']} | "
                     + " | ".join(f"{run['mase'][h]:.4f}" for h in horizons)
                     + f" | {run['mase']['mean']:.4f} | {change:+.1%} | {run['mase']['median']:.4f}"
                     + (" | - |" if run is runs[0] else f" | {run['series_better_than_global_seed_0']:.1%} |"))
    lines += ["", f"Another seed alone moves the mean MASE by {seed_spread:.4f} "
              f"({seed_spread / reference:.1%}) on these series.", ""]
    (RESULTS / "lstm_shards.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
