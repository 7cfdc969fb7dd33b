"""Airflow for tests: a throw-away AIRFLOW_HOME on SQLite, and Airflow code run in subprocesses.

Airflow reads its settings once, when first imported, and configures logging and the
database for the whole process; the tests therefore run every Airflow call in a child
process with its own environment and leave the pytest process untouched. The SQLite
settings are those of ``make run``/``make ui`` (``foresight_dags.sqlite``), so the tests
exercise the embedded default as users get it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from foresight_dags.sqlite import AIRFLOW_ENV as SQLITE_AIRFLOW_ENV
from foresight_lib.orchestration.dags import NIGHTLY_DAG

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGS_FOLDER = REPO_ROOT / "dags"
VENV_BIN = Path(sys.executable).parent
RESULT_MARK = "@@RESULT@@"


def fast_config(root: Path) -> Path:
    """The shipped config with fast models, a short history and state under ``root``."""
    config = yaml.safe_load((REPO_ROOT / "include" / "foresight.yaml").read_text())
    config.update({
        "models": ["naive", "seasonal_naive", "ensemble"], "history_days": 3, "data_root": str(root / "data"),
        "mlflow": {**config.get("mlflow", {}), "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
                   "artifact_location": str(root / "artifacts")},
    })
    validation = config.setdefault("validation", {})
    validation["suite_dir"] = str(REPO_ROOT / validation.get("suite_dir", "include/gx"))
    path = root / "foresight.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for Airflow commands on a SQLite database under ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        **SQLITE_AIRFLOW_ENV,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    env.pop("FORESIGHT_DATA_ROOT", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def migrate(env: dict[str, str], timeout: int = 300) -> None:
    """``airflow db migrate`` for the database in ``env``; fails the test with the output on error."""
    proc = subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def run_python(code: str, env: dict[str, str], timeout: int = 900) -> dict:
    """Run ``code`` in a child Python; it reports by calling ``report(obj)`` once. Returns that object."""
    prelude = textwrap.dedent(f"""
        import json, sys
        def report(obj):
            print({RESULT_MARK!r} + json.dumps(obj, default=str), flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    raise AssertionError(
        f"child Python reported nothing (exit {proc.returncode}):\n--- stdout\n{proc.stdout[-6000:]}\n"
        f"--- stderr\n{proc.stderr[-6000:]}"
    )


DAG_TEST = """
    import os
    from datetime import datetime, timezone
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag({dag_id!r})
    logical_date = datetime.fromisoformat({logical_date!r}).replace(tzinfo=timezone.utc)
    dr = dag.test(logical_date=logical_date, run_conf={run_conf!r})
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag.dag_id,
                                                 TaskInstance.run_id == dr.run_id).all()
        states = {{f"{{ti.task_id}}[{{ti.map_index}}]" if ti.map_index >= 0 else ti.task_id: str(ti.state)
                  for ti in tis}}
    report({{"state": str(dr.state), "run_id": dr.run_id, "tasks": states}})
"""


def dag_test(env: dict[str, str], logical_date: str, run_conf: dict, timeout: int = 900,
             dag_id: str = NIGHTLY_DAG) -> dict:
    """``dag.test()`` of a DAG (the nightly by default) in a child process: the run's state and every task's state."""
    code = DAG_TEST.format(logical_date=logical_date, run_conf=json.loads(json.dumps(run_conf)), dag_id=dag_id)
    return run_python(code, env, timeout=timeout)
