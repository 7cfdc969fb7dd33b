"""The nightly's rightsize step: the series walked for the rightsizing plan, shard by shard, beside training.

Sizing the next day and windows walks every series over its last days (the replay's
method, ``plan.walk_plan``); it costs about as much per series as a quick model's
backtest. So the DAG maps a ``rightsize`` task over the same shards as the train tasks,
running while the models train, and publish only joins the walks and sizes
(``plan_from_walk_files``): the part that pools across a metric's series, a small share
of the work. The sizes are exactly those of ``plan.recommend`` over every series at once.
"""
from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path

import pandas as pd

from foresight_lib.errors import ConfigError, DataError
from foresight_lib.forecasting.progress import log_peak_memory
from foresight_lib.rightsizing import plan
from foresight_lib.runs import FEATURE_SERIES, FEATURES, open_run
from foresight_lib.scratch import scratch_dir

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
    from foresight_lib.forecasting.shards import features_name
    from foresight_lib.forecasting.threads import limit_threads

    cfg, store = open_run(run)
    label = "rightsize" if shard is None else f"rightsize · shard {shard}/{shards}"
    if shard is not None and (shards != int(run.get("shards") or 1) or not 1 <= shard <= shards):
        raise ConfigError(f"no task '{label}' in run {run['run_key']}: it has {run.get('shards') or 1} shard(s)")
    limit_threads(1)  # small numeric work per series: one thread, beside the train tasks
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
        return plan_from_walk_files(store, names, series, cfg.rightsizing.replica_capacity)
    return plan.plan_from_walks(walks, series, cfg.rightsizing.replica_capacity)


def plan_from_walk_files(store, names: list[str], series: pd.DataFrame,
                         replica_capacity: dict[str, float] | None = None) -> pd.DataFrame:
    """``plan.plan_from_walks`` over the shards' walks, one metric's walks of one kind and lead in memory at a time.

    A walk keeps every period of its series; all of them at once held 8 GB at 4,000
    series. Each shard's walks are read once and set aside on local disk by kind, lead and
    metric; a window's factor pools one metric's series, so each group is sized on its own
    and the rows are those of the walks merged at once.
    """
    units = plan.series_units(series)
    with scratch_dir("walks") as tmp:
        specs, skipped, pieces, count = None, [], [], 0
        for name in names:
            part = pickle.loads(store.read_bytes(name))
            if specs is None:
                specs = part["specs"]
                skipped, pieces = [[] for _ in specs], [{} for _ in specs]  # by kind and lead: metric -> files
            elif part["specs"] != specs:
                raise ConfigError("the rightsizing walks of the shards were made with different settings; run the "
                                  "rightsize tasks of this run again")
            for j, (done, left_out) in enumerate(part["walks"]):
                skipped[j] += left_out
                by_metric: dict[str, list] = {}
                for sr in done:
                    by_metric.setdefault(sr.metric, []).append(sr)
                for metric, walked in by_metric.items():
                    count += 1
                    path = Path(tmp) / f"{count}.pkl"
                    path.write_bytes(pickle.dumps(walked, protocol=pickle.HIGHEST_PROTOCOL))
                    pieces[j].setdefault(metric, []).append(path)
            del part
        rows: list[dict] = []
        for spec, by_metric_files, left_out in zip(specs, pieces, skipped, strict=True):
            for paths in by_metric_files.values():
                done = sorted((sr for path in paths for sr in pickle.loads(path.read_bytes())),
                              key=lambda sr: sr.unique_id)
                rows += plan.sized_rows(spec, done, units, replica_capacity)
                for path in paths:
                    path.unlink()
            rows += plan.skipped_rows(spec, sorted(left_out, key=lambda s: s["unique_id"]), units)
    return plan.plan_frame(rows)
