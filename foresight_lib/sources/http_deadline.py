"""HTTP requests with a total deadline, from connect to the last byte of the body.

``requests``' ``timeout`` bounds each socket operation, not the request: a server that
trickles one byte every 0.8 s keeps a request with a 5 s timeout alive for as long as it
likes. Here the request runs in a worker thread and the caller waits for it at most
``deadline_s``. The body is streamed in chunks; once the deadline has passed the caller
gets ``DeadlineExceeded`` at once, and the worker's connection is shut (when the headers
had arrived) or gives up at its next socket timeout (at most ``deadline_s`` per read).
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import requests

from foresight_lib.errors import ConfigError, SourceError
from foresight_lib.redaction import redact_url

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
MAX_CONNECT_S = 10.0
"""Longest wait for the TCP (and TLS) connection, within the deadline."""
WAITING_HEADERS = "waiting for the status line and headers"
READING_BODY = "reading the body"


class DeadlineExceeded(SourceError):
    """A request had not fully answered when its deadline passed."""

    def __init__(self, deadline_s: float, received: int, stage: str):
        self.deadline_s = deadline_s
        self.received = received
        self.stage = stage
        got = f" ({received} byte(s) of it received)" if stage == READING_BODY else ""
        super().__init__(f"exceeded the {deadline_s:g} s deadline while {stage}{got}")


class _Attempt:
    """What the worker thread shares with the caller."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.cancelled = threading.Event()
        self.lock = threading.Lock()
        self.response: requests.Response | None = None
        self.error: BaseException | None = None
        self.received = 0


def post(session: requests.Session, url: str, data: Mapping[str, Any], deadline_s: float) -> requests.Response:
    """POST ``data`` to ``url`` and read the whole answer within ``deadline_s`` seconds.

    Returns the response with its body read (``.content``, ``.text`` and ``.json()``
    work). Errors of ``requests`` (connection refused, TLS, a socket read timeout) are
    raised as they are.

    Raises:
        DeadlineExceeded: the status line, headers and body had not all arrived in time.
    """
    return request(session, "POST", url, deadline_s, data=dict(data))


def request(session: requests.Session, method: str, url: str, deadline_s: float, **kwargs: Any) -> requests.Response:
    """``session.request(method, url, **kwargs)`` with a total deadline; see :func:`post`."""
    if not deadline_s > 0:
        raise ConfigError(f"an HTTP deadline must be a positive number of seconds, got {deadline_s!r}")
    started = time.monotonic()
    attempt = _Attempt()
    # per-read timeouts let the worker give up by itself even if nobody shuts its socket
    timeout = (min(MAX_CONNECT_S, deadline_s), deadline_s)
    worker = threading.Thread(target=_run, args=(attempt, session, method, url, timeout, kwargs),
                              name="foresight-http-deadline", daemon=True)
    worker.start()
    if attempt.done.wait(max(0.0, deadline_s - (time.monotonic() - started))):
        if attempt.error is not None:
            raise attempt.error
        assert attempt.response is not None
        return attempt.response
    with attempt.lock:
        attempt.cancelled.set()
        response = attempt.response
    stage = WAITING_HEADERS if response is None else READING_BODY
    if response is not None:
        _abort(response)
    log.debug("%s %s passed its %.3g s deadline while %s", method, redact_url(url), deadline_s, stage)
    raise DeadlineExceeded(deadline_s, attempt.received, stage)


def _run(attempt: _Attempt, session: requests.Session, method: str, url: str, timeout: tuple[float, float],
         kwargs: dict[str, Any]) -> None:
    response = None
    try:
        response = session.request(method, url, timeout=timeout, stream=True, **kwargs)
        with attempt.lock:
            if attempt.cancelled.is_set():
                return
            attempt.response = response
        chunks = []
        for chunk in response.iter_content(CHUNK_BYTES):
            if attempt.cancelled.is_set():
                return
            chunks.append(chunk)
            attempt.received += len(chunk)
        response._content = b"".join(chunks)  # what .content, .text and .json() read
        response._content_consumed = True
    except BaseException as exc:  # handed to the caller's thread, which raises it
        if not attempt.cancelled.is_set():
            attempt.error = exc
    finally:
        if attempt.cancelled.is_set() and response is not None:
            response.close()
        attempt.done.set()


def _abort(response: requests.Response) -> None:
    """Shut the response's socket, so a worker blocked in a read returns now (best effort)."""
    sock = _socket_of(response)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


def _socket_of(response: requests.Response) -> socket.socket | None:
    raw = getattr(response, "raw", None)
    connection = getattr(raw, "connection", None) or getattr(raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        return sock
    fp = getattr(getattr(raw, "_fp", None), "fp", None)
    sock = getattr(getattr(fp, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None
