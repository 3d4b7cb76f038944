"""A test's own running stack with the replay feed, as `make run` starts it, and the Airflow API calls
the whole-chain tests make of it (test_operation: LocalExecutor; test_celery_executor: CeleryExecutor)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptoflow.settings import read_credentials
from tests.conftest import SHARED_DATA, stack_env

CLI = str(Path(sys.executable).parent / "cryptoflow")


def cli(args, env, timeout=600) -> str:
    res = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, (
        f"cryptoflow {' '.join(args)}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    )
    return res.stdout


@contextmanager
def feed_and_stack(state: Path, symbols, **settings: str) -> Iterator[dict[str, str]]:
    """Replay server and collector first (the scheduler's live windows need them), as `cryptoflow up
    --demo` starts them, then PostgreSQL and Airflow (no Superset); everything stopped at the end."""
    from cryptoflow import settings as settings_mod
    from cryptoflow_stack import demo

    env = stack_env(
        state,
        ports=("PG", "AIRFLOW", "REPLAY"),
        CRYPTOFLOW_SHARED_DATA=str(SHARED_DATA),
        CRYPTOFLOW_BINANCE_MODE="replay",
        CRYPTOFLOW_SYMBOLS=",".join(symbols),
        **settings,
    )
    try:
        demo.start_feed(settings_mod.load(env))
        cli(["up", "--no-superset"], env, timeout=900)
        yield env
    finally:
        subprocess.run([CLI, "down"], env=env, capture_output=True, text=True, timeout=300)


def airflow_api(env, state: Path):
    from cryptoflow_stack.airflow import AirflowApi

    return AirflowApi(
        f"http://127.0.0.1:{env['CRYPTOFLOW_AIRFLOW_PORT']}",
        read_credentials(state / "credentials.env")["AIRFLOW_ADMIN_PASSWORD"],
    )


def writer_dsn(env, state: Path) -> str:
    creds = read_credentials(state / "credentials.env")
    return f"postgresql://cf_writer:{creds['CF_WRITER_PASSWORD']}@127.0.0.1:{env['CRYPTOFLOW_PG_PORT']}/cryptoflow"


def dag_runs(api, dag_id) -> list[dict]:
    return api._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=1000")["dag_runs"]


def task_instances(api, dag_id, run_id) -> list[dict]:
    from urllib.parse import quote

    return api._request(
        "GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances?limit=1000"
    )["task_instances"]


def no_active_runs(api, dag_ids) -> bool:
    return not any(r["state"] in ("queued", "running") for d in dag_ids for r in dag_runs(api, d))


def wait(what, predicate, timeout, poll=10):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(poll)
