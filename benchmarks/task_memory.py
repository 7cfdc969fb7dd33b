"""Peak memory of each nightly step over many series, each step in a process of its own.

The nightly's steps run as the DAG's tasks would, one fresh Python process per task
(``extract``, ``validate``, ``build_features``, each ``train`` task, each ``rightsize``
task, ``evaluate``, ``publish``), one after another, on a local data root and a SQLite
MLflow store in a temporary folder. Each task reports its peak RSS as it ends (Linux's
``VmHWM``, its child processes apart, as on the stack). No Airflow is imported, so a
task on an Airflow worker needs about its import cost more (the stack's figures are in
``scale.md``).

This answers "which task grows with the series count, and how much" in minutes instead of
the hour a run on the stack takes, so it can use fewer models than the nightly: the series
are those of ``scale.py`` (real traces, time-shifted copies beyond them).

Writes ``benchmarks/results/task_memory.json`` and ``.md`` (merged by series count and
models), with the command. Usage::

    .venv/bin/python benchmarks/task_memory.py --series 4000 --models naive,seasonal_naive,lstm,ensemble
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]


def _config(state: Path, series_dir: Path, models: list[str]) -> Path:
    """The shipped config with the series as files and everything written under ``state``."""
    config = yaml.safe_load((ROOT / "include" / "foresight.yaml").read_text())
    config.update({
        "models": models, "schedule": None, "data_root": str(state / "data"),
        "source": {**config.get("source", {}), "kind": "files", "path": str(series_dir), "format": "long",
                   "metrics": []},
    })
    config["mlflow"] = {**config.get("mlflow", {}), "tracking_uri": f"sqlite:///{state}/mlflow.db",
                        "artifact_location": str(state / "artifacts")}
    validation = config.setdefault("validation", {})
    validation["suite_dir"] = str(ROOT / validation.get("suite_dir", "include/gx"))
    path = state / "foresight.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- one step in its own process ----------------------------------------------------------------

def _step(name: str, run_file: Path, args_file: Path | None) -> None:
    """Run one step (in the child process) and write what it returns next to ``run_file``."""
    from foresight_lib import pipeline
    from foresight_lib.rightsizing import plan_step

    run = json.loads(run_file.read_text())
    args = json.loads(args_file.read_text()) if args_file else {}
    if name == "extract":
        out = pipeline.extract("task-memory", None, args["logical_date"], owner_pid=os.getppid())
    elif name == "train":
        out = pipeline.train(run, **args, tasks_at_once=1)
    elif name == "rightsize":
        out = plan_step.rightsize(run, **args)
    elif name == "evaluate":
        out = pipeline.evaluate(run, args["trained"])
    else:
        out = getattr(pipeline, name)(run)
    from foresight_lib.forecasting.progress import peak_rss_mb

    Path(str(run_file) + ".out").write_text(json.dumps({"out": out, "peak": peak_rss_mb()}, default=str))


def _in_process(state: Path, label: str, name: str, run: dict, args: dict | None = None) -> tuple[dict, dict]:
    """Run step ``name`` in a fresh process; its output and ``{label, seconds, peak_rss_mb}``."""
    run_file = state / "run.json"
    run_file.write_text(json.dumps(run, default=str))
    command = [sys.executable, __file__, "--step", name, "--run-file", str(run_file)]
    if args is not None:
        (state / "args.json").write_text(json.dumps(args, default=str))
        command += ["--args-file", str(state / "args.json")]
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT)
    if child.wait() != 0:
        raise SystemExit(f"step {label} failed (exit {child.returncode})")
    seconds = time.perf_counter() - started
    reply = json.loads(Path(str(run_file) + ".out").read_text())
    out, peak = reply["out"], reply["peak"]
    figure = {"label": label, "seconds": round(seconds, 1), "peak_rss_mb": round(peak["peak_rss_mb"]),
              "children_peak_rss_mb": round(peak["children_peak_rss_mb"])}
    print(f"{label:32s} {figure['seconds']:8.1f} s {figure['peak_rss_mb']:6d} MB", flush=True)
    return out, figure


STEPS = ("extract", "validate", "build_features", "train", "evaluate", "publish")


def measure(n_series: int, models: list[str], logical_date: str, until: str = "publish",
            keep: Path | None = None) -> dict:
    """The steps of one nightly over ``n_series`` series, up to ``until``; the figures of each task.

    ``keep``: run in this folder and leave it there (the run folder, to look into a step).
    """
    from scale import build_series

    from foresight_lib.forecasting.shards import task_label

    state = keep or Path(tempfile.mkdtemp(prefix="foresight-task-memory-"))
    state.mkdir(parents=True, exist_ok=True)
    try:
        series_dir = state / "series"
        series_dir.mkdir()
        frame, origin = build_series(n_series, pd.Timestamp(logical_date))
        frame.to_parquet(series_dir / "series.parquet", index=False)
        del frame
        os.environ["FORESIGHT_CONFIG"] = str(_config(state, series_dir, models))
        tasks = []
        run, figure = _in_process(state, "extract", "extract", {}, {"logical_date": logical_date})
        tasks.append(figure)
        for name in ("validate", "build_features")[:STEPS.index(until)]:
            run, figure = _in_process(state, name, name, run)
            tasks.append(figure)
        if STEPS.index(until) < STEPS.index("train"):
            return {"series": n_series, "models": models, "data": origin, "shards": run.get("shards"),
                    "tasks": tasks, "max_peak_rss_mb": max(t["peak_rss_mb"] for t in tasks)}
        from foresight_lib import pipeline
        from foresight_lib.rightsizing.plan_step import rightsize_tasks

        trained = []
        for task in pipeline.train_tasks(run):
            out, figure = _in_process(state, task_label(task), "train", run, task)
            trained.append(out)
            tasks.append({**figure, "task": "train"})
        for task in rightsize_tasks(run):
            _, figure = _in_process(state, f"rightsize · shard {task['shard']}", "rightsize", run, task)
            tasks.append({**figure, "task": "rightsize"})
        run, figure = _in_process(state, "evaluate", "evaluate", run, {"trained": trained})
        tasks.append(figure)
        if until == "evaluate":
            return {"series": n_series, "models": models, "data": origin, "shards": run.get("shards"),
                    "tasks": tasks, "max_peak_rss_mb": max(t["peak_rss_mb"] for t in tasks)}
        _, figure = _in_process(state, "publish", "publish", run)
        tasks.append(figure)
        if keep is None:
            _in_process(state, "release", "release", run)
        return {"series": n_series, "models": models, "data": origin, "shards": run.get("shards"),
                "tasks": tasks, "max_peak_rss_mb": max(t["peak_rss_mb"] for t in tasks)}
    finally:
        if keep is None:
            shutil.rmtree(state, ignore_errors=True)


# -- report -------------------------------------------------------------------------------------

def _by_step(record: dict) -> list[tuple[str, int, float, int]]:
    """``(step, tasks, seconds, largest peak RSS)``, the mapped steps folded into one line each."""
    steps: dict[str, list[dict]] = {}
    for task in record["tasks"]:
        key = task.get("task") or task["label"]
        if key == "train":
            key = f"train {task['label'].split(' ')[0]}"
        steps.setdefault(key, []).append(task)
    return [(key, len(ts), round(sum(t["seconds"] for t in ts), 1), max(t["peak_rss_mb"] for t in ts))
            for key, ts in steps.items()]


def render(records: list[dict], machine: str) -> str:
    lines = ["# Peak memory per nightly task", "",
             f"Machine: {machine}. Each task in a fresh Python process (no Airflow imported), one after "
             "another, local data root, SQLite MLflow store; peak RSS (`VmHWM`) as each task ends.", ""]
    for record in records:
        lines += [f"## {record['series']} series, models {', '.join(record['models'])} ({record['shards']} shards)",
                  "", f"`{record['command']}` ({record['date']})", "",
                  "| step | tasks | seconds (all tasks) | largest peak RSS |", "|---|---|---|---|"]
        lines += [f"| {step} | {n} | {seconds} | {rss} MB |" for step, n, seconds, rss in _by_step(record)]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--models", default="naive,seasonal_naive,lstm,ensemble",
                        help="comma-separated models (the ensemble needs two others)")
    parser.add_argument("--logical-date", default="2024-03-20T02:00:00Z")
    parser.add_argument("--until", choices=STEPS, default="publish",
                        help="stop after this step (the results file is not written)")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (results file not written)")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--run-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--args-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        _step(args.step, args.run_file, args.args_file)
        return
    record = measure(args.series, args.models.split(","), args.logical_date, args.until, args.keep)
    if args.until != "publish" or args.keep:
        return
    record["command"] = "python benchmarks/task_memory.py " + shlex.join(sys.argv[1:])
    record["date"] = datetime.now(UTC).strftime("%Y-%m-%d")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "task_memory.json"
    old = json.loads(path.read_text()) if path.exists() else {"runs": []}
    runs = [r for r in old["runs"] if (r["series"], r["models"]) != (record["series"], record["models"])]
    runs = sorted([*runs, record], key=lambda r: (r["series"], len(r["models"])))
    machine = f"{os.cpu_count()} CPUs, {platform.platform()}"
    path.write_text(json.dumps({"machine": machine, "runs": runs}, indent=2) + "\n")
    (RESULTS / "task_memory.md").write_text(render(runs, machine))
    print(render([record], machine))


if __name__ == "__main__":
    main()
