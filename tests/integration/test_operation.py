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
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from cryptoflow import landing
from tests.integration.running_stack import (
    airflow_api,
    cli,
    dag_runs,
    feed_and_stack,
    no_active_runs,
    wait,
    writer_dsn,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYMBOLS = ("BTCUSDT", "ETHUSDT")
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_data):
    state = tmp_path_factory.mktemp("operation-state")
    with feed_and_stack(state, SYMBOLS) as env:
        yield env, state


def _minutes_missing(dsn, start, end) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(
            conn.execute(
                "SELECT s, count(*) FILTER (WHERE c.open_time IS NULL) FROM unnest(%s::text[]) s"
                " CROSS JOIN generate_series(%s::timestamptz, %s::timestamptz - interval '1 minute', interval '1 minute') t"
                " LEFT JOIN market.candles c ON c.symbol = s AND c.interval = '1m' AND c.open_time = t GROUP BY s",
                (list(SYMBOLS), start, end),
            ).fetchall()
        )


def test_six_hours_through_the_scheduler(stack):
    env, state = stack
    api = airflow_api(env, state)
    api.wait_for_dags({"binance_ingest", "spark_etl", "forecast_hourly"})
    dsn = writer_dsn(env, state)

    now = datetime.now(timezone.utc)
    # The six hours end at least 20 minutes ago: closed on REST, and before the window the scheduler
    # runs by itself when the stack starts (catchup off: the latest closed window). Ending at the last
    # full hour, a test started 3-10 minutes past it found that window run by the scheduler, not the backfill.
    end = (now - timedelta(minutes=20)).replace(minute=0, second=0, microsecond=0)
    start = end - 6 * HOUR
    seed_start = start - 36 * HOUR
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S+00:00")  # noqa: E731

    # 1. History: 36 hours from REST, loaded by a manual spark_etl run.
    seeded = json.loads(cli(["backfill", "--start", iso(seed_start), "--end", iso(start)], env))
    assert seeded["counts"]["loaded"] == 36 * 60 * len(SYMBOLS)
    api.trigger("spark_etl", {"uris": seeded["snapshots"]})

    # 2. The six hours through binance_ingest's backfill: 36 windows sealed over REST.
    cli(
        [
            "airflow",
            "backfill",
            "create",
            "--dag-id",
            "binance_ingest",
            "--from-date",
            iso(start),
            "--to-date",
            iso(end - timedelta(minutes=10)),
            "--max-active-runs",
            "4",
        ],
        env,
        timeout=300,
    )
    wait(
        "every window loaded",
        lambda: not any(_minutes_missing(dsn, seed_start, end).values()),
        1800,
        poll=15,
    )
    wait("ingest and ETL idle", lambda: no_active_runs(api, ["binance_ingest", "spark_etl"]), 900)

    # 3. The same six hours through forecast_hourly's backfill, as the UI's Backfill button asks for
    #    it (the request it sends: POST /api/v2/backfills): runs [H-1h, H) predict hour H.
    created = api._request(
        "POST",
        "/api/v2/backfills",
        {
            "dag_id": "forecast_hourly",
            "from_date": iso(start),
            "to_date": iso(end - HOUR),
            "reprocess_behavior": "none",
            "max_active_runs": 1,
            "run_backwards": False,
            "dag_run_conf": {},
        },
    )
    assert created["dag_id"] == "forecast_hourly" and created["completed_at"] is None
    hours = [start + HOUR * (i + 1) for i in range(6)]

    def forecasts():
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT symbol, target_open_time FROM forecast.predictions WHERE kind = 'live'"
                " AND target_open_time = ANY(%s)",
                (hours,),
            ).fetchall()
        return {(s, t) for s, t in rows} >= {(s, h) for s in SYMBOLS for h in hours}

    wait("a forecast for every coin and hour", forecasts, 1800, poll=15)
    wait(
        "every run finished",
        lambda: no_active_runs(api, ["binance_ingest", "spark_etl", "forecast_hourly"]),
        900,
    )

    # Every window of the six hours sealed exactly once (one snapshot each, one backfill run each).
    windows = [start + timedelta(minutes=10 * i) for i in range(36)]
    snaps = landing.list_snapshots(
        f"file://{state}/landing", "1m", int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    )
    sealed = [
        datetime.fromtimestamp(landing.parse_snapshot_name(u)[0] / 1000, timezone.utc)
        for u in snaps
    ]
    assert sorted(w for w in sealed if start <= w < end) == windows
    backfilled = [r for r in dag_runs(api, "binance_ingest") if r["run_type"] == "backfill"]
    assert sorted(datetime.fromisoformat(r["data_interval_start"]) for r in backfilled) == windows
    # No minute missing, for any coin, from the first seeded minute to the end.
    assert _minutes_missing(dsn, seed_start, end) == {s: 0 for s in SYMBOLS}
    with psycopg.connect(dsn) as conn:
        served = conn.execute(
            "SELECT DISTINCT served_reason FROM forecast.predictions WHERE kind = 'live'"
            " AND target_open_time = ANY(%s)",
            (hours,),
        ).fetchall()
        complete_hours = conn.execute(
            "SELECT count(*) FROM market.candles WHERE interval = '1h' AND is_complete"
            " AND open_time >= %s AND open_time < %s",
            (seed_start, end),
        ).fetchone()[0]
    assert complete_hours == 42 * len(SYMBOLS)
    assert all(reason for (reason,) in served)  # every forecast says what served it
    # No failed run of any DAG, scheduled, manual, asset-triggered or backfilled.
    for dag_id in ("binance_ingest", "spark_etl", "forecast_hourly"):
        states = [(r["run_type"], r["state"]) for r in dag_runs(api, dag_id)]
        assert all(s == "success" for _, s in states), (dag_id, states)
