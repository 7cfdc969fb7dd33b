"""The scaling plan between two nightly runs: the next windows, re-sized every half hour.

The nightly run sizes the next day and the windows right after it. A window plan is
only worth its measured edge over a reactive scaler when each window is sized at its
start from the latest actuals (``rightsize-replay --mode window``; sized 90 minutes
ahead it loses that edge), so the ``foresight_scaling_plan`` DAG runs these steps every
``rightsizing.plan_schedule``:

extract → validate → build_features: the nightly's own steps (same source, Great
Expectations suites and features), into ``<data_root>/plans/<date>`` instead of
``runs/``; then ``size_windows`` (``foresight_lib.rightsizing.plan`` on the latest days, windows
only: no training, the window model is refitted on the latest days as at the nightly
publish) and ``publish``: ``latest/scaling_plan.parquet`` with its own manifest
``latest/_plan_manifest.json``.

It never writes the nightly's files or manifest, so the forecasts, the daily sizes and
the champion stay those of the last nightly run, and a failed plan run leaves the
previous plan in place. The exposition serves whichever window plan is newer beside
the nightly's daily sizes (``plan.current_windows``). A re-run of the same interval
replaces its own folder; only the newest ``rightsizing.plan_keep_runs`` folders are kept.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import pandas as pd

from foresight_lib import pipeline
from foresight_lib.errors import DataError
from foresight_lib.runs import duration

log = logging.getLogger(__name__)

PLAN_FOLDER = "plans"
SCALING_PLAN = "scaling_plan"
PLAN_MANIFEST = "_plan_manifest.json"


def extract(run_id: str | None, data_interval_end, params: dict | None = None, overrides: dict | None = None,
            connection: dict | Callable[[], dict | None] | None = None, owner_pid: int | None = None) -> dict:
    """The nightly's extract into a plan run folder: the same window of history up to ``data_interval_end``."""
    return pipeline.extract(run_id, None, data_interval_end, params=params, overrides=overrides,
                            connection=connection, folder=PLAN_FOLDER, owner_pid=owner_pid)


def size_windows(run: dict) -> dict:
    """The next ``rightsizing.plan_windows`` windows of every validated series, sized from the latest data."""
    cfg, store = pipeline.open_run(run)
    features = store.read_frame(pipeline.FEATURES)
    series = store.read_frame(pipeline.FEATURE_SERIES)
    windows = pipeline.recommend(cfg, features, series, daily=False)
    store.write_frame(SCALING_PLAN, windows)
    sized = windows["request"].notna()
    first = windows.loc[sized, "period_start"].min() if sized.any() else None
    log.info("sized %d of %d windows of %d series; the first starts at %s", int(sized.sum()), len(windows),
             windows["unique_id"].nunique(), first)
    return {**run, "windows": int(len(windows)), "sized": int(sized.sum()),
            "first_window": pd.Timestamp(first).isoformat() if first is not None else None}


def publish(run: dict) -> dict:
    """The plan to ``latest/scaling_plan.parquet`` (its own manifest), old plan folders pruned, then the push.

    Under the data root's publish lock, as one transaction with the attempt becoming the
    interval's plan folder (``foresight_lib.runs.transaction``); an older interval than the
    published plan's is kept in its folder only.
    """
    from foresight_lib.runs import transaction as publishing
    from foresight_lib.tracking import model_registry

    cfg, store = pipeline.open_run(run)
    lock, token = publishing.publish_lock(store, duration(cfg.publish.lock_timeout),
                                          duration(cfg.publish.wait), run.get("run_id") or run["run_key"])
    try:
        publishing.recover(store, registry=model_registry)
        publishing.remove_temp_files(store)
        published = store.latest_manifest(PLAN_MANIFEST) or {}
        newer = not published.get("data_interval_end") or (
            pd.Timestamp(run["data_interval_end"]) >= pd.Timestamp(published["data_interval_end"]))
        publishing.run_transaction(store, {}, lambda tx: None, [SCALING_PLAN] if newer else [],
                                   {"data_interval_end": run["data_interval_end"]}, manifest_name=PLAN_MANIFEST,
                                   still_holding=lambda: lock.check(token))
    finally:
        lock.release(token)
    if not newer:
        log.info("plan of %s kept in its folder only: latest/ holds the plan of %s", run["run_key"],
                 published.get("data_interval_end"))
    committed = store.committed()
    committed.remove_attempts()
    store.prune_failed_attempts(duration(cfg.publish.keep_failed_attempts))
    pruned = committed.prune_siblings(cfg.rightsizing.plan_keep_runs)
    pipeline.release(run)
    pushed = pipeline.push_latest(cfg) if newer else None
    out = {"run_key": run["run_key"], "windows": run.get("windows"), "sized": run.get("sized"),
           "first_window": run.get("first_window"), "pruned": len(pruned)}
    return {**out, "pushgateway": pushed} if pushed else out


def run_plan(data_interval_end, config_overrides: dict | None = None, params: dict | None = None) -> dict:
    """Every step for one interval end, in this process, as the DAG would run them (the lock released in the end)."""
    import os

    run = extract(f"local__{pipeline.run_key_for(data_interval_end)}", data_interval_end, params=params,
                  overrides=config_overrides, owner_pid=os.getpid())
    try:
        run = pipeline.validate(run)
        run = pipeline.build_features(run)
        return publish(size_windows(run))
    finally:
        pipeline.release(run)


def latest_summary(overrides: dict | None = None) -> str:
    """What the last scaling-plan run published, as text: when, and the first window per series.

    Raises:
        DataError: no plan was published yet under the configured data root.
    """
    from foresight_lib.runs.storage import DataRoot

    cfg = pipeline.load_run_config(overrides)
    root = DataRoot(cfg.data_root)
    manifest = root.latest_manifest(PLAN_MANIFEST)
    if manifest is None:
        raise DataError(f"no scaling plan published yet under {cfg.data_root}; run the foresight_scaling_plan "
                        "DAG first (make plan)")
    windows = root.read_latest(SCALING_PLAN)
    first = windows[windows["lead"] == "0m"]
    table = first[["metric", "entity", "request_display", "limit_display", "replicas"]]
    return "\n".join([
        f"Scaling plan of run {manifest['run_id']} (published {manifest['published_at']})",
        f"{windows['unique_id'].nunique()} series x {windows['lead'].nunique()} windows "
        f"({', '.join(sorted(windows['lead'].dropna().unique(), key=lambda t: int(t[:-1])))} ahead), "
        f"{int(windows['request'].notna().sum())} sized; the next window per series:",
        table.to_string(index=False, max_rows=40),
        "", f"Files: {root.latest_uri(SCALING_PLAN)} (and {cfg.data_root}/plans/<date>/)",
    ])


def main(argv: list[str] | None = None) -> int:
    return pipeline.cli(argv, "python -m foresight_lib.scaling_plan", __doc__.splitlines()[0],
                        "the end of the data interval (ISO 8601), where the next window starts",
                        run_plan, latest_summary)


if __name__ == "__main__":
    sys.exit(main())
