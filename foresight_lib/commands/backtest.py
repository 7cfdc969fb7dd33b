"""``foresight backtest``: load data, validate and prepare it, backtest models, print the leaderboard.

The same evaluation protocol as the DAG's evaluate step and the benchmarks (DESIGN.md):
the last ``--test-days`` of every series held out, each model fitted once on the
``--history-days`` before, forecasts from a cutoff every ``--stride``. Before that, the
pipeline's validation (the ``validation`` settings of the configuration) quarantines
broken series: duplicates, backwards timestamps, infinite or absurd values, values out
of range, too many NaN, constant series. Two things are not checked as the pipeline does:
completeness on a common grid (files may cover different periods; ``--max-filled-share``
bounds each series' gaps instead), and the share of failed series (quarantined series are
skipped; the command fails only when none is left). Writes the JSON report and the
forecast frame (with the actuals in ``y``) atomically; every series or model left out is
in the report's ``skipped`` with its stage and reason.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from foresight_lib.commands.reports import json_safe
from foresight_lib.config import load_config
from foresight_lib.errors import ConfigError, DataError
from foresight_lib.forecasting.backtest import BacktestResult, BacktestSpec, run_backtest
from foresight_lib.forecasting.models import ALL_MODELS, DEFAULT_MODELS
from foresight_lib.quality.features import FeatureResult, prepare_series
from foresight_lib.quality.validation import ValidationOutcome, validate_frame
from foresight_lib.sources.loaders import FORMATS, LoadResult, load_series
from foresight_lib.sources.saving import atomic_write, save_frame

NOT_CHECKED = [
    "completeness on a common grid: files may cover different periods; --max-filled-share bounds each "
    "series' gaps instead",
    "the share of failed series (validation.max_failed_share): quarantined series are skipped, and the "
    "command fails only when no series is left",
]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "backtest", help="backtest forecasting models on a data set and print the leaderboard",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--input", required=True, help="file or folder of metrics")
    parser.add_argument("--format", required=True, choices=FORMATS, help="layout of the input")
    parser.add_argument("--metrics", default=None, help="comma-separated metric names to keep (default: all)")
    parser.add_argument("--freq", default="5min", help="grid step the series are resampled to")
    parser.add_argument("--horizons", default="5m,15m,30m", help="comma-separated forecast horizons")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated models, from {','.join(ALL_MODELS)}")
    parser.add_argument("--test-days", type=float, default=1.0, help="days held out at the end of every series")
    parser.add_argument("--history-days", type=float, default=14.0, help="days of history each model is fitted on")
    parser.add_argument("--stride", default="30m", help="time between two forecast cutoffs in the held-out part")
    parser.add_argument("--n-jobs", type=int, default=0, help="worker processes (0: one per core, 1: no workers)")
    parser.add_argument("--last-days", type=float, default=None,
                        help="keep only the last N days of each series before the backtest")
    parser.add_argument("--gap-limit", default="1h", help="longest gap filled by interpolation")
    parser.add_argument("--max-filled-share", type=float, default=0.2,
                        help="drop a series with more than this share of filled points")
    parser.add_argument("--config", default=None,
                        help="configuration whose validation settings apply (default: $FORESIGHT_CONFIG or "
                             "include/foresight.yaml)")
    parser.add_argument("--output", default="report.json", help="JSON report")
    parser.add_argument("--forecasts-out", default="forecasts.parquet", help="forecast frame with actuals (Parquet)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec = BacktestSpec(
        models=_split(args.models), freq=args.freq, horizons=args.horizons, test_days=args.test_days,
        history_days=args.history_days, stride=args.stride, n_jobs=args.n_jobs,
    )
    if args.last_days is not None and args.last_days <= 0:
        raise ConfigError(f"--last-days must be positive, got {args.last_days}")
    if not str(args.forecasts_out).lower().endswith(".parquet"):
        raise ConfigError(f"--forecasts-out {args.forecasts_out}: end the name with .parquet")

    vcfg = load_config(args.config).validation.model_copy(update={"min_completeness": 0.0, "max_failed_share": 1.0})

    loaded = load_series(args.input, args.format, _split(args.metrics) if args.metrics else None)
    if loaded.frame.empty:
        raise DataError(f"{args.input}: no series found (metrics: {args.metrics or 'all'}); check --metrics")
    validated = validate(loaded, vcfg, args.freq)
    prepared = prepare_series(validated.valid, validated.series, freq=args.freq, gap_limit=args.gap_limit,
                              max_filled_share=args.max_filled_share)
    if prepared.frame.empty:
        reasons = "; ".join(f"{d['unique_id']}: {d['reason']}" for d in prepared.dropped[:3])
        raise DataError(f"no series left after the features step: {reasons}")
    frame = keep_last_days(prepared.frame, args.last_days) if args.last_days else prepared.frame
    print(f"loaded {loaded.series.shape[0]} series ({len(loaded.frame)} rows) from {args.input}; "
          f"{prepared.series.shape[0]} on the {args.freq} grid", file=sys.stderr)

    result = _run_with_progress(frame, spec)
    report = build_report(result, loaded, prepared, args, validated)
    atomic_write(args.output, lambda tmp: tmp.write_text(json.dumps(json_safe(report), indent=2) + "\n"))
    save_frame(result.forecasts, args.forecasts_out)
    print(format_leaderboard(result))
    print(_summary(report))
    print(f"wrote {args.output} and {args.forecasts_out}")
    return 0


def validate(loaded: LoadResult, vcfg, freq: str) -> ValidationOutcome:
    """The pipeline's validation of the loaded frame, quarantined series left out (see NOT_CHECKED).

    Raises:
        DataError: the frame's schema is wrong, or every series was quarantined (the first
            reasons are listed).
    """
    outcome = validate_frame(loaded.frame, loaded.series, vcfg, freq=freq, raise_on_failure=False)
    if outcome.summary.get("schema_failed"):
        texts = next(iter(outcome.reasons.values()), ["schema"])
        raise DataError(f"the loaded frame's schema is wrong: {'; '.join(texts)}; check --format")
    if outcome.summary["series_passed"] == 0:
        reasons = "; ".join(f"{uid}: {'; '.join(texts)}" for uid, texts in list(outcome.reasons.items())[:3])
        raise DataError(f"no series passed validation ({outcome.summary['series_total']} quarantined): {reasons}")
    return outcome


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def keep_last_days(frame: pd.DataFrame, days: float) -> pd.DataFrame:
    """Rows within the last ``days`` days of each series (the last timestamp included)."""
    last = frame.groupby("unique_id")["ds"].transform("max")
    keep = frame["ds"] > last - pd.Timedelta(days=days)
    return frame[keep].reset_index(drop=True)


def _run_with_progress(frame: pd.DataFrame, spec: BacktestSpec) -> BacktestResult:
    from tqdm import tqdm

    # disable=None: a bar on an interactive terminal, nothing in logs or pipes
    with tqdm(total=0, desc="backtest", unit="series", file=sys.stderr, disable=None) as bar:
        return run_backtest(frame, spec, progress=bar.update, on_start=lambda n: bar.reset(total=n))


def build_report(result: BacktestResult, loaded: LoadResult, prepared: FeatureResult,
                 args: argparse.Namespace, validated: ValidationOutcome | None = None) -> dict:
    """The runner's report plus the input, validation, the features summary and every skip with its stage.

    Stages: ``load`` (a file), ``validate`` (a quarantined series), ``features``,
    ``backtest`` (too short, gappy, non-finite), ``score`` (a series without a usable MASE
    scale, or a model without a finite score).
    """
    report = result.report()
    skipped = [{"stage": "load", **row} for row in loaded.skipped]
    if validated is not None:
        skipped += [{"stage": "validate", "unique_id": uid, "reason": "; ".join(texts)}
                    for uid, texts in validated.reasons.items()]
    skipped += [{"stage": "features", **row} for row in prepared.dropped]
    skipped += [{"stage": "backtest", **row} for row in report["skipped"]]
    skipped += [{"stage": "score", **row} for row in report["unscored"]]
    skipped += [{"stage": "score", **row} for row in report["skipped_models"]]
    report["skipped"] = skipped
    if validated is not None:
        keep = ("series_total", "series_failed", "series_passed", "series_constant_only", "values_nulled",
                "series_failed_by_check", "max_null_share", "max_non_finite_share", "max_abs_value",
                "min_relative_std")
        report["validation"] = {**{k: validated.summary.get(k) for k in keep}, "not_checked": NOT_CHECKED}
    report["input"] = {
        "path": str(args.input), "format": args.format, "metrics": args.metrics,
        "series_loaded": int(loaded.series.shape[0]), "rows_loaded": len(loaded.frame),
        "last_days": args.last_days, "notes": loaded.notes,
    }
    report["features"] = {k: v for k, v in prepared.report.items() if k not in ("series", "dropped")}
    return report


LEADERBOARD_HEADER = ["model", "horizon", "MAE", "RMSE", "sMAPE", "MASE", "wQL", "cov80", "cov95", "w80", "w95"]


def format_leaderboard(result: BacktestResult) -> str:
    """The leaderboard as an aligned text table; the champion's rows are marked with ``*``."""
    rows = []
    for rec in result.leaderboard.to_dict(orient="records"):
        mark = "*" if rec["model"] == result.champion else " "
        rows.append([
            f"{mark}{rec['model']}", rec["horizon"], _num(rec["mae"]), _num(rec["rmse"]),
            _fixed(rec["smape"], 2), _fixed(rec["mase"], 3), _fixed(rec.get("wql"), 3),
            _pct(rec["coverage_80"]), _pct(rec["coverage_95"]),
            _num(rec["width_80"]), _num(rec["width_95"]),
        ])
    header = [" " + LEADERBOARD_HEADER[0], *LEADERBOARD_HEADER[1:]]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) if i < 2 else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    horizons = ",".join(result.spec.horizons)
    lines.append(f"* champion: {result.champion} (lowest mean MASE over {horizons}; "
                 f"{len(result.series)} series, {result.seconds:.1f} s)")
    return "\n".join(lines)


def _num(value) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _fixed(value, digits: int) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _summary(report: dict) -> str:
    lines = []
    by_stage: dict[str, int] = {}
    for row in report["skipped"]:
        by_stage[row["stage"]] = by_stage.get(row["stage"], 0) + 1
    if by_stage:
        parts = ", ".join(f"{n} at {stage}" for stage, n in by_stage.items())
        lines.append(f"skipped: {parts} (reasons under 'skipped' in the report)")
        for row in report["skipped"][:5]:
            what = row.get("unique_id") or (f"model {row['model']}" if row.get("model")
                                            else Path(row.get("file", "?")).name)
            lines.append(f"  {row['stage']}: {what}: {row['reason'][:160]}")
        if len(report["skipped"]) > 5:
            lines.append(f"  ... and {len(report['skipped']) - 5} more")
    counts = report.get("fallback_counts") or {}
    if counts:
        parts = ", ".join(f"{model} on {n} series" for model, n in counts.items())
        lines.append(f"fallbacks (seasonal naive used instead): {parts}")
    counts = report.get("validation_fallback_counts") or {}
    if counts:
        parts = ", ".join(f"{model} on {n} series" for model, n in counts.items())
        lines.append(f"fallbacks on the ensemble's validation day: {parts}")
    guarded = [g for g in report.get("mase_guard") or [] if g.get("scored")]
    if guarded:
        lines.append(f"MASE scale guarded on {len(guarded)} series (see 'mase_guard' in the report)")
    left_out = report.get("wql_left_out") or []
    if left_out:
        models = [row["model"] for row in left_out if row.get("model")]
        lines.append(f"wQL not scored for {len(left_out) - len(models)} series x horizon(s)"
                     + (f" and model(s) {', '.join(models)}" if models else "") + " (see 'wql_left_out' in the report)")
    return "\n".join(lines) if lines else "skipped: none; fallbacks: none"
