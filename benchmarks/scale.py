"""The nightly on the Celery stack over many series: wall time, per-task time and memory, 1 worker against 2.

For each series count and worker count, it starts the native stack (``scripts/stack.py``:
Postgres, Redis, moto S3, the MLflow server, Airflow's CeleryExecutor with ``--workers``
workers of concurrency 1), triggers ``foresight_nightly`` through the REST API and waits for
it. It reports the run's wall time, series per second, each task's duration (from the task
instances) and peak RSS (the ``peak RSS`` line every pipeline step logs), then stops the stack.

The series are real: the CPU, memory, disk and network series of the Bitbrains Rnd VMs
(2013-8) and the CPU and memory series of the Alibaba 2018 machines in ``../shared/data``,
the last 15 days of each on the 5-minute grid, constant ones left out, in a seeded
random order (so any count mixes metrics and traces). When more series are
asked for than there are, copies are added whose values are shifted in time by a whole
number of hours (copy k: k hours, circularly), named ``<metric>/<entity>-copy<k>``; every
series is moved in time to end at the run's data interval end.

The run uses the shipped config (all eight models, ``include/foresight.yaml``) with the
series as files (``source.kind: files``) and ``data_root`` on the stack's S3 bucket.

Writes ``benchmarks/results/scale.json`` and ``scale.md`` (merged with earlier sizes), with
the command. Usage::

    .venv/bin/python benchmarks/scale.py --series 250 --workers 1,2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
LOGICAL_DATE = "2024-03-20T02:00:00Z"
DAYS = 15
SOURCES = [
    (SHARED / "bitbrains_rnd" / "2013-8", "bitbrains"),
    (SHARED / "alibaba2018_machines", "alibaba2018"),
]
NEAR_CONSTANT = 1e-4
"""Series whose standard deviation is below this share of their mean magnitude are left out
(provisioned capacities: validation would quarantine them as constant)."""
RSS_LINE = re.compile(r"peak RSS (\d+) MB \(largest child (\d+) MB\)")

sys.path.insert(0, str(ROOT))

from foresight_lib.orchestration.ports import free_port  # noqa: E402
from scripts import stack as stack_script  # noqa: E402

# -- the series ------------------------------------------------------------------------------

def real_series(freq: str = "5min") -> pd.DataFrame:
    """Every non-constant series of the shared traces, the last ``DAYS`` days, on the grid (long frame)."""
    from foresight_lib.quality.features import prepare_series
    from foresight_lib.sources.loaders import load_series

    frames = []
    for path, fmt in SOURCES:
        loaded = load_series(path, fmt)
        frame = prepare_series(loaded.frame, loaded.series, freq=freq).frame
        end = frame.groupby("unique_id")["ds"].transform("max")
        frame = frame[frame["ds"] > end - pd.Timedelta(days=DAYS)]
        relative = frame.groupby("unique_id")["y"].agg(
            lambda y: float(np.nanstd(y) / max(np.nanmean(np.abs(y)), 1e-12)))
        frame = frame[frame["unique_id"].isin(relative[relative > NEAR_CONSTANT].index)]
        frames.append(frame[["unique_id", "ds", "y"]])
    return pd.concat(frames, ignore_index=True)


def build_series(n: int, end: pd.Timestamp, freq: str = "5min") -> tuple[pd.DataFrame, dict]:
    """``n`` series ending at ``end``: the real ones, then time-shifted copies (see the module docstring)."""
    real = real_series(freq)
    ids = sorted(real["unique_id"].unique())
    ids = [ids[i] for i in np.random.default_rng(0).permutation(len(ids))]  # any count mixes metrics and traces
    step = pd.Timedelta(freq)
    per_hour = int(pd.Timedelta("1h") / step)
    groups = {uid: g.sort_values("ds") for uid, g in real.groupby("unique_id")}
    pieces = []
    for i in range(n):
        uid = ids[i % len(ids)]
        copy = i // len(ids)
        y = groups[uid]["y"].to_numpy()
        if copy:
            y = np.roll(y, copy * per_hour)
        ds = pd.date_range(end=end - step, periods=len(y), freq=freq)
        pieces.append(pd.DataFrame({"unique_id": f"{uid}-copy{copy}" if copy else uid, "ds": ds, "y": y}))
    frame = pd.concat(pieces, ignore_index=True)
    return frame, {"real_series": len(ids), "copies": max(0, n - len(ids)), "days": DAYS}


# -- one run on the stack --------------------------------------------------------------------

def _config(state: Path, series_dir: Path, models: list[str] | None) -> Path:
    config = yaml.safe_load((ROOT / "include" / "foresight.yaml").read_text())
    if models:
        config["models"] = models
    config.update({"schedule": None, "source": {**config.get("source", {}), "kind": "files",
                                                 "path": str(series_dir), "format": "long", "metrics": []}})
    validation = config.setdefault("validation", {})
    validation["suite_dir"] = str(ROOT / validation.get("suite_dir", "include/gx"))
    path = state / "foresight.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _seconds(task: dict) -> float | None:
    if not task.get("start_date") or not task.get("end_date"):
        return None
    return (pd.Timestamp(task["end_date"]) - pd.Timestamp(task["start_date"])).total_seconds()


def _peak_rss(stack_dir: Path, run_id: str) -> dict[tuple[str, int], dict]:
    """(task_id, map_index) -> the last try's peak RSS lines, read from the task logs."""
    out: dict[tuple[str, int], dict] = {}
    for log in sorted((stack_dir / "airflow" / "logs").rglob("*.log")):
        text = str(log)
        if f"run_id={run_id}" not in text:
            continue
        task = re.search(r"task_id=([^/]+)", text).group(1)
        index = re.search(r"map_index=(-?\d+)", text)
        hits = RSS_LINE.findall(log.read_text(errors="replace"))
        if hits:
            mb, child = hits[-1]
            key = (task, int(index.group(1)) if index else -1)
            out[key] = {"peak_rss_mb": int(mb), "children_peak_rss_mb": int(child)}
    return out


def _failures(stack_dir: Path, run_id: str, tasks: list[dict]) -> list[dict]:
    """The failed tasks with the error lines of their logs (why a run failed, kept with its figures)."""
    out = []
    for t in tasks:
        if t["state"] != "failed":
            continue
        lines = []
        for log in (stack_dir / "airflow" / "logs").rglob("*.log"):
            if f"run_id={run_id}" in str(log) and f"task_id={t['task_id']}" in str(log):
                lines += [ln[:1500] for ln in log.read_text(errors="replace").splitlines()
                          if "error" in ln.lower() or "Error" in ln][-8:]
        out.append({"task": t["task_id"], "map_index": t["map_index"], "log": lines})
    return out


def run_once(n_series: int, workers: int, timeout_s: float, models: list[str] | None = None) -> dict:
    """One nightly over ``n_series`` on a fresh stack with ``workers`` workers; its figures."""
    state = Path(tempfile.mkdtemp(prefix="foresight-scale-"))
    state.chmod(0o755)
    series_dir = state / "series"
    series_dir.mkdir()
    frame, origin = build_series(n_series, pd.Timestamp(LOGICAL_DATE))
    frame.to_parquet(series_dir / "series.parquet", index=False)
    ports = {name: free_port() for name in stack_script.DEFAULT_PORTS}
    os.environ["FORESIGHT_CONFIG"] = str(_config(state, series_dir, models))
    stack = stack_script.Stack(state / "stack", ports, workers=workers, concurrency=1)
    try:
        stack.up()
        airflow = stack.airflow()
        airflow.unpause()
        run_id = airflow.trigger(LOGICAL_DATE)["dag_run_id"]
        try:
            run = airflow.wait_run(run_id, timeout_s, every=10)
        except TimeoutError:
            run = airflow.run(run_id)
        tasks = airflow.task_instances(run_id)
        rss = _peak_rss(stack.dir, run_id)
        wall = (pd.Timestamp(run["end_date"]) - pd.Timestamp(run["start_date"])).total_seconds() \
            if run.get("end_date") else None
        rows = []
        for t in sorted(tasks, key=lambda t: (t["task_id"], t["map_index"])):
            rows.append({"task": t["task_id"], "map_index": t["map_index"],
                         "label": t.get("rendered_map_index") or t["task_id"], "state": t["state"],
                         "try_number": t["try_number"], "hostname": t.get("hostname"), "seconds": _seconds(t),
                         **rss.get((t["task_id"], t["map_index"]), {})})
        models_run = sorted({t["task_id"] == "train" and (t.get("rendered_map_index") or "").split(" ")[0]
                             for t in tasks} - {False, ""})
        return {"series": n_series, "workers": workers, "state": run.get("state", "timeout"), "models": models_run,
                "wall_seconds": wall, "series_per_second": round(n_series / wall, 4) if wall else None,
                "max_task_peak_rss_mb": max((r.get("peak_rss_mb") or 0 for r in rows), default=None),
                "data": origin, "tasks": rows, "failures": _failures(stack.dir, run_id, tasks)}
    finally:
        stack.down()
        shutil.rmtree(state, ignore_errors=True)


# -- report ----------------------------------------------------------------------------------

def render(record: dict) -> str:
    lines = ["# Scale: the nightly on the Celery stack", "",
             f"Machine: {record['machine']}. Each line: one run on a fresh stack, workers of concurrency 1.", ""]
    lines += ["| series | workers | models | state | wall | series/s | slowest task | max task peak RSS | command |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in record["runs"]:
        slowest = max((t for t in r["tasks"] if t["seconds"] is not None), key=lambda t: t["seconds"], default=None)
        wall = f"{r['wall_seconds'] / 60:.1f} min" if r["wall_seconds"] else "-"
        slow = f"{slowest['label']} {slowest['seconds'] / 60:.1f} min" if slowest else "-"
        models = _models_label(r)
        rate = r["series_per_second"] or "-"
        lines.append(f"| {r['series']} | {r['workers']} | {models} | {r['state']} | {wall} | {rate} | {slow} |"
                     f" {r['max_task_peak_rss_mb'] or '-'} MB | `{r['command']}` |")
    speedups = []
    most = max((len(r.get("models") or []) for r in record["runs"]), default=0)
    by = {(r["series"], r["workers"]): r for r in record["runs"]
          if r["state"] == "success" and len(r.get("models") or []) == most}
    for (n, w), r in sorted(by.items()):
        if w == 2 and (n, 1) in by:
            speedups.append(f"- {n} series: 2 workers {by[(n, 1)]['wall_seconds'] / r['wall_seconds']:.2f}x "
                            "as fast as 1 worker")
    if speedups:
        lines += ["", *speedups]
    projection = project(record["runs"])
    if projection:
        lines += ["", projection]
    lines += ["", "Per-task figures are in `scale.json`."]
    return "\n".join(lines) + "\n"


def _models_label(run: dict) -> str:
    """``7 + ensemble`` for the shipped models; fewer are named."""
    models = run.get("models") or []
    return f"{len(models)} + ensemble" if len(models) >= 7 else f"{', '.join(models)} + ensemble"


WINDOW_S = 4 * 3600
MAPPED = ("train", "rightsize")
"""Tasks mapped over the series' shards: they spread over the workers."""
BOOKKEEPING = ("release", "select_models", "rightsize_shards")
TARGET_SERIES = 100_000


def project(runs: list[dict]) -> str | None:
    """Workers for ``TARGET_SERIES`` in a 4-hour window, from the largest successful run's measured costs.

    Train and rightsize tasks are mapped over shards and spread over the workers; the other
    steps (extract, validate, features, evaluate, publish) are one task each and scale with
    the series too, so they bound the window alone.
    """
    done = [r for r in runs if r["state"] == "success"]
    if not done:
        return None
    run = max(done, key=lambda r: (len(r.get("models") or []), r["series"], r["workers"]))  # every model first
    train = sum(t["seconds"] or 0 for t in run["tasks"] if t["task"] in MAPPED)
    serial = sum(t["seconds"] or 0 for t in run["tasks"] if t["task"] not in (*MAPPED, *BOOKKEEPING))
    per_train, per_serial = train / run["series"], serial / run["series"]
    serial_total = per_serial * TARGET_SERIES
    left = WINDOW_S - serial_total
    head = (f"Projection from the {run['series']}-series run with {run['workers']} worker(s): mapped tasks cost "
            f"{per_train:.2f} task-seconds per series, the single-task steps {per_serial:.3f} s per series. "
            f"For {TARGET_SERIES:,} series the single-task steps alone take {serial_total / 3600:.1f} h")
    if left <= 0:
        return head + "; they do not fit a 4-hour window without being split too."
    workers = math.ceil(per_train * TARGET_SERIES / left)
    return head + (f", which leaves {left / 3600:.1f} h for the mapped tasks: about {workers} workers of concurrency 1 "
                   "(one core each, as measured here), assuming the cost per series stays linear.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", default="250", help="comma-separated series counts")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="most seconds to wait for one run")
    parser.add_argument("--models", default=None, help="comma-separated models (default: the shipped config's)")
    args = parser.parse_args()
    command = "python benchmarks/scale.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    path = RESULTS / "scale.json"
    record = json.loads(path.read_text()) if path.exists() else {"runs": []}
    record["machine"] = f"{os.cpu_count()} CPUs, {platform.platform()}"
    for n in [int(v) for v in args.series.split(",")]:
        for w in [int(v) for v in args.workers.split(",")]:
            print(f"{n} series, {w} worker(s) ...", flush=True)
            result = run_once(n, w, args.timeout, args.models.split(",") if args.models else None)
            result.update(command=command, date=datetime.now(UTC).isoformat(timespec="seconds"))
            print(f"  {result['state']} in {result['wall_seconds']} s; max task peak RSS "
                  f"{result['max_task_peak_rss_mb']} MB", flush=True)
            for failure in result["failures"]:
                print(f"  failed: {failure['task']}[{failure['map_index']}]", *failure["log"], sep="\n    ", flush=True)
            key = (n, w, result["models"])
            record["runs"] = [r for r in record["runs"] if (r["series"], r["workers"], r.get("models")) != key]
            record["runs"] = sorted([*record["runs"], result],
                                    key=lambda r: (-len(r.get("models") or []), r["series"], r["workers"]))
            RESULTS.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=2, default=str) + "\n")
            (RESULTS / "scale.md").write_text(render(record))


if __name__ == "__main__":
    main()
