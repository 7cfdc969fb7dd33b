"""The nightly pipeline's steps, one function per DAG task.

extract → validate → build_features → train (per model and series shard) → evaluate →
publish, with rightsize (per series shard: the rightsizing plan's walks, beside training)
before publish, and ``release`` as the DAG's teardown.

Every step takes and returns small things (the run dict: run key, attempt, run id,
settings overrides, a few counts) and keeps its data in the run's attempt folder
(``RunStore(..., attempt=…)`` under ``staging/``), so a DAG passes nothing bigger than
that through XCom. The run is keyed by the end of its data interval, not by the Airflow
run id: a backfill, a catch-up and a manual re-run of the same date make one date's run
folder ``runs/<date>``, and only one of them at a time (``extract`` takes the date's
lock, ``foresight_lib.runs.lock``; a second run fails at once naming the first).

Nothing is published until ``publish``: it logs the MLflow runs, then registers the
champions, makes the attempt the date's run folder and switches ``latest/`` as one
transaction (``foresight_lib.runs.transaction``). A run that fails anywhere leaves the
previous run folder, champion aliases and published forecasts as they were. Only the
newest run with the configured models reaches ``latest/`` and the aliases (a backfill
of an older date or an ad-hoc trigger stays in its run folder and MLflow) unless its
``publish`` parameter says ``always``.

The run's identity and settings are ``foresight_lib.runs``; the source and the window it
reads are ``foresight_lib.sources.extraction``; the publish step is
``foresight_lib.publishing.publish_step``. ``run_nightly`` runs every step in this process
(tests, ``make run`` summaries); ``python -m foresight_lib.pipeline summary`` prints what
the last run published.
"""
from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from foresight_lib.config import deep_merge
from foresight_lib.errors import ConfigError, DataError, ForesightError
from foresight_lib.forecasting.metrics import criterion_of, metric_champions, pooled_leaderboard
from foresight_lib.forecasting.progress import log_peak_memory
from foresight_lib.frames import utc_timestamp
from foresight_lib.publishing.publish_step import mark_champions, publish, push_latest, recommend
from foresight_lib.redaction import redact_config
from foresight_lib.rightsizing.plan_step import rightsize, rightsize_tasks
from foresight_lib.runs import (
    FEATURE_SERIES,
    FEATURES,
    FORECASTS,
    LEADERBOARD,
    PER_SERIES,
    QUARANTINE,
    RAW,
    RECOMMENDATIONS,
    RESULT,
    SERIES,
    VALIDATED,
    VALIDATION_HTML,
    backtest_spec,
    base_models,
    config_dict,
    duration,
    json_copy,
    load_run_config,
    new_attempt,
    open_run,
    overrides_from_params,
    run_key_for,
    run_lock,
)
from foresight_lib.sources.extraction import Connection, extract_window, read_window, source_label

__all__ = ["extract", "validate", "build_features", "train_tasks", "train", "rightsize_tasks", "rightsize",
           "evaluate", "publish", "release", "run_nightly", "recommend", "push_latest", "open_run", "run_key_for",
           "load_run_config",
           "overrides_from_params", "FEATURES", "FEATURE_SERIES", "FORECASTS", "RECOMMENDATIONS", "RAW", "SERIES"]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------
# extract


def extract(run_id: str | None, data_interval_start, data_interval_end, params: dict | None = None,
            overrides: dict | None = None, connection: Connection = None, folder: str | None = None,
            owner_pid: int | None = None) -> dict:
    """Take the date's lock and read the run's window of data into a fresh attempt folder.

    Args:
        run_id: the Airflow run id (kept for MLflow tags; the folder is keyed by the date).
        data_interval_end: the end of the run's data interval; nothing at or after it is read.
        params: the DAG's trigger-form parameters (see ``overrides_from_params``).
        overrides: further settings overrides, merged over those from ``params``.
        connection: the Prometheus connection as a dict, or a function returning it (called
            only when the source is Prometheus).
        folder: the data root's folder of this kind of run (default ``runs``; the scaling
            plan's runs go to ``plans``).
        owner_pid: the process that runs every step (in-process runs), so that its lock is
            known to be dead once that process is; None for Airflow, whose tasks are processes
            of their own.

    Returns:
        The run dict every later step takes: ``run_key``, ``attempt``, ``run_id``,
        ``overrides``, the window and counts.

    Raises:
        RunLocked: another run of the same date is in progress.
        SourceError: the source or (for the nightly run) the MLflow tracking server cannot
            be reached; found here, before any training.
    """
    from foresight_lib.runs.storage import RUNS, RunStore
    from foresight_lib.runs.transaction import ad_hoc_differences

    started_at = pd.Timestamp.now(tz="UTC").isoformat()  # the MLflow parent run's start
    extra = json_copy(overrides or {})
    merged = deep_merge(overrides_from_params(params), extra)
    cfg = load_run_config(merged)
    start, end = extract_window(data_interval_end, cfg)
    run_key = run_key_for(end)
    run_id = run_id or f"local__{run_key}"
    attempt = new_attempt()
    store = RunStore(cfg.data_root, run_key, folder=folder or RUNS, attempt=attempt)
    lock = run_lock(cfg, store)
    lock.acquire(run_id, attempt, owner_pid=owner_pid)
    try:
        if store.folder == RUNS:
            from foresight_lib.tracking.mlflow_store import check_tracking_server

            check_tracking_server(cfg.mlflow.tracking_uri, timeout_s=cfg.mlflow.check_timeout_s)
        frame, series, info = read_window(cfg, start, end, connection, merged)
        store.write_frame(RAW, frame)
        store.write_frame(SERIES, series)
        run = {
            "run_key": run_key, "attempt": attempt, "run_id": run_id, "overrides": merged, "folder": store.folder,
            "data_interval_start": (utc_timestamp(data_interval_start).isoformat()
                                    if data_interval_start is not None else None),
            "data_interval_end": end.isoformat(), "window_start": start.isoformat(),
            "rows": int(len(frame)), "series": int(series["unique_id"].nunique()), "source": info,
            "ad_hoc": ad_hoc_differences(params, load_run_config(extra)), "owner_pid": owner_pid,
            "started_at": started_at,
        }
        store.write_json("run.json", redact_config({**run, "config": config_dict(cfg)}))
    except BaseException:
        lock.release(attempt)
        raise
    log.info("extracted %d rows of %d series for run %s, attempt %s (%s .. %s)", len(frame), run["series"],
             run_key, attempt, start, end)
    log_peak_memory("extract", log)
    return run


def release(run: dict | None) -> bool:
    """The DAG's teardown, however the run ended (safe to call twice).

    A publish of this run that was killed is finished or undone first
    (``transaction.recover_ended``), so that the MLflow aliases agree with ``latest/``
    again; then the date's lock is released if this run still holds it.

    Returns:
        True when the lock was released here.
    """
    if not isinstance(run, dict) or not run.get("attempt"):
        return False
    from foresight_lib.runs.storage import RUNS, RunStore
    from foresight_lib.runs.transaction import recover_ended
    from foresight_lib.tracking import model_registry

    cfg = load_run_config(run.get("overrides"))
    store = RunStore(cfg.data_root, run["run_key"], folder=run.get("folder") or RUNS, attempt=run["attempt"])
    try:
        outcome = recover_ended(store, run.get("run_id") or run["run_key"], duration(cfg.publish.lock_timeout),
                                prepare=lambda: _configure_mlflow(cfg), registry=model_registry)
        if outcome:
            log.warning("the interrupted publish of %s was %s by the release teardown", run["run_key"], outcome)
    except Exception as exc:  # noqa: BLE001 - the lock is released all the same; the next publish recovers
        log.error("could not recover the interrupted publish of %s: %s", run["run_key"], exc)
    return run_lock(cfg, store).release(run["attempt"])


def _configure_mlflow(cfg) -> None:
    from foresight_lib.tracking import mlflow_store

    mlflow_store.configure(
        tracking_uri=cfg.mlflow.tracking_uri, artifact_location=cfg.mlflow.artifact_location,
        experiment=cfg.mlflow.experiment, http_timeout_s=cfg.mlflow.http_timeout_s,
        http_max_retries=cfg.mlflow.http_max_retries,
    )


# ---------------------------------------------------------------------------
# validate, features


def validate(run: dict) -> dict:
    """Great Expectations checks; failing series go to ``quarantine`` with their reasons.

    Raises:
        ValidationFailed: more than the configured share of series failed; the HTML
            report is still written to the run folder.
    """
    from foresight_lib.errors import ValidationFailed
    from foresight_lib.quality.validation import validate_frame

    cfg, store = open_run(run)
    frame, series = store.read_frame(RAW), store.read_frame(SERIES)
    try:
        outcome = validate_frame(frame, series, cfg, data_end=run.get("data_interval_end"),
                                 source=source_label(cfg))
    except ValidationFailed as exc:
        failed = getattr(exc, "outcome", None)
        if failed is not None:
            _write_validation(store, failed)
        overlaps = (run.get("source") or {}).get("overlaps")
        if overlaps:
            raised = ValidationFailed(f"{exc}\noverlapping exports: " + "; ".join(overlaps[:3]))
            raised.outcome = failed
            raise raised from None
        raise
    _write_validation(store, outcome)
    quarantined = _count_quarantined(outcome.quarantine)
    log.info("validation: %d series kept, %d quarantined", outcome.valid["unique_id"].nunique(), quarantined)
    log_peak_memory("validate", log)
    return {**run, "valid_series": int(outcome.valid["unique_id"].nunique()), "quarantined": quarantined}


def _write_validation(store, outcome) -> None:
    if outcome.valid is not None:
        store.write_frame(VALIDATED, outcome.valid)
    if isinstance(outcome.quarantine, pd.DataFrame):
        store.write_frame(QUARANTINE, outcome.quarantine)
    store.write_bytes(VALIDATION_HTML, (outcome.html or "").encode("utf-8"))
    store.write_json("validation/summary.json", outcome.to_json())


def _count_quarantined(quarantine) -> int:
    if isinstance(quarantine, pd.DataFrame):
        return int(quarantine["unique_id"].nunique()) if "unique_id" in quarantine else len(quarantine)
    return len(quarantine or [])


def build_features(run: dict) -> dict:
    """Counters to rates, resampling to the series frequency and gap filling; the series shards.

    Returns the run dict plus ``models`` and ``shards``: what the train step maps over.
    """
    from foresight_lib.quality.features import prepare_series

    cfg, store = open_run(run)
    frame = store.read_frame(VALIDATED)
    series = store.read_frame(SERIES)
    series = series[series["unique_id"].isin(frame["unique_id"].unique())].reset_index(drop=True)
    result = prepare_series(frame, series, freq=cfg.freq, gap_limit=cfg.features.gap_limit,
                            max_filled_share=cfg.features.max_filled_share,
                            grid_tolerance=cfg.features.grid_tolerance)
    if result.frame.empty:
        raise DataError(f"no series left after the features step: {json.dumps(result.report, default=str)[:500]}")
    store.write_frame(FEATURES, result.frame)
    store.write_frame(FEATURE_SERIES, result.series)
    store.write_json("features.json", result.report)
    shards = _write_shards(cfg, store, result.frame)
    log_peak_memory("features", log)
    return {**run, "feature_series": int(result.frame["unique_id"].nunique()), "models": base_models(cfg),
            "shards": shards}


def _write_shards(cfg, store, frame: pd.DataFrame) -> int:
    """Split the series into ``train.shard_series``-sized shards, one features file each when there are several.

    Fewer, bigger shards when that many would map more than ``train.max_mapped_tasks`` tasks
    (``foresight_lib.forecasting.shards.plan_shards``). The full features file stays: the
    global model, the publish step and the plans read it.
    """
    from foresight_lib.forecasting.models import GLOBAL_MODELS
    from foresight_lib.forecasting.shards import features_name, plan_shards, split_ids
    from foresight_lib.runs.storage import RUNS

    if store.folder != RUNS:  # a scaling plan trains nothing
        return 1
    ids = frame["unique_id"]
    models = base_models(cfg)
    global_models = sum(m in GLOBAL_MODELS for m in models)  # no model class imported (torch) for the count
    plan = plan_shards(ids.nunique(), len(models) - global_models, global_models, cfg.train.shard_series,
                       cfg.train.max_mapped_tasks)
    shards = plan.shards
    if shards > 1:
        for shard, members in enumerate(split_ids(ids.unique(), shards), start=1):
            store.write_frame(features_name(shard), frame[ids.isin(members)].reset_index(drop=True))
        log.info("%d series in %d shards of at most %d (%d mapped tasks, at most %d)", ids.nunique(), shards,
                 plan.largest_shard, plan.mapped_tasks, cfg.train.max_mapped_tasks)
    return shards


# ---------------------------------------------------------------------------
# train, evaluate


def train_tasks(run: dict) -> list[dict]:
    """The keyword arguments of the train step's mapped tasks: local models × shards, the LSTM once.

    The ensemble is made in evaluate. See ``foresight_lib.forecasting.shards`` for why the
    global LSTM is one task over every series.
    """
    from foresight_lib.forecasting.shards import train_tasks as tasks

    cfg, _ = open_run(run)
    return tasks(base_models(cfg), _shards(run))


def _shards(run: dict) -> int:
    return int(run.get("shards") or 1)


def train(run: dict, model: str, shard: int | None = None, shards: int = 1,
          tasks_at_once: int | None = None) -> dict:
    """Backtest one model on one shard's series (every series when ``shard`` is None) and store its part.

    The task's worker processes and numeric threads are limited to its share of the CPUs:
    ``tasks_at_once`` train tasks (default: as many as ``train.parallel_tasks`` lets the
    DAG run side by side) share the machine.

    A shard whose series are all skipped (too short, gappy) stores an empty part that says
    why; evaluate reports it. With a single shard that is no series at all: the run fails.
    """
    from foresight_lib.forecasting.backtest import backtest_part
    from foresight_lib.forecasting.progress import ProgressLog
    from foresight_lib.forecasting.shards import (
        empty_reason,
        features_name,
        is_global,
        part_name,
        task_label,
        with_threads,
    )
    from foresight_lib.forecasting.threads import cpu_share, limit_threads

    cfg, store = open_run(run)
    models = base_models(cfg)
    label = task_label({"model": model, "shard": shard, "shards": shards})
    if model not in models:
        raise ConfigError(f"model '{model}' is not one of this run's models {models}")
    if shard is not None and (shards != _shards(run) or not 1 <= shard <= shards or is_global(model)):
        raise ConfigError(f"no train task '{label}' in run {run['run_key']}: it has {_shards(run)} shard(s), "
                          "and a global model is never sharded")
    threads = cpu_share(tasks_at_once or min(cfg.train.parallel_tasks, len(models) * _shards(run)))
    limit_threads(threads)
    spec = backtest_spec(cfg)
    spec.n_jobs = threads
    frame = store.read_frame(FEATURES if shard is None else features_name(shard))
    tuned, tuning = _tuned_params(cfg, store, frame, spec, model, threads)
    spec.model_params = with_threads({**spec.model_params, **tuned}, model, threads)
    progress = ProgressLog(label, log)
    part = backtest_part(frame, spec, models=[model], allow_empty=shard is not None, progress=progress.update,
                         on_start=progress.start)
    part.model_params, part.tuning = tuned, tuning
    store.write_bytes(part_name(model, shard), pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL))
    out = {"model": model, "shard": shard, "series": len(part.splits), "seconds": round(part.seconds, 3),
           "fallbacks": len(part.outcome.fallbacks)}
    if not part.splits:
        out["skipped"] = empty_reason(part)
        log.warning("%s: %s", label, out["skipped"])
    log.info("trained %s on %d series in %.1f s with %d thread(s) (%d fallbacks)", label, len(part.splits),
             part.seconds, threads, out["fallbacks"])
    out.update(log_peak_memory(label, log))
    return out


def _tuned_params(cfg, store, frame, spec, model: str, threads: int) -> tuple[dict, dict]:
    """``{model: params}`` tuned or reused for this run and ``{model: record}``; both empty when not tuned."""
    if not (cfg.tuning.enabled and model in cfg.tuning.models):
        return {}, {}
    from foresight_lib.forecasting.shards import is_global
    from foresight_lib.forecasting.tuning import ParamStore, params_for_run

    fixed = {"n_threads": threads} if is_global(model) else None
    params, record = params_for_run(frame, spec, model, cfg.tuning, ParamStore(store),
                                    base_params=cfg.model_params.get(model, {}), fixed_params=fixed)
    return {model: params}, {model: record}


def evaluate(run: dict, trained: Sequence[dict] | None = None) -> dict:
    """Add the ensemble, score and rank the models' parts, shard by shard; write the results.

    Each shard's result, fitted models included, is stored on its own and the run's
    scores and rankings are made from them (``foresight_lib.forecasting.shard_results``),
    so the task holds one shard's models at a time. Shards with no series left are listed
    in the result (``skipped_shards``) and in ``backtest_report.json``.

    The forecasts to publish are clipped to each metric's physical range (no negative lower
    bound for usage); a non-finite one is an error, never published.
    """
    from foresight_lib.forecasting.shard_results import evaluate_in_shards
    from foresight_lib.quality.validation import clip_to_physical_range

    cfg, store = open_run(run)
    spec = backtest_spec(cfg)
    series = store.read_frame(FEATURE_SERIES)
    metric_of = dict(zip(series["unique_id"].astype(str), series["metric"].astype(str), strict=True))
    result, skipped_shards = evaluate_in_shards(store, base_models(cfg), _shards(run), run["run_key"], spec,
                                                metric_of)
    store.write_frame(LEADERBOARD, pooled_leaderboard(result.leaderboard, series["metric"].nunique()))
    store.write_frame(PER_SERIES, result.per_series)
    forecasts = clip_to_physical_range(result.future_forecasts, series, cfg)
    store.write_frame(FORECASTS, mark_champions(forecasts, metric_champions(result, series), series))
    store.write_json("backtest_report.json",
                     {**result.report(), "shards": _shards(run), "skipped_shards": skipped_shards})
    store.write_bytes(RESULT, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    criterion = criterion_of(result.spec)
    board = result.leaderboard.groupby("model", sort=False)["mase"].mean()
    scores = criterion.scores(result.leaderboard)
    log.info("champion %s; %s per model: %s", result.champion, criterion.label, scores.round(4).to_dict())
    log_peak_memory("evaluate", log)
    return {**run, "champion": result.champion, "mean_mase": {k: round(float(v), 6) for k, v in board.items()},
            "criterion": criterion.label, "score": {k: round(float(v), 6) for k, v in scores.items()},
            "skipped_shards": skipped_shards}


# ---------------------------------------------------------------------------
# Everything in this process


def run_nightly(logical_date, config_overrides: dict | None = None, params: dict | None = None) -> dict:
    """Every step for one date, in this process, as the DAG would run them (the lock released in the end).

    The train tasks (every model × shard) run one after another, each with every CPU.
    """
    import os

    run = extract(f"local__{run_key_for(logical_date)}", None, logical_date, params=params,
                  overrides=config_overrides, owner_pid=os.getpid())
    try:
        run = validate(run)
        run = build_features(run)
        trained = [train(run, **task, tasks_at_once=1) for task in train_tasks(run)]
        for task in rightsize_tasks(run):
            rightsize(run, **task)
        run = evaluate(run, trained)
        return publish(run)
    finally:
        release(run)


def latest_summary(overrides: dict | None = None) -> dict:
    """What the last successful run published: its ``summary.json``.

    Raises:
        DataError: nothing was published yet under the configured data root.
    """
    from foresight_lib.runs.storage import DataRoot

    cfg = load_run_config(overrides)
    root = DataRoot(cfg.data_root)
    summary = root.read_latest_json("summary.json") if root.latest_manifest() is not None else None
    if summary is None:
        raise DataError(f"nothing published yet under {cfg.data_root}; run the nightly DAG first (make run)")
    return summary


def format_summary(summary: dict) -> str:
    """The leaderboard, the champion per metric and where to look, as text."""
    board = pd.DataFrame(summary["leaderboard"])
    table = board.pivot_table(index="model", columns="horizon", values="mase", sort=False)
    lines = [
        f"Run {summary['run_key']} (Airflow run {summary.get('run_id')})",
        "", "Leaderboard (MASE per horizon, lower is better):", table.round(3).to_string(), "",
        f"Champion over all series: {summary['champion']}",
    ]
    fresh = summary.get("data_freshness") or {}
    if fresh.get("last_timestamp"):
        lines.append(f"Data: last point {fresh['last_timestamp']}, {fresh.get('data_age_s'):g} s before the data "
                     f"interval end {fresh.get('data_interval_end')}; {fresh.get('series_stale', 0)} stale series "
                     "quarantined")
    if summary.get("registrations"):
        lines.append("Registered per metric:")
    for metric, reg in (summary.get("registrations") or {}).items():
        if isinstance(reg, dict) and "registered_model" in reg:
            lines.append(f"  {reg['registered_model']} v{reg['version']} = {reg['model']} -> @{reg['alias']} "
                         f"({reg.get('reason') or ''})")
        else:
            lines.append(f"  {metric}: {reg}")
    lines += [
        "", f"Run folder:   {summary['run_folder']}",
        f"MLflow:       {summary['mlflow_tracking_uri']} (parent run {summary['mlflow_parent_run']})",
        f"MLflow UI:    .venv/bin/mlflow ui --backend-store-uri {summary['mlflow_tracking_uri']}",
    ]
    return "\n".join(lines)


def cli(argv: list[str] | None, prog: str, description: str, date_help: str,
        run: Callable[[str, dict], Any], summary: Callable[[dict | None], str]) -> int:
    """``summary`` and ``run DATE [--set JSON ...]``: the in-process command of a kind of run.

    ``run(date, overrides)`` runs every step; ``summary(overrides)`` says what was published.
    """
    settings = argparse.ArgumentParser(add_help=False)
    settings.add_argument("--set", action="append", default=[], metavar="JSON",
                          help="settings overrides as a JSON object, e.g. '{\"history_days\": 3}' (repeatable)")
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("summary", parents=[settings], help="print what the last successful run published")
    run_p = sub.add_parser("run", parents=[settings],
                           help="run every step for one date in this process, then print the summary")
    run_p.add_argument("date", help=date_help)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        overrides: dict = {}
        for text in args.set:
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--set {text!r} is not a JSON object: {exc}") from None
            if not isinstance(loaded, dict):
                raise ConfigError(f"--set {text!r} is not a JSON object of settings, e.g. '{{\"history_days\": 3}}'")
            overrides = deep_merge(overrides, loaded)
        if args.command == "run":
            run(args.date, overrides)
        print(summary(overrides or None))
    except ForesightError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli(argv, "python -m foresight_lib.pipeline", __doc__.splitlines()[0], "the logical date (ISO 8601)",
               run_nightly, lambda overrides: format_summary(latest_summary(overrides)))


if __name__ == "__main__":
    sys.exit(main())
