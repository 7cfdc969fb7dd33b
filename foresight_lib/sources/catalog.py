"""The metrics a source offers, known from its settings without reading any data.

The Trigger form lists them (the DAG file is parsed often, so nothing heavy is imported
here): the demo's four metrics, the Prometheus queries (configured, else the defaults of
``include/promql.yaml``), or the metrics configured for files. Empty when they are only
known from the files themselves.
"""
from __future__ import annotations

import os
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
