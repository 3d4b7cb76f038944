"""The load's rules in PostgreSQL alone: a source candle wins over a rollup, and the staging
tables of a run that is no longer running are dropped by the next one."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from cryptoflow.candles import Candle
from cryptoflow.etl import io
from cryptoflow.warehouse.load import (
    StoredMeanwhile,
    copy_candles,
    create_temp_candle_staging,
    insert_staged_fresh,
    merge_staged,
)

pytestmark = pytest.mark.integration

T0 = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
HOUR = 3_600_000


def hour(close: str, source: str = "binance") -> Candle:
    c = Decimal(close)
    return Candle(
        "BTCUSDT",
        "1h",
        T0,
        T0 + HOUR - 1,
        Decimal("100"),
        max(c, Decimal("101")),
        min(c, Decimal("99")),
        c,
        Decimal("5"),
        Decimal("500"),
        None,
        None,
        None,
        True,
        source,
    )


def _merge(conn, candle, *, derived, minute_count=None):
    with conn.transaction():
        staging = create_temp_candle_staging(conn)
        copy_candles(
            conn, staging, [candle], None if minute_count is None else {candle.key: minute_count}
        )
        return merge_staged(conn, staging, derived=derived, run_id="policy")


def _stored(conn):
    return conn.execute("SELECT close, minute_count, source FROM market.candles").fetchall()


def test_a_source_candle_wins_over_a_rollup_both_ways(warehouse):
    with psycopg.connect(
        warehouse.writer_dsn, autocommit=True
    ) as conn:  # each merge its own transaction
        # A rollup first: Binance's own candle for that hour replaces it (no conflict: rollups are derived).
        assert _merge(conn, hour("100.5", "rollup:1m"), derived=True, minute_count=59).inserted == 1
        r = _merge(conn, hour("100.7"), derived=False)
        assert (r.updated, r.conflicts) == (1, 0)
        assert _stored(conn) == [(Decimal("100.7"), None, "binance")]
        # A rollup never replaces it, whatever its values (complete or not, equal or not): counted, not applied.
        for close, minutes in (("100.9", 60), ("100.7", 60), ("100.2", 12)):
            r = _merge(conn, hour(close, "rollup:1m"), derived=True, minute_count=minutes)
            assert (r.staged, r.kept_source, r.inserted, r.updated, r.unchanged) == (1, 1, 0, 0, 0)
        assert _stored(conn) == [(Decimal("100.7"), None, "binance")]
        # A different source candle for it is a late update: quarantined, the stored one stays.
        assert _merge(conn, hour("100.8"), derived=False).conflicts == 1
        assert _stored(conn) == [(Decimal("100.7"), None, "binance")]
        assert conn.execute("SELECT reason FROM ops.quarantine").fetchall() == [
            ("late_update_conflict",)
        ]


def test_the_fresh_insert_refuses_a_key_stored_meanwhile_and_keeps_nothing(warehouse):
    """The path for a range the Spark job proved empty: a plain insert; a key stored since the
    proof (or a batch that repeats a key) fails the whole transaction with a reason, never an upsert."""
    with psycopg.connect(warehouse.writer_dsn, autocommit=True) as conn:
        with conn.transaction():
            staging = create_temp_candle_staging(conn)
            copy_candles(conn, staging, [hour("100.5")])
            r = insert_staged_fresh(conn, staging)
        assert (r.staged, r.inserted, r.updated, r.conflicts) == (1, 1, 0, 0)
        later = dataclasses.replace(hour("101"), open_time=T0 + HOUR, close_time=T0 + 2 * HOUR - 1)
        with pytest.raises(StoredMeanwhile, match="changed during the run"):
            with conn.transaction():
                conn.execute(
                    "INSERT INTO ops.quarantine (source, reason, detail, raw_record) VALUES ('t', 'x', 'y', 'z')"
                )
                staging = create_temp_candle_staging(conn)
                copy_candles(conn, staging, [later, hour("100.6")])  # the second key is stored
                insert_staged_fresh(conn, staging)
        # Nothing of the failed transaction stays: not the new hour, not the other statements.
        assert _stored(conn) == [(Decimal("100.5"), None, "binance")]
        assert conn.execute("SELECT count(*) FROM ops.quarantine").fetchone()[0] == 0


def _make_staging(conn, run_id):
    for what in ("src", "der"):
        io.create_unlogged_staging(
            conn, io.staging_name(run_id, what), "market.candles", ("symbol", "open_time")
        )


def _staging_tables(conn):
    return {
        r[0]
        for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'staging'"
        ).fetchall()
    }


def test_staging_of_runs_no_longer_running_is_dropped(warehouse):
    dsn = warehouse.writer_dsn
    with psycopg.connect(dsn) as live, psycopg.connect(dsn) as cleaner:
        io.hold_staging_lock(live, "live-run")
        _make_staging(live, "live-run")
        # A killed run: its connection (and with it the lock) is gone, its tables are not.
        dead = psycopg.connect(dsn)
        io.hold_staging_lock(dead, "dead-run")
        _make_staging(dead, "dead-run")
        dead.close()
        _make_staging(cleaner, "mine")  # the calling run's own tables are never touched
        cleaner.execute("CREATE TABLE staging.not_etl (x int)")  # nor tables the ETL did not name
        cleaner.commit()

        dropped = io.drop_orphaned_staging(cleaner, keep_run_id="mine")
        assert sorted(dropped) == sorted(io.staging_name("dead-run", w) for w in ("src", "der"))
        live_tables = {io.staging_name("live-run", w) for w in ("src", "der")}
        mine = {io.staging_name("mine", w) for w in ("src", "der")}
        assert _staging_tables(cleaner) == live_tables | mine | {"not_etl"}

        # Once the live run has finished (released its lock), its leftovers are fair game too.
        io.release_staging_lock(live, "live-run")
        assert sorted(io.drop_orphaned_staging(cleaner, keep_run_id="mine")) == sorted(live_tables)
        # ...and the cleaner left no lock behind: the dead run's id can run again.
        probe = cleaner.execute(
            "SELECT pg_try_advisory_lock(%s)", (io._lock_id(io.staging_key("dead-run")),)
        ).fetchone()
        assert probe == (True,)
        for name in mine | {"not_etl"}:
            cleaner.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier("staging", name)))
        cleaner.commit()


def test_unpublished_lake_directories_of_runs_no_longer_running_are_removed(
    warehouse, spark, tmp_path
):
    """A run writes its lake partitions into <lake>/_pending/<key> before its commit; a run killed
    before publishing leaves that directory. Others remove it only once nobody holds its lock."""
    lake = f"file://{tmp_path}/lake"
    pending = {
        run: tmp_path / "lake" / "_pending" / io.staging_key(run)
        for run in ("live-run", "dead-run", "mine")
    }
    for d in pending.values():
        (d / "candles_by_day" / "interval=1m" / "date=2024-01-01").mkdir(parents=True)
    (tmp_path / "lake" / "_pending" / "not-a-run-key").mkdir()  # nothing the ETL named
    dsn = warehouse.writer_dsn
    with psycopg.connect(dsn) as live, psycopg.connect(dsn) as cleaner:
        io.hold_staging_lock(live, "live-run")
        assert io.drop_orphaned_lake(spark, cleaner, lake, keep_run_id="mine") == [
            io.staging_key("dead-run")
        ]
        assert [d.exists() for d in pending.values()] == [True, False, True]
        assert (tmp_path / "lake" / "_pending" / "not-a-run-key").exists()
        io.release_staging_lock(live, "live-run")
        assert io.drop_orphaned_lake(spark, cleaner, lake, keep_run_id="mine") == [
            io.staging_key("live-run")
        ]
        assert [d.exists() for d in pending.values()] == [False, False, True]


def test_a_partition_staged_twice_is_staged_once(warehouse, spark):
    """Spark may run a staging task again after it committed (a retry, a recomputed stage,
    speculation): each partition replaces its own earlier rows, so nothing is staged twice."""
    from pyspark.sql import functions as F

    with psycopg.connect(warehouse.writer_dsn) as conn:
        table = io.create_unlogged_staging(
            conn, io.staging_name("twice", "qua"), "ops.quarantine", ("reason", "detail")
        )
        # Identical rows on purpose: equal quarantine rows are legitimate and must all survive.
        rows = spark.range(0, 1000, numPartitions=4).select(
            F.lit("bad_number").alias("reason"), F.lit("same").alias("detail")
        )
        target = io.StageTarget("qua", rows, table, ("reason", "detail"))
        for attempt in range(2):  # the second pass is every task running again
            assert io.stage([target], warehouse.writer_dsn, conn, "twice") == {"qua": 1000}
            staged = conn.execute(
                sql.SQL("SELECT count(*), count(DISTINCT {}) FROM {}").format(
                    sql.Identifier(io.STAGE_PART_COLUMN), table
                )
            ).fetchone()
            conn.commit()
            assert staged == (1000, spark.sparkContext.defaultParallelism), f"attempt {attempt}"
