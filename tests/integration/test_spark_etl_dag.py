"""spark_etl run for real with dag.test(): plan -> spark-submit -> data-quality checks -> candles Asset."""

from datetime import datetime, timezone

import psycopg
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_spark_etl_dag_loads_checks_and_publishes(airflow_db, use_warehouse, monkeypatch, tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    from cryptoflow_bench.etl import MINUTE_MS, START_MS, write_minutes
    from cryptoflow_stack.postgres import free_port
    from tests.conftest import PROJECT_ROOT

    syms = ("BTCUSDT", "ETHUSDT")
    write_minutes(tmp_path / "landing", syms, START_MS, START_MS + 20 * MINUTE_MS, 10 * MINUTE_MS)
    monkeypatch.setenv("CRYPTOFLOW_LANDING_URI", f"file://{tmp_path}/landing")
    monkeypatch.setenv("CRYPTOFLOW_LAKE_URI", f"file://{tmp_path}/lake")
    monkeypatch.setenv("CRYPTOFLOW_SYMBOLS", ",".join(syms))
    monkeypatch.setenv("CRYPTOFLOW_SPARK_MASTER", "local[2]")
    monkeypatch.setenv("CRYPTOFLOW_SPARK_DRIVER_MEMORY", "1g")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", '{"conn_type": "spark", "host": "local[2]"}')
    # The settings' DSN is dead: the checks, the publish task and the spark-submit job itself reach
    # the warehouse through the cryptoflow_warehouse connection (use_warehouse defines it).
    monkeypatch.setenv(
        "CRYPTOFLOW_WAREHOUSE_DSN", f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    )

    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "spark_etl.py")).dags["spark_etl"]
    for t in dag.tasks:
        t.retries = 0
    run = dag.test(
        logical_date=datetime.now(timezone.utc),
        run_conf={"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T00:20:00Z"},
    )
    assert run.state == "success"
    with psycopg.connect(use_warehouse.reader_dsn) as conn:
        assert (
            conn.execute("SELECT count(*) FROM market.candles WHERE interval = '1m'").fetchone()[0]
            == 40
        )
        checks = dict(
            conn.execute(
                "SELECT check_name, bool_and(passed) FROM ops.data_quality_results"
                " WHERE pipeline = 'spark_etl' GROUP BY 1"
            ).fetchall()
        )
    assert (
        checks
        and all(checks.values())
        and {"row_counts_balanced", "freshness_1m", "gaps_1m"} <= set(checks)
    )


def test_a_failed_check_is_red_by_name_and_every_coin_is_still_published(
    airflow_db, use_warehouse, monkeypatch, tmp_path
):
    """A minute missing inside ETHUSDT's sealed window: data_quality[gaps] fails with the reason,
    the other checks pass, and publish still hands both coins to the forecasts."""
    from airflow.dag_processing.dagbag import DagBag

    from cryptoflow_bench.etl import MINUTE_MS, START_MS, write_minutes
    from tests.conftest import PROJECT_ROOT

    syms = ("BTCUSDT", "ETHUSDT")
    hole = START_MS + 25 * MINUTE_MS
    write_minutes(
        tmp_path / "landing",
        syms,
        START_MS + 20 * MINUTE_MS,
        START_MS + 30 * MINUTE_MS,
        10 * MINUTE_MS,
        skip=lambda s, t: s == "ETHUSDT" and t == hole,
    )
    for key, value in {
        "CRYPTOFLOW_LANDING_URI": f"file://{tmp_path}/landing",
        "CRYPTOFLOW_LAKE_URI": f"file://{tmp_path}/lake",
        "CRYPTOFLOW_SYMBOLS": ",".join(syms),
        "CRYPTOFLOW_SPARK_MASTER": "local[2]",
        "CRYPTOFLOW_SPARK_DRIVER_MEMORY": "1g",
        "AIRFLOW_CONN_SPARK_DEFAULT": '{"conn_type": "spark", "host": "local[2]"}',
    }.items():
        monkeypatch.setenv(key, value)

    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "spark_etl.py")).dags["spark_etl"]
    for t in dag.tasks:
        t.retries = 0
    run = dag.test(
        logical_date=datetime.now(timezone.utc),
        run_conf={"start": "2024-01-01T00:20:00Z", "end": "2024-01-01T00:30:00Z"},
    )
    assert run.state == "failed"  # loud: the run is red
    states = {
        (ti.task_id, ti.rendered_map_index or ""): ti.state for ti in run.get_task_instances()
    }
    assert states[("data_quality", "gaps")] == "failed"
    assert {
        states[("data_quality", name)] for name in ("row_counts", "freshness", "duplicate_keys")
    } == {"success"}
    assert states[("publish", "")] == states[("etl_candles", "")] == "success"
    with psycopg.connect(use_warehouse.reader_dsn) as conn:
        gaps = conn.execute(
            "SELECT symbol, passed, observed FROM ops.data_quality_results WHERE check_name = 'gaps_1m'"
            " ORDER BY symbol"
        ).fetchall()
        stored = dict(
            conn.execute(
                "SELECT symbol, count(*) FROM market.candles WHERE interval = '1m' GROUP BY 1"
            ).fetchall()
        )
    assert [(s, p) for s, p, _ in gaps] == [("BTCUSDT", True), ("ETHUSDT", False)]
    assert stored == {"BTCUSDT": 10, "ETHUSDT": 9}  # the sound candles of both coins were merged
