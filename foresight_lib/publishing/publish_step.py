"""The nightly's publish step: MLflow runs, champions, the run folder and ``latest/`` as one transaction.

The transaction itself (journal, rollback, who may publish) is ``foresight_lib.runs.transaction``;
this is the step that feeds it: the rightsizing plan, the latest actuals, the MLflow parent
and child runs, and one registered champion per metric.
"""
from __future__ import annotations

import json
import logging
import pickle
import re
from typing import Any

import pandas as pd

from foresight_lib.errors import ForesightError, SourceError
from foresight_lib.forecasting.progress import log_peak_memory
from foresight_lib.orchestration.dags import NIGHTLY_DAG
from foresight_lib.redaction import redact_config
from foresight_lib.runs import (
    ACTUAL_TAIL,
    ACTUALS,
    FEATURE_SERIES,
    FEATURES,
    FORECASTS,
    LEADERBOARD,
    PER_SERIES,
    QUARANTINE,
    RECOMMENDATIONS,
    RESULT,
    VALIDATION_HTML,
    config_dict,
    duration,
    open_run,
    run_lock,
)

log = logging.getLogger(__name__)


def metric_leaderboard_records(result, series: pd.DataFrame) -> list[dict]:
    """The per-metric leaderboards as rows ``metric, model, horizon, mase, ...`` (``summary.json``)."""
    from foresight_lib.forecasting.metrics import metric_leaderboards

    frames = [board.assign(metric=metric) for metric, board in metric_leaderboards(result, series).items()]
    if not frames:
        return []
    board = pd.concat(frames, ignore_index=True)
    return _jsonable(board[["metric", *[c for c in board.columns if c != "metric"]]].to_dict(orient="records"))


def mark_champions(forecasts: pd.DataFrame, champions: dict[str, str], series: pd.DataFrame) -> pd.DataFrame:
    """The forecasts with a ``champion`` column: True on the rows of each metric's champion model."""
    from foresight_lib.frames import split_unique_id

    by_id = dict(zip(series["unique_id"].astype(str), series["metric"].astype(str), strict=False))
    metric = forecasts["unique_id"].astype(str).map(lambda uid: by_id.get(uid) or split_unique_id(uid)[0])
    return forecasts.assign(champion=forecasts["model"].to_numpy() == metric.map(champions).to_numpy())


def _metric_units(series: pd.DataFrame) -> dict[str, str]:
    """The unit of each metric, from the series table (absent where it has none)."""
    if "unit" not in series:
        return {}
    known = series.dropna(subset=["unit"]).drop_duplicates("metric")
    return dict(zip(known["metric"].astype(str), known["unit"].astype(str), strict=True))


def _metric_of(result, series: pd.DataFrame) -> dict[str, str]:
    """unique_id -> metric, for every series of the backtest."""
    from foresight_lib.frames import split_unique_id

    by_id = dict(zip(series["unique_id"].astype(str), series["metric"].astype(str), strict=False))
    return {uid: by_id.get(uid) or split_unique_id(uid)[0] for uid in result.series}


def publish(run: dict) -> dict:
    """MLflow runs, then champions, the run folder and ``latest/`` as one transaction.

    The MLflow parent and child runs are logged first (a failure there changes nothing
    published). Then, holding the data root's publish lock: an interrupted earlier
    publish is finished or undone, ``publishing.decide`` says whether this run may move
    ``latest/`` and the aliases, and ``publishing.run_transaction`` registers the
    champions, makes the attempt the date's run folder and switches ``latest/``, or
    rolls all of it back. Only then are the date's earlier MLflow runs retired (never one
    behind a registered version) and its failed attempts removed.
    """
    from foresight_lib.forecasting.metrics import criterion_of, metric_champions, pooled_leaderboard
    from foresight_lib.forecasting.shard_results import champion_bundles
    from foresight_lib.runs import transaction as publishing
    from foresight_lib.tracking import mlflow_runs, model_registry, registry
    from foresight_lib.tracking.mlflow_store import check_tracking_server, configure

    cfg, store = open_run(run)
    # The store may have gone away since extract: say so at once, naming it, before anything is written.
    check_tracking_server(cfg.mlflow.tracking_uri, timeout_s=cfg.mlflow.check_timeout_s)
    result = pickle.loads(store.read_bytes(RESULT))
    features = store.read_frame(FEATURES)
    feature_series = store.read_frame(FEATURE_SERIES)
    _recommend(cfg, store, run, features, feature_series)
    store.write_frame(ACTUALS, latest_actuals(features))
    configure(
        tracking_uri=cfg.mlflow.tracking_uri, artifact_location=cfg.mlflow.artifact_location,
        experiment=cfg.mlflow.experiment, http_timeout_s=cfg.mlflow.http_timeout_s,
        http_max_retries=cfg.mlflow.http_max_retries,
    )
    artifacts = {
        name: store.uri(name)
        for name in (LEADERBOARD, PER_SERIES, FORECASTS, RECOMMENDATIONS, QUARANTINE, "backtest_report.json",
                     "run.json")
        if store.exists(name)
    }
    validation_html = store.read_bytes(VALIDATION_HTML).decode("utf-8") if store.exists(VALIDATION_HTML) else None
    champions = metric_champions(result, feature_series)
    kind = mlflow_runs.run_kind(run.get("run_id") or run["run_key"], bool(run.get("ad_hoc")))
    parent = mlflow_runs.log_nightly(run["run_key"], result, _param_safe(config_dict(cfg)), artifacts, validation_html,
                                     logical_date=run.get("data_interval_end"), started_at=run.get("started_at"),
                                     kind=kind, series=feature_series)
    units = _metric_units(feature_series)
    prefix = _name_prefix(cfg)
    pooled = pooled_leaderboard(result.leaderboard, feature_series["metric"].nunique())
    summary = {
        "run_key": run["run_key"], "run_id": run.get("run_id"), "attempt": run.get("attempt"),
        "data_interval_end": run.get("data_interval_end"), "champion": result.champion,
        "criterion": {**criterion_of(result.spec).to_setting(), "label": criterion_of(result.spec).label},
        "leaderboard": _jsonable(pooled.to_dict(orient="records")),
        "metric_leaderboard": metric_leaderboard_records(result, feature_series),
        "mlflow_parent_run": parent["parent_run_id"], "mlflow_experiment_id": parent.get("experiment_id"),
        "mlflow_tracking_uri": redact_config(cfg.mlflow.tracking_uri),
        "run_folder": store.committed().uri(""), "series": len(result.series), "metric_units": units,
        "forecast_rows": int(len(result.future_forecasts)),
        "data_freshness": data_freshness(store),
        "ensemble_members": result.report()["ensemble_members"],
    }

    def register(tx) -> dict:
        registrations = {}
        bundles = champion_bundles(store, result, champions, features, _metric_of(result, feature_series), units)
        for metric, bundle in bundles if summary["published"] else ():
            registration = registry.register_champion(
                bundle, metric, name_prefix=prefix, run_key=run["run_key"], parent_run_id=parent["parent_run_id"],
            )
            tx.registered(registration["registered_model"], registration["version"])
            registrations[metric] = _jsonable(registration)
        summary["registrations"] = registrations
        summary["champion_versions"] = registry.champion_versions(list(champions), prefix)
        store.write_json("summary.json", summary)
        return registrations

    lock, token = publishing.publish_lock(store, duration(cfg.publish.lock_timeout), duration(cfg.publish.wait),
                                          run.get("run_id") or run["run_key"])
    try:
        publishing.recover(store, registry=model_registry)
        publishing.remove_temp_files(store)
        go, why = publishing.decide(cfg.publish.latest, run["data_interval_end"], run.get("ad_hoc") or [], store)
        summary.update(published=go, publish_reason=why)
        aliases = registry.snapshot_aliases(list(champions), prefix) if go else {}
        names = [FORECASTS, LEADERBOARD, RECOMMENDATIONS, ACTUALS, "summary.json"] if go else []
        registrations = publishing.run_transaction(store, aliases, register, names,
                                                   {"data_interval_end": run["data_interval_end"]},
                                                   source_run_id=parent["parent_run_id"], name_prefix=prefix,
                                                   still_holding=lambda: lock.check(token),
                                                   registry=model_registry)
    finally:
        lock.release(token)
    try:
        mlflow_runs.mark_published(parent["parent_run_id"], go, why)
    except Exception as exc:  # noqa: BLE001 - what was published stands; the tag is a label
        log.warning("could not tag MLflow run %s as %s: %s", parent["parent_run_id"],
                    "published" if go else "not published", exc)
    _after_publish(cfg, run, store, parent["parent_run_id"])
    pushed = push_latest(cfg) if go else None
    log.info("published run %s (%s): champion %s, %s", run["run_key"], why, result.champion, registrations)
    log_peak_memory("publish", log)
    out = {k: summary[k] for k in ("run_key", "champion", "published", "publish_reason", "registrations",
                                   "mlflow_parent_run", "forecast_rows")}
    return {**out, "pushgateway": pushed} if pushed else out


def _after_publish(cfg, run: dict, store, parent_run_id: str | None) -> None:
    """Tidy up once the publish has succeeded: earlier MLflow runs, failed attempts, the date's lock."""
    if parent_run_id:
        from foresight_lib.tracking import mlflow_runs

        try:
            mlflow_runs.retire_earlier_runs(run["run_key"], parent_run_id)
        except Exception as exc:  # noqa: BLE001 - the publish stands; the next run retires them
            log.warning("could not retire the earlier MLflow runs of %s: %s", run["run_key"], exc)
    removed = store.committed().remove_attempts()
    removed += store.prune_failed_attempts(duration(cfg.publish.keep_failed_attempts))
    if removed:
        log.info("removed %d earlier attempt folder(s): %s", len(removed), removed[:10])
    run_lock(cfg, store).release(run["attempt"])


def latest_actuals(features: pd.DataFrame) -> pd.DataFrame:
    """The last day of actuals per series, published with the forecasts (no need to read the run folder)."""
    frame = features[["unique_id", "ds", "y"]]
    last = frame.groupby("unique_id", sort=False)["ds"].transform("max")
    return frame[frame["ds"] > last - ACTUAL_TAIL].reset_index(drop=True)


_PARAM_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")


FRESHNESS_KEYS = ("data_interval_end", "last_timestamp", "data_age_s", "series_age_s", "series_stale",
                  "stale_share", "max_staleness", "max_stale_share", "duplicates_dropped", "grid_tolerance")


def data_freshness(store) -> dict:
    """How old the run's data was at its data interval end, from its validation summary (empty if unknown)."""
    try:
        summary = store.read_json("validation/summary.json").get("summary") or {}
    except (ForesightError, OSError, ValueError, AttributeError):
        return {}
    return {key: summary[key] for key in FRESHNESS_KEYS if key in summary}


def _param_safe(value: Any) -> Any:
    """Settings with keys MLflow accepts as parameter names (``*cpu*`` -> ``_cpu_``).

    The exact settings are kept in the run folder's ``run.json``, logged beside them.
    """
    if isinstance(value, dict):
        return {_PARAM_UNSAFE.sub("_", str(k)): _param_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_param_safe(v) for v in value]
    return value


def _name_prefix(cfg) -> str:
    """The registry's name prefix: ``foresight-`` in the config names ``foresight-<metric>``."""
    return cfg.mlflow.model_name_prefix.rstrip("-")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: getattr(o, "__dict__", str(o))))


def recommend(cfg, features: pd.DataFrame, series: pd.DataFrame, daily: bool = True) -> pd.DataFrame:
    """The configured rightsizing plan (``foresight_lib.rightsizing.plan``) on a features frame."""
    from foresight_lib.rightsizing import plan
    from foresight_lib.rightsizing.plan_step import plan_settings

    return plan.recommend(features, series, replica_capacity=cfg.rightsizing.replica_capacity,
                          **plan_settings(cfg, daily=daily))


def _recommend(cfg, store, run: dict, features: pd.DataFrame, series: pd.DataFrame) -> pd.DataFrame:
    """Rightsizing: the next day's sizes and the next window's plan, from the rightsize tasks' walks."""
    from foresight_lib.rightsizing.plan_step import recommendations

    out = recommendations(cfg, store, run, features, series)
    store.write_frame(RECOMMENDATIONS, out)
    return out


def push_latest(cfg) -> dict | None:
    """Push what was just published to the Pushgateway, when one is configured.

    The push comes after the publish, so a Pushgateway that is down does not undo it: it
    is logged and reported in the summary, and the next publish pushes again. The nightly
    run and the scaling plan push the same snapshot under one job, so each push replaces
    the whole group.
    """
    url = cfg.publish.pushgateway_url
    if not url:
        return None
    from foresight_lib.publishing import pushgateway

    try:
        samples = pushgateway.push_latest(url, cfg.data_root, job=NIGHTLY_DAG)
    except SourceError as exc:
        log.error("%s", exc)
        return {"url": url, "pushed": False, "error": str(exc)}
    return {"url": url, "pushed": True, "samples": samples}


