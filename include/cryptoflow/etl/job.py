"""One ETL run: the snapshots of a manifest -> market.candles (+ 1h rollups, analytics) and the lake.

Five Spark actions per run, whatever its size (two more when a key occurs twice):

    1. read -> type -> RULES, materialised with the lineage      frames.validate
       cut (local checkpoint); ONE aggregation over it gives      (symbol, interval, day) groups,
       the counts, ranges and touched partitions the rest of      run_plan.plan_run
       the run is planned from; the keys that occur twice, counted on it
       (frames.duplicate_keys): only if there are any are the rows judged again with the
       sort that resolves copies
    2. stored rows the run needs (JDBC, bounded: the touched      stored.read_stored; cached,
       days of each interval, +-31 days of 1h for the analytics;  so nothing is re-read after
       skipped, with its join, for an interval an index probe     the commit
       finds nothing stored for: a backfill into an empty range)
       -> predicted merge (frames.resolve_against_stored)
       -> 1h rollups of the touched hours, analytics of the hours/days whose inputs changed
       -> everything for PostgreSQL COPYed into UNLOGGED staging tables in ONE job (io.stage)
    3. the touched lake partitions, one per (interval, day) with every coin in it, written whole
       into the run's own directory beside the lake, on a second thread WHILE
    -- ONE transaction: quarantine, merge_staged x2 (checked against the prediction), analytics
       replaced, staging dropped, counts: readers see all of the run or none of it (commit)
    -- then the lake partitions published (moved in) AFTER the commit, so the lake never holds
       what the warehouse does not (a failure here is repaired by the rerun, whose merge is a no-op)

Cost: everything read is bounded by what the run touches (its snapshots, the touched days, a month
of hourly context either side for the 30-day correlation), so a 10-minute run costs the same with
one month or twelve of history.

Staging tables are named after the run id (a rerun drops its own leftovers) and guarded by an
advisory lock held on the driver's connection; every run starts by dropping the staging tables of
runs that are no longer running (io.drop_orphaned_staging).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from psycopg import sql
from pyspark import InheritableThread
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cryptoflow import quarantine
from cryptoflow import settings as settings_mod
from cryptoflow.etl import analytics, commit, frames, io, stored
from cryptoflow.etl.commit import STAGING
from cryptoflow.etl.frames import DAY_MS, HOUR_MS
from cryptoflow.etl.run_plan import plan_run
from cryptoflow.warehouse import db
from cryptoflow.warehouse.load import CANDLE_COLUMNS, insert_staged_fresh, merge_staged

log = logging.getLogger(__name__)

PIPELINE = "spark_etl"
TASK = "load"


@dataclass
class RunResult:
    run_id: str
    counts: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)  # "SYMBOL/interval" -> [min_open_ms, max_open_ms]
    seconds: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "counts": self.counts,
            "ranges": self.ranges,
            "seconds": self.seconds,
        }


def run(
    spark: SparkSession,
    uris: list[str],
    run_id: str,
    *,
    dsn: str | None = None,
    lake_uri: str | None = None,
    symbols=None,
) -> RunResult:
    """The run, step by step (the module doc's picture); `seconds` times them under these names."""
    cfg = settings_mod.load()
    with _Run(
        spark,
        uris,
        run_id,
        dsn or cfg.warehouse_dsn,
        lake_uri or cfg.lake_uri,
        tuple(symbols or cfg.symbols),
    ) as r:
        r.claim_staging()
        r.validate()  # action 1
        r.read_stored()
        r.predict_warehouse()
        r.derive_analytics()
        r.select_lake_partitions()
        r.stage()  # action 2
        r.write_lake_aside()  # action 3, on a second thread while...
        r.commit()  # ...the one transaction runs
        r.publish_lake()  # after the commit
        r.record_timings()
    log.info("spark_etl %s: %s", run_id, r.result.counts)
    return r.result


class _Run:
    """One run's state, carried from step to step. Opened, it holds the driver's connection (and
    with it the staging lock) and the frames it cached; closed, it lets go of both."""

    def __init__(
        self,
        spark: SparkSession,
        uris: list[str],
        run_id: str,
        dsn: str,
        lake_uri: str,
        symbols: tuple[str, ...],
    ):
        self.spark, self.uris, self.run_id, self.dsn, self.lake_uri, self.symbols = (
            spark,
            uris,
            run_id,
            dsn,
            lake_uri,
            symbols,
        )
        self.result = RunResult(run_id)
        self.counts = self.result.counts
        self.targets: list[io.StageTarget] = []
        self.lake_rows: DataFrame | None = None
        # analytics replaced: m_lo, m_hi, d_lo, d_hi
        self.windows: tuple[int | None, int | None, int | None, int | None] = (
            None,
            None,
            None,
            None,
        )
        self._cached: list[DataFrame] = []
        self._lake_thread: InheritableThread | None = None
        self._lake_error: BaseException | None = None
        self._t0 = time.perf_counter()
        self._started_at = datetime.now(timezone.utc)
        self._job_group = f"cryptoflow-etl-{io.staging_key(run_id)}-{time.time_ns()}"

    def __enter__(self) -> _Run:
        self.spark.sparkContext.setJobGroup(self._job_group, f"spark_etl {self.run_id}")
        self.conn = db.connect(
            self.dsn
        )  # the driver's connection: holds the run's staging lock until the end
        return self

    def __exit__(self, *exc) -> None:
        if (
            self._lake_thread is not None
        ):  # the commit failed: let the lake write end (its directory
            self._lake_thread.join()  # is the run's own; the rerun or the next run removes it)
        self.conn.close()
        for df in self._cached:
            df.unpersist()
        # None clears the group (Spark's setLocalProperty with null); pyspark's annotation says str only
        self.spark.sparkContext.setJobGroup(None, None)  # type: ignore[arg-type]

    def _cache(self, df: DataFrame) -> DataFrame:
        self._cached.append(df.cache())
        return df

    def _mark(self, name: str) -> None:
        self.result.seconds[name] = round(time.perf_counter() - self._t0, 2)

    def claim_staging(self) -> None:
        """Take the run's staging lock; drop the staging tables of runs no longer running."""
        io.hold_staging_lock(self.conn, self.run_id)
        orphans = io.drop_orphaned_staging(self.conn, keep_run_id=self.run_id)
        if orphans:
            log.warning("dropped staging tables of runs no longer running: %s", orphans)
        self.counts["orphaned_staging_dropped"] = len(orphans)
        pending = io.drop_orphaned_lake(
            self.spark, self.conn, self.lake_uri, keep_run_id=self.run_id
        )
        if pending:
            log.warning(
                "removed unpublished lake directories of runs no longer running: %s", pending
            )
        self.counts["orphaned_lake_dropped"] = len(pending)

    def validate(self) -> None:
        """Action 1: read, type, judge every row (materialised); plan the run from one aggregation."""
        typed = frames.typed_landing(io.read_landing(self.spark, self.uris)).drop("_corrupt_record")
        self._judge(typed, duplicates=False)
        # Judged first as if no key occurred twice, which skips the whole-row sort that resolves
        # copies: a backfill's snapshots rarely repeat a key. The keys are then counted on the
        # materialised verdicts (a narrow aggregation, no second read of the files); only if one
        # repeats are the rows judged again with the sort.
        self.counts["duplicate_keys_found"] = has_dups = not frames.duplicate_keys(
            self.verdicts
        ).isEmpty()
        if has_dups:
            self._judge(typed, duplicates=True)
        self.counts.update(self.plan.counts)
        self.result.ranges = self.plan.ranges
        self.new = frames.source_candles(self.verdicts)
        self._mark("validated")

    def _judge(self, typed: DataFrame, *, duplicates: bool) -> None:
        verdicts = frames.validate(typed, self.symbols, duplicates=duplicates)
        # The raw line is only kept for the quarantine: no need to hold it for every valid row.
        verdicts = verdicts.withColumn(
            "source", F.coalesce(F.col("source"), F.lit("landing"))
        ).withColumn("raw_record", F.when(F.col("status") == "rejected", F.col("raw_record")))
        # Materialised with its lineage cut, not cache()d: every later plan (staging, rollups,
        # quarantine, lake) starts from a scan of these blocks instead of carrying, and analysing
        # again, the validation's CASE trees: faster for a 10-minute run and a bulk load alike. The
        # price: on a cluster, a block lost with its executor is not recomputed; the run fails and Airflow's
        # retry reruns it (a run is idempotent). Its blocks are freed when the DataFrame is
        # garbage-collected (Spark's ContextCleaner), not by __exit__ as the cached frames are.
        self.verdicts = verdicts.localCheckpoint(eager=True)
        self.plan = plan_run(self.verdicts, len(self.uris))

    def read_stored(self) -> None:
        """The stored rows the run needs, bounded by what it touches (read once, cached later).

        An interval with nothing stored where the run reads (a backfill into an empty range, the
        usual bulk load) needs no read and no join: its new rows are exactly what the merge
        inserts. One index probe per range decides; a row stored meanwhile by another writer
        makes the merge's counts differ from the prediction, and the run fails (see commit).
        """
        self.reads: list[DataFrame] = []
        self.nothing_stored: set[str] = set()
        for interval, ranges in stored.wanted_ranges(self.plan):
            if stored.any_stored(self.conn, interval, ranges):
                self.reads.append(stored.read_stored(self.spark, self.dsn, interval, ranges))
            else:
                self.nothing_stored.add(interval)
        self.counts["intervals_with_nothing_stored"] = sorted(self.nothing_stored)

    def predict_warehouse(self) -> None:
        """What the warehouse will hold: the merge predicted, the 1h rollups of the touched hours."""
        new, nothing_stored = self.new, self.nothing_stored
        fresh = F.col("interval").isin(sorted(nothing_stored)) if nothing_stored else F.lit(False)
        resolved = new.where(fresh).withColumn("refused_new", F.lit(False))
        if self.reads:
            stored = self.reads[0]
            for r in self.reads[1:]:
                stored = stored.unionByName(r)
            resolved = frames.resolve_against_stored(
                new.where(~fresh), stored, derived=False
            ).unionByName(resolved)
            # The join is worth keeping; without stored rows `resolved` is a projection of the
            # cached verdicts, and caching 1M decimal rows again costs more than reading them.
            resolved = self._cache(resolved)
        self.effective = resolved.drop("refused_new")
        minutes = self.effective.where(F.col("interval") == "1m")
        if "1m" not in nothing_stored:
            # Stored minutes of the touched days: only the touched hours' are rolled up again.
            touched_hours = (
                new.where(F.col("interval") == "1m")
                .select(
                    "symbol", (F.col("open_time") - F.col("open_time") % HOUR_MS).alias("_hour")
                )
                .distinct()
            )
            minutes = (
                minutes.withColumn("_hour", F.col("open_time") - F.col("open_time") % HOUR_MS)
                .join(touched_hours, ["symbol", "_hour"], "left_semi")
                .drop("_hour")
            )
        rollups = self._cache(frames.rollup_hours(minutes))
        hourly_resolved = self._cache(
            frames.resolve_against_stored(
                rollups, self.effective.where(F.col("interval") == "1h"), derived=True
            )
        )
        self.hourly = hourly_resolved.drop("refused_new")
        self.targets += [
            io.StageTarget("src", frames.to_warehouse(new, CANDLE_COLUMNS)),
            io.StageTarget("der", frames.to_warehouse(rollups, CANDLE_COLUMNS)),
            io.StageTarget(
                "qua",
                self.verdicts.where(F.col("status") == "rejected").select(
                    *quarantine.COLUMNS[:6],
                    F.timestamp_millis("open_time").alias("open_time"),
                    F.lit(self.run_id).alias("run_id"),
                ),
            ),
            io.StageTarget("predicted_conflicts", resolved.where("refused_new")),
            io.StageTarget("predicted_kept_source", hourly_resolved.where("refused_new")),
        ]

    def derive_analytics(self) -> None:
        """Analytics of what changed, plus the lookback they need (inside the hourly context)."""
        plan = self.plan
        if plan.changed_lo is None or plan.changed_hi is None:  # both set or neither
            return
        m_all = analytics.hourly_metrics(self.hourly)
        m_lo, m_hi = plan.changed_lo, plan.changed_hi + analytics.METRIC_REACH_MS
        metrics = m_all.where((F.col("open_time") >= m_lo) & (F.col("open_time") <= m_hi))
        d_lo = plan.changed_lo - plan.changed_lo % DAY_MS
        d_hi = plan.changed_hi - plan.changed_hi % DAY_MS + analytics.CORRELATION_REACH_MS
        corr = analytics.return_correlation(m_all).where(
            (F.col("day") >= F.to_date(F.timestamp_millis(F.lit(d_lo))))
            & (F.col("day") <= F.to_date(F.timestamp_millis(F.lit(d_hi))))
        )
        self.targets += [
            io.StageTarget("hm", metrics.withColumn("open_time", F.timestamp_millis("open_time"))),
            io.StageTarget("rc", corr),
        ]
        self.windows = (m_lo, m_hi, d_lo, d_hi)

    def select_lake_partitions(self) -> None:
        """The touched lake partitions (interval, day), whole, every coin (the stored reads cover whole
        days of every coin); volume profiles of the touched (symbol, interval, day)s only."""
        plan = self.plan
        self.counts["lake_partitions"] = len(plan.lake_parts)
        if plan.lake_parts:
            # Not cached: its inputs are (verdicts or the resolved join, the hourly resolution), and
            # a projection of a cache read twice is cheaper than a second cache of a million rows.
            with_date = frames.with_partition(
                self.effective.where(F.col("interval") != "1h").unionByName(self.hourly)
            )

            def within(parts: set, schema: str) -> DataFrame:
                keys = [c.split()[0] for c in schema.split(", ")]
                return with_date.join(
                    F.broadcast(self.spark.createDataFrame(sorted(parts), schema)),
                    keys,
                    "left_semi",
                ).drop("date")

            self.lake_rows = within(plan.lake_parts, "interval string, date date")
            self.targets.append(
                io.StageTarget(
                    "vp",
                    analytics.volume_profile(
                        within(plan.profile_parts, "symbol string, interval string, date date")
                    ),
                )
            )
        self._mark("planned")

    def stage(self) -> None:
        """Action 2: everything for PostgreSQL COPYed into UNLOGGED staging tables nobody reads."""
        self.names = {
            t.name: io.staging_name(self.run_id, t.name) for t in self.targets if t.name in STAGING
        }
        for name, table in self.names.items():
            io.create_unlogged_staging(self.conn, table, *STAGING[name])
        targets = [
            io.StageTarget(t.name, t.df, self._staging(t.name), STAGING[t.name][1])
            if t.name in self.names
            else t
            for t in self.targets
        ]
        self.staged = io.stage(targets, self.dsn, self.conn, self.run_id)
        self.counts["staged"] = self.staged["src"]
        self.counts["staged_rollups"] = self.staged["der"]
        self.counts["rollup_hours"] = self.staged["der"]
        self._mark("staged")

    def _staging(self, name: str) -> sql.Identifier:
        return sql.Identifier("staging", self.names[name])

    def commit(self) -> None:
        """One transaction: a reader sees the run's candles, quarantine and analytics, or none of them.

        The merge is checked against the prediction the staged analytics were computed from: a
        difference means market.candles changed during the run, which then fails (rerun it).
        """
        conn, counts, staged, stg = self.conn, self.counts, self.staged, self._staging
        # The record spans the whole job (from the driver's start of the run), not only this commit.
        with db.pipeline_run(
            conn, PIPELINE, self.run_id, TASK, started_at=self._started_at
        ) as stats:
            with conn.transaction():
                commit.insert_staged(conn, "qua", "ops.quarantine", stg("qua"))
                counts["rollup_incomplete_hours"] = commit.incomplete_hours(conn, stg("der"))
                src = self._merge(stg("src"), {iv for _, iv, _ in self.plan.parts}, derived=False)
                der = self._merge(stg("der"), {"1h"}, derived=True)
                commit.check_prediction(src, der, staged)
                counts["merge"] = src.as_dict()
                counts["merge_rollups"] = der.as_dict()
                counts["analytics"] = commit.replace_analytics(
                    conn, stg, self.names, staged, *self.windows, self.plan.profile_parts
                )
                for name in self.names:
                    conn.execute(sql.SQL("DROP TABLE {}").format(stg(name)))
                self._mark("merged")
                stats.update(
                    rows_in=counts["rows_in"],
                    rows_out=src.inserted + src.updated + der.inserted + der.updated,
                    rows_quarantined=counts["quarantined"] + src.conflicts,
                )
                stats["details"].update(
                    counts=counts, ranges=self.result.ranges, snapshots=self.uris[:50]
                )

    def _merge(self, staging: sql.Composable, intervals: set[str], *, derived: bool):
        """merge_staged, or a plain insert where read_stored's probe proved every interval of the
        table empty in the range the run touches (then no policy of the merge can apply)."""
        if intervals <= self.nothing_stored:
            return insert_staged_fresh(self.conn, staging)
        return merge_staged(self.conn, staging, derived=derived, run_id=self.run_id)

    def write_lake_aside(self) -> None:
        """Action 3, on a second thread: the touched lake partitions into the run's own directory,
        while the driver's connection commits (PostgreSQL's merge works one core, the lake's
        shuffle and Parquet encoding the other). Readers see nothing of it until publish_lake."""
        if self.lake_rows is None:
            return
        lake = frames.to_lake(self.lake_rows)

        def write() -> None:
            try:
                io.write_lake(lake, io.lake_pending_path(self.lake_uri, self.run_id))
                self._mark(
                    "lake_written_aside"
                )  # beside "merged": which of the two the run waited for
            except BaseException as e:  # re-raised on the driver's thread by publish_lake
                self._lake_error = e

        # InheritableThread: the job runs in the run's job group (counted in spark_jobs).
        self._lake_thread = InheritableThread(target=write, name=f"lake-{self.run_id}", daemon=True)
        self._lake_thread.start()

    def publish_lake(self) -> None:
        """After the commit: the written partitions moved into the lake, each replacing its old self."""
        if self._lake_thread is not None:
            self._lake_thread.join()
            self._lake_thread = None
            if self._lake_error is not None:
                raise RuntimeError(
                    "the lake write failed after the warehouse committed; rerun the run"
                    " (its merge is then a no-op and the lake is written again)"
                ) from self._lake_error
            self.counts["lake_partitions_published"] = io.publish_lake(
                self.spark, io.lake_pending_path(self.lake_uri, self.run_id), self.lake_uri
            )
        self._mark("lake_written")

    def record_timings(self) -> None:
        """The steps' times, the number of Spark jobs and of lake partitions published (both after the
        commit wrote the record's counts), on the run's record; the staging lock released."""
        sc = self.spark.sparkContext
        self.counts["spark_jobs"] = len(sc.statusTracker().getJobIdsForGroup(self._job_group))
        # finished_at moves to the end of the lake write: the run's time on the dashboards is the job's.
        self.conn.execute(
            "UPDATE ops.pipeline_runs SET finished_at = now(), details = details || jsonb_build_object("
            "'seconds', %s::jsonb, 'spark_jobs', %s::int, 'lake_partitions_published', %s::int)"
            " WHERE pipeline = %s AND task = %s AND run_id = %s",
            (
                json.dumps(self.result.seconds),
                self.counts["spark_jobs"],
                self.counts.get("lake_partitions_published", 0),
                PIPELINE,
                TASK,
                self.run_id,
            ),
        )
        self.conn.commit()
        io.release_staging_lock(self.conn, self.run_id)


__all__ = ["run", "RunResult", "PIPELINE", "TASK"]
