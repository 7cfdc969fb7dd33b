"""Foresight's Airflow plugin: a FastAPI app under ``/foresight`` and links in the UI.

- ``/foresight/metrics``: the latest forecasts (and recommendations) for Prometheus to
  scrape: ``foresight_forecast{series, metric, entity, model, horizon, value_type}``.
- ``/foresight/forecasts``: the latest forecasts as JSON (filters: series, metric,
  entity, model; limit).
- ``/foresight/recommendations``: the latest rightsizing recommendations as JSON (404
  until a run has published some).
- ``/foresight/``: a short page of what was published, shown in Airflow's menu.
- A menu link to MLflow: ``FORESIGHT_MLFLOW_UI_URL``, else ``MLFLOW_TRACKING_URI`` when
  it is an http(s) URL, else http://localhost:5000 (what ``make ui`` starts).

This file only wires: reading and rendering live in ``foresight_lib.publishing.exposition``. The
data root and horizons come from the Foresight config (``FORESIGHT_CONFIG``,
``FORESIGHT_DATA_ROOT``), read at each request so a config change needs no restart.
"""
from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

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


app = FastAPI(title="Foresight", description="Latest forecasts and recommendations of the nightly runs",
              docs_url="/docs", openapi_url="/openapi.json")


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


@app.get("/", response_class=HTMLResponse, summary="What was published last")
def index() -> HTMLResponse:
    from foresight_lib.publishing import exposition

    data_root, _ = _settings()
    return HTMLResponse(exposition.index_html(data_root, URL_PREFIX, mlflow_ui_url()))


class ForesightPlugin(AirflowPlugin):
    """Registers the app and the UI links."""

    name = "foresight"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Foresight forecasts"}]
    external_views = [
        {"name": "Forecasts", "href": f"{URL_PREFIX}/", "destination": "nav", "category": "Foresight",
         "url_route": "foresight"},
        {"name": "MLflow", "href": mlflow_ui_url(), "destination": "nav", "category": "Foresight"},
    ]
