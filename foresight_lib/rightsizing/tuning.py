"""Choosing rightsizing's constants on the tuning part of a trace, and only there.

``tune`` replays a trace's tuning series (``foresight_lib.rightsizing.splits``) with each
candidate setting and picks, per memory metric, the setting that keeps the profile's own
violation target (with ``HEADROOM``) with the least slack (the fewest violations when
none keeps it). It is
handed ids and a loader, checks every id against the split before anything is loaded
(``splits.require_tuning`` raises ``EvaluationDataError`` on an evaluation id), and checks
again that the loader returned no other series. What it picked is written into the
module constants by hand (``sizing.MEMORY_PEAK_DAYS``, ``sizing.MEMORY_MIN_FACTOR``), with
the tuning run's figures in ``benchmarks/results/rightsizing_tuning.md``
(``benchmarks/rightsizing_tune.py``).

Candidates (daily mode, memory): the days whose highest peak is the base
(``MEMORY_PEAK_DAYS_CANDIDATES``), the least factor over it
(``MEMORY_MIN_FACTOR_CANDIDATES``) and what counts as a step change
(``STEP_CHANGE_CANDIDATES``). Window mode, CPU and the other resources but memory
(``tune_window_target``): how many times the profile's target the learnt factors aim at
per lead (``WINDOW_TARGET_SCALE_CANDIDATES``, into ``sizing.WINDOW_TARGET_SCALES``). Window mode,
memory (``tune_window_memory``): the days of daily peaks a window's base is never below
(``WINDOW_MEMORY_FLOOR_CANDIDATES``, into ``sizing.WINDOW_MEMORY_FLOOR_DAYS``). Daily
mode, every metric (``tune_daily_pooling``): whether the learnt factor is shrunk toward
the metric's fleet factor (into ``sizing.DAILY_POOLED_RESOURCES``). Daily mode, CPU and
the other resources but memory (``tune_daily_base``): the model's forecast or the last few
days' usage as the base (``DAILY_BASE_DAYS_CANDIDATES``), judged at the VPA-style
baseline's violation rate.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace

import pandas as pd

from foresight_lib.errors import DataError
from foresight_lib.rightsizing import sizing as rs
from foresight_lib.rightsizing import splits
from foresight_lib.rightsizing.replay import replay, walk
from foresight_lib.rightsizing.replay_report import FORECAST, VPA, slack_at
from foresight_lib.rightsizing.replay_scoring import forecast_tracks, score_tracks
from foresight_lib.rightsizing.replay_spec import DEFAULT_MODEL, ReplaySpec

Loader = Callable[[list[str]], tuple[pd.DataFrame, pd.DataFrame | None]]
"""Given series ids, the regular long frame of those series and their series table."""

MEMORY_PEAK_DAYS_CANDIDATES = (1, 2, 3, 5, 7)
MEMORY_MIN_FACTOR_CANDIDATES = (1.0, 1.05, 1.1)
STEP_CHANGE_CANDIDATES = ((2.0, 6, 2), (3.0, 6, 2), (2.0, 24, 6))
"""Memory step change: (ratio, hours before, least hours after)."""
WINDOW_TARGET_SCALE_CANDIDATES = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
"""Window mode: multiples of the profile's target the learnt factors may aim at."""
WINDOW_LEADS = (0, 1, 2, 3)
"""Window mode: the leads (windows ahead) the nightly plan sizes windows with, each tuned apart."""
WINDOW_MEMORY_FLOOR_CANDIDATES = (0, 1, 2, 3, 5)
"""Window mode, memory: days of daily peaks a window's base is never below (0: none)."""
DAILY_BASE_DAYS_CANDIDATES = (0, 2, 3, 7)
"""Daily mode, every resource but memory: 0, the model's mean forecast of the day is the
base; k, the last k days' usage (``ReplaySpec.daily_base_days``)."""
HEADROOM = 0.8
"""A candidate keeps the target when its violations on the tuning part are at most this
share of the target: a fifth of the target is left for the difference between the
tuning VMs and others (memory violations are rare events, so a few VMs move them)."""


@dataclass
class TuningResult:
    """Every candidate's figures on the tuning part, and the choice per resource."""

    trace: str
    ids: list[str]
    profile: str
    table: pd.DataFrame
    """Per candidate and metric: slack, violations, the target, whether it is kept."""
    chosen: dict[str, dict] = field(default_factory=dict)
    """Per metric: the chosen candidate's settings and figures."""


def tune(trace: str, ids: Sequence[str], load: Loader, profile: str = "balanced",
         peak_days: Sequence[int] = MEMORY_PEAK_DAYS_CANDIDATES,
         min_factors: Sequence[float] = MEMORY_MIN_FACTOR_CANDIDATES,
         step_changes: Sequence[tuple[float, int, int]] = STEP_CHANGE_CANDIDATES,
         max_days: int | None = None) -> TuningResult:
    """Replay the tuning series ``ids`` of ``trace`` (daily mode) with every candidate and choose.

    Args:
        ids: series ids, every one in the tuning part (checked before ``load`` is called).
        load: returns the frame and series table of the ids it is given.
        max_days: score at most this many days per series (a quicker look).

    Raises:
        EvaluationDataError: an id (asked for or returned by ``load``) is in the evaluation part.
        DataError: the loader returned no series.
    """
    frame, series = _load_tuning(trace, ids, load)
    prof = rs.get_profile(profile)
    rows = []
    for days, low, step in itertools.product(peak_days, min_factors, step_changes):
        spec = ReplaySpec(mode="daily", profile=profile, model=DEFAULT_MODEL["daily"], memory_peak_days=int(days),
                          memory_min_factor=float(low), memory_step_change=tuple(step), max_days=max_days,
                          margins=(0.0,))
        totals = replay(frame, spec, series).totals
        settings = {"memory_peak_days": int(days), "memory_min_factor": float(low),
                    "step_change": "/".join(f"{v:g}" for v in step)}
        rows += [_judged(settings, row, prof) for row in totals[totals["method"] == FORECAST].to_dict("records")]
    table = pd.DataFrame(rows)
    return TuningResult(trace, list(ids), prof.name, table, choose(table))


def _judged(settings: dict, score: dict, prof: rs.Profile) -> dict:
    """A candidate's row: its settings, a metric's slack and violations, the profile's
    target for the metric's resource and whether they keep it (with ``HEADROOM``)."""
    resource = rs.resource_of(score["metric"])
    target = prof.target_for(resource)
    return {**settings, "metric": score["metric"], "resource": resource, "slack": score["slack"],
            "violations": score["violations"], "violations_limit": score.get("violations_limit"),
            "target": target, "kept": bool(score["violations"] <= HEADROOM * target)}


def _pick(candidates: pd.DataFrame, fallback: list[str]) -> dict:
    """Among the candidates that keep the target, the least slack; else the first by ``fallback``."""
    kept = candidates[candidates["kept"]]
    best = kept.sort_values(["slack", "violations"]).iloc[0] if len(kept) else \
        candidates.sort_values(fallback).iloc[0]
    return best.to_dict()


def _pick_per_metric(table: pd.DataFrame) -> dict[str, dict]:
    """Per metric of ``table``: ``_pick`` (the fewest violations, then the least slack, when none keeps the target)."""
    return {str(metric): _pick(g, ["violations", "slack"])
            for metric, g in (table.groupby("metric", sort=True) if len(table) else [])}


def _with_resource(frame: pd.DataFrame, memory: bool) -> pd.DataFrame:
    """The rows of ``frame``'s memory series (``memory``), or of every other series."""
    is_memory = frame["unique_id"].astype(str).map(lambda uid: rs.resource_of(uid.split("/")[0]) == "memory")
    return frame[is_memory == memory]


def _load_tuning(trace: str, ids: Sequence[str], load: Loader,
                 memory: bool | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The frame and series table of ``ids``, every one checked to be in the tuning part
    before and after loading (``EvaluationDataError`` otherwise); with ``memory``, only the
    memory series (True) or every other one (False), a ``DataError`` when there is none."""
    ids = splits.require_tuning(trace, ids)
    frame, series = load(list(ids))
    returned = frame["unique_id"].astype(str).unique().tolist() if len(frame) else []
    splits.require_tuning(trace, returned)
    unasked = sorted(set(returned) - set(ids))
    if unasked:
        raise DataError(f"the loader returned series that were not asked for: {unasked[:3]}")
    if not returned:
        raise DataError(f"the loader returned no series for the {len(ids)} tuning ids of {trace}")
    if memory is not None:
        frame = _with_resource(frame, memory)
        if frame.empty:
            raise DataError(f"no {'memory' if memory else 'other than memory'} series among the tuning "
                            f"series of {trace}")
    return frame, series


def tune_window_target(trace: str, ids: Sequence[str], load: Loader, profile: str = "balanced",
                       scales: Sequence[float] = WINDOW_TARGET_SCALE_CANDIDATES,
                       leads: Sequence[int] = WINDOW_LEADS, max_days: int | None = None) -> TuningResult:
    """Window mode: the multiple of the profile's target the learnt factors aim at, per metric and lead.

    The tuning series ``ids`` of ``trace`` but memory's are walked once per lead (window
    mode, sized ``lead`` windows ahead); the plan is then sized with each scale and
    scored. Per metric and lead the largest scale whose violations keep the profile's
    target (with ``HEADROOM``) is chosen, the least slack of those kept; the smallest
    scale when none keeps it. ``chosen`` is keyed ``"<metric> lead <n>"``. Raises as ``tune``.
    """
    frame, series = _load_tuning(trace, ids, load, memory=False)
    prof = rs.get_profile(profile)
    rows = []
    for lead in leads:
        spec = ReplaySpec(mode="window", profile=profile, model=DEFAULT_MODEL["window"], max_days=max_days,
                          margins=(0.0,), lead_windows=int(lead))
        done, _ = walk(frame, spec, series)
        scored = {sr.unique_id for sr in done}
        for scale in scales:
            scaled = dc_replace(spec, window_target_scale=float(scale))
            settings = {"lead_windows": int(lead), "window_target_scale": float(scale)}
            rows += [_judged(settings, row, prof) for row in score_tracks(done, forecast_tracks(done, scaled), scored)]
    table = pd.DataFrame(rows)
    chosen = {f"{metric} lead {lead}": _pick(g, ["window_target_scale"])
              for (metric, lead), g in (table.groupby(["metric", "lead_windows"], sort=True) if len(table) else [])}
    return TuningResult(trace, list(ids), prof.name, table, chosen)


def choose(table: pd.DataFrame) -> dict[str, dict]:
    """Per memory metric: among the candidates that keep the target, the least slack; else the fewest violations.

    The candidates are memory settings: other metrics' rows are the same for every
    candidate and are not chosen from.
    """
    return _pick_per_metric(table[table["resource"] == "memory"] if len(table) else table)


def tune_window_memory(trace: str, ids: Sequence[str], load: Loader, profile: str = "balanced",
                       floor_days: Sequence[int] = WINDOW_MEMORY_FLOOR_CANDIDATES,
                       max_days: int | None = None) -> TuningResult:
    """Window mode, memory: the days of daily peaks a window's base is never below, per metric.

    The tuning series ``ids`` of ``trace`` that are memory's are replayed (window mode,
    sized at the window start) with each candidate and chosen from as ``tune`` chooses
    (the least slack among those that keep the memory target with ``HEADROOM``, else the
    fewest violations). Raises as ``tune``.
    """
    frame, series = _load_tuning(trace, ids, load, memory=True)
    prof = rs.get_profile(profile)
    rows = []
    for days in floor_days:
        spec = ReplaySpec(mode="window", profile=profile, model=DEFAULT_MODEL["window"], max_days=max_days,
                          margins=(0.0,), window_memory_floor_days=int(days))
        done, _ = walk(frame, spec, series)
        scored = score_tracks(done, forecast_tracks(done, spec), {sr.unique_id for sr in done})
        rows += [_judged({"window_memory_floor_days": int(days)}, row, prof) for row in scored]
    table = pd.DataFrame(rows)
    return TuningResult(trace, list(ids), prof.name, table, choose(table))


def tune_daily_pooling(trace: str, ids: Sequence[str], load: Loader, profile: str = "balanced",
                       max_days: int | None = None) -> TuningResult:
    """Daily mode: whether each learnt factor is shrunk toward the metric's fleet factor, per metric.

    The tuning series ``ids`` of ``trace`` are walked once (daily mode); the plan is sized
    with and without pooling and scored. Per metric the one that keeps the profile's
    target (with ``HEADROOM``) with the least slack is chosen, else the one with the
    fewest violations. Raises as ``tune``.
    """
    frame, series = _load_tuning(trace, ids, load)
    prof = rs.get_profile(profile)
    spec = ReplaySpec(mode="daily", profile=profile, model=DEFAULT_MODEL["daily"], max_days=max_days, margins=(0.0,))
    done, _ = walk(frame, spec, series)
    scored = {sr.unique_id for sr in done}
    rows = []
    for pooled in (False, True):
        resources = ("cpu", "memory", "other") if pooled else ()
        tracks = forecast_tracks(done, dc_replace(spec, daily_pooled_resources=resources))
        rows += [_judged({"pool_daily_factors": pooled}, row, prof) for row in score_tracks(done, tracks, scored)]
    table = pd.DataFrame(rows)
    return TuningResult(trace, list(ids), prof.name, table, _pick_per_metric(table))


def tune_daily_base(trace: str, ids: Sequence[str], load: Loader, profile: str = "balanced",
                    days: Sequence[int] = DAILY_BASE_DAYS_CANDIDATES, max_days: int | None = None) -> TuningResult:
    """Daily mode, every resource but memory: the base from the model's forecast or from the last days' usage.

    The tuning series ``ids`` of ``trace`` but memory's are replayed (daily mode) with
    each candidate. A candidate is judged where the goal is: its plan's slack, on its own
    trade-off curve (the target sweep), at the VPA-style baseline's violation rate
    (``slack_at_vpa_rate``; lower is better). Per metric the least of those is chosen (the
    first candidate when none is measured). Raises as ``tune``.
    """
    frame, series = _load_tuning(trace, ids, load, memory=False)
    prof = rs.get_profile(profile)
    rows = []
    for k in days:
        result = replay(frame, ReplaySpec(mode="daily", profile=profile, model=DEFAULT_MODEL["daily"],
                                          daily_base_days=int(k), max_days=max_days), series)
        totals = result.totals.set_index(["metric", "method"])
        for row in result.totals[result.totals["method"] == FORECAST].to_dict("records"):
            vpa = totals.loc[(row["metric"], VPA)]
            curve = result.targets[result.targets["metric"] == row["metric"]]
            at = slack_at(zip(curve["violations"], curve["slack"], strict=True), float(vpa["violations"]))
            rows.append({**_judged({"daily_base_days": int(k)}, row, prof), "vpa_slack": float(vpa["slack"]),
                         "vpa_violations": float(vpa["violations"]),
                         "slack_at_vpa_rate": float("nan") if at is None else at})
    table = pd.DataFrame(rows)
    chosen = {str(metric): g.sort_values(["slack_at_vpa_rate", "daily_base_days"], na_position="last").iloc[0].to_dict()
              for metric, g in (table.groupby("metric", sort=True) if len(table) else [])}
    return TuningResult(trace, list(ids), prof.name, table, chosen)
