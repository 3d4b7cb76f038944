"""A run's rows for PostgreSQL COPYed into its staging tables, in ONE Spark job (`stage`).

Everything a run writes to PostgreSQL (candles, rollups, quarantine, analytics) is formatted as
COPY text by Spark in the JVM (`copy_text`), tagged with its target table, and each task streams
its share into the UNLOGGED staging tables (etl.staging) over its own connection (Arrow batches
handed to COPY as buffers: no Python object per row). The driver then merges the staging tables
in one transaction, so a task that dies leaves rows only in staging tables nobody reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from psycopg import sql
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DateType,
    DecimalType,
    StringType,
    TimestampType,
)

from cryptoflow.etl.staging import STAGE_PART_COLUMN, partition_lock_class


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
            _stage_partition(dsn, statements, clears, partition_lock_class(run_id)),
            "target int, rows long",
        )
        .groupBy("target")
        .agg(F.sum("rows").alias("rows"))
        .collect()
    )
    got = {r["target"]: int(r["rows"]) for r in rows}
    return {t.name: got.get(i, 0) for i, t in enumerate(targets)}


__all__ = ["copy_text", "StageTarget", "stage"]
