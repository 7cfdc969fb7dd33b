"""The ensemble's selection margin, chosen on the tuning split (each series' validation day, never the held-out day).

Each series' held-out day is cut off and the base models are backtested on the day before it
(the validation day the ensemble learns from, with the history it has there: one day less).
Per metric the series are cut in two halves (alternate series); the members are chosen by
forward selection on one half with each margin and scored, as the pooled validation MASE of
their weighted combination, on the other half, and the other way round. The margin with
the lowest cross-half MASE over the data sets is ``ensemble.SELECTION_MARGIN`` (a tie goes
to the larger margin: fewer members). Written to benchmarks/results/ensemble_members_tuning.json.

Usage:
    .venv/bin/python benchmarks/ensemble_members_tuning.py --datasets nab_cpu,bitbrains
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forecast_benchmark import load_dataset  # noqa: E402

from foresight_lib.forecasting.backtest import BacktestSpec, backtest_part  # noqa: E402
from foresight_lib.forecasting.ensemble import choose_members, member_subsets, subset_losses  # noqa: E402
from foresight_lib.forecasting.metrics import mase_scales  # noqa: E402
from foresight_lib.forecasting.models import DEFAULT_MODELS, ENSEMBLE  # noqa: E402
from foresight_lib.frames import split_unique_id  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MARGINS = [0.0, 0.0025, 0.005, 0.01, 0.02, 0.05]


def validation_losses(name: str, models: list[str], n_jobs: int) -> dict[str, np.ndarray]:
    """metric -> (series, subsets) validation MASE of each member subset, on the validation day only."""
    frame = load_dataset(name, "5min")
    end = frame.groupby("unique_id", observed=True)["ds"].transform("max")
    frame = frame[frame["ds"] <= end - pd.Timedelta(days=1)].reset_index(drop=True)  # the held-out day is cut off
    spec = BacktestSpec(models=models, history_days=13.0, n_jobs=n_jobs)  # the validation split's history
    part = backtest_part(frame, spec)
    subsets = member_subsets(len(models))
    scales, _ = mase_scales({s.unique_id: s.train for s in part.splits}, spec.season_length)
    out: dict[str, list] = {}
    for split in part.splits:
        if not np.isfinite(scales[split.unique_id]):
            continue
        fc = {m: part.outcome.forecasts[(m, split.unique_id)] for m in models}
        out.setdefault(split_unique_id(split.unique_id)[0], []).append(
            subset_losses(fc, split.test, spec.origins, spec.max_steps, scales[split.unique_id], subsets))
    return {metric: np.stack(rows) for metric, rows in out.items()}


def cross_half(models: list[str], losses: np.ndarray, margin: float) -> dict:
    """Members chosen on one half of the series, scored on the other, both ways."""
    subsets = member_subsets(len(models))
    index = {s: i for i, s in enumerate(subsets)}
    halves = [np.arange(len(losses)) % 2 == k for k in (0, 1)]
    scores, chosen = [], []
    for fit, score in (halves, halves[::-1]):
        choice = choose_members(models, losses[fit], int(fit.sum()), margin)
        subset = tuple(models.index(m) for m in choice.members)
        scores.append(float(losses[score][:, index[subset]].mean()))
        chosen.append(choice.members)
    return {"validation_mase": float(np.mean(scores)), "members": chosen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="nab_cpu,bitbrains")
    parser.add_argument("--models", default=",".join(m for m in DEFAULT_MODELS if m != ENSEMBLE))
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    models = args.models.split(",")
    record: dict = {"command": "python benchmarks/ensemble_members_tuning.py " + shlex.join(sys.argv[1:]),
                    "date": datetime.now(UTC).isoformat(timespec="seconds"), "models": models,
                    "split": "each series' validation day (the day before the held-out day), alternate series "
                             "halves: chosen on one, scored on the other", "datasets": {}}
    totals = {m: [] for m in MARGINS}
    for name in args.datasets.split(","):
        t0 = time.perf_counter()
        by_metric = validation_losses(name, models, args.n_jobs)
        every = member_subsets(len(models)).index(tuple(range(len(models))))
        entry = {"seconds": round(time.perf_counter() - t0, 1), "metrics": {}}
        for metric, losses in by_metric.items():
            rows = {str(m): cross_half(models, losses, m) for m in MARGINS}
            for m in MARGINS:
                totals[m].append(rows[str(m)]["validation_mase"])
            entry["metrics"][metric] = {"series": len(losses), "all_models_validation_mase":
                                        round(float(losses[:, every].mean()), 6), "margins": rows}
        record["datasets"][name] = entry
        print(name, json.dumps(entry["metrics"], indent=1), flush=True)
    mean = {m: float(np.mean(v)) for m, v in totals.items()}
    best = min(mean.values())
    record["mean_cross_half_validation_mase"] = {str(m): round(v, 6) for m, v in mean.items()}
    record["chosen_margin"] = max(m for m, v in mean.items() if v <= best)
    out = RESULTS / "ensemble_members_tuning.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print("chosen margin", record["chosen_margin"], "written", out)


if __name__ == "__main__":
    main()
