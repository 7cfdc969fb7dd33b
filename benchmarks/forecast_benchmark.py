"""Accuracy and speed of Foresight's models against statsforecast and mlforecast, same split, same protocol.

Foresight runs in this process (the project's venv); statsforecast and mlforecast (a global
LightGBM) run in their own venv (.venv-bench, from requirements-bench.txt) on the exact split
Foresight used, and all are scored by ``foresight_lib.forecasting.metrics`` with the same MASE
scales. Every side gives the median and the 80 % and 95 % intervals (statsforecast's
``level=[80, 95]``, mlforecast's conformal intervals), so the same ``evaluate`` scores their
weighted quantile loss (``wql``) and coverage too; a model without finite bands gets no
``wql`` and is listed under ``wql_left_out``. Both sides use the same number of worker
processes. Results are written to benchmarks/results/ with the command that made them:
the leaderboard (every column, ``wql`` and ``coverage_80``/``coverage_95`` included) and the
mean MASE and mean wQL per model over the horizons.

Usage:
    .venv/bin/python benchmarks/forecast_benchmark.py --dataset nab_cpu
    .venv/bin/python benchmarks/forecast_benchmark.py --dataset bitbrains
    # Foresight's models against mlforecast only (statsforecast left out):
    .venv/bin/python benchmarks/forecast_benchmark.py --dataset nab_cpu --peer-models none
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from foresight_lib.forecasting.backtest import BacktestSpec, run_backtest, split_series
from foresight_lib.forecasting.metrics import evaluate, leaderboard, wql_left_out
from foresight_lib.forecasting.models import DEFAULT_MODELS
from foresight_lib.quality.features import prepare_series
from foresight_lib.sources.loaders import load_series

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
PEER_MODELS = ["sf_Naive", "sf_SeasonalNaive", "sf_AutoETS", "sf_AutoARIMA", "sf_AutoTheta", "sf_MSTL"]
MLFORECAST_MODEL = "mlf_LightGBM"
MLFORECAST_CONFIGS = {"nab_cpu": "recursive_diff", "bitbrains": "recursive"}
"""mlforecast's variant per data set (benchmarks/peers_mlforecast.py CONFIGS): the best on the data
set's tuning split (each series' last training day, never the held-out day), recorded in
benchmarks/results/tuning_<dataset>.json (NAB: all four variants; Bitbrains: recursive against
recursive_diff on the first 10 series)."""

DATASETS = {
    # every CPU-utilisation series of the NAB AWS set
    "nab_cpu": dict(path=SHARED / "nab_aws", fmt="nab", metrics=["cpu_utilization"], last_days=None),
    # CPU MHz and memory KB of the 25 Bitbrains VMs, the last 15 days of each
    "bitbrains": dict(path=SHARED / "bitbrains_rnd" / "2013-8", fmt="bitbrains",
                      metrics=["cpu_usage_mhz", "memory_usage_kb"], last_days=15),
}


def load_dataset(name: str, freq: str) -> pd.DataFrame:
    ds = DATASETS[name]
    loaded = load_series(ds["path"], ds["fmt"], metrics=ds["metrics"])
    prepared = prepare_series(loaded.frame, loaded.series, freq=freq)
    return benchmark_window(prepared.frame, ds["last_days"])


def benchmark_window(frame: pd.DataFrame, last_days: int | None) -> pd.DataFrame:
    """The part of a prepared frame the benchmark uses: each series' last ``last_days`` days (all if None)."""
    if last_days:
        end = frame.groupby("unique_id")["ds"].transform("max")
        frame = frame[frame["ds"] > end - pd.Timedelta(days=last_days)]
    return frame.reset_index(drop=True)


def run_peers(frame: pd.DataFrame, spec: BacktestSpec, n_jobs: int,
              models: list[str]) -> tuple[pd.DataFrame, dict]:
    """statsforecast on Foresight's split; returns its forecast frame (with actuals) and timings."""
    return run_peer_script("peers_statsforecast.py", frame, spec, n_jobs, ["--models", ",".join(models)])


def run_mlforecast(frame: pd.DataFrame, spec: BacktestSpec, n_jobs: int,
                   config: str = "recursive") -> tuple[pd.DataFrame, dict]:
    """mlforecast + LightGBM on Foresight's split; returns its forecast frame (with actuals) and timings."""
    return run_peer_script("peers_mlforecast.py", frame, spec, n_jobs, ["--config", config])


def run_peer_script(script: str, frame: pd.DataFrame, spec: BacktestSpec, n_jobs: int,
                    extra: list[str]) -> tuple[pd.DataFrame, dict]:
    """A peer script of benchmarks/ run in .venv-bench on Foresight's split of ``frame``."""
    splits, _ = split_series(frame, spec)
    rows = []
    for s in splits:
        n_train = len(s.train)
        rows.append(pd.DataFrame({"unique_id": s.unique_id, "ds": s.ds, "y": np.concatenate([s.train, s.test]),
                                  "part": ["train"] * n_train + ["test"] * len(s.test)}))
    with tempfile.TemporaryDirectory() as tmp:
        split_path = Path(tmp) / "split.parquet"
        pd.concat(rows).to_parquet(split_path, index=False)
        prefix = Path(tmp) / "peers"
        cmd = [str(BENCH_PYTHON), str(ROOT / "benchmarks" / script), str(split_path), str(prefix),
               "--season", str(spec.season_length), "--h", str(spec.max_steps),
               "--stride", str(spec.stride_steps), "--n-jobs", str(n_jobs), *extra]
        subprocess.run(cmd, check=True)
        fc = pd.read_parquet(f"{prefix}.forecasts.parquet")
        timings = json.loads(Path(f"{prefix}.timings.json").read_text())
    by_id = {s.unique_id: s for s in splits}
    fc["y"] = [by_id[u].test[o + st - 1] for u, o, st in zip(fc["unique_id"], fc["origin"], fc["step"], strict=True)]
    fc["cutoff"] = fc["origin"]
    return fc, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(DATASETS), required=True)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--freq", default="5min")
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--peer-models", default=",".join(PEER_MODELS),
                        help="statsforecast models to run (default: all six; 'none' for none)")
    parser.add_argument("--model-params", default="{}",
                        help='JSON of constructor parameters per model, e.g. \'{"lightgbm": {"window_scale": true}}\'')
    parser.add_argument("--tag", default="",
                        help="write forecast_<dataset>_<tag>.json, keeping the full run's file as it is")
    parser.add_argument("--skip-mlforecast", action="store_true", help="leave out mlforecast + LightGBM")
    parser.add_argument("--mlforecast-config", default=None,
                        help="mlforecast variant (benchmarks/peers_mlforecast.py CONFIGS; default: the data "
                             f"set's, {MLFORECAST_CONFIGS})")
    parser.add_argument("--peers-left-out-because", default=None,
                        help="why peer models were left out; recorded with the result")
    args = parser.parse_args()
    peer_models = [] if args.peer_models in ("", "none") else args.peer_models.split(",")
    command = "python benchmarks/forecast_benchmark.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    frame = load_dataset(args.dataset, args.freq)
    spec = BacktestSpec(models=args.models.split(","), freq=args.freq, n_jobs=args.n_jobs,
                        model_params=json.loads(args.model_params))
    print(f"{args.dataset}: {frame['unique_id'].nunique()} series, {len(frame)} rows", flush=True)

    t0 = time.perf_counter()
    ours = run_backtest(frame, spec)
    ours_wall = time.perf_counter() - t0
    print(f"foresight: {ours_wall:.1f} s wall, champion {ours.champion}", flush=True)

    name = f"forecast_{args.dataset}" + (f"_{args.tag}" if args.tag else "")
    partial = RESULTS / f"{name}.partial.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    partial.write_text(json.dumps({  # kept if the peers' side is stopped before it ends
        "command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "series": len(ours.series), "champion": ours.champion, "foresight_wall_seconds": round(ours_wall, 1),
        "foresight_fit_seconds": {k: round(v, 2) for k, v in ours.fit_seconds.items()},
        "foresight_predict_seconds": {k: round(v, 2) for k, v in ours.predict_seconds.items()},
        "mean_mase": leaderboard(ours.per_series, spec.horizons).groupby("model")["mase"].mean().round(4).to_dict(),
        "mean_wql": leaderboard(ours.per_series, spec.horizons).groupby("model")["wql"].mean().round(4).to_dict(),
    }, indent=2) + "\n")
    per_series = [ours.per_series]
    peers_wall, peer_timings = None, {}
    mlf_wall, mlf_timings = None, {}
    if not args.skip_peers and peer_models:
        t0 = time.perf_counter()
        peer_fc, peer_timings = run_peers(frame, spec, args.n_jobs, peer_models)
        peers_wall = time.perf_counter() - t0
        print(f"statsforecast: {peers_wall:.1f} s wall", flush=True)
        per_series.append(evaluate(peer_fc, ours.scales, spec.horizon_steps, spec.levels))
    if not args.skip_peers and not args.skip_mlforecast:
        t0 = time.perf_counter()
        mlf_config = args.mlforecast_config or MLFORECAST_CONFIGS[args.dataset]
        mlf_fc, mlf_timings = run_mlforecast(frame, spec, args.n_jobs, mlf_config)
        mlf_wall = time.perf_counter() - t0
        print(f"mlforecast: {mlf_wall:.1f} s wall", flush=True)
        per_series.append(evaluate(mlf_fc, ours.scales, spec.horizon_steps, spec.levels))
    scores = pd.concat(per_series, ignore_index=True)
    board = leaderboard(scores, spec.horizons)
    mean_mase = board.groupby("model")["mase"].mean().sort_values()
    mean_wql = board.groupby("model")["wql"].mean().sort_values()  # NaN (null) for a model without bands
    mean_coverage = board.groupby("model")[["coverage_80", "coverage_95"]].mean().loc[mean_mase.index]

    record = {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "dataset": args.dataset,
        "series": len(ours.series),
        "skipped": ours.skipped,
        "protocol": ours.report()["protocol"],
        "champion": ours.champion,
        "mean_mase": mean_mase.round(4).to_dict(),
        "mean_wql": {k: (None if np.isnan(v) else v) for k, v in mean_wql.round(4).items()},
        "mean_coverage": mean_coverage.round(4).to_dict(orient="index"),
        "wql_left_out": wql_left_out(scores),
        "leaderboard": board.round(4).astype(object).where(board.notna(), None).to_dict(orient="records"),
        "foresight_wall_seconds": round(ours_wall, 1),
        "foresight_fit_seconds": {k: round(v, 2) for k, v in ours.fit_seconds.items()},
        "foresight_predict_seconds": {k: round(v, 2) for k, v in ours.predict_seconds.items()},
        "statsforecast_wall_seconds": None if peers_wall is None else round(peers_wall, 1),
        "statsforecast_fit_seconds": {k: round(v, 2) for k, v in peer_timings.get("fit_seconds", {}).items()},
        "statsforecast_predict_seconds": {k: round(v, 2) for k, v in peer_timings.get("predict_seconds", {}).items()},
        "fallbacks": ours.report()["fallback_counts"],
        "statsforecast_models": [] if args.skip_peers else peer_models,
        "mlforecast_wall_seconds": None if mlf_wall is None else round(mlf_wall, 1),
        "mlforecast_fit_seconds": {k: round(v, 2) for k, v in mlf_timings.get("fit_seconds", {}).items()},
        "mlforecast_predict_seconds": {k: round(v, 2) for k, v in mlf_timings.get("predict_seconds", {}).items()},
        "mlforecast_config": None if mlf_wall is None else mlf_config,
    }
    left_out = [m for m in PEER_MODELS if m not in record["statsforecast_models"]]
    if left_out and not args.skip_peers:
        record["statsforecast_left_out"] = {"models": left_out, "because": args.peers_left_out_because}
    if peers_wall:
        record["wall_time_ratio_foresight_over_statsforecast"] = round(ours_wall / peers_wall, 3)
        peers = mean_mase[[m for m in mean_mase.index if m.startswith("sf_")]]
        record["best_statsforecast"] = {"model": peers.idxmin(), "mean_mase": round(float(peers.min()), 4)}
        record["champion_beats_every_statsforecast_model"] = bool(mean_mase[ours.champion] < peers.min())
    if mlf_wall:
        mlf = float(mean_mase[MLFORECAST_MODEL])
        if "lightgbm" in mean_mase.index:
            record["lightgbm_beats_mlforecast"] = bool(mean_mase["lightgbm"] < mlf)
        record["champion_beats_mlforecast"] = bool(mean_mase[ours.champion] < mlf)
    if peers_wall or mlf_wall:
        peers = mean_mase[[m for m in mean_mase.index if m.startswith(("sf_", "mlf_"))]]
        record["best_peer"] = {"model": peers.idxmin(), "mean_mase": round(float(peers.min()), 4)}
        record["champion_beats_every_peer"] = bool(mean_mase[ours.champion] < peers.min())
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    partial.unlink(missing_ok=True)
    print(board.to_string(index=False))
    print("mean MASE over horizons:\n" + mean_mase.round(4).to_string())
    print("mean wQL over horizons:\n" + mean_wql.round(4).to_string())
    print(f"written {out}")


if __name__ == "__main__":
    main()
