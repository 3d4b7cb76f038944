"""The ETL's edges: landing files in, PostgreSQL (JDBC reads, COPY writes) and the Parquet lake out.

Loading goes through COPY, not JDBC inserts: each Spark task streams its rows as COPY text into an
UNLOGGED staging table over its own connection (the rows are formatted by Spark in the JVM and
cross to Python as Arrow batches, so no per-row Python objects are built). The staging tables are
merged by the driver in one transaction (warehouse.load.merge_staged), so a task that dies leaves
rows only in a staging table nobody reads, which the rerun drops.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType, DateType, DecimalType, StringType, StructField, StructType, TimestampType,
)

from cryptoflow.candles import LANDING_COLUMNS
from cryptoflow.spark import POSTGRES_JDBC_JAR

LANDING_RAW_SCHEMA = StructType([StructField(c, StringType()) for c in LANDING_COLUMNS]
                                + [StructField("_corrupt_record", StringType())])


def read_landing(spark: SparkSession, uris: list[str]) -> DataFrame:
    """The snapshots' rows, every field as the string in the file, plus `_file`.

    Strings first, so a value that doesn't parse is quarantined with its text (bad_number) rather
    than silently read as null; malformed lines come back whole in `_corrupt_record`.
    """
    if not uris:
        return spark.createDataFrame([], LANDING_RAW_SCHEMA).withColumn("_file", F.lit(None).cast("string"))
    df = spark.read.csv(uris, header=True, schema=LANDING_RAW_SCHEMA, mode="PERMISSIVE",
                        columnNameOfCorruptRecord="_corrupt_record", nullValue="", emptyValue="")
    return df.select("*", F.col("_metadata.file_path").alias("_file"))


# ---------------------------------------------------------------------------------------------
# PostgreSQL

def jdbc_options(dsn: str) -> dict[str, str]:
    """Spark JDBC options for a libpq DSN/URI (the driver jar is Debian's, see cryptoflow.spark)."""
    p = conninfo_to_dict(dsn)
    host = p.get("host") or "127.0.0.1"
    url = f"jdbc:postgresql://{host}:{p.get('port') or 5432}/{p.get('dbname') or ''}"
    opts = {"url": url, "driver": "org.postgresql.Driver", "user": p.get("user") or "",
            "password": p.get("password") or "", "fetchsize": "10000"}
    if p.get("sslmode"):
        opts["url"] += f"?sslmode={p['sslmode']}"
    return opts


def read_query(spark: SparkSession, dsn: str, query: str, predicates: list[str] | None = None) -> DataFrame:
    """A SELECT run through JDBC; `predicates` split it into parallel partitions (one connection each)."""
    opts = jdbc_options(dsn)
    table = f"({query}) q"
    if predicates:
        props = {k: v for k, v in opts.items() if k != "url"}
        return spark.read.jdbc(opts["url"], table, predicates=predicates, properties=props)
    return spark.read.format("jdbc").options(**opts, dbtable=table).load()


def copy_text(df: DataFrame) -> DataFrame:
    """`df` as one column `line`: COPY text format rows ending in newline, formatted by Spark.

    Decimals lose trailing zeros ("1.500000000000000000" -> "1.5"): PostgreSQL numeric keeps
    the scale it is given, and the merge compares values, not spellings. NULL is \\N; text is
    escaped as COPY text requires (backslash, tab, newline, carriage return).
    """
    parts = []
    for f in df.schema.fields:
        c = F.col(f.name)
        t = f.dataType
        if isinstance(t, TimestampType):
            v = F.concat(F.date_format(c, "yyyy-MM-dd HH:mm:ss.SSS"), F.lit("+00"))
        elif isinstance(t, DecimalType):
            v = F.regexp_replace(F.regexp_replace(c.cast("string"), r"(\.[0-9]*?)0+$", "$1"), r"\.$", "")
        elif isinstance(t, BooleanType):
            v = F.when(c, F.lit("t")).otherwise(F.lit("f"))
        elif isinstance(t, DateType):
            v = F.date_format(c, "yyyy-MM-dd")
        elif isinstance(t, StringType):
            v = c
            for a, b in (("\\\\", "\\\\\\\\"), ("\t", "\\\\t"), ("\n", "\\\\n"), ("\r", "\\\\r")):
                v = F.regexp_replace(v, a, b)
        else:
            v = c.cast("string")
        parts.append(F.coalesce(v, F.lit("\\N")))
    return df.select(F.concat(F.concat_ws("\t", *parts), F.lit("\n")).alias("line"))


def _copy_partition(dsn: str, statement: str):
    """The function each Spark task runs: stream its Arrow batches of lines into COPY."""

    def run(batches: Iterable):
        from itertools import chain

        import psycopg
        import pyarrow as pa

        nonempty = (b for b in batches if b.num_rows)
        first = next(nonempty, None)
        n = 0
        if first is not None:  # no connection for an empty partition
            with psycopg.connect(dsn) as conn:  # commits on a clean exit, rolls back otherwise
                with conn.cursor().copy(statement) as copy:
                    for batch in chain([first], nonempty):
                        copy.write("".join(batch.column(0).to_pylist()))
                        n += batch.num_rows
        yield pa.RecordBatch.from_pydict({"rows": [n]}, schema=pa.schema([("rows", pa.int64())]))

    return run


def copy_from_executors(df: DataFrame, dsn: str, table: sql.Composable, columns: list[str], conn) -> int:
    """COPY `df` (columns in `columns` order) into `table`, one connection per Spark task.

    `conn` only renders the statement. Returns the number of rows copied. Each task's COPY commits
    on its own: use this only for staging tables that a later transaction merges.
    """
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        table, sql.SQL(", ").join(map(sql.Identifier, columns))).as_string(conn)
    lines = copy_text(df.select(*columns))
    counts = lines.mapInArrow(_copy_partition(dsn, statement), "rows long").agg(F.sum("rows")).collect()
    return int(counts[0][0] or 0)


def copy_from_driver(conn, df: DataFrame, table: sql.Composable, columns: list[str]) -> int:
    """COPY a small `df` through the driver's connection, inside its current transaction."""
    lines = copy_text(df.select(*columns))
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(table, sql.SQL(", ").join(map(sql.Identifier, columns)))
    n = 0
    with conn.cursor().copy(statement) as copy:
        for batch in lines.toArrow().to_batches():
            if batch.num_rows:
                copy.write("".join(batch.column(0).to_pylist()))
                n += batch.num_rows
    return n


def staging_name(run_id: str, what: str) -> str:
    """A staging table name derived from the run id, so a rerun finds (and drops) its own leftovers."""
    return f"etl_{hashlib.sha256(run_id.encode()).hexdigest()[:16]}_{what}"


# ---------------------------------------------------------------------------------------------
# The lake

def lake_candles_path(lake_uri: str) -> str:
    return lake_uri.rstrip("/") + "/candles"


def write_lake(df: DataFrame, lake_uri: str) -> None:
    """Replace the lake partitions (symbol/interval/date) that `df` has rows for, and only those.

    One file per partition (repartitioned by the partition columns, sorted by time), so the lake
    doesn't fill up with small files and a rewritten partition reads back in key order.
    Relies on spark.sql.sources.partitionOverwriteMode=dynamic (cryptoflow.spark.local_session).
    """
    spark = df.sparkSession
    if spark.conf.get("spark.sql.sources.partitionOverwriteMode").lower() != "dynamic":
        raise RuntimeError("the lake needs dynamic partition overwrite; a static overwrite would delete history")
    (df.repartition("symbol", "interval", "date").sortWithinPartitions("symbol", "interval", "open_time")
       .write.mode("overwrite").partitionBy("symbol", "interval", "date")
       .option("compression", "zstd").parquet(lake_candles_path(lake_uri)))


__all__ = ["read_landing", "jdbc_options", "read_query", "copy_text", "copy_from_executors", "copy_from_driver",
           "staging_name", "write_lake", "lake_candles_path", "LANDING_RAW_SCHEMA", "POSTGRES_JDBC_JAR"]
