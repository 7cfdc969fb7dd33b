"""Frontier verdicts on tiny hand-made curves (slack, violations)."""
import pytest

from foresight_lib.rightsizing import frontier as fr


def test_pareto_keeps_the_efficient_points_sorted_by_violations():
    pts = [(0.5, 0.01), (0.6, 0.01), (0.4, 0.02), (0.45, 0.03), (0.3, 0.05), (float("nan"), 0.0)]
    assert fr.pareto(pts) == [(0.5, 0.01), (0.4, 0.02), (0.3, 0.05)]


def test_interpolation_both_ways():
    f = [(0.5, 0.0), (0.3, 0.02)]
    assert fr.slack_at_violations(f, 0.01) == pytest.approx(0.4)
    assert fr.violations_at_slack(f, 0.35) == pytest.approx(0.015)
    assert fr.slack_at_violations(f, 0.03) is None


def test_plan_below_everywhere_is_reached():
    plan = [(0.40, 0.0), (0.20, 0.02), (0.10, 0.05)]
    base = [(0.50, 0.0), (0.30, 0.02), (0.20, 0.05)]
    v = fr.frontier_verdict(plan, base, base[1], plan[1])
    assert v["reached"] and v["curves_meet"]
    assert v["overlap"] == [0.0, 0.05]
    assert v["max_slack_gap"] == pytest.approx(-0.10)
    assert v["matched"]["baseline_slack_at_plan_violations"] == pytest.approx(0.30)
    assert v["matched"]["baseline_violations_at_plan_slack"] == pytest.approx(0.05)


def test_plan_above_is_not_reached():
    plan = [(0.50, 0.0), (0.30, 0.02)]
    base = [(0.40, 0.0), (0.20, 0.02)]
    v = fr.frontier_verdict(plan, base, base[0])
    assert not v["reached"] and v["max_slack_gap"] == pytest.approx(0.10)


def test_crossing_curves_are_not_reached():
    plan = [(0.40, 0.0), (0.30, 0.02)]  # below at 0 %, above at 2 %
    base = [(0.50, 0.0), (0.20, 0.02)]
    v = fr.frontier_verdict(plan, base)
    assert v["curves_meet"] and not v["reached"]
    assert v["max_slack_gap"] == pytest.approx(0.10)


def test_only_the_range_up_to_five_percent_counts():
    plan = [(0.40, 0.0), (0.30, 0.05), (0.29, 0.10)]  # above the baseline only past 5 %
    base = [(0.50, 0.0), (0.35, 0.05), (0.10, 0.10)]
    assert fr.frontier_verdict(plan, base)["reached"]


def test_no_overlap_but_dominance_is_reached_and_said():
    plan = [(0.30, 0.001), (0.25, 0.002)]
    base = [(0.50, 0.02), (0.40, 0.04)]  # its sweep never comes down to the plan's violations
    v = fr.frontier_verdict(plan, base, baseline_default=(0.40, 0.04))
    assert not v["curves_meet"] and v["reached"]
    assert "never meet" in v["why"] and "dominates" in v["why"]


def test_no_overlap_no_dominance_is_not_reached():
    plan = [(0.60, 0.001), (0.55, 0.002)]
    base = [(0.50, 0.02), (0.40, 0.04)]
    v = fr.frontier_verdict(plan, base, baseline_default=(0.40, 0.04))
    assert not v["curves_meet"] and not v["reached"]
    assert "never meet" in v["why"] and "no point" in v["why"]


def test_empty_frontier():
    v = fr.frontier_verdict([], [(0.5, 0.01)])
    assert not v["reached"] and "no measured point" in v["why"]
