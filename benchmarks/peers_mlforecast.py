"""mlforecast with LightGBM under Foresight's evaluation protocol (run in .venv-bench).

Reads the exact split Foresight used (``unique_id, ds, y, part`` with part = train or
test), fits one global LightGBM across every series' training part once and, from every
cutoff, forecasts 1..H steps with ``predict(new_df=...)``: the fitted model applied to the
actuals up to the cutoff, no refit. Intervals are mlforecast's conformal ones
(``PredictionIntervals`` on the last windows of the training part). Writes a forecast frame
and fit/predict seconds, like ``peers_statsforecast.py``.

The configuration is what a user of mlforecast would write for 5-minute data with a daily
cycle (lags over the last hour and a day earlier, rolling means, time-of-day and weekday,
per-series standard scaling); the variant in ``CONFIGS`` is chosen per data set on its tuning
split (each series' last training day, never the held-out day; ``benchmarks/tuning_benchmark.py``).

Usage: python benchmarks/peers_mlforecast.py SPLIT.parquet OUT_PREFIX --season 288 --h 6 --stride 6 --n-jobs 2
"""
from __future__ import annotations

import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from peer_args import peer_parser  # noqa: E402

LEVELS = [80, 95]
MODEL = "mlf_LightGBM"
CONFIGS = {
    # recursive (mlforecast's default): one model, its own forecasts fed back as lags
    "recursive": {"max_horizon": None, "differences": False},
    # direct: one model per step (``max_horizon``), as Foresight's lightgbm does
    "direct": {"max_horizon": "h", "differences": False},
    # both again on first differences (``Differences([1])`` before the scaler): trees then
    # learn changes, not levels they may never have seen
    "recursive_diff": {"max_horizon": None, "differences": True},
    "direct_diff": {"max_horizon": "h", "differences": True},
}
DEFAULT_CONFIG = "recursive"


def make_forecaster(season: int, n_jobs: int, differences: bool = False, seed: int = 0):
    from lightgbm import LGBMRegressor
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean, RollingStd
    from mlforecast.target_transforms import Differences, LocalStandardScaler

    def minute_of_day(dates):
        return dates.hour * 60 + dates.minute

    model = LGBMRegressor(n_estimators=400, learning_rate=0.05, num_leaves=31, min_child_samples=100,
                          subsample=0.8, subsample_freq=1, colsample_bytree=0.8, reg_lambda=1.0,
                          objective="l1", random_state=seed, n_jobs=n_jobs, deterministic=True,
                          force_row_wise=True, verbosity=-1)
    return MLForecast(
        models={MODEL: model},
        freq=pd.tseries.frequencies.to_offset(pd.Timedelta(days=1) / season),
        lags=[*range(1, 13), season - 1, season, season + 1, 2 * season, 7 * season],
        lag_transforms={1: [RollingMean(window_size=12), RollingStd(window_size=12),
                            RollingMean(window_size=season)]},
        date_features=[minute_of_day, "dayofweek"],
        target_transforms=[Differences([1]), LocalStandardScaler()] if differences else [LocalStandardScaler()],
        num_threads=n_jobs,
    )


def main() -> None:
    from mlforecast.utils import PredictionIntervals

    parser = peer_parser()
    parser.add_argument("--config", choices=list(CONFIGS), default=DEFAULT_CONFIG)
    args = parser.parse_args()

    split = pd.read_parquet(args.split).sort_values(["unique_id", "ds"], kind="stable")
    split["ds"] = pd.to_datetime(split["ds"], utc=True).dt.tz_localize(None)
    train = split[split["part"] == "train"][["unique_id", "ds", "y"]].reset_index(drop=True)
    test = split[split["part"] == "test"][["unique_id", "ds", "y"]].reset_index(drop=True)
    test["k"] = test.groupby("unique_id").cumcount()
    n_test = int(test.groupby("unique_id").size().min())
    origins = list(range(0, n_test - args.h + 1, args.stride))
    config = CONFIGS[args.config]
    max_horizon = config["max_horizon"]

    started = time.perf_counter()
    fcst = make_forecaster(args.season, args.n_jobs, config["differences"])
    fcst.fit(train, prediction_intervals=PredictionIntervals(n_windows=2, h=args.h),
             max_horizon=args.h if max_horizon == "h" else None)
    fitted = time.perf_counter()
    rows = []
    for origin in origins:
        history = pd.concat([train, test[test["k"] < origin][["unique_id", "ds", "y"]]])
        history = history.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)
        pred = fcst.predict(h=args.h, new_df=history, level=LEVELS)
        pred = pred.sort_values(["unique_id", "ds"], kind="stable")
        pred["step"] = pred.groupby("unique_id").cumcount() + 1
        out = pd.DataFrame({"unique_id": pred["unique_id"].to_numpy(), "origin": origin,
                            "step": pred["step"].to_numpy(), "model": MODEL,
                            "yhat": pred[MODEL].to_numpy("float64")})
        for level in LEVELS:
            out[f"yhat_lo_{level}"] = pred[f"{MODEL}-lo-{level}"].to_numpy("float64")
            out[f"yhat_hi_{level}"] = pred[f"{MODEL}-hi-{level}"].to_numpy("float64")
        rows.append(out)
    done = time.perf_counter()
    frame = pd.concat(rows, ignore_index=True)
    bad = ~np.isfinite(frame[["yhat", *[f"yhat_{s}_{lv}" for lv in LEVELS for s in ("lo", "hi")]]]).all(axis=1)
    if bad.any():  # never expected; keep the protocol's rule that no non-finite forecast is scored
        raise SystemExit(f"mlforecast gave {int(bad.sum())} non-finite forecast rows")
    frame.to_parquet(f"{args.out_prefix}.forecasts.parquet", index=False)
    with open(f"{args.out_prefix}.timings.json", "w") as fh:
        json.dump({"wall_seconds": done - started, "fit_seconds": {MODEL: fitted - started},
                   "predict_seconds": {MODEL: done - fitted}, "n_jobs": args.n_jobs, "config": args.config},
                  fh, indent=2)
    print(f"mlforecast ({args.config}): {train['unique_id'].nunique()} series, fit {fitted - started:.1f} s, "
          f"{len(origins)} cutoffs in {done - fitted:.1f} s", flush=True)


if __name__ == "__main__":
    main()
