"""Memory judged per entity-day, with Autopilot's definitions.

For one entity (a VM, a machine) and one UTC day under one method:

- relative slack: the day's average limit minus the day's 95th percentile of 5-minute
  usage, over the average limit;
- an OOM-day: any 5-minute sample above the limit in force at that point;
- size changes: how many times the limit changed on that day (a new size taking effect
  at one of the day's periods, counted against the period before).

Per method: the mean relative slack over the entity-days, the share of OOM-free
entity-days, the distribution of OOM-days per entity (0, 1, 2, 3 or more) and the mean
size changes per entity-day. Entities with fewer than ``MIN_DAYS`` scored days are
reported apart (as Autopilot does for young jobs) and never mixed into those figures.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

DAY_NS = 86_400 * 10**9
MIN_DAYS = 2
USAGE_PERCENTILE = 95.0


def entity_day_rows(metric: str, method: str, entity: str, starts_ns: Sequence[int], limits: Sequence[float],
                    actuals: Sequence[np.ndarray]) -> list[dict]:
    """One row per UTC day of one entity's periods (in time order) under one method.

    ``limits[i]`` is in force over ``actuals[i]``, the 5-minute usage of the period starting
    at ``starts_ns[i]``. Periods with no finite limit or no usage are left out.
    """
    days: dict[int, dict] = {}
    previous = None
    for start, limit, usage in zip(starts_ns, limits, actuals, strict=True):
        usage = np.asarray(usage, dtype="float64")
        usage = usage[np.isfinite(usage)]
        if not np.isfinite(limit) or not usage.size:
            continue
        day = int(start) // DAY_NS * DAY_NS
        acc = days.setdefault(day, {"limits": [], "usage": [], "oom": False, "changes": 0})
        acc["limits"].append(np.full(usage.size, float(limit)))
        acc["usage"].append(usage)
        acc["oom"] = acc["oom"] or bool((usage > limit).any())
        if previous is not None and not np.isclose(limit, previous, rtol=1e-9, atol=0.0):
            acc["changes"] += 1
        previous = float(limit)
    rows = []
    for day, acc in sorted(days.items()):
        limit = float(np.concatenate(acc["limits"]).mean())
        p95 = float(np.percentile(np.concatenate(acc["usage"]), USAGE_PERCENTILE))
        rows.append({"metric": metric, "method": method, "entity": entity,
                     "day": pd.Timestamp(day, unit="ns", tz="UTC").date().isoformat(),
                     "limit": limit, "usage_p95": p95,
                     "relative_slack": (limit - p95) / limit if limit > 0 else float("nan"),
                     "oom": acc["oom"], "changes": acc["changes"]})
    return rows


def entity_day_summary(table: pd.DataFrame, min_days: int = MIN_DAYS) -> list[dict]:
    """Per metric and method: the entity-day figures, young entities (fewer than ``min_days``
    days) counted apart with their own figures."""
    out: list[dict] = []
    if table is None or table.empty:
        return out
    for (metric, method), g in table.groupby(["metric", "method"], sort=True):
        days = g.groupby("entity")["day"].nunique()
        young = sorted(days[days < min_days].index.astype(str))
        grown = g[~g["entity"].isin(young)]
        row = {"metric": metric, "method": method, **_figures(grown), "young_entities": young,
               "young": _figures(g[g["entity"].isin(young)]) if young else None}
        out.append(row)
    return out


def _figures(g: pd.DataFrame) -> dict:
    if g.empty:
        return {"entities": 0, "entity_days": 0, "relative_slack": None, "oom_free": None,
                "oom_days_per_entity": {}, "changes_per_entity_day": None}
    per_entity = g.groupby("entity")["oom"].sum().astype(int)
    n = len(per_entity)
    dist = {str(k): float((per_entity == k).sum() / n) for k in (0, 1, 2)}
    dist["3+"] = float((per_entity >= 3).sum() / n)
    return {"entities": n, "entity_days": len(g), "relative_slack": float(g["relative_slack"].mean()),
            "oom_free": float(1.0 - g["oom"].mean()), "oom_days_per_entity": dist,
            "changes_per_entity_day": float(g["changes"].mean())}
