"""Airflow operators of cryptoflow."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.log import mask_secret

from cryptoflow import settings
from cryptoflow.airflow.hooks import WarehouseHook
from cryptoflow.spark import worker_python


class CandleEtlSubmitOperator(SparkSubmitOperator):
    """SparkSubmitOperator that ships the cryptoflow package it runs, hands the job the warehouse
    DSN, and refuses a silent yarn.

    The package zip is built here, on the worker that runs spark-submit (a plan task on another
    Celery worker could not hand it a local file). spark-submit is looked up next to this
    interpreter first: the venv's bin/ need not be on the worker's PATH.
    """

    def execute(self, context):
        cfg = settings.load()
        try:
            BaseHook.get_connection(self._conn_id)
        except Exception as exc:
            # The provider would fall back to master=yarn without a word.
            raise AirflowFailException(
                f"Spark connection {self._conn_id!r} is not defined (set AIRFLOW_CONN_SPARK_DEFAULT, "
                f'e.g. {{"conn_type": "spark", "host": "{cfg.spark_master}"}})'
            ) from exc
        from cryptoflow.etl.plan import package_zip

        self.py_files = package_zip(cfg.state_dir / "spark")
        return super().execute(context)

    def submit_env(self) -> dict[str, str]:
        """What spark-submit's environment adds to the task process's: the venv's bin/ on PATH, the
        executors' interpreter, and the DSN of the cryptoflow_warehouse connection, which the job
        reads as its warehouse_dsn setting."""
        dsn = WarehouseHook().dsn()
        mask_secret(dsn)  # redacted wherever a log line would show it
        return {
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            "PYSPARK_PYTHON": worker_python(),
            settings.env_name("warehouse_dsn"): dsn,
        }

    def _get_hook(self) -> SparkSubmitHook:
        # The DSN has a password, so it reaches spark-submit through the hook's env_vars, which in
        # client mode become the environment of the spark-submit process alone: not this task
        # process's os.environ (the test's own under dag.test()), and not the operator's templated
        # env_vars field, which the UI shows rendered.
        templated = self.env_vars
        self.env_vars = {**(templated or {}), **self.submit_env()}
        try:
            hook = super()._get_hook()
        finally:
            self.env_vars = templated
        master, deploy_mode = hook._connection["master"], hook._connection["deploy_mode"]
        if hook._is_yarn or hook._is_kubernetes or deploy_mode == "cluster":
            # There the provider puts env_vars on the spark-submit command line (--conf), or rejects them.
            raise AirflowFailException(
                f"the ETL job runs its driver in client mode only (master {master!r}, deploy mode "
                f"{deploy_mode!r}): the warehouse DSN would otherwise be passed on the command line"
            )
        return hook
