"""Foresight's Airflow plugin: a FastAPI app under ``/foresight`` and links in the UI.

- ``/foresight/metrics``: the latest forecasts (and recommendations) for Prometheus to
  scrape: ``foresight_forecast{series, metric, entity, model, horizon, value_type}``.
- ``/foresight/forecasts``: the latest forecasts as JSON (filters: series, metric,
  entity, model; limit).
- ``/foresight/recommendations``: the latest rightsizing recommendations as JSON (404
  until a run has published some).
- ``/foresight/``: the dashboard shown in Airflow's menu (champions, leaderboard, a
  forecast chart with its bands, recommendations, the scaling plan's state), fed by
  ``/foresight/overview`` (run, champions, leaderboard, series, recommendations, plan) and
  ``/foresight/series`` (one series' actuals and its champion's forecast with bands).
- ``/foresight/docs``: Swagger UI of this API (``/foresight/openapi.json``).
- ``/foresight/static/...``: the dashboard's script and style, Plotly.js and Swagger UI,
  served from the installed packages: the page and the docs work offline.
- A menu link to MLflow: ``FORESIGHT_MLFLOW_UI_URL``, else ``MLFLOW_TRACKING_URI`` when
  it is an http(s) URL, else http://localhost:5000 (what ``make ui`` starts).

This file only wires: reading and rendering live in ``foresight_lib.publishing.exposition``
and ``foresight_lib.publishing.dashboard``. The data root and horizons come from the
Foresight config (``FORESIGHT_CONFIG``, ``FORESIGHT_DATA_ROOT``), read at each request so
a config change needs no restart.
"""
from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

URL_PREFIX = "/foresight"


def mlflow_ui_url() -> str:
    explicit = os.environ.get("FORESIGHT_MLFLOW_UI_URL")
    if explicit:
        return explicit
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    return tracking if tracking.startswith(("http://", "https://")) else "http://localhost:5000"


def _settings() -> tuple[str, list[str]]:
    """The data root and horizons of the Foresight config; HTTP 500 naming the problem if it is invalid."""
    from foresight_lib.config import load_config
    from foresight_lib.errors import ForesightError

    try:
        cfg = load_config()
    except ForesightError as exc:
        raise HTTPException(status_code=500, detail=f"Foresight config: {exc}") from exc
    return cfg.data_root, list(cfg.horizons)


def _prefix(request: Request) -> str:
    """Where this app is mounted (``/foresight``, or below Airflow's own path prefix)."""
    root = str(request.scope.get("root_path") or "").rstrip("/")
    return root if root.endswith(URL_PREFIX) else URL_PREFIX


app = FastAPI(title="Foresight", description="Latest forecasts and recommendations of the nightly runs",
              docs_url=None, redoc_url=None, openapi_url="/openapi.json")


@app.get("/metrics", summary="Prometheus exposition of the latest forecasts")
def metrics(request: Request) -> Response:
    from foresight_lib.publishing import exposition

    data_root, horizons = _settings()
    body, headers = exposition.metrics_response(data_root, request.headers.get("accept"),
                                                request.headers.get("accept-encoding"), horizons=horizons)
    return Response(content=body, headers=headers)


@app.get("/forecasts", summary="Latest forecasts as JSON")
def forecasts(series: str | None = None, metric: str | None = None, entity: str | None = None,
              model: str | None = None, limit: int = Query(10_000, ge=1, le=1_000_000)) -> JSONResponse:
    from foresight_lib.publishing import exposition

    data_root, _ = _settings()
    return JSONResponse(exposition.forecasts_payload(data_root, series, metric, entity, model, limit))


@app.get("/recommendations", summary="Latest rightsizing recommendations as JSON")
def recommendations(entity: str | None = None, resource: str | None = None,
                    limit: int = Query(10_000, ge=1, le=1_000_000)) -> JSONResponse:
    from foresight_lib.publishing import exposition

    data_root, _ = _settings()
    payload = exposition.recommendations_payload(data_root, entity, resource, limit)
    if payload is None:
        raise HTTPException(status_code=404, detail=f"no recommendations published under {data_root} yet; "
                                                    "they appear after a successful nightly run")
    return JSONResponse(payload)


@app.get("/overview", summary="The dashboard's data: run, champions, leaderboard, series, recommendations, plan")
def overview(request: Request) -> JSONResponse:
    from foresight_lib.publishing import dashboard

    data_root, _ = _settings()
    prefix = _prefix(request)
    return JSONResponse(dashboard.overview(data_root, mlflow_ui_url(), airflow_base=prefix[:-len(URL_PREFIX)]))


@app.get("/series", summary="One series' latest actuals and its champion's forecast with 80 and 95 % bands")
def series(series: str | None = None, metric: str | None = None, entity: str | None = None,
           model: str | None = None) -> JSONResponse:
    from foresight_lib.publishing import dashboard

    if not series and not (metric and entity):
        raise HTTPException(status_code=400, detail="name a series (?series=<metric>/<entity>) or a metric and "
                                                    "an entity (?metric=...&entity=...)")
    data_root, _ = _settings()
    try:
        return JSONResponse(dashboard.series_payload(data_root, series, metric, entity, model))
    except dashboard.SeriesNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


@app.get("/static/{name:path}", include_in_schema=False)
def static(name: str) -> FileResponse:
    from foresight_lib.publishing import dashboard

    found = dashboard.asset(name)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no static file '{name}'")
    return FileResponse(found.path, media_type=found.media_type, headers={"Cache-Control": found.cache_control})


@app.get("/docs", include_in_schema=False)
def docs(request: Request) -> HTMLResponse:
    from foresight_lib.publishing import dashboard

    return get_swagger_ui_html(title="Foresight API", swagger_ui_parameters={"validatorUrl": None},
                               **dashboard.swagger_urls(_prefix(request)))


@app.get("/", response_class=HTMLResponse, summary="The dashboard")
def index(request: Request) -> HTMLResponse:
    from foresight_lib.publishing import dashboard

    return HTMLResponse(dashboard.page_html(_prefix(request)), headers={"Cache-Control": "no-cache"})


class ForesightPlugin(AirflowPlugin):
    """Registers the app and the UI links."""

    name = "foresight"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Foresight forecasts"}]
    external_views = [
        {"name": "Forecasts", "href": f"{URL_PREFIX}/", "destination": "nav", "category": "Foresight",
         "url_route": "foresight"},
        {"name": "MLflow", "href": mlflow_ui_url(), "destination": "nav", "category": "Foresight"},
    ]
