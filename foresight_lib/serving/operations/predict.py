"""``POST /foresight/predict``: forecasts with intervals from a registered champion.

The model is the metric's champion (or a named ``alias`` or ``version``) of
``<prefix>-<metric>``, loaded through MLflow once and kept warm in process, keyed by
registered model and version. The champion is the version ``latest/summary.json`` names
(``champion_versions``), so that the endpoint serves what the rest of Foresight publishes
even while an interrupted publish has moved the ``champion`` alias ahead of ``latest/``;
the alias serves a metric the summary does not name. Which version either names is looked
up again after ``ALIAS_TTL_S`` seconds (or at once after an activation in this process),
so a new champion is served within seconds. Nothing in the registry is ever changed here.

Every refusal names what is wrong: history the model cannot be conditioned on (too
little, duplicate or off-grid timestamps, values unlike the training data), a metric,
series, alias or version that does not exist, or a request over the size limits.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from foresight_lib.errors import ForesightError
from foresight_lib.frames import split_unique_id
from foresight_lib.serving.operations import OperationError, Settings

log = logging.getLogger(__name__)

MAX_ROWS = int(os.environ.get("FORESIGHT_API_MAX_ROWS", "50000"))
"""History rows one request may carry (413 above)."""
MAX_STEPS = 2016
"""Steps ahead one request may ask for (a week of 5-minute data)."""
ALIAS_TTL_S = float(os.environ.get("FORESIGHT_API_ALIAS_TTL_S", "5"))
"""Seconds an alias -> version look-up is reused before asking the registry again."""
MAX_MODELS = int(os.environ.get("FORESIGHT_API_MAX_MODELS", "8"))
"""Models kept warm at most (least recently used dropped first)."""
EARLIEST = pd.Timestamp("1970-01-01", tz="UTC")
LATEST = pd.Timestamp("2200-01-01", tz="UTC")
"""Timestamps accepted in history (pandas' nanosecond range ends in 2262)."""
MAX_GAP_POINTS = int(os.environ["FORESIGHT_API_MAX_GAP_POINTS"]) if os.environ.get("FORESIGHT_API_MAX_GAP_POINTS") \
    else None
"""Missing points among a series' new actuals that are interpolated at most, or half of them if more
(default: the pyfunc model's, ``champion.MAX_GAP_POINTS``, 12)."""
ALIAS_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$"
METRIC_PATTERN = r"^[A-Za-z0-9_:.\-]{1,200}$"
_EXAMPLE_HISTORY = [
    {"unique_id": "container_cpu_usage_cores/shop/web-1", "ds": f"2024-03-15T01:{m:02d}:00Z",
     "y": round(2.0 + 0.05 * i, 2)}
    for i, m in enumerate(range(30, 60, 5))
]


# ---------------------------------------------------------------------------
# Request and response


class HistoryRow(BaseModel):
    """One actual of one series."""

    model_config = ConfigDict(extra="forbid")
    unique_id: str = Field(min_length=1, max_length=512,
                           description="`<metric>/<entity>` as forecast (the dashboard's and the registry's "
                                       "metric name), e.g. container_cpu_usage_cores/shop/web-1")
    ds: datetime = Field(description="Timestamp (ISO 8601; UTC when no offset is given)")
    y: float = Field(description="The value; null is refused, and NaN and infinities are refused with the "
                                 "champion pyfunc model's message (one set of history checks)")


class PredictRequest(BaseModel):
    """Recent history of one or more series and how far ahead to forecast."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"history": _EXAMPLE_HISTORY, "horizons": ["5m", "30m"]},
    ]})
    history: list[HistoryRow] = Field(min_length=1, description=f"Rows `unique_id, ds, y` (at most {MAX_ROWS})")
    metric: str | None = Field(None, pattern=METRIC_PATTERN,
                               description="The metric of every series; default: the part of unique_id before '/'")
    horizons: list[Annotated[str, StringConstraints(min_length=1, max_length=16)]] | None = Field(
        None, min_length=1, max_length=32,
        description="Durations (5m, 15m, 30m); every step up to the longest is returned. Default: the model's "
                    "own horizons")
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="Steps ahead, instead of horizons")
    version: int | None = Field(None, ge=1, le=2_147_483_647, description="A registered version instead of the "
                                                                          "champion")
    alias: str | None = Field(None, pattern=ALIAS_PATTERN, description="An alias instead of 'champion'")
    allow_new_series: bool = Field(False, description="Forecast series the model was not trained on (fresh fit "
                                                      "on the history given) instead of refusing them with 404")
    check_history: Literal["raise", "warn"] = Field(
        "raise", description="raise: refuse history unlike the training data (422); warn: forecast anyway")


class ForecastRow(BaseModel):
    """One step ahead of one series."""

    model_config = ConfigDict(extra="allow")
    unique_id: str
    metric: str
    cutoff: datetime = Field(description="The last actual the forecast is conditioned on")
    ds: datetime
    step: int
    horizon: str | None = Field(None, description="The requested horizon this step is, if any")
    model: str
    yhat: float
    yhat_lo_80: float | None = None
    yhat_hi_80: float | None = None
    yhat_lo_95: float | None = None
    yhat_hi_95: float | None = None


class ModelUsed(BaseModel):
    metric: str
    registered_model: str
    version: int
    alias: str | None = Field(None, description="The alias it was reached through, if any")
    model: str = Field(description="The model class (naive, arima, ensemble…)")
    freq: str
    levels: list[int]


class PredictResponse(BaseModel):
    models: list[ModelUsed]
    forecasts: list[ForecastRow]


# ---------------------------------------------------------------------------
# The warm model cache


class ModelCache:
    """Bundles loaded through MLflow, by (registered model, version), and recent alias look-ups."""

    def __init__(self, max_models: int = MAX_MODELS, alias_ttl_s: float = ALIAS_TTL_S):
        self.max_models = max_models
        self.alias_ttl_s = alias_ttl_s
        self._bundles: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._aliases: dict[tuple[str, str], tuple[int, float]] = {}
        self._published: dict[str, tuple[dict[str, int], float]] = {}
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self.loads = 0

    def forget_aliases(self, name: str | None = None) -> None:
        """Look aliases up again on the next request (of ``name``, or of every model)."""
        with self._lock:
            for key in [k for k in self._aliases if name is None or k[0] == name]:
                del self._aliases[key]
            self._published.clear()

    def published(self, data_root: str) -> dict[str, int]:
        """metric -> champion version, as ``latest/summary.json`` records it (empty when nothing is published)."""
        from foresight_lib.runs.storage import DataRoot

        now = time.monotonic()
        with self._lock:
            hit = self._published.get(data_root)
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            summary = DataRoot(data_root).read_latest_json("summary.json") or {}
        except (ForesightError, ValueError) as exc:
            log.warning("cannot read the published summary under %s (%s); serving the champion aliases", data_root,
                        exc)
            summary = {}
        versions = {str(m): int(v) for m, v in (summary.get("champion_versions") or {}).items() if v is not None}
        with self._lock:
            self._published[data_root] = (versions, now + self.alias_ttl_s)
        return versions

    def clear(self) -> None:
        with self._lock:
            self._bundles.clear()
            self._aliases.clear()
            self._published.clear()

    def resolve(self, name: str, alias: str | None, version: int | None) -> tuple[int, str | None]:
        """The version to serve: ``version`` as given (checked), else the one ``alias`` points at."""
        from foresight_lib.tracking import registry

        if version is not None:
            if (name, version) not in self._bundles:
                version_or_404(name, version)
            return version, None
        alias = alias or registry.CHAMPION_ALIAS
        now = time.monotonic()
        with self._lock:
            hit = self._aliases.get((name, alias))
        if hit is not None and hit[1] > now:
            return hit[0], alias
        number = _alias_or_404(name, alias)
        with self._lock:
            self._aliases[(name, alias)] = (number, now + self.alias_ttl_s)
        return number, alias

    def bundle(self, name: str, version: int):
        """The version's ``ChampionBundle``, loaded once (concurrent first requests wait for one load)."""
        key = (name, version)
        with self._lock:
            if key in self._bundles:
                self._bundles.move_to_end(key)
                return self._bundles[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._bundles:
                    return self._bundles[key]
            from foresight_lib.tracking import registry

            started = time.perf_counter()
            try:
                bundle = registry.load_bundle(f"models:/{name}/{version}")
            except Exception as exc:  # noqa: BLE001 - an unloadable version is the server's problem, said clearly
                raise OperationError(503, f"{name} v{version} could not be loaded through MLflow: "
                                          f"{type(exc).__name__}: {str(exc)[:300]}") from exc
            log.info("loaded %s v%s (%s) in %.2f s", name, version, bundle.model, time.perf_counter() - started)
            with self._lock:
                self._bundles[key] = bundle
                self.loads += 1
                while len(self._bundles) > self.max_models:
                    self._bundles.popitem(last=False)
                self._loading.pop(key, None)
            return bundle


CACHE = ModelCache()


def _registry_down(name: str, exc: Exception) -> OperationError:
    return OperationError(503, f"cannot read {name} from the MLflow registry ({str(exc)[:300]}); check that the "
                               "tracking server is up")


def model_or_404(name: str, metric: str) -> Any:
    """The registered model ``name``; 404 naming the registered metrics when there is none."""
    from mlflow.exceptions import MlflowException

    from foresight_lib.tracking.mlflow_store import mlflow_client, mlflow_name
    from foresight_lib.tracking.registry import METRIC_TAG, is_missing

    client = mlflow_client()
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if not is_missing(exc):
            raise _registry_down(name, exc) from exc
    suffix = mlflow_name(metric)
    prefix = name[: len(name) - len(suffix)] if name.endswith(suffix) else name.split("-", 1)[0] + "-"
    try:
        known = sorted((m.tags or {}).get(METRIC_TAG) or m.name[len(prefix):]
                       for m in client.search_registered_models(f"name LIKE '{prefix}%'"))
    except MlflowException:
        known = []
    raise OperationError(404, f"unknown metric {metric!r}: no registered model {name}"
                              + (f"; registered metrics: {known}" if known else "; no model is registered yet"))


def version_or_404(name: str, version: int) -> Any:
    """The registered version; 404 naming the latest version when there is none such."""
    from mlflow.exceptions import MlflowException

    from foresight_lib.tracking.mlflow_store import mlflow_client
    from foresight_lib.tracking.registry import is_missing

    try:
        return mlflow_client().get_model_version(name, str(version))
    except MlflowException as exc:
        if not is_missing(exc):
            raise _registry_down(name, exc) from exc
    model = model_or_404(name, name.split("-", 1)[-1])
    latest = max((int(v.version) for v in (model.latest_versions or [])), default=None)
    raise OperationError(404, f"unknown version {version} of {name}"
                              + (f" (the latest is {latest})" if latest else ""))


def _alias_or_404(name: str, alias: str) -> int:
    from mlflow.exceptions import MlflowException

    from foresight_lib.tracking.mlflow_store import mlflow_client
    from foresight_lib.tracking.registry import is_missing

    try:
        return int(mlflow_client().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if not is_missing(exc):
            raise _registry_down(name, exc) from exc
    model = model_or_404(name, name.split("-", 1)[-1])
    raise OperationError(404, f"{name} has no alias {alias!r}; its aliases: {sorted(model.aliases or {})}")


# ---------------------------------------------------------------------------
# Serving


def predict(request: PredictRequest, settings: Settings, cache: ModelCache = CACHE) -> PredictResponse:
    """Forecasts for every series of ``request`` from its metric's model.

    Raises:
        OperationError: 413 over the row limit; 404 an unknown metric, series, alias or
            version; 422 history the model cannot use (each names the series and why).
    """
    from foresight_lib.tracking.registry import CHAMPION_ALIAS, registered_model_name

    if len(request.history) > MAX_ROWS:
        raise OperationError(413, f"the request carries {len(request.history)} history rows; the limit is "
                                  f"{MAX_ROWS} (send fewer series per request)")
    if request.horizons and request.steps:
        raise OperationError(422, "give either horizons or steps, not both")
    if request.version is not None and request.alias:
        raise OperationError(422, "give either version or alias, not both")
    frame = _frame(request)
    by_metric = dict(tuple(frame.groupby("metric", sort=True)))
    if len(by_metric) > 1 and (request.version is not None or request.alias):
        raise OperationError(422, f"the history holds series of {len(by_metric)} metrics {sorted(by_metric)}; a "
                                  "version or alias names one model: send one metric per request")
    used, rows = [], []
    for metric, rows_of_metric in by_metric.items():
        name = registered_model_name(metric, settings.name_prefix)
        published = None if request.alias or request.version is not None else \
            cache.published(settings.data_root).get(metric)
        if published is not None:
            version, alias = cache.resolve(name, None, published)[0], CHAMPION_ALIAS
        else:
            version, alias = cache.resolve(name, request.alias, request.version)
        bundle = cache.bundle(name, version)
        history = rows_of_metric[["unique_id", "ds", "y"]]
        check_history(bundle, history, name, version, request.allow_new_series)
        steps, labels = _steps(bundle, request)
        try:
            forecast = bundle.forecast(history, h_steps=steps, check_history=request.check_history)
        except ForesightError as exc:
            raise OperationError(422, f"{name} v{version}: {exc}") from exc
        forecast["metric"] = metric
        forecast["horizon"] = forecast["step"].map(labels)
        rows.extend(_records(forecast))
        used.append(ModelUsed(metric=metric, registered_model=name, version=version, alias=alias,
                              model=bundle.model, freq=bundle.freq, levels=list(bundle.levels)))
    return PredictResponse(models=used, forecasts=rows)


def _frame(request: PredictRequest) -> pd.DataFrame:
    uids = [row.unique_id for row in request.history]
    if request.metric:
        metrics = [request.metric] * len(uids)
    else:
        metrics = []
        for uid in uids:
            metric, entity = split_unique_id(uid)
            if not entity or not metric:
                raise OperationError(422, f"cannot tell the metric of series {uid!r}: name it in 'metric' or use "
                                          "unique_id '<metric>/<entity>'")
            metrics.append(metric)
    try:
        ds = pd.to_datetime([row.ds for row in request.history], utc=True)
        outside = (ds < EARLIEST) | (ds > LATEST)
        if outside.any():
            raise ValueError(f"{ds[outside][0].isoformat()}")
        ds = ds.as_unit("ns")
    except (ValueError, OverflowError) as exc:
        raise OperationError(422, f"a timestamp is out of range ({exc}); send timestamps between "
                                  f"{EARLIEST.year} and {LATEST.year}") from exc
    frame = pd.DataFrame({"unique_id": uids, "metric": metrics, "ds": ds,
                          "y": np.asarray([row.y for row in request.history], dtype="float64")})
    return frame.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)


def check_history(bundle, history: pd.DataFrame, name: str, version: int, allow_new: bool) -> None:
    """Refuse history the model cannot be conditioned on, as the pyfunc model does (``refuse_unusable``)."""
    from foresight_lib.forecasting import champion

    try:
        bundle.refuse_unusable(history, allow_new_series=allow_new,
                               max_gap_points=champion.MAX_GAP_POINTS if MAX_GAP_POINTS is None else MAX_GAP_POINTS)
    except champion.HistoryRefused as exc:
        raise OperationError(exc.status, f"{name} v{version}: {exc}") from exc


def _steps(bundle, request: PredictRequest) -> tuple[int, dict[int, str]]:
    from foresight_lib.horizons import horizon_steps, parse_horizons

    if request.steps:
        return int(request.steps), {}
    horizons = request.horizons or list(bundle.horizons)
    try:
        by_step = {horizon_steps(h, bundle.freq): h for h in parse_horizons(horizons)}
    except (ForesightError, ValueError, OverflowError) as exc:
        raise OperationError(422, f"horizons {horizons}: {exc}") from exc
    steps = max(by_step)
    if steps > MAX_STEPS:
        raise OperationError(422, f"horizons {horizons} reach {steps} steps ahead; the limit is {MAX_STEPS}")
    return steps, by_step


def _records(forecast: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    columns = list(forecast.columns)
    for values in forecast.itertuples(index=False, name=None):
        record = dict(zip(columns, values, strict=True))
        for key, value in record.items():
            if isinstance(value, pd.Timestamp):
                record[key] = value.to_pydatetime()
            elif isinstance(value, np.generic):
                record[key] = value.item()
            if isinstance(record[key], float) and not math.isfinite(record[key]):
                record[key] = None
        if record.get("horizon") is not None and not isinstance(record["horizon"], str):
            record["horizon"] = None
        out.append(record)
    return out
