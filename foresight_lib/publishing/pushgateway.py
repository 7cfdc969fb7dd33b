"""Push the latest forecasts to a Prometheus Pushgateway (optional, after publish).

The pushed families are those ``/metrics`` serves (``foresight_lib.serving.exposition``). A push
replaces the whole group (``job``, plus ``grouping_key``), so series that disappeared
from a publish disappear from the Pushgateway too. Basic auth comes from
``FORESIGHT_PUSHGATEWAY_USER`` and ``FORESIGHT_PUSHGATEWAY_PASSWORD`` when set.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.error import HTTPError, URLError

import pandas as pd
from prometheus_client import push_to_gateway
from prometheus_client.exposition import basic_auth_handler, default_handler

from foresight_lib.errors import ConfigError, SourceError
from foresight_lib.serving.exposition import LatestFiles, Snapshot, static_registry

log = logging.getLogger(__name__)

DEFAULT_JOB = "foresight"


def _handler(environ: Mapping[str, str]) -> Callable:
    user = environ.get("FORESIGHT_PUSHGATEWAY_USER")
    password = environ.get("FORESIGHT_PUSHGATEWAY_PASSWORD", "")
    if not user:
        return default_handler

    def handler(url, method, timeout, headers, data):
        return basic_auth_handler(url, method, timeout, headers, data, user, password)

    return handler


def push_snapshot(url: str, snapshot: Snapshot, *, job: str = DEFAULT_JOB,
                  grouping_key: Mapping[str, str] | None = None, level: str | int | None = None,
                  horizons: Sequence[str] | None = None, timeout_s: float = 10.0, retries: int = 2,
                  backoff_s: float = 1.0, environ: Mapping[str, str] | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> int:
    """Push one snapshot's families to the Pushgateway at ``url``; returns the samples pushed.

    Raises:
        ConfigError: no URL.
        SourceError: every attempt failed; names the URL and the last error.
    """
    if not url or not str(url).strip():
        raise ConfigError("no Pushgateway URL; set publish.pushgateway_url (e.g. http://pushgateway:9091)")
    registry = static_registry(snapshot, level, horizons)
    samples = sum(len(family.samples) for family in registry.collect())
    handler = _handler(os.environ if environ is None else environ)
    last: Exception | None = None
    for attempt in range(1, retries + 2):
        try:
            push_to_gateway(str(url).strip(), job=job, registry=registry, grouping_key=dict(grouping_key or {}),
                            timeout=timeout_s, handler=handler)
            log.info("pushed %d samples to the Pushgateway at %s (job %s)", samples, url, job)
            return samples
        except HTTPError as exc:
            last = exc
            if exc.code < 500:  # a rejected push (bad request, auth) does not get better by retrying
                break
        except (URLError, OSError) as exc:
            last = exc
        if attempt <= retries:
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning("push to %s failed (%s); retrying in %.1fs", url, last, delay)
            sleep(delay)
    raise SourceError(f"could not push forecasts to the Pushgateway at {url}: {last}; check that it runs "
                      "and publish.pushgateway_url (the published forecasts are unaffected)")


def push_forecasts(url: str, forecasts: pd.DataFrame, actuals: pd.DataFrame | None = None,
                   recommendations: pd.DataFrame | None = None, **kwargs: Any) -> int:
    """Push forecast (and recommendation) frames; ``kwargs`` as for :func:`push_snapshot`."""
    snapshot = Snapshot(forecasts=forecasts, actuals=actuals, recommendations=recommendations,
                        published_at=pd.Timestamp.now(tz="UTC"))
    return push_snapshot(url, snapshot, **kwargs)


def push_latest(url: str, data_root: str, **kwargs: Any) -> int:
    """Push what was published last under ``data_root`` (call it after ``publish_latest``).

    Raises:
        SourceError: the push failed; ``ConfigError``: no URL.
    """
    snapshot = LatestFiles(str(data_root)).snapshot()
    if snapshot.forecasts is None:
        log.warning("nothing published under %s; pushing only the exposition's own gauges", data_root)
    return push_snapshot(url, snapshot, **kwargs)
