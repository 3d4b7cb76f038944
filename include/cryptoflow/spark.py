"""SparkSession construction shared by the Spark jobs and the tests."""

from __future__ import annotations

import os
from pathlib import Path

# Debian's libpostgresql-jdbc-java: the JDBC driver comes from a package registry, never downloaded at run time.
POSTGRES_JDBC_JAR = os.environ.get("CRYPTOFLOW_POSTGRES_JDBC_JAR", "/usr/share/java/postgresql.jar")


def local_session(app_name: str, master: str | None = None, shuffle_partitions: int = 4):
    """A SparkSession for `master` (settings' Spark master when None), UTC, with the JDBC driver if present."""
    from pyspark.sql import SparkSession

    from cryptoflow import settings

    master = master or settings.load().spark_master
    builder = (
        SparkSession.builder.appName(app_name)
        .master(master)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", os.environ.get("CRYPTOFLOW_SPARK_DRIVER_MEMORY", "2g"))
        # Dynamic partition overwrite: reprocessing a snapshot replaces only its own lake partitions.
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
    if Path(POSTGRES_JDBC_JAR).exists():
        builder = builder.config("spark.jars", POSTGRES_JDBC_JAR)
    return builder.getOrCreate()
