"""Request telemetry and limits of the plugin's API, as a plain ASGI middleware.

Every request is logged with its status and latency, and counted in
``foresight_api_requests_total{method,route,status}`` and
``foresight_api_request_duration_seconds{method,route}`` (a histogram). ``route`` is the
route's template (``/models/{metric}/versions/{version}/metrics``), never the raw path,
so the label set stays small. Both families are exposed on ``/foresight/metrics`` after
the published forecasts (``metrics_response``).

A request body over ``MAX_BODY_BYTES`` is refused with 413: at once when
``Content-Length`` says so, else (a chunked body) as soon as the bytes received pass the
limit, before the app sees any of it.
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram

log = logging.getLogger("foresight_lib.serving.operations.api")

MAX_BODY_BYTES = int(os.environ.get("FORESIGHT_API_MAX_BODY_BYTES", str(8 * 1024 * 1024)))
"""Largest request body accepted (bytes)."""
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "<unmatched>"

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter("foresight_api_requests", "Requests to the Foresight API by method, route and status",
                   ["method", "route", "status"], registry=REGISTRY)
LATENCY = Histogram("foresight_api_request_duration_seconds", "Latency of the Foresight API by method and route",
                    ["method", "route"], buckets=BUCKETS, registry=REGISTRY)


class ApiTelemetry:
    """ASGI middleware: body limit, access log line, request counter and latency histogram."""

    def __init__(self, app, max_body_bytes: int | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes

    @property
    def limit(self) -> int:
        return self.max_body_bytes if self.max_body_bytes is not None else MAX_BODY_BYTES

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}
        limit = self.limit

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        declared = _content_length(scope)
        try:
            if declared is not None and declared > limit:
                await _too_large(send_wrapper, limit, declared)
                return
            if declared is None and scope.get("method") in ("POST", "PUT", "PATCH"):
                body = await _read_up_to(receive, limit)
                if body is None:
                    await _too_large(send_wrapper, limit, None)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = _route(scope)
            method = scope.get("method", "")
            REQUESTS.labels(method, route, str(status["code"])).inc()
            LATENCY.labels(method, route).observe(elapsed)
            log.info("%s %s -> %s in %.1f ms", method, scope.get("path", ""), status["code"], elapsed * 1000)


async def _read_up_to(receive, limit: int) -> bytes | None:
    """A body sent without ``Content-Length`` (chunked), read whole; None once it passes ``limit``."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, original):
    """``receive`` giving the body read ahead once, then the client's own messages (its disconnect)."""
    sent = {"done": False}

    async def receive():
        if sent["done"]:
            return await original()
        sent["done"] = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _content_length(scope) -> int | None:
    for key, value in scope.get("headers") or ():
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send, limit: int, declared: int | None) -> None:
    size = f"{declared} bytes" if declared is not None else "more"
    body = json.dumps({"detail": f"request body too large: {size}; the limit is {limit} bytes "
                                 "(FORESIGHT_API_MAX_BODY_BYTES); send fewer rows per request"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _route(scope) -> str:
    """The matched route's template (set by the router once it matched), else ``<unmatched>``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


def metrics_response(data_root: str, accept: str | None, accept_encoding: str | None,
                     horizons: Sequence[str] | None = None, models: str = "champion",
                     max_series: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The published forecasts' exposition followed by the API's own families, in the format asked for."""
    from prometheus_client.exposition import choose_encoder

    from foresight_lib.serving import exposition

    body, headers = exposition.metrics_response(data_root, accept, None, horizons=horizons, models=models,
                                                 max_series=max_series)
    encoder, _ = choose_encoder(accept or "")
    ours = encoder(REGISTRY)
    eof = b"# EOF\n"
    if body.endswith(eof):
        body = body[: -len(eof)]
    body += ours
    headers = {k: v for k, v in headers.items() if k.lower() not in ("content-encoding", "content-length")}
    if accept_encoding and "gzip" in accept_encoding.lower():
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return body, headers
