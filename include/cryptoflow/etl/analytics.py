"""The analytics the dashboards read, from hourly candles: DataFrame in, DataFrame out.

- hourly_metrics: per symbol and hour, the close, simple and log return against the previous hour,
  the rolling volatility of log returns over 24 h, moving averages of the close over 24 h and 7 days.
  Windows are in time (rangeBetween on open_time), not in rows: across a gap a "24 h" window holds
  fewer hours instead of silently reaching further back, and a return is only computed against the
  hour right before (never across a gap).
- volume_profile: per symbol, interval and day, the traded volume in 20 equal price buckets
  between the day's low and high (typical price (h+l+c)/3 of each candle).
- return_correlation: per day and pair of symbols, the Pearson correlation of hourly log returns
  over the 30 days ending that day, from daily sufficient statistics summed over a window (the
  cost grows with days x pairs, not with hours x pairs x days).

Incremental runs recompute only the rows whose inputs changed; `metric_lookback_ms` /
`correlation_days` tell the job how much history to read for that.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from cryptoflow.etl.frames import DAY_MS, HOUR_MS

VOLATILITY_HOURS = 24
MA_SHORT_HOURS = 24
MA_LONG_HOURS = 168
PROFILE_BUCKETS = 20
CORRELATION_DAYS = 30
# How far back an hour's metrics look, and so how far forward a changed hour's influence reaches.
METRIC_REACH_MS = (max(VOLATILITY_HOURS, MA_SHORT_HOURS, MA_LONG_HOURS) - 1) * HOUR_MS
CORRELATION_REACH_MS = (CORRELATION_DAYS - 1) * DAY_MS

METRICS_COLUMNS = (
    "symbol",
    "open_time",
    "close",
    "return_pct",
    "log_return",
    "volatility_24h",
    "ma_24h",
    "ma_168h",
    "quote_volume",
    "is_complete",
)
PROFILE_COLUMNS = (
    "symbol",
    "interval",
    "day",
    "bucket",
    "price_low",
    "price_high",
    "base_volume",
    "quote_volume",
    "candles",
)
CORRELATION_COLUMNS = ("day", "symbol_a", "symbol_b", "window_days", "correlation", "hours")


def hourly_metrics(hourly: DataFrame) -> DataFrame:
    """`hourly`: 1h candle frame (ms times). One row per input candle, with its metrics."""
    by_symbol = Window.partitionBy("symbol").orderBy("open_time")

    def trailing(hours: int):
        return by_symbol.rangeBetween(-(hours - 1) * HOUR_MS, 0)

    close = F.col("close").cast("double")
    prev_close = F.lag("close").over(by_symbol).cast("double")
    adjacent = F.lag("open_time").over(by_symbol) == F.col("open_time") - HOUR_MS
    df = (
        hourly.where(F.col("interval") == "1h")
        .withColumn(
            "return_pct", F.when(adjacent & (prev_close > 0), (close / prev_close - 1) * 100)
        )
        .withColumn(
            "log_return",
            F.when(adjacent & (prev_close > 0) & (close > 0), F.log(close / prev_close)),
        )
    )
    return df.select(
        "symbol",
        "open_time",
        "close",
        "return_pct",
        "log_return",
        F.stddev_samp("log_return").over(trailing(VOLATILITY_HOURS)).alias("volatility_24h"),
        F.avg(close).over(trailing(MA_SHORT_HOURS)).alias("ma_24h"),
        F.avg(close).over(trailing(MA_LONG_HOURS)).alias("ma_168h"),
        "quote_volume",
        "is_complete",
    )


def volume_profile(candles: DataFrame) -> DataFrame:
    """`candles`: candle frame of whole days (any interval). Buckets with no volume are omitted."""
    day = F.to_date(F.timestamp_millis("open_time"))
    part = Window.partitionBy("symbol", "interval", "day")
    tp = (F.col("high") + F.col("low") + F.col("close")).cast("double") / 3
    df = (
        candles.withColumn("day", day)
        .withColumn("_lo", F.min(F.col("low").cast("double")).over(part))
        .withColumn("_hi", F.max(F.col("high").cast("double")).over(part))
        .withColumn("_w", (F.col("_hi") - F.col("_lo")) / PROFILE_BUCKETS)
    )
    # Clamped both ways: (h + l + c) / 3 in floating point can land a hair outside [lo, hi]
    # (e.g. h = l = c = the day's low gives 25.879549999999998 < 25.87955).
    raw_bucket = F.floor((tp - F.col("_lo")) / F.col("_w"))
    bucket = (
        F.when(
            F.col("_w") > 0, F.greatest(F.lit(0), F.least(raw_bucket, F.lit(PROFILE_BUCKETS - 1)))
        )
        .otherwise(F.lit(0))
        .cast("int")
    )
    return (
        df.withColumn("bucket", bucket)
        .groupBy("symbol", "interval", "day", "bucket")
        .agg(
            F.first("_lo").alias("_lo"),
            F.first("_w").alias("_w"),
            F.sum("base_volume").alias("base_volume"),
            F.sum("quote_volume").alias("quote_volume"),
            F.count(F.lit(1)).alias("candles"),
        )
        .select(
            "symbol",
            "interval",
            "day",
            "bucket",
            (F.col("_lo") + F.col("bucket") * F.col("_w")).alias("price_low"),
            (F.col("_lo") + (F.col("bucket") + 1) * F.col("_w")).alias("price_high"),
            "base_volume",
            "quote_volume",
            "candles",
        )
    )


# Relative to the sum of squares, the variance of hourly log returns is ~1 (their mean is ~0); a
# double's one-pass rounding leaves ~1e-16. Anything below 1e-12 is a series that did not vary.
VARIANCE_FLOOR = 1e-12


def return_correlation(metrics: DataFrame, days: int = CORRELATION_DAYS) -> DataFrame:
    """`metrics`: hourly_metrics output. Per day and symbol pair (a < b): correlation over `days` days."""
    r = metrics.where(F.col("log_return").isNotNull()).select("symbol", "open_time", "log_return")
    a, b = r.alias("a"), r.alias("b")
    pairs = a.join(
        b, (F.col("a.open_time") == F.col("b.open_time")) & (F.col("a.symbol") < F.col("b.symbol"))
    )
    x, y = F.col("a.log_return"), F.col("b.log_return")
    daily = (
        pairs.select(
            F.col("a.symbol").alias("symbol_a"),
            F.col("b.symbol").alias("symbol_b"),
            F.to_date(F.timestamp_millis(F.col("a.open_time"))).alias("day"),
            x.alias("x"),
            y.alias("y"),
        )
        .groupBy("symbol_a", "symbol_b", "day")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum("x").alias("sx"),
            F.sum("y").alias("sy"),
            F.sum(F.col("x") * F.col("x")).alias("sxx"),
            F.sum(F.col("y") * F.col("y")).alias("syy"),
            F.sum(F.col("x") * F.col("y")).alias("sxy"),
        )
    )
    w = (
        Window.partitionBy("symbol_a", "symbol_b")
        .orderBy(F.unix_date("day"))
        .rangeBetween(-(days - 1), 0)
    )
    s = daily.select(
        "symbol_a",
        "symbol_b",
        "day",
        *[F.sum(c).over(w).alias(c) for c in ("n", "sx", "sy", "sxx", "syy", "sxy")],
    )
    n = F.col("n").cast("double")
    cov = F.col("sxy") - F.col("sx") * F.col("sy") / n
    vx = F.col("sxx") - F.col("sx") * F.col("sx") / n
    vy = F.col("syy") - F.col("sy") * F.col("sy") / n
    # The one-pass variance of a constant series is rounding noise, not exactly 0 (0.01 three
    # times: 5.4e-20): a variance below VARIANCE_FLOOR of the sum of squares counts as none.
    has_variance = (vx > VARIANCE_FLOOR * F.col("sxx")) & (vy > VARIANCE_FLOOR * F.col("syy"))
    corr = F.when((F.col("n") >= 3) & has_variance, cov / F.sqrt(vx * vy))
    # Clamp the rounding overshoot (|r| a hair above 1), but only where there is a correlation:
    # greatest() skips NULLs, so clamping NULL would store -1.0, a perfect anti-correlation.
    clamped = F.when(corr.isNotNull(), F.least(F.greatest(corr, F.lit(-1.0)), F.lit(1.0)))
    return s.select(
        "day",
        "symbol_a",
        "symbol_b",
        F.lit(days).alias("window_days"),
        clamped.alias("correlation"),
        F.col("n").cast("int").alias("hours"),
    )


__all__ = [
    "hourly_metrics",
    "volume_profile",
    "return_correlation",
    "METRICS_COLUMNS",
    "PROFILE_COLUMNS",
    "CORRELATION_COLUMNS",
    "METRIC_REACH_MS",
    "CORRELATION_REACH_MS",
    "CORRELATION_DAYS",
]
