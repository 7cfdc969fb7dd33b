"""docker-compose.yaml: valid for Debian's ``docker-compose config`` (no engine needed), secrets from ``.env``."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
AIRFLOW_SERVICES = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker"]


def _compose(*args: str, env_file: Path | None) -> subprocess.CompletedProcess:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail("docker-compose is not installed; run .ci/install-packages.sh (apt-get install docker-compose)")
    cmd = [tool, "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE)]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(REPO_ROOT)}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, env=env,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def resolved() -> dict:
    proc = _compose("config", env_file=ENV_EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_config_is_valid_with_the_example_env(resolved):
    services = resolved["services"]
    expected = {"postgres", "redis", "airflow-init", "mlflow", "mlflow-db", "minio", "minio-init", "prometheus",
                *AIRFLOW_SERVICES}
    assert expected <= set(services)


def test_airflow_runs_celery_on_postgres_and_redis(resolved):
    services = resolved["services"]
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis")
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["FORESIGHT_DATA_ROOT"].startswith("s3://")
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    commands = {name: " ".join(services[name]["command"]) if isinstance(services[name]["command"], list)
                else services[name]["command"] for name in AIRFLOW_SERVICES}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-worker"] == "celery worker"


def test_mlflow_server_uses_postgres_and_minio(resolved):
    command = " ".join(resolved["services"]["mlflow"]["command"])
    assert "--backend-store-uri=postgresql+psycopg2://" in command
    assert "--artifacts-destination=s3://" in command
    assert resolved["services"]["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_image_is_built_from_the_airflow_base():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.11$", dockerfile, re.MULTILINE)
    assert "requirements.txt" in dockerfile


def test_secrets_come_from_env_file_only():
    text = COMPOSE.read_text()
    for secret in ("POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "MINIO_ROOT_PASSWORD", "AIRFLOW_JWT_SECRET"):
        assert f"${{{secret}" in text, f"{secret} is not read from the environment"
    assert "change-me" not in text, "no secret value in docker-compose.yaml"
    ignored = (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in ignored


def test_missing_secrets_are_reported(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = _compose("config", env_file=empty)
    assert proc.returncode != 0
    assert "set POSTGRES_USER in .env" in proc.stderr or "set POSTGRES_PASSWORD in .env" in proc.stderr
