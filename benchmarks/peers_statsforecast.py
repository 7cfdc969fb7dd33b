"""statsforecast's models under Foresight's evaluation protocol (run in .venv-bench).

Reads the exact split Foresight used (``unique_id, ds, y, part`` with part = train or
test), fits each model once on the training part and, from every cutoff, forecasts
1..H steps with ``forward`` (the fitted model applied to the actuals up to the cutoff,
no refit). Writes a forecast frame and per-model fit/predict seconds.

Usage: python benchmarks/peers_statsforecast.py SPLIT.parquet OUT_PREFIX --season 288 --h 6 --stride 6 --n-jobs 2
"""
from __future__ import annotations

import json
import os
import time
from multiprocessing import get_context

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from peer_args import peer_parser  # noqa: E402

LEVELS = [80, 95]


def make_models(season: int) -> dict:
    from statsforecast.models import MSTL, AutoARIMA, AutoETS, AutoTheta, Naive, SeasonalNaive

    return {
        "sf_Naive": lambda: Naive(),
        "sf_SeasonalNaive": lambda: SeasonalNaive(season_length=season),
        "sf_AutoETS": lambda: AutoETS(season_length=season),
        "sf_AutoARIMA": lambda: AutoARIMA(season_length=season),
        "sf_AutoTheta": lambda: AutoTheta(season_length=season),
        "sf_MSTL": lambda: MSTL(season_length=season),
    }


def run_series(args):
    uid, train, test, season, h, origins, names = args
    out_rows, timings = [], {}
    for name, factory in make_models(season).items():
        if name not in names:
            continue
        t0 = time.perf_counter()
        try:
            model = factory().fit(train)
            fitted_ok = True
        except Exception as exc:  # noqa: BLE001 - report and fall back like Foresight does
            print(f"{name} failed to fit {uid}: {exc}", flush=True)
            fitted_ok = False
        t1 = time.perf_counter()
        for origin in origins:
            history = np.concatenate([train, test[:origin]])
            if fitted_ok:
                try:
                    fc = model.forward(y=history, h=h, level=LEVELS)
                except Exception as exc:  # noqa: BLE001
                    print(f"{name} failed to forecast {uid}: {exc}", flush=True)
                    fc = None
            else:
                fc = None
            if fc is None:  # seasonal naive fallback, as in Foresight
                from statsforecast.models import SeasonalNaive

                fc = SeasonalNaive(season_length=season).forecast(y=history, h=h, level=LEVELS)
            out_rows.append((uid, origin, name, fc))
        t2 = time.perf_counter()
        timings[name] = (t1 - t0, t2 - t1)
    return out_rows, timings


def main() -> None:
    parser = peer_parser()
    parser.add_argument("--models", default=",".join(make_models(288)),
                        help="comma-separated peer models to run (default: all six)")
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = sorted(set(names) - set(make_models(288)))
    if unknown:
        parser.error(f"unknown peer model(s) {unknown}; choose from {list(make_models(288))}")

    split = pd.read_parquet(args.split)
    tasks = []
    for uid, g in split.groupby("unique_id", sort=True):
        train = g.loc[g["part"] == "train", "y"].to_numpy("float64")
        test = g.loc[g["part"] == "test", "y"].to_numpy("float64")
        origins = list(range(0, len(test) - args.h + 1, args.stride))
        tasks.append((uid, train, test, args.season, args.h, origins, names))

    started = time.perf_counter()
    results = []
    with get_context("fork").Pool(args.n_jobs) as pool:
        # progress per series, so that a long run shows how far it is and what each model costs
        for done, (series_rows, timings) in enumerate(pool.imap_unordered(run_series, tasks, chunksize=1), 1):
            results.append((series_rows, timings))
            costs = ", ".join(f"{name[3:]} {f + p:.0f}s" for name, (f, p) in timings.items())
            print(f"statsforecast: {done}/{len(tasks)} series after {time.perf_counter() - started:.0f} s "
                  f"({series_rows[0][0] if series_rows else '?'}: {costs})", flush=True)
    wall = time.perf_counter() - started

    rows, fit_s, pred_s = [], {}, {}
    for series_rows, timings in results:
        for name, (f, p) in timings.items():
            fit_s[name] = fit_s.get(name, 0.0) + f
            pred_s[name] = pred_s.get(name, 0.0) + p
        for uid, origin, name, fc in series_rows:
            for step in range(args.h):
                row = {"unique_id": uid, "origin": origin, "step": step + 1, "model": name,
                       "yhat": float(fc["mean"][step])}
                for level in LEVELS:
                    row[f"yhat_lo_{level}"] = float(fc[f"lo-{level}"][step])
                    row[f"yhat_hi_{level}"] = float(fc[f"hi-{level}"][step])
                rows.append(row)
    pd.DataFrame(rows).to_parquet(f"{args.out_prefix}.forecasts.parquet", index=False)
    with open(f"{args.out_prefix}.timings.json", "w") as fh:
        json.dump({"wall_seconds": wall, "fit_seconds": fit_s, "predict_seconds": pred_s,
                   "n_jobs": args.n_jobs}, fh, indent=2)


if __name__ == "__main__":
    main()
