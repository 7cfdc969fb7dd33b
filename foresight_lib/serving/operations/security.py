"""What the plugin's pages and API do against other sites: origin checks, headers, addresses.

- **Cross-origin requests.** The Airflow UI keeps its JWT in the ``_token`` cookie, which
  a browser also sends with a form that a page on another port of the same host (or a
  sibling subdomain) submits: ``SameSite=Lax`` does not separate them. A state-changing
  request (any method but GET, HEAD and OPTIONS) authenticated by that cookie is therefore
  served only when its ``Origin`` (else its ``Referer``) is one the UI is served from:
  the request's own origin (scheme and ``Host``), the origin of ``AIRFLOW__API__BASE_URL``,
  ``http://localhost:<port>`` and ``http://127.0.0.1:<port>`` (``AIRFLOW__API__PORT``,
  8080 by default: what ``make ui`` and docker-compose serve), and any listed in
  ``FORESIGHT_UI_ORIGINS`` (comma-separated, for a proxy in front). A request with an
  ``Authorization: Bearer`` header is not checked: a browser sends that header only when
  a script of an allowed origin sets it.
- **Headers.** Every answer says ``nosniff``, may be framed only by its own origin (the
  Airflow UI shows the dashboard in a frame) and sends no referrer to other sites; pages
  get a content security policy that loads scripts, styles and data from the plugin only.
- **Outbound calls.** Airflow's REST API is called at a configured address only
  (``airflow_api_base``), never at one taken from the request.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ORIGINS_ENV = "FORESIGHT_UI_ORIGINS"
DEFAULT_PORT = "8080"
TOKEN_COOKIE = "_token"

BASE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "same-origin",
}
"""Sent with every answer of the plugin."""
PAGE_POLICY = ("default-src 'self'; script-src 'self'{scripts}; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data: blob:; connect-src 'self'; font-src 'self' data:; object-src 'none'; "
               "base-uri 'none'; form-action 'self'; frame-ancestors 'self'")
"""The pages' content security policy; ``{scripts}`` takes the hashes of a page's inline scripts."""
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def origin_of(url: str | None) -> str | None:
    """``scheme://host[:port]`` of ``url`` in lower case, without a default port; None if it has none."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 80 if parts.scheme == "http" else 443
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def api_port(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return (env.get("AIRFLOW__API__PORT") or DEFAULT_PORT).strip()


def allowed_origins(env: Mapping[str, str] | None = None) -> set[str]:
    """The origins the UI is served from by configuration (the request's own origin aside)."""
    env = os.environ if env is None else env
    port = api_port(env)
    found = {origin_of(f"http://localhost:{port}"), origin_of(f"http://127.0.0.1:{port}"),
             origin_of(env.get("AIRFLOW__API__BASE_URL"))}
    found |= {origin_of(item) for item in (env.get(ORIGINS_ENV) or "").split(",")}
    return {origin for origin in found if origin}


def cross_origin_refusal(method: str, headers: Mapping[str, str], cookies: Mapping[str, str], own_origin: str | None,
                         allowed: Iterable[str]) -> str | None:
    """Why a request must be refused as cross-origin, or None when it may be served.

    Args:
        method: the HTTP method.
        headers: the request's headers (case-insensitive mapping, as Starlette's).
        cookies: the request's cookies.
        own_origin: the origin the request was addressed to (scheme and ``Host``).
        allowed: the other origins the UI is served from (``allowed_origins``).
    """
    if method.upper() in SAFE_METHODS:
        return None
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return None
    if not cookies.get(TOKEN_COOKIE):
        return None
    claimed = headers.get("origin")
    source = origin_of(claimed) if claimed and claimed != "null" else origin_of(headers.get("referer"))
    if source is None:
        return ("a state-changing request authenticated by the UI's cookie must come from the UI (no Origin or "
                "Referer header); API clients send 'Authorization: Bearer <token>'")
    if source == origin_of(own_origin) or source in set(allowed):
        return None
    return (f"cross-origin request from {source} refused: the UI is served from {sorted({*allowed, own_origin})}; "
            f"add the origin to {ORIGINS_ENV} if it serves the UI, or send 'Authorization: Bearer <token>'")


def page_policy(html: str = "") -> str:
    """The content security policy of a page: its own inline scripts (by hash) and the plugin's files."""
    hashes = [base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
              for body in _INLINE_SCRIPT.findall(html)]
    return PAGE_POLICY.format(scripts="".join(f" 'sha256-{h}'" for h in hashes))


def airflow_api_base(env: Mapping[str, str] | None = None) -> str:
    """Where Airflow's REST API is: ``AIRFLOW__API__BASE_URL``, else the api-server on this host.

    The api-server that serves the plugin is the one to ask: at ``AIRFLOW__API__HOST``
    when it listens on one address, else on the loopback interface, at
    ``AIRFLOW__API__PORT`` (8080 by default).
    """
    env = os.environ if env is None else env
    base = (env.get("AIRFLOW__API__BASE_URL") or "").strip()
    if base:
        return base.rstrip("/")
    host = (env.get("AIRFLOW__API__HOST") or "").strip()
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{host}:{api_port(env)}"


class SecurityHeaders:
    """ASGI middleware: ``BASE_HEADERS`` on every answer, and ``page_policy()`` on those that set none."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                present = {key.lower() for key, _ in message.get("headers", [])}
                extra = [(k.lower().encode(), v.encode()) for k, v in BASE_HEADERS.items()
                         if k.lower().encode() not in present]
                if b"content-security-policy" not in present:
                    extra.append((b"content-security-policy", page_policy().encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_wrapper)
