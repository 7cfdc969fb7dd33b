"""The lock of a date: one run at a time, taken over only from a dead or stale holder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from foresight_lib.errors import RunLocked
from foresight_lib.runs.lock import RunLock
from foresight_lib.runs.storage import RunStore

KEY = "2024-03-15T020000Z"


def _lock(tmp_path, timeout: str = "1h") -> RunLock:
    store = RunStore(str(tmp_path), KEY, attempt="a1")
    return RunLock(store, store.folder, store.safe_id, pd.Timedelta(timeout))


def test_a_second_run_of_the_date_fails_naming_the_first(tmp_path):
    lock = _lock(tmp_path)
    lock.acquire("scheduled__2024-03-15", "a1")
    with pytest.raises(RunLocked, match=r"of 2024-03-15T020000Z is in progress: run 'scheduled__2024-03-15'"):
        lock.acquire("manual__2024-03-15", "b2")
    assert lock.owner().attempt == "a1"
    assert lock.path.endswith("locks/runs/2024-03-15T020000Z.json")


def test_the_same_airflow_run_takes_its_lock_over_on_a_retry(tmp_path):
    lock = _lock(tmp_path)
    lock.acquire("scheduled__2024-03-15", "a1")
    lock.acquire("scheduled__2024-03-15", "a2")  # extract retried: a new attempt of the same run
    assert lock.owner().attempt == "a2"
    with pytest.raises(RunLocked, match="overtaken"):
        lock.check("a1")
    lock.check("a2")


def test_an_in_process_run_is_not_taken_over_while_its_process_lives(tmp_path):
    lock = _lock(tmp_path)
    lock.acquire("local__x", "a1", owner_pid=os.getpid())
    with pytest.raises(RunLocked, match="pid"):
        lock.acquire("local__x", "a2", owner_pid=12345)


def test_a_dead_process_or_an_old_lock_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    lock = _lock(tmp_path)
    lock.acquire("local__x", "a1", owner_pid=int(dead.stdout))
    lock.acquire("local__y", "a2")
    assert lock.owner().run_id == "local__y"

    old = json.loads(open(lock.path).read())
    old["acquired_at"] = (pd.Timestamp.now(tz="UTC") - pd.Timedelta("2h")).isoformat()
    open(lock.path, "w").write(json.dumps(old))
    lock.acquire("manual__z", "a3")
    assert lock.owner().attempt == "a3"


def test_release_only_by_the_holder(tmp_path):
    lock = _lock(tmp_path)
    lock.acquire("r1", "a1")
    assert not lock.release("a2")
    assert lock.owner() is not None
    assert lock.release("a1")
    assert lock.owner() is None
    with pytest.raises(RunLocked, match="is gone"):
        lock.check("a1")


def test_an_unreadable_lock_left_by_a_failed_write_is_removed_after_a_grace_period(tmp_path):
    lock = _lock(tmp_path)
    path = Path(lock.path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # what a write that failed on a full disk leaves
    old = time.time() - 60
    os.utime(path, (old, old))
    lock.acquire("r2", "a2")
    assert lock.owner().attempt == "a2"
