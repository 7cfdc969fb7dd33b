"""Settings of the Prometheus source: URL, auth, TLS, limits, and the times and step of a query.

They come from the configuration (``source.prometheus``), environment variables
(``FORESIGHT_PROMETHEUS_URL``, ``_TOKEN`` or ``_TOKEN_FILE``, ``_USER``/``_PASSWORD``,
``_CA_FILE``, ``_CERT_FILE``/``_KEY_FILE``, ``_INSECURE_SKIP_VERIFY``) or an Airflow
connection that the DAG side resolves and passes in as a plain dict; this module never
imports Airflow. ``foresight_lib.sources.prometheus_source`` queries with them.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import requests

from foresight_lib.errors import ConfigError, HorizonError
from foresight_lib.horizons import to_timedelta
from foresight_lib.redaction import redact_url

PROMETHEUS_MAX_POINTS = 11_000
"""Prometheus' limit of points per series in one ``query_range`` answer."""
ENV_PREFIX = "FORESIGHT_PROMETHEUS_"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_RELATIVE = re.compile(r"^now\s*(?:([+-])\s*(\d+\s*[a-z]+))?$", re.IGNORECASE)


# ---------------------------------------------------------------------------
# Settings: URL, auth, TLS, limits


@dataclass(frozen=True)
class PrometheusSettings:
    """How to reach Prometheus' HTTP API.

    Args:
        url: base URL, e.g. ``http://prometheus:9090`` or ``https://host/prometheus``.
        token: bearer token (``Authorization: Bearer ...``); excludes ``username``.
        username, password: HTTP basic auth.
        ca_file: CA bundle to verify the server's certificate.
        cert_file, key_file: client certificate and key (mutual TLS).
        insecure_skip_verify: do not verify the server's certificate (tests only).
        headers: extra request headers (e.g. ``X-Scope-OrgID`` for Mimir or Cortex).
        timeout_s: the deadline of one request, from connect to the last byte of the answer.
        retries: further attempts after a failed one (connection error, 5xx, 429,
            malformed JSON); the wait doubles from ``backoff_s`` up to ``max_backoff_s``.
        max_points: Prometheus' points-per-series limit; chunks stay strictly under it.
    """

    url: str | None = None
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_points: int = PROMETHEUS_MAX_POINTS

    def __post_init__(self) -> None:
        if self.url:
            url, user, password = _split_credentials(self.url)
            object.__setattr__(self, "url", url)
            if user is not None and not (self.username or self.token):
                object.__setattr__(self, "username", user)
                object.__setattr__(self, "password", password)
        if self.token and self.username:
            raise ConfigError("Prometheus settings name both a bearer token and a user; keep one of the two "
                              f"({ENV_PREFIX}TOKEN or {ENV_PREFIX}USER/_PASSWORD, or the connection's fields)")
        if self.key_file and not self.cert_file:
            raise ConfigError(f"Prometheus client key {self.key_file} given without its certificate; "
                              f"set {ENV_PREFIX}CERT_FILE (or cert_file in the connection extra)")
        if not (isinstance(self.timeout_s, int | float) and self.timeout_s > 0):
            raise ConfigError(f"Prometheus timeout {self.timeout_s!r} must be a positive number of seconds")
        if not (isinstance(self.retries, int) and 0 <= self.retries <= 20):
            raise ConfigError(f"Prometheus retries {self.retries!r} must be a whole number from 0 to 20")
        if not (isinstance(self.max_points, int) and 2 <= self.max_points <= PROMETHEUS_MAX_POINTS):
            raise ConfigError(f"Prometheus max_points {self.max_points!r} must be from 2 to {PROMETHEUS_MAX_POINTS}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ConfigError("Prometheus backoff times must not be negative")

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> PrometheusSettings:
        """Settings from ``FORESIGHT_PROMETHEUS_*`` environment variables.

        ``URL``, ``TOKEN`` (or ``TOKEN_FILE``, e.g. a Kubernetes service-account token),
        ``USER`` and ``PASSWORD``, ``CA_FILE``, ``CERT_FILE``, ``KEY_FILE``,
        ``INSECURE_SKIP_VERIFY`` (true/false), ``TIMEOUT_S``, ``RETRIES``; unset ones keep
        their defaults. ``overrides`` replace any of them.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name)
            return value if value not in (None, "") else None

        values: dict[str, Any] = {
            "url": get("URL"), "token": get("TOKEN"), "username": get("USER"), "password": get("PASSWORD"),
            "ca_file": get("CA_FILE"), "cert_file": get("CERT_FILE"), "key_file": get("KEY_FILE"),
        }
        if values["token"] is None and get("TOKEN_FILE"):
            values["token"] = _read_secret_file(get("TOKEN_FILE"), ENV_PREFIX + "TOKEN_FILE")
        if get("INSECURE_SKIP_VERIFY") is not None:
            values["insecure_skip_verify"] = _as_bool(get("INSECURE_SKIP_VERIFY"), ENV_PREFIX + "INSECURE_SKIP_VERIFY")
        if get("TIMEOUT_S") is not None:
            values["timeout_s"] = _as_float(get("TIMEOUT_S"), ENV_PREFIX + "TIMEOUT_S")
        if get("RETRIES") is not None:
            values["retries"] = _as_int(get("RETRIES"), ENV_PREFIX + "RETRIES")
        values.update(overrides)
        return cls(**{k: v for k, v in values.items() if v is not None})

    @classmethod
    def from_connection_dict(cls, conn: Mapping[str, Any], **overrides: Any) -> PrometheusSettings:
        """Settings from an Airflow connection given as a plain dict.

        Reads ``host`` (a host name or a whole URL such as ``https://prom:9090/prefix``),
        ``port``, ``schema`` (``http``/``https``, as HTTP connections use it), ``login``
        and ``password`` (basic auth; a password without a login is taken as a bearer
        token) and ``extra`` (a dict or its JSON text) with any of ``token``,
        ``ca_file``, ``cert_file``, ``key_file``, ``insecure_skip_verify``, ``headers``,
        ``timeout_s``, ``retries``. This is what ``Connection.to_dict()`` or the
        connection's attributes give on the Airflow side.

        Raises:
            ConfigError: the extra is not JSON or has values of the wrong type.
        """
        extra = _connection_extra(conn.get("extra") or conn.get("extra_dejson"))
        url = conn.get("url") or _connection_url(conn, extra)
        token = extra.get("token") or extra.get("bearer_token")
        login = conn.get("login") or None
        password = conn.get("password") or None
        values: dict[str, Any] = {"url": url}
        if token:
            values["token"] = str(token)
            if login:
                raise ConfigError("the Prometheus connection has both a login and a bearer token in its extra; "
                                  "keep one of the two")
        elif login:
            values["username"], values["password"] = str(login), (str(password) if password is not None else "")
        elif password:
            values["token"] = str(password)
        for key in ("ca_file", "cert_file", "key_file"):
            if extra.get(key):
                values[key] = str(extra[key])
        if "insecure_skip_verify" in extra:
            values["insecure_skip_verify"] = _as_bool(extra["insecure_skip_verify"], "extra.insecure_skip_verify")
        elif "verify" in extra:
            values["insecure_skip_verify"] = not _as_bool(extra["verify"], "extra.verify")
        if extra.get("headers"):
            headers = extra["headers"]
            if not isinstance(headers, Mapping):
                raise ConfigError("the Prometheus connection's extra.headers must be an object of header: value")
            values["headers"] = {str(k): str(v) for k, v in headers.items()}
        if "timeout_s" in extra:
            values["timeout_s"] = _as_float(extra["timeout_s"], "extra.timeout_s")
        if "retries" in extra:
            values["retries"] = _as_int(extra["retries"], "extra.retries")
        values.update(overrides)
        return cls(**{k: v for k, v in values.items() if v is not None})

    def merged(self, other: PrometheusSettings) -> PrometheusSettings:
        """These settings with every field ``other`` sets (differs from the default) taken from it.

        Authentication is taken as a whole: if ``other`` sets a token or a user, both of
        these settings' credentials are replaced.
        """
        default = PrometheusSettings()
        changes = {f.name: getattr(other, f.name) for f in fields(self)
                   if getattr(other, f.name) != getattr(default, f.name)}
        if other.token or other.username:
            changes.setdefault("token", other.token)
            changes.setdefault("username", other.username)
            changes.setdefault("password", other.password)
        return replace(self, **changes)

    # -- use -----------------------------------------------------------------------------
    def require_url(self) -> str:
        """The base URL without a trailing ``/`` (or ``/api/v1``).

        Raises:
            ConfigError: no URL is set anywhere.
        """
        if not self.url:
            raise ConfigError(
                "no Prometheus URL: set source.prometheus.url in the config, the Airflow connection "
                f"'foresight_prometheus' (host), or {ENV_PREFIX}URL (e.g. http://prometheus:9090)"
            )
        url = self.url.rstrip("/")
        if url.endswith("/api/v1"):
            url = url[: -len("/api/v1")]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"Prometheus URL '{redact_url(url)}' is not an http(s) URL; "
                              "write e.g. http://prometheus:9090")
        return url

    def session(self) -> requests.Session:
        """A ``requests`` session with this authentication, TLS settings and headers."""
        session = requests.Session()
        session.headers.update({"User-Agent": "foresight", "Accept": "application/json", **dict(self.headers)})
        if self.token:
            session.headers["Authorization"] = f"Bearer {self.token}"
        elif self.username:
            session.auth = (self.username, self.password or "")
        if self.insecure_skip_verify:
            session.verify = False
        elif self.ca_file:
            if not Path(self.ca_file).is_file():
                raise ConfigError(f"Prometheus CA file {self.ca_file} does not exist; fix {ENV_PREFIX}CA_FILE "
                                  "or the connection's extra.ca_file")
            session.verify = self.ca_file
        if self.cert_file:
            session.cert = (self.cert_file, self.key_file) if self.key_file else self.cert_file
        return session


def resolve_settings(prometheus_config: Any = None, connection: Mapping[str, Any] | None = None,
                     environ: Mapping[str, str] | None = None) -> PrometheusSettings:
    """Settings from the environment, then the Airflow connection dict, then the config section.

    ``prometheus_config`` is the config's ``source.prometheus`` section (or any object with
    ``url``, ``timeout_s``, ``retries``, ``max_points`` attributes); its URL, when set,
    wins over the connection's host and ``FORESIGHT_PROMETHEUS_URL``.
    """
    settings = PrometheusSettings.from_env(environ)
    if connection:
        settings = settings.merged(PrometheusSettings.from_connection_dict(connection))
    if prometheus_config is not None:
        changes: dict[str, Any] = {}
        if getattr(prometheus_config, "url", None):
            changes["url"] = prometheus_config.url
        for name in ("timeout_s", "retries", "max_points"):
            value = getattr(prometheus_config, name, None)
            if value is not None:
                changes[name] = float(value) if name == "timeout_s" else int(value)
        settings = replace(settings, **changes)
    return settings


def _split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``http://u:p@host`` -> (``http://host``, ``u``, ``p``), so no secret shows in messages."""
    parts = urlsplit(url.strip())
    if parts.username is None:
        return url.strip(), None, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), parts.username, parts.password


def _connection_extra(extra: Any) -> dict[str, Any]:
    if extra in (None, ""):
        return {}
    if isinstance(extra, Mapping):
        return dict(extra)
    try:
        value = json.loads(extra)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the Prometheus connection's extra is not JSON ({exc}); write e.g. "
                          '{"token": "...", "ca_file": "/etc/ssl/prometheus-ca.pem"}') from exc
    if not isinstance(value, dict):
        raise ConfigError("the Prometheus connection's extra must be a JSON object")
    return value


def _connection_url(conn: Mapping[str, Any], extra: Mapping[str, Any]) -> str | None:
    host = str(conn.get("host") or "").strip()
    if not host:
        return None
    port = conn.get("port")
    if "://" in host:
        parts = urlsplit(host)
        if port and parts.port is None:
            parts = parts._replace(netloc=f"{parts.netloc}:{int(port)}")
        return urlunsplit(parts)
    schema = str(conn.get("schema") or "").lower()
    scheme = str(extra.get("scheme") or (schema if schema in ("http", "https") else "http")).lower()
    path = str(extra.get("path") or "")
    host_port = f"{host}:{int(port)}" if port else host
    return f"{scheme}://{host_port}{'/' + path.lstrip('/') if path else ''}"


def _read_secret_file(path: str, name: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror or exc}") from exc


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} is '{value}'; write true or false")


def _as_float(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} is '{value}'; write a number of seconds") from exc


def _as_int(value: Any, name: str) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} is '{value}'; write a whole number") from exc


# ---------------------------------------------------------------------------
# Times and chunks


def parse_time(value: Any, name: str = "time", now: pd.Timestamp | None = None) -> pd.Timestamp:
    """A UTC timestamp from ISO 8601 text, Unix seconds, ``now`` or ``now-2h``, or a datetime.

    Raises:
        ConfigError: the value is none of these.
    """
    if isinstance(value, pd.Timestamp | np.datetime64) or hasattr(value, "tzinfo"):
        stamp = pd.Timestamp(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        stamp = pd.Timestamp(float(value), unit="s")
    else:
        text = str(value).strip()
        relative = _RELATIVE.match(text)
        if relative:
            stamp = now if now is not None else pd.Timestamp.now(tz="UTC")
            if relative.group(1):
                try:
                    delta = to_timedelta(relative.group(2).replace(" ", ""))
                except HorizonError as exc:
                    raise ConfigError(f"{name} '{value}': {exc}") from exc
                stamp = stamp + delta if relative.group(1) == "+" else stamp - delta
        elif re.fullmatch(r"[+-]?\d+(\.\d+)?", text):
            stamp = pd.Timestamp(float(text), unit="s")
        else:
            try:
                stamp = pd.Timestamp(text)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{name} '{value}' is not a time; write ISO 8601 (2024-01-31T12:00:00Z), "
                                  "Unix seconds, or now-2h") from exc
    if stamp is pd.NaT:
        raise ConfigError(f"{name} is empty; write ISO 8601 (2024-01-31T12:00:00Z) or Unix seconds")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def parse_step(value: Any) -> pd.Timedelta:
    """The query step: ``5m``, ``5min``, ``30s``, a number of seconds, or a Timedelta.

    Raises:
        ConfigError: not a positive duration.
    """
    if isinstance(value, pd.Timedelta):
        step = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        step = pd.Timedelta(seconds=float(value))
    else:
        text = str(value).strip()
        try:
            step = pd.Timedelta(seconds=float(text)) if re.fullmatch(r"\d+(\.\d+)?", text) else to_timedelta(text)
        except HorizonError as exc:
            raise ConfigError(f"step '{value}' is not a duration; write e.g. 5m, 30s or 300") from exc
    if step < pd.Timedelta(milliseconds=1):
        raise ConfigError(f"step '{value}' must be at least 1ms")
    return step
