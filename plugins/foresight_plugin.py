"""Foresight's Airflow plugin: a FastAPI app under ``/foresight`` and links in the UI.

- ``/foresight/metrics``: the latest forecasts (and recommendations) for Prometheus to
  scrape: ``foresight_forecast{series, metric, entity, model, horizon, value_type}``, each
  metric's champion only unless ``publish.exposition_models`` is ``all``, for at most
  ``publish.exposition_max_series`` series (``foresight_exposition_left_out`` counts the rest).
- ``/foresight/forecasts``: the latest forecasts as JSON (filters: series, metric,
  entity, model, ``q`` a search in the series id; paged by ``limit`` and ``offset``).
- ``/foresight/recommendations``: the latest rightsizing recommendations as JSON (404
  until a run has published some; filters entity, resource, ``q``; paged the same way).
- ``/foresight/``: the dashboard shown in Airflow's menu (champions, leaderboard, a
  forecast chart with its bands, recommendations, the scaling plan's state), fed by
  ``/foresight/overview`` (run, champions, leaderboard, series, recommendations, plan) and
  ``/foresight/series`` (one series' actuals and its champion's forecast with bands) and
  ``/foresight/series/search`` (a page of the series of a metric whose id contains a text:
  what the page's series select offers as one types).
- ``/foresight/docs``: Swagger UI of this API (``/foresight/openapi.json``).
- ``/foresight/static/...``: the dashboard's script and style, Plotly.js and Swagger UI,
  served from the installed packages: the page and the docs work offline.
- A menu link to MLflow: ``FORESIGHT_MLFLOW_UI_URL``, else ``MLFLOW_TRACKING_URI`` when
  it is an http(s) URL, else http://localhost:5000 (what ``make ui`` starts).

The operations API (logic in ``foresight_lib.serving.operations``):

- ``POST /foresight/predict``: forecasts with 80/95 % intervals from a metric's registered
  champion (or a named alias or version), kept warm in process.
- ``POST /foresight/train``, ``GET /foresight/train/jobs``, ``GET /foresight/train/jobs/{id}``,
  ``POST /foresight/train/jobs/{id}/cancel``: nightly runs through Airflow's REST API, with
  the caller's token.
- ``GET /foresight/models``, ``GET /foresight/models/{metric}/versions/{version}/metrics``,
  ``POST /foresight/models/{metric}/versions/{version}/activate``: registered versions,
  their backtest scores, and a manual champion switch recorded like a publish.

Authentication and authorisation are Airflow's own (the api-server's JWT, as an
``Authorization: Bearer`` header or the ``_token`` cookie the Airflow UI sets at login, so
the dashboard works for anyone logged into the UI): no or a bad token is 401; reading
(dashboard, docs, forecasts, models, jobs, predict) needs read access to the
``foresight_nightly`` DAG, starting or cancelling a run needs the right to create or edit
its runs, and an activation the right to edit the DAG, else 403. ``/foresight/metrics``
is open for Prometheus unless ``FORESIGHT_METRICS_TOKEN`` is set, then it needs that
bearer token.

Against other sites (``foresight_lib.serving.operations.security``): a state-changing request
authenticated by the cookie is refused with 403 unless its ``Origin`` (else ``Referer``)
is one the UI is served from (the request's own, ``AIRFLOW__API__BASE_URL``'s,
localhost at the api-server's port, ``FORESIGHT_UI_ORIGINS``); every answer carries
``nosniff``, ``X-Frame-Options: SAMEORIGIN`` and a content security policy; and
``/foresight/train*`` calls Airflow only at its configured address
(``[api] base_url``, else the api-server's own port on this host), never at the
request's ``Host``.

This file only wires: reading and rendering live in ``foresight_lib.serving.exposition``,
``foresight_lib.serving.json_views`` and ``foresight_lib.serving.dashboard``. The data
root and horizons come from the Foresight config (``FORESIGHT_CONFIG``,
``FORESIGHT_DATA_ROOT``), read at each request so a config change needs no restart.
"""
from __future__ import annotations

import hmac
import os
from typing import Annotated

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from foresight_lib.orchestration.dags import NIGHTLY_DAG
from foresight_lib.serving.json_views import MAX_PAGE_SIZE, PAGE_SIZE
from foresight_lib.serving.operations import OperationError, security
from foresight_lib.serving.operations.jobs import Job, JobDetail, JobList, Refusal, TrainRequest
from foresight_lib.serving.operations.models import ActivationResponse, ModelsResponse, VersionInfo
from foresight_lib.serving.operations.predict import METRIC_PATTERN, PredictRequest, PredictResponse
from foresight_lib.serving.operations.security import SecurityHeaders
from foresight_lib.serving.operations.telemetry import ApiTelemetry

URL_PREFIX = "/foresight"
METRICS_TOKEN_ENV = "FORESIGHT_METRICS_TOKEN"
TOKEN_COOKIE = "_token"
"""The cookie the Airflow UI keeps its JWT in (``COOKIE_NAME_JWT_TOKEN``)."""


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


def _operations():
    """The operations' settings (config, MLflow configured); an OperationError becomes its HTTP answer."""
    from foresight_lib.serving import operations

    return operations.settings()


def _prefix(request: Request) -> str:
    """Where this app is mounted (``/foresight``, or below Airflow's own path prefix)."""
    root = str(request.scope.get("root_path") or "").rstrip("/")
    return root if root.endswith(URL_PREFIX) else URL_PREFIX


# ---------------------------------------------------------------------------
# Authentication and authorisation: Airflow's own

bearer = HTTPBearer(auto_error=False, description="A JWT of Airflow's api-server (POST /auth/token)")


async def authenticated_user(request: Request,
                             credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]):
    """The Airflow user of the request's JWT (bearer header, else the UI's ``_token`` cookie); 401 without one.

    Airflow answers a token it cannot verify with 403; here any token that does not
    authenticate is 401, so that clients know to log in again.
    """
    from airflow.api_fastapi.core_api.security import get_user

    try:
        return await get_user(request, None, credentials)
    except HTTPException as exc:
        if exc.status_code in (401, 403):
            raise HTTPException(401, detail=f"not authenticated: {exc.detail}; send a JWT of Airflow's api-server "
                                            "(POST /auth/token) as 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"}) from exc
        raise


def _airflow_settings() -> dict[str, str]:
    """Airflow's ``[api]`` base URL, host and port, by the names of their environment variables."""
    from airflow.configuration import conf

    return {"AIRFLOW__API__BASE_URL": conf.get("api", "base_url", fallback="") or "",
            "AIRFLOW__API__HOST": conf.get("api", "host", fallback="") or "",
            "AIRFLOW__API__PORT": str(conf.get("api", "port", fallback="8080") or "8080"),
            security.ORIGINS_ENV: os.environ.get(security.ORIGINS_ENV, "")}


def same_origin(request: Request) -> None:
    """403 for a state-changing request authenticated by the UI's cookie that comes from another origin."""
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    reason = security.cross_origin_refusal(request.method, request.headers, request.cookies, own,
                                           security.allowed_origins(_airflow_settings()))
    if reason:
        raise HTTPException(403, detail=reason)


def _requires(method: str, entity: str | None = None):
    """A dependency: the caller may ``method`` the nightly DAG (or its runs); returns the user's name.

    A state-changing request is also checked for its origin (``same_origin``), once the
    caller is known (an unknown caller is 401 first).
    """

    def dependency(request: Request, user: Annotated[object, Depends(authenticated_user)]) -> str:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
        from airflow.api_fastapi.core_api.security import requires_access_dag

        same_origin(request)
        requires_access_dag(method, DagAccessEntity[entity] if entity else None,
                            param_dag_id=NIGHTLY_DAG)(request, user)
        return user.get_name()

    dependency.__name__ = f"requires_{method.lower()}_{(entity or 'dag').lower()}"
    return dependency


read_access = _requires("GET")
"""Read the nightly DAG: dashboard, docs, forecasts, models, jobs, predict (Airflow's viewers)."""
run_access = _requires("POST", "RUN")
"""Create runs of the nightly DAG: start a training job."""
run_edit_access = _requires("PUT", "RUN")
"""Edit runs of the nightly DAG: cancel a training job."""
dag_edit_access = _requires("PUT")
"""Edit the nightly DAG: activate a model version (changes what is published)."""
Reader = Annotated[str, Depends(read_access)]


def metrics_access(request: Request) -> None:
    """``/metrics`` is open unless ``FORESIGHT_METRICS_TOKEN`` is set; then that bearer token is required."""
    expected = os.environ.get(METRICS_TOKEN_ENV)
    if not expected:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise HTTPException(401, detail=f"/metrics needs 'Authorization: Bearer <{METRICS_TOKEN_ENV}>'",
                            headers={"WWW-Authenticate": "Bearer"})


def _caller_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(TOKEN_COOKIE)


def _airflow(request: Request):
    """Airflow's REST API on behalf of the caller, at its configured address (never the request's ``Host``)."""
    from foresight_lib.serving.operations.jobs import AirflowApi

    return AirflowApi(security.airflow_api_base(_airflow_settings()), _caller_token(request))


# ---------------------------------------------------------------------------
# The app

ERRORS = {401: {"description": "No or an invalid token"}, 403: {"description": "Not allowed for this user"}}
app = FastAPI(title="Foresight", version="1",
              description="Forecasts, recommendations, predictions, training jobs and models of Foresight. "
                          "Every endpoint but /metrics needs a JWT of Airflow's api-server (POST /auth/token), "
                          "as a bearer token or the Airflow UI's login cookie.",
              docs_url=None, redoc_url=None, openapi_url=None, responses=ERRORS)
app.add_middleware(ApiTelemetry)
app.add_middleware(SecurityHeaders)  # the outermost: its headers are on every answer, a 413 included


@app.exception_handler(OperationError)
async def _operation_error(request: Request, exc: OperationError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


@app.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field (``loc``, ``msg``); the offending values are not echoed (they may be NaN)."""
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


@app.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, _: Reader) -> JSONResponse:
    schema = app.openapi()
    if request.scope.get("root_path"):
        schema = {**schema, "servers": [{"url": _prefix(request)}]}
    return JSONResponse(schema)


@app.get("/metrics", summary="Prometheus exposition of the latest forecasts and of this API",
         dependencies=[Depends(metrics_access)], responses={401: {"description": "FORESIGHT_METRICS_TOKEN is set "
                                                                                 "and was not sent"}})
def metrics(request: Request) -> Response:
    from foresight_lib.config import load_config
    from foresight_lib.serving.operations import telemetry

    data_root, horizons = _settings()
    publish = load_config().publish
    body, headers = telemetry.metrics_response(data_root, request.headers.get("accept"),
                                               request.headers.get("accept-encoding"), horizons=horizons,
                                               models=publish.exposition_models,
                                               max_series=publish.exposition_max_series)
    return Response(content=body, headers=headers)


PAGE = {"limit": "Rows per page (default 10,000, at most 100,000)",
        "offset": "Rows to skip: the previous page's next_offset",
        "q": "Keep the series (or entities) whose id contains this text, case-insensitive"}


def _limit(default: int = PAGE_SIZE):
    return Query(default, ge=1, le=MAX_PAGE_SIZE, description=PAGE["limit"])


@app.get("/forecasts", summary="Latest forecasts as JSON, a page at a time")
def forecasts(_: Reader, series: str | None = None, metric: str | None = None, entity: str | None = None,
              model: str | None = None, q: str | None = Query(None, max_length=200, description=PAGE["q"]),
              limit: int = _limit(), offset: int = Query(0, ge=0, description=PAGE["offset"])) -> JSONResponse:
    from foresight_lib.serving import json_views

    data_root, _ = _settings()
    return JSONResponse(json_views.forecasts_payload(data_root, series, metric, entity, model, limit, offset, q))


@app.get("/recommendations", summary="Latest rightsizing recommendations as JSON, a page at a time")
def recommendations(_: Reader, entity: str | None = None, resource: str | None = None,
                    q: str | None = Query(None, max_length=200, description=PAGE["q"]),
                    limit: int = _limit(), offset: int = Query(0, ge=0, description=PAGE["offset"])) -> JSONResponse:
    from foresight_lib.serving import json_views

    data_root, _ = _settings()
    payload = json_views.recommendations_payload(data_root, entity, resource, limit, offset, q)
    if payload is None:
        raise HTTPException(status_code=404, detail=f"no recommendations published under {data_root} yet; "
                                                    "they appear after a successful nightly run")
    return JSONResponse(payload)


@app.get("/overview", summary="The dashboard's data: run, champions, leaderboard, series, recommendations, plan")
def overview(request: Request, _: Reader) -> JSONResponse:
    from foresight_lib.serving import dashboard

    data_root, _ = _settings()
    prefix = _prefix(request)
    return JSONResponse(dashboard.overview(data_root, mlflow_ui_url(), airflow_base=prefix[:-len(URL_PREFIX)],
                                           dag_state=_nightly_state()))


def _nightly_state() -> dict | None:
    """Whether the nightly DAG is paused and how many of its runs wait queued (None when Airflow cannot say)."""
    try:
        from airflow.models.dag import DagModel
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from airflow.utils.state import DagRunState
        from sqlalchemy import func, select

        with create_session() as session:
            paused = session.scalar(select(DagModel.is_paused).where(DagModel.dag_id == NIGHTLY_DAG))
            queued = session.scalar(select(func.count()).select_from(DagRun).where(
                DagRun.dag_id == NIGHTLY_DAG, DagRun.state == DagRunState.QUEUED))
    except Exception:  # noqa: BLE001 - no metadata database here (tests, serve-metrics): nothing to say
        return None
    return None if paused is None else {"paused": bool(paused), "queued": int(queued or 0)}


@app.get("/series/search", summary="A page of the published series of a metric whose id contains a text")
def series_search(_: Reader, metric: str | None = None,
                  q: str | None = Query(None, max_length=200, description=PAGE["q"]),
                  limit: int = _limit(200), offset: int = Query(0, ge=0, description=PAGE["offset"])) -> JSONResponse:
    from foresight_lib.serving import dashboard

    data_root, _ = _settings()
    return JSONResponse(dashboard.series_search(data_root, metric, q, limit, offset))


@app.get("/series", summary="One series' latest actuals and its champion's forecast with 80 and 95 % bands")
def series(_: Reader, series: str | None = None, metric: str | None = None, entity: str | None = None,
           model: str | None = None) -> JSONResponse:
    from foresight_lib.serving import dashboard

    if not series and not (metric and entity):
        raise HTTPException(status_code=400, detail="name a series (?series=<metric>/<entity>) or a metric and "
                                                    "an entity (?metric=...&entity=...)")
    data_root, _ = _settings()
    try:
        return JSONResponse(dashboard.series_payload(data_root, series, metric, entity, model))
    except dashboard.SeriesNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


# -- predict ------------------------------------------------------------------------------

PREDICT_ERRORS = {
    404: {"description": "Unknown metric, series, alias or version"},
    413: {"description": "Body or history over the limits (the message gives the limit)"},
    422: {"description": "History the model cannot use: NaN, duplicate or off-grid timestamps, too little of it"},
}


@app.post("/predict", summary="Forecasts with 80/95 % intervals from a metric's registered champion",
          response_model=PredictResponse, responses=PREDICT_ERRORS)
def predict(body: PredictRequest, _: Reader) -> PredictResponse:
    from foresight_lib.serving.operations import predict as predicting

    return predicting.predict(body, _operations())


# -- training jobs ------------------------------------------------------------------------

JOB_ID = Path(min_length=1, max_length=250, description="The DAG run id returned by POST /train")


@app.post("/train", summary="Start a nightly run with the given parameters", status_code=201,
          response_model=Job, responses={409: {"description": "Airflow refused the run"},
                                         422: {"model": Refusal, "description": "A bad field, or settings that "
                                                                               "would make the run fail"}})
def train(body: TrainRequest, request: Request, _: Annotated[str, Depends(run_access)]) -> Job:
    from foresight_lib.serving.operations import jobs

    with _airflow(request) as api:
        return jobs.start(api, body)


@app.get("/train/jobs", summary="Recent nightly runs, newest first", response_model=JobList)
def train_jobs(request: Request, _: Reader, limit: int = Query(25, ge=1, le=200),
               state: str | None = Query(None, pattern=r"^[a-z_]{1,20}$")) -> JobList:
    from foresight_lib.serving.operations import jobs

    with _airflow(request) as api:
        return jobs.list_jobs(api, limit, state)


@app.get("/train/jobs/{job_id}", summary="A run's state, its tasks' progress and, when done, its leaderboard",
         response_model=JobDetail, responses={404: {"description": "Unknown job"}})
def train_job(request: Request, _: Reader, job_id: Annotated[str, JOB_ID]) -> JobDetail:
    from foresight_lib.serving.operations import jobs

    data_root, _ = _settings()
    with _airflow(request) as api:
        return jobs.get_job(api, job_id, data_root)


@app.post("/train/jobs/{job_id}/cancel", response_model=JobDetail,
          summary="Cancel a run: running tasks failed, pending ones skipped, the run failed once its teardown ran",
          responses={404: {"description": "Unknown job"}, 409: {"description": "The run has already finished"}})
def train_cancel(request: Request, _: Annotated[str, Depends(run_edit_access)],
                 job_id: Annotated[str, JOB_ID]) -> JobDetail:
    from foresight_lib.serving.operations import jobs

    data_root, _ = _settings()
    with _airflow(request) as api:
        return jobs.cancel(api, job_id, data_root)


# -- models -------------------------------------------------------------------------------

METRIC = Path(pattern=METRIC_PATTERN, description="The metric, e.g. cpu_cores")
VERSION = Path(ge=1, le=2_147_483_647, description="A registered version of the metric's model")


@app.get("/models", summary="Per metric: registered versions, aliases and backtest scores per horizon",
         response_model=ModelsResponse)
def models(_: Reader, metric: str | None = Query(None, pattern=METRIC_PATTERN),
           versions: int = Query(20, ge=1, le=200, description="Newest versions per metric")) -> ModelsResponse:
    from foresight_lib.serving.operations import models as registry_view

    return registry_view.list_models(_operations(), metric, versions)


@app.get("/models/{metric}/versions/{version}/metrics", summary="A version's backtest scores and origin",
         response_model=VersionInfo, responses={404: {"description": "Unknown metric or version"},
                                                409: {"description": "The version belongs to another metric"}})
def model_version(_: Reader, metric: Annotated[str, METRIC], version: Annotated[int, VERSION]) -> VersionInfo:
    from foresight_lib.serving.operations import models as registry_view

    return registry_view.version_metrics(_operations(), metric, version)


@app.post("/models/{metric}/versions/{version}/activate", response_model=ActivationResponse,
          summary="Make a version the champion (the previous one becomes previous_champion)",
          responses={404: {"description": "Unknown metric or version"},
                     409: {"description": "Another metric's version, no backtest scores, nothing published yet, "
                                          "or a publish in progress"}})
def model_activate(user: Annotated[str, Depends(dag_edit_access)], metric: Annotated[str, METRIC],
                   version: Annotated[int, VERSION]) -> ActivationResponse:
    from foresight_lib.serving.operations import models as registry_view

    return registry_view.activate(_operations(), metric, version, user)


# -- dashboard, static files, docs ----------------------------------------------------------


@app.get("/static/{name:path}", include_in_schema=False)
def static(name: str, _: Reader) -> FileResponse:
    from foresight_lib.serving import dashboard

    found = dashboard.asset(name)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no static file '{name}'")
    return FileResponse(found.path, media_type=found.media_type, headers={"Cache-Control": found.cache_control})


@app.get("/docs", include_in_schema=False)
def docs(request: Request, _: Reader) -> HTMLResponse:
    from foresight_lib.serving import dashboard

    page = get_swagger_ui_html(title="Foresight API", swagger_ui_parameters={"validatorUrl": None},
                               **dashboard.swagger_urls(_prefix(request)))
    page.headers["Content-Security-Policy"] = security.page_policy(page.body.decode())
    return page


@app.get("/", response_class=HTMLResponse, summary="The dashboard")
def index(request: Request, _: Reader) -> HTMLResponse:
    from foresight_lib.serving import dashboard

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
