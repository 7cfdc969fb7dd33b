"""Rightsizing replay benchmark on the Bitbrains CPU MHz and memory series.

Runs ``foresight rightsize-replay`` in daily and window mode with the balanced profile
on every VM of ``../shared/data/bitbrains_rnd/2013-8`` and records the totals, the
comparison with the baselines and the command that made them in
``benchmarks/results/rightsizing.md`` and ``rightsizing.json``. The full reports and plots
go to ``--work`` (not kept in the repository: they hold every recommendation).

    .venv/bin/python benchmarks/rightsizing_replay.py [--model NAME] [--work /tmp/rightsizing]
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "bitbrains_rnd" / "2013-8"
RESULTS = ROOT / "benchmarks" / "results"
METRICS = "cpu_usage_mhz,memory_usage_kb"
TARGETS = {
    "daily": ("vpa", "the balanced profile has less slack than the VPA-style baseline at an equal or lower "
                     "violation rate", "profile"),
    "window": ("reactive", "the forecast-driven plan has fewer violations than the reactive scaler at equal or "
                           "lower slack", "curve"),
}
"""Per mode: the baseline, the goal, and what is judged: the profile's own plan (the daily
goal names the balanced profile) or the plan's trade-off curve over its target violation
rate (the window goal names no profile: the plan at the reactive scaler's slack)."""
RUNS = [("daily", 0), ("window", 0), ("window", 3)]
"""Mode and lead of each run: the goals are for windows sized at their start; the plan
published for later windows is measured sized 3 windows (90 minutes) ahead."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="model for both modes (default: the command's per-mode default, "
                             "seasonal_naive daily, naive window)")
    parser.add_argument("--profile", default="balanced")
    parser.add_argument("--work", default="/tmp/foresight_rightsizing")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs = {}
    for mode, lead in RUNS:
        name = mode if not lead else f"{mode} mode, sized {lead} windows ahead"
        stem = mode if not lead else f"{mode}_lead{lead}"
        report_path = work / f"{stem}.json"
        plot_path = work / f"{stem}.png"
        command = [
            "foresight", "rightsize-replay", "--input", str(DATA), "--format", "bitbrains", "--metrics", METRICS,
            "--mode", mode, "--profile", args.profile, *(["--model", args.model] if args.model else []),
            *(["--lead-windows", str(lead)] if lead else []),
            "--output", str(report_path), "--plot", str(plot_path),
        ]
        started = time.perf_counter()
        exe = [str(Path(sys.executable).with_name("foresight")), *command[1:]]
        subprocess.run(exe, check=True, cwd=ROOT)
        seconds = time.perf_counter() - started
        report = json.loads(report_path.read_text())
        baseline, goal, judged = TARGETS[mode]
        if lead:
            goal = f"none (for information: how much sizing {lead} windows ahead costs; the goal is {goal})"
        verdicts = [c for c in report["comparison"] if c["baseline"] == baseline]
        runs[name] = {"mode": mode, "lead_windows": lead, "target": not lead,
            "command": shlex.join(command), "model": report["model"], "seconds": round(seconds, 1),
            "totals": report["totals"],
            "comparison": report["comparison"], "sweep": report["sweep"], "series": report["series"],
            "skipped": report["skipped"], "settings": report["settings"], "goal": goal,
            "judged": judged, "targets": report["targets"],
            "reached": {c["metric"]: c["dominates" if judged == "profile" else "dominates_on_curve"] for c in verdicts},
            "verdicts": verdicts,
            "plot": str(plot_path),
        }
    models = {run["mode"]: run["model"] for run in runs.values()}
    out = {"data": str(DATA.relative_to(ROOT.parent)), "metrics": METRICS, "model": models,
           "profile": args.profile, "python": platform.python_version(), "runs": runs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rightsizing.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "rightsizing.md").write_text(render(out))
    print(render(out))
    return 0


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def render(out: dict) -> str:
    lines = [
        "# Rightsizing replay on Bitbrains (GWA-T-12 Rnd, 2013-8)", "",
        f"Data: `../{out['data']}`, metrics `{out['metrics']}` (memory converted to bytes by the features "
        f"step), 5-minute grid. Forecast model "
        + ", ".join(f"`{m}` ({mode} mode)" for mode, m in out["model"].items())
        + f", profile `{out['profile']}`. Written by "
        "`benchmarks/rightsizing_replay.py`; the profiles' constants are fixed in "
        "`foresight_lib/rightsizing/sizing.py` and the learnt factors use only periods before the one scored. "
        "The nightly publish step sizes with the same code (`foresight_lib.rightsizing.plan`).", "",
    ]
    for name, run in out["runs"].items():
        title = f"{name} mode" if not run["lead_windows"] else name
        lines += [f"## {title}", "", f"Command: `{run['command']}` ({run['seconds']} s, {run['series']} series)",
                  "", "| metric | method | periods | slack | violations | above limit |", "|---|---|---|---|---|---|"]
        for row in run["totals"]:
            lines.append(f"| {row['metric']} | {row['method']} | {row['periods']} | {_pct(row['slack'])} | "
                         f"{_pct(row['violations'])} | {_pct(row.get('violations_limit'))} |")
        judged = "the profile's plan" if run["judged"] == "profile" else "the plan's trade-off curve"
        lines += ["", f"Target: {run['goal']}" + (f" (judged on {judged})." if run["target"] else ".")]
        for v in run["verdicts"]:
            reached = run["reached"][v["metric"]]
            verdict = f"**{'reached' if reached else 'NOT reached'}**. " if run["target"] else ""
            profile = "dominates" if v["dominates"] else "does not dominate"
            if v.get("dominates_on_curve"):
                curve = (f"target {100 * v['curve_target']:g} % dominates it: {_pct(v['curve_slack'])} slack, "
                         f"{_pct(v['curve_violations'])} violations, {_pct(v.get('curve_violations_limit'))} "
                         "above the limit")
            else:
                curve = "no point of the curve dominates it"
            lines.append(f"- {v['metric']}: {verdict}The {out['profile']} "
                         f"plan {profile} the {v['baseline']} baseline; on the trade-off curve, {curve}.")
        lines += ["", "Trade-off curve of the forecast-driven plan (learnt factor, capped) per target violation "
                      "rate (slack / violations / above limit):", "",
                  "| metric | " + " | ".join(f"{100 * t:g} %" for t in sorted({r['target'] for r in run['targets']}))
                  + " |", "|---|" + "---|" * len({r["target"] for r in run["targets"]})]
        by_metric: dict = {}
        for row in run["targets"]:
            by_metric.setdefault(row["metric"], []).append(row)
        for metric, rows in sorted(by_metric.items()):
            cells = [f"{100 * r['slack']:.1f}/{100 * r['violations']:.2f}/{_pct(r.get('violations_limit'))}"
                     .replace(" %", "") for r in sorted(rows, key=lambda r: r["target"])]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        lines += ["", "Fixed-margin sweep over each method's base (slack / violations):", "",
                  "| metric | method | " + " | ".join(f"{m:g}" for m in run["settings"]["margins"]) + " |",
                  "|---|---|" + "---|" * len(run["settings"]["margins"])]
        by_key: dict = {}
        for row in run["sweep"]:
            by_key.setdefault((row["metric"], row["method"]), []).append(row)
        for (metric, method), rows in sorted(by_key.items()):
            rows = sorted(rows, key=lambda r: r["margin"])
            cells = [f"{100 * r['slack']:.1f}/{100 * r['violations']:.2f}" for r in rows]
            lines.append(f"| {metric} | {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
