"""Training jobs: nightly runs started, listed, followed and cancelled through Airflow's REST API.

A job is a run of the ``foresight_nightly`` DAG; its id is the DAG run id. Every call goes
to Airflow's own REST API (``/api/v2``) with the caller's token, so Airflow decides what
the caller may do and records who did it. The base URL is a configured one (the plugin's
``security.airflow_api_base``), never one a request names; what Airflow answers is
summarised (its ``detail``, short and redacted), never passed on whole.

A run's configuration is checked here before it is triggered, the way its extract would
check it (422 with the same message). A run's ``conf`` and note are redacted in every
answer and log line: a password in a Prometheus URL of ``overrides`` reaches Airflow,
which needs it to run, and nobody else. When a run has finished, its leaderboard is read
from its run folder (``runs/<run key>/summary.json``, else ``leaderboard.parquet``); when
it has failed, the error of its first failed task is read from that task's log.
"""
from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field

from foresight_lib.errors import ForesightError
from foresight_lib.orchestration.dags import NIGHTLY_DAG
from foresight_lib.orchestration.rest import FINISHED, AirflowApiError, AirflowClient
from foresight_lib.redaction import redact_config, redact_text
from foresight_lib.serving.operations import OperationError

log = logging.getLogger(__name__)

TIMEOUT_S = float(os.environ.get("FORESIGHT_API_AIRFLOW_TIMEOUT_S", "30"))
TEARDOWN_RULE = "all_done_setup_success"
"""The trigger rule Airflow gives a teardown task."""
CANCEL_NOTE = "cancelled through the Foresight API"
ERROR_CHARS = 1000


class TrainRequest(BaseModel):
    """The nightly run's parameters (the DAG's trigger form); anything left out takes the DAG's default."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [
        {"metrics": ["container_cpu_usage_seconds_total"], "models": ["naive", "seasonal_naive"],
         "horizons": ["5m", "30m"], "overrides": {"history_days": 3}, "publish": "never"},
    ]}}
    metrics: list[str] | None = Field(None, max_length=100, description="Metrics to forecast (default: all)")
    models: list[str] | None = Field(None, min_length=1, max_length=20, description="Models to train and compare")
    horizons: list[str] | None = Field(None, min_length=1, max_length=32, description="Horizons (5m, 15m, 30m)")
    overrides: dict[str, Any] | None = Field(None, description="Other settings of include/foresight.yaml")
    publish: Literal["auto", "always", "never"] | None = Field(
        None, description="auto: publish only the newest run with the configured settings; always; never")
    logical_date: datetime | None = Field(None, description="The run's logical date (default: now)")
    note: str | None = Field(None, max_length=1000, description="A note shown on the run in Airflow")


class Refusal(BaseModel):
    """A refused request: the reason (a run's settings that would fail), or each bad field of the body."""

    detail: str | list[dict[str, Any]]


class TaskProgress(BaseModel):
    task_id: str
    map_index: int = -1
    state: str | None = None
    try_number: int | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    duration: float | None = None
    note: str | None = None


class Job(BaseModel):
    job_id: str = Field(description="The DAG run id")
    state: str | None = None
    run_type: str | None = None
    logical_date: datetime | None = None
    data_interval_end: datetime | None = None
    queued_at: datetime | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    conf: dict[str, Any] | None = None
    note: str | None = None
    airflow_url: str | None = Field(None, description="The run in Airflow's UI")


class JobError(BaseModel):
    task_id: str
    map_index: int = -1
    try_number: int | None = None
    message: str = Field(description="The task's error (redacted), or where to read it")


class JobDetail(Job):
    tasks: list[TaskProgress] = Field(default_factory=list)
    error: JobError | None = Field(None, description="When failed: the first failed task and its error")
    progress: dict[str, int] = Field(default_factory=dict, description="task state -> count")
    leaderboard: list[dict[str, Any]] | None = Field(None, description="When finished: the run's leaderboard")
    summary: dict[str, Any] | None = Field(None, description="When published: champion, publish decision…")


class JobList(BaseModel):
    jobs: list[Job]
    total_entries: int


class AirflowApi(AirflowClient):
    """The shared REST client on behalf of one caller (their token), its errors as the API's answers."""

    def __init__(self, base_url: str, token: str | None, transport: httpx.BaseTransport | None = None,
                 timeout_s: float = TIMEOUT_S):
        super().__init__(base_url, token, timeout_s=timeout_s, transport=transport)

    def call(self, method: str, path: str, what: str, **kwargs) -> dict:
        try:
            return super().call(method, path, what, **kwargs)
        except AirflowApiError as exc:
            raise OperationError(_status(exc.status), exc.message) from exc


def _status(code: int | None) -> int:
    """Airflow's answer as ours: its 401/403/404/409/422 pass through, anything else is a bad gateway."""
    return code if code in (400, 401, 403, 404, 409, 422) else 502


def _job(run: dict, ui_base: str | None) -> Job:
    run_id = run.get("dag_run_id") or run.get("run_id") or ""
    fields = {k: run.get(k) for k in ("state", "run_type", "logical_date", "data_interval_end", "queued_at",
                                      "start_date", "end_date")}
    fields["conf"] = redact_config(run["conf"]) if isinstance(run.get("conf"), dict) else None
    fields["note"] = redact_text(run["note"]) if isinstance(run.get("note"), str) else None
    url = f"{ui_base.rstrip('/')}/dags/{NIGHTLY_DAG}/runs/{run_id}" if ui_base else None
    return Job(job_id=run_id, airflow_url=url, **fields)


def check_conf(conf: dict[str, Any]) -> None:
    """Refuse a run configuration its extract would refuse: 422 with the message the run would give.

    The settings (``include/foresight.yaml`` with the run's models, horizons, publish and
    ``overrides``) are validated as the run validates them, and the metrics asked for must be
    ones the source offers, where the source's settings name them (the demo and Prometheus).
    """
    from foresight_lib.runs import load_run_config, overrides_from_params
    from foresight_lib.sources.catalog import source_metrics

    try:
        cfg = load_run_config(overrides_from_params(conf))
    except ForesightError as exc:
        raise OperationError(422, f"the run would fail: {redact_text(str(exc))}") from exc
    source = cfg.source.model_dump() if hasattr(cfg.source, "model_dump") else dict(cfg.source)
    offered = source_metrics({**source, "metrics": []})
    unknown = [m for m in conf.get("metrics") or [] if m not in offered]
    if offered and unknown:
        raise OperationError(422, f"the run would fail: metric(s) {unknown} are not in the source; "
                                  f"it has {sorted(offered)}")


def start(api: AirflowApi, request: TrainRequest) -> Job:
    """Check, then trigger a nightly run with ``request``'s parameters; the job id is its DAG run id.

    Raises:
        OperationError: 422 when the run's configuration would make it fail (nothing is
            triggered), else Airflow's refusal.
    """
    from datetime import UTC

    conf = {k: v for k, v in request.model_dump(include={"metrics", "models", "horizons", "overrides",
                                                         "publish"}).items() if v is not None}
    check_conf(conf)
    logical = request.logical_date or datetime.now(UTC)
    if logical.tzinfo is None:
        logical = logical.replace(tzinfo=UTC)
    body: dict[str, Any] = {"logical_date": logical.isoformat(), "conf": conf}
    if request.note:
        body["note"] = request.note
    run = api.call("POST", f"/dags/{NIGHTLY_DAG}/dagRuns", "to start a nightly run", json=body)
    log.info("started nightly run %s with %s", run.get("dag_run_id"), redact_config(conf))
    return _job(run, api.base_url)


def list_jobs(api: AirflowApi, limit: int = 25, state: str | None = None) -> JobList:
    """The newest nightly runs first."""
    params: dict[str, Any] = {"limit": limit, "order_by": "-run_after"}
    if state:
        params["state"] = state
    data = api.call("GET", f"/dags/{NIGHTLY_DAG}/dagRuns", "to list the nightly runs", params=params)
    return JobList(jobs=[_job(r, api.base_url) for r in data.get("dag_runs", [])],
                   total_entries=int(data.get("total_entries", 0)))


def get_job(api: AirflowApi, job_id: str, data_root: str | None = None) -> JobDetail:
    """One run: its state, each task's progress and, once finished, its leaderboard."""
    run = api.call("GET", f"/dags/{NIGHTLY_DAG}/dagRuns/{_quote(job_id)}", f"to read job {job_id!r}")
    tasks = [TaskProgress(**{k: ti.get(k) for k in TaskProgress.model_fields if k in ti})
             for ti in api.task_instances(job_id)]
    for task in tasks:
        task.note = redact_text(task.note) if task.note else task.note
    progress: dict[str, int] = {}
    for task in tasks:
        progress[str(task.state or "none")] = progress.get(str(task.state or "none"), 0) + 1
    detail = JobDetail(**_job(run, api.base_url).model_dump(), tasks=tasks, progress=progress)
    if detail.state in FINISHED and data_root and run.get("data_interval_end"):
        detail.leaderboard, detail.summary = run_results(data_root, run["data_interval_end"])
    if detail.state == "failed":
        detail.error = job_error(api, job_id, tasks)
    return detail


def job_error(api: AirflowApi, job_id: str, tasks: list[TaskProgress]) -> JobError | None:
    """The first failed task of a run and the error its log ends with (redacted); None when none failed."""
    failed = sorted((t for t in tasks if t.state == "failed"),
                    key=lambda t: (t.end_date is None, t.end_date or datetime.max, t.task_id))
    if not failed:
        return None
    task = next((t for t in failed if t.note == CANCEL_NOTE), failed[0])
    where = f"the log of task {task.task_id!r}" + (f" [{task.map_index}]" if task.map_index >= 0 else "")
    error = JobError(task_id=task.task_id, map_index=task.map_index, try_number=task.try_number,
                     message=f"see {where} in Airflow")
    if task.note == CANCEL_NOTE:
        error.message = CANCEL_NOTE
        return error
    try:
        logged = api.call("GET", f"/dags/{NIGHTLY_DAG}/dagRuns/{_quote(job_id)}/taskInstances/{_quote(task.task_id)}"
                                 f"/logs/{task.try_number or 1}", f"to read {where}",
                          params={"map_index": task.map_index, "full_content": "true"},
                          headers={"Accept": "application/json"})
    except OperationError as exc:
        log.warning("could not read %s of job %s: %s", where, job_id, exc.detail)
        return error
    message = log_error(logged.get("content"))
    if message:
        error.message = redact_text(message[:ERROR_CHARS])
    return error


def log_error(content: Any) -> str | None:
    """The last error of a task's structured log (Airflow 3: events with ``error_detail``), else None."""
    if not isinstance(content, list):
        return None
    for event in reversed(content):
        if not isinstance(event, dict):
            continue
        details = event.get("error_detail")
        if isinstance(details, list) and details and isinstance(details[-1], dict):
            last = details[-1]
            return f"{last.get('exc_type', 'Error')}: {last.get('exc_value', '')}".strip()
        if str(event.get("level", "")).lower() in ("error", "critical") and event.get("event"):
            return str(event["event"])
    return None


def cancel(api: AirflowApi, job_id: str, data_root: str | None = None) -> JobDetail:
    """Mark the run failed; a finished run is left as it is (409).

    Airflow marks the running tasks failed and the pending ones skipped. The nightly's
    teardown task is left to run (it releases the date's run lock), and once it has run,
    Airflow settles the run's state from its last tasks before the teardown: skipped
    ones would make a cancelled run ``success``. Those that have not succeeded are
    therefore marked failed too (with a note), so the run ends ``failed``; until the
    teardown has run it may still say ``queued`` or ``running``.
    """
    current = api.call("GET", f"/dags/{NIGHTLY_DAG}/dagRuns/{_quote(job_id)}", f"to read job {job_id!r}")
    if current.get("state") in FINISHED:
        raise OperationError(409, f"job {job_id!r} has already finished ({current.get('state')}); nothing to cancel")
    api.call("PATCH", f"/dags/{NIGHTLY_DAG}/dagRuns/{_quote(job_id)}", f"to cancel job {job_id!r}",
             json={"state": "failed"})
    done = {ti.get("task_id") for ti in api.task_instances(job_id) if ti.get("state") == "success"}
    for task_id in last_tasks(api):
        if task_id not in done:
            api.call("PATCH", f"/dags/{NIGHTLY_DAG}/dagRuns/{_quote(job_id)}/taskInstances/{_quote(task_id)}",
                     f"to mark task {task_id!r} of job {job_id!r} failed",
                     json={"new_state": "failed", "note": CANCEL_NOTE})
    log.info("cancelled nightly run %s", job_id)
    return get_job(api, job_id, data_root)


def last_tasks(api: AirflowApi) -> list[str]:
    """The nightly's tasks that decide its run's state: those followed by teardowns only (as Airflow counts)."""
    data = api.call("GET", f"/dags/{NIGHTLY_DAG}/tasks", "to read the nightly's tasks")
    tasks = {t["task_id"]: t for t in data.get("tasks", []) if isinstance(t, dict) and t.get("task_id")}
    teardowns = {tid for tid, t in tasks.items() if t.get("trigger_rule") == TEARDOWN_RULE}
    return sorted(tid for tid, t in tasks.items()
                  if tid not in teardowns and set(t.get("downstream_task_ids") or ()) <= teardowns)


def run_results(data_root: str, data_interval_end: str) -> tuple[list[dict] | None, dict | None]:
    """The leaderboard and summary a finished run left in its run folder (None when it left none)."""
    from foresight_lib.runs import LEADERBOARD, run_key_for
    from foresight_lib.runs.storage import RunStore
    from foresight_lib.serving import json_views

    try:
        store = RunStore(data_root, run_key_for(data_interval_end))
        summary = store.read_json("summary.json") if store.exists("summary.json") else None
        if summary and summary.get("metric_leaderboard"):
            board = summary["metric_leaderboard"]
        elif store.exists(LEADERBOARD):
            board = json_views.frame_records(store.read_frame(LEADERBOARD))
        else:
            board = None
    except Exception as exc:  # noqa: BLE001 - the job's state stands without its results
        log.warning("could not read the results of the run of %s: %s", data_interval_end, exc)
        return None, None
    if summary:
        summary = {k: summary.get(k) for k in ("run_key", "champion", "published", "publish_reason",
                                               "champion_versions", "registrations", "mlflow_parent_run")}
    return board, summary


def _quote(job_id: str) -> str:
    from urllib.parse import quote

    return quote(job_id, safe="")
