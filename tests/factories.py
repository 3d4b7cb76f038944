"""Hand-written frames for DataFrame-level tests of cryptoflow.etl (tests/unit/etl).

- `landing_row(...)`: one landing-format row as read_landing gives it (every field a string, plus
  `_corrupt_record`), valid unless overridden; `landing_frame(spark, rows)` makes the raw frame.
- `candle(...)`: one candle-frame row (ms times, exact Decimals); `candle_frame(spark, rows)`.
- `assert_rows(df, expected, columns)`: the collected rows equal `expected`, order aside
  (chispa's assert_df_equality without chispa: plain tuples, so Decimals compare exactly).
"""

from __future__ import annotations

from decimal import Decimal

from cryptoflow.candles import LANDING_COLUMNS

D = Decimal
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
DAY_MS = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday

CANDLE_SCHEMA = (
    "symbol string, interval string, open_time bigint, close_time bigint, "
    "open decimal(38,18), high decimal(38,18), low decimal(38,18), close decimal(38,18), "
    "base_volume decimal(38,18), quote_volume decimal(38,18), "
    "taker_buy_base_volume decimal(38,18), taker_buy_quote_volume decimal(38,18), "
    "trades bigint, minute_count int, is_complete boolean, source string"
)
INTERVAL_MS = {"1m": MINUTE_MS, "1h": HOUR_MS, "1d": DAY_MS}


# The exact decimal type of the candle frames' value columns, as Spark prints it in a schema.
DEC = "decimal(38,18)"


def slot(n: int) -> int:
    """The open time of the n-th one-minute key used by a test case (keys never collide by accident)."""
    return T0 + n * MINUTE_MS


def landing_row(
    symbol="BTCUSDT",
    interval="1m",
    open_time=T0,
    close_time=None,
    open="100.5",
    high="101",
    low="100",
    close="100.75",
    base_volume="2",
    quote_volume="201.25",
    taker_buy_base_volume="1",
    taker_buy_quote_volume="100.5",
    trades="10",
    source="test",
    corrupt=None,
) -> tuple:
    """A landing row of strings (close_time defaults to open_time + 1m - 1); ints are stringified."""
    if close_time is None and isinstance(open_time, int):
        close_time = open_time + INTERVAL_MS.get(interval, MINUTE_MS) - 1
    values = dict(
        symbol=symbol,
        interval=interval,
        open_time=open_time,
        close_time=close_time,
        open=open,
        high=high,
        low=low,
        close=close,
        base_volume=base_volume,
        quote_volume=quote_volume,
        taker_buy_base_volume=taker_buy_base_volume,
        taker_buy_quote_volume=taker_buy_quote_volume,
        trades=trades,
        source=source,
    )
    return tuple(None if values[c] is None else str(values[c]) for c in LANDING_COLUMNS) + (
        corrupt,
    )


def landing_frame(spark, rows, *, with_corrupt: bool = True):
    from cryptoflow.etl.io import LANDING_RAW_SCHEMA

    df = spark.createDataFrame(list(rows), LANDING_RAW_SCHEMA)
    return df if with_corrupt else df.drop("_corrupt_record")


def raw_line(row: tuple) -> str:
    """What typed_landing puts in raw_record for a landing_row (nulls as empty fields)."""
    return ",".join("" if v is None else v for v in row[: len(LANDING_COLUMNS)])


def candle(
    symbol="BTCUSDT",
    interval="1m",
    open_time=T0,
    *,
    open="100",
    high="110",
    low="90",
    close="105",
    base_volume="1",
    quote_volume="100",
    taker_buy_base_volume="0.5",
    taker_buy_quote_volume="50",
    trades=10,
    minute_count=None,
    is_complete=True,
    source="test",
    close_time=None,
) -> tuple:
    """A candle-frame row in CANDLE_FRAME order; decimal fields given as strings become exact Decimals."""
    if close_time is None:
        close_time = open_time + INTERVAL_MS[interval] - 1

    def dec(v):
        return None if v is None else D(v)

    return (
        symbol,
        interval,
        open_time,
        close_time,
        dec(open),
        dec(high),
        dec(low),
        dec(close),
        dec(base_volume),
        dec(quote_volume),
        dec(taker_buy_base_volume),
        dec(taker_buy_quote_volume),
        trades,
        minute_count,
        is_complete,
        source,
    )


def candle_frame(spark, rows):
    return spark.createDataFrame(list(rows), CANDLE_SCHEMA)


def schema_of(df) -> list[tuple[str, str]]:
    return [(f.name, f.dataType.simpleString()) for f in df.schema.fields]


def _sort_key(row):
    return tuple((v is not None, v) for v in row)


def collect(df, columns=None) -> list[tuple]:
    """The rows of `df` (or of its `columns`) as plain tuples, sorted (nulls first)."""
    if columns is not None:
        df = df.select(*columns)
    return sorted((tuple(r) for r in df.collect()), key=_sort_key)


def assert_rows(df, expected, columns=None) -> None:
    """`df`'s rows (of `columns`, in that order) are exactly `expected`, order aside."""
    got = collect(df, columns)
    want = sorted((tuple(r) for r in expected), key=_sort_key)
    if got != want:
        missing = [r for r in want if r not in got]
        extra = [r for r in got if r not in want]
        raise AssertionError(f"rows differ\n  missing: {missing}\n  unexpected: {extra}")
