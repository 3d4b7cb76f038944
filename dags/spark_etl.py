"""spark_etl: landing snapshots -> validated candles in PostgreSQL and the Parquet lake, then data quality.

    (Asset: landing_snapshots) ─► plan ─► etl_candles (spark-submit) ─┬─► data_quality[check] (red when violated)
                                                                     └─► publish (Asset: warehouse_candles) ─► forecast_hourly

- plan: the snapshots this run processes: those its Asset events name (extra `uris`), or for a
  manual run the params `start`/`end` (ISO times) over the landing store, or `uris` (snapshot URIs). Written to a manifest.
- etl_candles: spark_jobs/etl_candles.py through the apache-spark provider's SparkSubmitOperator,
  master from the `spark_default` connection (the CRYPTOFLOW_SPARK_MASTER setting: local[*] on one
  machine, spark://spark-master:7077 in docker-compose), the cryptoflow package shipped to the
  executors with --py-files and Debian's PostgreSQL JDBC jar with --jars. Validation, quarantine,
  1h rollups, analytics, one-transaction merge and the lake partitions: cryptoflow.etl.job.
- data_quality: one mapped instance per check of cryptoflow.etl.dq.CHECKS, named by it in the UI
  (row_counts, freshness per symbol, duplicate_keys, gaps); each records its results in
  ops.data_quality_results and fails red, with its reason, when violated. The gap check judges
  the snapshots' own windows; time between two windows is binance_ingest's healing.
- publish: emits warehouse_candles with the symbols and time ranges loaded, beside the checks (not
  after them): a failed check is loud, but the sound candles of every coin still move on.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from cryptoflow import settings
from cryptoflow.airflow import etl_tasks
from cryptoflow.airflow.operators import CandleEtlSubmitOperator
from cryptoflow.assets import LANDING_SNAPSHOTS, WAREHOUSE_CANDLES
from cryptoflow.etl.dq import CHECKS
from cryptoflow.spark import POSTGRES_JDBC_JAR, interpreter_conf


@dag(
    schedule=[LANDING_SNAPSHOTS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # One load at a time: the merge predicts late-update conflicts from what is stored.
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    params={
        "start": Param(
            None, type=["null", "string"], description="manual runs: window start (ISO, UTC)"
        ),
        "end": Param(
            None,
            type=["null", "string"],
            description="manual runs: window end (ISO, UTC), exclusive",
        ),
        "uris": Param(
            None,
            type=["null", "array"],
            description="manual runs: snapshot URIs to process (instead of start/end)",
        ),
        "intervals": Param(
            ["1m"], type="array", description="manual runs: landing intervals to read"
        ),
    },
    tags=["etl", "spark"],
    doc_md=__doc__,
)
def spark_etl():
    @task.short_circuit
    def plan(params=None, run_id=None, triggering_asset_events=None) -> dict | bool:
        return etl_tasks.plan(params, run_id, triggering_asset_events)

    planned = plan()
    job = CandleEtlSubmitOperator(
        task_id="etl_candles",
        application=str(settings.load().home / "spark_jobs" / "etl_candles.py"),
        name="cryptoflow-etl-candles",
        conn_id="spark_default",
        jars=POSTGRES_JDBC_JAR,
        # The driver's JVM is started by spark-submit: its heap is set here (--driver-memory), since a
        # session's spark.driver.memory comes too late inside a submitted job.
        driver_memory=settings.load().spark_driver_memory,
        application_args=[
            "--manifest",
            "{{ ti.xcom_pull(task_ids='plan')['manifest'] }}",
            "--run-id",
            "{{ run_id }}",
        ],
        conf={
            "spark.sql.session.timeZone": "UTC",
            "spark.ui.enabled": "false",
            **interpreter_conf(),
        },
    )

    # One mapped task, one instance per check, each named in the UI by its check (map_index_template).
    @task(map_index_template="{{ dq_check }}")
    def data_quality(check: str, run_id=None, ti=None):
        get_current_context()["dq_check"] = check
        return etl_tasks.data_quality(check, run_id, ti.xcom_pull(task_ids="plan")["manifest"])

    @task(outlets=[WAREHOUSE_CANDLES])
    def publish(run_id=None):
        loaded = etl_tasks.candles_loaded(run_id)
        get_current_context()["outlet_events"][WAREHOUSE_CANDLES].extra = loaded.as_extra()
        return loaded.as_extra()

    # The checks and the Asset event both follow the load, side by side: a failed check is red in
    # the UI with its reason, but the candles that were merged (every coin's) still reach the
    # forecasts. One coin's gap never holds back the others.
    planned >> job >> [data_quality.expand(check=list(CHECKS)), publish()]


spark_etl()
