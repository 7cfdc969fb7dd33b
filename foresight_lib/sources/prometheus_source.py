"""The Prometheus source: ``query_range`` over a window, in chunks, into the long frame.

Prometheus refuses a range query that would return more than 11,000 points per series,
so a window is split into chunks of at most ``max_points - 1`` evaluation times each: a
chunk covers ``[t0, t0 + (n - 1) * step]`` and the next one starts one step later, so no
point is lost or read twice. Every request has a deadline (``timeout_s``, from connect to
the last byte of the answer, however slowly the server sends it; ``http_deadline``) and
is retried with exponential backoff on connection errors, passed deadlines, 5xx/429
answers and malformed JSON; once the retries are spent a ``SourceError`` names the query,
the URL and the last error. No message or log line carries a password or token: URLs
are shown through ``redaction``.

Endpoints and secrets come from environment variables (``FORESIGHT_PROMETHEUS_URL``,
``_TOKEN`` or ``_TOKEN_FILE``, ``_USER``/``_PASSWORD``, ``_CA_FILE``, ``_CERT_FILE``/
``_KEY_FILE``, ``_INSECURE_SKIP_VERIFY``) or from an Airflow connection that the DAG side
resolves and passes in as a plain dict (see ``PrometheusSettings.from_connection_dict``);
this module never imports Airflow.

The result is the long frame (``unique_id = <metric>/<entity>``, ``ds`` UTC, ``y``
float64) and the series table; the entity is made of the values of the aggregation
labels (``namespace/pod/container``). Default PromQL per metric lives in
``include/promql.yaml``; values from the configuration that go into label matchers are
always escaped as PromQL strings (``foresight_lib.sources.promql``).
"""
from __future__ import annotations

import base64
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import requests

from foresight_lib.errors import ConfigError, DataError, SourceError
from foresight_lib.frames import SERIES_COLUMNS, SERIES_TABLE_COLUMNS, make_unique_id
from foresight_lib.horizons import format_duration
from foresight_lib.redaction import is_secret_key, redact_text, redact_url
from foresight_lib.sources import http_deadline
from foresight_lib.sources.prometheus_settings import (
    ENV_PREFIX,
    PrometheusSettings,
    parse_step,
    parse_time,
    resolve_settings,
)
from foresight_lib.sources.promql import (
    MetricQuery,
    PromqlCatalog,
    build_selector,
    check_label_name,
    load_promql,
    promql_duration,
    render_query,
)

log = logging.getLogger(__name__)

DEFAULT_METRIC = "value"
"""Metric name of an ad-hoc query's series when neither ``metric`` nor ``__name__`` names it."""

_RETRIED_ERROR_TYPES = {"timeout", "canceled", "internal", "unavailable"}

def _ms(stamp: pd.Timestamp) -> int:
    return int(stamp.as_unit("ns").value // 1_000_000)


def plan_chunks(start_ms: int, end_ms: int, step_ms: int, max_points: int) -> list[tuple[int, int]]:
    """Split the evaluation times ``start, start + step, ... <= end`` into query windows.

    Every window holds at most ``max_points - 1`` evaluation times, strictly under
    Prometheus' limit; a window is ``[t0, t0 + (n - 1) * step]`` and the next starts at
    ``t0 + n * step``, so together they hold each evaluation time exactly once.
    """
    if end_ms < start_ms:
        return []
    total = (end_ms - start_ms) // step_ms + 1
    per_chunk = max(1, max_points - 1)
    chunks = []
    for first in range(0, total, per_chunk):
        count = min(per_chunk, total - first)
        chunk_start = start_ms + first * step_ms
        chunks.append((chunk_start, chunk_start + (count - 1) * step_ms))
    return chunks


def _fmt_seconds(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}" if ms >= 0 else f"{ms / 1000:.3f}"


# ---------------------------------------------------------------------------
# The HTTP client


class _Retry(Exception):
    """A failed attempt worth another try (after ``retry_after`` seconds when the server says so)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _Fatal(Exception):
    """A failed attempt that another try would not fix."""


@dataclass
class _Series:
    labels: dict[str, str]
    times: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)


class PrometheusClient:
    """``query_range`` with chunking, deadlines and retries.

    Args:
        settings: URL, auth, TLS and limits.
        session: a ``requests`` session to use instead of one built from ``settings``.
        sleep: the function that waits between attempts (tests pass a recorder).
    """

    def __init__(self, settings: PrometheusSettings, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self.base_url = settings.require_url()
        self.display_url = redact_url(self.base_url)
        """The base URL as messages and logs show it (no secret query parameter)."""
        self._secrets = _secret_literals(settings)
        self.session = session or settings.session()
        self.sleep = sleep

    def query_range(self, query: str, start: pd.Timestamp, end: pd.Timestamp, step: pd.Timedelta) -> list[_Series]:
        """The series of ``query`` at ``start, start + step, ... <= end``, read in chunks.

        Raises:
            SourceError: a chunk failed after the retries; names the query and the URL.
        """
        step_ms = max(1, int(round(step.total_seconds() * 1000)))
        chunks = plan_chunks(_ms(start), _ms(end), step_ms, self.settings.max_points)
        log.info("Prometheus %s: %s in %d chunk(s) of at most %d points, step %ss", self.display_url, query,
                 len(chunks), self.settings.max_points - 1, step_ms / 1000)
        merged: dict[tuple, _Series] = {}
        for chunk_start, chunk_end in chunks:
            for labels, times, values in self._query_chunk(query, chunk_start, chunk_end, step_ms):
                key = tuple(sorted(labels.items()))
                entry = merged.setdefault(key, _Series(labels))
                entry.times.append(times)
                entry.values.append(values)
        return list(merged.values())

    def _query_chunk(self, query: str, start_ms: int, end_ms: int, step_ms: int) -> list[tuple]:
        params = {"query": query, "start": _fmt_seconds(start_ms), "end": _fmt_seconds(end_ms),
                  "step": _fmt_seconds(step_ms), "timeout": f"{max(1, int(self.settings.timeout_s))}s"}
        return self.request("/api/v1/query_range", params, query, _parse_matrix)

    def request(self, path: str, params: Mapping[str, str], query: str, parse: Callable[[dict], Any]) -> Any:
        """POST ``params`` to ``path``; ``parse`` of the ``data`` of a successful answer.

        A ``parse`` that fails (TypeError, ValueError, KeyError, IndexError) marks the
        answer as malformed, which is retried like a 5xx.

        Raises:
            SourceError: every attempt failed, or one failed in a way a retry cannot fix.
        """
        url = self.base_url + path
        attempts = self.settings.retries + 1
        last = "no attempt made"
        for attempt in range(1, attempts + 1):
            wait = None
            try:
                return self._attempt(url, params, parse)
            except _Fatal as exc:
                raise SourceError(self._message(query, str(exc), attempt)) from None
            except _Retry as exc:
                last = self._scrub(str(exc))
                wait = exc.retry_after
            if attempt < attempts:
                delay = min(self.settings.max_backoff_s, self.settings.backoff_s * 2 ** (attempt - 1))
                delay = max(delay, min(wait or 0.0, self.settings.max_backoff_s))
                delay *= 1 + random.uniform(0, 0.1)
                log.warning("Prometheus attempt %d/%d failed (%s); retrying in %.2fs", attempt, attempts, last, delay)
                self.sleep(delay)
        raise SourceError(self._message(query, last, attempts))

    def _message(self, query: str, error: str, attempts: int) -> str:
        tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        return self._scrub(f"Prometheus query failed {tries}: {error}; query: {query}; URL: {self.display_url}")

    def _scrub(self, text: str) -> str:
        """``text`` as it may be shown: URLs redacted, and this client's own secrets wherever they appear
        (a server or proxy may echo a token or the basic-auth header back in its error)."""
        text = redact_text(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _attempt(self, url: str, params: Mapping[str, str], parse: Callable[[dict], Any]) -> Any:
        timeout = self.settings.timeout_s
        try:
            response = http_deadline.post(self.session, url, params, timeout)
        except http_deadline.DeadlineExceeded as exc:
            raise _Retry(f"{exc}; source.prometheus.timeout_s bounds the whole request (connect to last byte): "
                         "raise it, or check the server and any proxy in front of it") from exc
        except requests.exceptions.SSLError as exc:
            raise _Fatal(f"TLS error: {exc}; set the CA bundle ({ENV_PREFIX}CA_FILE or the connection's "
                         "extra.ca_file) or, for a test server only, insecure_skip_verify") from exc
        except requests.Timeout as exc:
            raise _Retry(f"no answer within {min(timeout, http_deadline.MAX_CONNECT_S):g}s "
                         f"({type(exc).__name__})") from exc
        except requests.ConnectionError as exc:
            raise _Retry(f"cannot connect: {_short(exc)}") from exc
        except requests.RequestException as exc:
            raise _Fatal(f"bad request: {exc}") from exc
        status = response.status_code
        body = _json_or_none(response)
        detail = _error_text(body, response)
        if status in (401, 403):
            raise _Fatal(f"HTTP {status} {detail}; check the credentials (bearer token or user/password of "
                         f"the connection 'foresight_prometheus' or {ENV_PREFIX}TOKEN/_USER/_PASSWORD)")
        if status == 429 or status >= 500:
            raise _Retry(f"HTTP {status} {detail}", _retry_after(response))
        if status == 404:
            raise _Fatal(f"HTTP 404 at {url}; is the URL Prometheus' base URL (e.g. http://prometheus:9090)?")
        if status >= 400:
            raise _Fatal(f"HTTP {status} {detail}")
        if not isinstance(body, dict):
            raise _Retry(f"malformed answer: not JSON ({_snippet(response)})")
        if body.get("status") != "success":
            error_type = str(body.get("errorType") or "")
            text = f"Prometheus error {error_type or '?'}: {body.get('error') or body}"
            raise (_Retry(text) if error_type in _RETRIED_ERROR_TYPES else _Fatal(text))
        for warning in body.get("warnings") or []:
            log.warning("Prometheus warning: %s", self._scrub(str(warning)))
        data = body.get("data")
        if not isinstance(data, dict) or data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
            raise _Retry(f"malformed answer: no matrix result in {_snippet(response)}")
        try:
            return parse(data)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise _Retry(f"malformed answer: {type(exc).__name__}: {exc}") from exc


def _secret_literals(settings: PrometheusSettings) -> list[str]:
    """The password, the token and the basic-auth header value, longest first (3 characters or more:
    masking every "a" of a message would hide more than it protects)."""
    found = {settings.token, settings.password}
    if settings.username:
        found.add(base64.b64encode(f"{settings.username}:{settings.password or ''}".encode()).decode())
    found.update(str(v) for k, v in settings.headers.items() if is_secret_key(k))
    return sorted((s for s in found if s and len(s) >= 3), key=len, reverse=True)


def _parse_matrix(data: dict) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    """``(labels, times in ms, values)`` per series of a matrix answer; values may be NaN or ±Inf."""
    out = []
    for item in data["result"]:
        labels = item["metric"]
        if not isinstance(labels, dict):
            raise ValueError("a series' metric is not an object")
        pairs = item.get("values") or []
        if item.get("histograms"):
            log.warning("Prometheus returned native histograms for %s; they are not read", labels)
        if not pairs:
            continue
        times = np.rint(np.asarray([float(p[0]) for p in pairs], dtype=np.float64) * 1000).astype(np.int64)
        values = np.asarray([str(p[1]) for p in pairs]).astype(np.float64)
        out.append(({str(k): str(v) for k, v in labels.items()}, times, values))
    return out


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_text(body: Any, response: requests.Response) -> str:
    if isinstance(body, dict) and body.get("error"):
        return f"{body.get('errorType') or 'error'}: {body['error']}"
    return _snippet(response)


def _snippet(response: requests.Response) -> str:
    text = (response.text or "").strip().replace("\n", " ")
    return repr(text[:200] + ("..." if len(text) > 200 else "")) if text else "(empty body)"


def _short(exc: Exception) -> str:
    text = str(exc)
    match = re.search(r"(\[Errno [^\]]+\][^'\")]*)", text)
    return match.group(1).strip() if match else text[:300]


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# Series -> long frame and series table


@dataclass
class PrometheusResult:
    """What the source read: the long frame, the series table and what it skipped.

    Unpacks as ``frame, series = extract_metrics(...)``.
    """

    frame: pd.DataFrame
    series: pd.DataFrame
    queries: dict[str, str] = field(default_factory=dict)
    """metric -> the PromQL sent (placeholders filled)."""
    skipped: list[dict] = field(default_factory=list)
    """``{"unique_id": metric, "reason": ...}`` per metric whose query returned no series."""
    notes: list[dict] = field(default_factory=list)
    """``{"unique_id": ..., "note": ...}``: values changed on the way in (±Inf to NaN)."""

    def __iter__(self) -> Iterator[pd.DataFrame]:
        yield self.frame
        yield self.series


def _freq_label(step: pd.Timedelta) -> str:
    label = promql_duration(step)
    return label.replace("m", "min") if label.endswith("m") and not label.endswith("ms") else label


def _entities(series: Sequence[_Series], aggregation: Sequence[str]) -> list[str]:
    """An entity per series: the aggregation labels' values joined by ``/`` (all labels if none)."""
    names = []
    for s in series:
        labels = {k: v for k, v in s.labels.items() if k != "__name__"}
        present = [labels[a] for a in aggregation if a in labels]
        if aggregation and present:
            names.append("/".join(present))
        else:
            names.append(",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "all")
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    out = []
    for s, name in zip(series, names, strict=True):
        if counts[name] > 1 and aggregation:  # labels beyond the aggregation tell them apart
            rest = {k: v for k, v in s.labels.items() if k != "__name__" and k not in aggregation}
            name = f"{name}{{{','.join(f'{k}={v}' for k, v in sorted(rest.items()))}}}"
        out.append(name)
    return out


def series_to_frames(series: Sequence[_Series], metric: str | None, aggregation: Sequence[str],
                     step: pd.Timedelta, unit: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """The long frame, series table and notes for the series of one query."""
    from foresight_lib.frames import guess_unit

    frames, rows, notes = [], [], []
    freq = _freq_label(step)
    for s, entity in zip(series, _entities(series, aggregation), strict=True):
        name = metric or s.labels.get("__name__") or DEFAULT_METRIC
        uid = make_unique_id(name, entity)
        times = np.concatenate(s.times)
        values = np.concatenate(s.values)
        order = np.argsort(times, kind="stable")
        times, values = times[order], values[order]
        infinite = np.isinf(values)
        if infinite.any():
            notes.append({"unique_id": uid, "note": f"{int(infinite.sum())} ±Inf value(s) read as missing (NaN)"})
            values = np.where(infinite, np.nan, values)
        frames.append(pd.DataFrame({
            "unique_id": uid,
            "ds": pd.to_datetime(times, unit="ms", utc=True).as_unit("ns"),
            "y": values.astype("float64"),
        }))
        rows.append({"unique_id": uid, "metric": name, "entity": entity, "unit": unit or guess_unit(name),
                     "labels": json.dumps(s.labels, sort_keys=True), "freq": freq})
    frame = pd.concat(frames, ignore_index=True) if frames else _empty_frame()
    table = pd.DataFrame(rows, columns=SERIES_TABLE_COLUMNS)
    return frame, table, notes


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({"unique_id": pd.Series([], dtype=object), "ds": pd.Series([], dtype="datetime64[ns, UTC]"),
                         "y": pd.Series([], dtype="float64")})


def _finish(frames: list[pd.DataFrame], tables: list[pd.DataFrame], queries: dict[str, str],
            skipped: list[dict], notes: list[dict]) -> PrometheusResult:
    frame = pd.concat(frames, ignore_index=True) if frames else _empty_frame()
    frame["unique_id"] = frame["unique_id"].astype(str)
    frame = frame.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)[SERIES_COLUMNS]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=SERIES_TABLE_COLUMNS)
    duplicated = table["unique_id"].duplicated(keep=False)
    if duplicated.any():
        raise DataError(f"several queries produce the series {sorted(set(table.loc[duplicated, 'unique_id']))}; "
                        "give each query its own metric name")
    table = table.sort_values("unique_id").reset_index(drop=True)
    return PrometheusResult(frame, table, queries, skipped, notes)


# ---------------------------------------------------------------------------
# Entry points


def extract_prometheus(url: str | None = None, query: str | None = None, start: Any = None, end: Any = None,
                       step: Any = "5m", metric: str | None = None, *, aggregation: str | Sequence[str] | None = None,
                       settings: PrometheusSettings | None = None, token: str | None = None,
                       username: str | None = None, password: str | None = None, ca_file: str | None = None,
                       cert_file: str | None = None, key_file: str | None = None,
                       insecure_skip_verify: bool | None = None, timeout_s: float | None = None,
                       retries: int | None = None, max_points: int | None = None,
                       environ: Mapping[str, str] | None = None,
                       session: requests.Session | None = None) -> PrometheusResult:
    """Run one ad-hoc range query (what ``foresight extract --source prometheus`` does).

    Evaluation times are ``start, start + step, ... <= end`` as Prometheus gives them.
    Settings not passed come from ``settings`` or else the ``FORESIGHT_PROMETHEUS_*``
    environment variables. Each series becomes ``<metric>/<entity>``: ``metric`` (or the
    series' ``__name__``, or ``value``) and the entity from the ``aggregation`` labels
    (a level name or label names), or from all labels when none is given.

    Raises:
        ConfigError: a missing or invalid argument (URL, query, times, step).
        SourceError: Prometheus could not be read (after the retries).
        DataError: the query returned no series in the window.
    """
    if not query or not str(query).strip():
        raise ConfigError("no PromQL query given; pass e.g. --query 'rate(container_cpu_usage_seconds_total[5m])'")
    if start is None or end is None:
        raise ConfigError("a range query needs a start and an end time (ISO 8601, Unix seconds or now-2h)")
    now = pd.Timestamp.now(tz="UTC")
    t0, t1, step_td = parse_time(start, "start", now), parse_time(end, "end", now), parse_step(step)
    if t1 < t0:
        raise ConfigError(f"end {t1.isoformat()} is before start {t0.isoformat()}; swap them")
    base = settings or PrometheusSettings.from_env(environ)
    changes = {k: v for k, v in {
        "url": url, "token": token, "username": username, "password": password, "ca_file": ca_file,
        "cert_file": cert_file, "key_file": key_file, "insecure_skip_verify": insecure_skip_verify,
        "timeout_s": timeout_s, "retries": retries, "max_points": max_points}.items() if v is not None}
    if "token" in changes or "username" in changes:
        changes.setdefault("token", None)
        changes.setdefault("username", None)
        changes.setdefault("password", password)
    resolved = replace(base, **changes)
    catalog = None
    labels: tuple[str, ...] = ()
    if aggregation is not None:
        catalog = load_promql() if isinstance(aggregation, str) else None
        labels = catalog.labels_for(aggregation) if catalog else tuple(
            check_label_name(x, "aggregation label") for x in aggregation)
    window = catalog.rate_window(step_td) if catalog else max(step_td, pd.Timedelta(minutes=1))
    text = render_query(str(query).strip(), labels, "", window, what="the query")
    client = PrometheusClient(resolved, session=session)
    series = client.query_range(text, t0, t1, step_td)
    if not series:
        raise DataError(f"the query returned no series between {t0.isoformat()} and {t1.isoformat()}: {text}; "
                        f"try it in Prometheus' UI at {client.display_url}/graph")
    frame, table, notes = series_to_frames(series, metric, labels, step_td)
    return _finish([frame], [table], {metric or DEFAULT_METRIC: text}, [], notes)


def extract_metrics(settings: PrometheusSettings, queries: Mapping[str, str] | None, start: Any, end: Any,
                    step: Any, aggregation: str | Sequence[str] = "container", *,
                    labels: Mapping[str, str | Sequence[str]] | None = None, metrics: Sequence[str] | None = None,
                    catalog: PromqlCatalog | None = None, align: bool = True,
                    session: requests.Session | None = None) -> PrometheusResult:
    """Read a set of metrics, one PromQL template each, over ``[start, end]`` at ``step``.

    Args:
        settings: URL, auth, TLS, limits (``resolve_settings`` builds them from the config,
            the Airflow connection dict and the environment).
        queries: metric -> PromQL template (``{aggregation}``, ``{selector}``,
            ``{rate_window}`` are filled); empty or None: the defaults of ``include/promql.yaml``.
        step: the series frequency (``5min``); also the query step.
        aggregation: ``container``, ``pod``, ``namespace`` (or label names); a default
            query whose metric is not kept that finely (network: per pod) uses its own level.
        labels: equality filters added to ``{selector}`` (label -> value or list of
            values), escaped; e.g. ``{"namespace": "shop"}``.
        metrics: keep only these metrics of ``queries`` (or of the defaults).
        align: evaluate at whole multiples of ``step`` since the epoch (a regular grid
            shared by all runs); otherwise at ``start + k * step``.

    Returns:
        A ``PrometheusResult``: long frame, series table (unit, labels JSON, freq), the
        rendered queries, and the metrics that returned nothing.

    Raises:
        ConfigError: a query template or filter is invalid, or a named metric has no query.
        SourceError: Prometheus could not be read (after the retries); names the query.
        DataError: no query returned any series.
    """
    catalog = catalog or load_promql()
    step_td = parse_step(step)
    now = pd.Timestamp.now(tz="UTC")
    t0, t1 = parse_time(start, "start", now), parse_time(end, "end", now)
    if align:
        step_ns = step_td.value
        t0 = pd.Timestamp(-(-t0.value // step_ns) * step_ns, tz="UTC")
        t1 = pd.Timestamp(t1.value // step_ns * step_ns, tz="UTC")
    if t1 < t0:
        raise DataError(f"the window {start} .. {end} holds no {format_duration(step_td)} step; widen it")
    templates: dict[str, MetricQuery] = {}
    if queries:
        for name, text in queries.items():
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"source.prometheus.queries.{name} is empty; give a PromQL expression")
            known = catalog.metrics.get(name)
            templates[name] = MetricQuery(name, text.strip(), known.unit if known else None)
    else:
        templates = dict(catalog.metrics)
    if metrics:
        unknown = [m for m in metrics if m not in templates]
        if unknown:
            raise ConfigError(f"no PromQL for metric(s) {unknown}; add them to source.prometheus.queries "
                              f"(known: {', '.join(templates)})")
        templates = {m: templates[m] for m in metrics}
    client = PrometheusClient(settings, session=session)
    frames, tables, rendered, skipped, notes = [], [], {}, [], []
    for name, entry in templates.items():
        agg_labels = catalog.labels_for(aggregation, entry)
        selector = build_selector(entry.matchers, labels)
        text = render_query(entry.query, agg_labels, selector, catalog.rate_window(step_td),
                            what=f"the query of {name}")
        rendered[name] = text
        series = client.query_range(text, t0, t1, step_td)
        if not series:
            log.warning("Prometheus query of %s returned no series between %s and %s: %s", name, t0, t1, text)
            skipped.append({"unique_id": name, "reason": f"the query returned no series: {text}"})
            continue
        frame, table, more = series_to_frames(series, name, agg_labels, step_td, entry.unit)
        frames.append(frame)
        tables.append(table)
        notes.extend(more)
    if not frames:
        raise DataError(f"no Prometheus query returned any series between {t0.isoformat()} and {t1.isoformat()} "
                        f"at {client.display_url}: {rendered}; check the metric names and label filters")
    return _finish(frames, tables, rendered, skipped, notes)


def extract(cfg: Any, start: Any, end: Any, connection: Mapping[str, Any] | None = None,
            environ: Mapping[str, str] | None = None, session: requests.Session | None = None) -> PrometheusResult:
    """The nightly extract step's Prometheus read, driven by the config alone.

    Uses ``cfg.source.prometheus`` (url, queries, aggregation, timeout_s, max_points,
    retries and, when present, ``labels`` filters), ``cfg.source.metrics`` to restrict the
    metrics, and ``cfg.freq`` as the step. ``connection`` is the Airflow connection
    ``source.prometheus.conn_id`` as a dict (or None outside Airflow).
    """
    prom = cfg.source.prometheus
    settings = resolve_settings(prom, connection, environ)
    return extract_metrics(
        settings, dict(prom.queries or {}), start, end, cfg.freq, prom.aggregation,
        labels=dict(getattr(prom, "labels", None) or {}), metrics=list(cfg.source.metrics or []) or None,
        session=session,
    )

