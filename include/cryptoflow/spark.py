"""SparkSession construction shared by the Spark jobs and the tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cryptoflow import settings

# Debian's libpostgresql-jdbc-java: the JDBC driver comes from a package registry, never downloaded at run time.
# The setting (CRYPTOFLOW_POSTGRES_JDBC_JAR) as in force when this module is first imported.
POSTGRES_JDBC_JAR = settings.load().postgres_jdbc_jar


def worker_python() -> str:
    """The interpreter Spark's Python workers run: the project's own, never the PATH's `python3`.

    Left unset, Spark starts its workers with `python3` from PATH, which on a new machine has none of
    the project's packages (pyarrow, pandas): every Arrow UDF then fails inside the worker. The
    docker-compose images install the venv at the same path on the driver and every executor.
    """
    return sys.executable


def interpreter_conf() -> dict[str, str]:
    """Spark properties naming the project's interpreter (for builders and spark-submit alike)."""
    python = worker_python()
    return {"spark.pyspark.python": python, "spark.pyspark.driver.python": python}


def local_session(app_name: str, master: str | None = None, shuffle_partitions: int = 4):
    """A SparkSession for `master` (when None: spark-submit's, else the settings'), UTC, with the JDBC driver if present."""
    from pyspark.sql import SparkSession

    cfg = settings.load()
    # Under spark-submit (which hands its JVM to this driver through PYSPARK_GATEWAY_PORT) the master
    # is the one spark-submit was given: the DAG's `spark_default` connection. Setting the settings'
    # master here would override it, and a job submitted to spark:// ran silently in local[*].
    builder = SparkSession.builder
    if master is not None or "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(master or cfg.spark_master)
    # PySpark takes the workers' interpreter from PYSPARK_PYTHON when it creates the context (the
    # spark.pyspark.python property only reaches spark-submit's launcher): set both.
    os.environ["PYSPARK_PYTHON"] = worker_python()
    builder = (
        builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.ui.enabled", "false")
        .config(map=interpreter_conf())  # type: ignore[arg-type]  # pyspark takes an invariant Dict it only reads
        .config("spark.driver.memory", cfg.spark_driver_memory)
        # Dynamic partition overwrite: an overwrite of a partitioned directory replaces only the
        # partitions it writes (a safety net: the ETL writes its lake partitions aside, io.write_lake).
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        # Constraint propagation re-derives every filter through the validation's wide CASE
        # expressions: planning the ETL took seconds, and a plan using the verdicts twice ran the
        # driver out of heap. Nothing here relies on inferred filters.
        .config("spark.sql.constraintPropagation.enabled", "false")
        # file:// without the .crc side files: without Hadoop's native library every file Hadoop
        # creates costs a forked `chmod`, and a backfill writes thousands of small lake partitions
        # (a .crc per Parquet file doubled that count; hdfs:// and s3a:// are not affected).
        .config("spark.hadoop.fs.file.impl", "org.apache.hadoop.fs.RawLocalFileSystem")
    )
    if Path(cfg.postgres_jdbc_jar).exists():
        builder = builder.config("spark.jars", cfg.postgres_jdbc_jar)
    return builder.getOrCreate()
