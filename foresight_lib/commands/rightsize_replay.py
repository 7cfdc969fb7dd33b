"""``foresight rightsize-replay``: replay a real trace and score rightsizing against baselines.

Each day (``--mode daily``) or each 30-minute window (``--mode window``) the methods
recommend from the history before it and are scored on what came next: slack (unused
share of what was provisioned) and violations (share of 5-minute points above the
request; for memory also above the limit). Writes the JSON report (totals per method,
the comparison with each baseline, every per-entity per-period recommendation) and a PNG
of slack against violations over a range of margins. Every method is scored on the same
series: the report and the printed summary list each series left out, and why.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from foresight_lib.commands.backtest import keep_last_days
from foresight_lib.commands.reports import json_safe
from foresight_lib.errors import ConfigError, DataError
from foresight_lib.quality.features import prepare_series
from foresight_lib.rightsizing.replay import replay
from foresight_lib.rightsizing.replay_report import format_frontier, plot_sweep
from foresight_lib.rightsizing.replay_spec import DEFAULT_MARGINS, DEFAULT_MODEL, LOCAL_MODELS, MODES, ReplaySpec
from foresight_lib.rightsizing.sizing import PROFILES
from foresight_lib.sources.loaders import FORMATS, load_series
from foresight_lib.sources.saving import atomic_write


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "rightsize-replay", help="replay a trace: rightsizing recommendations against VPA/Crane/reactive baselines",
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--input", required=True, help="file or folder of metrics")
    parser.add_argument("--format", required=True, choices=FORMATS, help="layout of the input")
    parser.add_argument("--metrics", default=None, help="comma-separated metric names to keep (default: all)")
    parser.add_argument("--mode", choices=MODES, default="daily", help="static daily sizes or 30-minute windows")
    parser.add_argument("--profile", choices=list(PROFILES), default="balanced", help="margins of the recommendation")
    parser.add_argument("--model", choices=LOCAL_MODELS, default=None,
                        help="forecasting model behind the recommendations (default: "
                             + ", ".join(f"{m} in {mode} mode" for mode, m in DEFAULT_MODEL.items()) + ")")
    parser.add_argument("--freq", default="5min", help="grid step the series are resampled to")
    parser.add_argument("--window", default="30m", help="window length in window mode")
    parser.add_argument("--lead-windows", type=int, default=0,
                        help="window mode: size each window this many windows before it starts")
    parser.add_argument("--min-history-days", type=float, default=2.0, help="history before the first scored period")
    parser.add_argument("--history-days", type=float, default=7.0, help="days the model is fitted on")
    parser.add_argument("--last-days", type=float, default=None, help="keep only the last N days of each series")
    parser.add_argument("--margins", default=",".join(f"{m:g}" for m in DEFAULT_MARGINS),
                        help="comma-separated fixed margins for the slack/violations curves")
    parser.add_argument("--output", default="report.json", help="JSON report")
    parser.add_argument("--plot", default=None, help="PNG of slack against violations (default: beside the report)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        margins = [float(m) for m in args.margins.split(",") if m.strip()]
    except ValueError as exc:
        raise ConfigError(f"--margins must be comma-separated numbers, got '{args.margins}'") from exc
    model = args.model or DEFAULT_MODEL[args.mode]
    spec = ReplaySpec(mode=args.mode, profile=args.profile, model=model, freq=args.freq, window=args.window,
                      lead_windows=args.lead_windows, min_history_days=args.min_history_days,
                      history_days=args.history_days, margins=margins)
    if not str(args.output).lower().endswith(".json"):
        raise ConfigError(f"--output {args.output}: end the name with .json")
    plot_path = Path(args.plot) if args.plot else Path(args.output).with_suffix(".png")
    if plot_path.suffix.lower() != ".png":
        raise ConfigError(f"--plot {plot_path}: end the name with .png")

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    loaded = load_series(args.input, args.format, metrics)
    if loaded.frame.empty:
        raise DataError(f"{args.input}: no series found (metrics: {args.metrics or 'all'}); check --metrics")
    prepared = prepare_series(loaded.frame, loaded.series, freq=args.freq)
    if prepared.frame.empty:
        reasons = "; ".join(f"{d['unique_id']}: {d['reason']}" for d in prepared.dropped[:3])
        raise DataError(f"no series left after the features step: {reasons}")
    if args.last_days is not None:
        if args.last_days <= 0:
            raise ConfigError(f"--last-days must be positive, got {args.last_days}")
        frame = keep_last_days(prepared.frame, args.last_days)
    else:
        frame = prepared.frame
    print(f"replaying {prepared.series.shape[0]} series from {args.input} ({args.mode} mode, "
          f"profile {args.profile}, model {model})", file=sys.stderr)

    result = replay(frame, spec, prepared.series)
    plot_sweep(result, plot_path)
    report = result.report()
    report["skipped"] = ([{"stage": "load", **r} for r in loaded.skipped]
                         + [{"stage": "features", **r} for r in prepared.dropped]
                         + [{"stage": "replay", **r} for r in report["skipped"]])
    report["input"] = {"path": str(args.input), "format": args.format, "metrics": args.metrics,
                       "last_days": args.last_days}
    report["plot"] = str(plot_path)
    atomic_write(args.output, lambda tmp: tmp.write_text(json.dumps(json_safe(report)) + "\n"))
    print(format_totals(report))
    if report["skipped"]:
        print(format_skipped(report["skipped"]))
    print(f"wrote {args.output} ({len(report['records'])} recommendations) and {plot_path}")
    return 0


def format_totals(report: dict) -> str:
    """Totals per metric and method as an aligned table, then the comparison verdicts."""
    lines = [f"{'metric':<24} {'method':<10} {'periods':>8} {'slack':>8} {'viol':>8} {'viol>lim':>9}"]
    for row in report["totals"]:
        limit = row.get("violations_limit")
        limit_text = f"{100 * limit:.2f}%" if limit is not None and math.isfinite(limit) else "-"
        lines.append(f"{row['metric']:<24} {row['method']:<10} {row['periods']:>8} {100 * row['slack']:>7.2f}% "
                     f"{100 * row['violations']:>7.2f}% {limit_text:>9}")
    goal = "no more slack nor violations, less of one"
    for c in report["comparison"]:
        verdict = "yes" if c["dominates"] else "no"
        if "dominates_on_curve" in c:
            curve = f"yes, with a target of {100 * c['curve_target']:g} %" if c["dominates_on_curve"] else "no"
            verdict += f" (on the trade-off curve: {curve})"
        lines.append(f"forecast vs {c['baseline']} on {c['metric']}: {goal}: {verdict}")
    for c in report.get("frontiers", []):
        lines.append(format_frontier(c))
    for d in report.get("entity_days", []):
        lines.append(format_entity_days(d))
    return "\n".join(lines)


def format_entity_days(d: dict) -> str:
    """One line of memory per entity-day figures (``entity_days.entity_day_summary``)."""
    if not d["entity_days"]:
        return f"{d['metric']} {d['method']} per entity-day: no entity with two days or more"
    dist = ", ".join(f"{k}: {100 * v:.0f} %" for k, v in d["oom_days_per_entity"].items())
    young = f"; {len(d['young_entities'])} entity(ies) with fewer than two days apart" if d["young_entities"] else ""
    return (f"{d['metric']} {d['method']} per entity-day: relative slack {100 * d['relative_slack']:.2f} %, "
            f"OOM-free {100 * d['oom_free']:.2f} % of {d['entity_days']} entity-days, OOM-days per entity ({dist}), "
            f"{d['changes_per_entity_day']:.2f} size changes per entity-day{young}")


def format_skipped(skipped: list[dict], limit: int = 20) -> str:
    """What was left out (files at loading, series at the features step or the replay), one line each with why."""
    lines = [f"{len(skipped)} file(s) or series left out (every method is scored on the same series):"]
    for row in skipped[:limit]:
        name = row.get("unique_id") or row.get("file") or "?"
        lines.append(f"  {name} ({row.get('stage', 'replay')}): {row['reason']}")
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more: see 'skipped' in the report")
    return "\n".join(lines)
