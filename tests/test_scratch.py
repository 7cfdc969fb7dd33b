"""Scratch folders: a task killed with SIGKILL leaves its folder, the next one removes it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from foresight_lib.scratch import SCRATCH_PREFIX, host_key, remove_orphans, scratch_dir

_KILLED_TASK = """
import os, signal, sys
from foresight_lib.scratch import scratch_dir
with scratch_dir("walks") as tmp:
    (tmp / "0.pkl").write_bytes(b"x" * 1000)
    print(tmp, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_scratch_dir_is_named_after_its_process_and_removed_on_exit(temp_root):
    with scratch_dir("champions") as tmp:
        assert tmp.parent == temp_root
        assert tmp.name.startswith(f"{SCRATCH_PREFIX}champions-{host_key()}-{os.getpid()}-")
        (tmp / "piece.pkl").write_bytes(b"1")
    assert not tmp.exists()
    with pytest.raises(ValueError, match="lower-case"):
        scratch_dir("bad kind").__enter__()


def test_a_killed_task_leaves_its_folder_and_the_next_scratch_dir_removes_it(temp_root):
    env = {**os.environ, "TMPDIR": str(temp_root), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.run([sys.executable, "-c", _KILLED_TASK], env=env, capture_output=True, text=True,
                           timeout=60)
    assert child.returncode == -signal.SIGKILL
    orphan = Path(child.stdout.strip())
    assert orphan.parent == temp_root and (orphan / "0.pkl").exists()
    live = temp_root / f"{SCRATCH_PREFIX}walks-{host_key()}-{os.getpid()}-keep"
    live.mkdir()
    other = temp_root / "foresight-scale-12345"  # not a scratch folder
    other.mkdir()
    with scratch_dir("walks") as tmp:
        assert not orphan.exists()
        assert live.exists() and other.exists() and tmp.exists()


def test_remove_orphans_keeps_folders_of_live_processes(tmp_path):
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    dead = tmp_path / f"{SCRATCH_PREFIX}mlflow-{host_key()}-{dead_pid.pid}-abc"
    alive = tmp_path / f"{SCRATCH_PREFIX}mlflow-{host_key()}-{os.getpid()}-abc"
    another_host = next(key for key in ("00000000", "11111111") if key != host_key())
    other_host = tmp_path / f"{SCRATCH_PREFIX}mlflow-{another_host}-{dead_pid.pid}-abc"
    for folder in (dead, alive, other_host):
        (folder / "sub").mkdir(parents=True)
    assert remove_orphans(tmp_path) == [dead]
    assert alive.exists() and other_host.exists() and not dead.exists()
    assert remove_orphans(tmp_path / "missing") == []
