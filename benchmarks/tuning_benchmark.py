"""Validation MASE of a model before and after Optuna tuning, on the tuning split only.

The tuning split is the evaluation protocol moved one day back: each series' held-out test
day is cut off first and never read, and the day before it (the last day of the training
part) is held out instead (``foresight_lib.forecasting.tuning``). The benchmark's reported
figures (benchmarks/results/forecast_*.json) are on the test day, which no choice here sees.

With ``--peer-configs`` it also scores mlforecast's variants (benchmarks/peers_mlforecast.py
CONFIGS, run in .venv-bench) on the same tuning split, which is how the benchmark's
mlforecast variant was chosen.

Usage:
    .venv/bin/python benchmarks/tuning_benchmark.py --dataset nab_cpu --trials 8 --timeout 900
    .venv/bin/python benchmarks/tuning_benchmark.py --dataset bitbrains --max-series 20 --trials 4 --timeout 900
    .venv/bin/python benchmarks/tuning_benchmark.py --dataset nab_cpu --model lstm --trials 6 --timeout 1500

Results: ``benchmarks/results/tuning_<dataset>.json`` (lightgbm), ``tuning_<dataset>_<model>.json`` (others).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from forecast_benchmark import RESULTS, load_dataset, run_peer_script  # noqa: E402

from foresight_lib.forecasting.backtest import BacktestSpec, split_series  # noqa: E402
from foresight_lib.forecasting.metrics import evaluate, leaderboard  # noqa: E402
from foresight_lib.forecasting.tuning import tune, validation_frame  # noqa: E402


def peer_configs(frame: pd.DataFrame, spec: BacktestSpec, n_jobs: int, configs: list[str]) -> dict:
    """Mean validation MASE of each mlforecast variant on the tuning split."""
    from foresight_lib.forecasting.metrics import mase_scales

    val = validation_frame(frame, spec)
    splits, _ = split_series(val, spec)
    scales, _ = mase_scales({s.unique_id: s.train for s in splits}, spec.season_length)
    out = {}
    for config in configs:
        t0 = time.perf_counter()
        fc, _ = run_peer_script("peers_mlforecast.py", val, spec, n_jobs, ["--config", config])
        board = leaderboard(evaluate(fc, scales, spec.horizon_steps, spec.levels), spec.horizons)
        out[config] = {"mean_mase": round(float(board["mase"].mean()), 4),
                       "seconds": round(time.perf_counter() - t0, 1)}
        print(f"mlforecast {config}: validation MASE {out[config]['mean_mase']}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["nab_cpu", "bitbrains"], required=True)
    parser.add_argument("--model", default="lightgbm")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=900.0, help="time budget in seconds")
    parser.add_argument("--max-series", type=int, default=0,
                        help="tune on the first N series (sorted ids) only; 0 = all")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="the model's n_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peer-configs", default="",
                        help="comma-separated mlforecast variants to score on the tuning split too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = "python benchmarks/tuning_benchmark.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    frame = load_dataset(args.dataset, "5min")
    if args.max_series:
        keep = sorted(frame["unique_id"].unique())[: args.max_series]
        frame = frame[frame["unique_id"].isin(keep)].reset_index(drop=True)
    spec = BacktestSpec(models=[args.model], n_jobs=args.n_jobs)
    record = {
        "command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "dataset": args.dataset, "series": int(frame["unique_id"].nunique()),
        "split": "tuning: each series' last training day (the day before the held-out test day, never read)",
    }
    if args.peer_configs:
        record["mlforecast_configs"] = peer_configs(frame, spec, args.n_jobs, args.peer_configs.split(","))
    result = tune(frame, spec, args.model, n_trials=args.trials, timeout_s=args.timeout, seed=args.seed,
                  fixed_params={"n_threads": args.threads})
    record["tuning"] = result.to_dict()
    record["validation_mase_before"] = round(result.mase_before, 4)
    record["validation_mase_after"] = round(result.mase_after, 4)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / (f"tuning_{args.dataset}.json" if args.model == "lightgbm" else
                     f"tuning_{args.dataset}_{args.model}.json")
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"{args.model} on {args.dataset}: validation MASE {result.mase_before:.4f} -> {result.mase_after:.4f} "
          f"({result.n_trials} trials, {result.seconds:.0f} s, stopped by {result.stopped_by}); written {out}")


if __name__ == "__main__":
    main()
