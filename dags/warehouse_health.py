"""warehouse_health: hourly check that the warehouse schema is current and each coin's data is fresh.

Freshness results land in ops.data_quality_results for the pipeline-health dashboard; a schema
that lags behind the code fails the run, since every other DAG would then fail in obscure ways.
"""

from datetime import datetime, timedelta

from airflow.sdk import dag, task

from cryptoflow import settings
from cryptoflow.airflow.hooks import WarehouseHook
from cryptoflow.warehouse import health


@dag(
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2)},
    tags=["ops"],
    doc_md=__doc__,
)
def warehouse_health():
    @task
    def schema_is_current() -> dict:
        with WarehouseHook().connect() as conn:
            return health.schema_status(conn)

    @task
    def data_freshness(run_id: str | None = None) -> dict:
        cfg = settings.load()
        with WarehouseHook().connect() as conn:
            return health.freshness(conn, cfg.symbols, cfg.interval, run_id)

    schema_is_current() >> data_freshness()


warehouse_health()
