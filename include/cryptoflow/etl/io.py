"""The ETL's edges: landing files in, PostgreSQL (JDBC reads, COPY writes) and the Parquet lake out.

Loading goes through COPY, not JDBC inserts, in ONE Spark job per run (`stage`): everything a run
writes to PostgreSQL (candles, rollups, quarantine, analytics) is formatted as COPY text by Spark
in the JVM, tagged with its target table, and each task streams its share into UNLOGGED staging
tables over its own connection (Arrow batches handed to COPY as buffers: no Python object per
row). The driver then merges the staging tables in one transaction (warehouse.load.merge_staged),
so a task that dies leaves rows only in staging tables nobody reads. A run holds an advisory lock
while its staging tables exist; tables whose lock nobody holds (a killed run never rerun) are
dropped by the next run (`drop_orphaned_staging`). The lake is written aside, into the run's own
directory, while that transaction runs, and published (its partitions moved in) after the commit.

Here: the landing files in and the JDBC reads. The rest, re-exported here as the edges' one API,
lives beside it: etl.staging_copy (the COPY job), etl.staging (the staging tables and their
locks), etl.lake (the lake's write, publish and cleanup).
"""

from __future__ import annotations

from typing import cast

from psycopg.conninfo import conninfo_to_dict
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StringType, StructField, StructType

from cryptoflow.candles import LANDING_COLUMNS
from cryptoflow.etl.lake import (
    drop_orphaned_lake,
    lake_candles_path,
    lake_pending_path,
    publish_lake,
    write_lake,
)
from cryptoflow.etl.staging import (
    STAGE_PART_COLUMN,
    STAGING_PREFIX,
    create_unlogged_staging,
    drop_orphaned_staging,
    hold_staging_lock,
    release_staging_lock,
    staging_key,
    staging_name,
)
from cryptoflow.etl.staging import _lock_id as _lock_id  # the tests' handle on a run's lock
from cryptoflow.etl.staging_copy import StageTarget, copy_text, stage
from cryptoflow.spark import POSTGRES_JDBC_JAR

LANDING_RAW_SCHEMA = StructType(
    [StructField(c, StringType()) for c in LANDING_COLUMNS]
    + [StructField("_corrupt_record", StringType())]
)


def read_landing(spark: SparkSession, uris: list[str]) -> DataFrame:
    """The snapshots' rows, every field as the string in the file.

    Strings first, so a value that doesn't parse is quarantined with its text (bad_number) rather
    than silently read as null; malformed lines come back whole in `_corrupt_record`.
    """
    if not uris:
        return spark.createDataFrame([], LANDING_RAW_SCHEMA)
    return spark.read.csv(
        uris,
        header=True,
        schema=LANDING_RAW_SCHEMA,
        mode="PERMISSIVE",
        columnNameOfCorruptRecord="_corrupt_record",
        nullValue="",
        emptyValue="",
    )


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def jdbc_options(dsn: str) -> dict[str, str]:
    """Spark JDBC options for a libpq DSN/URI (the driver jar is Debian's, see cryptoflow.spark)."""
    p = cast(
        "dict[str, str]", conninfo_to_dict(dsn)
    )  # parsed from a string alone: every value a str
    host = p.get("host") or "127.0.0.1"
    url = f"jdbc:postgresql://{host}:{p.get('port') or 5432}/{p.get('dbname') or ''}"
    # Timeouts and keepalives: a PostgreSQL that restarts or vanishes mid-read fails the task
    # (and so the run, which Airflow retries) instead of leaving it waiting forever.
    opts = {
        "url": url,
        "driver": "org.postgresql.Driver",
        "user": p.get("user") or "",
        "password": p.get("password") or "",
        "fetchsize": "10000",
        "connectTimeout": "30",
        "socketTimeout": "900",
        "tcpKeepAlive": "true",
    }
    if p.get("sslmode"):
        opts["url"] += f"?sslmode={p['sslmode']}"
    return opts


def read_query(
    spark: SparkSession, dsn: str, query: str, predicates: list[str] | None = None
) -> DataFrame:
    """A SELECT run through JDBC; `predicates` split it into parallel partitions (one connection each)."""
    opts = jdbc_options(dsn)
    table = f"({query}) q"
    if predicates:
        props = {k: v for k, v in opts.items() if k != "url"}
        return spark.read.jdbc(opts["url"], table, predicates=predicates, properties=props)
    return spark.read.format("jdbc").options(**opts, dbtable=table).load()


__all__ = [
    "read_landing",
    "jdbc_options",
    "read_query",
    "copy_text",
    "StageTarget",
    "stage",
    "staging_name",
    "staging_key",
    "hold_staging_lock",
    "release_staging_lock",
    "drop_orphaned_staging",
    "create_unlogged_staging",
    "write_lake",
    "publish_lake",
    "drop_orphaned_lake",
    "lake_pending_path",
    "lake_candles_path",
    "STAGE_PART_COLUMN",
    "STAGING_PREFIX",
    "LANDING_RAW_SCHEMA",
    "POSTGRES_JDBC_JAR",
]
