"""The scale-out stack of docker-compose.yaml, started as native processes (no Docker needed).

    python scripts/stack.py up      # or: make stack
    python scripts/stack.py status
    eval "$(python scripts/stack.py env)"; airflow dags list   # the CLI against the stack
    python scripts/stack.py down    # or: make stack-down

What runs, each a process of this machine, logs under ``<dir>/logs`` (default ``var/stack``):

- PostgreSQL (Debian's ``postgresql``): the Airflow metadata database ``airflow`` and
  MLflow's backend store ``mlflow`` (one server, two databases and roles, where
  docker-compose runs two servers);
- Redis (Debian's ``redis-server``): the Celery broker;
- an S3 endpoint (moto's standalone server, where docker-compose runs MinIO) with the
  buckets ``foresight`` (the data root ``s3://foresight/data``) and ``mlflow`` (artifacts);
- ``mlflow server`` on Postgres, artifacts proxied to ``s3://mlflow/artifacts``;
- Airflow with the CeleryExecutor: api-server, then (once it answers) scheduler,
  dag-processor, triggerer and ``--workers`` Celery workers (concurrency 1 each by default).

The settings and environment variable names are docker-compose.yaml's: secrets come from
``.env`` (see ``.env.example``) when it exists, else from ``<dir>/stack.env``, generated
with random values on the first ``up``. Ports: ``--airflow-port`` (8080), ``--mlflow-port``
(5000), ``--postgres-port`` (5433), ``--redis-port`` (6379), ``--s3-port`` (9000).
Postgres refuses to run as root: as root it runs as the ``postgres`` user.
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from foresight_lib.orchestration.ports import free_port  # noqa: E402
from foresight_lib.orchestration.rest import AirflowClient, admin_password  # noqa: E402

BIN = Path(sys.executable).parent
SECRET_NAMES = ("POSTGRES_USER", "POSTGRES_PASSWORD", "MLFLOW_DB_USER", "MLFLOW_DB_PASSWORD", "MINIO_ROOT_USER",
                "MINIO_ROOT_PASSWORD", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_ADMIN_USER")
FIXED_SECRETS = {"POSTGRES_USER": "airflow", "MLFLOW_DB_USER": "mlflow", "MINIO_ROOT_USER": "foresight",
                 "AIRFLOW_ADMIN_USER": "admin"}
DEFAULT_PORTS = {"airflow": 8080, "mlflow": 5000, "postgres": 5433, "redis": 6379, "s3": 9000}
BUCKETS = ("foresight", "mlflow")
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
"""The simple auth manager's passwords, in AIRFLOW_HOME: written by the stack, read by the api-server."""
# Settings of the local SQLite setup (make run / make ui) that must not reach a Postgres stack.
DROPPED_ENV = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC",
               "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__EXECUTOR", "MLFLOW_TRACKING_URI",
               "FORESIGHT_DATA_ROOT", "FORESIGHT_MLFLOW_UI_URL")


class StackError(RuntimeError):
    """A component did not start; the message names it and its log."""


# -- settings -----------------------------------------------------------------------------

def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner may read, from its first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as out:
        out.write(text)


def stack_secrets(state_dir: Path) -> dict[str, str]:
    """docker-compose's secrets: ``.env`` if there is one, else ``<dir>/stack.env`` (made once, random)."""
    dotenv = REPO_ROOT / ".env"
    if dotenv.exists():
        values = read_env_file(dotenv)
        missing = [name for name in SECRET_NAMES if not values.get(name)]
        if missing:
            raise StackError(f"{dotenv} lacks {', '.join(missing)} (see .env.example)")
        return {name: values[name] for name in SECRET_NAMES}
    generated = state_dir / "stack.env"
    if not generated.exists():
        values = {name: FIXED_SECRETS.get(name) or secrets.token_hex(24) for name in SECRET_NAMES}
        write_private(generated, "".join(f"{k}={v}\n" for k, v in values.items()))
    return read_env_file(generated)


def stack_env(state_dir: Path, ports: dict[str, int], base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every Airflow process, as docker-compose.yaml's ``x-airflow-common`` sets it."""
    s = stack_secrets(state_dir)
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in DROPPED_ENV}
    pg = f"{s['POSTGRES_USER']}:{s['POSTGRES_PASSWORD']}@127.0.0.1:{ports['postgres']}/airflow"
    s3 = f"http://127.0.0.1:{ports['s3']}"
    env.update({
        "AIRFLOW_HOME": str(state_dir / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{s['AIRFLOW_ADMIN_USER']}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(state_dir / "airflow" / PASSWORDS_FILE),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{pg}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": env.get("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "true"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{ports['airflow']}/execution/",
        "AIRFLOW__API__PORT": str(ports["airflow"]),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{ports['airflow']}",
        "AIRFLOW__API__SECRET_KEY": s["AIRFLOW_API_SECRET_KEY"],
        "AIRFLOW__API_AUTH__JWT_SECRET": s["AIRFLOW_JWT_SECRET"],
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "true",
        "FORESIGHT_HOME": str(REPO_ROOT),
        "FORESIGHT_CONFIG": env.get("FORESIGHT_CONFIG") or str(REPO_ROOT / "include" / "foresight.yaml"),
        "FORESIGHT_DATA_ROOT": "s3://foresight/data",
        "FORESIGHT_MLFLOW_UI_URL": f"http://localhost:{ports['mlflow']}",
        "MLFLOW_TRACKING_URI": f"http://localhost:{ports['mlflow']}",
        "MLFLOW_S3_ENDPOINT_URL": s3,
        "AWS_ENDPOINT_URL_S3": s3,
        "AWS_ACCESS_KEY_ID": s["MINIO_ROOT_USER"],
        "AWS_SECRET_ACCESS_KEY": s["MINIO_ROOT_PASSWORD"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    })
    return env


# -- processes ------------------------------------------------------------------------------

class Stack:
    def __init__(self, state_dir: Path, ports: dict[str, int] | None = None, workers: int = 2,
                 concurrency: int = 1):
        self.dir = state_dir.resolve()
        self.logs = self.dir / "logs"
        self.state_file = self.dir / "state.json"
        saved = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        self.ports = {**DEFAULT_PORTS, **saved.get("ports", {}), **(ports or {})}
        self.workers, self.concurrency = workers, concurrency
        self.pids: dict[str, int] = saved.get("pids", {})

    # bookkeeping
    def _save(self) -> None:
        self.state_file.write_text(json.dumps({"ports": self.ports, "pids": self.pids}, indent=1))

    def env(self) -> dict[str, str]:
        return stack_env(self.dir, self.ports)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              user: str | None = None) -> int:
        """Start ``argv`` in its own session, output to ``logs/<name>.log``; remembers its pid."""
        self.logs.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        proc = subprocess.Popen(argv, env=env or self.env(), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=REPO_ROOT, start_new_session=True)
        out.close()
        self.pids[name] = proc.pid
        self._save()
        return proc.pid

    def alive(self, name: str) -> bool:
        pid = self.pids.get(name)
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie child of this process counts as gone.
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            return done == 0
        except ChildProcessError:
            return True

    def wait_for(self, name: str, check, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if name in self.pids and not self.alive(name):
                raise StackError(f"{name} exited; its log: {self.logs / (name + '.log')}\n{self.tail(name)}")
            try:
                if check():
                    return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"; the last one is reported
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(1)
        raise StackError(f"{name} not ready after {timeout:.0f} s ({last}); its log: {self.logs / (name + '.log')}")

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # components
    def start_postgres(self) -> None:
        s = stack_secrets(self.dir)
        data = self.dir / "postgres"
        user = "postgres" if os.geteuid() == 0 else None
        bindir = postgres_bindir()
        if user and subprocess.run(["runuser", "-u", user, "--", "test", "-x", str(self.dir)]).returncode != 0:
            raise StackError(f"PostgreSQL runs as the {user} user here, who cannot reach {self.dir}: "
                             "choose a --dir that every user may traverse (e.g. chmod 755 its parents)")
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            pwfile = self.dir / "postgres.pw"
            write_private(pwfile, s["POSTGRES_PASSWORD"] + "\n")
            if user:
                uid = pwd.getpwnam(user)
                for path in (data, pwfile):
                    os.chown(path, uid.pw_uid, uid.pw_gid)
            init = [str(bindir / "initdb"), "-D", str(data), "-U", s["POSTGRES_USER"], f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--no-instructions"]
            run(["runuser", "-u", user, "--", *init] if user else init, "initdb", self.logs)
            pwfile.unlink()
        self.spawn("postgres", [str(bindir / "postgres"), "-D", str(data), "-p", str(self.ports["postgres"]),
                                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}"],
                   user=user)
        self.wait_for("postgres", lambda: port_open(self.ports["postgres"]) and self._psql("SELECT 1") == "1")
        for database, owner, password in (("airflow", s["POSTGRES_USER"], None),
                                          ("mlflow", s["MLFLOW_DB_USER"], s["MLFLOW_DB_PASSWORD"])):
            if password and not self._psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{owner}'"):
                self._psql(f"CREATE ROLE {owner} LOGIN PASSWORD '{password}'")
            if not self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}'"):
                self._psql(f"CREATE DATABASE {database} OWNER {owner}")

    def _psql(self, sql: str) -> str:
        """One statement, sent on psql's input (a role's password is not on a command line ``ps`` shows)."""
        s = stack_secrets(self.dir)
        proc = subprocess.run(
            [str(postgres_bindir() / "psql"), "-h", "127.0.0.1", "-p", str(self.ports["postgres"]), "-U",
             s["POSTGRES_USER"], "-d", "postgres", "-tA", "-v", "ON_ERROR_STOP=1"], input=sql,
            env={**os.environ, "PGPASSWORD": s["POSTGRES_PASSWORD"]}, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise StackError(f"psql: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def start_redis(self) -> None:
        """The broker, with an append-only file: a restart keeps the queued tasks."""
        (self.dir / "redis").mkdir(parents=True, exist_ok=True)
        self.spawn("redis", [shutil.which("redis-server") or "redis-server", "--port", str(self.ports["redis"]),
                             "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--dir",
                             str(self.dir / "redis")])
        self.wait_for("redis", lambda: redis_ping(self.ports["redis"]))

    def start_s3(self) -> None:
        self.spawn("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.ports["s3"])])
        self.wait_for("s3", lambda: http_ok(f"http://127.0.0.1:{self.ports['s3']}/moto-api/"))
        import boto3

        env = self.env()
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                              aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for bucket in BUCKETS:
            if bucket not in existing:
                client.create_bucket(Bucket=bucket)

    def start_mlflow(self) -> None:
        s = stack_secrets(self.dir)
        port = self.ports["mlflow"]
        store = (f"postgresql+psycopg2://{s['MLFLOW_DB_USER']}:{s['MLFLOW_DB_PASSWORD']}@127.0.0.1:"
                 f"{self.ports['postgres']}/mlflow")
        # The store's URI holds the database password: in the environment, not on a command line ps shows.
        self.spawn("mlflow", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                              "--workers", "1", "--artifacts-destination", "s3://mlflow/artifacts",
                              "--serve-artifacts",
                              "--allowed-hosts", f"localhost,localhost:{port},127.0.0.1,127.0.0.1:{port}"],
                   {**self.env(), "MLFLOW_BACKEND_STORE_URI": store})
        self.wait_for("mlflow", lambda: http_ok(f"http://127.0.0.1:{port}/health"), timeout=180)

    def start_airflow(self) -> None:
        env = self.env()
        home = Path(env["AIRFLOW_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)
        # The admin's password, made here and kept in a file of this user's alone: the api-server then
        # has none to generate, and prints none to its log.
        passwords = self.passwords_file()
        admin = stack_secrets(self.dir)["AIRFLOW_ADMIN_USER"]
        if admin_password(passwords, admin) is None:
            write_private(passwords, json.dumps({admin: secrets.token_urlsafe(16)}) + "\n")
        run([str(BIN / "airflow"), "db", "migrate"], "airflow-db-migrate", self.logs, env=env, timeout=600)
        self.spawn("api-server", [str(BIN / "airflow"), "api-server", "--port", str(self.ports["airflow"])], env)
        self.wait_for("api-server",
                      lambda: http_ok(f"http://127.0.0.1:{self.ports['airflow']}/api/v2/monitor/health"),
                      timeout=240)
        for name in ("scheduler", "dag-processor", "triggerer"):
            self.spawn(name, [str(BIN / "airflow"), name], env)
        for number in range(1, self.workers + 1):
            self.start_worker(number)

    def start_worker(self, number: int) -> None:
        """Celery worker ``worker<number>``; its log server on its own port (several on one machine)."""
        env = {**self.env(), "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
        self.spawn(f"worker{number}", [str(BIN / "airflow"), "celery", "worker", "--concurrency",
                                       str(self.concurrency), "--celery-hostname", f"worker{number}@%h"], env)

    def up(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        running = [name for name in self.pids if self.alive(name)]
        if running:
            raise StackError(f"the stack in {self.dir} is already running ({', '.join(running)}); "
                             "stop it first: python scripts/stack.py down")
        self.pids = {}
        for name, port in self.ports.items():
            if port_open(port):
                raise StackError(f"port {port} ({name}) is in use; choose another with --{name}-port")
        try:
            self.start_postgres()
            self.start_redis()
            self.start_s3()
            self.start_mlflow()
            self.start_airflow()
        except BaseException:
            self.down()
            raise

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        pid = self.pids.get(name)
        if not pid:
            return
        with _suppress_lookup():
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while self.alive(name) and time.monotonic() < deadline:
            time.sleep(0.5)
        if self.alive(name):
            with _suppress_lookup():
                os.killpg(pid, signal.SIGKILL)
        self.pids.pop(name, None)
        self._save()

    def down(self) -> None:
        """Everything stopped: Airflow first (workers finish their task's state), then the services."""
        order = [n for n in self.pids if n.startswith("worker")] + ["triggerer", "dag-processor", "scheduler",
                                                                     "api-server", "mlflow", "s3", "redis",
                                                                     "postgres"]
        for name in order:
            # Postgres: SIGINT is its fast shutdown (SIGTERM waits for every client to leave).
            self.stop(name, signal.SIGINT if name == "postgres" else signal.SIGTERM)
        for name in list(self.pids):
            self.stop(name)

    def status(self) -> dict[str, bool]:
        return {name: self.alive(name) for name in self.pids}

    def passwords_file(self) -> Path:
        """The simple auth manager's passwords (``AIRFLOW_HOME``'s default file)."""
        return self.dir / "airflow" / PASSWORDS_FILE

    def airflow(self, timeout: float = 300) -> AirflowClient:
        """The REST API as the admin user, once the nightly DAG is served (tests and benchmarks drive runs)."""
        client = AirflowClient(f"http://localhost:{self.ports['airflow']}")
        user = stack_secrets(self.dir)["AIRFLOW_ADMIN_USER"]
        try:
            client.wait_ready(timeout, passwords=self.passwords_file(), user=user)
        except TimeoutError as exc:
            raise StackError(f"the stack's Airflow is not ready: {exc}\n{self.tail('api-server')}") from exc
        return client


class _suppress_lookup:
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return kind in (ProcessLookupError, PermissionError)


def postgres_bindir() -> Path:
    """Debian keeps the server binaries under /usr/lib/postgresql/<version>/bin (not on PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).resolve().parent
    raise StackError("PostgreSQL is not installed: apt-get install postgresql (or run .ci/install-packages.sh)")


def run(argv: list[str], name: str, logs: Path, env: dict | None = None, timeout: float = 300) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
                          stdin=subprocess.DEVNULL)
    (logs / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise StackError(f"{name} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return 200 <= resp.status < 300


def redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / "var" / "stack", help="state and logs")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    parser.add_argument("--concurrency", type=int, default=1, help="task slots per worker (default 1)")
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=None, help=f"default {port}")
    args = parser.parse_args(argv)
    ports = {name: getattr(args, f"{name}_port") for name in DEFAULT_PORTS if getattr(args, f"{name}_port")}
    stack = Stack(args.dir, ports, args.workers, args.concurrency)
    try:
        if args.command == "up":
            stack.up()
            admin = stack_secrets(stack.dir)["AIRFLOW_ADMIN_USER"]
            print(f"Airflow  http://localhost:{stack.ports['airflow']}  user {admin!r}, password in "
                  f"{stack.passwords_file()}")
            print(f"MLflow   http://localhost:{stack.ports['mlflow']}")
            print(f"S3       http://127.0.0.1:{stack.ports['s3']}  data root s3://foresight/data")
            print(f"logs     {stack.logs}    stop: make stack-down")
        elif args.command == "down":
            stack.down()
        elif args.command == "status":
            for name, alive in stack.status().items():
                print(f"{name:14} {'running' if alive else 'stopped'}  pid {stack.pids[name]}")
        else:
            env = stack.env()
            keys = sorted(k for k in env if k.startswith(("AIRFLOW", "FORESIGHT_", "MLFLOW_", "AWS_")))
            print("\n".join(f"export {k}={shlex.quote(env[k])}" for k in keys))
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
