"""The metrics a source offers, known from its settings without reading any data.

The Trigger form lists them (the DAG file is parsed often, so nothing heavy is imported
here): the demo's four metrics, the Prometheus queries (configured, else the defaults of
``include/promql.yaml``), or the metrics configured for files. Empty when they are only
known from the files themselves.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

PROMQL_FILE_ENV = "FORESIGHT_PROMQL_FILE"
DEMO_METRICS = (
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "container_network_receive_bytes_total",
    "container_fs_writes_bytes_total",
)


def rate_metric(metric: str, unit: str = "") -> tuple[str, str]:
    """Unit and metric name of a counter's per-second rate, the name forecasts and models go by.

    ``container_cpu_usage_seconds_total`` -> ``cores``, ``container_cpu_usage_cores``;
    ``container_network_receive_bytes_total`` -> ``bytes/s``, ``container_network_receive_bytes_per_second``.
    """
    if metric.endswith("_seconds_total") or unit == "seconds":
        return "cores", re.sub(r"(_seconds)?_total$", "", metric) + "_cores"
    if metric.endswith("_bytes_total") or unit == "bytes":
        return "bytes/s", re.sub(r"(_bytes)?_total$", "", metric) + "_bytes_per_second"
    return (f"{unit}/s" if unit and unit != "unknown" else "1/s"), re.sub(r"_total$", "", metric) + "_per_second"


def forecast_names(metrics: list[str]) -> dict[str, str]:
    """Source metric -> the name its forecasts, models and dashboard use, for the counters (``*_total``)
    whose rate is forecast under another name; a gauge keeps its name and is not listed."""
    return {m: rate_metric(m)[1] for m in metrics if m.endswith("_total")}


def promql_file() -> Path:
    """Where the default PromQL lives: ``FORESIGHT_PROMQL_FILE``, else ``<home>/include/promql.yaml``."""
    if os.environ.get(PROMQL_FILE_ENV):
        return Path(os.environ[PROMQL_FILE_ENV]).expanduser()
    from foresight_lib.config import foresight_home

    return foresight_home() / "include" / "promql.yaml"


def default_prometheus_metrics(path: Path | None = None) -> list[str]:
    """The metrics of the default PromQL file; empty if it cannot be read (the extract task says why)."""
    try:
        loaded = yaml.safe_load((path or promql_file()).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    metrics = loaded.get("metrics") if isinstance(loaded, dict) else None
    return [str(name) for name in metrics] if isinstance(metrics, dict) else []


def source_metrics(source: Mapping) -> list[str]:
    """Metric names the source's settings (the ``source`` section of the config) make known."""
    kind = source.get("kind") or "demo"
    configured = [str(m) for m in (source.get("metrics") or [])]
    if kind == "demo":
        offered = list(DEMO_METRICS)
    elif kind == "prometheus":
        prometheus = source.get("prometheus") if isinstance(source.get("prometheus"), Mapping) else {}
        queries = prometheus.get("queries")
        configured_queries = isinstance(queries, Mapping) and queries
        offered = [str(m) for m in queries] if configured_queries else default_prometheus_metrics()
    else:
        offered = []
    return offered + [m for m in configured if m not in offered]
