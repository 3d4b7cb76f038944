"""Every DAG file parses with zero import errors (what the Airflow UI would show)."""

import pytest

from tests.conftest import PROJECT_ROOT

EXPECTED_DAGS = {
    "warehouse_health",
    "binance_ingest",
    "spark_etl",
    "forecast_hourly",
    "forecast_backtest",
}


@pytest.mark.quick
def test_every_dag_imports_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    assert EXPECTED_DAGS <= set(bag.dag_ids)
    for dag_id in bag.dag_ids:
        dag = bag.dags[dag_id]
        assert dag.tags, f"{dag_id} has no tags (the UI filters by them)"
        assert dag.doc_md, f"{dag_id} has no doc_md"
