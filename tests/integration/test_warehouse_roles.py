"""The warehouse schema and its two roles: pipelines write, dashboards can only read."""

import psycopg
import pytest

from cryptoflow.warehouse.migrate import MigrationError, discover, migrate

pytestmark = pytest.mark.integration

TABLES = [
    "market.candles",
    "ops.quarantine",
    "ops.pipeline_runs",
    "ops.data_quality_results",
    "ops.healed_gaps",
    "forecast.model_versions",
    "forecast.predictions",
]


def test_migrations_are_idempotent_and_recorded(warehouse):
    assert migrate(warehouse.admin_dsn) == []
    with psycopg.connect(warehouse.admin_dsn) as conn:
        versions = [
            r[0] for r in conn.execute("SELECT version FROM public.schema_migrations ORDER BY 1")
        ]
        for table in TABLES:
            assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None, table
    assert versions == [m.version for m in discover()]


def test_edited_migration_is_refused(warehouse, tmp_path):
    for m in discover():
        (tmp_path / m.path.name).write_text(m.sql + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(warehouse.admin_dsn, tmp_path)


def test_writer_can_write_every_table(warehouse):
    with psycopg.connect(warehouse.writer_dsn) as conn:
        conn.execute(
            "INSERT INTO market.candles (symbol, interval, open_time, close_time, open, high, low, close,"
            " base_volume, quote_volume, source) VALUES ('BTCUSDT', '1m', '2024-01-01T00:00Z',"
            " '2024-01-01T00:00:59.999Z', 10, 11, 9, 10.5, 1, 10, 'test')"
        )
        conn.execute(
            "INSERT INTO ops.quarantine (source, reason, raw_record) VALUES ('t', 'r', '{}')"
        )
        conn.execute("CREATE TABLE staging.load_test (x int)")  # stage-then-merge loads
        conn.execute("CREATE TEMP TABLE tmp_test (x int)")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO ops.quarantine (source, reason, raw_record) VALUES ('t', 'r', '{}')",
        "UPDATE market.candles SET close = 0",
        "DELETE FROM forecast.predictions",
        "CREATE TABLE staging.evil (x int)",
        "CREATE TEMP TABLE evil (x int)",
        "TRUNCATE ops.pipeline_runs",
    ],
)
def test_dashboard_role_cannot_write(warehouse, statement):
    with psycopg.connect(warehouse.reader_dsn, autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM market.candles")  # it can read
        # Read-only sessions by default ...
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute(statement)
        # ... and no privilege even when the session asks for read-write.
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def test_candle_constraints_reject_impossible_rows(warehouse):
    with psycopg.connect(warehouse.writer_dsn) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="candles_ohlc_valid"):
            conn.execute(
                "INSERT INTO market.candles (symbol, interval, open_time, close_time, open, high, low, close,"
                " base_volume, quote_volume, source) VALUES ('BTCUSDT', '1m', '2024-01-01T00:00Z',"
                " '2024-01-01T00:00:59.999Z', 10, 9, 11, 10, 1, 10, 'test')"
            )
