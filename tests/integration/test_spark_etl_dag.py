"""spark_etl run for real with dag.test(): plan -> spark-submit -> data-quality checks -> candles Asset."""

from datetime import datetime, timezone

import psycopg
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_spark_etl_dag_loads_checks_and_publishes(airflow_db, use_warehouse, monkeypatch, tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    from cryptoflow.bench.etl import MINUTE_MS, START_MS, write_minutes
    from tests.conftest import PROJECT_ROOT

    syms = ("BTCUSDT", "ETHUSDT")
    write_minutes(tmp_path / "landing", syms, START_MS, START_MS + 20 * MINUTE_MS, 10 * MINUTE_MS)
    monkeypatch.setenv("CRYPTOFLOW_LANDING_URI", f"file://{tmp_path}/landing")
    monkeypatch.setenv("CRYPTOFLOW_LAKE_URI", f"file://{tmp_path}/lake")
    monkeypatch.setenv("CRYPTOFLOW_SYMBOLS", ",".join(syms))
    monkeypatch.setenv("CRYPTOFLOW_SPARK_MASTER", "local[2]")
    monkeypatch.setenv("CRYPTOFLOW_SPARK_DRIVER_MEMORY", "1g")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", '{"conn_type": "spark", "host": "local[2]"}')

    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "spark_etl.py")).dags["spark_etl"]
    for t in dag.tasks:
        t.retries = 0
    run = dag.test(logical_date=datetime.now(timezone.utc),
                   run_conf={"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T00:20:00Z"})
    assert run.state == "success"
    with psycopg.connect(use_warehouse.reader_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM market.candles WHERE interval = '1m'").fetchone()[0] == 40
        checks = dict(conn.execute("SELECT check_name, bool_and(passed) FROM ops.data_quality_results"
                                   " WHERE pipeline = 'spark_etl' GROUP BY 1").fetchall())
    assert checks and all(checks.values()) and {"row_counts_balanced", "freshness_1m", "gaps_1m"} <= set(checks)
