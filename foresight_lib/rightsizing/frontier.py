"""Frontier verdicts: a method judged on every setting of its safety knob, not at one.

Every method has a knob that trades slack for violations (the plan its profile target
and margin, the VPA-style baseline its margin, the reactive scaler its headroom). Its
*frontier* is the Pareto-efficient subset of the (slack, violations) points its sweep
reached. The plan's frontier *reaches* a baseline's when, over the violations anyone would
run at (at most ``MAX_VIOLATIONS``), it is nowhere above it: at equal violations it leaves
no more slack, and at equal slack it has no more violations, each frontier interpolated
piecewise-linearly. Where the two share no range of violations, the plan reaches the
baseline only if one of its points dominates the baseline's default point on both axes.

Pure functions on lists of points; ``replay_report.frontier_comparison`` feeds them a replay's sweeps.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

MAX_VIOLATIONS = 0.05
"""The violations range a verdict is judged over: nobody runs at more than 5 %."""
EPS = 1e-9
"""Ties within this much (a share) count as equal."""

Point = tuple[float, float]
"""(slack, violations), both shares."""


def pareto(points: Iterable[Point]) -> list[Point]:
    """The Pareto-efficient points (no other has no more slack and no more violations, less
    of one), sorted by violations ascending (so slack descending); non-finite points dropped."""
    pts = sorted({(float(s), float(v)) for s, v in points if math.isfinite(s) and math.isfinite(v)},
                 key=lambda p: (p[1], p[0]))
    out: list[Point] = []
    for s, v in pts:
        if not out or s < out[-1][0] - EPS:
            if out and abs(v - out[-1][1]) <= EPS:
                out[-1] = (s, v)  # the same violations with less slack: the better one
            else:
                out.append((s, v))
    return out


def slack_at_violations(frontier: list[Point], violations: float) -> float | None:
    """The frontier's slack at ``violations`` (piecewise-linear), None outside its range."""
    return _interp([(v, s) for s, v in frontier], violations)


def violations_at_slack(frontier: list[Point], slack: float) -> float | None:
    """The frontier's violations at ``slack`` (piecewise-linear), None outside its range."""
    return _interp(sorted((s, v) for s, v in frontier), slack)


def _interp(xy: list[tuple[float, float]], x: float) -> float | None:
    xy = sorted(xy)
    if not xy or x < xy[0][0] - EPS or x > xy[-1][0] + EPS:
        return None
    if len(xy) == 1:
        return xy[0][1]
    x = min(max(x, xy[0][0]), xy[-1][0])
    for (x0, y0), (x1, y1) in zip(xy, xy[1:], strict=False):
        if x0 <= x <= x1:
            return y0 if x1 - x0 <= EPS else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return xy[-1][1]


def dominates(a: Point, b: Point) -> bool:
    """Does ``a`` have no more slack and no more violations than ``b``, and less of one?"""
    no_worse = a[0] <= b[0] + EPS and a[1] <= b[1] + EPS
    return no_worse and (a[0] < b[0] - EPS or a[1] < b[1] - EPS)


def frontier_verdict(plan: Iterable[Point], baseline: Iterable[Point], baseline_default: Point | None = None,
                     plan_default: Point | None = None, max_violations: float = MAX_VIOLATIONS) -> dict:
    """Is the plan's frontier nowhere above the baseline's over violations ≤ ``max_violations``?

    Returns both frontiers, the shared range of violations (``overlap``: [low, high] or
    None), the gaps checked at every corner of either frontier inside it
    (``at_equal_violations``: violations, plan slack, baseline slack; ``at_equal_slack``:
    slack, plan violations, baseline violations), ``max_slack_gap`` (the plan's largest
    excess of slack over the baseline's at equal violations, negative where it is below
    everywhere), the matched points of the plan's default (the baseline's slack at its
    violations and its violations at its slack), ``reached`` and ``why``.
    """
    pf, bf = pareto(plan), pareto(baseline)
    out: dict = {"plan_frontier": [list(p) for p in pf], "baseline_frontier": [list(p) for p in bf],
                 "max_violations": max_violations, "overlap": None, "curves_meet": False,
                 "at_equal_violations": [], "at_equal_slack": [], "max_slack_gap": None,
                 "max_violations_gap": None, "matched": {}, "reached": False, "why": ""}
    if plan_default is not None:
        out["matched"] = {"plan": list(plan_default),
                          "baseline_slack_at_plan_violations": slack_at_violations(bf, plan_default[1]),
                          "baseline_violations_at_plan_slack": violations_at_slack(bf, plan_default[0])}
    if not pf or not bf:
        out["why"] = "a frontier has no measured point"
        return out
    in_range = [p for p in pf if p[1] <= max_violations + EPS]
    low = max(pf[0][1], bf[0][1])
    high = min(pf[-1][1], bf[-1][1], max_violations)
    if low <= high + EPS:
        out["overlap"], out["curves_meet"] = [low, high], True
        grid = sorted({low, high, *(v for _, v in pf + bf if low - EPS <= v <= high + EPS)})
        for v in grid:
            ps, bs = slack_at_violations(pf, v), slack_at_violations(bf, v)
            if ps is not None and bs is not None:
                out["at_equal_violations"].append([v, ps, bs])
        s_low = max(slack_at_violations(pf, high), slack_at_violations(bf, high))
        s_high = min(slack_at_violations(pf, low), slack_at_violations(bf, low))
        if s_low <= s_high + EPS:
            grid_s = sorted({s_low, s_high, *(s for s, _ in pf + bf if s_low - EPS <= s <= s_high + EPS)})
            for s in grid_s:
                pv, bv = violations_at_slack(pf, s), violations_at_slack(bf, s)
                if pv is not None and bv is not None:
                    out["at_equal_slack"].append([s, pv, bv])
        gaps = [ps - bs for _, ps, bs in out["at_equal_violations"]]
        vgaps = [pv - bv for _, pv, bv in out["at_equal_slack"]]
        out["max_slack_gap"] = max(gaps) if gaps else None
        out["max_violations_gap"] = max(vgaps) if vgaps else None
        above = (gaps and max(gaps) > EPS) or (vgaps and max(vgaps) > EPS)
        out["reached"] = not above
        out["why"] = (f"the curves meet over violations {100 * low:.3f}–{100 * high:.3f} %; the plan's slack is "
                      f"at most {100 * out['max_slack_gap']:+.2f} points from the baseline's there")
        return out
    # no shared range: the plan's default-free dominance of the baseline's default point
    if pf[0][1] > max_violations:
        side = f"the plan's least violations ({100 * pf[0][1]:.3f} %) are above {100 * max_violations:g} %"
    elif bf[0][1] > high:
        side = (f"the baseline's sweep never comes down to the plan's violations (its least "
                f"{100 * bf[0][1]:.3f} %, the plan's most {100 * min(pf[-1][1], max_violations):.3f} %)")
    else:
        side = (f"the plan's sweep never comes down to the baseline's violations (its least "
                f"{100 * pf[0][1]:.3f} %, the baseline's most {100 * bf[-1][1]:.3f} %)")
    winner = next((p for p in in_range if baseline_default is not None and dominates(p, baseline_default)), None)
    out["reached"] = winner is not None
    out["dominating_point"] = list(winner) if winner else None
    out["why"] = "the curves never meet: " + side + (
        f"; the plan's point {100 * winner[0]:.2f} % / {100 * winner[1]:.3f} % dominates the baseline's default"
        if winner else "; no point of the plan's frontier dominates the baseline's default")
    return out
