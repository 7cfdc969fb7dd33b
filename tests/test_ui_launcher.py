"""``scripts/ui.sh`` (``make ui``): what it binds to and what it leaves readable.

The launcher runs as ``make ui`` runs it, with stand-ins for ``airflow`` and ``mlflow`` on
the PATH that record their arguments; the stand-in api-server prints a generated password
the way Airflow's simple auth manager does on first start, writes the passwords file and
answers the health check. Checked: both UIs listen on the one bind address (127.0.0.1 by
default), the password reaches neither the console nor a log, and the passwords file, the
logs and their folder are the user's alone.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from airflow_support import REPO_ROOT, VENV_BIN

from foresight_lib.orchestration.ports import free_port

SECRET = "Gen3rated-Pw-7781"

FAKE_AIRFLOW = f"""#!{sys.executable}
import json, os, sys, time
home = os.environ["AIRFLOW_HOME"]
with open(os.path.join(os.environ["FAKE_RECORD"], "airflow-" + sys.argv[1]), "w") as out:
    json.dump(sys.argv[1:], out)
if sys.argv[1] != "api-server":
    print("started", flush=True)
    time.sleep(600)
    sys.exit(0)
path = os.path.join(home, "simple_auth_manager_passwords.json.generated")
with open(path, "w") as out:
    out.write(json.dumps({{"admin": {SECRET!r}}}))
print("Simple auth manager | Password for user 'admin': {SECRET}", flush=True)
from http.server import BaseHTTPRequestHandler, HTTPServer

class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{{}}")

    def log_message(self, *args):
        pass

args = sys.argv[1:]
HTTPServer((args[args.index("--host") + 1], int(args[args.index("--port") + 1])), Health).serve_forever()
"""

FAKE_MLFLOW = f"""#!{sys.executable}
import json, os, sys, time
with open(os.path.join(os.environ["FAKE_RECORD"], "mlflow"), "w") as out:
    json.dump(sys.argv[1:], out)
time.sleep(600)
"""


def launch(tmp_path: Path, **env: str) -> dict:
    """Run ``scripts/ui.sh`` until the scheduler has started, then stop it as Ctrl-C does."""
    bin_dir, record, home = tmp_path / "bin", tmp_path / "record", tmp_path / "airflow"
    for folder in (bin_dir, record, home / "ui-logs"):
        folder.mkdir(parents=True, exist_ok=True)
    old_log = home / "ui-logs" / "api-server.log"
    old_log.write_text("from an earlier start\n")
    old_log.chmod(0o644)
    for name, text in {"airflow": FAKE_AIRFLOW, "mlflow": FAKE_MLFLOW}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "FORESIGHT_UI"))}
    environ.update(PATH=f"{bin_dir}{os.pathsep}{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                   AIRFLOW_HOME=str(home), AIRFLOW__API__PORT=str(port), MLFLOW_PORT=str(free_port()),
                   FAKE_RECORD=str(record), FORESIGHT_UI_STOP_GRACE_S="5", PYTHONPATH=str(REPO_ROOT), **env)
    proc = subprocess.Popen(["bash", str(REPO_ROOT / "scripts" / "ui.sh")], env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO_ROOT)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not (record / "airflow-triggerer").exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.3)
        time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        console = proc.communicate(timeout=60)[0].decode()
    return {"console": console, "home": home, "record": record,
            "args": {p.name: json.loads(p.read_text()) for p in record.iterdir()}}


def test_ui_binds_both_uis_to_localhost_and_keeps_the_generated_password_out_of_every_log(tmp_path):
    ran = launch(tmp_path)
    assert "starting the scheduler" in ran["console"], ran["console"]
    api, mlflow = ran["args"]["airflow-api-server"], ran["args"]["mlflow"]
    assert api[api.index("--host") + 1] == "127.0.0.1" and mlflow[mlflow.index("--host") + 1] == "127.0.0.1"
    assert "--allowed-hosts" not in mlflow
    assert SECRET not in ran["console"] and "Password for user 'admin': (kept in" in ran["console"]
    home = ran["home"]
    logs = home / "ui-logs"
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    for log in logs.iterdir():
        assert SECRET not in log.read_text(), log
        assert stat.S_IMODE(log.stat().st_mode) == 0o600, log
    passwords = home / "simple_auth_manager_passwords.json.generated"
    assert json.loads(passwords.read_text()) == {"admin": SECRET}
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600


@pytest.mark.parametrize("host", ["0.0.0.0"])
def test_ui_host_binds_both_uis_to_every_interface_and_lets_mlflow_answer_the_links_name(tmp_path, host):
    ran = launch(tmp_path, FORESIGHT_UI_HOST=host, FORESIGHT_UI_URL_HOST="forecasts.lan")
    api, mlflow = ran["args"]["airflow-api-server"], ran["args"]["mlflow"]
    assert api[api.index("--host") + 1] == host and mlflow[mlflow.index("--host") + 1] == host
    allowed = mlflow[mlflow.index("--allowed-hosts") + 1].split(",")
    assert "forecasts.lan" in allowed and "localhost" in allowed


def test_make_ui_passes_one_bind_address_and_names_the_links_after_it():
    def probe(*args: str) -> dict[str, str]:
        out = subprocess.run(["make", "-s", "--no-print-directory", "--eval", "probe-env: ; @env", "probe-env",
                              *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True,
                             stdin=subprocess.DEVNULL, env={k: v for k, v in os.environ.items()
                                                            if not k.startswith(("FORESIGHT_", "AIRFLOW_"))})
        return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)

    default = probe()
    assert default["FORESIGHT_UI_HOST"] == default["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert default["FORESIGHT_MLFLOW_UI_URL"] == "http://localhost:5000"
    wide = probe("UI_HOST=0.0.0.0", "MLFLOW_PORT=5090")
    assert wide["FORESIGHT_UI_HOST"] == wide["AIRFLOW__API__HOST"] == "0.0.0.0"
    assert wide["FORESIGHT_MLFLOW_UI_URL"] == f"http://{wide['FORESIGHT_UI_URL_HOST']}:5090"
    assert wide["FORESIGHT_UI_URL_HOST"] not in ("localhost", "0.0.0.0")
