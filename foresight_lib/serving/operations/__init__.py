"""The operations API behind the plugin's ``/foresight`` endpoints, without Airflow.

- ``predict``: forecasts from a registered champion (warm cache, input checks);
- ``models``: registered versions, their backtest scores, and a manual activation that
  moves ``champion`` under the publish lock and records it in ``latest/summary.json``;
- ``jobs``: nightly runs started, listed, followed and cancelled through Airflow's REST API;
- ``telemetry``: per-request logging, counters and latency histograms for ``/metrics``,
  and the request body limit.

Every failure a caller can fix is an ``OperationError`` carrying its HTTP status; the
plugin turns it into a JSON ``{"detail": ...}`` answer.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from foresight_lib.errors import ForesightError


class OperationError(ForesightError):
    """A request that cannot be served as asked; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = int(status)
        self.detail = detail


@dataclass(frozen=True)
class Settings:
    """What the operations need from the Foresight config."""

    data_root: str
    name_prefix: str
    tracking_uri: str
    artifact_location: str | None
    experiment: str
    lock_timeout: str
    lock_wait: str
    horizons: tuple[str, ...]


_configured: dict[str, str] = {}
_configure_lock = threading.Lock()


def settings(config_path: str | None = None) -> Settings:
    """The settings of the Foresight config, with MLflow pointed at its store (once per store).

    Raises:
        OperationError: 500 naming the problem when the config is invalid or MLflow unusable.
    """
    from foresight_lib.config import load_config

    try:
        cfg = load_config(config_path)
    except ForesightError as exc:
        raise OperationError(500, f"Foresight config: {exc}") from exc
    out = Settings(
        data_root=cfg.data_root, name_prefix=cfg.mlflow.model_name_prefix.rstrip("-"),
        tracking_uri=cfg.mlflow.tracking_uri, artifact_location=cfg.mlflow.artifact_location,
        experiment=cfg.mlflow.experiment, lock_timeout=cfg.publish.lock_timeout, lock_wait=cfg.publish.wait,
        horizons=tuple(cfg.horizons),
    )
    key = f"{out.tracking_uri}|{out.experiment}"
    with _configure_lock:
        if _configured.get("key") != key:
            from foresight_lib.tracking import mlflow_store

            try:
                mlflow_store.configure(tracking_uri=out.tracking_uri, artifact_location=out.artifact_location,
                                   experiment=out.experiment, http_timeout_s=cfg.mlflow.http_timeout_s,
                                   http_max_retries=cfg.mlflow.http_max_retries)
            except ForesightError as exc:
                raise OperationError(503, f"MLflow: {exc}") from exc
            _configured["key"] = key
    return out
