"""The stored market.candles rows an ETL run needs, bounded by what it touches.

The touched days of each interval the run brings, every coin (a lake partition is one (interval,
day) with all coins in it, rewritten whole), and a month of 1h context either side of the hours
that may change (the analytics' lookback). An index probe per interval first tells whether
anything is stored there at all: a backfill into an empty range needs no read and no join.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cryptoflow.candles import DECIMAL_FIELDS
from cryptoflow.etl import frames, io
from cryptoflow.etl.frames import CANDLE_FRAME, DAY_MS
from cryptoflow.etl.run_plan import RunPlan
from cryptoflow.times import datetime_from_ms, merge_ranges, utc_ms

# Hourly context around the changed hours: the correlation window (30 days) plus a day of slack
# for the previous hour of the first return and for day boundaries.
HOURLY_CONTEXT_MS = 31 * DAY_MS


def ts(ms: int) -> str:
    """An ms time as the ISO text a timestamptz parameter (or literal) takes."""
    return datetime_from_ms(ms).isoformat()


def _day_ms(d: date) -> int:
    return utc_ms(d.year, d.month, d.day)


def wanted_ranges(plan: RunPlan) -> list[tuple[str, list[tuple[int, int]]]]:
    """(interval, [lo, hi) open time ranges) of the stored rows the run needs: the touched days of
    each interval but 1h, and the hourly context of the 1h candles that may change."""
    wanted = []
    for interval in sorted({iv for _, iv, _ in plan.parts} - {"1h"}):
        days = sorted({d for _, iv, d in plan.parts if iv == interval})
        wanted.append((interval, merge_ranges([(_day_ms(d), _day_ms(d) + DAY_MS) for d in days])))
    if plan.changed_lo is not None and plan.changed_hi is not None:  # both set or neither
        lo = plan.changed_lo - plan.changed_lo % DAY_MS
        hi = plan.changed_hi - plan.changed_hi % DAY_MS + DAY_MS
        wanted.append(("1h", [(lo - HOURLY_CONTEXT_MS, hi + HOURLY_CONTEXT_MS)]))
    return wanted


def read_stored(
    spark: SparkSession, dsn: str, interval: str, ranges: list[tuple[int, int]]
) -> DataFrame:
    """market.candles rows of `interval` with open_time in any of `ranges`, every coin, as a candle frame.

    Every coin, not only the ones the run brought: a lake partition is one (interval, day) holding
    all coins, and it is rewritten whole. One JDBC partition (connection) per range; a range longer
    than two days is split in two so a big backfill's context is read by both cores.
    """
    cols = ", ".join(CANDLE_FRAME)
    where = f"interval = '{interval}'"
    preds = []
    for lo, hi in ranges:
        slices = 1 if hi - lo <= 2 * DAY_MS else 2
        step = -(-(hi - lo) // slices)
        preds += [
            f"open_time >= '{ts(lo + i * step)}' AND open_time < '{ts(min(hi, lo + (i + 1) * step))}'"
            for i in range(slices)
        ]
    df = io.read_query(spark, dsn, f"SELECT {cols} FROM market.candles WHERE {where}", preds)
    return df.select(
        *[
            F.unix_millis(c).alias(c)
            if c in ("open_time", "close_time")
            else F.col(c).cast("int").alias(c)
            if c == "minute_count"
            else F.col(c).cast(frames.DEC).alias(c)
            if c in DECIMAL_FIELDS
            else F.col(c)
            for c in CANDLE_FRAME
        ]
    )


def any_stored(conn, interval: str, ranges: list[tuple[int, int]]) -> bool:
    """Whether market.candles holds any `interval` row (of any coin) in `ranges`: index probes only."""
    query = (
        "SELECT EXISTS (SELECT 1 FROM market.candles WHERE interval = %s AND open_time >= %s"
        " AND open_time < %s)"
    )
    for lo, hi in ranges:
        found = conn.execute(query, (interval, ts(lo), ts(hi))).fetchone()[0]
        conn.commit()
        if found:
            return True
    return False


__all__ = ["HOURLY_CONTEXT_MS", "ts", "wanted_ranges", "read_stored", "any_stored"]
