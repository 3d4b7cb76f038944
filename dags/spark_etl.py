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

import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param, dag, get_current_context, task

from cryptoflow import settings
from cryptoflow.assets import LANDING_SNAPSHOTS, WAREHOUSE_CANDLES, CandlesLoaded
from cryptoflow.etl.dq import CHECKS
from cryptoflow.spark import POSTGRES_JDBC_JAR, interpreter_conf, worker_python
from warehouse_hook import WarehouseHook  # plugins/, on sys.path in every Airflow process


class CandleEtlSubmitOperator(SparkSubmitOperator):
    """SparkSubmitOperator that ships the cryptoflow package it runs and refuses a silent yarn.

    The package zip is built here, on the worker that runs spark-submit (a plan task on another
    Celery worker could not hand it a local file). spark-submit is looked up next to this
    interpreter first: the venv's bin/ need not be on the worker's PATH.
    """

    def execute(self, context):
        from airflow.sdk import BaseHook

        cfg = settings.load()
        try:
            BaseHook.get_connection(self._conn_id)
        except Exception as exc:
            # The provider would fall back to master=yarn without a word.
            raise AirflowFailException(
                f"Spark connection {self._conn_id!r} is not defined (set AIRFLOW_CONN_SPARK_DEFAULT, "
                f"e.g. {{\"conn_type\": \"spark\", \"host\": \"{cfg.spark_master}\"}})") from exc
        from cryptoflow.etl.plan import package_zip

        self.py_files = package_zip(cfg.state_dir / "spark")
        venv_bin = str(Path(sys.executable).parent)
        # The job writes where the cryptoflow_warehouse connection points. Not through env_vars: that
        # is a templated field shown in the UI, and the DSN has a password. spark-submit inherits
        # this task process's environment (the provider copies os.environ), and the job reads it
        # as its warehouse_dsn setting.
        dsn_var = settings.env_name("warehouse_dsn")
        dsn, before = WarehouseHook().dsn(), os.environ.get(dsn_var)
        self.env_vars = {**(self.env_vars or {}),
                         "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
                         "PYSPARK_PYTHON": worker_python()}
        os.environ[dsn_var] = dsn
        try:
            return super().execute(context)
        finally:  # the task process is the test's own under dag.test(): leave its environment as found
            if before is None:
                os.environ.pop(dsn_var, None)
            else:
                os.environ[dsn_var] = before


@dag(
    schedule=[LANDING_SNAPSHOTS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # One load at a time: the merge predicts late-update conflicts from what is stored.
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    params={
        "start": Param(None, type=["null", "string"], description="manual runs: window start (ISO, UTC)"),
        "end": Param(None, type=["null", "string"], description="manual runs: window end (ISO, UTC), exclusive"),
        "uris": Param(None, type=["null", "array"], description="manual runs: snapshot URIs to process (instead of start/end)"),
        "intervals": Param(["1m"], type="array", description="manual runs: landing intervals to read"),
    },
    tags=["etl", "spark"],
    doc_md=__doc__,
)
def spark_etl():
    @task.short_circuit
    def plan(params=None, run_id=None, triggering_asset_events=None) -> dict | bool:
        from cryptoflow.etl import plan as planning

        cfg = settings.load()
        events = [ev for evs in (triggering_asset_events or {}).values() for ev in evs]
        uris = planning.snapshots_from_events(events)
        if not events and params.get("uris"):
            uris = list(params["uris"])  # explicit snapshots, e.g. history seeded by the demo or an import
        elif not events:
            start, end = planning.parse_time(params.get("start")), planning.parse_time(params.get("end"))
            if start is None or end is None:
                raise AirflowFailException("a manual run needs params start and end (ISO times)")
            uris = planning.snapshots_for_range(cfg.landing_uri, params.get("intervals") or [cfg.interval], start, end)
        if not uris:
            print("no snapshots to process")
            return False  # skips the job and the checks: nothing new, no Asset event
        return {"manifest": planning.write_manifest(cfg.landing_uri, run_id, uris), "snapshots": len(uris)}

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
        application_args=["--manifest", "{{ ti.xcom_pull(task_ids='plan')['manifest'] }}", "--run-id", "{{ run_id }}"],
        conf={"spark.sql.session.timeZone": "UTC", "spark.ui.enabled": "false", **interpreter_conf()},
    )

    # One mapped task, one instance per check, each named in the UI by its check (map_index_template).
    @task(map_index_template="{{ dq_check }}")
    def data_quality(check: str, run_id=None, ti=None):
        from cryptoflow.etl import dq
        from cryptoflow.etl.plan import read_manifest

        get_current_context()["dq_check"] = check
        cfg = settings.load()
        uris = read_manifest(ti.xcom_pull(task_ids="plan")["manifest"]) if check == "gaps" else None
        with WarehouseHook().connect() as conn:
            failures = dq.run_check(conn, check, run_id, symbols=cfg.symbols, interval=cfg.interval, snapshot_uris=uris)
        if failures:
            raise AirflowFailException(dq.describe_failures(check, failures))
        return "ok"

    @task(outlets=[WAREHOUSE_CANDLES])
    def publish(run_id=None):
        from cryptoflow.etl import dq

        with WarehouseHook().connect() as conn:
            run = dq.load_record(conn, run_id)
        iso = lambda ms: datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat()  # noqa: E731
        loaded = CandlesLoaded(run_id, run.get("counts", {}).get("kept", 0),
                               {key: (iso(lo), iso(hi)) for key, (lo, hi) in run.get("ranges", {}).items()})
        get_current_context()["outlet_events"][WAREHOUSE_CANDLES].extra = loaded.as_extra()
        return loaded.as_extra()

    # The checks and the Asset event both follow the load, side by side: a failed check is red in
    # the UI with its reason, but the candles that were merged (every coin's) still reach the
    # forecasts. One coin's gap never holds back the others.
    planned >> job >> [data_quality.expand(check=list(CHECKS)), publish()]


spark_etl()
