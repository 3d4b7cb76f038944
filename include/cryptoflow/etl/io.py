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
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, cast

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DateType,
    DecimalType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from cryptoflow.candles import LANDING_COLUMNS
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
            # The cast prints the session's time zone (UTC, cryptoflow.spark) and only the fraction
            # digits there are; a third cheaper than date_format's pattern.
            v = F.concat(c.cast("string"), F.lit("+00"))
        elif isinstance(t, DecimalType) and t.scale > 0:
            # A decimal with a scale always prints its point, so the zeros stripped are fraction
            # digits; two trims cost a fraction of two regex replaces on every value.
            v = F.rtrim(F.rtrim(c.cast("string"), F.lit("0")), F.lit("."))
        elif isinstance(t, BooleanType):
            v = F.when(c, F.lit("t")).otherwise(F.lit("f"))
        elif isinstance(t, DateType):
            v = F.date_format(c, "yyyy-MM-dd")
        elif isinstance(t, StringType):
            escaped = c
            for a, b in (("\\\\", "\\\\\\\\"), ("\t", "\\\\t"), ("\n", "\\\\n"), ("\r", "\\\\r")):
                escaped = F.regexp_replace(escaped, a, b)
            # One search instead of four replaces on text that needs no escaping (symbols,
            # intervals, sources never do): a quarter of the formatting time of a candle row.
            v = F.when(c.rlike("[\\\\\t\n\r]"), escaped).otherwise(c)
        else:
            v = c.cast("string")
        parts.append(F.coalesce(v, F.lit("\\N")))
    return df.select(F.concat(F.concat_ws("\t", *parts), F.lit("\n")).alias("line"))


@dataclass(frozen=True)
class StageTarget:
    """Rows for one table in the run's single staging pass.

    `table` None means "count only": rows the driver needs the number of (e.g. predicted merge
    conflicts) ride along in the same Spark job instead of costing an action of their own.
    """

    name: str
    df: DataFrame
    table: sql.Composable | None = None
    columns: tuple[str, ...] = ()


def _stage_partition(
    dsn: str, statements: list[str | None], clears: list[str | None], lock_class: int
):
    """The function each Spark task runs: its rows (target index, line) into the targets' COPYs.

    One connection per task, opened only when it has rows for a table; one COPY per run of equal
    targets; committed when the task's rows are all written (rolled back if the task dies).
    Idempotent per partition, so a task Spark runs twice (a retry after the commit, a stage
    recomputed, speculation) stages its rows once: the transaction takes an advisory lock on
    (run, partition), tags its rows with the partition (STAGE_PART_COLUMN's default reads the
    setting) and first deletes what an earlier attempt of the same partition committed.
    Yields (target, rows) counts. Self-contained (nothing of cryptoflow inside): the Python workers
    need not have the package installed: every piece is a closure made by the factories below
    (cloudpickle ships a closure by value, a module-level function by reference).
    """
    return _copy_task(
        statements,
        clears,
        _task_connector(dsn, lock_class),
        _arrow_lines_reader(),
        _task_closer(),
        _counts_batcher(),
    )


def _arrow_lines_reader():
    """A closure (shipped by value, see _stage_partition): column -> the bytes of its lines."""

    def _lines_bytes(column) -> memoryview | bytes:
        """The concatenated values of an Arrow string column without a Python object per row.

        An Arrow string array keeps all its values back to back in one data buffer, so the lines
        (each already ending in newline) are one slice of it.
        """
        import numpy as np
        import pyarrow as pa

        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if arr.null_count:  # copy_text never yields null; be correct rather than fast if it does
            return "".join(v for v in arr.to_pylist() if v is not None).encode()
        wide = pa.types.is_large_string(arr.type)
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64 if wide else np.int32)[
            arr.offset : arr.offset + len(arr) + 1
        ]
        data = arr.buffers()[2]
        if data is None:
            return b""
        return memoryview(data)[int(offsets[0]) : int(offsets[-1])]

    return _lines_bytes


def _task_connector(dsn: str, lock_class: int):
    """A closure (shipped by value): partition -> the task's connection, its transaction holding the
    (run, partition) advisory lock and tagging the rows it stages with the partition."""

    def connect(part: int):
        import psycopg

        # keepalives: a vanished server fails the task, never hangs it
        conn = psycopg.connect(
            dsn,
            connect_timeout=30,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (lock_class, part))
        conn.execute("SELECT set_config('cryptoflow.stage_part', %s, true)", (str(part),))
        return conn

    return connect


def _task_closer():
    """A closure (shipped by value): ends a task's open COPY as failed (its rows discarded) and
    closes its connection (an uncommitted transaction rolls back)."""

    def close(copy_cm, conn) -> None:
        if copy_cm is not None:
            try:
                copy_cm.__exit__(RuntimeError, RuntimeError("task failed"), None)
            except Exception:
                pass
        if conn is not None:
            conn.close()

    return close


def _counts_batcher():
    """A closure (shipped by value): {target: rows} -> the Arrow batch a task yields."""

    def counts_batch(counts: dict[int, int]):
        import pyarrow as pa

        keys = sorted(counts)
        return pa.RecordBatch.from_pydict(
            {"target": keys, "rows": [counts[k] for k in keys]},
            schema=pa.schema([("target", pa.int32()), ("rows", pa.int64())]),
        )

    return counts_batch


def _copy_task(
    statements: list[str | None],
    clears: list[str | None],
    connect,
    lines_bytes,
    close,
    counts_batch,
):
    """The task function of _stage_partition (a closure, shipped by value): its Arrow batches of
    (target index, line), each run of equal targets one COPY; yields the rows per target."""

    def run(batches: Iterable):
        import numpy as np
        from pyspark import TaskContext

        context = TaskContext.get()
        assert context is not None  # run() runs inside a Spark task
        part = context.partitionId()
        counts: dict[int, int] = {}
        conn = copy = copy_cm = None
        current = None
        cleared: set[int] = set()
        try:
            for batch in batches:
                if not batch.num_rows:
                    continue
                targets = batch.column(0).to_numpy(zero_copy_only=False)
                cuts = [0, *(np.flatnonzero(np.diff(targets)) + 1).tolist(), len(targets)]
                for a, b in zip(cuts, cuts[1:]):
                    t = int(targets[a])
                    counts[t] = counts.get(t, 0) + (b - a)
                    if statements[t] is None:
                        continue
                    if t != current:
                        if copy_cm is not None:
                            copy_cm.__exit__(None, None, None)
                        if conn is None:
                            conn = connect(part)
                        if t not in cleared:
                            conn.execute(clears[t], (part,))
                            cleared.add(t)
                        copy_cm = conn.cursor().copy(statements[t])
                        copy = copy_cm.__enter__()
                        current = t
                    assert copy is not None  # opened for `current`, which is t
                    copy.write(lines_bytes(batch.column(1).slice(a, b - a)))
            if copy_cm is not None:
                copy_cm.__exit__(None, None, None)
                copy_cm = None
            if conn is not None:
                conn.commit()
        finally:
            close(copy_cm, conn)
        yield counts_batch(counts)

    return run


def stage(
    targets: list[StageTarget], dsn: str, conn, run_id: str, parallelism: int | None = None
) -> dict[str, int]:
    """COPY every target's rows into its staging table in ONE Spark job; returns rows per target.

    The targets' rows are formatted as COPY text by Spark (copy_text), tagged with their target
    and unioned; each task streams its share over its own connection. `conn` only renders the
    statements; `run_id` keys the tasks' partition locks. Each task commits on its own: use this only
    for staging tables that a later transaction merges.
    """
    if not targets:
        return {}
    statements: list[str | None] = []
    clears: list[str | None] = []
    parts: list[DataFrame] = []
    for i, t in enumerate(targets):
        if t.table is None:
            statements.append(None)
            clears.append(None)
            lines = t.df.select(F.lit("").alias("line"))
        else:
            statements.append(
                sql.SQL("COPY {} ({}) FROM STDIN")
                .format(t.table, sql.SQL(", ").join(map(sql.Identifier, t.columns)))
                .as_string(conn)
            )
            clears.append(
                sql.SQL("DELETE FROM {} WHERE {} = %s")
                .format(t.table, sql.Identifier(STAGE_PART_COLUMN))
                .as_string(conn)
            )
            lines = copy_text(t.df.select(*t.columns))
        parts.append(lines.select(F.lit(i).cast("int").alias("target"), "line"))
    union = parts[0]
    for p in parts[1:]:
        union = union.unionByName(p)
    # The union's partitions are its inputs' partitions side by side; coalescing (no shuffle)
    # keeps one task per core instead of one connection per small input partition.
    spark = union.sparkSession
    union = union.coalesce(parallelism or spark.sparkContext.defaultParallelism)
    rows = (
        union.mapInArrow(
            _stage_partition(dsn, statements, clears, _partition_lock_class(run_id)),
            "target int, rows long",
        )
        .groupBy("target")
        .agg(F.sum("rows").alias("rows"))
        .collect()
    )
    got = {r["target"]: int(r["rows"]) for r in rows}
    return {t.name: got.get(i, 0) for i, t in enumerate(targets)}


STAGING_PREFIX = "etl_"
STAGE_PART_COLUMN = "_stage_part"


def staging_key(run_id: str) -> str:
    """16 hex digits naming a run's staging tables (and its advisory lock): stable across reruns."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:16]


def staging_name(run_id: str, what: str) -> str:
    """A staging table name derived from the run id, so a rerun finds (and drops) its own leftovers."""
    return f"{STAGING_PREFIX}{staging_key(run_id)}_{what}"


def _lock_id(key: str) -> int:
    """The advisory lock id of a staging key (signed 64-bit, as pg_advisory_lock takes it)."""
    v = int(key, 16)
    return v - (1 << 64) if v >= 1 << 63 else v


def _partition_lock_class(run_id: str) -> int:
    """The first key of a run's per-partition staging locks (int4, the run's staging key): runs never
    wait on each other, attempts of one partition of one run do."""
    return int(staging_key(run_id)[:7], 16)


def hold_staging_lock(conn, run_id: str) -> None:
    """Mark this run's staging tables as in use for as long as `conn` lives (session advisory lock).

    Taken before the tables are created: a table whose lock nobody holds belongs to a run that is
    no longer running (its process died and its connection with it), see drop_orphaned_staging.
    """
    conn.execute("SELECT pg_advisory_lock(%s)", (_lock_id(staging_key(run_id)),))
    conn.commit()


def release_staging_lock(conn, run_id: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_id(staging_key(run_id)),))
    conn.commit()


def drop_orphaned_staging(conn, keep_run_id: str | None = None) -> list[str]:
    """Drop the ETL staging tables of runs that are no longer running; returns the tables dropped.

    A run holds its staging lock while its tables exist; a killed run that is never rerun leaves
    its tables behind with nobody holding the lock. Each candidate's lock is tried (not waited
    for): taken means orphaned (dropped, lock released), busy means a live run (left alone).
    """
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'staging' AND tablename LIKE %s ORDER BY 1",
        (STAGING_PREFIX.replace("_", r"\_") + "%",),
    ).fetchall()
    conn.commit()
    keep = staging_key(keep_run_id) if keep_run_id else None
    by_key: dict[str, list[str]] = {}
    for (name,) in rows:
        key = name[len(STAGING_PREFIX) : len(STAGING_PREFIX) + 16]
        if _is_key(key) and key != keep:
            by_key.setdefault(key, []).append(name)
    dropped = []
    for key, names in by_key.items():
        with _orphan_lock(conn, key) as orphaned:
            if orphaned:
                for name in names:
                    conn.execute(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("staging", name))
                    )
                conn.commit()
                dropped += names
    return dropped


def _is_key(text: str) -> bool:
    return len(text) == 16 and all(ch in "0123456789abcdef" for ch in text)


@contextmanager
def _orphan_lock(conn, key: str) -> Iterator[bool]:
    """Tries (does not wait for) the staging lock of `key`: True while held here, so the run it
    belongs to is gone and its leftovers may be removed; False if a live run holds it."""
    taken = conn.execute("SELECT pg_try_advisory_lock(%s)", (_lock_id(key),)).fetchone()[0]
    conn.commit()
    try:
        yield taken
    finally:
        if taken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_id(key),))
            conn.commit()


def create_unlogged_staging(conn, name: str, like: str, columns: tuple[str, ...]) -> sql.Composable:
    """(Re)create UNLOGGED staging.<name> with `columns` of table `like` (schema.table); committed."""
    ident = sql.Identifier("staging", name)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
    schema, table = like.split(".")
    conn.execute(
        sql.SQL("CREATE UNLOGGED TABLE {} AS SELECT {} FROM {} WITH NO DATA").format(
            ident, sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(schema, table)
        )
    )
    # The Spark partition that staged each row (set by the writing task, see _stage_partition;
    # a writer that did not set it fails on NOT NULL); the merge names its columns, never this one.
    conn.execute(
        sql.SQL(
            "ALTER TABLE {} ADD COLUMN {} int NOT NULL"
            " DEFAULT current_setting('cryptoflow.stage_part', true)::int"
        ).format(ident, sql.Identifier(STAGE_PART_COLUMN))
    )
    conn.commit()
    return ident


# ---------------------------------------------------------------------------------------------
# The lake


def lake_candles_path(lake_uri: str) -> str:
    return lake_uri.rstrip("/") + "/candles_by_day"


def _lake_pending_root(lake_uri: str) -> str:
    return f"{lake_uri.rstrip('/')}/_pending"


def lake_pending_path(lake_uri: str, run_id: str) -> str:
    """A run's private directory beside the lake (named by its staging key, like its staging tables).
    Readers never look there: Spark and Parquet readers skip paths that start with '_'."""
    return f"{_lake_pending_root(lake_uri)}/{staging_key(run_id)}"


def write_lake(df: DataFrame, into: str) -> None:
    """Write the lake partitions (interval/date) that `df` has rows for into `into`, a run's private
    directory (lake_pending_path), replacing whatever an earlier attempt left there; publish_lake
    then moves them into the lake once the warehouse has committed.

    One file per (interval, day) holding every coin, sorted by symbol then time: a day of 1m
    candles is small, so a file per coin (the old symbol/interval/date layout) made a backfill
    write many small files for the same bytes, and small files are slow to write and to read. A reader of one coin still skips the others' row groups by the symbol statistics.
    The caller must hand whole partitions: every coin's rows of each (interval, day) it writes.
    """
    # The sort leads with the partition columns: the writer requires that order and would
    # otherwise add its own sort by (interval, date) alone, which does not keep symbol/time order.
    # A static overwrite: the directory is the run's own, so all of it is replaced.
    (
        df.repartition("interval", "date")
        .sortWithinPartitions("interval", "date", "symbol", "open_time")
        .write.mode("overwrite")
        .option("partitionOverwriteMode", "static")
        .partitionBy("interval", "date")
        .option("compression", "zstd")
        .parquet(f"{into}/candles_by_day")
    )


def _hadoop_fs(spark: SparkSession, uri: str):
    """(FileSystem, Path class) for `uri` through the JVM's Hadoop client: file://, hdfs://, s3a:// alike."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # set once the session's context is up
    path_cls = jvm.org.apache.hadoop.fs.Path
    return path_cls(uri).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path_cls


def publish_lake(spark: SparkSession, pending: str, lake_uri: str) -> int:
    """Move the partitions written into `pending` (write_lake) into the lake, each replacing the
    partition of the same (interval, date) whole; then remove `pending`. Returns the partitions moved.

    The same per-partition delete-then-rename that Spark's dynamic partition overwrite does when
    its job commits, done after the warehouse's commit instead, so the lake never holds a run the
    warehouse does not. An interrupted publish leaves `pending` with the partitions not yet moved
    (those already moved hold the committed run); the run's rerun writes and publishes them all again.
    """
    fs, path_cls = _hadoop_fs(spark, pending)
    src_root, dst_root = (
        path_cls(f"{pending}/candles_by_day"),
        path_cls(lake_candles_path(lake_uri)),
    )
    moved = 0
    if fs.exists(src_root):
        for iv in fs.listStatus(src_root):
            if not (iv.isDirectory() and iv.getPath().getName().startswith("interval=")):
                continue
            dst_iv = path_cls(dst_root, iv.getPath().getName())
            fs.mkdirs(dst_iv)
            for part in fs.listStatus(iv.getPath()):
                if not (part.isDirectory() and part.getPath().getName().startswith("date=")):
                    continue
                dst = path_cls(dst_iv, part.getPath().getName())
                if fs.exists(dst):
                    fs.delete(dst, True)
                if not fs.rename(part.getPath(), dst):
                    raise RuntimeError(f"could not move lake partition {part.getPath()} to {dst}")
                moved += 1
    fs.delete(path_cls(pending), True)
    return moved


def drop_orphaned_lake(
    spark: SparkSession, conn, lake_uri: str, keep_run_id: str | None = None
) -> list[str]:
    """Remove the pending lake directories of runs that are no longer running (their staging lock is
    free, as in drop_orphaned_staging): a run killed before publishing and never rerun."""
    root = _lake_pending_root(lake_uri)
    fs, path_cls = _hadoop_fs(spark, root)
    if not fs.exists(path_cls(root)):
        return []
    keep = staging_key(keep_run_id) if keep_run_id else None
    removed = []
    for st in fs.listStatus(path_cls(root)):
        key = st.getPath().getName()
        if not _is_key(key) or key == keep:
            continue
        with _orphan_lock(conn, key) as orphaned:
            if orphaned:
                fs.delete(st.getPath(), True)
                removed.append(key)
    return removed


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
    "LANDING_RAW_SCHEMA",
    "POSTGRES_JDBC_JAR",
]
