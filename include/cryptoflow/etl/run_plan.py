"""What one ETL run touches, planned from ONE aggregation over its validated rows.

The counts, each coin and interval's range, the (symbol, interval, day)s kept and the 1h candles
that may change: what bounds everything the run does next (the stored rows it reads, the rollups,
the analytics, the lake partitions it rewrites).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cryptoflow.etl import frames
from cryptoflow.etl.frames import HOUR_MS


@dataclass
class RunPlan:
    """What the run touches, from the one aggregation over its validated rows (no more actions)."""

    counts: dict
    ranges: dict  # "SYMBOL/interval" -> [lo, hi] of the kept rows
    parts: set  # (symbol, interval, date) of the kept rows
    changed_lo: int | None  # first and last 1h open time whose candle may change (ms)
    changed_hi: int | None

    @property
    def profile_parts(self) -> set:
        """The touched (symbol, interval, day)s plus the 1h ones the 1m rollups rewrite: volume profiles."""
        return self.parts | {(s, "1h", d) for s, iv, d in self.parts if iv == "1m"}

    @property
    def lake_parts(self) -> set:
        """The lake partitions (interval, day) the run rewrites, each whole with every coin in it."""
        return {(iv, d) for _, iv, d in self.profile_parts}


def plan_run(verdicts: DataFrame, n_snapshots: int) -> RunPlan:
    """The run's plan from ONE aggregation (one Spark action) over its materialised verdicts."""
    groups = (
        verdicts.groupBy(
            "status",
            "reason",
            "symbol",
            "interval",
            frames.day_of(F.col("open_time")).alias("date"),
        )
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.min("open_time").alias("lo"),
            F.max("open_time").alias("hi"),
        )
        .collect()
    )
    kept = [g for g in groups if g["status"] == "kept"]
    rejected = [g for g in groups if g["status"] == "rejected"]
    by_reason: dict[str, int] = {}
    for g in rejected:
        by_reason[g["reason"]] = by_reason.get(g["reason"], 0) + g["n"]
    counts = {
        "snapshots": n_snapshots,
        "rows_in": sum(g["n"] for g in groups),
        "kept": sum(g["n"] for g in kept),
        "collapsed_duplicates": sum(g["n"] for g in groups if g["status"] == "collapsed"),
        "quarantined": sum(by_reason.values()),
        "quarantined_by_reason": dict(sorted(by_reason.items())),
    }
    ranges: dict[str, list[int]] = {}
    for g in kept:
        key = f"{g['symbol']}/{g['interval']}"
        lo, hi = ranges.get(key, [g["lo"], g["hi"]])
        ranges[key] = [min(lo, g["lo"]), max(hi, g["hi"])]
    # The 1h candles that may change: the new 1h ones and the hours of the new minutes (rollups).
    hours = [
        (g["lo"] - g["lo"] % HOUR_MS, g["hi"] - g["hi"] % HOUR_MS)
        for g in kept
        if g["interval"] in ("1m", "1h")
    ]
    return RunPlan(
        counts,
        dict(sorted(ranges.items())),
        {(g["symbol"], g["interval"], g["date"]) for g in kept},
        min((a for a, _ in hours), default=None),
        max((b for _, b in hours), default=None),
    )


__all__ = ["RunPlan", "plan_run"]
