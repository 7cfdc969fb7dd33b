"""The nightly's rightsize step: the series walked for the rightsizing plan, shard by shard, beside training.

Sizing the next day and windows walks every series over its last days (the replay's
method, ``plan.walk_plan``); it costs about as much per series as a quick model's
backtest. So the DAG maps a ``rightsize`` task over the same shards as the train tasks,
running while the models train, and publish only joins the walks and sizes
(``plan.plan_from_walks``): the part that pools across a metric's series, a small share
of the work. The sizes are exactly those of ``plan.recommend`` over every series at once.
"""
from __future__ import annotations

import logging
import pickle
import time

import pandas as pd

from foresight_lib.errors import ConfigError, DataError
from foresight_lib.forecasting.progress import log_peak_memory
from foresight_lib.rightsizing import plan
from foresight_lib.runs import FEATURE_SERIES, FEATURES, open_run

log = logging.getLogger(__name__)


def walk_name(shard: int | None = None) -> str:
    """Where a rightsize task stores its walks in the run folder."""
    return "rightsizing/walks.pkl" if shard is None else f"rightsizing/walks/shard-{shard}.pkl"


def plan_settings(cfg, daily: bool = True) -> dict:
    """The configured plan's arguments for ``plan.walk_plan`` (the nightly sizes the day too)."""
    return {"profile": cfg.rightsizing.profile, "freq": cfg.freq, "windows": cfg.rightsizing.plan_windows,
            "models": {"daily": cfg.rightsizing.daily_model, "window": cfg.rightsizing.window_model},
            "daily": daily}


def rightsize_tasks(run: dict) -> list[dict]:
    """The keyword arguments of the mapped rightsize tasks: one per shard of the train step."""
    shards = int(run.get("shards") or 1)
    if shards == 1:
        return [{"shard": None, "shards": 1}]
    return [{"shard": shard, "shards": shards} for shard in range(1, shards + 1)]


def rightsize(run: dict, shard: int | None = None, shards: int = 1) -> dict:
    """Walk one shard's series (every series when ``shard`` is None) and store the walks for publish."""
    from foresight_lib.forecasting.backtest_runner import _limit_threads
    from foresight_lib.forecasting.shards import features_name

    cfg, store = open_run(run)
    label = "rightsize" if shard is None else f"rightsize · shard {shard}/{shards}"
    if shard is not None and (shards != int(run.get("shards") or 1) or not 1 <= shard <= shards):
        raise ConfigError(f"no task '{label}' in run {run['run_key']}: it has {run.get('shards') or 1} shard(s)")
    _limit_threads(1)  # small numeric work per series: one thread, beside the train tasks
    started = time.perf_counter()
    frame = store.read_frame(FEATURES if shard is None else features_name(shard))
    walks = plan.walk_plan(frame, store.read_frame(FEATURE_SERIES), **plan_settings(cfg))
    store.write_bytes(walk_name(shard), pickle.dumps(walks, protocol=pickle.HIGHEST_PROTOCOL))
    seconds = time.perf_counter() - started
    series = int(frame["unique_id"].nunique())
    log.info("%s: walked %d series in %.1f s", label, series, seconds)
    return {"shard": shard, "series": series, "seconds": round(seconds, 3), **log_peak_memory(label, log)}


def recommendations(cfg, store, run: dict, features: pd.DataFrame, series: pd.DataFrame) -> pd.DataFrame:
    """The run's plan from its rightsize tasks' walks; walked here when the run has none (a run by hand).

    Raises:
        DataError: some shards' walks are there and others not.
    """
    names = [walk_name(task["shard"]) for task in rightsize_tasks(run)]
    present = [store.exists(name) for name in names]
    if not any(present):
        log.info("no rightsize task ran for %s: walking its %d series here", run["run_key"],
                 features["unique_id"].nunique())
        walks = plan.walk_plan(features, series, **plan_settings(cfg))
    elif not all(present):
        missing = [name for name, there in zip(names, present, strict=True) if not there]
        raise DataError(f"run {run['run_key']} lacks the rightsizing walks {missing} in {store.uri('')}: clear "
                        "and run its rightsize tasks again, then publish")
    else:
        walks = plan.merge_walks([pickle.loads(store.read_bytes(name)) for name in names])
    return plan.plan_from_walks(walks, series, cfg.rightsizing.replica_capacity)
