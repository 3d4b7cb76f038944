"""ETL faults against the real Spark job and a real PostgreSQL: no partial or duplicate rows, the rerun converges.

- snapshots arriving out of order, and the same snapshot delivered twice (in one manifest and
  again in a later run): the warehouse ends with every candle once, hourly rollups complete;
- PostgreSQL restarted (immediate stop: connections cut) while the job is loading: the run fails,
  readers see nothing of it, the rerun loads everything once;
- the spark-submit process SIGKILLed while it writes the lake aside (beside the warehouse commit):
  nothing is published, and the rerun leaves the warehouse and the lake holding every candle once.
(A job killed inside its load transaction is in test_spark_etl.py.)

Input: SYNTHETIC one-minute candles from cryptoflow_bench.etl (valid by construction).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from cryptoflow_bench.etl import MINUTE_MS, START_MS, minute_row, write_minutes
from cryptoflow.etl import job, plan

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOUR = 3_600_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _state(dsn: str) -> dict:
    """What readers can see: 1m rows (with duplicate check), complete hours, staging leftovers."""
    with psycopg.connect(dsn) as conn:
        minutes = conn.execute(
            "SELECT symbol, count(*), count(DISTINCT open_time) FROM market.candles"
            " WHERE interval = '1m' GROUP BY 1 ORDER BY 1"
        ).fetchall()
        hours = conn.execute(
            "SELECT symbol, count(*) FILTER (WHERE is_complete), count(*) FROM market.candles"
            " WHERE interval = '1h' GROUP BY 1 ORDER BY 1"
        ).fetchall()
        staging = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'"
        ).fetchone()[0]
        closes = conn.execute(
            "SELECT symbol, (extract(epoch FROM open_time) * 1000)::bigint, close::text"
            " FROM market.candles WHERE interval = '1m' ORDER BY 1, 2"
        ).fetchall()
    return {"minutes": minutes, "hours": hours, "staging": staging, "closes": closes}


def _expected_closes(symbols, start, end):
    from decimal import Decimal

    return [
        (s, t, Decimal(minute_row(s, t)[7]))
        for s in sorted(symbols)
        for t in range(start, end, MINUTE_MS)
    ]


def _closes(state):
    """Stored closes as numbers ("1.50" == "1.5": the value, not its spelling)."""
    from decimal import Decimal

    return [(s, t, Decimal(c)) for s, t, c in state["closes"]]


def test_out_of_order_and_twice_delivered_snapshots_converge(spark, warehouse, tmp_path):
    landing, lake = tmp_path / "landing", f"file://{tmp_path}/lake"
    a, b, c = (
        write_minutes(
            landing,
            SYMBOLS,
            START_MS + i * 20 * MINUTE_MS,
            START_MS + (i + 1) * 20 * MINUTE_MS,
            10 * MINUTE_MS,
        )
        for i in range(3)
    )
    # Run 1: the hour's last third first, then its first third; the middle is still missing.
    r1 = job.run(spark, c + a, "ooo-1", dsn=warehouse.writer_dsn, lake_uri=lake, symbols=SYMBOLS)
    s1 = _state(warehouse.reader_dsn)
    assert s1["minutes"] == [(s, 40, 40) for s in SYMBOLS]
    assert s1["hours"] == [(s, 0, 1) for s in SYMBOLS]  # an incomplete rollup, said so
    # Run 2: the middle arrives late, with the first third delivered again, twice in one manifest.
    r2 = job.run(
        spark, b + a + a, "ooo-2", dsn=warehouse.writer_dsn, lake_uri=lake, symbols=SYMBOLS
    )
    s2 = _state(warehouse.reader_dsn)
    assert s2["minutes"] == [(s, 60, 60) for s in SYMBOLS]
    assert s2["hours"] == [(s, 1, 1) for s in SYMBOLS]  # now complete: 60 minutes
    assert _closes(s2) == _expected_closes(SYMBOLS, START_MS, START_MS + HOUR)
    assert r2.counts["quarantined"] == 0 and r1.counts["quarantined"] == 0
    assert s2["staging"] == 0
    lake_df = spark.read.parquet(lake + "/candles_by_day").where("interval = '1m'")
    assert lake_df.count() == lake_df.select("symbol", "open_time").distinct().count() == 120


def test_postgres_restarted_during_the_load_then_rerun_converges(spark, tmp_path):
    from cryptoflow_stack.postgres import LocalPostgres, free_port
    from cryptoflow.warehouse.migrate import migrate

    cluster = LocalPostgres(
        tmp_path / "pg", free_port(), superuser_password="test-admin", throwaway=True
    )
    cluster.init()
    cluster.start(fsync=False)
    try:
        cluster.ensure_login_role("cf_writer", "test-writer")
        cluster.ensure_login_role("cf_reader", "test-reader")
        cluster.ensure_database("wh")
        migrate(cluster.dsn("wh"))
        writer, admin = cluster.dsn("wh", "cf_writer", "test-writer"), cluster.dsn("wh")
        landing, lake = tmp_path / "landing", f"file://{tmp_path}/lake"
        uris = write_minutes(landing, SYMBOLS, START_MS, START_MS + 2 * HOUR, 10 * MINUTE_MS)

        restarted = threading.Event()
        stop = threading.Event()

        def restart_when_loading():
            # The load has begun once the run's staging tables exist: cut every connection then.
            while not stop.is_set():
                try:
                    with psycopg.connect(admin, connect_timeout=2) as conn:
                        n = conn.execute(
                            "SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'"
                        ).fetchone()[0]
                except psycopg.OperationalError:
                    n = 0
                if n:
                    cluster.stop(mode="immediate")
                    cluster.start(fsync=False)
                    restarted.set()
                    return
                time.sleep(0.02)

        # The faulted attempt runs as spark-submit would (its own process), so a job that hangs
        # instead of failing is a test failure, not a stuck test run.
        manifest = plan.write_manifest(f"file://{landing}", "pg-restart", uris)
        env = {
            **os.environ,
            "CRYPTOFLOW_WAREHOUSE_DSN": writer,
            "CRYPTOFLOW_LAKE_URI": lake,
            "CRYPTOFLOW_SYMBOLS": ",".join(SYMBOLS),
            "CRYPTOFLOW_SPARK_MASTER": "local[1]",
            "CRYPTOFLOW_SPARK_DRIVER_MEMORY": "1g",
        }
        watcher = threading.Thread(target=restart_when_loading, daemon=True)
        watcher.start()
        proc = subprocess.Popen(
            [
                sys.executable,
                str(PROJECT_ROOT / "spark_jobs" / "etl_candles.py"),
                "--manifest",
                manifest,
                "--run-id",
                "pg-restart",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, err = proc.communicate(timeout=420)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(
                "the ETL job neither failed nor finished within 7 min after PostgreSQL restarted"
            )
        finally:
            stop.set()
            watcher.join(60)
        # The run failed (how depends on the moment: a cut connection, or staging tables created in a
        # transaction the crash lost); what matters is below.
        assert restarted.is_set()
        assert proc.returncode not in (0, None), err[-2000:]
        seen = _state(cluster.dsn("wh", "cf_reader", "test-reader"))
        assert seen["minutes"] == [] and seen["hours"] == []  # nothing of the failed run is visible

        job.run(spark, uris, "pg-restart", dsn=writer, lake_uri=lake, symbols=SYMBOLS)
        after = _state(cluster.dsn("wh", "cf_reader", "test-reader"))
        assert after["minutes"] == [(s, 120, 120) for s in SYMBOLS]
        assert after["hours"] == [(s, 2, 2) for s in SYMBOLS]
        assert after["staging"] == 0
        assert _closes(after) == _expected_closes(SYMBOLS, START_MS, START_MS + 2 * HOUR)
        with psycopg.connect(admin) as conn:
            assert conn.execute(
                "SELECT status FROM ops.pipeline_runs WHERE run_id = 'pg-restart'"
            ).fetchone() == ("success",)
    finally:
        cluster.destroy()


def test_spark_job_killed_while_writing_the_lake_then_rerun_converges(spark, warehouse, tmp_path):
    landing, lake_dir = tmp_path / "landing", tmp_path / "lake"
    uris = write_minutes(landing, SYMBOLS, START_MS, START_MS + HOUR, 10 * MINUTE_MS)
    manifest = plan.write_manifest(f"file://{landing}", "lake-kill", uris)
    env = {
        **os.environ,
        "CRYPTOFLOW_WAREHOUSE_DSN": warehouse.writer_dsn,
        "CRYPTOFLOW_LAKE_URI": f"file://{lake_dir}",
        "CRYPTOFLOW_SYMBOLS": ",".join(SYMBOLS),
        "CRYPTOFLOW_SPARK_MASTER": "local[1]",
        "CRYPTOFLOW_SPARK_DRIVER_MEMORY": "1g",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            str(PROJECT_ROOT / "spark_jobs" / "etl_candles.py"),
            "--manifest",
            manifest,
            "--run-id",
            "lake-kill",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    killed = False
    try:
        deadline = time.monotonic() + 400
        pending = lake_dir / "_pending"
        while proc.poll() is None and time.monotonic() < deadline:
            # The lake is written aside, in the run's own directory, while the warehouse commits;
            # Spark's committer writes under _temporary there first.
            if any(pending.glob("*/candles_by_day/_temporary")):
                os.killpg(proc.pid, signal.SIGKILL)  # the driver and its JVM, mid-write
                killed = True
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and not killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert killed, "the job ended before its lake write could be interrupted"
    # Killed while the commit may or may not have finished: readers see the whole run or none of
    # it, and the lake publishes nothing before the commit (here: nothing at all).
    assert _state(warehouse.reader_dsn)["minutes"] in ([], [(s, 60, 60) for s in SYMBOLS])
    assert not (lake_dir / "candles_by_day").exists()

    r = job.run(
        spark,
        plan.read_manifest(manifest),
        "lake-kill",
        dsn=warehouse.writer_dsn,
        lake_uri=f"file://{lake_dir}",
        symbols=SYMBOLS,
    )
    assert r.counts["merge"]["inserted"] + r.counts["merge"]["unchanged"] == 120
    state = _state(warehouse.reader_dsn)
    assert state["minutes"] == [(s, 60, 60) for s in SYMBOLS] and state["staging"] == 0
    assert not any(
        pending.iterdir()
    )  # the rerun published its partitions and removed its directory
    lake_df = spark.read.parquet(f"file://{lake_dir}/candles_by_day").where("interval = '1m'")
    assert lake_df.count() == lake_df.select("symbol", "open_time").distinct().count() == 120
