"""Latency of ``POST /foresight/predict`` with a warm champion.

Builds the API tests' small world in a temporary folder (a naive champion of
``foresight-cpu_cores`` registered in a throw-away MLflow SQLite store, see
``tests/api_support.py``), warms the model, then sends ``--requests`` predictions of one
series, 6 steps ahead, each with 12 new actuals, and measures each request end to end:

- ``inprocess`` (default): through the ASGI app with Starlette's test client (routing,
  validation, Airflow's auth dependency stood in for, the registry's alias look-up every
  ``FORESIGHT_API_ALIAS_TTL_S`` seconds, the forecast, the JSON answer);
- ``http``: the same app served by uvicorn on a local port, with ``requests`` over one
  keep-alive connection (adds HTTP parsing and the socket).

Targets: median under 100 ms, 99th percentile under 300 ms. The figures and the command
that produced them go to ``benchmarks/results/predict_latency.md`` and ``.json``.

    .venv/bin/python benchmarks/predict_latency.py --requests 300 --mode inprocess
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TARGETS_MS = {"median": 100.0, "p99": 300.0}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def _serve(app, port: int):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, thread


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--mode", choices=["inprocess", "http"], default="inprocess")
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO / "tests"))
    import logging

    import api_support

    logging.getLogger("foresight_lib.serving.operations.api").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="foresight-predict-bench-") as tmp:
        world = api_support.build_world(Path(tmp))
        os.environ["FORESIGHT_CONFIG"] = str(world["config"])
        os.environ.pop("FORESIGHT_DATA_ROOT", None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        plugin = api_support.load_plugin("foresight_plugin_bench")
        api_support.allow_all(plugin)
        body = {"history": api_support.history(world["bundle"], points=12), "steps": 6}

        server = None
        if args.mode == "http":
            import requests

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            server, _ = _serve(plugin.app, port)
            session = requests.Session()

            def post():
                return session.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=30)
        else:
            from fastapi.testclient import TestClient

            client = TestClient(plugin.app)

            def post():
                return client.post("/predict", json=body)

        started = time.perf_counter()
        first = post()
        cold_ms = (time.perf_counter() - started) * 1000
        assert first.status_code == 200, first.text
        assert len(first.json()["forecasts"]) == 6
        for _ in range(args.warmup):
            post()
        latencies = []
        for _ in range(args.requests):
            started = time.perf_counter()
            answer = post()
            latencies.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, answer.text
        if server is not None:
            server.should_exit = True

    figures = {
        "median_ms": statistics.median(latencies), "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99), "mean_ms": statistics.fmean(latencies), "min_ms": min(latencies),
        "max_ms": max(latencies), "first_request_ms": cold_ms,
    }
    result = {
        "command": " ".join([".venv/bin/python", "benchmarks/predict_latency.py", *map(shlex.quote, sys.argv[1:])]),
        "mode": args.mode, "requests": args.requests, "warmup": args.warmup, "series": 1, "steps": 6,
        "history_rows": len(body["history"]), "model": "naive champion (registered, loaded through MLflow)",
        "targets_ms": TARGETS_MS, **{k: round(v, 2) for k, v in figures.items()},
        "meets_targets": figures["median_ms"] < TARGETS_MS["median"] and figures["p99_ms"] < TARGETS_MS["p99"],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.mode == "inprocess" else f"_{args.mode}"
    (RESULTS / f"predict_latency{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"predict_latency{suffix}.md").write_text(_markdown(result))
    print(f"{args.mode}: {args.requests} requests, median {figures['median_ms']:.1f} ms, "
          f"p99 {figures['p99_ms']:.1f} ms (first request {cold_ms:.0f} ms); targets "
          f"{'met' if result['meets_targets'] else 'NOT met'}")
    return result


def _markdown(result: dict) -> str:
    return "\n".join([
        "# POST /foresight/predict latency (warm champion)", "",
        f"Produced by `{result['command']}` on {result['when']} "
        f"({result['machine']['cpus']} CPUs, Python {result['machine']['python']}).", "",
        f"{result['requests']} requests ({result['mode']}), one series, {result['steps']} steps ahead, "
        f"{result['history_rows']} history rows each, after {result['warmup']} warm-up requests; "
        f"model: {result['model']}.", "",
        "| statistic | ms | target |", "|---|---|---|",
        f"| median | {result['median_ms']:.1f} | < {result['targets_ms']['median']:.0f} |",
        f"| p90 | {result['p90_ms']:.1f} | |",
        f"| p99 | {result['p99_ms']:.1f} | < {result['targets_ms']['p99']:.0f} |",
        f"| mean | {result['mean_ms']:.1f} | |",
        f"| min / max | {result['min_ms']:.1f} / {result['max_ms']:.1f} | |",
        f"| first request (model load) | {result['first_request_ms']:.0f} | |", "",
        f"Targets met: {'yes' if result['meets_targets'] else 'no'}.", "",
    ])


if __name__ == "__main__":
    main()
