"""Rightsizing replay benchmark on the evaluation part of the Bitbrains and Alibaba 2018 traces.

Every constant of rightsizing was chosen on the tuning part of the traces
(``foresight_lib/rightsizing/splits.py`` says which entity is in which part;
``benchmarks/rightsizing_tune.py`` did the choosing). This benchmark replays the
*evaluation* part, which no tuning read, in daily and window mode with the balanced
profile (the same walk as ``foresight rightsize-replay``, run in process on the part's
series), and the tuning part beside it, labelled, for comparison. It records the totals,
the verdicts against the baselines and the command in ``benchmarks/results/rightsizing.md``
and ``rightsizing.json``; the full reports and plots go to ``--work``.

    .venv/bin/python benchmarks/rightsizing_replay.py [--parts evaluation,tuning] [--work /tmp/rightsizing]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rightsizing_memory_bound import usage_by_period  # noqa: E402

from foresight_lib.commands.reports import json_safe  # noqa: E402
from foresight_lib.quality.features import prepare_series  # noqa: E402
from foresight_lib.rightsizing import splits  # noqa: E402
from foresight_lib.rightsizing.entity_days import entity_day_rows, entity_day_summary  # noqa: E402
from foresight_lib.rightsizing.frontier import frontier_verdict  # noqa: E402
from foresight_lib.rightsizing.replay import replay  # noqa: E402
from foresight_lib.rightsizing.replay_report import FORECAST, plot_sweep, score, slack_at  # noqa: E402
from foresight_lib.rightsizing.replay_spec import DEFAULT_MODEL, ReplaySpec  # noqa: E402
from foresight_lib.sources.loaders import load_series  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
TRACES = {
    "bitbrains": (SHARED / "bitbrains_rnd" / "2013-8", "cpu_usage_mhz,memory_usage_kb",
                  "Bitbrains GWA-T-12 Rnd, 2013-8"),
    "alibaba2018": (SHARED / "alibaba2018_machines", "cpu_util_percent,mem_util_percent",
                    "Alibaba 2018 machines"),
}
BASELINE = {"daily": "vpa", "window": "reactive"}
GOALS = {
    "daily": "the plan's frontier (its target and margin swept) is nowhere above the VPA-style baseline's (its "
             "margin swept) over violations up to 5 %",
    "window": "the plan's frontier (its target and margin swept) is nowhere above the reactive scaler's (its "
              "headroom swept, up to 5× the previous peak on top of it) over violations up to 5 %",
}
CURVE_GOAL = (0.30, 0.01)
"""Window CPU: some point of the plan's trade-off curve at or under 30 % slack and 1 % violations."""
CAPACITY = {"bitbrains": {"cpu_usage_mhz": "cpu_capacity_mhz", "memory_usage_bytes": "memory_provisioned_bytes"}}
"""The operator's provisioned capacity per usage metric, where the trace has it (Bitbrains'
``CPU capacity provisioned [MHZ]`` and ``Memory capacity provisioned [KB]`` columns): what
people size by hand. Alibaba 2018 gives usage as a percent of the machine and no capacity."""
CAPACITY_LOAD = {"bitbrains": "cpu_capacity_mhz,memory_provisioned_kb"}
RUNS = [("bitbrains", "daily", 0), ("bitbrains", "window", 0), ("bitbrains", "window", 3),
        ("alibaba2018", "daily", 0), ("alibaba2018", "window", 0)]
"""Trace, mode and lead of each run: the goals are for windows sized at their start; the
plan published for later windows is measured sized 3 windows (90 minutes) ahead."""


def _load(trace: str):
    path, metrics, _ = TRACES[trace]
    loaded = load_series(path, trace, metrics.split(","))
    return prepare_series(loaded.frame, loaded.series, freq="5min")


def _load_capacity(trace: str):
    if trace not in CAPACITY_LOAD:
        return None
    path = TRACES[trace][0]
    loaded = load_series(path, trace, CAPACITY_LOAD[trace].split(","))
    return prepare_series(loaded.frame, loaded.series, freq="5min").frame


def provisioned_baseline(frame: pd.DataFrame, capacity: pd.DataFrame, records: pd.DataFrame, trace: str,
                         targets: list[dict], sweep: list[dict], totals: list[dict]) -> list[dict]:
    """Per usage metric: the operator's provisioned capacity scored as a baseline on the
    plan's scored periods (its point, the plan's frontier against it), and memory's entity-day rows.

    A period's capacity is the highest value provisioned over it (the column is constant
    for almost every VM); it is both request and limit. It has no knob: its frontier is one point.
    """
    out = []
    recs = records[records["method"] == FORECAST]
    usage = usage_by_period(frame, recs)
    cap_ids = set(capacity["unique_id"].astype(str).unique())
    for metric, cap_metric in CAPACITY[trace].items():
        keep = (recs["metric"] == metric).to_numpy()
        if not keep.any():
            continue
        sub = recs[keep].assign(unique_id=lambda r, m=metric, c=cap_metric: r["unique_id"].str.replace(m, c, n=1))
        sub = sub[sub["unique_id"].isin(cap_ids)]
        caps = [float(np.nanmax(c)) if c.size else float("nan") for c in usage_by_period(capacity, sub)]
        used = [u for u, k in zip(usage, keep, strict=True) if k]
        used = [u for u, uid in zip(used, recs[keep]["unique_id"].str.replace(metric, cap_metric, n=1), strict=True)
                if uid in cap_ids]
        sums = np.zeros(4)
        per_entity: dict[str, tuple[list, list, list]] = {}
        for (entity, start), cap, u in zip(sub[["entity", "period_start"]].itertuples(index=False), caps, used,
                                           strict=True):
            s = score(cap, u)
            sums += [s["provisioned"], s["unused"], s["points"], s["over"]]
            acc = per_entity.setdefault(entity, ([], [], []))
            acc[0].append(pd.Timestamp(start).value)
            acc[1].append(cap)
            acc[2].append(u)
        rows: list[dict] = []
        if metric.startswith("memory"):  # one call per entity, its periods in time order
            for entity, (starts, limits, usages) in per_entity.items():
                order = np.argsort(starts)
                rows += entity_day_rows(metric, "provisioned", entity, [starts[i] for i in order],
                                        [limits[i] for i in order], [usages[i] for i in order])
        point = (sums[1] / sums[0], sums[3] / sums[2]) if sums[0] else (float("nan"), float("nan"))
        plan = [(r["slack"], r["violations"]) for r in targets if r["metric"] == metric]
        plan += [(r["slack"], r["violations"]) for r in sweep if r["metric"] == metric and r["method"] == FORECAST]
        default = next(((t["slack"], t["violations"]) for t in totals
                        if t["metric"] == metric and t["method"] == FORECAST), None)
        verdict = frontier_verdict(plan + ([default] if default else []), [point], point, default)
        out.append({"metric": metric, "capacity_metric": cap_metric, "periods": len(caps), "slack": point[0],
                    "violations": point[1], "frontier": {"metric": metric, "baseline": "provisioned", **verdict},
                    "entity_day_rows": rows})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="evaluation,tuning",
                        help="comma-separated parts to replay (the first is the one the goals are judged on)")
    parser.add_argument("--profile", default="balanced")
    parser.add_argument("--work", default="/tmp/foresight_rightsizing")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    prepared = {trace: _load(trace) for trace in {t for t, _, _ in RUNS}}
    capacity = {trace: _load_capacity(trace) for trace in prepared}
    runs = []
    for trace, mode, lead in RUNS:
        for part in parts:
            prep = prepared[trace]
            frame = splits.keep_part(prep.frame, trace, part)
            stem = f"{trace}_{part}_{mode}" + (f"_lead{lead}" if lead else "")
            spec = ReplaySpec(mode=mode, profile=args.profile, model=DEFAULT_MODEL[mode], lead_windows=lead)
            started = time.perf_counter()
            result = replay(frame, spec, prep.series)
            seconds = time.perf_counter() - started
            plot_path = work / f"{stem}.png"
            plot_sweep(result, plot_path)
            report = result.report()
            (work / f"{stem}.json").write_text(json.dumps(json_safe(report)) + "\n")
            entities = sorted({splits.entity_of(u) for u in frame["unique_id"].astype(str).unique()})
            runs.append(_summary(trace, part, mode, lead, report, seconds, entities, plot_path))
            if capacity[trace] is not None and not lead:
                prov = provisioned_baseline(frame, capacity[trace], result.records, trace, report["targets"],
                                            report["sweep"], report["totals"])
                rows = [r for p in prov for r in p.pop("entity_day_rows")]
                runs[-1]["provisioned"] = prov
                runs[-1]["frontiers"] += [p["frontier"] for p in prov]
                runs[-1]["entity_days"] += entity_day_summary(pd.DataFrame(rows))
            else:
                runs[-1]["provisioned"] = None
            if mode == "window" and not lead:
                runs[-1]["curve_goal"]["perfect_foresight"] = perfect_foresight(frame, result.records)
            print(f"{stem}: {seconds:.1f} s", file=sys.stderr)
    not_shipped = [_pooled_memory(prepared["bitbrains"], part, args.profile) for part in parts]
    out = {"command": ".venv/bin/python benchmarks/rightsizing_replay.py" +
           ("" if args.parts == "evaluation,tuning" else f" --parts {args.parts}"),
           "split": "foresight_lib/rightsizing/splits.py", "judged_part": parts[0],
           "traces": {t: {"data": str(p.relative_to(ROOT.parent)), "metrics": m, "name": n}
                      for t, (p, m, n) in TRACES.items()},
           "model": DEFAULT_MODEL, "profile": args.profile, "python": platform.python_version(),
           "threads": os.environ.get("OMP_NUM_THREADS"), "runs": runs, "pooled_daily_memory": not_shipped}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rightsizing.json").write_text(json.dumps(json_safe(out), indent=2) + "\n")
    (RESULTS / "rightsizing.md").write_text(render(out))
    print(render(out))
    return 0


def perfect_foresight(frame: pd.DataFrame, records: pd.DataFrame) -> dict:
    """Window CPU: the least slack of static window sizes chosen knowing each window's points.

    Over the plan's scored CPU windows, each window's request is one of its own points (its
    peak: no violation; its second highest: one; ...), picked per window by a Lagrangian
    sweep that trades the fleet's provisioned CPU for points above the request. No method
    can know these sizes in advance: this bounds what any forecast could reach on the same
    windows, at no violation and at ``CURVE_GOAL``'s violation rate.
    """
    recs = records[(records["method"] == "forecast") & records["metric"].astype(str).str.startswith("cpu")]
    windows = usage_by_period(frame, recs)
    width = max(w.size for w in windows)
    block = np.full((len(windows), width), np.nan)
    for i, used in enumerate(windows):
        block[i, :used.size] = used
    ranked = -np.sort(-np.nan_to_num(block, nan=-np.inf), axis=1)  # highest first; a short window's gaps last
    sizes = np.isfinite(block).sum(axis=1)
    points, scale = int(sizes.sum()), float(np.nanmean(ranked[:, 0]))
    best: dict[str, float | None] = {"no_violation": None, "at_curve_rate": None}
    for lam in np.concatenate([[0.0], np.logspace(-4, 4, 161)]):
        options = [np.where(j < sizes, sizes * ranked[:, min(j, width - 1)] + lam * scale * j, np.inf)
                   for j in range(width)]
        request = ranked[np.arange(len(ranked)), np.argmin(np.stack(options, axis=1), axis=1)]
        over = int(np.nansum(block > request[:, None]))
        slack = float(np.nansum(np.maximum(request[:, None] - block, 0.0)) / np.sum(sizes * request))
        for key, allowed in (("no_violation", 0.0), ("at_curve_rate", CURVE_GOAL[1])):
            if over <= allowed * points and (best[key] is None or slack < best[key]):
                best[key] = slack
    return {"windows": len(windows), "points": points, **best}


def _pooled_memory(prep, part: str, profile: str) -> dict:
    """Bitbrains daily memory with its learnt factor pooled across the metric's series, as
    CPU's is: the check behind ``sizing.DAILY_POOLED_RESOURCES`` leaving memory out."""
    frame = splits.keep_part(prep.frame, "bitbrains", part)
    frame = frame[frame["unique_id"].astype(str).str.startswith("memory")]
    spec = ReplaySpec(mode="daily", profile=profile, model=DEFAULT_MODEL["daily"], margins=(0.0,),
                      daily_pooled_resources=("cpu", "memory", "other"))
    totals = replay(frame, spec, prep.series).totals
    row = totals[totals["method"] == "forecast"].iloc[0]
    return {"part": part, "metric": row["metric"], "slack": float(row["slack"]),
            "violations": float(row["violations"]), "violations_limit": float(row["violations_limit"])}


def _summary(trace: str, part: str, mode: str, lead: int, report: dict, seconds: float, entities: list[str],
             plot_path: Path) -> dict:
    baseline = BASELINE[mode]
    verdicts = [c for c in report["comparison"] if c["baseline"] == baseline]
    reached = {c["metric"]: bool(c["reached"]) for c in report["frontiers"] if c["baseline"] == baseline}
    curve = None
    if mode == "window":
        slack_max, viol_max = CURVE_GOAL
        cpu = [r for r in report["targets"] if r["metric"].startswith("cpu")]
        hits = [r for r in cpu if r["slack"] <= slack_max and r["violations"] <= viol_max]
        best = min((r for r in cpu if r["violations"] <= viol_max), key=lambda r: r["slack"], default=None)
        curve = {"reached": bool(hits), "best_at_1pct": best}
    targets = {r["metric"]: r["target_violation"] for r in report["records"]
               if r["method"] == "forecast" and r.get("target_violation") is not None}
    return {"trace": trace, "part": part, "mode": mode, "lead_windows": lead, "judged": not lead,
            "entities": entities, "series": report["series"], "seconds": round(seconds, 1),
            "model": report["model"], "totals": report["totals"], "comparison": report["comparison"],
            "targets": report["targets"], "sweep": report["sweep"], "skipped": report["skipped"],
            "settings": report["settings"], "baseline": baseline, "goal": GOALS[mode], "reached": reached,
            "verdicts": verdicts, "curve_goal": curve, "profile_targets": targets,
            "fallbacks": report["fallbacks"], "plot": str(plot_path),
            "frontiers": report["frontiers"], "entity_days": report["entity_days"]}


def baseline_at(sweep: list[dict], method: str, metric: str, violations: float) -> float | None:
    """The slack of ``method`` with its fixed margin moved until its violations equal ``violations``.

    Linear interpolation between the two margins of the sweep around that rate; None
    when the sweep does not reach it. This is the baseline's own trade-off curve, so it
    compares the plan with the baseline at an equal violation rate.
    """
    return slack_at(((r["violations"], r["slack"]) for r in sweep if r["method"] == method and r["metric"] == metric),
                    violations)


def _pct(value, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) \
        else f"{100 * value:.{digits}f} %"


def _frontier_of(run: dict, metric: str, baseline: str) -> dict | None:
    return next((c for c in run.get("frontiers", []) if c["metric"] == metric and c["baseline"] == baseline), None)


def _frontier_cell(run: dict, metric: str, baseline: str) -> str:
    c = _frontier_of(run, metric, baseline)
    if c is None:
        return "-"
    word = "reached" if c["reached"] else ("at parity" if c.get("within_parity") else "not reached")
    if not c["curves_meet"]:
        return word + ", curves never meet"
    return f"{word} (plan at most {100 * c['max_slack_gap']:+.2f} points)"


def _points(frontier: list) -> str:
    return ", ".join(f"{100 * s:.1f}/{100 * v:.2f}" for s, v in frontier if v <= 0.05) or "none ≤ 5 %"


def render_frontiers(out: dict) -> list[str]:
    """Per run, metric and baseline: both frontiers (points at ≤ 5 % violations), the matched points, the verdict."""
    lines = ["## Frontiers", "",
             "Points are slack/violations in %, Pareto-efficient, at most 5 % violations. *Matched*: the "
             "baseline's slack at the plan's default violations, and its violations at the plan's default slack.",
             ""]
    for run in out["runs"]:
        if run["lead_windows"]:
            continue
        lines += [f"### {run['part']} part, {run['trace']}, {run['mode']} mode", ""]
        for c in run.get("frontiers", []):
            m = c.get("matched") or {}
            at_v, at_s = m.get("baseline_slack_at_plan_violations"), m.get("baseline_violations_at_plan_slack")
            lines += [f"- **{c['metric']} vs {c['baseline']}**: {_frontier_cell(run, c['metric'], c['baseline'])}. "
                      f"{c['why']}.",
                      f"  - plan: {_points(c['plan_frontier'])}",
                      f"  - {c['baseline']}: {_points(c['baseline_frontier'])}",
                      f"  - matched: at the plan's {_pct(m.get('plan', [None, None])[1], 3)} violations the "
                      f"baseline leaves {_pct(at_v)} slack (plan {_pct(m.get('plan', [None])[0])}); at the plan's "
                      f"slack it has {_pct(at_s, 3)} violations"]
        lines.append("")
    return lines


def render_entity_days(out: dict) -> list[str]:
    """Memory per entity-day, every method (and the provisioned capacity where the trace has it)."""
    lines = ["## Memory per entity-day (Autopilot's definitions)", "",
             "Relative slack: the day's average limit minus the day's 95th percentile of 5-minute usage, over "
             "the average limit, averaged over entity-days; an OOM-day: any 5-minute sample above the limit that "
             "day; size changes: new limits taking effect that day. Entities with fewer than two scored days are "
             "counted apart, never mixed in. The VPA-style baseline runs with its real constants (8 daily peaks, "
             "24 h half-life, p90, +15 %, at least 250 MiB per pod, and after a day over its limit the next size "
             "at least the larger of +100 MiB and ×1.2 of that day's peak); Alibaba 2018's memory is a percent "
             "of a machine, so the byte constants do not apply there (only the ×1.2 bump) and its figures "
             "have no target. *provisioned*: the capacity the operator provisioned (Bitbrains' columns); "
             "Alibaba 2018 has none, so that baseline is left out there.", "",
             "| part | trace | mode | metric | method | entities | entity-days | relative slack | OOM-free days | "
             "OOM-days per entity 0 / 1 / 2 / ≥3 | changes per entity-day | young entities |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in out["runs"]:
        if run["lead_windows"]:
            continue
        for d in run.get("entity_days", []):
            dist = " / ".join(_pct(d["oom_days_per_entity"].get(k), 0) for k in ("0", "1", "2", "3+"))
            changes = "-" if d["changes_per_entity_day"] is None else f"{d['changes_per_entity_day']:.2f}"
            lines.append(f"| {run['part']} | {run['trace']} | {run['mode']} | {d['metric']} | {d['method']} | "
                         f"{d['entities']} | {d['entity_days']} | {_pct(d['relative_slack'])} | "
                         f"{_pct(d['oom_free'])} | {dist} | {changes} | {len(d['young_entities'])} |")
    lines.append("")
    return lines


def render(out: dict) -> str:
    lines = [
        "# Rightsizing replay on the evaluation part", "",
        f"Command: `{out['command']}`. Profile `{out['profile']}`, models "
        + ", ".join(f"`{m}` ({mode} mode)" for mode, m in out["model"].items())
        + ", 5-minute grid. Every constant of rightsizing was chosen on the tuning part only "
        "(`benchmarks/rightsizing_tune.py`, `benchmarks/results/rightsizing_tuning.md`); the split rule is in "
        f"`{out['split']}` (an entity's salted sha256 bucket: below 50 of 100 is tuning). The goals are judged "
        f"on the **{out['judged_part']}** part; the other part is shown for comparison, labelled. The nightly "
        "and half-hourly publish size with the same code (`foresight_lib.rightsizing.plan`).", "",
        "Traces: " + "; ".join(f"{t['name']} (`../{t['data']}`, `{t['metrics']}`)" for t in out["traces"].values())
        + ".", "",
        "## Summary (slack / violations / above the limit)", "",
        "Verdicts are made on frontiers: each method's knob is swept (the plan's profile target and a "
        "fixed margin over its base, the VPA-style baseline's margin, the reactive scaler's headroom, margins "
        "0 to 5), its Pareto-efficient (slack, violations) points kept, and the row is *reached* when, over "
        "violations up to 5 %, the plan's frontier is nowhere above the baseline's (at equal violations no more "
        "slack, at equal slack no more violations, both interpolated linearly). Where the curves never meet, "
        "the row is reached only if a plan point dominates the baseline at its defaults "
        "(`foresight_lib/rightsizing/frontier.py`). *At parity*: not reached, but the plan's slack is at most "
        "half a point above the baseline's along the whole shared range.", "",
        "| part | trace | mode | metric | target | balanced plan | baseline | frontier verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in out["runs"]:
        if run["lead_windows"]:
            continue
        for v in run["verdicts"]:
            goal = _frontier_cell(run, v["metric"], v["baseline"])
            lines.append(
                f"| {run['part']} | {run['trace']} | {run['mode']} | {v['metric']} | "
                f"{_pct(run['profile_targets'].get(v['metric']), 1)} | "
                f"{_pct(v['forecast_slack'])} / {_pct(v['forecast_violations'], 3)} / "
                f"{_pct(v.get('forecast_violations_limit'), 3)} | {v['baseline']} {_pct(v['baseline_slack'])} / "
                f"{_pct(v['baseline_violations'], 3)} / {_pct(v.get('baseline_violations_limit'), 3)} | {goal} |")
    lines += ["", "Against the operator's provisioned capacity (Bitbrains only; Alibaba 2018 has no capacity "
              "column, so this baseline is left out there): slack / violations, and the plan's frontier against it:",
              ""]
    for run in out["runs"]:
        for prov in run.get("provisioned") or []:
            lines.append(f"- {run['part']}, {run['trace']} {run['mode']}, {prov['metric']}: provisioned "
                         f"{_pct(prov['slack'])} / {_pct(prov['violations'], 3)}; "
                         f"{_frontier_cell(run, prov['metric'], 'provisioned')} ({prov['frontier']['why']}).")
    lines += ["", "Window CPU trade-off curve, at most 30 % slack at at most 1 % violations:", ""]
    for run in out["runs"]:
        if run["mode"] == "window" and not run["lead_windows"]:
            best = run["curve_goal"]["best_at_1pct"]
            at = (f"least slack at ≤ 1 % violations: {_pct(best['slack'])} (target {100 * best['target']:g} %, "
                  f"{_pct(best['violations'])} violations)") if best else "no point at ≤ 1 % violations"
            verdict = "reached" if run["curve_goal"]["reached"] else "NOT reached"
            bound = run["curve_goal"].get("perfect_foresight")
            known = (f" Each window sized knowing its own points (a bound, not a method): "
                     f"{_pct(bound['no_violation'])} with no violation, {_pct(bound['at_curve_rate'])} at ≤ 1 %."
                     ) if bound else ""
            lines.append(f"- {run['part']}, {run['trace']}: **{verdict}**; {at}.{known}")
    lines += ["", "At an equal violation rate: each baseline's fixed margin moved (after the fact, on its own "
              "margin sweep) until its violations equal the plan's:", "",
              "| part | trace | mode | metric | balanced plan | baseline at the plan's violations | plan's slack "
              "minus the baseline's |", "|---|---|---|---|---|---|---|"]
    for run in out["runs"]:
        if run["lead_windows"]:
            continue
        for v in run["verdicts"]:
            at = baseline_at(run["sweep"], v["baseline"], v["metric"], v["forecast_violations"])
            diff = "-" if at is None else f"{100 * (v['forecast_slack'] - at):+.2f} points"
            lines.append(f"| {run['part']} | {run['trace']} | {run['mode']} | {v['metric']} | "
                         f"{_pct(v['forecast_slack'])} / {_pct(v['forecast_violations'], 3)} | "
                         f"{v['baseline']} {_pct(at)} | {diff} |")
    lines.append("")
    lines += render_frontiers(out)
    lines += render_entity_days(out)
    for run in out["runs"]:
        title = f"{run['part']} part, {run['trace']}, {run['mode']} mode" + (
            f", sized {run['lead_windows']} windows ahead (for information)" if run["lead_windows"] else "")
        lines += [f"## {title}", "",
                  f"{run['series']} series ({len(run['entities'])} entities: {', '.join(run['entities'])}), "
                  f"{run['seconds']} s.", "",
                  "| metric | method | periods | slack | violations | above limit |", "|---|---|---|---|---|---|"]
        for row in run["totals"]:
            lines.append(f"| {row['metric']} | {row['method']} | {row['periods']} | {_pct(row['slack'])} | "
                         f"{_pct(row['violations'], 3)} | {_pct(row.get('violations_limit'), 3)} |")
        lines += ["", f"Goal: {run['goal']}."]
        for v in run["verdicts"]:
            verdict = ("**reached**" if run["reached"][v["metric"]] else "**NOT reached**") if run["judged"] \
                else "for information"
            on_curve = ""
            if v.get("dominates_on_curve"):
                on_curve = (f" On the trade-off curve, target {100 * v['curve_target']:g} % dominates it "
                            f"({_pct(v['curve_slack'])} / {_pct(v['curve_violations'], 3)}).")
            elif "dominates_on_curve" in v:
                on_curve = " No point of the trade-off curve dominates it."
            lines.append(f"- {v['metric']}: {verdict}.{on_curve}")
        if run["skipped"]:
            lines.append(f"- left out: {len(run['skipped'])} series ("
                         + "; ".join(f"{s['unique_id']}: {s['reason'][:90]}" for s in run["skipped"][:3]) + ")")
        lines += ["", "Trade-off curve of the plan per target violation rate (slack / violations / above limit):", "",
                  "| metric | " + " | ".join(f"{100 * t:g} %" for t in sorted({r['target'] for r in run['targets']}))
                  + " |", "|---|" + "---|" * len({r["target"] for r in run["targets"]})]
        by_metric: dict = {}
        for row in run["targets"]:
            by_metric.setdefault(row["metric"], []).append(row)
        for metric, rows in sorted(by_metric.items()):
            cells = [f"{100 * r['slack']:.1f}/{100 * r['violations']:.2f}/{_pct(r.get('violations_limit'))}"
                     .replace(" %", "") for r in sorted(rows, key=lambda r: r["target"])]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        lines.append("")
    if out.get("pooled_daily_memory"):
        lines += ["## Not shipped: Bitbrains daily memory with its factor pooled", "",
                  "A day's CPU factor is shrunk toward its metric's fleet factor (chosen on the tuning part of "
                  "both traces); memory's could be too. Its gain on the tuning part was small, and it went over "
                  "more on the evaluation part, so memory keeps its own factor (`sizing.DAILY_POOLED_RESOURCES`; "
                  "the shipped figures are in the summary above).", "",
                  "| part | metric | slack | violations | above limit |", "|---|---|---|---|---|"]
        lines += [f"| {r['part']} | {r['metric']} | {_pct(r['slack'])} | {_pct(r['violations'], 3)} | "
                  f"{_pct(r['violations_limit'], 3)} |" for r in out["pooled_daily_memory"]]
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
