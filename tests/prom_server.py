"""Real Prometheus and Pushgateway processes for tests, and small scripted HTTP servers.

The binaries are Debian's ``prometheus``, ``promtool`` and ``prometheus-pushgateway``
(``.ci/install-packages.sh`` installs them). Every process listens on a free loopback port
and is stopped (terminate, then kill) when its context exits.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from foresight_lib.orchestration.ports import free_port

INSTALL_HINT = "run .ci/install-packages.sh (installs Debian's prometheus and prometheus-pushgateway)"


def require_binary(name: str) -> str:
    """The path of ``name``, or skip the test saying how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed; {INSTALL_HINT}")
    return path


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (requests.RequestException, OSError, ValueError, KeyError) as exc:
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s (last error: {last_error})")


# ---------------------------------------------------------------------------
# OpenMetrics and TSDB blocks


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_openmetrics(path: Path, series: Iterable[tuple[str, dict[str, str], Sequence[int], Sequence[str]]],
                      kind: dict[str, str] | None = None) -> Path:
    """Write ``(metric, labels, unix seconds, value texts)`` series as an OpenMetrics file.

    Values are written as given (text), so Prometheus stores exactly the parsed float.
    """
    by_metric: dict[str, list[str]] = {}
    for metric, labels, times, values in series:
        label_text = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in labels.items())
        lines = by_metric.setdefault(metric, [])
        lines.extend(f"{metric}{{{label_text}}} {v} {int(t)}" for t, v in zip(times, values, strict=True))
    with open(path, "w", encoding="utf-8") as out:
        for metric, lines in by_metric.items():
            out.write(f"# TYPE {metric} {(kind or {}).get(metric, 'gauge')}\n")
            out.write("\n".join(lines) + "\n")
        out.write("# EOF\n")
    return path


def cadvisor_series(usage: dict[str, Sequence[float]], start_s: int, step_s: int = 300, namespace: str = "shop",
                    pod: str = "web-1") -> list[tuple[str, dict[str, str], list[int], list[str]]]:
    """cAdvisor-style series of one pod for :func:`write_openmetrics`, from CPU use per container.

    Per container: ``container_cpu_usage_seconds_total`` (a counter adding ``usage * step``
    CPU seconds per step, starting at 1000) and ``container_memory_working_set_bytes``
    (``usage * 1e9``); plus the pause container ``POD``, which the default PromQL leaves out.
    The default queries then give back ``usage`` (cores) from the second point on.
    """
    out = []
    for container, values in usage.items():
        values = [float(v) for v in values]
        grid = [start_s + step_s * k for k in range(len(values))]
        labels = {"namespace": namespace, "pod": pod, "container": container, "id": f"/kubepods/{pod}/{container}"}
        total, counter = 1000.0, []
        for k, value in enumerate(values):
            total = total + value * step_s if k else total
            counter.append(repr(total))
        out.append(("container_cpu_usage_seconds_total", labels, grid, counter))
        out.append(("container_memory_working_set_bytes", labels, grid, [repr(v * 1e9) for v in values]))
    length = max((len(v) for v in usage.values()), default=0)
    pause = {"namespace": namespace, "pod": pod, "container": "POD"}
    out.append(("container_cpu_usage_seconds_total", pause, [start_s + step_s * k for k in range(length)],
                [repr(1e6 + k) for k in range(length)]))
    return out


CADVISOR_TYPES = {"container_cpu_usage_seconds_total": "counter"}


def build_tsdb(openmetrics: Path, out_dir: Path, max_block_duration: str = "10000h") -> Path:
    """TSDB blocks from an OpenMetrics file with ``promtool tsdb create-blocks-from openmetrics``.

    Large blocks (``--max-block-duration``) keep months of data in a few blocks instead
    of one per two hours, which makes the import take a second instead of half a minute.
    """
    promtool = require_binary("promtool")
    out_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                           f"--max-block-duration={max_block_duration}", str(openmetrics), str(out_dir)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"promtool failed ({done.returncode}): {done.stderr[-2000:]}")
    return out_dir


# ---------------------------------------------------------------------------
# Processes


class _Process(ABC):
    """A server binary run for a test, ready when its ``/-/ready`` answers 200."""

    binary = ""

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / f"{self.binary}.log"
        self.process: subprocess.Popen | None = None

    @abstractmethod
    def args(self) -> list[str]:
        """The server's command-line arguments; each server class gives its own."""

    def start(self) -> _Process:
        binary = require_binary(self.binary)
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([binary, *self.args()], stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=self.workdir)
        try:
            wait_for(self._ready, timeout=30, what=f"{self.binary} ready at {self.url}")
        except TimeoutError as exc:
            self.stop()
            raise RuntimeError(f"{exc}; log:\n{self.log()[-3000:]}") from exc
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.binary} exited with {self.process.returncode}:\n{self.log()[-3000:]}")
        return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class PrometheusProcess(_Process):
    """A Prometheus over ``storage`` (an existing TSDB folder or a new one), scraping ``targets``.

    Args:
        storage: TSDB folder (blocks from :func:`build_tsdb`, or empty).
        targets: ``host:port`` targets of one scrape job ``foresight`` (path ``/metrics``).
        scrape_interval: how often the targets are scraped.
    """

    binary = "prometheus"

    def __init__(self, workdir: Path, storage: Path | None = None, targets: Sequence[str] = (),
                 scrape_interval: str = "1s", port: int | None = None):
        super().__init__(workdir, port)
        self.storage = Path(storage) if storage else self.workdir / "tsdb"
        self.targets = list(targets)
        self.scrape_interval = scrape_interval

    def args(self) -> list[str]:
        config = {"global": {"scrape_interval": self.scrape_interval, "evaluation_interval": "1m"},
                  "scrape_configs": []}
        if self.targets:
            config["scrape_configs"].append({"job_name": "foresight", "metrics_path": "/metrics",
                                             "scrape_interval": self.scrape_interval,
                                             "scrape_timeout": self.scrape_interval,
                                             "static_configs": [{"targets": self.targets}]})
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        return [
            f"--config.file={config_path}",
            f"--storage.tsdb.path={self.storage}",
            # imported blocks are from 2014: keep them (the default retention is 15 days)
            "--storage.tsdb.retention.time=100y",
            # no compaction of the imported blocks while the test queries them
            "--storage.tsdb.min-block-duration=2h",
            "--storage.tsdb.max-block-duration=2h",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]

    def query(self, expr: str) -> list[dict]:
        """An instant query's result (vector) at the current time."""
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]


class PushgatewayProcess(_Process):
    binary = "prometheus-pushgateway"

    def args(self) -> list[str]:
        return [f"--web.listen-address=127.0.0.1:{self.port}",
                f"--persistence.file={self.workdir / 'pushgateway.data'}", "--log.level=warn"]


# ---------------------------------------------------------------------------
# A scripted HTTP server (a Prometheus that fails on purpose)


class ScriptedServer:
    """Answers each POST/GET with the next ``(status, body)`` of ``script`` (the last one repeats).

    ``script`` may also be a function ``(path, form fields) -> (status, body)``.
    ``requests`` records ``(path, form fields)`` of each request.
    """

    def __init__(self, script: Sequence[tuple[int, bytes | str]] | Callable[[str, dict], tuple[int, bytes | str]],
                 delay_s: float = 0.0):
        self.script = script if callable(script) else list(script)
        self.delay_s = delay_s
        self.requests: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                from urllib.parse import parse_qsl, urlsplit

                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace") if length else ""
                fields = dict(parse_qsl(body)) or dict(parse_qsl(urlsplit(self.path).query))
                fields["_authorization"] = self.headers.get("Authorization") or ""
                fields["_method"] = self.command
                fields["_body"] = body
                outer.requests.append((urlsplit(self.path).path, fields))
                if callable(outer.script):
                    status, payload = outer.script(*outer.requests[-1])
                else:
                    status, payload = outer.script[min(len(outer.requests) - 1, len(outer.script) - 1)]
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                data = payload.encode() if isinstance(payload, str) else payload
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = _answer
            do_POST = _answer
            do_PUT = _answer

            def log_message(self, *args) -> None:
                """Keep the test output free of one access-log line per request."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def matrix(series: Sequence[tuple[dict[str, str], Sequence[tuple[float, str]]]]) -> str:
    """A Prometheus ``query_range`` success answer as JSON text."""
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": labels, "values": [[t, v] for t, v in values]} for labels, values in series]}})
