"""Every DAG through Airflow's CeleryExecutor, the executor of docker-compose, run for real here.

`CRYPTOFLOW_AIRFLOW_EXECUTOR=celery` makes the local stack what the compose file deploys: the
scheduler queues task workloads on a Redis broker (Debian's redis-server, private: loopback, own
port, generated password) and a separate `airflow celery worker` process runs them, results in the
metadata database. With the replay feed running, as `make run` starts it, the test seeds 36 hours
from REST and then lets every DAG run: spark_etl (manual, on the seed), the scheduler's own
binance_ingest windows (spark_etl following on the landing Asset), forecast_hourly's hour,
forecast_backtest over two hours and warehouse_health.

Asserted: a run of every DAG succeeded, none failed, a live forecast for every coin for the
current hour, and every task instance of those runs (each mapped index, each sensor poke) was
executed by the Celery worker, as its log records workload by workload. The broker refuses a
client without the password.
"""

from __future__ import annotations

import json
import re
import socket
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from cryptoflow_stack.postgres import free_port
from cryptoflow.settings import read_credentials
from tests.integration.running_stack import (
    airflow_api,
    cli,
    dag_runs,
    feed_and_stack,
    task_instances,
    wait,
    writer_dsn,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYMBOLS = ("BTCUSDT", "ETHUSDT")
DAGS = ("binance_ingest", "spark_etl", "forecast_hourly", "forecast_backtest", "warehouse_health")
HOUR = timedelta(hours=1)
# The worker's line for each workload it ran to an end (supervisor.py, Airflow 3.3).
FINISHED = re.compile(r"Workload finished .*final_state=(\w+) .*workload_id=([0-9a-f-]{36})")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_data):
    state = tmp_path_factory.mktemp("celery-state")
    with feed_and_stack(
        state, SYMBOLS, CRYPTOFLOW_AIRFLOW_EXECUTOR="celery", CRYPTOFLOW_REDIS_PORT=str(free_port())
    ) as env:
        yield env, state


def _redis_reply(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(command)
        return sock.recv(256)


def test_every_dag_runs_on_the_celery_worker(stack):
    env, state = stack
    api = airflow_api(env, state)
    api.wait_for_dags(set(DAGS))
    dsn = writer_dsn(env, state)
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S+00:00")  # noqa: E731

    # The broker is the stack's own: it answers only with the generated password.
    port = int(env["CRYPTOFLOW_REDIS_PORT"])
    assert _redis_reply(port, b"PING\r\n").startswith(b"-NOAUTH")
    password = read_credentials(state / "credentials.env")["REDIS_PASSWORD"]
    assert _redis_reply(port, f"AUTH {password}\r\n".encode()) == b"+OK\r\n"

    # 36 hours of history up to the current hour, loaded by a manual spark_etl run; the scheduler's
    # own forecast_hourly run for this hour waits for it, its binance_ingest windows heal the rest.
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    seeded = json.loads(
        cli(["backfill", "--start", iso(hour - 36 * HOUR), "--end", iso(hour)], env)
    )
    assert seeded["counts"]["loaded"] == 36 * 60 * len(SYMBOLS)
    api.trigger("spark_etl", {"uris": seeded["snapshots"]})
    api.trigger("forecast_backtest", {"start": iso(hour - 2 * HOUR), "end": iso(hour)})
    api.trigger("warehouse_health")

    def live_forecasts():
        with psycopg.connect(dsn) as conn:
            return {
                s
                for (s,) in conn.execute(
                    "SELECT DISTINCT symbol FROM forecast.predictions WHERE kind = 'live'"
                    " AND target_open_time >= %s",
                    (hour,),
                )
            } >= set(SYMBOLS)

    wait("a live forecast for every coin", live_forecasts, 1500, poll=15)

    def finished_runs():
        runs = {
            d: [r for r in dag_runs(api, d) if r["state"] not in ("queued", "running")]
            for d in DAGS
        }
        failed = [
            (d, r["dag_run_id"], r["state"])
            for d, rs in runs.items()
            for r in rs
            if r["state"] != "success"
        ]
        assert not failed, failed
        return runs if all(runs.values()) else None

    runs = wait("a finished run of every DAG", finished_runs, 900, poll=15)

    # Every task instance of those runs ran on the Celery worker, to the state Airflow recorded.
    log = (state / "logs" / "airflow-celery-worker.log").read_text(errors="replace")
    ran = {ti_id: final for final, ti_id in FINISHED.findall(log)}
    tis = [
        ti for d, rs in runs.items() for r in rs for ti in task_instances(api, d, r["dag_run_id"])
    ]
    assert {ti["dag_id"] for ti in tis} == set(DAGS)
    executed = [ti for ti in tis if ti["state"] != "skipped"]
    not_on_worker = [
        (ti["dag_id"], ti["task_id"], ti["map_index"]) for ti in executed if ti["id"] not in ran
    ]
    assert not not_on_worker, not_on_worker
    assert all(ran[ti["id"]] == ti["state"] for ti in executed), [
        (ti["task_id"], ti["state"], ran[ti["id"]])
        for ti in executed
        if ran[ti["id"]] != ti["state"]
    ]
    mapped = {(ti["dag_id"], ti["task_id"]) for ti in executed if ti["map_index"] >= 0}
    assert ("forecast_hourly", "per_symbol.predict") in mapped and (
        "forecast_backtest",
        "backtest",
    ) in mapped
