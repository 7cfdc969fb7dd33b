"""A generated demo data set: a small Kubernetes cluster as Prometheus/cAdvisor would record it.

Nothing has to be downloaded: a fresh clone runs the nightly pipeline on this data.

What it holds (at ``freq``, ``days`` long, the last point at ``end`` floored to the grid):

- Three services in two namespaces, one container per pod: ``shop/frontend`` (3 pods,
  web traffic: low at night, peak in the afternoon, quieter at weekends), ``shop/api``
  (3 pods, same rhythm, more CPU, a slow memory leak in the pod that restarts) and
  ``batch/worker`` (2 pods, a nightly batch job 01:00-04:00 UTC with heavy CPU and disk).
- Four metrics per container, named as cAdvisor exports them:
  ``container_cpu_usage_seconds_total`` (counter of CPU seconds; its rate is cores),
  ``container_memory_working_set_bytes`` (gauge), ``container_network_receive_bytes_total``
  and ``container_fs_writes_bytes_total`` (byte counters).
- Daily and weekly cycles, a slow drift over weeks, multiplicative noise, occasional
  spikes (10-40 minutes) and a few scrape gaps (missing rows, up to one hour).
- One container restart: the second ``api`` pod restarts :data:`RESTART_AT` of the way
  through the window, so each of its three counters drops back near zero once (a counter
  reset) and its memory falls back to its base.
- One deliberately broken series, ``container_memory_working_set_bytes`` of
  ``shop/legacy-exporter-0/exporter``: a faulty exporter reports negative memory. Its
  labels carry ``"broken"`` with the defect, and validation must quarantine it.

Values are a deterministic function of ``seed`` and absolute time (noise, spikes and gaps
are drawn per series and calendar day), so two runs whose windows overlap see the same
gauge values and counter rates on the overlap, as a backfill of consecutive dates would.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from foresight_lib.errors import DataError
from foresight_lib.frames import SERIES_TABLE_COLUMNS, make_unique_id
from foresight_lib.horizons import to_timedelta
from foresight_lib.sources.catalog import DEMO_METRICS

CPU, MEMORY, NET_RX, DISK_W = DEMO_METRICS
METRICS = DEMO_METRICS
UNITS = {CPU: "seconds", MEMORY: "bytes", NET_RX: "bytes", DISK_W: "bytes"}
COUNTERS = (CPU, NET_RX, DISK_W)
RESTART_AT = 0.6
"""Fraction of the window at which the restarting container restarts."""
BROKEN_ENTITY = "shop/legacy-exporter-0/exporter"
_ANCHOR = pd.Timestamp("2024-01-01", tz="UTC")
_MB = 1024 ** 2


@dataclass(frozen=True)
class _Service:
    namespace: str
    name: str
    pods: int
    pattern: str  # "web" or "batch"
    cpu_cores: float  # mean usage at the daily peak
    memory_mb: float
    net_kbps: float
    disk_kbps: float


SERVICES = (
    _Service("shop", "frontend", 3, "web", cpu_cores=0.35, memory_mb=320, net_kbps=400, disk_kbps=30),
    _Service("shop", "api", 3, "web", cpu_cores=0.9, memory_mb=850, net_kbps=900, disk_kbps=120),
    _Service("batch", "worker", 2, "batch", cpu_cores=1.6, memory_mb=1500, net_kbps=250, disk_kbps=4000),
)
RESTARTING_POD = ("api", 1)
"""(service, pod index) of the container that restarts once in the window."""


def _pod_name(service: str, index: int, seed: int) -> str:
    """A Deployment-style pod name, stable for a seed: ``api-7c9d6f5b8-x2k4p``."""
    rng = np.random.default_rng([seed, zlib.crc32(service.encode()), 7])
    alphabet = np.array(list("bcdfghjklmnpqrstvwxz2456789"))
    template = "".join(rng.choice(alphabet, 9))
    rng_pod = np.random.default_rng([seed, zlib.crc32(service.encode()), 11, index])
    return f"{service}-{template}-{''.join(rng_pod.choice(alphabet, 5))}"


def _load(ds: pd.DatetimeIndex, pattern: str, phase: float) -> np.ndarray:
    """Relative load in about [0.1, 1.3]: daily and weekly cycle with a slow drift."""
    hour = np.asarray(ds.hour + ds.minute / 60.0, dtype=float)
    days = np.asarray((ds - _ANCHOR) / pd.Timedelta("1D"), dtype=float)
    weekend = np.asarray(ds.dayofweek >= 5)
    drift = 1.0 + 0.12 * np.sin(2 * np.pi * days / 45.0 + phase)
    if pattern == "batch":
        in_batch = (hour >= 1.0) & (hour < 4.0)
        ramp = np.clip(np.minimum(hour - 1.0, 4.0 - hour) * 4.0, 0, 1)
        load = np.where(in_batch, 0.25 + 0.75 * ramp, 0.08 + 0.04 * np.sin(2 * np.pi * hour / 24.0))
        return load * drift
    daily = 0.5 * (1 - np.cos(2 * np.pi * (hour - 3.0) / 24.0))  # trough 03:00, peak 15:00 UTC
    daily = 0.15 + 0.85 * daily + 0.08 * np.sin(4 * np.pi * (hour - 9.0) / 24.0)
    return daily * np.where(weekend, 0.65, 1.0) * drift


def _noise_and_spikes(ds: pd.DatetimeIndex, key: list[int], sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicative noise and spike factors, drawn per calendar day so that windows agree."""
    noise = np.ones(len(ds))
    spikes = np.ones(len(ds))
    day = ds.normalize()
    step = ds[1] - ds[0] if len(ds) > 1 else pd.Timedelta("5min")
    per_day = int(pd.Timedelta("1D") / step)
    for value in np.unique(day.asi8):
        rows = np.flatnonzero(day.asi8 == value)
        rng = np.random.default_rng([*key, int(value // 86_400_000_000_000 + 10**6)])
        slot = np.asarray((ds[rows] - ds[rows].normalize()) / step).astype(int)
        day_noise = rng.lognormal(0.0, sigma, per_day)
        noise[rows] = day_noise[slot]
        if rng.random() < 0.35:  # a spike on about one day in three
            start = int(rng.integers(0, per_day))
            length = max(1, int(rng.integers(10, 41) * pd.Timedelta("1min") / step))
            height = float(rng.uniform(1.6, 2.6))
            hit = (slot >= start) & (slot < start + length)
            spikes[rows[hit]] = height
    return noise, spikes


def _gaps(ds: pd.DatetimeIndex, key: list[int]) -> np.ndarray:
    """Rows kept: about one day in eight loses a block of 15-60 minutes (a scrape gap)."""
    keep = np.ones(len(ds), dtype=bool)
    day = ds.normalize()
    step = ds[1] - ds[0] if len(ds) > 1 else pd.Timedelta("5min")
    for value in np.unique(day.asi8):
        rows = np.flatnonzero(day.asi8 == value)
        rng = np.random.default_rng([*key, int(value // 86_400_000_000_000 + 10**6), 3])
        if rng.random() < 0.125:
            length = max(1, int(rng.integers(15, 61) * pd.Timedelta("1min") / step))
            start = int(rng.integers(0, max(1, len(rows) - length)))
            keep[rows[start:start + length]] = False
    return keep


def _counter(rate: np.ndarray, step_s: float, offset: float, reset_at: int | None) -> np.ndarray:
    increments = rate * step_s
    total = offset + np.cumsum(increments)
    if reset_at is not None:
        total[reset_at:] = np.cumsum(increments[reset_at:])
    return total


def generate_demo(end: pd.Timestamp | str, days: int = 16, seed: int = 0,
                  freq: str = "5min") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The demo series frame and its series table, ending at ``end``.

    Args:
        end: the run's data interval end; the last point is ``end`` floored to ``freq``.
            Naive timestamps are taken as UTC.
        days: length of the window in days.
        seed: the demo world; the same seed and window give identical data.
        freq: sampling interval (the Prometheus scrape/step interval).

    Returns:
        ``(frame, series)``: the long frame ``unique_id, ds, y`` (raw values: counters as
        running totals, memory in bytes) sorted by ``unique_id, ds``, and the series table
        ``unique_id, metric, entity, unit, labels, freq`` (labels as JSON text with
        namespace, pod, container, service; the broken series also has ``broken``).
    """
    if days < 1:
        raise DataError(f"demo data needs at least 1 day, got days={days}")
    step = to_timedelta(freq)
    end_ts = pd.Timestamp(end)
    end_ts = end_ts.tz_localize("UTC") if end_ts.tzinfo is None else end_ts.tz_convert("UTC")
    last = end_ts.floor(step)
    n = int(pd.Timedelta(days=days) / step)
    ds = pd.date_range(end=last, periods=n, freq=step).as_unit("ns")
    step_s = step.total_seconds()
    restart_row = int(n * RESTART_AT)

    frames: list[pd.DataFrame] = []
    table: list[dict] = []
    for s_index, svc in enumerate(SERVICES):
        for pod_index in range(svc.pods):
            pod = _pod_name(svc.name, pod_index, seed)
            entity = f"{svc.namespace}/{pod}/{svc.name}"
            labels = {"namespace": svc.namespace, "pod": pod, "container": svc.name, "service": svc.name}
            share = 1.0 + 0.08 * (pod_index - (svc.pods - 1) / 2)  # pods are not perfectly balanced
            restarts = (svc.name, pod_index) == RESTARTING_POD
            load = _load(ds, svc.pattern, phase=0.7 * s_index)
            for m_index, metric in enumerate(METRICS):
                key = [seed, s_index, pod_index, m_index]
                noise, spikes = _noise_and_spikes(ds, key, sigma=0.04 if metric == MEMORY else 0.09)
                if metric == CPU:
                    y = _counter(svc.cpu_cores * share * load * noise * spikes, step_s,
                                 offset=3.0e5 * (1 + pod_index + s_index), reset_at=restart_row if restarts else None)
                elif metric == NET_RX:
                    y = _counter(svc.net_kbps * 1024 * share * load * noise * spikes, step_s,
                                 offset=2.0e10 * (1 + pod_index), reset_at=restart_row if restarts else None)
                elif metric == DISK_W:
                    y = _counter(svc.disk_kbps * 1024 * share * (0.2 + load) * noise, step_s,
                                 offset=5.0e9 * (1 + s_index), reset_at=restart_row if restarts else None)
                else:
                    base = svc.memory_mb * _MB * share
                    y = base * (0.75 + 0.25 * load) * noise
                    if restarts:  # a slow leak, gone after the restart
                        age = np.arange(n) - np.where(np.arange(n) >= restart_row, restart_row, 0)
                        y = y + base * 0.04 * age * step_s / 86_400.0
                keep = _gaps(ds, key)
                uid = make_unique_id(metric, entity)
                frames.append(pd.DataFrame({"unique_id": uid, "ds": ds[keep], "y": y[keep]}))
                table.append({"unique_id": uid, "metric": metric, "entity": entity, "unit": UNITS[metric],
                              "labels": json.dumps(labels, sort_keys=True), "freq": freq})

    # The broken series: negative memory readings from a faulty exporter.
    rng = np.random.default_rng([seed, 99])
    broken = -(200 * _MB) * (1 + 0.1 * rng.standard_normal(n))
    uid = make_unique_id(MEMORY, BROKEN_ENTITY)
    frames.append(pd.DataFrame({"unique_id": uid, "ds": ds, "y": broken}))
    labels = {"namespace": "shop", "pod": "legacy-exporter-0", "container": "exporter", "service": "legacy-exporter",
              "broken": "negative memory readings from a faulty exporter"}
    table.append({"unique_id": uid, "metric": MEMORY, "entity": BROKEN_ENTITY, "unit": "bytes",
                  "labels": json.dumps(labels, sort_keys=True), "freq": freq})

    frame = pd.concat(frames, ignore_index=True)
    frame["unique_id"] = frame["unique_id"].astype(str)
    frame["ds"] = frame["ds"].astype("datetime64[ns, UTC]")
    frame["y"] = frame["y"].astype("float64")
    frame = frame.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)
    series = pd.DataFrame(table, columns=SERIES_TABLE_COLUMNS).sort_values("unique_id").reset_index(drop=True)
    return frame, series
