"""Daily memory: a cross-series quantile regression of the next day's peak, judged on the tuning part.

The daily memory base is the highest peak of the last ``MEMORY_PEAK_DAYS`` days times a
least factor (``foresight_lib/rightsizing/sizing.py``). The alternative asked for is a
model of the next day's peak fitted across series: a linear quantile regression of
``log(peak of the day / peak of the day before)`` on features of the seven daily peaks
before it (each relative to the latest: the two days before, the highest of three and of
seven, their mean, the spread of their day-to-day changes) and whether the day is a
weekend day. The request is the day before's peak times ``exp`` of the predicted
quantile.

Everything here runs on the **tuning** part of the Bitbrains trace only
(``foresight_lib/rightsizing/splits.py``): the regression is scored by leave-one-VM-out
cross-validation (each VM's days predicted by a model fitted on the other tuning VMs),
next to the shipped estimator and the VPA-style baseline of the same daily replay on the
same days, and the shipped estimator's requests rescaled by one factor (its own
trade-off curve). A third alternative keeps the VPA-style baseline's base (its decaying
histogram's 90th percentile of daily peaks) and replaces its fixed 15 % margin by a
factor learnt from the VM's previous week as the shipped plan learns its own (the
smallest factor that kept 0.1 % of those days' points above, never below a least factor).
Two more keep the shipped requests and add to them: a fixed headroom in MiB on every
VM (which, like the VPA's histogram buckets, gives small VMs more room relative to their
size, where room is cheap), and a bump after a day that went over (the next days' request
raised by that day's peak over its request, easing back by a share per day, as the VPA
raises memory after an OOM kill).
Writes ``benchmarks/results/rightsizing_peak_regression.md`` and
``.json``.

    .venv/bin/python benchmarks/rightsizing_peak_regression.py
"""
from __future__ import annotations

import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import QuantileRegressor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_files import write_results
from rightsizing_memory_bound import usage_by_period  # noqa: E402
from rightsizing_tune import PREPARED_METRICS, TRACE, load_files, vm_ids  # noqa: E402

from foresight_lib.rightsizing import splits  # noqa: E402
from foresight_lib.rightsizing.replay import replay  # noqa: E402
from foresight_lib.rightsizing.replay_spec import ReplaySpec  # noqa: E402
from foresight_lib.rightsizing.sizing import factor_of_ratios  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/rightsizing_peak_regression.py"
MEMORY = PREPARED_METRICS[1]
PAST_DAYS = 7
QUANTILES = (0.8, 0.85, 0.9, 0.93, 0.95, 0.97)
SCALES = (1.0, 1.05, 1.1, 1.15, 1.2)
LEAST_FACTORS = (1.0, 1.05, 1.1, 1.15)
HEADROOM_MIB = (32, 64, 128, 192, 256)
BUMP_EASING = (0.01, 0.03, 0.1)
"""Share of a bump given back per day without going over."""


def features(peaks: np.ndarray, weekend: bool) -> np.ndarray:
    """Features of the ``PAST_DAYS`` daily peaks before a day (oldest first), relative to the latest."""
    lp = np.log(peaks)
    last = lp[-1]
    return np.array([lp[-2] - last, lp[-3] - last, lp[-3:].max() - last, lp.max() - last, lp.mean() - last,
                     np.diff(lp).std(), float(weekend)])


def days_table(frame: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Per scored day with ``PAST_DAYS`` whole positive daily peaks before it: the features,
    the day's points and the shipped and VPA-style requests of the replay."""
    requests = records.pivot_table(index=["unique_id", "period_start"], columns="method", values="request")
    bases = records[records["method"] == "vpa"].set_index(["unique_id", "period_start"])["base"]
    rows = []
    for uid, g in frame.groupby("unique_id", sort=True):
        day = g["ds"].dt.floor("D")
        y = g["y"].to_numpy("float64")
        by_day = {d: y[idx] for d, idx in g.groupby(day).indices.items()}
        days = sorted(by_day)
        peaks = np.array([np.nanmax(by_day[d]) if np.isfinite(by_day[d]).any() else np.nan for d in days])
        for i in range(PAST_DAYS, len(days)):
            key = (uid, days[i])
            past = peaks[i - PAST_DAYS:i]
            if key not in requests.index or not (np.isfinite(past).all() and (past > 0).all()):
                continue
            used = by_day[days[i]]
            used = used[np.isfinite(used)]
            if len(used) != 288:
                continue
            rows.append({"unique_id": uid, "entity": splits.entity_of(uid), "day": days[i], "last": past[-1],
                         "x": features(past, days[i].day_of_week >= 5), "used": used,
                         "shipped": float(requests.loc[key, "forecast"]), "vpa": float(requests.loc[key, "vpa"]),
                         "vpa_base": float(bases.loc[key])})
    return pd.DataFrame(rows)


def vpa_base_with_learnt_factor(table: pd.DataFrame, least: float, target: float = 0.001) -> np.ndarray:
    """The VPA-style base times a factor learnt from the VM's previous ``PAST_DAYS`` days in the table."""
    out = np.zeros(len(table))
    for _, g in table.groupby("unique_id", sort=False):
        g = g.sort_values("day")
        base, used, days = g["vpa_base"].to_numpy(), list(g["used"]), g["day"].to_numpy()
        for i, row in enumerate(g.index):
            past = [used[j] / base[j] for j in range(i) if (days[i] - days[j]) <= np.timedelta64(PAST_DAYS, "D")]
            ratios = np.concatenate(past) if past else np.array([])
            ratios = ratios[np.isfinite(ratios)]
            k = factor_of_ratios(ratios, target) if ratios.size else 1.15
            out[table.index.get_loc(row)] = base[i] * max(k, least)
    return out


def every_day(frame: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Every day the replay sized with both methods (not only those with a week of peaks
    before them): the day's points and the shipped and VPA-style requests."""
    requests = records.pivot_table(index=["unique_id", "period_start", "period_end"], columns="method",
                                   values="request").dropna(subset=["forecast", "vpa"]).reset_index()
    return pd.DataFrame({"shipped": requests["forecast"].to_numpy("float64"),
                         "vpa": requests["vpa"].to_numpy("float64"), "used": usage_by_period(frame, requests)})


def with_feedback(table: pd.DataFrame, easing: float) -> np.ndarray:
    """The shipped requests, raised after a day that went over by that day's peak over its
    request (the largest bump so far), the bump easing back by ``easing`` per day under it."""
    out = np.zeros(len(table))
    for _, g in table.groupby("unique_id", sort=False):
        bump = 1.0
        for row in g.sort_values("day").itertuples():
            request = row.shipped * bump
            out[table.index.get_loc(row.Index)] = request
            peak = float(row.used.max())
            bump = max(bump, peak / row.shipped) if peak > request else max(1.0, bump * (1.0 - easing))
    return out


def score(requests: np.ndarray, used: list[np.ndarray]) -> dict:
    provisioned = sum(r * u.size for r, u in zip(requests, used, strict=True))
    unused = sum(np.maximum(r - u, 0.0).sum() for r, u in zip(requests, used, strict=True))
    over = sum(int((u > r).sum()) for r, u in zip(requests, used, strict=True))
    points = sum(u.size for u in used)
    return {"slack": float(unused / provisioned), "violations": float(over / points)}


def main() -> int:
    warnings.filterwarnings("ignore", module="sklearn")
    started = time.perf_counter()
    ids = [i for i in splits.ids_in(TRACE, vm_ids(), splits.TUNING) if i.startswith(MEMORY)]
    frame, series = load_files(ids)
    splits.require_tuning(TRACE, frame["unique_id"].astype(str).unique().tolist())
    result = replay(frame, ReplaySpec(mode="daily", profile="balanced", model="seasonal_naive", margins=(0.0,)),
                    series)
    table = days_table(frame, result.records)
    x, used = np.stack(table["x"].to_numpy()), list(table["used"])
    target = np.log(np.array([u.max() for u in used]) / table["last"].to_numpy())
    rows = [{"method": "VPA-style", **score(table["vpa"].to_numpy(), used)}]
    for s in SCALES:
        rows.append({"method": f"shipped × {s:g}", **score(table["shipped"].to_numpy() * s, used)})
    for least in LEAST_FACTORS:
        rows.append({"method": f"VPA-style base × a learnt factor, at least {least:g}",
                     **score(vpa_base_with_learnt_factor(table, least), used)})
    for mib in HEADROOM_MIB:
        rows.append({"method": f"shipped + {mib} MiB", **score(table["shipped"].to_numpy() + mib * 2.0**20, used)})
    for easing in BUMP_EASING:
        rows.append({"method": f"shipped, bumped after a day over, easing {100 * easing:g} % a day",
                     **score(with_feedback(table, easing), used)})
    every = every_day(frame, result.records)
    every_used = list(every["used"])
    rows.append({"method": "every replayed day: VPA-style", **score(every["vpa"].to_numpy(), every_used)})
    for mib in HEADROOM_MIB:
        rows.append({"method": f"every replayed day: shipped + {mib} MiB",
                     **score(every["shipped"].to_numpy() + mib * 2.0**20, every_used)})
    entities = sorted(table["entity"].unique())
    for q in QUANTILES:
        predicted = np.zeros(len(table))
        for entity in entities:  # leave one VM out
            held = (table["entity"] == entity).to_numpy()
            model = QuantileRegressor(quantile=q, alpha=0.0, solver="highs").fit(x[~held], target[~held])
            predicted[held] = model.predict(x[held])
        rows.append({"method": f"quantile regression, q = {q:g} (leave one VM out)",
                     **score(table["last"].to_numpy() * np.exp(predicted), used)})
    out = {"command": COMMAND, "python": platform.python_version(), "trace": TRACE, "part": splits.TUNING,
           "metric": MEMORY, "series": int(table["unique_id"].nunique()), "days": len(table),
           "every_replayed_day": len(every),
           "seconds": round(time.perf_counter() - started, 1), "rows": rows}
    write_results("rightsizing_peak_regression", out, render(out))
    return 0


def render(out: dict) -> str:
    lines = [
        "# Daily memory: estimators of the next day's peak (tuning part only)", "",
        f"Command: `{out['command']}` ({out['seconds']} s). Bitbrains, `{out['metric']}`, the tuning part "
        f"({out['series']} VMs, {out['days']} days with a week of daily peaks before them; the evaluation part is "
        "not read). The same days for every row (but those marked \"every replayed day\": the "
        f"{out.get('every_replayed_day', '-')} days the daily replay sized with both methods); the shipped "
        "estimator and the VPA-style baseline are the daily replay's requests (balanced profile). See the "
        "script's docstring for the features.", "",
        "| method | slack | violations |", "|---|---|---|",
    ]
    lines += [f"| {r['method']} | {100 * r['slack']:.2f} % | {100 * r['violations']:.3f} % |" for r in out["rows"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
