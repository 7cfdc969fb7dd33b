"""Sizing what the replay walked (factors learnt per series, pooled per metric) and scoring it.

Per-period records, totals per method, the fixed-margin sweep and the target sweep of the
forecast-driven plan (``foresight_lib.rightsizing.replay`` runs them).
"""
from __future__ import annotations

import logging
from dataclasses import replace as dc_replace

import numpy as np
import pandas as pd

from foresight_lib.rightsizing import sizing as rs
from foresight_lib.rightsizing.entity_days import entity_day_rows
from foresight_lib.rightsizing.replay_report import FORECAST, score, score_ratios
from foresight_lib.rightsizing.replay_spec import TARGETS, ReplaySpec, SeriesReplay, Track

log = logging.getLogger(__name__)


def size_forecasts(done: list[SeriesReplay], spec: ReplaySpec, profile: rs.Profile | None = None) -> None:
    """Pass 2 with the spec's profile, into each series' ``tracks[FORECAST]``."""
    for sr, track in zip(done, forecast_tracks(done, spec, profile), strict=True):
        sr.tracks[FORECAST] = track


def forecast_tracks(done: list[SeriesReplay], spec: ReplaySpec, profile: rs.Profile | None = None,
                    last_only: bool = False) -> list[Track]:
    """Pass 2: every period's factor and forecast-driven request, one track per series.

    With ``last_only`` (the nightly plan) only each series' last period is sized.

    The factor is learnt from the periods that had ended when the period was sized
    (``calibration_days`` days, or ``calibration_windows`` windows): the smallest one that
    kept the profile's target share of their points under ``factor × base``. It is shrunk
    toward the factor learnt from every series of the same metric over the same periods
    (``rightsizing.shrink_factor``; in daily mode for the resources in
    ``spec.daily_pooled_resources``). The request is capped at the highest usage of those
    periods (``rightsizing.cap_to_observed``). Before any period is known: the first base
    times the profile's fixed margin.
    """
    prof = profile or spec.profile_
    step = spec.step_ns
    wanted = {sr.first_ns + sr.starts[-1] * step for sr in done} if last_only else None
    matrices = [_ratio_matrix(sr, spec.period_steps) for sr in done]
    pooling = spec.mode == "window" or bool(spec.daily_pooled_resources)
    pooled = _pooled_factors(done, spec, prof, wanted, matrices) if pooling else {}
    keep = int(np.ceil(spec.calibration_days)) if spec.mode == "daily" else spec.calibration_windows
    tracks = []
    for sr, (ratios, peaks) in zip(done, matrices, strict=True):
        track = Track()
        learnable = np.flatnonzero(np.isfinite(peaks) & np.isfinite(sr.bases))
        learnable_starts = np.asarray(sr.starts, dtype="int64")[learnable]
        for i in [len(sr.starts) - 1] if last_only else range(len(sr.starts)):
            start = sr.starts[i]
            # the periods that had ended when this one was sized
            pos = int(np.searchsorted(learnable_starts, start - spec.lead_steps - spec.period_steps, side="right"))
            past = learnable[max(0, pos - keep):pos]
            # only periods sized after the last step change began (their bases knew the new level)
            past = past[learnable_starts[max(0, pos - keep):pos] > sr.level_starts[i]] if sr.level_starts[i] else past
            low = max(prof.min_factor, spec.memory_min_factor) if sr.resource == "memory" else None
            target = rs.learnt_target(prof, sr.resource, spec.mode, spec.window_scale)
            own = rs.calibrate_factor(ratios[past].ravel(), prof, sr.resource, low, target)
            if spec.mode == "window" or sr.resource in spec.daily_pooled_resources:
                learnt = rs.shrink_factor(own, pooled.get((sr.metric, sr.first_ns + start * step)), prof, low)
            else:
                learnt = own
            base = sr.bases[i]
            if learnt is not None and np.isfinite(base):
                factor = learnt
                cap = float(peaks[past].max()) if past.size else None
                if cap is not None and low is not None:  # memory: never capped below its least factor
                    cap = max(cap, base * low)
                value = rs.cap_to_observed(base * factor, cap)
            else:  # nothing learnt yet: the first base and the profile's fixed margin
                base, factor = sr.first_bases[i], rs.default_factor(prof)
                value = base * factor
            track.add(base, *sr.sized(value, prof), factor, sr.confidences[i])
            track.values.append(value)
            track.targets.append(prof.target_for(sr.resource))
        tracks.append(track)
    return tracks


def _ratio_matrix(sr: SeriesReplay, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per period: usage over the calibrated base (NaN where either is unknown) and the usage peak."""
    n = len(sr.starts)
    ratios = np.full((n, width), np.nan)
    peaks = np.full(n, np.nan)
    sizes = np.fromiter((actual.size for actual in sr.actuals), dtype="int64", count=n)
    bases = np.asarray(sr.bases, dtype="float64")
    whole = np.flatnonzero(sizes == width)  # every period but a last one cut short: at once
    if whole.size:
        block = np.stack([sr.actuals[i] for i in whole])
        peaks[whole] = block.max(axis=1)
        ok = np.isfinite(bases[whole]) & (bases[whole] > 0)
        ratios[whole[ok]] = block[ok] / bases[whole[ok], None]
    for i in np.flatnonzero((sizes > 0) & (sizes != width)):
        actual = sr.actuals[i]
        peaks[i] = float(np.max(actual))
        if np.isfinite(bases[i]) and bases[i] > 0:
            ratios[i, :actual.size] = actual / bases[i]
    return ratios, peaks


def _pooled_factors(done: list[SeriesReplay], spec: ReplaySpec, prof: rs.Profile,
                    wanted: set[int] | None = None,
                    matrices: list[tuple[np.ndarray, np.ndarray]] | None = None) -> dict[tuple[str, int], float]:
    """Per metric and period start: the factor learnt from every series' previous periods.

    The pool for a period starting at ``t``, sized ``lead`` windows before it, is every
    series' periods of the same metric that had ended by then (the last
    ``calibration_windows`` windows, or ``calibration_days`` days), with their usage over
    base; as for a series' own factor, none from before the series' latest step change
    known at ``t`` (a restart's jump in usage over base would otherwise reach every
    series' factor). ``matrices``: each series' ``_ratio_matrix`` when the caller has them already.
    """
    step = spec.step_ns
    keep = spec.calibration_windows if spec.mode == "window" else int(np.ceil(spec.calibration_days))
    span = keep * spec.period_steps * step
    width = spec.period_steps * step
    by_metric: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    if matrices is None:
        matrices = [_ratio_matrix(sr, spec.period_steps) for sr in done]
    for sr, (ratios, _) in zip(done, matrices, strict=True):
        times = sr.first_ns + np.asarray(sr.starts, dtype="int64") * step
        levels = np.asarray(sr.level_starts, dtype="int64")
        levels = np.where(levels > 0, sr.first_ns + levels * step, np.iinfo("int64").min)
        by_metric.setdefault(sr.metric, []).append((times, ratios, levels))
    out: dict[tuple[str, int], float] = {}
    for metric, parts in by_metric.items():
        every = np.unique(np.concatenate([times for times, _, _ in parts]))
        for t in every if wanted is None else every[np.isin(every, list(wanted))]:
            decided = t - spec.lead_steps * step
            pool = []
            for times, r, levels in parts:
                latest = max(int(np.searchsorted(times, t, side="right")) - 1, 0)  # its period at or before t
                low = max(np.searchsorted(times, decided - span), np.searchsorted(times, levels[latest], side="right"))
                pool.append(r[low:np.searchsorted(times, decided - width, side="right")])
            k = rs.factor_of_ratios(np.concatenate([p.ravel() for p in pool]),
                                    rs.learnt_target(prof, rs.resource_of(metric), spec.mode,
                                                     spec.window_scale))
            if k is not None:
                out[(metric, int(t))] = k
    return out


# ---------------------------------------------------------------------------
# Records, totals, sweep


def period_records(done: list[SeriesReplay], spec: ReplaySpec, step_ns: int) -> pd.DataFrame:
    """One row per series, scored period and method: the recommendation and its scores."""
    rows = []
    period_ns = spec.period_steps * step_ns
    for sr in done:
        for i, start in enumerate(sr.starts):
            if not sr.scored[i]:
                continue
            actual = sr.actuals[i]
            peak = float(actual.max())
            for method, track in sr.tracks.items():
                request, limit = track.requests[i], track.limits[i]
                if not np.isfinite(request):
                    continue
                s = score(request, actual, limit if sr.resource == "memory" else None)
                rows.append({
                    "unique_id": sr.unique_id, "entity": sr.entity, "metric": sr.metric, "resource": sr.resource,
                    "unit": sr.unit, "method": method, "period_start": sr.first_ns + start * step_ns,
                    "target_violation": track.targets[i] if track.targets else None,
                    "base": track.bases[i], "factor": track.factors[i], "request": request, "limit": limit,
                    "confidence": track.confidences[i], "usage_peak": peak, "points": s["points"],
                    "provisioned": s["provisioned"], "unused": s["unused"], "over": s["over"],
                    "over_limit": s.get("over_limit"), "slack": s["slack"], "violations": s["violations"],
                    "violations_limit": s.get("violations_limit"),
                })
    records = pd.DataFrame(rows)
    if records.empty:
        return records
    start_ns = records["period_start"].to_numpy("int64")
    records["period_start"] = pd.to_datetime(start_ns, unit="ns", utc=True)
    records["period_end"] = pd.to_datetime(start_ns + period_ns, unit="ns", utc=True)
    return records


def method_totals(records: pd.DataFrame, spec: ReplaySpec) -> pd.DataFrame:
    """Per metric and method: slack, violations (memory: and above the limit), points, periods."""
    rows = []
    if records.empty:
        return pd.DataFrame()
    for (metric, method), g in records.groupby(["metric", "method"], sort=True):
        over_limit = int(g["over_limit"].sum()) if g["resource"].iloc[0] == "memory" else None
        per_entity = g.groupby("unique_id")[["unused", "provisioned", "over", "points"]].sum()
        rows.append({
            "metric": metric, "resource": g["resource"].iloc[0], "method": method,
            "series": int(g["unique_id"].nunique()), "periods": len(g), "points": int(g["points"].sum()),
            **score_ratios(float(g["provisioned"].sum()), float(g["unused"].sum()), int(g["points"].sum()),
                      int(g["over"].sum()), over_limit),
            "mean_series_slack": float((per_entity["unused"] / per_entity["provisioned"]).mean()),
            "mean_series_violations": float((per_entity["over"] / per_entity["points"]).mean()),
        })
    return pd.DataFrame(rows)


def margin_sweep(done: list[SeriesReplay], spec: ReplaySpec) -> pd.DataFrame:
    """Every method rescored with each fixed margin over its base (the forecast without a learnt factor)."""
    acc: dict[tuple[str, str, float], list[float]] = {}
    for sr in done:
        scored = np.asarray(sr.scored, dtype=bool)
        actual = np.vstack([a for a, s in zip(sr.actuals, scored, strict=True) if s])
        for method, track in sr.tracks.items():
            bases = np.asarray(track.bases, dtype="float64")[scored]
            floors = getattr(track, "floors", [])  # walks stored before floors were kept have none
            floors = (np.asarray(floors, dtype="float64")[scored] if len(floors) == len(track.bases)
                      else np.zeros(bases.size))
            ok = np.isfinite(bases)
            if not ok.any():
                continue
            for margin in spec.margins:
                req = rs.round_many(np.maximum(bases[ok] * (1.0 + margin), floors[ok]), sr.unit,
                                    sr.resource)[:, None]
                a = actual[ok]
                sums = acc.setdefault((sr.metric, method, margin), [0.0, 0.0, 0.0, 0.0])
                sums[0] += float(req.sum() * a.shape[1])
                sums[1] += float(np.maximum(req - a, 0.0).sum())
                sums[2] += float(a.size)
                sums[3] += float((a > req).sum())
    rows = [{"metric": metric, "method": method, "margin": margin, "slack": s[1] / s[0] if s[0] else float("nan"),
             "violations": s[3] / s[2] if s[2] else float("nan")}
            for (metric, method, margin), s in sorted(acc.items())]
    return pd.DataFrame(rows)


def target_sweep(done: list[SeriesReplay], spec: ReplaySpec, scored_ids: set[str]) -> pd.DataFrame:
    """The forecast-driven plan rerun with each target violation rate of ``TARGETS``.

    Its trade-off curve: the same bases, factors learnt (and pooled over every walked
    series, as for the profile's own plan) for each target, rounded and scored like the
    profile's own plan on the series in ``scored_ids``. A target here is the one the plan
    would name (in window mode its factors aim at ``spec.window_scale`` times it,
    as the published plan's do).
    """
    rows = []
    for target in TARGETS:
        prof = dc_replace(spec.profile_, target_violation=target, memory_target_violation=target)
        for row in score_tracks(done, forecast_tracks(done, spec, prof), scored_ids):
            rows.append({"metric": row.pop("metric"), "target": target, **row})
    return pd.DataFrame(rows)


def score_tracks(done: list[SeriesReplay], tracks: list[Track], scored_ids: set[str]) -> list[dict]:
    """Per metric: slack and violations (memory: and above the limit) of ``tracks``' scored
    requests on the series in ``scored_ids``."""
    acc: dict[str, list[float]] = {}
    for sr, track in zip(done, tracks, strict=True):
        if sr.unique_id not in scored_ids:
            continue
        sums = acc.setdefault(sr.metric, [0.0, 0.0, 0.0, 0.0, 0.0])
        for i, scored in enumerate(sr.scored):
            if not scored or not np.isfinite(track.requests[i]):
                continue
            s = score(track.requests[i], sr.actuals[i], track.limits[i] if sr.resource == "memory" else None)
            sums[0] += s["provisioned"]
            sums[1] += s["unused"]
            sums[2] += s["points"]
            sums[3] += s["over"]
            sums[4] += s.get("over_limit", 0)
    rows = []
    for metric, (prov, unused, points, over, over_limit) in sorted(acc.items()):
        memory = rs.resource_of(metric) == "memory"
        rows.append({"metric": metric,
                     **score_ratios(prov, unused, int(points), int(over), int(over_limit) if memory else None)})
    return rows


def entity_day_table(done: list[SeriesReplay], spec: ReplaySpec) -> pd.DataFrame:
    """Memory: every method's figures per entity and UTC day over the scored periods
    (``entity_days.entity_day_rows``; the limit is the one each period was given)."""
    rows: list[dict] = []
    for sr in done:
        if sr.resource != "memory":
            continue
        scored = np.flatnonzero(sr.scored)
        starts = [sr.first_ns + sr.starts[i] * spec.step_ns for i in scored]
        actuals = [sr.actuals[i] for i in scored]
        for method, track in sr.tracks.items():
            rows += entity_day_rows(sr.metric, method, sr.entity, starts, [track.limits[i] for i in scored], actuals)
    return pd.DataFrame(rows)
