"""The Parquet lake: a run's touched partitions written aside into its own directory while the
warehouse transaction runs, published (moved in) after the commit, so the lake never holds what
the warehouse does not; the pending directories of dead runs removed.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from cryptoflow.etl.staging import is_staging_key, orphan_lock, staging_key


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
        if not is_staging_key(key) or key == keep:
            continue
        with orphan_lock(conn, key) as orphaned:
            if orphaned:
                fs.delete(st.getPath(), True)
                removed.append(key)
    return removed


__all__ = [
    "lake_candles_path",
    "lake_pending_path",
    "write_lake",
    "publish_lake",
    "drop_orphaned_lake",
]
