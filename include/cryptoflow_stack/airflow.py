"""Airflow 3.3 of the local stack: its configuration (from cryptoflow settings), init, start and stop.

The four Airflow services run as separate processes (api-server, scheduler, dag-processor,
triggerer) with the LocalExecutor, metadata in the private PostgreSQL cluster (database
`airflow`), and the DAGs of this checkout. With CRYPTOFLOW_AIRFLOW_EXECUTOR=celery, the
CeleryExecutor of docker-compose instead: a fifth process, `airflow celery worker`, runs the tasks it
takes from the stack's Redis (cryptoflow_stack.redis), results in the metadata database.
Connections are given as AIRFLOW_CONN_* variables built from the same settings the rest of the
platform reads, so there is one place to configure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from cryptoflow_stack import process
from cryptoflow.settings import Settings

SERVICES = ("scheduler", "dag-processor", "triggerer", "api-server")
CELERY_WORKER = "celery-worker"
# The log server that scheduler, triggerer and the Celery worker start binds every interface; on one
# machine the api-server reads task logs from disk, so it is not started at all (nothing listens
# beyond loopback).
_COMMANDS = {
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
    CELERY_WORKER: ["celery", "worker", "--skip-serve-logs"],
}


def services(settings: Settings) -> tuple[str, ...]:
    """The Airflow processes of the settings' executor, in start order."""
    return (*SERVICES, CELERY_WORKER) if settings.airflow_executor == "celery" else SERVICES


def _argv(settings: Settings, name: str) -> list[str]:
    return [str(venv_bin(settings) / "airflow"), *_COMMANDS.get(name, [name])]


def venv_bin(settings: Settings) -> Path:
    """bin/ of the Airflow virtualenv: the one running this code."""
    return Path(sys.executable).parent


def connections_env(settings: Settings) -> dict[str, str]:
    """Airflow connections the DAGs use, derived from the settings."""
    env = {
        # A missing spark connection silently falls back to yarn: always define it.
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(
            {"conn_type": "spark", "host": settings.spark_master}
        ),
        "AIRFLOW_CONN_CRYPTOFLOW_WAREHOUSE": settings.warehouse_dsn,
    }
    models: dict = {
        "conn_type": "aws",
        "extra": {"region_name": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")},
    }
    if settings.s3_endpoint_url:
        models["extra"]["endpoint_url"] = settings.s3_endpoint_url
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        models["login"] = os.environ["AWS_ACCESS_KEY_ID"]
        models["password"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    env["AIRFLOW_CONN_CRYPTOFLOW_MODELS"] = json.dumps(models)
    return env


def airflow_env(
    settings: Settings,
    creds: dict[str, str],
    airflow_home: Path | None = None,
    metadata_dsn: str | None = None,
) -> dict[str, str]:
    """The full environment of an Airflow process of the local stack."""
    home = airflow_home or settings.state_dir / "airflow"
    if metadata_dsn is None:
        pw = quote(creds["AIRFLOW_DB_PASSWORD"], safe="")
        metadata_dsn = f"postgresql+psycopg2://airflow:{pw}@127.0.0.1:{settings.pg_port}/airflow"
    env = dict(os.environ)
    env.update(settings.as_env())
    env.update(connections_env(settings))
    env.update(_airflow_config(settings, creds, home, metadata_dsn, env.get("PATH", "")))
    if settings.airflow_executor == "celery":
        env.update(_celery_config(settings, creds, metadata_dsn))
    return env


def _airflow_config(
    settings: Settings, creds: dict[str, str], home: Path, metadata_dsn: str, path: str
) -> dict[str, str]:
    """Airflow's configuration (AIRFLOW__*) for the LocalExecutor, and the process's PATH and home."""
    base_url = f"http://{settings.bind_host}:{settings.airflow_port}"
    return {
        "AIRFLOW_HOME": str(home),
        "PATH": f"{venv_bin(settings)}:{path}",  # standalone/LocalExecutor re-exec `airflow`
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.home / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # LocalExecutor forks `parallelism` workers up front: 32 by default is too many for 2 cores.
        "AIRFLOW__CORE__PARALLELISM": os.environ.get("AIRFLOW__CORE__PARALLELISM", "4"),
        # The Celery worker's task slots, as many as the LocalExecutor's (celery executor only).
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": os.environ.get("AIRFLOW__CORE__PARALLELISM", "4"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": creds["AIRFLOW_FERNET_KEY"],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",  # user "admin" with role Admin
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_dsn,
        "AIRFLOW__API__HOST": settings.bind_host,
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": creds["AIRFLOW_SECRET_KEY"],
        "AIRFLOW__API_AUTH__JWT_SECRET": creds["AIRFLOW_JWT_SECRET"],
        # New DAG files show up within 30 s instead of the default 5 minutes.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "PYTHONUNBUFFERED": "1",
    }


def _celery_config(settings: Settings, creds: dict[str, str], metadata_dsn: str) -> dict[str, str]:
    """The CeleryExecutor's overrides: the stack's Redis as broker, results in the metadata DB."""
    from cryptoflow_stack import redis

    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": redis.broker_url(settings, creds["REDIS_PASSWORD"]),
        # Task states and results in the metadata database, as in docker-compose.
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+"
        + metadata_dsn.replace("postgresql+psycopg2://", "postgresql://", 1),
    }


def write_passwords_file(home: Path, password: str) -> Path:
    """Pre-seed SimpleAuthManager's password file so the generated password is the one in force."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "passwords.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"admin": password}, fh)
    return path


def run_cli(
    args: list[str], env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), *args],
        env=env,
        capture_output=True,
        text=True,
    )
    if check and res.returncode != 0:
        raise RuntimeError(
            f"airflow {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        )
    return res


def init(settings: Settings, creds: dict[str, str], env: dict[str, str]) -> None:
    """Migrate the metadata DB and seed the admin password; idempotent."""
    home = Path(env["AIRFLOW_HOME"])
    write_passwords_file(home, creds["AIRFLOW_ADMIN_PASSWORD"])
    run_cli(["db", "migrate"], env)


def start(settings: Settings, env: dict[str, str]) -> None:
    run_dir = settings.state_dir / "run"
    for name in services(settings):
        process.start(
            f"airflow-{name}",
            _argv(settings, name),
            env,
            run_dir,
            settings.logs_dir,
            cwd=settings.home,
        )
    process.wait_http(
        f"http://{settings.bind_host}:{settings.airflow_port}/api/v2/monitor/health",
        180,
        "Airflow api-server",
        settings.logs_dir / "airflow-api-server.log",
        pid_alive=lambda: process.read_pid(run_dir, "airflow-api-server") is not None,
    )


def stop(settings: Settings) -> None:
    for name in reversed((*SERVICES, CELERY_WORKER)):
        process.stop(f"airflow-{name}", settings.state_dir / "run")


# --- the REST API of the running api-server (used by the demo and the stack test) ------------------


class AirflowApi:
    """A small client of Airflow's /api/v2 with the generated admin credentials."""

    def __init__(self, base_url: str, password: str, username: str = "admin"):
        self.base_url = base_url.rstrip("/")
        self._auth = {"username": username, "password": password}
        self._token = None

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        import urllib.request

        if self._token is None and path != "/auth/token":
            self._token = self._request("POST", "/auth/token", self._auth)["access_token"]
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)

    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self._request("GET", "/api/v2/dags?limit=1000")["dags"]}

    def import_errors(self) -> list[dict]:
        return self._request("GET", "/api/v2/importErrors")["import_errors"]

    def wait_for_dags(self, dag_ids: set[str], timeout: float = 180) -> None:
        import time

        deadline = time.monotonic() + timeout
        while not dag_ids <= self.dag_ids():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"DAGs {sorted(dag_ids - self.dag_ids())} not parsed after {timeout} s; "
                    f"import errors: {self.import_errors()}"
                )
            time.sleep(3)

    def trigger(self, dag_id: str, conf: dict | None = None) -> dict:
        from datetime import datetime, timezone

        return self._request(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns",
            {"logical_date": datetime.now(timezone.utc).isoformat(), "conf": conf or {}},
        )
