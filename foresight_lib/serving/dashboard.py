"""The Foresight dashboard: the JSON behind the plugin's page at ``/foresight/`` and its static files.

The page (``dashboard_static/dashboard.html``) is a static template whose script asks for

- :func:`overview`: the header (when and what was published, links to the Airflow run
  and to MLflow), the champion of each metric with its registered version and backtest
  MASE per horizon (an activation since the publish, ``summary.json``'s ``activations``,
  makes its model the champion and is listed with who made it and when), the leaderboard
  (model x horizon MASE per metric, with the weighted quantile loss and the 80 % and 95 %
  interval coverage beside it where the publish has them), the series that
  can be charted, the current rightsizing recommendations and the scaling plan's state;
- :func:`series_payload`: one series' latest actuals and the champion's forecast with
  its interval bands (``yhat_lo_80``/``yhat_hi_80``, ``yhat_lo_95``/``yhat_hi_95``).

Everything is read from ``<data_root>/latest/`` through the exposition's cached reader,
so a new publish or an activation (which rewrites ``summary.json`` only) shows up at the
next request; the page asks again every minute. The per-metric leaderboard is the one in
``summary.json`` (``metric_leaderboard``); for a publish made before it was recorded
there, it is rebuilt from the published run folder's ``per_series`` dataset, and
failing that the overall ``leaderboard`` (every metric together) is shown.

Plotly.js (from the ``plotly`` package) and Swagger UI (from ``fastapi-offline``) are
served from the installed packages by :func:`asset`, so the page and ``/foresight/docs``
need no network beyond the Airflow api-server.
"""
from __future__ import annotations

import html
import importlib.util
import logging
import math
import threading
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from foresight_lib.errors import DataError, ForesightError
from foresight_lib.frames import split_unique_id
from foresight_lib.horizons import parse_duration
from foresight_lib.orchestration.dags import NIGHTLY_DAG, SCALING_PLAN_DAG
from foresight_lib.serving.exposition import (
    LATEST_FILES,
    activations,
    interval_levels,
    prepare_forecasts,
    registry_files,
)
from foresight_lib.serving.json_views import frame_records, matching, split_ids

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("dashboard_static")
PLAN_STALE_AFTER = pd.Timedelta("1h")
"""A scaling plan older than this is stale (the Grafana alert on the plan's age fires then too)."""
ACTUALS_SHOWN = pd.Timedelta("1D")
"""Actuals charted before a series' latest one."""
RECOMMENDATION_COLUMNS = ["entity", "metric", "kind", "lead", "period_start", "period_end",
                          "request_display", "limit_display", "replicas", "confidence", "model", "reason"]
RECOMMENDATION_ROWS = 1000
"""Recommendation rows in the overview; the page asks ``/recommendations?entity=`` for an entity's beyond them."""
SERIES_LISTED = 1000
"""Series (and entities) the overview lists; past them the page searches with :func:`series_search`."""
SEARCH_PAGE = 200
"""Series a search answers by default (at most ``MAX_PAGE_SIZE`` of the JSON views)."""
BESIDE_MASE = ("wql", "coverage_80", "coverage_95")
"""Leaderboard columns shown per horizon beside MASE (none ranks: the champion criterion does)."""
_UNIT_SUFFIXES = (("_bytes_per_second", "bytes/s"), ("_bytes", "bytes"), ("_cores", "cores"),
                  ("_percent", "percent"), ("_fraction", "fraction"), ("_seconds", "seconds"))
"""Units told by a metric's name when a publish did not record them (``summary.json``'s ``metric_units``)."""
_LONG_CACHE = "public, max-age=31536000, immutable"
_REVALIDATE = "no-cache"


class SeriesNotFound(DataError):
    """The series (or model) asked for is not in the published forecasts."""


# ---------------------------------------------------------------------------
# Static files


@dataclass(frozen=True)
class Asset:
    """A file the plugin serves under ``/foresight/static/``."""

    path: Path
    media_type: str
    cache_control: str


_ASSETS: dict[str, tuple[str | None, str, str]] = {
    # name -> (package or None for dashboard_static, path inside it, media type)
    "dashboard.js": (None, "dashboard.js", "text/javascript"),
    "dashboard.css": (None, "dashboard.css", "text/css"),
    "plotly.min.js": ("plotly", "package_data/plotly.min.js", "text/javascript"),
    "swagger/swagger-ui-bundle.js": ("fastapi_offline", "static/swagger-ui-bundle.js", "text/javascript"),
    "swagger/swagger-ui.css": ("fastapi_offline", "static/swagger-ui.css", "text/css"),
    "swagger/favicon.png": ("fastapi_offline", "static/favicon.png", "image/png"),
}


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def asset(name: str) -> Asset | None:
    """The static file ``name`` (``plotly.min.js``, ``swagger/swagger-ui.css``...), or None if unknown or missing.

    Files of installed packages are versioned in their URLs (:func:`asset_version`) and
    cached for a year; the dashboard's own script and style are revalidated.
    """
    entry = _ASSETS.get(name)
    if entry is None:
        return None
    package, relpath, media_type = entry
    folder = STATIC_DIR if package is None else _package_dir(package)
    path = folder / relpath if folder is not None else None
    if path is None or not path.is_file():
        log.error("static file %s not found (%s); reinstall requirements.txt", name, path or package)
        return None
    return Asset(path, media_type, _REVALIDATE if package is None else _LONG_CACHE)


def asset_version(package: str) -> str:
    """The installed version of ``package`` (appended to its files' URLs), ``0`` when unknown."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "0"


def page_html(prefix: str) -> str:
    """The dashboard page, its URLs under ``prefix`` (``/foresight``)."""
    template = (STATIC_DIR / "dashboard.html").read_text(encoding="utf-8")
    return (template.replace("{{prefix}}", html.escape(prefix.rstrip("/"), quote=True))
            .replace("{{plotly_version}}", html.escape(asset_version("plotly"), quote=True)))


def swagger_urls(prefix: str) -> dict[str, str]:
    """Arguments of ``fastapi.openapi.docs.get_swagger_ui_html`` pointing at the plugin's own files."""
    base = f"{prefix.rstrip('/')}/static/swagger"
    tag = asset_version("fastapi-offline")
    return {"openapi_url": f"{prefix.rstrip('/')}/openapi.json",
            "swagger_js_url": f"{base}/swagger-ui-bundle.js?v={tag}",
            "swagger_css_url": f"{base}/swagger-ui.css?v={tag}",
            "swagger_favicon_url": f"{base}/favicon.png?v={tag}"}


# ---------------------------------------------------------------------------
# What was published, read once per publish


@dataclass
class _State:
    snapshot: Any
    manifest: dict | None = None
    summary: dict = field(default_factory=dict)
    forecasts: pd.DataFrame | None = None
    """Latest cutoff per series and model, indexed by ``unique_id`` (sorted)."""
    actuals: pd.DataFrame | None = None
    board: pd.DataFrame | None = None
    """``metric, model, horizon, mase`` and those of ``BESIDE_MASE`` published; ``metric`` is None when only the
    overall board is known."""
    board_scope: str = "none"
    champions: dict[str, str] = field(default_factory=dict)
    overall: str | None = None
    """The champion over every metric (the run's, else the overall board's best)."""
    plan_manifest: dict | None = None
    plan: dict | None = None
    errors: list[str] = field(default_factory=list)
    series: pd.DataFrame | None = None
    """``unique_id, metric, entity`` of every forecast series, sorted by id."""
    recommendations: dict[str, Any] | None = None
    """The overview's recommendations, built at the first request after a publish."""


_STATES: dict[str, _State] = {}
_STATES_LOCK = threading.Lock()


def _state(data_root: str) -> _State:
    snapshot = registry_files(data_root).snapshot()
    with _STATES_LOCK:
        cached = _STATES.get(str(data_root))
    if cached is not None and cached.snapshot is snapshot:
        return cached
    state = _read_state(str(data_root), snapshot)
    with _STATES_LOCK:
        _STATES[str(data_root)] = state
    return state


def _quietly(what: str, errors: list[str], read):
    try:
        return read()
    except Exception as exc:  # a foreign or half-written file shows as an error on the page, not a 500
        log.error("cannot read the published %s: %s", what, exc)
        errors.append(f"{what}: {exc}")
        return None


def _read_state(data_root: str, snapshot) -> _State:
    from foresight_lib.runs.storage import DataRoot

    root = DataRoot(data_root)
    state = _State(snapshot=snapshot, errors=list(snapshot.errors))
    state.manifest = _quietly("manifest", state.errors, root.latest_manifest)
    state.summary = _quietly("summary.json", state.errors, lambda: root.read_latest_json("summary.json")) or {}
    if snapshot.forecasts is not None:
        frame = _quietly("forecasts", state.errors, lambda: prepare_forecasts(snapshot.forecasts))
        if frame is not None:
            state.forecasts = _by_id(frame.sort_values(["unique_id", "model", "ds"], kind="stable"))
            ids = pd.Series(state.forecasts.index.unique(), dtype=object)
            metric, entity = split_ids(ids)
            state.series = pd.DataFrame({"unique_id": ids, "metric": metric, "entity": entity})
    if snapshot.actuals is not None:
        actuals = snapshot.actuals[["unique_id", "ds", "y"]].copy()
        actuals["unique_id"] = actuals["unique_id"].astype(str)
        actuals["ds"] = pd.to_datetime(actuals["ds"], utc=True)
        state.actuals = _by_id(actuals.sort_values(["unique_id", "ds"], kind="stable"))
    state.board, state.board_scope = _quietly("leaderboard", state.errors, lambda: _leaderboard(root, state)) or (
        None, "none")
    state.champions = _champions(snapshot.forecasts, state.summary, state.board)
    state.overall = state.summary.get("champion") or _best(state.board, _criterion(state.summary))
    state.plan_manifest = _quietly("scaling plan manifest", state.errors,
                                   lambda: root.latest_manifest(LATEST_FILES["plan_manifest"]))
    if state.plan_manifest:
        state.plan = _quietly("scaling plan", state.errors, lambda: _plan_counts(root.read_latest("scaling_plan")))
    return state


def _by_id(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (sorted by ``unique_id``) indexed by its ids as plain object text, which a binary search reads in
    place (an Arrow-backed index would be copied to NumPy at every look-up)."""
    ids = np.asarray(frame["unique_id"].astype(str).to_numpy(), dtype=object)
    return frame.drop(columns="unique_id").set_axis(pd.Index(ids, dtype=object, name="unique_id"), axis=0)


def _horizon_key(horizon: str) -> tuple[int, float]:
    try:
        return 0, parse_duration(str(horizon)).total_seconds()
    except ForesightError:
        return 1, 0.0


def _criterion(summary: dict):
    """The champion criterion the published run used (``summary.json``; the default before it was recorded)."""
    from foresight_lib.forecasting.metrics import ChampionCriterion

    setting = summary.get("criterion")
    return ChampionCriterion.from_setting(setting if isinstance(setting, dict) else None)


def _scores(board: pd.DataFrame, criterion) -> pd.Series:
    """The criterion's score of each row's (metric, model), aligned on ``board``'s rows."""
    keys = board["metric"].fillna("").astype(str) + "\0" + board["model"].astype(str)
    scores = criterion.scores(board.assign(model=keys))
    return keys.map(scores).astype("float64")


def _ranked(board: pd.DataFrame, criterion=None) -> pd.DataFrame:
    """``metric, model, horizon, mase`` (and ``BESIDE_MASE``), models ranked by the champion criterion per metric."""
    from foresight_lib.forecasting.metrics import DEFAULT_CRITERION

    scores = ["mase", *[c for c in BESIDE_MASE if c in board.columns]]
    board = board[["metric", "model", "horizon", *scores]].copy()
    for column in scores:
        board[column] = pd.to_numeric(board[column], errors="coerce")
    board["_metric"] = board["metric"].fillna("")
    board["_rank"] = _scores(board, criterion or DEFAULT_CRITERION)
    board["_horizon"] = [_horizon_key(h) for h in board["horizon"]]
    board = board.sort_values(["_metric", "_rank", "model", "_horizon"], na_position="last", kind="stable")
    return board.drop(columns=["_metric", "_rank", "_horizon"]).reset_index(drop=True)


def _leaderboard(root, state: _State) -> tuple[pd.DataFrame | None, str]:
    """The per-metric leaderboard (``summary.json``, else the run folder's per-series scores), else the overall one."""
    from foresight_lib.runs.storage import RunStore

    rows = state.summary.get("metric_leaderboard")
    if rows:
        return _ranked(pd.DataFrame(rows), _criterion(state.summary)), "metric"
    run = (state.manifest or {}).get("run_id")
    if run:
        def per_series() -> pd.DataFrame | None:
            store = RunStore(root.data_root, run)
            return store.read_frame("per_series") if store.exists("per_series") else None

        scores = _quietly("per-series scores of the published run", state.errors, per_series)
        if scores is not None and not scores.empty:
            scores = scores.assign(metric=[split_unique_id(str(u))[0] for u in scores["unique_id"]])
            columns = ["mase", *[c for c in BESIDE_MASE if c in scores.columns]]
            board = scores.groupby(["metric", "model", "horizon"], sort=False)[columns].mean().reset_index()
            return _ranked(board, _criterion(state.summary)), "metric"
    overall = None
    if root.has_latest("leaderboard"):
        overall = _quietly("leaderboard", state.errors, lambda: root.read_latest("leaderboard"))
    if overall is None and state.summary.get("leaderboard"):
        overall = pd.DataFrame(state.summary["leaderboard"])
    if overall is None or overall.empty:
        return None, "none"
    return _ranked(overall.assign(metric=None), _criterion(state.summary)), "all"


def _champions(forecasts: pd.DataFrame | None, summary: dict, board: pd.DataFrame | None) -> dict[str, str]:
    """metric -> champion model: as activated since the publish, else as marked in the forecasts, else as
    registered, else the board's best."""
    criterion = _criterion(summary)
    out: dict[str, str] = {}
    for record in activations(summary):  # newest first: the latest activation of a metric wins
        if record["model"]:
            out.setdefault(record["metric"], record["model"])
    if forecasts is not None and "champion" in forecasts and "unique_id" in forecasts:
        marked = forecasts.loc[forecasts["champion"].fillna(False).astype(bool), ["unique_id", "model"]]
        for uid, model in marked.drop_duplicates().itertuples(index=False):
            out.setdefault(split_unique_id(str(uid))[0], str(model))
    for metric, registration in (summary.get("registrations") or {}).items():
        if isinstance(registration, dict) and registration.get("model"):
            out.setdefault(str(metric), str(registration["model"]))
    if board is not None:
        for metric, rows in board.dropna(subset=["metric"]).groupby("metric", sort=True):
            try:
                out.setdefault(str(metric), criterion.champion(rows))
            except DataError:
                continue
    return out


def _best(board: pd.DataFrame | None, criterion) -> str | None:
    """The champion by ``criterion`` on the overall board (rows without a metric)."""
    overall = board[board["metric"].isna()] if board is not None else None
    if overall is None or overall.empty:
        return None
    try:
        return criterion.champion(overall)
    except DataError:
        return None


def _plan_counts(plan: pd.DataFrame) -> dict[str, Any]:
    sized = plan["request"].notna() if "request" in plan else pd.Series(False, index=plan.index)
    starts = pd.to_datetime(plan.loc[sized, "period_start"], utc=True) if "period_start" in plan else None
    return {"entities": int(plan["entity"].nunique()) if "entity" in plan else 0,
            "series": int(plan["unique_id"].nunique()) if "unique_id" in plan else 0,
            "windows": int(len(plan)), "sized": int(sized.sum()),
            "first_window": _iso(starts.min()) if starts is not None and len(starts) else None}


# ---------------------------------------------------------------------------
# Payloads


def _iso(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    stamp = pd.Timestamp(value)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).isoformat()


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _links(state: _State, mlflow_url: str | None, airflow_base: str) -> dict[str, dict[str, str]]:
    """The Airflow run (or the DAG when the run is not Airflow's) and the MLflow run (or MLflow's home)."""
    run_id = state.summary.get("run_id")
    airflow = {"url": f"{airflow_base}/dags/{NIGHTLY_DAG}", "label": f"DAG {NIGHTLY_DAG}"}
    if run_id and not str(run_id).startswith("local__"):
        airflow = {"url": f"{airflow_base}/dags/{NIGHTLY_DAG}/runs/{quote(str(run_id), safe='')}",
                   "label": f"run {run_id}"}
    base = (mlflow_url or "").rstrip("/")
    mlflow = {"url": base, "label": "experiments"}
    parent, experiment = state.summary.get("mlflow_parent_run"), state.summary.get("mlflow_experiment_id")
    if base and experiment:  # the experiment's training runs, not MLflow's home (which may open on GenAI traces)
        mlflow = {"url": f"{base}/#/experiments/{quote(str(experiment), safe='')}/runs", "label": "training runs"}
    if base and parent and experiment:
        mlflow = {"url": f"{base}/#/experiments/{quote(str(experiment), safe='')}/runs/{quote(str(parent), safe='')}",
                  "label": f"MLflow run {str(parent)[:8]}"}
    return {"airflow": airflow, "mlflow": mlflow}


def _board_rows(state: _State) -> tuple[list[str], list[dict[str, Any]]]:
    if state.board is None:
        return [], []
    horizons = sorted(state.board["horizon"].astype(str).unique(), key=_horizon_key)
    scores = _scores(state.board, _criterion(state.summary))
    rows = []
    for (metric, model), part in state.board.groupby([state.board["metric"].fillna(""), "model"], sort=False):
        mase = {str(h): _number(v) for h, v in zip(part["horizon"], part["mase"], strict=True)}
        known = [v for v in mase.values() if v is not None]
        champion = state.champions.get(metric) == model if metric else model == state.overall
        rows.append({"metric": metric or None, "model": str(model), "mase": mase,
                     "mean_mase": sum(known) / len(known) if known else None,
                     "score": _number(scores[part.index[0]]), "champion": bool(champion),
                     **{column: {str(h): _number(v) for h, v in zip(part["horizon"], part[column], strict=True)}
                        if column in part else {} for column in BESIDE_MASE}})
    return horizons, rows


def _champion_rows(state: _State, metrics: list[str], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    versions = state.summary.get("champion_versions") or {}
    activated: dict[str, dict[str, Any]] = {}
    for record in activations(state.summary):
        activated.setdefault(record["metric"], record)
    out = []
    for metric in sorted(set(metrics) | set(state.champions)):
        model = state.champions.get(metric) or state.overall
        scored = next((r for r in rows if r["model"] == model and r["metric"] in (metric, None)), None)
        out.append({"metric": metric, "model": model, "version": versions.get(metric),
                    "mase": scored["mase"] if scored else {}, "mean_mase": scored["mean_mase"] if scored else None,
                    "score": scored["score"] if scored else None,
                    "scope": "metric" if scored and scored["metric"] else ("all" if scored else None),
                    "activation": activated.get(metric)})
    return out


def _units(state: _State, metrics: list[str]) -> dict[str, str]:
    """metric -> unit (``cores``, ``bytes``, ``bytes/s``…): as published, else the recommendations', else the name's."""
    out = {str(k): str(v) for k, v in (state.summary.get("metric_units") or {}).items() if v}
    recs = state.snapshot.recommendations
    if recs is not None and {"metric", "unit"} <= set(recs.columns):
        for metric, unit in recs[["metric", "unit"]].dropna().drop_duplicates("metric").itertuples(index=False):
            out.setdefault(str(metric), str(unit))
    for metric in metrics:
        guessed = next((unit for suffix, unit in _UNIT_SUFFIXES if metric.endswith(suffix)), None)
        if guessed and metric not in out:
            out[metric] = guessed
    return {m: out[m] for m in sorted(out) if m in metrics or m in (state.champions or {})}


def _recommendations(state: _State) -> dict[str, Any] | None:
    """The rows shown (request and limit as people read them; no limit or replicas where Kubernetes sets none)."""
    from foresight_lib.rightsizing.sizing import KUBERNETES_RESOURCES, NOT_FOR_OTHER_RESOURCES, human_quantity

    frame = state.snapshot.recommendations
    if frame is None:
        return None
    columns = [c for c in RECOMMENDATION_COLUMNS if c in frame.columns]
    shown = frame.head(RECOMMENDATION_ROWS).copy()
    if "resource" in shown:
        other = ~shown["resource"].isin(KUBERNETES_RESOURCES)
        if other.any() and {"request", "unit"} <= set(shown.columns) and "request_display" in columns:
            shown.loc[other, "request_display"] = [
                human_quantity(float(v), str(u)) if pd.notna(v) and pd.notna(u) else None
                for v, u in zip(shown.loc[other, "request"], shown.loc[other, "unit"], strict=True)]
        for column in NOT_FOR_OTHER_RESOURCES:
            if column in columns:
                shown[column] = shown[column].astype(object)
                shown.loc[other, column] = None
    models = sorted(shown["model"].dropna().astype(str).unique()) if "model" in shown else []
    profiles = sorted(shown["profile"].dropna().astype(str).unique()) if "profile" in shown else []
    return {"count": int(len(frame)), "truncated": bool(len(frame) > RECOMMENDATION_ROWS), "columns": columns,
            "models": models, "profiles": profiles, "rows": frame_records(shown[columns])}


def _plan_state(state: _State, now: pd.Timestamp) -> dict[str, Any]:
    manifest = state.plan_manifest
    if not manifest:
        return {"published": False, "stale": None,
                "message": f"no plan published yet; the {SCALING_PLAN_DAG} DAG publishes the next windows' sizes "
                           "between nightly runs"}
    published = pd.Timestamp(manifest["published_at"]) if manifest.get("published_at") else None
    if published is not None and published.tzinfo is None:
        published = published.tz_localize("UTC")
    age = (now - published).total_seconds() if published is not None else None
    stale = age is None or age > PLAN_STALE_AFTER.total_seconds()
    counts = state.plan or {}
    when = f"{published:%Y-%m-%d %H:%M} UTC" if published is not None else "an unknown time"
    message = (f"published {when} for {counts.get('entities', 0)} entities"
               + (f"; stale: older than {PLAN_STALE_AFTER.total_seconds() / 3600:g} h, check the {SCALING_PLAN_DAG} DAG"
                  if stale else ""))
    return {"published": True, "published_at": _iso(published), "data_interval_end": _iso(
        manifest.get("data_interval_end")), "run_id": manifest.get("run_id"), "age_s": age, "stale": stale,
        "stale_after_s": PLAN_STALE_AFTER.total_seconds(), **counts, "message": message}


def _dag_state(state: dict | None) -> dict[str, Any] | None:
    """The nightly DAG's pause state and queued runs, with what a person should know about them."""
    if not state:
        return None
    paused, queued = bool(state.get("paused")), int(state.get("queued") or 0)
    message = None
    if paused and queued:
        message = (f"{queued} run(s) of {NIGHTLY_DAG} wait in Queued because the DAG is paused: Airflow starts no run "
                   "of a paused DAG. Unpause it to let them run (unpausing also lets the schedule create the latest "
                   "nightly run), or delete them.")
    elif paused:
        message = f"{NIGHTLY_DAG} is paused: no nightly run will start until it is unpaused."
    return {"paused": paused, "queued": queued, "message": message}


def overview(data_root: str, mlflow_url: str | None = None, airflow_base: str = "",
             now: pd.Timestamp | None = None, dag_state: dict | None = None) -> dict[str, Any]:
    """Everything the dashboard shows but the chart (see the module docstring).

    Args:
        data_root: the data root whose ``latest/`` is shown.
        mlflow_url: the MLflow UI's base URL (the MLflow link points there, or at the run).
        airflow_base: the Airflow UI's path prefix (``""`` at the server's root).
        now: the time the scaling plan's age is measured at (default: now).
        dag_state: the nightly DAG's ``paused`` flag and ``queued`` run count, as Airflow
            says (the plugin asks); None when unknown.
    """
    state = _state(data_root)
    now = now or pd.Timestamp.now(tz="UTC")
    snapshot, manifest = state.snapshot, state.manifest or {}
    published = snapshot.forecasts is not None or bool(manifest)
    listed = state.series if state.series is not None else pd.DataFrame(columns=["unique_id", "metric", "entity"])
    series = listed.head(SERIES_LISTED).to_dict(orient="records")
    entities = pd.unique(listed["entity"])
    horizons, rows = _board_rows(state)
    metrics = sorted(pd.unique(listed["metric"]).tolist())
    if state.recommendations is None:
        state.recommendations = {"value": _recommendations(state)}
    return {
        "published": published,
        "message": None if published else (f"nothing published yet under {data_root}; trigger the {NIGHTLY_DAG} "
                                           "DAG in Airflow and come back once it has succeeded"),
        "data_root": data_root,
        "published_at": _iso(snapshot.published_at),
        "run": {"run_key": manifest.get("run_id"), "airflow_run_id": state.summary.get("run_id"),
                "data_interval_end": _iso(manifest.get("data_interval_end") or state.summary.get("data_interval_end")),
                "mlflow_parent_run": state.summary.get("mlflow_parent_run"),
                "mlflow_experiment_id": state.summary.get("mlflow_experiment_id")},
        "links": _links(state, mlflow_url, airflow_base),
        "horizons": horizons,
        "criterion": _criterion(state.summary).label,
        "champions": _champion_rows(state, metrics, rows),
        "activations": activations(state.summary),
        "leaderboard": rows,
        "leaderboard_scope": state.board_scope,
        "metrics": metrics,
        "entities": sorted(entities.tolist())[:SERIES_LISTED],
        "entity_count": int(len(entities)),
        "series": series,
        "series_count": int(len(listed)),
        "series_truncated": bool(len(listed) > SERIES_LISTED),
        "units": _units(state, metrics),
        "recommendations": state.recommendations["value"],
        "plan": _plan_state(state, now),
        "data_freshness": state.summary.get("data_freshness") or {},
        "dag": _dag_state(dag_state),
        "errors": state.errors,
    }


def _rows(frame: pd.DataFrame, uid: str) -> pd.DataFrame:
    """The rows of series ``uid`` of a frame indexed by sorted ``unique_id`` (a binary search, not a scan)."""
    ids = frame.index.to_numpy()  # object text (see _by_id): no conversion per call
    return frame.iloc[np.searchsorted(ids, uid, side="left"):np.searchsorted(ids, uid, side="right")]


def series_search(data_root: str, metric: str | None = None, q: str | None = None, limit: int = SEARCH_PAGE,
                  offset: int = 0) -> dict[str, Any]:
    """A page of the published series (``unique_id, metric, entity``, sorted by id): those of ``metric``
    whose id contains ``q`` (case-insensitive); ``count`` matched, ``next_offset`` None on the last page."""
    state = _state(data_root)
    listed = state.series if state.series is not None else pd.DataFrame(columns=["unique_id", "metric", "entity"])
    if metric:
        listed = listed[(listed["metric"] == metric).to_numpy()]
    if q:
        listed = listed[matching(listed["unique_id"], q).to_numpy()]
    end = offset + limit
    return {"count": int(len(listed)), "offset": int(offset), "limit": int(limit),
            "next_offset": int(end) if len(listed) > end else None,
            "series": listed.iloc[offset:end].to_dict(orient="records")}


def series_payload(data_root: str, series: str | None = None, metric: str | None = None,
                   entity: str | None = None, model: str | None = None) -> dict[str, Any]:
    """One series' latest actuals and a model's forecast (the metric's champion by default).

    Args:
        series: the series id (``<metric>/<entity>``); else ``metric`` and ``entity``.
        model: the model whose forecast to return; default the champion.

    Raises:
        SeriesNotFound: nothing is published, or the series or model is not in the forecasts.
    """
    state = _state(data_root)
    uid = series or (f"{metric}/{entity}" if metric and entity else None)
    if state.forecasts is None:
        raise SeriesNotFound(f"nothing published yet under {data_root}; trigger the {NIGHTLY_DAG} DAG first")
    rows = _rows(state.forecasts, uid) if uid else state.forecasts.iloc[:0]
    if rows.empty:
        raise SeriesNotFound(f"no series '{uid}' in the forecasts published under {data_root}; "
                             "GET /foresight/overview lists the first series, /foresight/series/search finds any")
    models = sorted(rows["model"].astype(str).unique())
    metric_of, entity_of = split_unique_id(uid)
    champion = state.champions.get(metric_of) or state.overall
    if champion not in models:  # an activated model this publish made no forecast with: the one it marked
        marked = rows.loc[rows["champion"].fillna(False).astype(bool), "model"] if "champion" in rows else []
        champion = str(marked.iloc[0]) if len(marked) else champion
    chosen = model or (champion if champion in models else models[0])
    if chosen not in models:
        raise SeriesNotFound(f"model '{chosen}' has no forecast for series '{uid}'; its models: {models}")
    forecast = rows[rows["model"] == chosen].sort_values("ds", kind="stable")
    levels = interval_levels(forecast.columns)
    columns = ["ds", "horizon", "yhat", *[f"yhat_{side}_{lvl}" for lvl in levels for side in ("lo", "hi")]]
    actuals: list[dict[str, Any]] = []
    history = _rows(state.actuals, uid) if state.actuals is not None else None
    if history is not None and not history.empty:
        history = history[history["ds"] > history["ds"].max() - ACTUALS_SHOWN]
        actuals = frame_records(history.reset_index(drop=True)[["ds", "y"]])
    return {"unique_id": uid, "metric": metric_of, "entity": entity_of, "model": chosen,
            "champion": chosen == champion, "models": models, "levels": levels,
            "cutoff": _iso(forecast["cutoff"].iloc[0]) if len(forecast) else None,
            "published_at": _iso(state.snapshot.published_at),
            "actuals": actuals, "forecast": frame_records(forecast.reset_index(drop=True)[columns])}
