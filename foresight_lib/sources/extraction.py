"""A run's window of data from the configured source: what the extract step stores.

``extract_window`` gives the run's ``[start, end)``; ``read_window`` chooses the source
(``source.kind``: the generated demo, files local or on S3, Prometheus), reads it,
replays a recorded trace up to the window's end when ``source.replay`` says so, keeps the
configured metrics and cuts the window. It returns what it read and what happened on the
way (``SourceWindow``); writing it into the run folder is the caller's.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import pandas as pd

from foresight_lib.config import config_path
from foresight_lib.errors import ConfigError, DataError
from foresight_lib.frames import sort_series, utc_timestamp
from foresight_lib.sources import prometheus_source
from foresight_lib.sources.demo import generate_demo
from foresight_lib.sources.loaders import load_series

log = logging.getLogger(__name__)

MARGIN = pd.Timedelta("1D")
"""Extra data extracted before the history, so gap filling and counter rates have a lead-in."""

Connection = dict | Callable[[], dict | None] | None
"""The Prometheus connection as a dict, or a function returning it (called only for Prometheus)."""


class SourceWindow(NamedTuple):
    """What ``read_window`` read: the long frame, its series table and what happened (``info``)."""

    frame: pd.DataFrame
    series: pd.DataFrame
    info: dict
    """``kind``, and for files the skipped files, overlapping exports and replay shifts."""


def extract_window(data_interval_end, cfg) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[start, end)``: the history and held-out days the models need, plus a margin, up to the interval end."""
    end = utc_timestamp(data_interval_end)
    span = pd.Timedelta(days=float(cfg.history_days) + float(cfg.test_days)) + MARGIN
    return end - span, end


def replay(frame: pd.DataFrame, end: pd.Timestamp, freq: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Shift each recorded series in time so that its last sample falls one step before ``end``.

    Recorded traces (NAB files, Bitbrains VMs) come from different dates; replaying each
    as if it were live makes them all end where the run's data interval ends. Series of
    one trace that end together keep their alignment.

    Returns:
        The shifted frame and the shift applied per series (as text).
    """
    if frame.empty:
        return frame, {}
    target = end - pd.Timedelta(freq)
    last = frame.groupby("unique_id", sort=False)["ds"].transform("max")
    out = sort_series(frame.assign(ds=frame["ds"] + (target - last)))
    shifts = (target - frame.groupby("unique_id", sort=True)["ds"].max()).astype(str).to_dict()
    return out, shifts


def source_label(cfg) -> str:
    """The source as messages name it: ``files /data/nab (format nab, replayed)``, ``prometheus (conn …)``."""
    source = cfg.source
    if source.kind == "files":
        return f"files {source.path} (format {source.format}{', replayed' if source.replay else ''})"
    if source.kind == "prometheus":
        return "prometheus (source.prometheus.url)" if source.prometheus.url else \
            f"prometheus (connection {source.prometheus.conn_id})"
    return f"demo (seed {source.seed})"


def read_window(cfg, start: pd.Timestamp, end: pd.Timestamp, connection: Connection = None,
                overrides: dict | None = None) -> SourceWindow:
    """The source's series between ``start`` and ``end``, its series table and what happened.

    Args:
        cfg: the run's settings (``source``, ``freq``).
        start, end: the window, ``extract_window``'s; nothing at or after ``end`` is kept.
        connection: the Prometheus connection, or a function returning it (called only
            when the source is Prometheus).
        overrides: the run's settings overrides, so that a message about a setting says
            whether the run's parameters or the config file set it.

    Raises:
        ConfigError: an unknown source kind or metric, or ``source.path`` missing.
        DataError: the source has nothing in the window (or its files cannot be read).
        SourceError: Prometheus or S3 cannot be read.
    """
    source = cfg.source
    info: dict[str, Any] = {"kind": source.kind}
    available: list[str] | None = None
    if source.kind == "demo":
        days = (end - start) / pd.Timedelta("1D")
        frame, series = generate_demo(end, days=int(-(-days // 1)), seed=source.seed, freq=cfg.freq)
    elif source.kind == "files":
        frame, series, available = _read_files(cfg, end, overrides, info)
    elif source.kind == "prometheus":
        conn = connection() if callable(connection) else connection
        result = prometheus_source.extract(cfg, start, end, connection=conn)
        frame, series = result.frame, result.series
    else:
        raise ConfigError(f"unknown source.kind '{source.kind}'; use demo, files or prometheus")
    frame, series = _select_metrics(frame, series, list(source.metrics or []), available,
                                    _set_where(overrides, ("source", "metrics"), ("metrics",)))
    full_span = (frame["ds"].min(), frame["ds"].max()) if len(frame) else (None, None)
    frame = _cut_window(frame, start, end)
    if frame.empty:
        raise DataError(
            f"the source has no data between {start.isoformat()} and {end.isoformat()} "
            f"(it holds {full_span[0]} .. {full_span[1]}); pick a logical date inside the data "
            "or set source.replay: true to replay the trace up to the run's date"
        )
    series = series[series["unique_id"].isin(frame["unique_id"].unique())].reset_index(drop=True)
    return SourceWindow(frame, series, info)


def _read_files(cfg, end: pd.Timestamp, overrides: dict | None,
                info: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The files source, replayed up to ``end`` when ``source.replay``; notes what happened in ``info``."""
    source = cfg.source
    if not source.path:
        raise ConfigError("source.kind is 'files' but source.path is empty; set it to a file, folder or glob")
    try:
        loaded = load_series(source.path, source.format, metrics=list(source.metrics or []) or None)
    except ConfigError as exc:  # the format's own metric list refuses a name
        if not source.metrics:
            raise
        where = _set_where(overrides, ("source", "metrics"), ("metrics",))
        raise ConfigError(f"source.metrics{where}: {exc}") from None
    frame = loaded.frame
    info["skipped_files"] = len(loaded.skipped or [])
    if loaded.skipped:
        info["skipped"] = loaded.skipped[:20]
    overlaps = [n for n in loaded.notes if " overlap from " in n.get("note", "")]
    for note in overlaps:
        log.warning("%s", note["note"])
    if overlaps:
        info["overlaps"] = [n["note"] for n in overlaps[:20]]
    if source.replay:
        frame, shifts = replay(frame, end, cfg.freq)
        info["replay_shifts"] = dict(list(shifts.items())[:20])
    return frame, loaded.series, loaded.available


def _cut_window(frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    keep = (frame["ds"] >= start) & (frame["ds"] < end)
    return frame.loc[keep].reset_index(drop=True)


def _select_metrics(frame: pd.DataFrame, series: pd.DataFrame, metrics: Sequence[str] | None,
                    available: Sequence[str] | None = None, where: str = ""):
    """Keep the series of ``metrics``; an unknown one is a ``ConfigError`` listing what the source has."""
    if not metrics:
        return frame, series
    found = sorted(series["metric"].astype(str).unique())
    unknown = [m for m in metrics if m not in found]
    if unknown:
        known = sorted(set(available or []) | set(found))
        raise ConfigError(f"source.metrics{where}: metric(s) {unknown} are not in the source; it has {known}")
    series = series[series["metric"].isin(list(metrics))].reset_index(drop=True)
    frame = frame[frame["unique_id"].isin(series["unique_id"])].reset_index(drop=True)
    return frame, series


def _set_where(overrides: dict | None, *paths: tuple[str, ...]) -> str:
    """`` (set by the run's parameters)`` when ``overrides`` give one of ``paths``, else `` (set in <config>)``."""
    for keys in paths:
        node: Any = overrides or {}
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            return " (set by the run's parameters)"
    return f" (set in {config_path()})"
