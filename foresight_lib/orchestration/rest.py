"""Airflow's REST API (``/api/v2``) in plain HTTP: the one client of the operations API, scripts, benchmarks and tests.

A client talks to one api-server (its base URL) on behalf of one caller: a token given
(the operations API passes on its caller's) or one it takes from ``/auth/token``
(``login``). Lists are read page by page (the api-server answers at most 100 items a
call). Airflow's refusals are summarised (its ``detail``, short and redacted), never
passed on whole. Nothing here imports Airflow.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from foresight_lib.orchestration.dags import NIGHTLY_DAG
from foresight_lib.redaction import redact_text

PAGE_SIZE = 100
"""The most items the api-server returns a call (``[api] maximum_page_limit``)."""
FINISHED = ("success", "failed")
"""The states a DAG run ends in."""
TIMEOUT_S = 30.0
T = TypeVar("T")


class AirflowApiError(RuntimeError):
    """Airflow refused a call (``status`` is its HTTP status) or did not answer it (``status`` None)."""

    def __init__(self, status: int | None, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def admin_password(passwords: Path, user: str = "admin") -> str | None:
    """The password the simple auth manager generated for ``user`` (None until the api-server has written it)."""
    if not passwords.exists():
        return None
    try:
        return json.loads(passwords.read_text()).get(user)
    except ValueError:  # written but not complete yet
        return None


def wait_for(probe: Callable[[], T | None], what: str, timeout: float, every: float = 2.0,
             check: Callable[[], None] | None = None) -> T:
    """Call ``probe`` until it returns something other than None; returns that.

    ``check`` runs before each try and raises when waiting is pointless (a server exited).

    Raises:
        TimeoutError: after ``timeout`` seconds, naming ``what`` and the last error ``probe`` raised.
    """
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        if check is not None:
            check()
        try:
            found = probe()
        except (httpx.HTTPError, AirflowApiError, ValueError) as exc:
            found, last = None, f" ({type(exc).__name__}: {exc})"
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} after {timeout:.0f} s{last}")
        time.sleep(every)


class AirflowClient:
    """One caller's session with one api-server; DAG calls go to ``dag_id`` (the nightly by default)."""

    def __init__(self, base_url: str, token: str | None = None, *, dag_id: str = NIGHTLY_DAG,
                 timeout_s: float = TIMEOUT_S, transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.dag_id = dag_id
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport)
        self.token: str | None = None
        if token:
            self.use_token(token)

    def close(self) -> None:
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- HTTP -----------------------------------------------------------------------------
    def use_token(self, token: str) -> None:
        self.token = token
        self._client.headers["Authorization"] = f"Bearer {token}"

    def login(self, user: str | None = None, password: str | None = None) -> str:
        """Take a token from ``/auth/token`` (without a user: the simple auth manager's all-admins mode)."""
        if user is None:
            resp = self._client.get("/auth/token")
        else:
            resp = self._client.post("/auth/token", json={"username": user, "password": password})
        if resp.status_code not in (200, 201):
            raise AirflowApiError(resp.status_code, f"Airflow refused a token: {resp.status_code} {detail(resp)}")
        self.use_token(resp.json()["access_token"])
        return self.token

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """The api-server's raw answer to ``path`` (from the root: ``/api/v2/…``, ``/foresight/…``)."""
        return self._client.request(method, path, **kwargs)

    def call(self, method: str, path: str, what: str, **kwargs) -> dict:
        """The JSON answer to ``/api/v2{path}``.

        Raises:
            AirflowApiError: Airflow refused (its status and reason) or did not answer ``what``.
        """
        try:
            resp = self.request(method, f"/api/v2{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise AirflowApiError(None, f"Airflow's REST API at {redact_text(self.base_url)} did not answer {what} "
                                        f"({type(exc).__name__}); check [api] base_url "
                                        "(AIRFLOW__API__BASE_URL) and the api-server's port") from exc
        if resp.status_code >= 400:
            raise AirflowApiError(resp.status_code, f"Airflow refused {what}: {resp.status_code} {detail(resp)}")
        try:
            return resp.json() if resp.content else {}
        except ValueError as exc:
            raise AirflowApiError(None, f"Airflow's REST API at {redact_text(self.base_url)} answered {what} with "
                                        "something that is not JSON; check [api] base_url") from exc

    def pages(self, path: str, key: str, what: str, params: dict | None = None) -> list[dict]:
        """Every item of a list under ``key``, page by page."""
        out: list[dict] = []
        while True:
            body = self.call("GET", path, what, params={**(params or {}), "limit": PAGE_SIZE, "offset": len(out)})
            page = body.get(key) or []
            out += page
            if len(page) < PAGE_SIZE or len(out) >= int(body.get("total_entries", len(out))):
                return out

    # -- the DAG and its runs -------------------------------------------------------------
    def _dag(self, path: str = "") -> str:
        return f"/dags/{self.dag_id}{path}"

    def _run(self, run_id: str, path: str = "") -> str:
        return self._dag(f"/dagRuns/{quote(run_id, safe='')}{path}")

    def dag(self) -> dict:
        return self.call("GET", self._dag(), f"to read DAG {self.dag_id}")

    def unpause(self) -> None:
        self.call("PATCH", self._dag(), f"to unpause {self.dag_id}", json={"is_paused": False})

    def trigger(self, logical_date: str | None, conf: dict | None = None, note: str | None = None) -> dict:
        """A new run of the DAG (its ``dag_run_id`` names it)."""
        body: dict[str, Any] = {"logical_date": logical_date, "conf": conf or {}}
        if note:
            body["note"] = note
        return self.call("POST", self._dag("/dagRuns"), f"to start a run of {self.dag_id}", json=body)

    def run(self, run_id: str) -> dict:
        return self.call("GET", self._run(run_id), f"to read run {run_id!r}")

    def runs(self, **params) -> list[dict]:
        """Every run of the DAG (``params``: the API's filters, e.g. ``run_type``)."""
        return self.pages(self._dag("/dagRuns"), "dag_runs", f"to list the runs of {self.dag_id}", params)

    def task_instances(self, run_id: str) -> list[dict]:
        """Every task instance of a run, mapped ones included."""
        return self.pages(self._run(run_id, "/taskInstances"), "task_instances", f"to read the tasks of {run_id!r}")

    # -- waiting --------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 300, *, passwords: Path | None = None, user: str = "admin",
                   check: Callable[[], None] | None = None) -> None:
        """Wait for a token and for the DAG to be served (parsed and serialized).

        Args:
            passwords: the simple auth manager's generated passwords file: log in as ``user``
                once it is written; without it, the all-admins mode's token.
        """
        def ready() -> bool | None:
            if self.token is None:
                if passwords is None:
                    self.login()
                elif (password := admin_password(passwords, user)) is not None:
                    self.login(user, password)
            return True if self.token and self.dag() else None

        wait_for(ready, f"{self.dag_id} not served at {self.base_url}", timeout, check=check)

    def wait_run(self, run_id: str, timeout: float = 900, every: float = 5.0,
                 check: Callable[[], None] | None = None) -> dict:
        """The run once it has finished (success or failed)."""
        def finished() -> dict | None:
            run = self.run(run_id)
            return run if run.get("state") in FINISHED else None

        return wait_for(finished, f"run {run_id} not finished", timeout, every, check)


def detail(resp: httpx.Response) -> str:
    """Airflow's reason in short: its ``detail`` text (or its validation messages), redacted; nothing else."""
    try:
        body = resp.json()
    except ValueError:
        return "(an answer that is not Airflow's JSON)"
    reason = body.get("detail") if isinstance(body, dict) else None
    if isinstance(reason, list):
        reason = "; ".join(str(item.get("msg", "")) for item in reason if isinstance(item, dict))
    if not isinstance(reason, str) or not reason:
        return "(no reason given)"
    return redact_text(reason[:200])
