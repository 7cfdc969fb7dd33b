"""MLflow runs: one parent run per nightly run, a child per model.

- ``log_nightly`` logs a parent run per DAG run (tag ``foresight.run_id``), named by its
  time and kind (``2024-03-15 02:00 nightly``, ``… backfill``, ``… ad hoc``; tag
  ``foresight.run_kind``), timed from the DAG run's start, with the leaderboard (a plot
  per resource metric), report, config and validation report, and a nested child run
  per model with its params, per-horizon metrics (also as ``mase_by_horizon`` and
  ``wql_by_horizon``, one point per horizon in minutes, so MLflow draws each model's MASE
  or weighted quantile loss against the horizon on one chart) and a plot of forecasts
  against actuals. ``mark_published`` then tags whether the run was published
  (``foresight.published``) and says so in its name. The experiment is marked a
  model-training one (``mlflow.experimentKind``), so that the MLflow UI opens it on its
  runs, not on traces. Scale-free metrics (MASE, sMAPE, wQL, coverage) are pooled over
  every series (``mase_15m``, ``wql_15m``, ``coverage_80_30m``); those in the data's unit
  (MAE, RMSE, interval width) are per resource metric only, never mixing cores with
  bytes (``container_cpu_usage_cores/mae_15m``; the MLflow UI groups charts by that prefix).
  It deletes nothing: a re-run's earlier runs stay until its
  publish has fully succeeded, then ``retire_earlier_runs`` deletes them, except a run a
  registered model version was logged in (a champion's), which is kept and tagged.
- The store (``configure``, ``check_tracking_server``) lives in
  ``foresight_lib.tracking.mlflow_store``, the registry (``register_champion``, ``load_champion``,
  alias snapshot and rollback) in ``foresight_lib.tracking.registry``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
from mlflow.entities import Metric, Param, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from foresight_lib.errors import ConfigError, DataError
from foresight_lib.forecasting.backtest import TOP_MODELS, BacktestResult, BacktestSpec, finish_backtest
from foresight_lib.forecasting.metrics import (
    IN_DATA_UNIT,
    criterion_of,
    metric_champions,
    metric_leaderboards,
    metric_of_rows,
)
from foresight_lib.forecasting.models import ENSEMBLE
from foresight_lib.forecasting.plots import PLOT_SERIES, pick_series, plot_forecasts, plot_leaderboard
from foresight_lib.frames import split_unique_id
from foresight_lib.scratch import scratch_dir
from foresight_lib.tracking.mlflow_store import mlflow_client, mlflow_name, quiet_mlflow, resolve_experiment_id
from foresight_lib.tracking.registry import METRIC_TAG, MODEL_TAG, source_versions

log = logging.getLogger(__name__)

RUN_KEY_TAG = "foresight.run_id"
LOGICAL_DATE_TAG = "foresight.logical_date"
SUPERSEDED_TAG = "foresight.superseded_by"
"""On an earlier run kept by ``retire_earlier_runs``: the parent run that replaced it."""
REGISTERED_TAG = "foresight.registered_versions"
"""On such a run: the registered versions that keep it (``foresight-cpu/3,…``)."""
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"
"""The run's description in the MLflow UI."""
POOLED_METRICS = ("smape", "mase", "wql", "coverage_80", "coverage_95")
"""Scale-free: meaningful as a mean over every series, whatever their units."""
MAX_PARAM_CHARS = 500
RUN_KIND_TAG = "foresight.run_kind"
PUBLISHED_TAG = "foresight.published"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
"""MLflow 3's experiment kind for model training (runs, metrics, charts) rather than GenAI (traces)."""
HORIZON_CURVE = "mase_by_horizon"
"""A child's MASE logged once per horizon, at the horizon's length in minutes as the step."""
HORIZON_CURVES = {"mase": HORIZON_CURVE, "wql": "wql_by_horizon"}
"""Leaderboard column -> its curve over the horizons (``wql_by_horizon``: the weighted quantile loss)."""
_DATE_START = re.compile(r"^\d{4}-\d{2}-\d{2}")


# ---------------------------------------------------------------------------
# Nightly runs


def log_nightly(
    run_key: str, result_or_parts: BacktestResult | Sequence, config_dict: dict | None = None,
    artifacts: dict[str, str | Path] | None = None, validation_html: str | None = None, *,
    logical_date: str | None = None, metric: str | None = None, spec: BacktestSpec | None = None,
    experiment_id: str | None = None, plot_series: int = PLOT_SERIES, kind: str | None = None,
    started_at: str | None = None, series: pd.DataFrame | None = None,
) -> dict:
    """Log one nightly run: a parent run and a nested child run per model.

    Earlier runs of the same ``run_key`` are left alone: the publish calls
    ``retire_earlier_runs`` once it has fully succeeded, so that a failed or killed re-run
    never deletes the run behind the current champion.

    Args:
        run_key: the DAG run's key (Airflow run id or date key); tag ``foresight.run_id``.
        result_or_parts: a ``BacktestResult``, or the ``BacktestPart``s of one backtest
            (then ``spec`` is required).
        config_dict: the run's settings, logged as params (``config.*``) and ``config.json``.
        artifacts: name -> local path (file or folder) or URI, logged on the parent;
            remote URIs (``s3://``) are listed in ``links.json``.
        validation_html: the validation report's HTML, or a path to it.
        logical_date: the run's logical date (tag ``foresight.logical_date``).
        metric: resource metric(s) of the run; default: those in the series ids.
        kind: ``nightly``, ``backfill`` or ``ad hoc`` (:func:`run_kind`); default read from ``run_key``.
        started_at: when the DAG run started (ISO 8601): the parent run's start, so that its
            duration is the run's, not the logging's.
        series: the series table (``unique_id, metric``) that maps series to metrics for
            the per-metric champions and scores (default: the metric in each series id).

    Returns:
        ``{"parent_run_id": …, "child_run_ids": {model: run_id}, "experiment_id": …}``.
    """
    if "'" in run_key or not run_key.strip():
        raise ConfigError(f"run key {run_key!r} must be non-empty and free of quotes")
    result = _as_result(result_or_parts, spec)
    with quiet_mlflow():
        return _log_nightly(run_key, result, config_dict, artifacts, validation_html, logical_date, metric,
                            experiment_id, plot_series, kind or run_kind(run_key), started_at, series)


def _log_nightly(run_key: str, result: BacktestResult, config_dict: dict | None, artifacts: dict | None,
                 validation_html: str | None, logical_date: str | None, metric: str | None,
                 experiment_id: str | None, plot_series: int, kind: str, started_at: str | None,
                 series: pd.DataFrame | None = None) -> dict:
    client = mlflow_client()
    exp_id = resolve_experiment_id(experiment_id)
    _mark_model_training(client, exp_id)
    metric = metric or ",".join(sorted({split_unique_id(uid)[0] for uid in result.series}))
    base_tags = {RUN_KEY_TAG: run_key, METRIC_TAG: metric}
    if logical_date:
        base_tags[LOGICAL_DATE_TAG] = str(logical_date)
    board = result.leaderboard
    models = list(dict.fromkeys(board["model"])) or list(result.spec.models)
    champions = metric_champions(result, series)
    tags = {**base_tags, "foresight.champion": result.champion, NOTE_TAG: _note(result, champions),
            RUN_KIND_TAG: kind, "foresight.champion_criterion": criterion_of(result.spec).label,
            **{f"foresight.champion.{metric_key(m)}": c for m, c in champions.items()},
            **{f"{METRIC_TAG}.{metric_key(m)}": m for m in champions}}
    parent = client.create_run(exp_id, run_name=run_name(run_key, logical_date, kind), tags=tags,
                               start_time=_millis(started_at))
    parent_id = parent.info.run_id
    children: dict[str, str] = {}
    try:
        with scratch_dir("mlflow") as tmp:
            _log_parent(client, parent_id, result, champions, config_dict or {}, artifacts or {}, validation_html,
                        Path(tmp), series)
            for model in models:
                children[model] = _log_child(client, exp_id, parent_id, base_tags, result, model,
                                             Path(tmp) / model, plot_series, series)
    except BaseException:
        for run_id in [*children.values(), parent_id]:
            client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(parent_id, "FINISHED")
    log.info("logged MLflow parent run %s with %d child run(s) for %s", parent_id, len(children), run_key)
    return {"parent_run_id": parent_id, "child_run_ids": children, "experiment_id": exp_id}


def run_kind(run_id: str | None, ad_hoc: bool = False) -> str:
    """What a DAG run is, from its Airflow run id: ``nightly`` (scheduled), ``backfill`` or ``ad hoc``.

    A run triggered by hand (``manual__…``) or with settings of its own (``ad_hoc``) is ad
    hoc; a run key that is not an Airflow run id (``2024-03-15T020000Z``) counts as nightly.
    """
    text = str(run_id or "")
    if text.startswith("backfill__"):
        return "backfill"
    if ad_hoc or (("__" in text) and not text.startswith("scheduled__")):
        return "ad hoc"
    return "nightly"


def run_name(run_key: str, logical_date: str | None = None, kind: str | None = None) -> str:
    """The parent run's name, time first so the MLflow run list reads by night: ``2024-03-15 02:00 nightly``.

    The time is the logical date's (UTC), else one read from the run key
    (``scheduled__2024-03-15T02:00:00+00:00``, ``2024-03-15T020000Z``), else the key itself;
    the kind (:func:`run_kind`) is read from the run key unless given.
    """
    kind = kind or run_kind(run_key)
    for text in (logical_date, run_key.rpartition("__")[2]):
        if not text or not _DATE_START.match(str(text)):
            continue
        try:
            stamp = pd.Timestamp(str(text))
        except (TypeError, ValueError):
            continue
        if not pd.isna(stamp):
            stamp = stamp.tz_convert("UTC") if stamp.tzinfo else stamp
            return f"{stamp:%Y-%m-%d %H:%M} {kind}"
    return f"{run_key} {kind}"


def mark_published(parent_run_id: str, published: bool, reason: str = "") -> None:
    """Tag the parent run with whether its run was published, and say so in its name (``… nightly, published``)."""
    with quiet_mlflow():
        client = mlflow_client()
        client.set_tag(parent_run_id, PUBLISHED_TAG, str(bool(published)).lower())
        if reason:
            client.set_tag(parent_run_id, "foresight.publish_reason", reason[:5000])
        name = client.get_run(parent_run_id).info.run_name or ""
        if published and not name.endswith(", published"):
            client.update_run(parent_run_id, name=f"{name}, published")


def _mark_model_training(client: MlflowClient, experiment_id: str) -> None:
    """Mark the experiment a model-training one (MLflow's UI then opens on its runs), unless it is marked already."""
    try:
        tags = client.get_experiment(experiment_id).tags or {}
        if EXPERIMENT_KIND_TAG not in tags:
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    except MlflowException as exc:  # a view, not the data: the runs are logged all the same
        log.warning("cannot mark MLflow experiment %s as model training: %s", experiment_id, exc)


def _millis(iso: str | None) -> int | None:
    if not iso:
        return None
    try:
        stamp = pd.Timestamp(iso)
    except (TypeError, ValueError):
        return None
    if pd.isna(stamp):
        return None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    return int(stamp.timestamp() * 1000)


metric_key = mlflow_name
"""A resource metric's name as an MLflow metric/tag key prefix: ``mlflow_name``, the one mapping."""


def _per_metric_board(result: BacktestResult, model: str | None = None,
                      series: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """metric -> leaderboard over that metric's series (of ``model`` only, when given)."""
    boards = metric_leaderboards(result, series)
    if model is not None:
        boards = {m: b[b["model"] == model] for m, b in boards.items()}
        boards = {m: b for m, b in boards.items() if not b.empty}
    return boards


def _in_data_unit(board: pd.DataFrame) -> list[str]:
    """The leaderboard's columns in the data's unit: logged per metric only (``<metric>/mae_5m``), never pooled."""
    return [c for c in board.columns if str(c).startswith(IN_DATA_UNIT)]


def _horizon_metrics(board: pd.DataFrame, columns: Sequence[str], prefix: str = "") -> dict[str, float]:
    """``<prefix><column>_<horizon>`` for each leaderboard row and column present."""
    out = {}
    for row in board.to_dict(orient="records"):
        for col in columns:
            if col in row:
                out[f"{prefix}{col}_{row['horizon']}"] = row[col]
    return out


def _mean_wql(board: pd.DataFrame) -> pd.Series:
    """model -> mean weighted quantile loss over the board's horizons (none for a board without ``wql``)."""
    if "wql" not in board or board.empty:
        return pd.Series(dtype="float64")
    return board.groupby("model", sort=False)["wql"].mean()


def _note(result: BacktestResult, champions: dict[str, str]) -> str:
    """The parent run's description: what ran and who won, per metric, in MLflow's markdown."""
    criterion = criterion_of(result.spec)
    scores = criterion.scores(result.leaderboard)
    what = criterion.description
    lines = [f"Nightly backtest of {len(result.series)} series, models {', '.join(result.spec.models)}, "
             f"horizons {', '.join(result.spec.horizons)}.", "",
             f"Overall champion: **{result.champion}** ({what} {scores.get(result.champion, float('nan')):.3f}).",
             "", "| metric | champion |", "|---|---|"]
    lines += [f"| {metric} | {model} |" for metric, model in champions.items()]
    lines += ["", "MAE, RMSE and interval widths are in each metric's unit, so they are logged per metric "
              "(`<metric>/mae_<horizon>`); MASE, sMAPE, wQL (weighted quantile loss) and coverage are scale-free "
              "and pooled."]
    return "\n".join(lines)


def _as_result(result_or_parts, spec: BacktestSpec | None) -> BacktestResult:
    if isinstance(result_or_parts, BacktestResult):
        return result_or_parts
    parts = list(result_or_parts)
    if not parts:
        raise DataError("nothing to log: no backtest result and no backtest parts")
    if spec is None:
        raise ConfigError("logging backtest parts needs the BacktestSpec they ran with (spec=…)")
    return finish_backtest(parts, spec)


def _runs_of(client: MlflowClient, experiment_id: str, run_key: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'",
            run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def retire_earlier_runs(run_key: str, keep_parent_run_id: str, experiment_id: str | None = None) -> dict:
    """Delete the earlier runs of ``run_key`` once its publish has fully succeeded.

    Deletes every parent run of ``run_key`` but ``keep_parent_run_id``, with its child
    runs, except a parent that is the source of a registered model version (the run a
    champion or challenger was logged in, whatever its name): that run and its children
    are kept, tagged ``foresight.superseded_by=<keep_parent_run_id>`` and
    ``foresight.registered_versions``, so that ``models:/…@champion`` never points at a
    deleted run. Runs are soft-deleted (``mlflow gc`` purges them).

    Args:
        run_key: the DAG run's key (tag ``foresight.run_id``).
        keep_parent_run_id: the parent run of the publish that succeeded.
        experiment_id: default: the configured experiment.

    Returns:
        ``{"deleted": [run ids], "kept": {run id: ["<model>/<version>", …]}}``.

    Raises:
        ConfigError: ``keep_parent_run_id`` is not a parent run of ``run_key``.
        RegistryError: the registry cannot be searched (then nothing is deleted).
    """
    client = mlflow_client()
    exp_id = resolve_experiment_id(experiment_id)
    runs = _runs_of(client, exp_id, run_key)
    parents = {r.info.run_id for r in runs if PARENT_TAG not in r.data.tags}
    if keep_parent_run_id not in parents:
        raise ConfigError(
            f"MLflow run {keep_parent_run_id} is not an active parent run of run key {run_key} in experiment "
            f"{exp_id}; pass the parent_run_id that log_nightly returned for this run key"
        )
    earlier = parents - {keep_parent_run_id}
    if not earlier:
        return {"deleted": [], "kept": {}}
    sources = source_versions(earlier)
    children: dict[str, list[str]] = {}
    for run in runs:
        parent = run.data.tags.get(PARENT_TAG)
        if parent in earlier:
            children.setdefault(parent, []).append(run.info.run_id)
    deleted: list[str] = []
    kept: dict[str, list[str]] = {}
    for parent in sorted(earlier):
        family = [*children.get(parent, []), parent]
        if parent in sources:
            versions = [f"{name}/{number}" for name, number in sorted(sources[parent])]
            for run_id in family:
                client.set_tag(run_id, SUPERSEDED_TAG, keep_parent_run_id)
            client.set_tag(parent, REGISTERED_TAG, ",".join(versions))
            kept[parent] = versions
            log.info("kept earlier MLflow run %s of run key %s: registered versions %s were logged in it",
                     parent, run_key, versions)
            continue
        for run_id in family:
            try:
                client.delete_run(run_id)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                continue
            deleted.append(run_id)
    log.info("retired earlier MLflow runs of run key %s: %d deleted, %d parent(s) kept for their registered "
             "versions", run_key, len(deleted), len(kept))
    return {"deleted": deleted, "kept": kept}


def _log_parent(client: MlflowClient, run_id: str, result: BacktestResult, champions: dict[str, str], config: dict,
                artifacts: dict, validation_html: str | None, tmp: Path, series: pd.DataFrame | None = None) -> None:
    spec = result.spec
    board = result.leaderboard
    criterion = criterion_of(spec)
    means = board.groupby("model", sort=False)["mase"].mean()
    scores = means if criterion.is_default else criterion.scores(board)
    params = {**_protocol_params(result), **{f"config.{k}": v for k, v in _flatten(config).items()},
              "champion": result.champion, **{f"champion.{metric_key(m)}": c for m, c in champions.items()},
              "champion.criterion": criterion.label}
    metrics = {
        "series": len(result.series), "skipped_series": len(result.skipped), "fallbacks": len(result.fallbacks),
        "seconds": result.seconds,
        **{f"mean_mase_{m}": v for m, v in means.items()},
        **{f"mean_wql_{m}": v for m, v in _mean_wql(board).items()},
    }
    if not criterion.is_default:
        metrics.update({f"score_{m}": v for m, v in scores.items()})
    if result.champion in scores:
        metrics["champion_mean_mase"] = means[result.champion]
        metrics["champion_score"] = scores[result.champion]
    ids_by_metric = result.per_series.groupby(metric_of_rows(result.per_series, series))["unique_id"].nunique() \
        if not result.per_series.empty else {}
    boards = _per_metric_board(result, series=series)
    for metric, metric_board in boards.items():
        key = metric_key(metric)
        metric_means = metric_board.groupby("model", sort=False)["mase"].mean()
        metric_scores = metric_means if criterion.is_default else criterion.scores(metric_board)
        metrics.update({f"{key}/mean_mase_{m}": v for m, v in metric_means.items()})
        if not criterion.is_default:
            metrics.update({f"{key}/score_{m}": v for m, v in metric_scores.items()})
        metrics[f"{key}/series"] = ids_by_metric[metric]
        champ = champions.get(metric)
        if champ in metric_scores:
            metrics[f"{key}/champion_mean_mase"] = metric_means[champ]
            metrics[f"{key}/champion_score"] = metric_scores[champ]
            metrics.update(_horizon_metrics(metric_board[metric_board["model"] == champ], _in_data_unit(metric_board),
                                            f"{key}/"))
    _log_batch(client, run_id, params, metrics)
    board.to_csv(tmp / "leaderboard.csv", index=False)
    client.log_artifact(run_id, str(tmp / "leaderboard.csv"))
    by_metric = [b.assign(metric=m) for m, b in boards.items()]
    if by_metric:  # MAE, RMSE and widths in each metric's own unit
        pd.concat(by_metric, ignore_index=True).to_csv(tmp / "leaderboard_by_metric.csv", index=False)
        client.log_artifact(run_id, str(tmp / "leaderboard_by_metric.csv"))
    client.log_dict(run_id, {"horizons": spec.horizons, "rows": _records(board)}, "leaderboard.json")
    client.log_dict(run_id, json.loads(json.dumps(result.report(), default=str)), "backtest_report.json")
    client.log_dict(run_id, json.loads(json.dumps(config, default=str)), "config.json")
    for metric, metric_board in boards.items():  # one plot per resource metric: scores of one kind of series
        if not metric_board.empty:
            png = plot_leaderboard(metric_board, tmp / f"leaderboard_{metric_key(metric)}.png",
                                   title=f"{metric}: MASE per horizon")
            client.log_artifact(run_id, str(png), "plots")
    if not boards and not board.empty:
        client.log_artifact(run_id, str(plot_leaderboard(board, tmp / "leaderboard.png")), "plots")
    if validation_html:
        _log_validation(client, run_id, validation_html)
    links = {}
    for name, where in artifacts.items():
        local = _local_path(str(where))
        if local is None:
            links[name] = str(where)
        elif local.is_dir():
            client.log_artifacts(run_id, str(local), f"run/{name}")
        elif local.is_file():
            client.log_artifact(run_id, str(local), "run")
        else:
            log.warning("artifact %s not found at %s; not logged", name, where)
    if links:
        client.log_dict(run_id, links, "links.json")


def _log_validation(client: MlflowClient, run_id: str, validation_html: str) -> None:
    text = validation_html.lstrip()
    if text.startswith("<"):
        client.log_text(run_id, validation_html, "validation/validation_report.html")
        return
    path = _local_path(validation_html)
    if path is None or not path.is_file():
        raise DataError(f"validation report {validation_html!r} is neither HTML nor a readable file")
    client.log_artifact(run_id, str(path), "validation")


def _local_path(where: str) -> Path | None:
    parsed = urlparse(where)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(where)
    return None


def _log_child(client: MlflowClient, experiment_id: str, parent_id: str, base_tags: dict, result: BacktestResult,
               model: str, tmp: Path, plot_series: int, series: pd.DataFrame | None = None) -> str:
    tags = {**base_tags, MODEL_TAG: model, PARENT_TAG: parent_id,
            "foresight.is_champion": str(model == result.champion).lower()}
    run = client.create_run(experiment_id, run_name=model, tags=tags)
    run_id = run.info.run_id
    board = result.leaderboard[result.leaderboard["model"] == model]
    params = {**{f"model.{k}": v for k, v in model_params(result, model).items()}, **_protocol_params(result)}
    metrics: dict[str, float] = _horizon_metrics(board, POOLED_METRICS)
    if not board.empty:
        metrics["mean_mase"] = board["mase"].mean()
        metrics["mean_smape"] = board["smape"].mean()
        metrics["mean_wql"] = board["wql"].mean() if "wql" in board else float("nan")
        metrics["score"] = criterion_of(result.spec).score(board, model)
    for metric, metric_board in _per_metric_board(result, model, series).items():
        key = metric_key(metric)
        metrics.update(_horizon_metrics(metric_board, (*_in_data_unit(metric_board), "mase", "wql"), f"{key}/"))
        metrics[f"{key}/mean_mase"] = metric_board["mase"].mean()
    metrics["fit_seconds"] = result.fit_seconds.get(model, 0.0)
    metrics["predict_seconds"] = result.predict_seconds.get(model, 0.0)
    metrics["fallbacks"] = sum(1 for f in result.fallbacks if f.get("model") == model)
    tuning = (getattr(result, "tuning", None) or {}).get(model)
    if tuning:
        params.update(_tuning_params(tuning))
        metrics.update(_tuning_metrics(tuning))
        client.set_tag(run_id, "foresight.tuning", tuning["action"])
        client.log_text(run_id, json.dumps(tuning, indent=2, default=str), "tuning/tuning.json")
    _log_batch(client, run_id, params, metrics)
    for column, curve in HORIZON_CURVES.items():
        _log_horizon_curve(client, run_id, board, column, curve)
    tmp.mkdir(parents=True, exist_ok=True)
    per_series = result.per_series[result.per_series["model"] == model] if not result.per_series.empty else None
    if per_series is not None and not per_series.empty:
        per_series.to_csv(tmp / "per_series.csv", index=False)
        client.log_artifact(run_id, str(tmp / "per_series.csv"))
    series = pick_series(result.per_series, model, result.series, plot_series)
    if series and not result.forecasts.empty:
        png = plot_forecasts(result.forecasts, model, tmp / "forecasts_vs_actuals.png", series,
                             result.spec.horizon_steps, future=result.future_forecasts)
        client.log_artifact(run_id, str(png), "plots")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _tuning_params(tuning: dict) -> dict:
    """How the model's parameters were chosen: tuned this run or reused, when, on which data."""
    out = {"tuning.action": tuning["action"], "tuning.tuned_at": tuning.get("tuned_at") or "",
           "tuning.data_end": tuning.get("data_end") or "", "tuning.stopped_by": tuning.get("stopped_by") or ""}
    if tuning.get("why"):
        out["tuning.why"] = tuning["why"]
    return out


def _tuning_metrics(tuning: dict) -> dict[str, float]:
    """Validation MASE before and after tuning (on the validation split, never the held-out day)."""
    out = {"tuning_trials": float(tuning.get("n_trials") or 0), "tuning_seconds": float(tuning.get("seconds") or 0)}
    for key in ("mase_before", "mase_after"):
        value = tuning.get(key)
        if value is not None and math.isfinite(float(value)):
            out[f"tuning_validation_{key}"] = float(value)
    return out


def model_params(result: BacktestResult, model: str) -> dict:
    """The model's constructor parameters (from a fitted instance when kept) and config overrides."""
    params: dict[str, Any] = {}
    if model == ENSEMBLE:
        chosen = getattr(result, "ensemble_members", None) or {}
        combined = {m for choice in chosen.values() for m in choice.members}
        params.update(members=",".join(m for m in result.spec.base_models if not chosen or m in combined),
                      top_models=TOP_MODELS)
        for metric, choice in chosen.items():  # the members per metric and how they were chosen
            params[f"members.{metric}"] = ",".join(choice.members)
            params[f"members_rule.{metric}"] = choice.rule
    fitted = result.models.get(model)
    if fitted is None:
        fitted = next((m for k, m in result.models.items() if isinstance(k, tuple) and k[0] == model), None)
    if fitted is not None and hasattr(fitted, "get_params"):
        params.update(fitted.get_params())
    elif fitted is None:
        params.update((getattr(result, "fitted_params", None) or {}).get(model, {}))
    params.update(result.spec.model_params.get(model, {}))
    params["name"] = model
    return params


def _protocol_params(result: BacktestResult) -> dict:
    spec = result.spec
    return {
        "protocol.freq": spec.freq, "protocol.horizons": ",".join(spec.horizons),
        "protocol.test_days": spec.test_days, "protocol.history_days": spec.history_days,
        "protocol.stride": spec.stride, "protocol.season_length": spec.season_length,
        "protocol.levels": ",".join(str(level) for level in spec.levels),
        "protocol.cutoffs_per_series": len(spec.origins), "protocol.series": len(result.series),
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value} if prefix else {}


def _log_batch(client: MlflowClient, run_id: str, params: dict, metrics: dict) -> None:
    stamp = int(time.time() * 1000)
    param_rows = [Param(k[:250], _param_value(v)) for k, v in params.items()]
    metric_rows = []
    for key, value in metrics.items():
        value = float(value)
        if math.isfinite(value):
            metric_rows.append(Metric(key, value, stamp, 0))
        else:
            log.debug("metric %s is %s; not logged", key, value)
    for i in range(0, len(param_rows), 100):
        client.log_batch(run_id, params=param_rows[i:i + 100])
    for i in range(0, len(metric_rows), 1000):
        client.log_batch(run_id, metrics=metric_rows[i:i + 1000])


def _log_horizon_curve(client: MlflowClient, run_id: str, board: pd.DataFrame, column: str = "mase",
                       curve: str = HORIZON_CURVE) -> None:
    """``mase_by_horizon`` at step = the horizon in minutes: one chart shows every model's MASE against the horizon.

    The same for another column of the board and its curve (``wql`` as ``wql_by_horizon``).
    """
    from foresight_lib.horizons import parse_duration

    stamp = int(time.time() * 1000)
    rows = []
    for horizon, value in zip(board.get("horizon", []), board.get(column, []), strict=False):
        try:
            minutes = int(parse_duration(str(horizon)).total_seconds() // 60)
        except Exception:  # noqa: BLE001 - a horizon that is not a duration has no place on the curve
            continue
        if value is not None and math.isfinite(float(value)):
            rows.append(Metric(curve, float(value), stamp, minutes))
    if rows:
        client.log_batch(run_id, metrics=rows)


def _param_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def _records(board: pd.DataFrame) -> list[dict]:
    return json.loads(board.to_json(orient="records"))
