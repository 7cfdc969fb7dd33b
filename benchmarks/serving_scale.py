"""What reads the published results, timed at fleet size: the dashboard's data, the JSON views, ``/metrics``.

Writes a synthetic ``latest/`` for N series with the column layout of a real publish
(the one ``tests/test_dashboard.py`` makes: forecasts of several models per series with
80 and 95 % bands and the ``champion`` mark, the last actuals per series, the
recommendations, ``summary.json`` with the per-metric leaderboard), then times each read
path in process, as the plugin's endpoints call it:

- ``overview``: the dashboard's data (``dashboard.overview``), cold (first request after
  the publish, files read) and warm (the next request);
- ``forecasts``: ``json_views.forecasts_payload`` with no filter (twice: the first call
  after a publish may build a cache), filtered by metric, by one series, and a search;
- ``recommendations``: ``json_views.recommendations_payload``;
- ``series``: ``dashboard.series_payload`` for one series;
- ``series_search``: the dashboard's series search, where the code has it;
- ``metrics``: ``/foresight/metrics`` (``telemetry.metrics_response``), cold and warm;

with the size of each answer (its JSON, or the exposition's text) and the process's peak
RSS. Run::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/serving_scale.py --series 10000 --label before
    PYTHONPATH=$PWD .venv/bin/python benchmarks/serving_scale.py --series 100000 --label before

Each run adds its figures under its label and N to ``benchmarks/results/serving_scale.json``
and rewrites ``serving_scale.md``.
"""
from __future__ import annotations

import argparse
import inspect
import json
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_files import RESULTS, write_results  # noqa: E402

STEM = "serving_scale"
CUTOFF = pd.Timestamp("2024-03-01 02:00", tz="UTC")
FREQ = pd.Timedelta("5min")
METRICS = ("cpu_cores", "memory_bytes")
MODELS = ("naive", "seasonal_naive", "arima", "ets")
CHAMPION = {"cpu_cores": "arima", "memory_bytes": "ets"}
HORIZONS = ["5m", "15m", "30m"]


def entities(n_series: int) -> list[str]:
    """Kubernetes-like entities ``<namespace>/<pod>/<container>``, one per two series (cpu and memory)."""
    n = (n_series + len(METRICS) - 1) // len(METRICS)
    return [f"ns-{i % 97:02d}/app-{i // 4:06d}-{i % 4}/c{i % 3}" for i in range(n)]


def write_latest(data_root: Path, n_series: int, steps: int, actual_points: int, seed: int = 7) -> dict:
    """A publish of ``n_series`` series under ``data_root`` (``latest/`` and its run folder); returns its shape."""
    from foresight_lib.runs.storage import RunStore

    rng = np.random.default_rng(seed)
    ents = entities(n_series)
    uids = np.array([f"{m}/{e}" for e in ents for m in METRICS][:n_series], dtype=object)
    n, k = len(uids), len(MODELS)
    level = rng.uniform(0.1, 8.0, n)
    # forecasts: series x model x step
    uid_col = np.repeat(uids, k * steps)
    model_col = np.tile(np.repeat(np.array(MODELS, dtype=object), steps), n)
    step_col = np.tile(np.arange(1, steps + 1), n * k)
    yhat = np.repeat(level, k * steps) * (1 + 0.05 * rng.standard_normal(n * k * steps))
    spread = np.abs(yhat) * 0.1 + 0.01
    metric_col = np.array([u.split("/", 1)[0] for u in uids], dtype=object)
    champion = np.repeat(np.array([CHAMPION[m] for m in metric_col], dtype=object), k * steps) == model_col
    forecasts = pd.DataFrame({
        "unique_id": uid_col, "cutoff": CUTOFF, "ds": CUTOFF + step_col * FREQ, "step": step_col,
        "model": model_col, "yhat": yhat, "yhat_lo_80": yhat - spread, "yhat_hi_80": yhat + spread,
        "yhat_lo_95": yhat - 2 * spread, "yhat_hi_95": yhat + 2 * spread, "champion": champion})
    ds = pd.date_range(end=CUTOFF, periods=actual_points, freq=FREQ)
    actuals = pd.DataFrame({"unique_id": np.repeat(uids, actual_points), "ds": np.tile(ds, n),
                            "y": np.repeat(level, actual_points) * (1 + 0.05 * rng.standard_normal(n * actual_points))})
    resource_of = {"cpu_cores": ("cpu", "cores"), "memory_bytes": ("memory", "bytes")}
    recs = pd.DataFrame({
        "unique_id": uids, "entity": [u.split("/", 1)[1] for u in uids], "metric": metric_col,
        "resource": [resource_of[m][0] for m in metric_col], "unit": [resource_of[m][1] for m in metric_col],
        "kind": "daily", "lead": "0m", "period_start": CUTOFF, "period_end": CUTOFF + pd.Timedelta("1D"),
        "request": level, "limit": level * 1.5, "request_display": [f"{v:.2f}" for v in level],
        "limit_display": [f"{v * 1.5:.2f}" for v in level], "replicas": 1, "confidence": 0.95,
        "model": [CHAMPION[m] for m in metric_col], "reason": "p95 of the forecast plus headroom"})
    scores = pd.DataFrame([{"metric": m, "model": model, "horizon": h, "mase": 0.6 + 0.1 * i + 0.2 * j,
                            "wql": 0.05 + 0.01 * i, "coverage_80": 0.8, "coverage_95": 0.95}
                           for m in METRICS for j, model in enumerate(MODELS) for i, h in enumerate(HORIZONS)])
    store = RunStore(str(data_root), "2024-03-01T020000Z")
    store.write_frame("forecasts", forecasts)
    store.write_frame("actuals", actuals)
    store.write_frame("recommendations", recs)
    store.write_frame("leaderboard", scores.groupby(["model", "horizon"], sort=False)["mase"].mean().reset_index())
    store.write_json("summary.json", {
        "run_key": "2024-03-01T020000Z", "run_id": "scheduled__2024-03-01T02:00:00+00:00",
        "data_interval_end": CUTOFF.isoformat(), "champion": "arima", "champion_versions": {"cpu_cores": 3,
                                                                                             "memory_bytes": 1},
        "metric_leaderboard": scores.to_dict(orient="records")})
    store.publish_latest(["forecasts", "actuals", "recommendations", "leaderboard", "summary.json"],
                         extra={"data_interval_end": CUTOFF.isoformat()})
    latest = data_root / "latest"
    return {"series": n, "forecast_rows": len(forecasts), "actual_rows": len(actuals),
            "recommendation_rows": len(recs),
            "latest_mb": round(sum(p.stat().st_size for p in latest.iterdir()) / 1e6, 1)}


def _timed(call) -> tuple[float, int, object]:
    start = time.perf_counter()
    out = call()
    seconds = time.perf_counter() - start
    if isinstance(out, tuple):  # (body, headers) of /metrics
        size = len(out[0])
    else:
        size = len(json.dumps(out).encode())
    return seconds, size, out


def measure(data_root: Path) -> dict:
    """Seconds and bytes of each read path over ``data_root``'s ``latest/``."""
    from foresight_lib.serving import dashboard, json_views
    from foresight_lib.serving.operations import telemetry

    root = str(data_root)
    out: dict[str, dict] = {}

    def record(name: str, call) -> object:
        seconds, size, value = _timed(call)
        out[name] = {"s": round(seconds, 3), "bytes": size}
        print(f"  {name:32s} {seconds:8.3f} s {size / 1e6:10.2f} MB", flush=True)
        return value

    policy = {"models": "champion"}  # as the plugin calls it: the config's defaults
    if "max_series" in inspect.signature(telemetry.metrics_response).parameters:
        from foresight_lib.config import PublishConfig

        policy["max_series"] = PublishConfig().exposition_max_series
    out["metrics_policy"] = policy
    record("metrics_cold", lambda: telemetry.metrics_response(root, None, None, horizons=HORIZONS, **policy))
    record("metrics_warm", lambda: telemetry.metrics_response(root, None, None, horizons=HORIZONS, **policy))
    overview = record("overview_cold", lambda: dashboard.overview(root))
    record("overview_warm", lambda: dashboard.overview(root))
    uid = f"{METRICS[0]}/{entities(2)[0]}"
    record("series_one", lambda: dashboard.series_payload(root, uid))
    if hasattr(dashboard, "series_search"):
        record("series_search", lambda: dashboard.series_search(root, metric=METRICS[0], q="app-0001"))
    params = inspect.signature(json_views.forecasts_payload).parameters
    record("forecasts_default", lambda: json_views.forecasts_payload(root))
    record("forecasts_default_again", lambda: json_views.forecasts_payload(root))
    record("forecasts_metric", lambda: json_views.forecasts_payload(root, metric=METRICS[1]))
    record("forecasts_series", lambda: json_views.forecasts_payload(root, series=uid))
    if "q" in params:
        record("forecasts_search", lambda: json_views.forecasts_payload(root, q="app-0001"))
    record("recommendations_default", lambda: json_views.recommendations_payload(root))
    out["overview_series_listed"] = len(overview.get("series") or [])
    return out


def render(record: dict) -> str:
    lines = ["# Serving at fleet size: the dashboard's data, the JSON views and /metrics", "",
             "Synthetic `latest/` with the column layout of a real publish "
             f"({len(MODELS)} models per series, 6 five-minute steps, 80 and 95 % bands, recommendations, "
             "the per-metric leaderboard), read in process as the plugin's endpoints read it "
             "(`benchmarks/serving_scale.py`). Seconds per call; size of the answer in MB.", ""]
    for run in record["runs"]:
        lines += [f"## {run['label']}: {run['shape']['series']:,} series", "",
                  f"Command: `{run['command']}`", "",
                  f"Machine: {run['machine']}. Forecast rows {run['shape']['forecast_rows']:,}, actual rows "
                  f"{run['shape']['actual_rows']:,}, recommendations {run['shape']['recommendation_rows']:,}, "
                  f"`latest/` {run['shape']['latest_mb']} MB; written in {run['write_s']} s. Peak RSS "
                  f"{run['peak_rss_mb']:,} MB.", "",
                  "| read path | seconds | answer (MB) |", "|---|---:|---:|"]
        for name, value in run["timings"].items():
            if isinstance(value, dict) and "s" in value:
                lines.append(f"| {name} | {value['s']:.3f} | {value['bytes'] / 1e6:.2f} |")
        lines += ["", f"Series listed in the overview: {run['timings'].get('overview_series_listed')}; "
                  f"/metrics exposed with {run['timings'].get('metrics_policy', {'models': 'champion'})}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=6, help="forecast steps per series and model")
    parser.add_argument("--actual-points", type=int, default=288,
                        help="actuals per series in latest/actuals.parquet (a publish keeps the last day: 288)")
    parser.add_argument("--label", default="after", help="what this run measures (before / after)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="foresight-serving-") as tmp:
        start = time.perf_counter()
        shape = write_latest(Path(tmp) / "data", args.series, args.steps, args.actual_points)
        write_s = round(time.perf_counter() - start, 1)
        print(f"wrote {shape} in {write_s} s", flush=True)
        timings = measure(Path(tmp) / "data")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    run = {"label": args.label, "shape": shape, "write_s": write_s, "timings": timings, "peak_rss_mb": peak,
           "actual_points": args.actual_points, "machine": "2-core shared VM, other test runs beside it",
           "command": "PYTHONPATH=$PWD .venv/bin/python benchmarks/serving_scale.py "
                      + shlex.join(argv if argv is not None else sys.argv[1:])}
    if args.no_record:
        print(json.dumps(run, indent=2))
        return
    path = RESULTS / f"{STEM}.json"
    record = json.loads(path.read_text()) if path.exists() else {"runs": []}
    record["runs"] = [r for r in record["runs"]
                      if (r["label"], r["shape"]["series"]) != (args.label, shape["series"])] + [run]
    record["runs"].sort(key=lambda r: (r["shape"]["series"], r["label"] != "before"))
    write_results(STEM, record, render(record))


if __name__ == "__main__":
    main()
