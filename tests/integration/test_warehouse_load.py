"""Stage-then-merge loading of market.candles: idempotent, conflicts quarantined, all or nothing."""

import dataclasses
from decimal import Decimal

import psycopg
import pytest

from cryptoflow.candles import Candle
from cryptoflow.warehouse.load import upsert_candles

pytestmark = pytest.mark.integration

HOUR = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR


def candle(i: int, close="10.5", source="test") -> Candle:
    t = T0 + i * HOUR
    return Candle(
        "BTCUSDT",
        "1h",
        t,
        t + HOUR - 1,
        Decimal("10"),
        Decimal("11"),
        Decimal("9"),
        Decimal(close),
        Decimal("1.5"),
        Decimal("15"),
        Decimal("0.5"),
        Decimal("5"),
        42,
        True,
        source,
    )


def test_rerun_changes_nothing(warehouse):
    batch = [candle(i) for i in range(24)]
    with psycopg.connect(warehouse.writer_dsn) as conn:
        first = upsert_candles(conn, batch)
        second = upsert_candles(conn, batch)
        stamps = conn.execute("SELECT max(ingested_at) FROM market.candles").fetchone()[0]
        third = upsert_candles(conn, batch)
        assert conn.execute("SELECT max(ingested_at) FROM market.candles").fetchone()[0] == stamps
    assert (first.inserted, first.unchanged) == (24, 0)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, 24)
    assert third == second


def test_late_update_of_a_closed_candle_is_quarantined_not_applied(warehouse):
    with psycopg.connect(warehouse.writer_dsn) as conn:
        upsert_candles(conn, [candle(0)])
        result = upsert_candles(conn, [candle(0, close="10.7"), candle(1)], run_id="r2")
        assert (result.conflicts, result.inserted) == (1, 1)
        stored = conn.execute(
            "SELECT close FROM market.candles WHERE open_time = to_timestamp(%s / 1000.0)", (T0,)
        ).fetchone()[0]
        assert stored == Decimal("10.5")
        reason, run_id, raw = conn.execute(
            "SELECT reason, run_id, raw_record FROM ops.quarantine"
        ).fetchone()
        assert (reason, run_id) == ("late_update_conflict", "r2") and "10.7" in raw


def test_derived_rows_are_replaced(warehouse):
    with psycopg.connect(warehouse.writer_dsn) as conn:
        upsert_candles(conn, [candle(0)], derived=True, minute_counts={candle(0).key: 59})
        assert conn.execute("SELECT is_complete, minute_count FROM market.candles").fetchone() == (
            False,
            59,
        )
        result = upsert_candles(
            conn, [candle(0, close="10.6")], derived=True, minute_counts={candle(0).key: 60}
        )
        assert (result.updated, result.conflicts) == (1, 0)
        assert conn.execute("SELECT is_complete, close FROM market.candles").fetchone() == (
            True,
            Decimal("10.6"),
        )


def test_failed_load_leaves_nothing(warehouse):
    bad = dataclasses.replace(candle(5), high=Decimal("1"))  # violates the table's CHECK, mid-batch
    with psycopg.connect(warehouse.writer_dsn) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            upsert_candles(conn, [candle(i) for i in range(5)] + [bad])
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM market.candles").fetchone()[0] == 0


def test_duplicate_keys_in_one_batch_are_refused(warehouse):
    with psycopg.connect(warehouse.writer_dsn) as conn:
        with pytest.raises(ValueError, match="duplicate key"):
            upsert_candles(conn, [candle(0), candle(0)])
