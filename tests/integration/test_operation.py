"""The whole chain through the real scheduler over six hours of replayed data, as a user backfills it.

The stack runs for real (`cryptoflow up`: PostgreSQL, the four Airflow services with the
LocalExecutor), with the replay server and the collector started first, as `make run` does. Then:
36 hours of history are seeded from REST and loaded by spark_etl; the six hours after them go
through `cryptoflow airflow backfill create --dag-id binance_ingest` (36 windows, each sealed over
REST, spark_etl following on the landing Asset); then the same six hours through forecast_hourly's
backfill, created as the UI's Backfill button creates it (POST /api/v2/backfills). Meanwhile the scheduler runs its own live windows and hours beside them, as it would.

Asserted: every window sealed exactly once, no minute missing for any coin, a forecast for every coin
and every hour, and no failed run of any DAG. Models: the history is too short to train on (the
promotion rule needs 200 windows), so persistence is served and labelled as such; this test is
about the operation, the model's skill is the forecast benchmark's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from cryptoflow import landing
from cryptoflow.local.postgres import free_port
from cryptoflow.settings import read_credentials
from tests.conftest import PROJECT_ROOT, SHARED_DATA

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "cryptoflow")
SYMBOLS = ("BTCUSDT", "ETHUSDT")
HOUR = timedelta(hours=1)


def _run(args, env, timeout=600):
    res = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"cryptoflow {' '.join(args)}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_data):
    state = tmp_path_factory.mktemp("operation-state")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CRYPTOFLOW"))}
    env.update({
        "CRYPTOFLOW_HOME": str(PROJECT_ROOT),
        "CRYPTOFLOW_STATE_DIR": str(state),
        "CRYPTOFLOW_SHARED_DATA": str(SHARED_DATA),
        "CRYPTOFLOW_PG_PORT": str(free_port()),
        "CRYPTOFLOW_AIRFLOW_PORT": str(free_port()),
        "CRYPTOFLOW_REPLAY_PORT": str(free_port()),
        "CRYPTOFLOW_BINANCE_MODE": "replay",
        "CRYPTOFLOW_SYMBOLS": ",".join(SYMBOLS),
    })
    from cryptoflow import settings as settings_mod
    from cryptoflow.local import demo

    try:
        # The feed first, as `cryptoflow up --demo` starts it (the scheduler's live windows need it).
        demo.start_feed(settings_mod.load(env), log=lambda *_: None)
        _run(["up", "--no-superset"], env, timeout=900)
        yield env, state
    finally:
        subprocess.run([CLI, "down"], env=env, capture_output=True, text=True, timeout=300)


def _api(env, state):
    from cryptoflow.local.airflow import AirflowApi

    return AirflowApi(f"http://127.0.0.1:{env['CRYPTOFLOW_AIRFLOW_PORT']}",
                      read_credentials(state / "credentials.env")["AIRFLOW_ADMIN_PASSWORD"])


def _runs(api, dag_id) -> list[dict]:
    return api._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=1000")["dag_runs"]


def _wait(what, predicate, timeout, poll=10):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(poll)


def _minutes_missing(dsn, start, end) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(
            "SELECT s, count(*) FILTER (WHERE c.open_time IS NULL) FROM unnest(%s::text[]) s"
            " CROSS JOIN generate_series(%s::timestamptz, %s::timestamptz - interval '1 minute', interval '1 minute') t"
            " LEFT JOIN market.candles c ON c.symbol = s AND c.interval = '1m' AND c.open_time = t GROUP BY s",
            (list(SYMBOLS), start, end)).fetchall())


def _no_active(api, dag_ids) -> bool:
    return not any(r["state"] in ("queued", "running") for d in dag_ids for r in _runs(api, d))


def test_six_hours_through_the_scheduler(stack):
    env, state = stack
    api = _api(env, state)
    api.wait_for_dags({"binance_ingest", "spark_etl", "forecast_hourly"})
    creds = read_credentials(state / "credentials.env")
    dsn = f"postgresql://cf_writer:{creds['CF_WRITER_PASSWORD']}@127.0.0.1:{env['CRYPTOFLOW_PG_PORT']}/cryptoflow"

    now = datetime.now(timezone.utc)
    # The six hours end at least 20 minutes ago: closed on REST, and before the window the scheduler
    # runs by itself when the stack starts (catchup off: the latest closed window). Ending at the last
    # full hour, a test started 3-10 minutes past it found that window run by the scheduler, not the backfill.
    end = (now - timedelta(minutes=20)).replace(minute=0, second=0, microsecond=0)
    start = end - 6 * HOUR
    seed_start = start - 36 * HOUR
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S+00:00")  # noqa: E731

    # 1. History: 36 hours from REST, loaded by a manual spark_etl run.
    seeded = json.loads(_run(["backfill", "--start", iso(seed_start), "--end", iso(start)], env))
    assert seeded["counts"]["loaded"] == 36 * 60 * len(SYMBOLS)
    api.trigger("spark_etl", {"uris": seeded["snapshots"]})

    # 2. The six hours through binance_ingest's backfill: 36 windows sealed over REST.
    _run(["airflow", "backfill", "create", "--dag-id", "binance_ingest", "--from-date", iso(start),
          "--to-date", iso(end - timedelta(minutes=10)), "--max-active-runs", "4"], env, timeout=300)
    _wait("every window loaded", lambda: not any(_minutes_missing(dsn, seed_start, end).values()), 1800, poll=15)
    _wait("ingest and ETL idle", lambda: _no_active(api, ["binance_ingest", "spark_etl"]), 900)

    # 3. The same six hours through forecast_hourly's backfill, as the UI's Backfill button asks for
    #    it (the request it sends: POST /api/v2/backfills): runs [H-1h, H) predict hour H.
    created = api._request("POST", "/api/v2/backfills", {
        "dag_id": "forecast_hourly", "from_date": iso(start), "to_date": iso(end - HOUR),
        "reprocess_behavior": "none", "max_active_runs": 1, "run_backwards": False, "dag_run_conf": {}})
    assert created["dag_id"] == "forecast_hourly" and created["completed_at"] is None
    hours = [start + HOUR * (i + 1) for i in range(6)]

    def forecasts():
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT symbol, target_open_time FROM forecast.predictions WHERE kind = 'live'"
                                " AND target_open_time = ANY(%s)", (hours,)).fetchall()
        return {(s, t) for s, t in rows} >= {(s, h) for s in SYMBOLS for h in hours}

    _wait("a forecast for every coin and hour", forecasts, 1800, poll=15)
    _wait("every run finished", lambda: _no_active(api, ["binance_ingest", "spark_etl", "forecast_hourly"]), 900)

    # Every window of the six hours sealed exactly once (one snapshot each, one backfill run each).
    windows = [start + timedelta(minutes=10 * i) for i in range(36)]
    snaps = landing.list_snapshots(f"file://{state}/landing", "1m", int(start.timestamp() * 1000),
                                   int(end.timestamp() * 1000))
    sealed = [datetime.fromtimestamp(landing.parse_snapshot_name(u)[0] / 1000, timezone.utc) for u in snaps]
    assert sorted(w for w in sealed if start <= w < end) == windows
    backfilled = [r for r in _runs(api, "binance_ingest") if r["run_type"] == "backfill"]
    assert sorted(datetime.fromisoformat(r["data_interval_start"]) for r in backfilled) == windows
    # No minute missing, for any coin, from the first seeded minute to the end.
    assert _minutes_missing(dsn, seed_start, end) == {s: 0 for s in SYMBOLS}
    with psycopg.connect(dsn) as conn:
        served = conn.execute("SELECT DISTINCT served_reason FROM forecast.predictions WHERE kind = 'live'"
                              " AND target_open_time = ANY(%s)", (hours,)).fetchall()
        complete_hours = conn.execute("SELECT count(*) FROM market.candles WHERE interval = '1h' AND is_complete"
                                      " AND open_time >= %s AND open_time < %s", (seed_start, end)).fetchone()[0]
    assert complete_hours == 42 * len(SYMBOLS)
    assert all(reason for (reason,) in served)  # every forecast says what served it
    # No failed run of any DAG, scheduled, manual, asset-triggered or backfilled.
    for dag_id in ("binance_ingest", "spark_etl", "forecast_hourly"):
        states = [(r["run_type"], r["state"]) for r in _runs(api, dag_id)]
        assert all(s == "success" for _, s in states), (dag_id, states)
