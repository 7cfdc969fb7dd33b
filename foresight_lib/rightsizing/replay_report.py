"""Scoring a rightsizing replay and showing it: slack, violations, verdicts, the plot.

The replay (``foresight_lib.rightsizing.replay``) walks a trace and keeps every method's
recommendation per series and period; this module holds what turns them into figures
and verdicts, and knows nothing of how they were made, so that ``replay`` (and anyone
re-scoring a saved report) imports it and not the other way round.

Slack is the unused share of what was provisioned, ``sum(max(request - usage, 0)) /
sum(request)``; violations are the share of points with usage above the request (for
memory also above the limit, the OOM proxy).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from foresight_lib.errors import DataError
from foresight_lib.rightsizing.frontier import frontier_verdict

FORECAST = "forecast"
VPA = "vpa"
CRANE = "crane"
REACTIVE = "reactive"


# ---------------------------------------------------------------------------
# Scoring


def score(request: np.ndarray | float, usage: np.ndarray, limit: np.ndarray | float | None = None) -> dict:
    """Sums for slack and violations of a request (and limit) against usage points.

    ``request`` and ``limit`` broadcast against ``usage``. Returns ``provisioned``,
    ``unused`` (usage above the request counts as 0 unused), ``points``, ``over`` (points
    above the request), ``over_limit`` and the ratios ``slack`` and ``violations``
    (``violations_limit`` when a limit is given).
    """
    usage = np.asarray(usage, dtype="float64")
    req = np.broadcast_to(np.asarray(request, dtype="float64"), usage.shape)
    ok = np.isfinite(usage) & np.isfinite(req)
    u, r = usage[ok], req[ok]
    out = {
        "provisioned": float(r.sum()), "unused": float(np.maximum(r - u, 0.0).sum()),
        "points": int(u.size), "over": int((u > r).sum()),
    }
    out["slack"] = out["unused"] / out["provisioned"] if out["provisioned"] > 0 else float("nan")
    out["violations"] = out["over"] / out["points"] if out["points"] else float("nan")
    if limit is not None:
        lim = np.broadcast_to(np.asarray(limit, dtype="float64"), usage.shape)[ok]
        out["over_limit"] = int((u > lim).sum())
        out["violations_limit"] = out["over_limit"] / out["points"] if out["points"] else float("nan")
    return out


def score_ratios(provisioned: float, unused: float, points: int, over: int, over_limit: int | None) -> dict:
    """Slack and violations (and above the limit, when counted) from summed scores; NaN where nothing was scored."""
    return {
        "slack": unused / provisioned if provisioned > 0 else float("nan"),
        "violations": over / points if points else float("nan"),
        "violations_limit": (over_limit / points if points else float("nan")) if over_limit is not None else None,
    }


def slack_at(curve: Iterable[tuple[float, float]], violations: float) -> float | None:
    """The slack of a trade-off curve, given as (violations, slack) points, at ``violations``.

    Linear interpolation between the two points around that rate (sorted by violations);
    None when the curve does not reach it or a point is not measured.
    """
    points = sorted((v, s) for v, s in curve if math.isfinite(v) and math.isfinite(s))
    for (v0, s0), (v1, s1) in zip(points, points[1:], strict=False):
        if v0 <= violations <= v1:
            return s0 if v1 == v0 else s0 + (s1 - s0) * (violations - v0) / (v1 - v0)
    return None


# ---------------------------------------------------------------------------
# Verdicts


def _known(value) -> bool:
    """A score that was measured: not None and not NaN (a CPU row's limit column is NaN in a mixed frame)."""
    return value is not None and bool(np.isfinite(value))


def _beats(f: dict, b: dict, mode: str) -> bool:
    """Does the point ``f`` dominate the point ``b``: no more slack and no more violations, and
    less of at least one? For memory the share above the limit may not be higher either.
    The same in both modes (``mode`` is kept for the callers' signature): a plan with less
    slack and, like the baseline, no violation at all dominates it."""
    limit_ok = True
    if _known(f.get("violations_limit")) and _known(b.get("violations_limit")):
        limit_ok = f["violations_limit"] <= b["violations_limit"]
    no_worse = f["slack"] <= b["slack"] and f["violations"] <= b["violations"] and limit_ok
    return bool(no_worse and (f["slack"] < b["slack"] or f["violations"] < b["violations"]))


def compare(totals: pd.DataFrame, mode: str, targets: pd.DataFrame | None = None) -> list[dict]:
    """The forecast-driven plan against each baseline, per metric: does it dominate?

    ``dominates`` is true when the profile's plan has no more slack and no more
    violations than the baseline, and less of one of them; for memory the violations
    above the limit must not be higher either. With ``targets``
    (the plan rerun per target violation rate), ``dominates_on_curve`` says whether some
    measured point of that curve dominates the baseline, and which: the one with the
    least slack (daily) or the fewest violations (window) among those that do.
    """
    out = []
    if totals.empty:
        return out
    for metric, g in totals.groupby("metric", sort=True):
        by = {r["method"]: r for r in g.to_dict(orient="records")}
        if FORECAST not in by:
            continue
        f = by[FORECAST]
        curve = [] if targets is None or targets.empty else targets[targets["metric"] == metric].to_dict("records")
        for method, b in by.items():
            if method == FORECAST:
                continue
            row = {"metric": metric, "baseline": method, "forecast_slack": f["slack"],
                   "baseline_slack": b["slack"], "forecast_violations": f["violations"],
                   "baseline_violations": b["violations"], "forecast_violations_limit": f.get("violations_limit"),
                   "baseline_violations_limit": b.get("violations_limit"), "dominates": _beats(f, b, mode)}
            if curve:
                winners = [p for p in curve if _beats(p, b, mode)]
                key = "slack" if mode == "daily" else "violations"
                best = min(winners, key=lambda p: p[key]) if winners else None
                row.update({"dominates_on_curve": best is not None,
                            "curve_target": best["target"] if best else None,
                            "curve_slack": best["slack"] if best else None,
                            "curve_violations": best["violations"] if best else None,
                            "curve_violations_limit": best.get("violations_limit") if best else None})
            out.append(row)
    return out


PARITY_POINTS = 0.005
"""A frontier within this much slack (half a point) of the baseline's along the whole shared
range is at parity with it (Bitbrains daily memory against the VPA rule is accepted so)."""


def frontier_comparison(totals: pd.DataFrame, sweep: pd.DataFrame, targets: pd.DataFrame | None = None,
                        ) -> list[dict]:
    """The plan's frontier against each baseline's, per metric (``frontier.frontier_verdict``).

    The plan's points: its target sweep (the published plan rerun per target violation
    rate) and its base with each fixed margin; a baseline's: its base with each fixed
    margin (the VPA-style baseline's margin, the reactive scaler's headroom). The
    defaults are the totals' points. ``parity`` says the plan's slack is within
    ``PARITY_POINTS`` of the baseline's along the whole shared range.
    """
    out: list[dict] = []
    if totals.empty or sweep.empty:
        return out
    for metric, g in totals.groupby("metric", sort=True):
        by = {r["method"]: r for r in g.to_dict(orient="records")}
        if FORECAST not in by:
            continue
        own = sweep[sweep["metric"] == metric]
        plan = list(zip(own.loc[own["method"] == FORECAST, "slack"], own.loc[own["method"] == FORECAST, "violations"],
                        strict=True))
        if targets is not None and not targets.empty:
            t = targets[targets["metric"] == metric]
            plan += list(zip(t["slack"], t["violations"], strict=True))
        plan.append((by[FORECAST]["slack"], by[FORECAST]["violations"]))
        for method, b in by.items():
            if method == FORECAST:
                continue
            pts = own[own["method"] == method]
            base = [*zip(pts["slack"], pts["violations"], strict=True), (b["slack"], b["violations"])]
            verdict = frontier_verdict(plan, base, (b["slack"], b["violations"]),
                                       (by[FORECAST]["slack"], by[FORECAST]["violations"]))
            gap = verdict["max_slack_gap"]
            gaps = [ps - bs for _, ps, bs in verdict["at_equal_violations"]]
            verdict["parity"] = bool(verdict["curves_meet"] and gaps
                                     and max(abs(x) for x in gaps) <= PARITY_POINTS + 1e-12)
            verdict["within_parity"] = bool(verdict["curves_meet"] and gap is not None and gap <= PARITY_POINTS)
            out.append({"metric": metric, "baseline": method, **verdict})
    return out


def format_frontier(c: dict) -> str:
    """One line: the verdict of ``frontier_comparison``'s row ``c`` and why."""
    verdict = "reached" if c["reached"] else ("at parity" if c.get("within_parity") else "not reached")
    m = c.get("matched") or {}
    at = m.get("baseline_slack_at_plan_violations")
    matched = (f"; at the plan's violations ({100 * m['plan'][1]:.3f} %) the baseline leaves {100 * at:.2f} % slack "
               f"against the plan's {100 * m['plan'][0]:.2f} %") if at is not None and m.get("plan") else ""
    return f"forecast vs {c['baseline']} on {c['metric']}, frontiers: {verdict} ({c['why']}{matched})"


# ---------------------------------------------------------------------------
# The plot


def plot_sweep(result: Any, path: str | Path) -> Path:
    """PNG of slack (x) against violations (y) per metric: one curve per method over the margins.

    The solid curves use fixed margins over each method's base; the dashed one is the
    forecast-driven plan itself (learnt factor, capped) rerun per target violation rate.
    The stars mark what each method recommended (the forecast with the profile's target,
    baselines with their 15 %). ``result`` is a ``replay.ReplayResult``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep, totals = result.sweep, result.totals
    metrics = sorted(sweep["metric"].unique()) if len(sweep) else []
    if not metrics:
        raise DataError("nothing to plot: the replay scored no period")
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 5), squeeze=False)
    colours = {FORECAST: "tab:blue", VPA: "tab:orange", CRANE: "tab:green", REACTIVE: "tab:red"}
    for ax, metric in zip(axes[0], metrics, strict=True):
        for method, g in sweep[sweep["metric"] == metric].groupby("method", sort=False):
            g = g.sort_values("margin")
            colour = colours.get(method)
            label = f"{method} (margin {g['margin'].min():g}–{g['margin'].max():g})"
            ax.plot(100 * g["slack"], 100 * g["violations"], "o-", ms=3, color=colour, label=label)
            for _, row in g.iloc[[0, -1]].iterrows():
                ax.annotate(f"{row['margin']:g}", (100 * row["slack"], 100 * row["violations"]), fontsize=7,
                            color=colour, xytext=(3, 3), textcoords="offset points")
            if method == FORECAST and len(result.targets):
                t = result.targets[result.targets["metric"] == metric].sort_values("target")
                ax.plot(100 * t["slack"], 100 * t["violations"], "s--", ms=4, color=colour,
                        label=f"forecast, learnt factor (target {100 * t['target'].min():g}–"
                              f"{100 * t['target'].max():g} %)")
            point = totals[(totals["metric"] == metric) & (totals["method"] == method)]
            if len(point):
                name = f"{method} ({result.spec.profile})" if method == FORECAST else f"{method} as published"
                ax.plot(100 * point["slack"], 100 * point["violations"], "*", ms=14, color=colour,
                        markeredgecolor="black", label=name)
        ax.set_xlabel("slack: unused share of the provisioned resource (%)")
        ax.set_ylabel("violations: points above the request (%)")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_title(f"{metric} — {result.spec.mode} mode, model {result.spec.model}")
        verdicts = [c for c in frontier_comparison(totals, sweep, result.targets) if c["metric"] == metric]
        text = "\n".join(f"frontier vs {c['baseline']}: "
                         + ("reached" if c["reached"] else "at parity" if c["within_parity"] else "not reached")
                         + ("" if c["curves_meet"] else " (curves never meet)") for c in verdicts)
        if text:
            ax.text(0.98, 0.98, text, transform=ax.transAxes, ha="right", va="top", fontsize=8,
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "grey"})
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
