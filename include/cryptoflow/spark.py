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
    )
    if Path(POSTGRES_JDBC_JAR).exists():
        builder = builder.config("spark.jars", POSTGRES_JDBC_JAR)
    return builder.getOrCreate()
