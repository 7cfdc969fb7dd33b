"""Where MLflow lives: the tracking store, whether it can be reached, and bounded HTTP waits.

- ``configure`` points MLflow (tracking and registry) at a store and an experiment, and
  caps how long MLflow's own HTTP client waits on a server (``MLFLOW_HTTP_REQUEST_TIMEOUT``
  and ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, unless the user set them), so that a server
  that dies mid-run fails publish in bounded time instead of retrying for minutes.
- ``check_tracking_server`` fails fast, within a deadline, when the store cannot be
  reached: the pipeline calls it at extract, so a dead server stops the run before
  any training.
- The experiment is marked a model-training one (tag ``mlflow.experimentKind`` =
  ``custom_model_development``), so that the MLflow UI opens it on its runs, not on
  the GenAI overview (traces, tokens).
- ``quiet_mlflow`` wraps the MLflow calls of a publish: no artifact progress bars, and
  MLflow's chatter (``Created version '3'…``, known-harmless warnings) goes to
  Foresight's log at DEBUG instead of stderr, which Airflow shows as ERROR lines.

``foresight_lib.tracking.mlflow_runs`` (runs) and ``foresight_lib.tracking.registry`` (champion versions and
aliases) both build on this module.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sqlite3
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from foresight_lib.errors import ConfigError, SourceError
from foresight_lib.redaction import redact_text, redact_url

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "foresight"
DEFAULT_DIR_ENV = "FORESIGHT_MLFLOW_DIR"
"""Folder of the embedded default (SQLite file + artifacts); ``./mlflow`` when unset."""
CHECK_TIMEOUT_S = 10.0
"""How long ``check_tracking_server`` waits for the store, in all."""
HTTP_TIMEOUT_S = 30
"""Seconds MLflow's HTTP client waits per try (its own default: 120)."""
HTTP_MAX_RETRIES = 2
"""Retries of a failed MLflow HTTP request (its own default: 7, about 4 minutes of back-off)."""
HTTP_TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
HTTP_RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
"""MLflow's artifact up/download progress bars (tqdm on stderr); off unless the user set it."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""The experiment tag the MLflow UI reads to open an experiment as GenAI or model training."""
ML_EXPERIMENT_KIND = "custom_model_development"
ML_EXPERIMENT_KINDS = frozenset({ML_EXPERIMENT_KIND, "forecasting", "regression", "classification", "finetuning",
                                 "automl"})
"""Kinds the MLflow UI opens as model training; any other value (GenAI, inferred, empty) is replaced."""
HARMLESS_MLFLOW_MESSAGES = (
    re.compile(r"Passing a Python object as `python_model`"),  # the bundle is a pickled object on purpose
    # pandas 3 deprecation hit by MLflow's signature inference of the forecasts' UTC timestamps
    re.compile(r"Series\.values returning an ndarray that drops timezone"),
)
"""Warnings a successful publish raises by design (MLflow log records or Python warnings met
during MLflow calls): logged at DEBUG or ignored, never shown as warnings."""
FIX_URI = "fix mlflow.tracking_uri in the config (or MLFLOW_TRACKING_URI)"

_state: dict[str, str] = {}
_own_env: dict[str, str] = {}
"""The HTTP limits this module put in the environment (a value the user set is never replaced)."""


# ---------------------------------------------------------------------------
# Names


MLFLOW_NAME_MAX = 160
"""Longest ``mlflow_name``: room under MLflow's 250-character keys for ``<name>/mae_15m`` and the
like, and under its 256-character registered model names for the prefix."""
_NAME_PLAIN = re.compile(r"[a-z0-9_]")


def mlflow_name(metric: str) -> str:
    """A resource metric's name as MLflow takes it: metric and tag keys, registered and logged model names.

    The one mapping from the metrics users have (``namespace:container_cpu_usage_seconds:sum_rate``,
    ``system.cpu.utilization``, ``cpu,cores``) to MLflow: lower-case letters, digits and
    ``_`` stay; every other character becomes ``-`` and the two hex digits of each of its
    UTF-8 bytes (``.`` -> ``-2e``, ``:`` -> ``-3a``, ``A`` -> ``-41``). So a Prometheus
    name without colons keeps its name, and the mapping is injective (``-`` appears only
    as an escape, so the name can be read back), holds no ``/ : . % @`` or quote that
    MLflow refuses in a model name or a URI ``models:/<name>@<alias>``, and no two
    metrics differing only in case meet in a case-insensitive database. A name that
    would exceed ``MLFLOW_NAME_MAX`` characters is cut and ends in ``--`` and a SHA-256
    digest of the whole name. The original name is kept in the ``foresight.metric`` tags
    and in every file.

    Raises:
        ConfigError: the name is empty.
    """
    text = str(metric)
    if not text:
        raise ConfigError("a metric name is empty; name every series' metric (unique_id '<metric>/<entity>')")
    out = "".join(ch if _NAME_PLAIN.fullmatch(ch) else "".join(f"-{b:02x}" for b in ch.encode("utf-8"))
                  for ch in text)
    if len(out) > MLFLOW_NAME_MAX:
        import hashlib

        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        out = f"{out[:MLFLOW_NAME_MAX - len(digest) - 2].rstrip('-')}--{digest}"
    return out


# ---------------------------------------------------------------------------
# Configuration


def configure(tracking_uri: str | None = None, artifact_location: str | None = None,
              experiment: str = DEFAULT_EXPERIMENT, root: str | Path | None = None, *,
              http_timeout_s: float = HTTP_TIMEOUT_S, http_max_retries: int = HTTP_MAX_RETRIES) -> str:
    """Point MLflow (tracking and registry) at a store and an experiment; create what is missing.

    Args:
        tracking_uri: ``sqlite:///path.db``, ``postgresql://…``, ``http(s)://server``, or a
            plain path to a ``.db`` file. Default: ``MLFLOW_TRACKING_URI`` if set, else a
            SQLite file under ``root``.
        artifact_location: where a new experiment keeps artifacts: a folder, ``file://``
            or ``s3://`` URI. Default: ``<root>/artifacts`` for a local store.
        experiment: experiment name.
        root: folder of the embedded default (``$FORESIGHT_MLFLOW_DIR`` or ``./mlflow``).
        http_timeout_s: seconds MLflow's HTTP client waits per try on a tracking server.
        http_max_retries: retries of a failed request to a tracking server.

    Returns:
        The experiment id.

    Raises:
        ConfigError: the store cannot be reached or the experiment not created.
    """
    root_dir = Path(root or os.environ.get(DEFAULT_DIR_ENV) or "mlflow").expanduser().resolve()
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root_dir / 'mlflow.db'}"
    uri = _normalise_tracking_uri(uri)
    apply_http_limits(http_timeout_s, http_max_retries)
    local_store = uri.startswith("sqlite:")
    if artifact_location is None and local_store:
        artifact_location = str(root_dir / "artifacts")
    location = _normalise_artifact_location(artifact_location) if artifact_location else None
    _default_env(PROGRESS_BAR_ENV, "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        with quiet_mlflow(), _creating(uri):
            client = MlflowClient(uri, uri)
            client.search_registered_models(max_results=1)  # the registry's tables too, under the lock
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                experiment_id = client.create_experiment(experiment, artifact_location=location,
                                                         tags={EXPERIMENT_KIND_TAG: ML_EXPERIMENT_KIND})
                log.info("created MLflow experiment %s (%s) at %s, artifacts %s", experiment, experiment_id,
                         _redact(uri), location)
            else:
                experiment_id = exp.experiment_id
                if exp.lifecycle_stage == "deleted":
                    client.restore_experiment(experiment_id)
                    log.info("restored deleted MLflow experiment %s", experiment)
                _mark_model_training(client, experiment_id, experiment, exp.tags.get(EXPERIMENT_KIND_TAG))
    except MlflowException as exc:
        raise ConfigError(
            f"MLflow tracking store {_redact(uri)} is not usable ({_scrub(exc.message, uri)}); {FIX_URI}"
        ) from exc
    mlflow.set_experiment(experiment_id=experiment_id)
    _state.update(tracking_uri=uri, experiment_id=experiment_id, experiment=experiment)
    return experiment_id


@contextlib.contextmanager
def _creating(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite store while it may be created or migrated, and its experiment made.

    MLflow creates and migrates a SQLite store's tables when a client first opens it, with
    no lock of its own: two runs starting together on a fresh store (two dates of a
    backfill) would both migrate it, and one would crash. The lock file
    (``<db>.foresight-lock``) makes the second wait until the first is done; then it finds
    the tables and the experiment there. Other stores (a server, Postgres) need none.
    """
    db = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
    db = db.split("?", 1)[0]
    if not db or db == ":memory:" or os.name == "nt":
        yield
        return
    import fcntl

    path = Path(db).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".foresight-lock"), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def apply_http_limits(timeout_s: float = HTTP_TIMEOUT_S, max_retries: int = HTTP_MAX_RETRIES) -> dict[str, str]:
    """Cap MLflow's HTTP waits (per-try timeout, retries) where the user has not set them.

    MLflow reads ``MLFLOW_HTTP_REQUEST_TIMEOUT`` and ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` at
    each request; its defaults (120 s, 7 retries with exponential back-off) make a dead
    server take minutes to fail. A value already in the environment that this function did
    not put there is the user's and is kept.

    Returns:
        The limits in force, by environment variable.
    """
    if timeout_s <= 0 or max_retries < 0:
        raise ConfigError(f"MLflow HTTP limits must be a positive timeout and retries >= 0, "
                          f"got {timeout_s} s and {max_retries}; fix mlflow.http_timeout_s / http_max_retries")
    wanted = {HTTP_TIMEOUT_ENV: str(max(1, math.ceil(timeout_s))), HTTP_RETRIES_ENV: str(int(max_retries))}
    for name, value in wanted.items():
        current = os.environ.get(name)
        if current is not None and _own_env.get(name) != current:
            log.debug("%s=%s set in the environment; kept", name, current)
            continue
        os.environ[name] = value
        _own_env[name] = value
    return {name: os.environ[name] for name in wanted}


def _mark_model_training(client: MlflowClient, experiment_id: str, name: str, kind: str | None) -> None:
    """Tag an existing experiment as model training, unless it already is one.

    The MLflow UI stores the kind it guesses on first view (an empty experiment is
    guessed GenAI); Foresight's experiment only ever holds training runs, so any
    non-training kind is replaced.
    """
    if kind in ML_EXPERIMENT_KINDS:
        return
    try:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, ML_EXPERIMENT_KIND)
    except MlflowException as exc:  # only how the UI opens it: never a reason to stop a run
        log.warning("MLflow experiment %s could not be marked as model training (%s); set its tag %s to %s in "
                    "the MLflow UI or with MlflowClient().set_experiment_tag", name, exc.message, EXPERIMENT_KIND_TAG,
                    ML_EXPERIMENT_KIND)
        return
    log.info("MLflow experiment %s marked as model training (%s: %r -> %s)", name, EXPERIMENT_KIND_TAG, kind,
             ML_EXPERIMENT_KIND)


def _default_env(name: str, value: str) -> None:
    """Set an MLflow environment variable this module owns, never one the user set."""
    current = os.environ.get(name)
    if current is not None and _own_env.get(name) != current:
        return
    os.environ[name] = value
    _own_env[name] = value


# ---------------------------------------------------------------------------
# Quiet MLflow calls


class _ForwardToLog(logging.Handler):
    """MLflow's log records re-logged through Foresight's logger, at a level that says what they are.

    Below WARNING, and the known-harmless warnings, become DEBUG; real warnings and
    errors keep their level. They reach whatever handles Foresight's logs (Airflow's
    task log at the right level) instead of MLflow's own stderr stream.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record must not break the MLflow call
            message = str(record.msg)
        harmless = record.levelno < logging.WARNING or any(p.search(message) for p in HARMLESS_MLFLOW_MESSAGES)
        log.log(logging.DEBUG if harmless else record.levelno, "MLflow %s: %s", record.name, message)


_quiet_lock = threading.RLock()
_quiet: dict[str, Any] = {"depth": 0}


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """MLflow calls that print nothing: no progress bar, no stderr line, harmless warnings at DEBUG.

    For the duration (re-entrant): ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` is false
    unless the user set it; MLflow's ``eprint`` stream is muted (``Successfully
    registered model…``: Foresight logs what it registered itself); the ``mlflow``
    logger's records are re-logged by Foresight's logger (see ``_ForwardToLog``); and
    Python warnings raised from MLflow's own modules are ignored. Errors still raise.
    """
    with _quiet_lock:
        if _quiet["depth"] == 0:
            _quiet_enter()
        _quiet["depth"] += 1
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
            for pattern in HARMLESS_MLFLOW_MESSAGES:
                warnings.filterwarnings("ignore", message=pattern.pattern)
            yield
    finally:
        with _quiet_lock:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                _quiet_exit()


def _quiet_enter() -> None:
    from mlflow.utils import logging_utils

    mlflow_log = logging.getLogger("mlflow")
    _quiet.update(env=os.environ.get(PROGRESS_BAR_ENV), stream=logging_utils.MLFLOW_LOGGING_STREAM.enabled,
                  handlers=list(mlflow_log.handlers), propagate=mlflow_log.propagate)
    if _quiet["env"] is None:
        os.environ[PROGRESS_BAR_ENV] = "false"
    logging_utils.MLFLOW_LOGGING_STREAM.enabled = False
    mlflow_log.handlers = [_ForwardToLog()]
    mlflow_log.propagate = False


def _quiet_exit() -> None:
    from mlflow.utils import logging_utils

    mlflow_log = logging.getLogger("mlflow")
    mlflow_log.handlers = _quiet["handlers"]
    mlflow_log.propagate = _quiet["propagate"]
    logging_utils.MLFLOW_LOGGING_STREAM.enabled = _quiet["stream"]
    if _quiet["env"] is None:
        os.environ.pop(PROGRESS_BAR_ENV, None)


def _normalise_tracking_uri(uri: str) -> str:
    uri = _plain_path_uri(uri)
    if uri.startswith("sqlite:///"):
        db = uri[len("sqlite:///"):]
        if db and db != ":memory:":
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return uri


def _plain_path_uri(uri: str) -> str:
    """A plain path as the SQLite URI MLflow takes (a folder gets ``mlflow.db`` inside)."""
    if "://" not in uri and not uri.startswith("sqlite:"):
        path = Path(uri).expanduser().resolve()
        if path.suffix not in (".db", ".sqlite", ".sqlite3"):
            path = path / "mlflow.db"
        uri = f"sqlite:///{path}"
    return uri


def _normalise_artifact_location(location: str) -> str:
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else location).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path.as_uri()
    return location


def _redact(uri: str) -> str:
    """The URI as it may be shown: password and secret query values masked."""
    return redact_url(uri)


def _scrub(text: str, uri: str) -> str:
    """An error's text as it may be shown: every URL redacted, and the URI's password wherever it appears."""
    text = redact_text(text)
    password = urlparse(uri).password
    for secret in {password, unquote(password)} if password else ():
        text = text.replace(secret, "***")
    return text


def resolve_experiment_id(experiment_id: str | None) -> str:
    """``experiment_id`` if given, else the configured experiment's (``configure`` with defaults if none yet)."""
    if experiment_id:
        return experiment_id
    if "experiment_id" not in _state:
        configure()
    return _state["experiment_id"]


def mlflow_client() -> MlflowClient:
    """A client of the tracking and registry stores MLflow is pointed at now (see ``configure``)."""
    return MlflowClient(mlflow.get_tracking_uri(), mlflow.get_registry_uri())


# ---------------------------------------------------------------------------
# Reachability


class _Deadline(Exception):
    """The probe did not finish in time."""


def check_tracking_server(tracking_uri: str | None = None, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Fail within ``timeout_s`` when the MLflow store cannot be used, before any training.

    - ``http(s)://``: ``GET /health``, then ``GET /api/2.0/mlflow/experiments/search``
      (with the ``MLFLOW_TRACKING_*`` credentials MLflow itself would send), one total
      deadline whatever the server does (refuses, hangs, answers byte by byte);
    - ``sqlite:`` (or a plain path): the database's folder exists or can be created, and
      is writable; an existing database file opens;
    - ``postgresql://``, ``mysql://``, ``mssql://``: a connection with a connect timeout;
    - ``file:``: the folder is writable. Other stores (``databricks``…) are not checked.

    Args:
        tracking_uri: the store (default: ``MLFLOW_TRACKING_URI``, else the one ``configure``
            set up).
        timeout_s: the total deadline, in seconds.

    Raises:
        SourceError: the store cannot be reached or used; says which (credentials
            redacted) and how to fix it.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or _state.get("tracking_uri")
    if not uri:
        raise ConfigError(f"no MLflow tracking store to check; {FIX_URI}")
    if timeout_s <= 0:
        raise ConfigError(f"the tracking store check needs a positive timeout, got {timeout_s}")
    uri = _plain_path_uri(uri)
    scheme = urlparse(uri).scheme.lower()
    started = time.monotonic()
    if scheme in ("http", "https"):
        _check_http(uri, timeout_s)
    elif scheme == "sqlite":
        _check_sqlite(uri, timeout_s)
    elif scheme.split("+")[0] in ("postgresql", "postgres", "mysql", "mssql"):
        _check_database(uri, timeout_s)
    elif scheme == "file":
        _check_folder(uri, Path(unquote(urlparse(uri).path)), "its folder")
    else:
        log.info("MLflow tracking store %s: no reachability check for '%s' stores", _redact(uri), scheme)
        return
    log.info("MLflow tracking store %s reachable (%.2f s)", _redact(uri), time.monotonic() - started)


def _within(timeout_s: float, probe: Callable[[], Any]) -> Any:
    """``probe()`` in a daemon thread; raise ``_Deadline`` when it has not finished in time.

    A thread, rather than socket timeouts alone, because a server that answers a byte at a
    time never trips a per-read timeout; the abandoned thread ends with its own timeouts.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = probe()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=run, name="foresight-mlflow-check", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise _Deadline()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _check_http(uri: str, timeout_s: float) -> None:
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    base = uri.rstrip("/")
    creds = get_default_host_creds(base)
    deadline = time.monotonic() + timeout_s
    name = _redact(base)

    def get(endpoint: str, **params):
        # a little past the deadline, so that the deadline, not a read timeout, says "did not answer"
        remaining = max(0.5, deadline - time.monotonic()) + 1.0
        return http_request(creds, endpoint, "GET", max_retries=0, backoff_factor=0, backoff_jitter=0,
                            timeout=remaining, raise_on_status=False, params=params or None)

    def probe() -> tuple[str, int]:
        health = get("/health")
        if health.status_code >= 500:
            return "/health", health.status_code
        search = get("/api/2.0/mlflow/experiments/search", max_results=1)
        return "/api/2.0/mlflow/experiments/search", search.status_code

    try:
        endpoint, status = _within(timeout_s, probe)
    except _Deadline:
        raise SourceError(
            f"MLflow tracking server {name} did not answer within {timeout_s:g} s; check that it is up and "
            f"not overloaded (its logs, its database), or {FIX_URI}"
        ) from None
    except MlflowException as exc:
        raise SourceError(
            f"MLflow tracking server {name} cannot be reached ({_short(_scrub(exc.message, uri))}); "
            f"start it, or {FIX_URI}"
        ) from None
    if status == 200:
        return
    if status in (401, 403):
        raise SourceError(
            f"MLflow tracking server {name} refused the credentials (HTTP {status} at {endpoint}); set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) for the tasks"
        )
    if status >= 500:
        raise SourceError(
            f"MLflow tracking server {name} is up but failing (HTTP {status} at {endpoint}); look at its logs "
            "and its backend store"
        )
    raise SourceError(
        f"{name} answered HTTP {status} at {endpoint}: it is not an MLflow tracking server, or the URI lacks "
        f"the server's path prefix; {FIX_URI}"
    )


def _check_sqlite(uri: str, timeout_s: float) -> None:
    db = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else uri[len("sqlite://"):]
    db = db.split("?", 1)[0]
    if not db or db == ":memory:":
        return
    path = Path(db).expanduser()
    _check_folder(uri, path.parent, "the database's folder")
    if path.exists():
        if path.is_dir() or not os.access(path, os.R_OK | os.W_OK):
            raise SourceError(
                f"MLflow tracking store {uri}: {path} is not a readable and writable file; make it one for the "
                f"user running the tasks, or {FIX_URI}"
            )

        def probe() -> None:
            with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout_s) as conn:
                conn.execute("PRAGMA schema_version").fetchone()

        try:
            _within(timeout_s, probe)
        except _Deadline:
            raise SourceError(f"MLflow tracking store {uri}: {path} did not open within {timeout_s:g} s (a "
                              "stuck lock or a hung file system); check what holds it") from None
        except sqlite3.Error as exc:
            raise SourceError(f"MLflow tracking store {uri}: {path} is not a usable SQLite database ({exc}); "
                              f"restore it or {FIX_URI}") from None


def _check_folder(uri: str, folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder, prefix=".foresight-check-").close()  # can a file be written there?
    except OSError as exc:
        raise SourceError(
            f"MLflow tracking store {_redact(uri)}: {what} {folder} cannot be created or written "
            f"({exc.strerror or exc}); make it writable for the user running the tasks, or {FIX_URI}"
        ) from None


def _check_database(uri: str, timeout_s: float) -> None:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    name = _redact(uri)
    scheme = urlparse(uri).scheme.lower()
    connect_args = {}
    if scheme.startswith(("postgres", "mysql")):
        connect_args["connect_timeout"] = max(1, math.ceil(timeout_s))
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args, poolclass=NullPool)
    except ModuleNotFoundError as exc:
        raise SourceError(
            f"MLflow tracking store {name} needs the database driver '{exc.name}', which is not installed; "
            "install it where the tasks run (e.g. psycopg2-binary for postgresql, pymysql for mysql), or point "
            "mlflow.tracking_uri at the MLflow server instead (http://…)"
        ) from None
    except sqlalchemy.exc.ArgumentError as exc:
        raise SourceError(f"MLflow tracking store {name} is not a valid database URI ({exc}); {FIX_URI}") from None

    def probe() -> None:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))

    try:
        _within(timeout_s, probe)
    except _Deadline:
        raise SourceError(
            f"MLflow tracking store {name} did not accept a connection within {timeout_s:g} s; check that the "
            f"database is up and reachable from here, or {FIX_URI}"
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = _short(_scrub(str(getattr(exc, "orig", None) or exc), uri))
        raise SourceError(
            f"MLflow tracking store {name} cannot be reached ({reason}); check that the database is up, the "
            f"user and password are right, or {FIX_URI}"
        ) from None
    engine.dispose()


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
