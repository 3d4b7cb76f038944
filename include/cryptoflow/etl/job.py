"""One ETL run: the snapshots of a manifest -> market.candles (+ 1h rollups, analytics) and the lake.

    read (strings) -> type -> duplicates -> RULES          frames.validate
    stored rows around the new ones (JDBC, bounded)          context: touched days; 1h: +-31 days
    predict the merge (stored source candles win)            frames.resolve_against_stored
    1h rollups of the touched hours                          frames.rollup_hours
    analytics of the hours/days whose inputs changed         analytics.*
    COPY new candles and rollups into UNLOGGED staging       io.copy_from_executors
    ONE transaction: quarantine, merge_staged x2,            readers see all of it or none of it
        analytics replaced, staging dropped, counts
    rewrite the touched lake partitions                      after the commit: a failure here is
                                                             repaired by the rerun (merge no-ops)

Cost: everything read is bounded by what the run touches (its snapshots, the touched days, a month
of hourly context), so a 10-minute run costs the same with one month or twelve of history.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field

from psycopg import sql
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cryptoflow import settings as settings_mod
from cryptoflow.etl import analytics, frames, io
from cryptoflow.etl.frames import CANDLE_FRAME, DAY_MS, HOUR_MS
from cryptoflow.warehouse import db
from cryptoflow.warehouse.load import CANDLE_COLUMNS, merge_staged

log = logging.getLogger(__name__)

PIPELINE = "spark_etl"
TASK = "load"
# Hourly context around the changed hours: the correlation window (30 days) plus a day of slack
# for the previous hour of the first return and for day boundaries.
HOURLY_CONTEXT_MS = 31 * DAY_MS


@dataclass
class RunResult:
    run_id: str
    counts: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)  # "SYMBOL/interval" -> [min_open_ms, max_open_ms]
    seconds: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, "counts": self.counts, "ranges": self.ranges, "seconds": self.seconds}


def _ts(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat()


def _stored(spark: SparkSession, dsn: str, where: str, params: tuple[int, int], slices: int = 2) -> DataFrame:
    """market.candles rows in [lo, hi) matching `where`, as a candle frame, read in `slices` partitions."""
    lo, hi = params
    step = max(1, -(-(hi - lo) // slices))
    bounds = [(lo + i * step, min(hi, lo + (i + 1) * step)) for i in range(slices) if lo + i * step < hi]
    cols = ", ".join(CANDLE_FRAME)
    query = f"SELECT {cols} FROM market.candles WHERE {where}"
    preds = [f"open_time >= '{_ts(a)}' AND open_time < '{_ts(b)}'" for a, b in bounds]
    df = io.read_query(spark, dsn, query, preds)
    return df.select(*[F.unix_millis(c).alias(c) if c in ("open_time", "close_time")
                       else F.col(c).cast("int").alias(c) if c == "minute_count"
                       else F.col(c).cast(frames.DEC).alias(c) if c in frames.VALUE_COLUMNS and c not in (
                           "close_time", "trades", "minute_count", "is_complete")
                       else F.col(c) for c in CANDLE_FRAME])


def _fault(point: str) -> None:
    """Kill this process at `point` when CRYPTOFLOW_ETL_KILL_AT names it (the kill-safety test)."""
    if os.environ.get("CRYPTOFLOW_ETL_KILL_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def run(spark: SparkSession, uris: list[str], run_id: str, *, dsn: str | None = None, lake_uri: str | None = None,
        symbols=None) -> RunResult:
    cfg = settings_mod.load()
    dsn = dsn or cfg.warehouse_dsn
    lake_uri = lake_uri or cfg.lake_uri
    symbols = tuple(symbols or cfg.symbols)
    result = RunResult(run_id)
    t0 = time.perf_counter()
    marks = result.seconds

    def mark(name):
        marks[name] = round(time.perf_counter() - t0, 2)

    # ---- read, type, validate
    raw = io.read_landing(spark, uris)
    verdicts = frames.validate(frames.typed_landing(raw), symbols)
    verdicts = verdicts.withColumn("source", F.coalesce(F.col("source"), F.lit("landing"))).cache()
    by = verdicts.groupBy("status", "reason").count().collect()
    counts = result.counts
    counts["snapshots"] = len(uris)
    counts["rows_in"] = sum(r["count"] for r in by)
    counts["kept"] = sum(r["count"] for r in by if r["status"] == "kept")
    counts["collapsed_duplicates"] = sum(r["count"] for r in by if r["status"] == "collapsed")
    counts["quarantined"] = sum(r["count"] for r in by if r["status"] == "rejected")
    counts["quarantined_by_reason"] = {r["reason"]: r["count"] for r in by if r["status"] == "rejected"}
    mark("validated")

    new = frames.source_candles(verdicts).cache()
    spans = new.groupBy("symbol", "interval").agg(F.min("open_time").alias("lo"), F.max("open_time").alias("hi")).collect()
    result.ranges = {f"{r['symbol']}/{r['interval']}": [r["lo"], r["hi"]] for r in spans}
    intervals = sorted({r["interval"] for r in spans})

    # ---- stored context, bounded by what the run touches
    parts = frames.with_partition(new).select("symbol", "interval", "date").distinct().cache()
    stored_parts = []
    for interval in intervals:
        if interval == "1h":
            continue
        lo = min(r["lo"] for r in spans if r["interval"] == interval)
        hi = max(r["hi"] for r in spans if r["interval"] == interval)
        lo, hi = lo - lo % DAY_MS, hi - hi % DAY_MS + DAY_MS
        s = _stored(spark, dsn, f"interval = '{interval}'", (lo, hi))
        # Only the (symbol, day) partitions the run touches: the lake rewrites exactly those.
        stored_parts.append(frames.with_partition(s).join(parts, ["symbol", "interval", "date"], "left_semi")
                            .drop("date"))
    hour_spans = [(r["lo"] - r["lo"] % HOUR_MS, r["hi"] - r["hi"] % HOUR_MS) for r in spans
                  if r["interval"] in ("1m", "1h")]
    if hour_spans:
        h_lo = min(a for a, _ in hour_spans)
        h_hi = max(b for _, b in hour_spans)
        stored_parts.append(_stored(spark, dsn, "interval = '1h'",
                                    (h_lo - h_lo % DAY_MS - HOURLY_CONTEXT_MS, h_hi - h_hi % DAY_MS + HOURLY_CONTEXT_MS)))
    stored = stored_parts[0] if stored_parts else new.limit(0)
    for s in stored_parts[1:]:
        stored = stored.unionByName(s)
    stored = stored.cache()
    mark("context_read")

    # ---- what the warehouse will hold, the rollups of the touched hours
    effective, conflicts = frames.resolve_against_stored(new, stored, derived=False)
    effective = effective.cache()
    predicted_conflicts = conflicts.count()
    touched_hours = (new.where(F.col("interval") == "1m")
                     .select("symbol", (F.col("open_time") - F.col("open_time") % HOUR_MS).alias("_hour")).distinct())
    minutes = (effective.where(F.col("interval") == "1m")
               .withColumn("_hour", F.col("open_time") - F.col("open_time") % HOUR_MS)
               .join(touched_hours, ["symbol", "_hour"], "left_semi").drop("_hour"))
    binance_hours = effective.where((F.col("interval") == "1h") & F.col("minute_count").isNull()) \
        .select("symbol", "open_time")
    # An hour Binance itself delivered (e.g. imported history) is authoritative: never replaced by a rollup.
    rollups = frames.rollup_hours(minutes).join(binance_hours, ["symbol", "open_time"], "left_anti").cache()
    hourly, _ = frames.resolve_against_stored(rollups, effective.where(F.col("interval") == "1h"), derived=True)
    hourly = hourly.cache()
    # One pass over the rollups for their counts and, with the new 1h candles, the changed hours.
    agg = rollups.agg(F.count(F.lit(1)).alias("n"), F.sum(F.when(~F.col("is_complete"), 1).otherwise(0)).alias("inc"),
                      F.min("open_time").alias("lo"), F.max("open_time").alias("hi")).collect()[0]
    counts["rollup_hours"] = agg["n"]
    counts["rollup_incomplete_hours"] = int(agg["inc"] or 0)
    mark("rolled_up")

    # ---- analytics of what changed
    changed_1h = new.where(F.col("interval") == "1h").select("symbol", "open_time").unionByName(
        rollups.select("symbol", "open_time"))
    lows = [v for v in [agg["lo"]] + [r["lo"] for r in spans if r["interval"] == "1h"] if v is not None]
    highs = [v for v in [agg["hi"]] + [r["hi"] for r in spans if r["interval"] == "1h"] if v is not None]
    ch = {"lo": min(lows) if lows else None, "hi": max(highs) if highs else None}
    metrics = corr = None
    if ch["lo"] is not None:
        m_all = analytics.hourly_metrics(hourly).cache()
        m_lo, m_hi = ch["lo"], ch["hi"] + analytics.METRIC_REACH_MS
        metrics = m_all.where((F.col("open_time") >= m_lo) & (F.col("open_time") <= m_hi))
        d_lo, d_hi = ch["lo"] - ch["lo"] % DAY_MS, ch["hi"] - ch["hi"] % DAY_MS + analytics.CORRELATION_REACH_MS
        corr = analytics.return_correlation(m_all).where(
            (F.col("day") >= F.to_date(F.timestamp_millis(F.lit(d_lo))))
            & (F.col("day") <= F.to_date(F.timestamp_millis(F.lit(d_hi)))))
    # Lake partitions and volume profiles: the touched (symbol, interval, day)s, whole.
    changed_parts = (parts.unionByName(frames.with_partition(changed_1h.withColumn("interval", F.lit("1h")))
                                       .select("symbol", "interval", "date")).distinct().cache())
    lake_rows = (frames.with_partition(effective.where(F.col("interval") != "1h").unionByName(hourly))
                 .join(changed_parts, ["symbol", "interval", "date"], "left_semi").drop("date").cache())
    profile = analytics.volume_profile(lake_rows)
    part_keys = changed_parts.collect()
    counts["lake_partitions"] = len(part_keys)
    mark("analytics_planned")

    # ---- stage: COPY from the executors into UNLOGGED tables nobody reads
    stg_src = io.staging_name(run_id, "src")
    stg_der = io.staging_name(run_id, "der")
    with db.connect(dsn) as conn:
        for t in (stg_src, stg_der):
            # A killed earlier attempt of this run may have left its staging table: start clean.
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("staging", t)))
            conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} (LIKE market.candles INCLUDING DEFAULTS)")
                         .format(sql.Identifier("staging", t)))
        conn.commit()
        cols = list(CANDLE_COLUMNS)
        counts["staged"] = io.copy_from_executors(frames.to_warehouse(new, cols), dsn,
                                                  sql.Identifier("staging", stg_src), cols, conn)
        counts["staged_rollups"] = io.copy_from_executors(frames.to_warehouse(rollups, cols), dsn,
                                                          sql.Identifier("staging", stg_der), cols, conn)
        mark("staged")
        _fault("staged")

        # ---- one transaction: a reader sees the run's candles, quarantine and analytics, or none
        with db.pipeline_run(conn, PIPELINE, run_id, TASK) as stats:
            with conn.transaction():
                q = verdicts.where(F.col("status") == "rejected").select(
                    "source", "reason", "detail", "raw_record", "symbol", "interval",
                    F.timestamp_millis("open_time").alias("open_time"), F.lit(run_id).alias("run_id"))
                io.copy_from_driver(conn, q, sql.Identifier("ops", "quarantine"),
                                    ["source", "reason", "detail", "raw_record", "symbol", "interval",
                                     "open_time", "run_id"])
                src = merge_staged(conn, sql.Identifier("staging", stg_src), derived=False, run_id=run_id)
                _fault("merged")
                if src.conflicts != predicted_conflicts:
                    raise RuntimeError(
                        f"merge found {src.conflicts} late updates, the run predicted {predicted_conflicts}: "
                        "market.candles changed during the run; rerun it")
                der = merge_staged(conn, sql.Identifier("staging", stg_der), derived=True, run_id=run_id)
                counts["merge"] = src.as_dict()
                counts["merge_rollups"] = der.as_dict()
                counts["analytics"] = _replace_analytics(conn, metrics, corr, profile, part_keys, ch)
                for t in (stg_src, stg_der):
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier("staging", t)))
                mark("merged")
                stats.update(rows_in=counts["rows_in"], rows_out=src.inserted + src.updated + der.inserted + der.updated,
                             rows_quarantined=counts["quarantined"] + src.conflicts)
                stats["details"].update(counts=counts, ranges=result.ranges, snapshots=uris[:50])

    # ---- the lake, after the commit (a failure here: the rerun's merge is a no-op, the lake is redone)
    if part_keys:
        io.write_lake(frames.to_lake(lake_rows), lake_uri)
    mark("lake_written")
    with db.connect(dsn) as conn:
        conn.execute("UPDATE ops.pipeline_runs SET details = details || jsonb_build_object('seconds', %s::jsonb)"
                     " WHERE pipeline = %s AND task = %s AND run_id = %s",
                     (json.dumps(marks), PIPELINE, TASK, run_id))
    for df in (verdicts, new, parts, stored, effective, rollups, hourly, changed_parts, lake_rows):
        df.unpersist()
    log.info("spark_etl %s: %s", run_id, counts)
    return result


def _replace_analytics(conn, metrics, corr, profile, keys, ch) -> dict:
    """Delete the analytics rows this run recomputes, then COPY the new ones (caller's transaction)."""
    out = {}
    if metrics is not None:
        lo = ch["lo"]
        hi = ch["hi"] + analytics.METRIC_REACH_MS
        conn.execute("DELETE FROM market.hourly_metrics WHERE open_time >= %s AND open_time <= %s",
                     (_ts(lo), _ts(hi)))
        out["hourly_metrics"] = io.copy_from_driver(
            conn, metrics.withColumn("open_time", F.timestamp_millis("open_time")),
            sql.Identifier("market", "hourly_metrics"), list(analytics.METRICS_COLUMNS))
        d_lo = lo - lo % DAY_MS
        d_hi = ch["hi"] - ch["hi"] % DAY_MS + analytics.CORRELATION_REACH_MS
        conn.execute("DELETE FROM market.return_correlation WHERE day >= %s::timestamptz::date"
                     " AND day <= %s::timestamptz::date AND window_days = %s",
                     (_ts(d_lo), _ts(d_hi), analytics.CORRELATION_DAYS))
        out["return_correlation"] = io.copy_from_driver(
            conn, corr, sql.Identifier("market", "return_correlation"), list(analytics.CORRELATION_COLUMNS))
    if keys:
        conn.execute(
            "DELETE FROM market.volume_profile v USING unnest(%s::text[], %s::text[], %s::date[]) k(s, i, d)"
            " WHERE v.symbol = k.s AND v.interval = k.i AND v.day = k.d",
            ([k["symbol"] for k in keys], [k["interval"] for k in keys], [k["date"] for k in keys]))
        out["volume_profile"] = io.copy_from_driver(
            conn, profile, sql.Identifier("market", "volume_profile"), list(analytics.PROFILE_COLUMNS))
    return out


__all__ = ["run", "RunResult", "PIPELINE", "TASK"]
