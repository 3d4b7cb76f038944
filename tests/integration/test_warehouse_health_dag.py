"""warehouse_health run for real with dag.test() against a throwaway warehouse."""

from datetime import datetime, timezone

import psycopg
import pytest

pytestmark = pytest.mark.integration


def test_warehouse_health_records_freshness_per_symbol(airflow_db, use_warehouse, monkeypatch):
    monkeypatch.setenv("CRYPTOFLOW_SYMBOLS", "BTCUSDT,ETHUSDT")
    with psycopg.connect(use_warehouse.writer_dsn) as conn:
        conn.execute(
            "INSERT INTO market.candles (symbol, interval, open_time, close_time, open, high, low, close,"
            " base_volume, quote_volume, source) VALUES ('BTCUSDT', '1m', now() - interval '2 minutes',"
            " now() - interval '1 minute', 1, 2, 1, 2, 3, 4, 'test')"
        )
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import PROJECT_ROOT

    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "warehouse_health.py")).dags[
        "warehouse_health"
    ]
    for t in dag.tasks:  # a failure should fail the test now, not wait for a retry
        t.retries = 0
    run = dag.test(logical_date=datetime.now(timezone.utc))
    assert run.state == "success"
    with psycopg.connect(use_warehouse.reader_dsn) as conn:
        rows = dict(
            conn.execute(
                "SELECT symbol, passed FROM ops.data_quality_results WHERE check_name = 'freshness_1m'"
            ).fetchall()
        )
    assert rows == {"BTCUSDT": True, "ETHUSDT": False}


def test_dag_tasks_follow_the_cryptoflow_warehouse_connection(
    airflow_db, use_warehouse, monkeypatch
):
    """An operator who points `cryptoflow_warehouse` elsewhere (UI, secrets backend, or AIRFLOW_CONN_*
    as here) moves the tasks with it: the settings' DSN is dead, the connection's is the warehouse."""
    from airflow.dag_processing.dagbag import DagBag

    from cryptoflow_stack.postgres import free_port
    from tests.conftest import PROJECT_ROOT

    monkeypatch.setenv("CRYPTOFLOW_SYMBOLS", "BTCUSDT")
    monkeypatch.setenv(
        "CRYPTOFLOW_WAREHOUSE_DSN", f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    )
    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "warehouse_health.py")).dags[
        "warehouse_health"
    ]
    for t in dag.tasks:
        t.retries = 0
    assert dag.test(logical_date=datetime.now(timezone.utc)).state == "success"
    with psycopg.connect(use_warehouse.reader_dsn) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM ops.data_quality_results WHERE check_name = 'freshness_1m'"
            ).fetchone()[0]
            == 1
        )

    # The connection moved to a port where nothing listens: the same run now fails, though the
    # settings point at the live warehouse again.
    monkeypatch.setenv("CRYPTOFLOW_WAREHOUSE_DSN", use_warehouse.writer_dsn)
    monkeypatch.setenv(
        "AIRFLOW_CONN_CRYPTOFLOW_WAREHOUSE", f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    )
    assert dag.test(logical_date=datetime.now(timezone.utc)).state == "failed"


def test_schema_lagging_behind_code_fails(warehouse):
    from cryptoflow.warehouse import health

    with psycopg.connect(warehouse.admin_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM public.schema_migrations")
        with pytest.raises(RuntimeError, match="not current"):
            health.schema_status(conn)
