"""Pure DataFrame transformations of candles: DataFrame in, DataFrame out, no I/O.

A "candle frame" has the columns of CANDLE_FRAME below: times as int milliseconds UTC (the unit of
cryptoflow.candles), prices and volumes as decimal(38,18) (exact, compared like PostgreSQL numeric),
`minute_count` null for candles Binance delivered and set for hours rolled up from minutes.

Validation never restates a rule: row rules come from etl.rules.spark_violations (the RULES of
cryptoflow.candles, which the ingester and importers apply), and duplicates follow the importers'
policy (equal copies collapse, differing copies are all quarantined as conflicting_duplicate, see
importers/common.py).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DecimalType

from cryptoflow import quarantine
from cryptoflow.candles import (
    CANDLE_COLUMNS,
    DECIMAL_FIELDS,
    DECIMAL_PATTERN,
    INTEGER_PATTERN,
    KEY_COLUMNS,
    LANDING_COLUMNS,
    MAX_FRACTION_DIGITS,
    VALUE_COLUMNS,
)
from cryptoflow.etl.rules import spark_violations

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
DAY_MS = 86_400_000
DEC = DecimalType(38, 18)
KEY = KEY_COLUMNS
# What makes two copies of a key "the same candle", and the candle frame's columns: one definition
# (cryptoflow.candles), which warehouse.load's merge compares too, so a predicted conflict is the
# one merge_staged will find.
CANDLE_FRAME = CANDLE_COLUMNS
ROLLUP_SOURCE = "rollup:1m"
# Quarantine frame columns: ops.quarantine's (cryptoflow.quarantine) but run_id, which the job adds
# when it stages them; open_time in ms.
QUARANTINE_FRAME = tuple(c for c in quarantine.COLUMNS if c != "run_id")

_INT_FIELDS = ("open_time", "close_time", "trades")


def typed_landing(raw: DataFrame) -> DataFrame:
    """Landing rows read as strings -> typed candle columns, `raw_record` and `format_reason`/`format_detail`.

    A value that is present but does not parse is bad_number (decimals) or bad_type (integers), as
    the Python parsers say; a row with the wrong number of fields (Spark's `_corrupt_record`) is
    malformed_row. Empty fields stay null: spark_violations reports them as missing_field.
    """
    cols = raw.columns
    raw_line = F.concat_ws(",", *[F.coalesce(F.col(c), F.lit("")) for c in LANDING_COLUMNS])
    if "_corrupt_record" in cols:
        raw_line = F.coalesce(F.col("_corrupt_record"), raw_line)
    parsed = [("bad_number", c) for c in DECIMAL_FIELDS] + [("bad_type", c) for c in _INT_FIELDS]
    # Rebuild with the raw values alongside, so "present but unparseable" can be told from "empty".
    df = raw.withColumn("raw_record", raw_line).select(
        *[F.col(c) for c in cols if c not in DECIMAL_FIELDS + _INT_FIELDS],
        "raw_record",
        *[F.col(c).alias(f"_raw_{c}") for c in DECIMAL_FIELDS + _INT_FIELDS],
    )
    # try_cast alone is more lenient than the parsers (it trims spaces, reads '+5' and non-ASCII
    # digits as integers, and ROUNDS a decimal past 18 fraction digits): only the text forms the
    # parsers accept are cast, the rest stays null and is reported below.
    for c in DECIMAL_FIELDS:
        df = df.withColumn(c, _parsed_decimal(F.col(f"_raw_{c}")))
    for c in _INT_FIELDS:
        df = df.withColumn(
            c,
            F.when(
                F.col(f"_raw_{c}").rlike(f"^{INTEGER_PATTERN}$"),
                F.col(f"_raw_{c}").try_cast("bigint"),
            ),
        )
    conditions = []
    if "_corrupt_record" in cols:
        conditions.append(
            (
                F.col("_corrupt_record").isNotNull(),
                F.lit("malformed_row"),
                F.lit(f"expected {len(LANDING_COLUMNS)} columns"),
            )
        )
    for parse_reason, c in parsed:
        # Only an empty field is missing; "  " is present and does not parse (as in Python).
        present = F.col(f"_raw_{c}").isNotNull() & (F.length(F.col(f"_raw_{c}")) > 0)
        conditions.append(
            (
                present & F.col(c).isNull(),
                F.lit(parse_reason),
                F.concat(
                    F.lit(f"{c}="), F.substring(F.col(f"_raw_{c}"), 1, 40), F.lit(" does not parse")
                ),
            )
        )
    reason = F.lit(None).cast("string")
    detail = F.lit(None).cast("string")
    for cond, r, d in reversed(conditions):  # the first failing check wins
        reason = F.when(cond, r).otherwise(reason)
        detail = F.when(cond, d).otherwise(detail)
    df = df.withColumn("format_reason", reason).withColumn("format_detail", detail)
    return df.drop(*[f"_raw_{c}" for c in DECIMAL_FIELDS + _INT_FIELDS])


# Plain digits with at most 20 before the point and 18 after: what Binance sends, and always a
# decimal the Python parser accepts that decimal(38,18) holds exactly. One regex settles these;
# only other spellings (signs, exponents, long zero padding) pay for the three of the full check.
_PLAIN_FAST = r"^[0-9]{1,20}(\.[0-9]{0,18})?$"


def _parsed_decimal(raw: Column) -> Column:
    """`raw` as DEC where it is a decimal the Python parser accepts: DECIMAL_PATTERN, and no more
    fraction digits than decimal(38,18) keeps once the exponent is applied (candles._fits), so no
    value is ever rounded on the way in; null otherwise (reported as bad_number).

    Branches of a CASE, not an OR: Spark evaluates the expressions an OR's right side shares
    (the exponent's regex) for every row, a CASE's later branches only where they are reached.
    Costs half the time of `fast | general` on Binance's plain decimals."""
    return F.when(raw.rlike(_PLAIN_FAST), raw.try_cast(DEC)).when(
        _plain_decimal_general(raw), raw.try_cast(DEC)
    )


def _plain_decimal_general(raw: Column) -> Column:
    fraction = F.length(F.regexp_extract(raw, r"\.([0-9]*)", 1))
    exponent_text = F.regexp_extract(raw, r"[eE]([+-]?[0-9]+)$", 1)
    exponent = F.when(exponent_text == "", F.lit(0)).otherwise(exponent_text.try_cast("bigint"))
    return (
        raw.rlike(f"^{DECIMAL_PATTERN}$")
        & exponent.isNotNull()
        & (fraction - exponent <= MAX_FRACTION_DIGITS)
    )


def resolve_duplicates(df: DataFrame) -> DataFrame:
    """Adds `dup_status`: 'kept', 'collapsed' (an equal copy of a kept row) or 'conflict'.

    Same policy as the importers and the landing writer: copies of a key with equal values collapse
    (the kept copy is chosen by content, not arrival order); copies that differ are all conflicts.
    Rows whose key didn't parse are left 'kept' (they fail validation anyway, as missing_field):
    Spark's window puts every null key in one partition, so they are kept out of the comparison.
    """
    key = [F.col(k) for k in KEY]
    has_key = _has_key()
    values = F.struct(*[F.col(c) for c in VALUE_COLUMNS if c in df.columns])
    ordered = Window.partitionBy(*key).orderBy(
        F.col("source").asc_nulls_first(), F.col("raw_record")
    )
    # The same partitioning and order for the whole-key aggregates: Spark then computes all three
    # in one sort of the rows instead of two (the larger part of validating a backfill).
    whole = ordered.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    df = (
        df.withColumn("_variants", F.size(F.collect_set(values).over(whole)))
        .withColumn("_copies", F.count(F.lit(1)).over(whole))
        .withColumn("_nth", F.row_number().over(ordered))
    )
    status = (
        F.when(~has_key, F.lit("kept"))
        .when(F.col("_variants") > 1, F.lit("conflict"))
        .when(F.col("_nth") > 1, F.lit("collapsed"))
        .otherwise(F.lit("kept"))
    )
    detail = F.concat(
        F.col("_copies").cast("string"),
        F.lit(" copies of "),
        F.col("symbol"),
        F.lit(" "),
        F.col("interval"),
        F.lit(" open_time="),
        F.col("open_time").cast("string"),
        F.lit(" with "),
        F.col("_variants").cast("string"),
        F.lit(" different sets of values"),
    )
    return (
        df.withColumn("dup_status", status)
        .withColumn("dup_detail", F.when(has_key & (F.col("_variants") > 1), detail))
        .drop("_variants", "_copies", "_nth")
    )


def _has_key() -> Column:
    """Whether every key column parsed (rows without a key are never anyone's copy)."""
    return F.col(KEY[0]).isNotNull() & F.col(KEY[1]).isNotNull() & F.col(KEY[2]).isNotNull()


def _sole_copies(df: DataFrame) -> DataFrame:
    """`df` with resolve_duplicates' columns for rows that are their key's only copy."""
    return df.withColumn("dup_status", F.lit("kept")).withColumn(
        "dup_detail", F.lit(None).cast("string")
    )


def duplicate_keys(typed: DataFrame) -> DataFrame:
    """The keys that more than one row of `typed` carries (readable or not): a superset of the keys
    resolve_duplicates can find anything at, computed from the key columns alone (a narrow hash
    aggregation, where resolve_duplicates sorts whole rows)."""
    return typed.where(_has_key()).groupBy(*KEY).count().where(F.col("count") > 1).select(*KEY)


def validate(typed: DataFrame, symbols, *, duplicates: bool = True) -> DataFrame:
    """typed_landing output -> one verdict per row: `status` in kept/collapsed/rejected, `reason`, `detail`.

    Order as in the importers: unreadable rows first, then duplicates, then the RULES.
    `duplicates=False` says no key occurs twice (duplicate_keys is empty): every readable row is
    then its key's only copy, and the sort that resolves copies is skipped.
    """
    if duplicates:
        readable = F.col("format_reason").isNull()
        deduped = resolve_duplicates(typed.where(readable)).unionByName(
            _sole_copies(typed.where(~readable))
        )
    else:
        deduped = _sole_copies(typed)
    checked = spark_violations(deduped, symbols)
    reason = F.coalesce(
        F.col("format_reason"),
        F.when(F.col("dup_status") == "conflict", F.lit("conflicting_duplicate")),
        F.when(F.col("dup_status") == "kept", F.col("reason")),
    )
    detail = F.coalesce(F.col("format_detail"), F.col("dup_detail"), F.col("detail"))
    status = (
        F.when(reason.isNotNull(), F.lit("rejected"))
        .when(F.col("dup_status") == "collapsed", F.lit("collapsed"))
        .otherwise(F.lit("kept"))
    )
    return (
        checked.withColumn("_reason", reason)
        .withColumn("_detail", detail)
        .withColumn("status", status)
        .drop(
            "reason",
            "detail",
            "reasons",
            "format_reason",
            "format_detail",
            "dup_status",
            "dup_detail",
        )
        .withColumnRenamed("_reason", "reason")
        .withColumnRenamed("_detail", "detail")
    )


def source_candles(verdicts: DataFrame) -> DataFrame:
    """The rows that passed, as a candle frame (Binance's own candles: no minute_count, complete)."""
    return (
        verdicts.where(F.col("status") == "kept")
        .withColumn("minute_count", F.lit(None).cast("int"))
        .withColumn("is_complete", F.lit(True))
        .select(*CANDLE_FRAME)
    )


def quarantine_rows(verdicts: DataFrame) -> DataFrame:
    return verdicts.where(F.col("status") == "rejected").select(*QUARANTINE_FRAME)


def _same_values(a: str, b: str) -> Column:
    cond = F.lit(True)
    for c in VALUE_COLUMNS:
        cond = cond & F.col(f"{a}.{c}").eqNullSafe(F.col(f"{b}.{c}"))
    return cond


def resolve_against_stored(new: DataFrame, stored: DataFrame, *, derived: bool) -> DataFrame:
    """What the warehouse will hold for the keys of `new` or `stored` after merge_staged.

    merge_staged's policy (warehouse/load.py), predicted here so the lake, the rollups and the
    analytics are computed from exactly what the merge leaves: a stored source candle (no
    `minute_count`) stays whatever comes (a differing source candle is a late-update conflict, a
    rollup is refused); a stored rollup is replaced by whatever comes; a new key is inserted.
    Returns the candle frame plus `refused_new`: true where a new row was not applied and the
    merge will count it (conflicts when not `derived`, kept_source when `derived`), so the job
    can check its prediction against the merge's own counts and fail the run if they differ.
    """
    n, s = new.alias("n"), stored.alias("s")
    cond = [F.col(f"n.{k}") == F.col(f"s.{k}") for k in KEY]
    joined = n.join(s, cond, "full_outer")
    has_new = F.col("n.symbol").isNotNull()
    has_stored = F.col("s.symbol").isNotNull()
    stored_is_source = has_stored & F.col("s.minute_count").isNull()
    take_new = has_new & ~stored_is_source
    refused = has_new & stored_is_source & (F.lit(True) if derived else ~_same_values("n", "s"))
    return joined.select(
        *[
            F.when(take_new, F.col(f"n.{c}")).otherwise(F.col(f"s.{c}")).alias(c)
            for c in CANDLE_FRAME
        ],
        refused.alias("refused_new"),
    )


def rollup_hours(minutes: DataFrame) -> DataFrame:
    """1m candles -> 1h candles, one per (symbol, hour) that has at least one minute.

    `minute_count` says how many of the 60 minutes were there; `is_complete` is true only with all
    60, so an hour built from incomplete minutes never passes for a complete one. Trades and taker
    volumes are summed only when every minute has them (a partial sum would understate them).
    """
    m = minutes.where(F.col("interval") == "1m").withColumn(
        "_hour", F.col("open_time") - F.col("open_time") % HOUR_MS
    )

    def full_sum(c: str) -> Column:
        return F.when(F.count(F.col(c)) == F.count(F.lit(1)), F.sum(F.col(c)))

    agg = m.groupBy("symbol", "_hour").agg(
        F.min_by("open", "open_time").alias("open"),
        F.max("high").alias("high"),
        F.min("low").alias("low"),
        F.max_by("close", "open_time").alias("close"),
        F.sum("base_volume").alias("base_volume"),
        F.sum("quote_volume").alias("quote_volume"),
        full_sum("taker_buy_base_volume").alias("taker_buy_base_volume"),
        full_sum("taker_buy_quote_volume").alias("taker_buy_quote_volume"),
        full_sum("trades").alias("trades"),
        F.count(F.lit(1)).cast("int").alias("minute_count"),
    )
    return agg.select(
        "symbol",
        F.lit("1h").alias("interval"),
        F.col("_hour").alias("open_time"),
        (F.col("_hour") + HOUR_MS - 1).alias("close_time"),
        *[
            F.col(c).cast(DEC).alias(c)
            for c in (
                "open",
                "high",
                "low",
                "close",
                "base_volume",
                "quote_volume",
                "taker_buy_base_volume",
                "taker_buy_quote_volume",
            )
        ],
        F.col("trades").cast("bigint").alias("trades"),
        "minute_count",
        (F.col("minute_count") == 60).alias("is_complete"),
        F.lit(ROLLUP_SOURCE).alias("source"),
    )


def day_of(col: Column) -> Column:
    """The UTC date of a ms timestamp (the lake's `date` partition)."""
    return F.to_date(F.timestamp_millis(col))


def with_partition(df: DataFrame) -> DataFrame:
    return df.withColumn("date", day_of(F.col("open_time")))


def to_lake(df: DataFrame) -> DataFrame:
    """A candle frame as the lake stores it: timestamps as timestamps, partition column `date`."""
    return (
        df.withColumn("date", day_of(F.col("open_time")))
        .withColumn("open_time", F.timestamp_millis("open_time"))
        .withColumn("close_time", F.timestamp_millis("close_time"))
    )


def to_warehouse(df: DataFrame, columns=CANDLE_FRAME) -> DataFrame:
    """A candle frame with ms times as timestamps, in market.candles' column order (for COPY)."""
    return df.select(
        *[
            F.timestamp_millis(c).alias(c) if c in ("open_time", "close_time") else F.col(c)
            for c in columns
        ]
    )


__all__ = [
    "typed_landing",
    "duplicate_keys",
    "resolve_duplicates",
    "validate",
    "source_candles",
    "quarantine_rows",
    "resolve_against_stored",
    "rollup_hours",
    "to_lake",
    "to_warehouse",
    "with_partition",
    "day_of",
    "CANDLE_FRAME",
    "VALUE_COLUMNS",
    "KEY",
    "HOUR_MS",
    "DAY_MS",
    "MINUTE_MS",
    "ROLLUP_SOURCE",
]
