"""``foresight serve-metrics``: serve the latest forecasts at ``/metrics`` for Prometheus.

The same exposition as the Airflow plugin's ``/foresight/metrics``
(``foresight_lib.serving.exposition``): files under ``<data_root>/latest/`` are read when
Prometheus scrapes, so a new publish shows up without a restart.
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from foresight_lib.errors import ConfigError, ForesightError

log = logging.getLogger(__name__)

DEFAULT_PORT = 9464


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve-metrics", help="serve the latest forecasts at /metrics for Prometheus to scrape",
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port to listen on")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (127.0.0.1: this machine only)")
    parser.add_argument("--data-root", default=None,
                        help="data root holding latest/ (default: data_root of the config)")
    parser.add_argument("--horizons", default=None,
                        help="comma-separated horizons to expose, e.g. 5m,15m,30m (default: the config's; "
                             "'all': every forecast step)")
    parser.add_argument("--level", default=None, help="interval level of yhat_lower/yhat_upper (default: widest)")
    parser.add_argument("--models", choices=["champion", "all"], default=None,
                        help="whose forecasts to expose: each metric's champion, or every model "
                             "(default: publish.exposition_models of the config)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data_root, horizons = _resolve(args.data_root, args.horizons)
    models = getattr(args, "models", None)
    from foresight_lib.config import PublishConfig, load_config

    try:
        publish = load_config().publish
    except ForesightError as exc:  # a data root given on the command line needs no config
        log.warning("exposing the champions' forecasts only, within the default series budget: the config "
                    "cannot be read (%s)", exc)
        publish = PublishConfig()
    models = models or publish.exposition_models
    max_series = publish.exposition_max_series
    server = make_server(data_root, args.host, args.port, horizons=horizons, level=args.level, models=models,
                         max_series=max_series)
    host, port = server.server_address[:2]

    def stop(signum, frame):  # shut down from another thread: serve_forever runs in this one
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"serving the latest forecasts of {data_root} at http://{host}:{port}/metrics", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        log.info("stopped by Ctrl-C")
    finally:
        server.server_close()
    return 0


def _resolve(data_root: str | None, horizons: str | None) -> tuple[str, list[str] | None]:
    if horizons and horizons.strip().lower() == "all":
        wanted = None
    elif horizons:
        from foresight_lib.horizons import parse_horizons

        wanted = parse_horizons(horizons)
    else:
        wanted = "config"
    if data_root and wanted != "config":
        return data_root, wanted
    from foresight_lib.config import load_config

    cfg = load_config()
    return data_root or cfg.data_root, (list(cfg.horizons) if wanted == "config" else wanted)


class MetricsHandler(BaseHTTPRequestHandler):
    """``GET /metrics`` (the exposition), ``/`` (a pointer to it) and ``/-/healthy``."""

    data_root: str = ""
    horizons: Sequence[str] | None = None
    level: str | None = None
    models: str = "champion"
    max_series: int | None = None
    server_version = "foresight"

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            from foresight_lib.serving.exposition import metrics_response

            try:
                body, headers = metrics_response(self.data_root, self.headers.get("Accept"),
                                                 self.headers.get("Accept-Encoding"), self.level, self.horizons,
                                                 self.models, self.max_series)
            except ForesightError as exc:
                self._send(500, f"cannot expose the forecasts: {exc}\n".encode(), {"Content-Type": "text/plain"})
                return
            self._send(200, body, headers)
        elif path == "/-/healthy":
            self._send(200, b"ok\n", {"Content-Type": "text/plain; charset=utf-8"})
        elif path == "/":
            text = f"Foresight forecasts of {self.data_root}: see /metrics\n"
            self._send(200, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})
        else:
            self._send(404, b"not found; the metrics are at /metrics\n", {"Content-Type": "text/plain"})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        log.debug("%s " + format, self.address_string(), *args)


def make_server(data_root: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                horizons: Sequence[str] | None = None, level: str | None = None,
                models: str = "champion", max_series: int | None = None) -> ThreadingHTTPServer:
    """A threaded HTTP server for ``data_root`` (port 0: a free port; see ``server_address``).

    Raises:
        ConfigError: the address cannot be bound (port in use, no permission).
    """
    handler = type("BoundMetricsHandler", (MetricsHandler,),
                   {"data_root": str(data_root), "horizons": list(horizons) if horizons else None, "level": level,
                    "models": models, "max_series": max_series})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port") from exc
    server.daemon_threads = True
    return server

