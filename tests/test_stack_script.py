"""``scripts/stack.py`` started nowhere: its secrets stay in files of its user's alone and off command lines."""
from __future__ import annotations

import json
import stat
import subprocess

import pytest

from scripts import stack as stack_script


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def stack(tmp_path, monkeypatch):
    monkeypatch.setattr(stack_script, "REPO_ROOT", tmp_path / "repo")  # no .env: secrets are generated
    return stack_script.Stack(tmp_path / "state", {}, workers=1, concurrency=1)


def test_generated_secrets_are_private_from_the_first_byte(stack, tmp_path):
    secrets = stack_script.stack_secrets(stack.dir)
    assert _mode(stack.dir / "stack.env") == 0o600 and len(secrets["POSTGRES_PASSWORD"]) >= 32
    loose = tmp_path / "loose"
    loose.write_text("old")
    loose.chmod(0o644)
    stack_script.write_private(loose, "new")
    assert _mode(loose) == 0o600 and loose.read_text() == "new"


def test_no_password_on_a_command_line(stack, monkeypatch):
    secrets = stack_script.stack_secrets(stack.dir)
    argvs: list[list[str]] = []
    envs: list[dict] = []

    def fake_run(argv, **kwargs):
        argvs.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout="1\n", stderr="")

    def fake_spawn(name, argv, env=None, user=None):
        argvs.append(argv)
        envs.append(env or {})
        return 1

    monkeypatch.setattr(stack_script.subprocess, "run", fake_run)
    monkeypatch.setattr(stack_script, "postgres_bindir", lambda: stack.dir)
    monkeypatch.setattr(stack, "spawn", fake_spawn)
    monkeypatch.setattr(stack, "wait_for", lambda *a, **k: None)
    stack.ports.update(stack_script.DEFAULT_PORTS)
    stack._psql(f"CREATE ROLE mlflow LOGIN PASSWORD '{secrets['MLFLOW_DB_PASSWORD']}'")
    stack.start_mlflow()
    assert argvs and not [a for a in argvs if any(s in " ".join(a) for s in secrets.values() if len(s) > 10)]
    assert secrets["MLFLOW_DB_PASSWORD"] in envs[-1]["MLFLOW_BACKEND_STORE_URI"]


def test_the_admin_password_is_written_by_the_stack_not_printed_by_the_api_server(stack, monkeypatch):
    monkeypatch.setattr(stack_script, "run", lambda *a, **k: None)
    monkeypatch.setattr(stack, "spawn", lambda *a, **k: 1)
    monkeypatch.setattr(stack, "wait_for", lambda *a, **k: None)
    monkeypatch.setattr(stack, "start_worker", lambda number: None)
    stack.ports.update(stack_script.DEFAULT_PORTS)
    stack.start_airflow()
    passwords = stack.passwords_file()
    assert _mode(passwords) == 0o600 and _mode(passwords.parent) == 0o700
    assert json.loads(passwords.read_text())["admin"]
    assert stack.env()["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(passwords)
