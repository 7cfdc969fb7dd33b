"""How much room the daily memory goal leaves: each method's sizes rescaled, per entity, with hindsight.

The daily replay on the Bitbrains memory series (``foresight rightsize-replay --mode
daily``; the Alibaba 2018 machines' memory as a second trace), on the evaluation part of
each trace (``foresight_lib.rightsizing.splits``), gives every method's daily
request per VM. This benchmark rescales those
requests by a factor ``s`` and rescores them on the same 5-minute points:

- uniform: one ``s`` for every VM (each method's own trade-off curve);
- hindsight: a factor per VM chosen *after the fact* to minimise the fleet's unused
  memory for a given number of points above the request (a Lagrangian sweep). No
  method can know these factors in advance, so this is a bound on what learning a
  better margin per VM could bring, not a method;
- oracle: each day sized at its own peak (no violation; the least slack possible for
  one static size per day).

It reports, per method, the least slack reachable at or under the VPA-style baseline's
own violation rate, in ``benchmarks/results/rightsizing_memory_bound.md`` and ``.json``.

    .venv/bin/python benchmarks/rightsizing_memory_bound.py
"""
from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from results_files import write_results

from foresight_lib.quality.features import prepare_series
from foresight_lib.rightsizing import splits
from foresight_lib.rightsizing.replay import replay
from foresight_lib.rightsizing.replay_spec import ReplaySpec
from foresight_lib.sources.loaders import load_series

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATA_SETS = [(SHARED / "bitbrains_rnd" / "2013-8", "bitbrains", "memory_usage_kb"),
             (SHARED / "alibaba2018_machines", "alibaba2018", "mem_util_percent")]
"""Bitbrains (the goal's data) and, as a second trace, the Alibaba 2018 machines' memory."""
SCALES = np.round(np.concatenate([np.arange(0.50, 1.00, 0.02), np.arange(1.00, 3.01, 0.01)]), 2)
LAMBDAS = np.logspace(-3, 4, 141)
"""Unused share of one point's request traded for one violation, relative to the fleet's mean request."""
COMMAND = ".venv/bin/python benchmarks/rightsizing_memory_bound.py"
SIZES = [("forecast", "forecast", "request"), ("forecast base (before the learnt factor)", "forecast", "base"),
         ("vpa", "vpa", "request"), ("crane", "crane", "request")]
"""What is rescaled: each method's request, and the forecast plan's base without its learnt factor."""


def usage_by_period(frame: pd.DataFrame, records: pd.DataFrame) -> list[np.ndarray]:
    """The 5-minute usage each record (a row with ``unique_id``, ``period_start``, ``period_end``) was scored on."""
    by_series = {uid: (g["ds"].to_numpy("datetime64[ns]").astype("int64"), g["y"].to_numpy("float64"))
                 for uid, g in frame.groupby("unique_id")}
    out = []
    for uid, start, end in records[["unique_id", "period_start", "period_end"]].itertuples(index=False):
        ds, y = by_series[uid]
        keep = (ds >= pd.Timestamp(start).value) & (ds < pd.Timestamp(end).value)
        used = y[keep]
        out.append(used[np.isfinite(used)])
    return out


def _entity_curves(records: pd.DataFrame, usage: list[np.ndarray], column: str) -> dict[str, np.ndarray]:
    """Per entity and scale: provisioned, unused and points over ``column`` rescaled (arrays entities x scales)."""
    provisioned, unused, over = {}, {}, {}
    for (uid, request), used in zip(records[["unique_id", column]].itertuples(index=False), usage, strict=True):
        req = request * SCALES[:, None]
        provisioned[uid] = provisioned.get(uid, 0.0) + req[:, 0] * used.size
        unused[uid] = unused.get(uid, 0.0) + np.maximum(req - used[None, :], 0.0).sum(axis=1)
        over[uid] = over.get(uid, 0) + (used[None, :] > req).sum(axis=1)
    ids = sorted(provisioned)
    return {"ids": ids, "provisioned": np.array([provisioned[i] for i in ids]),
            "unused": np.array([unused[i] for i in ids]), "over": np.array([over[i] for i in ids])}


def _best_at(points: list[tuple[float, float]], violations: float) -> float | None:
    """The least slack of the (slack, violations) points at or under ``violations``."""
    ok = [s for s, v in points if v <= violations + 1e-12]
    return min(ok) if ok else None


def bound(data: Path, fmt: str, metric: str) -> dict:
    """The replay on one data set's memory series, and its rescaled sizes (see the module's docstring)."""
    started = time.perf_counter()
    loaded = load_series(data, fmt, [metric])
    prepared = prepare_series(loaded.frame, loaded.series, freq="5min")
    frame = splits.keep_part(prepared.frame, fmt, splits.EVALUATION)
    result = replay(frame, ReplaySpec(mode="daily", profile="balanced", model="seasonal_naive"), prepared.series)
    records = result.records[result.records["request"].notna()].reset_index(drop=True)
    usage = usage_by_period(frame, records)
    points = int(sum(u.size for u in usage)) // records["method"].nunique()
    totals = {row["method"]: row for row in result.totals.to_dict(orient="records")}
    vpa_rate = float(totals["vpa"]["violations"])
    out = {"data": str(data.relative_to(ROOT.parent)), "format": fmt, "metric": metric, "part": splits.EVALUATION,
           "series": int(records["unique_id"].nunique()), "periods": int(totals["vpa"]["periods"]),
           "points": points, "vpa_violations": vpa_rate, "methods": {}}
    for label, method, column in SIZES:
        mine = records["method"] == method
        curves = _entity_curves(records[mine], [u for u, m in zip(usage, mine, strict=True) if m], column)
        prov, unused, over = curves["provisioned"], curves["unused"], curves["over"]
        uniform = [(float(unused[:, j].sum() / prov[:, j].sum()), float(over[:, j].sum() / points))
                   for j in range(len(SCALES))]
        mean_request = prov[:, list(SCALES).index(1.0)].sum() / points
        hindsight = []
        for lam in LAMBDAS:
            pick = np.argmin(unused + lam * mean_request * over, axis=1)
            rows = np.arange(len(pick))
            hindsight.append((float(unused[rows, pick].sum() / prov[rows, pick].sum()),
                              float(over[rows, pick].sum() / points)))
        as_replayed = uniform[list(SCALES).index(1.0)]
        out["methods"][label] = {
            "as_replayed": {"slack": as_replayed[0], "violations": as_replayed[1]},
            "uniform_best_at_vpa_rate": _best_at(uniform, vpa_rate),
            "hindsight_best_at_vpa_rate": _best_at(hindsight, vpa_rate),
        }
    scored = [u for u, m in zip(usage, records["method"] == "vpa", strict=True) if m]
    oracle_prov = float(sum(u.max() * u.size for u in scored))
    oracle_unused = float(sum((u.max() - u).sum() for u in scored))
    out["oracle_day_peak_slack"] = oracle_unused / oracle_prov
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def main() -> int:
    out = {"command": COMMAND, "python": platform.python_version(),
           "data_sets": [bound(data, fmt, metric) for data, fmt, metric in DATA_SETS]}
    write_results("rightsizing_memory_bound", out, render(out))
    return 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def render(out: dict) -> str:
    lines = [
        "# Daily memory: how much room there is below the VPA-style baseline", "",
        f"Command: `{out['command']}`. Daily replay with the balanced profile (`foresight rightsize-replay "
        "--mode daily`) on the memory series of each data set's evaluation part (`foresight_lib/rightsizing/"
        "splits.py`; no constant was chosen on it); each method's daily requests are then rescaled and "
        "rescored on the same 5-minute points. The columns give the least slack at or under the VPA-style "
        "baseline's violation rate.", "",
    ]
    for data in out["data_sets"]:
        lines += [
            f"## `../{data['data']}`, `{data['metric']}`", "",
            f"{data['series']} series, {data['periods']} scored days, {data['points']} points per method "
            f"({data['seconds']} s). VPA-style violation rate: {_pct(data['vpa_violations'])}.", "",
            "| sizes rescaled | at scale 1 (slack / violations) | one factor for every series | a factor per "
            "series, chosen in hindsight |", "|---|---|---|---|",
        ]
        for method, row in data["methods"].items():
            replayed = f"{_pct(row['as_replayed']['slack'])} / {_pct(row['as_replayed']['violations'])}"
            lines.append(f"| {method} | {replayed} | {_pct(row['uniform_best_at_vpa_rate'])} | "
                         f"{_pct(row['hindsight_best_at_vpa_rate'])} |")
        lines += ["", f"Each day sized at its own peak (perfect knowledge, no violation): "
                      f"{_pct(data['oracle_day_peak_slack'])} slack.", ""]
    lines += [
        "The hindsight column is not a method: its factors are chosen knowing the scored days. It bounds what "
        "a better margin per series, learnt from the past, could bring on top of each method's sizes.", "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
