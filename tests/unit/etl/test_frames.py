"""cryptoflow.etl.frames after validation, DataFrame in / DataFrame out: resolve_against_stored, rollup_hours,
day_of, with_partition, to_lake, to_warehouse. Tiny hand-written frames, exact expected rows.

Each group of tests shares ONE Spark action (a module-scoped fixture collects the result once)."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from cryptoflow.etl import frames
from cryptoflow.warehouse.load import CANDLE_COLUMNS
from tests.factories import (
    D,
    DAY_MS,
    DEC,
    HOUR_MS,
    MINUTE_MS,
    T0,
    assert_rows,
    candle,
    candle_frame,
    collect,
    schema_of,
    slot,
)

# Spark is a service here, as in tests/integration/test_etl_copy_text.py: `-m quick` leaves these out.
pytestmark = pytest.mark.integration

# ---------------------------------------------------------------------------------------------
# resolve_against_stored


def test_resolve_against_stored_source_candles(spark):
    """derived=False, as merge_staged(derived=False): a stored source candle stays; a differing
    newcomer is a late update (refused, counted); a stored rollup is replaced; a new key inserted."""
    k = [slot(i) for i in range(8)]
    new = candle_frame(
        spark,
        [
            candle(open_time=k[1], close="105", source="new"),  # new key
            candle(open_time=k[2], close="105", source="new"),  # identical re-delivery
            candle(open_time=k[3], close="106", source="new"),  # late update
            candle(
                interval="1h", open_time=T0 + HOUR_MS, close="105", source="new"
            ),  # over a stored rollup
            candle(
                open_time=k[5], taker_buy_base_volume=None, trades=None, source="new"
            ),  # equal nulls
            candle(open_time=k[6], taker_buy_base_volume=None, source="new"),  # null vs a value
            candle(interval="1h", open_time=k[0], source="new"),  # 1h: not the 1m key below
        ],
    )
    stored = candle_frame(
        spark,
        [
            candle(open_time=k[2], close="105.000", source="stored"),
            candle(open_time=k[3], close="105", source="stored"),
            candle(
                interval="1h",
                open_time=T0 + HOUR_MS,
                close="104",
                minute_count=60,
                source="rollup:1m",
            ),
            candle(open_time=k[4], source="stored"),  # stored only
            candle(open_time=k[5], taker_buy_base_volume=None, trades=None, source="stored"),
            candle(open_time=k[6], source="stored"),
            candle(open_time=k[0], source="stored"),
        ],
    )
    out = frames.resolve_against_stored(new, stored, derived=False)
    assert tuple(out.columns) == frames.CANDLE_FRAME + ("refused_new",)
    assert_rows(
        out,
        [
            ("1m", k[0], D("105"), None, "stored", False),
            ("1h", k[0], D("105"), None, "new", False),
            ("1m", k[1], D("105"), None, "new", False),
            ("1m", k[2], D("105"), None, "stored", False),
            ("1m", k[3], D("105"), None, "stored", True),
            ("1h", T0 + HOUR_MS, D("105"), None, "new", False),
            ("1m", k[4], D("105"), None, "stored", False),
            ("1m", k[5], D("105"), None, "stored", False),
            ("1m", k[6], D("105"), None, "stored", True),
        ],
        ["interval", "open_time", "close", "minute_count", "source", "refused_new"],
    )


def test_resolve_against_stored_rollups(spark):
    """derived=True: a rollup never replaces a source candle (refused, counted as kept_source), and
    always replaces a stored rollup, equal or not."""
    h = [T0 + i * HOUR_MS for i in range(5)]

    def rollup(t, minutes=60, close="105"):
        return candle(
            interval="1h",
            open_time=t,
            close=close,
            minute_count=minutes,
            is_complete=minutes == 60,
            source="rollup:1m",
        )

    new = candle_frame(spark, [rollup(h[0]), rollup(h[1]), rollup(h[2]), rollup(h[3])])
    stored = candle_frame(
        spark,
        [
            candle(interval="1h", open_time=h[0], close="104", source="binance"),  # a source candle
            rollup(h[1], minutes=59, close="103"),  # an incomplete rollup
            rollup(h[3]),  # the same rollup
            candle(interval="1h", open_time=h[4], source="binance"),  # stored only
        ],
    )
    assert_rows(
        frames.resolve_against_stored(new, stored, derived=True),
        [
            (h[0], D("104"), None, True, "binance", True),
            (h[1], D("105"), 60, True, "rollup:1m", False),
            (h[2], D("105"), 60, True, "rollup:1m", False),
            (h[3], D("105"), 60, True, "rollup:1m", False),
            (h[4], D("105"), None, True, "binance", False),
        ],
        ["open_time", "close", "minute_count", "is_complete", "source", "refused_new"],
    )


# ---------------------------------------------------------------------------------------------
# rollup_hours


def _minute(symbol, i, *, hour=0, **over):
    """The i-th minute of `hour` with distinct, 18-digit exact values."""
    o = D("100") + D(i) / 100 + D("0.000000000000000001") * i
    values = dict(
        open=o,
        high=o + D("0.5") + D(i % 7) / 10,
        low=o - D("0.25") - D(i % 5) / 10,
        close=o + D("0.01"),
        base_volume=D("1.000000000000000001") * (i + 1),
        quote_volume=D("100.123456789012345678") * (i + 1),
        taker_buy_base_volume=D("0.5") + D("1E-18") * i,
        taker_buy_quote_volume=D("50.000000000000000001"),
        trades=i + 1,
    )
    values.update(over)
    t = T0 + hour * HOUR_MS + i * MINUTE_MS
    return (
        symbol,
        "1m",
        t,
        t + MINUTE_MS - 1,
        values["open"],
        values["high"],
        values["low"],
        values["close"],
        values["base_volume"],
        values["quote_volume"],
        values["taker_buy_base_volume"],
        values["taker_buy_quote_volume"],
        values["trades"],
        None,
        True,
        "test",
    )


def _expected_hour(minutes):
    m = sorted(minutes, key=lambda r: r[2])

    def full_sum(i):
        return None if any(r[i] is None for r in m) else sum(r[i] for r in m)

    hour = m[0][2] - m[0][2] % HOUR_MS
    return (
        m[0][0],
        "1h",
        hour,
        hour + HOUR_MS - 1,
        m[0][4],
        max(r[5] for r in m),
        min(r[6] for r in m),
        m[-1][7],
        sum(r[8] for r in m),
        sum(r[9] for r in m),
        full_sum(10),
        full_sum(11),
        full_sum(12),
        len(m),
        len(m) == 60,
        "rollup:1m",
    )


BTC_HOUR = [_minute("BTCUSDT", i) for i in range(60)]
ETH_PARTIAL = [
    _minute(
        "ETHUSDT", i, hour=1, **({"taker_buy_base_volume": None, "trades": None} if i == 5 else {})
    )
    for i in (0, 5, 59)
]


@pytest.fixture(scope="module")
def rollups(spark):
    # Minutes in reverse arrival order (open/close come from the times, not the order), plus a 1h
    # candle that must not be counted as a minute.
    rows = (
        list(reversed(BTC_HOUR))
        + ETH_PARTIAL
        + [candle(interval="1h", open_time=T0, base_volume="1000")]
    )
    df = frames.rollup_hours(candle_frame(spark, rows))
    return schema_of(df), collect(df)


def test_rollup_hours_schema_is_a_candle_frame(rollups):
    schema, _ = rollups
    assert schema == [
        ("symbol", "string"),
        ("interval", "string"),
        ("open_time", "bigint"),
        ("close_time", "bigint"),
        *[
            (c, DEC)
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
        ("trades", "bigint"),
        ("minute_count", "int"),
        ("is_complete", "boolean"),
        ("source", "string"),
    ]


def test_rollup_hours_complete_hour_is_exact_ohlcv(rollups):
    _, rows = rollups
    [btc] = [r for r in rows if r[0] == "BTCUSDT"]
    assert btc == _expected_hour(BTC_HOUR)
    # Spelled out, so the expectation is not only the helper's arithmetic:
    assert (btc[2], btc[3], btc[13], btc[14]) == (T0, T0 + HOUR_MS - 1, 60, True)
    assert btc[4] == D("100") and btc[7] == D("100.600000000000000059")
    assert btc[8] == D("1830.000000000000001830")  # 1.000000000000000001 * (1 + ... + 60)
    assert btc[12] == 1830


def test_rollup_hours_incomplete_hour_with_a_minute_lacking_optional_fields(rollups):
    _, rows = rollups
    [eth] = [r for r in rows if r[0] == "ETHUSDT"]
    assert eth == _expected_hour(ETH_PARTIAL)
    assert (eth[2], eth[13], eth[14]) == (T0 + HOUR_MS, 3, False)
    # A partial sum would understate them: no taker base volume and no trade count for the hour...
    assert (eth[10], eth[12]) == (None, None)
    # ...while the fields every minute has are summed.
    assert eth[11] == D("150.000000000000000003") and eth[8] == D("1.000000000000000001") * 67


def test_rollup_hours_ignores_candles_of_other_intervals(rollups):
    _, rows = rollups
    assert [(r[0], r[2]) for r in rows] == [("BTCUSDT", T0), ("ETHUSDT", T0 + HOUR_MS)]


# ---------------------------------------------------------------------------------------------
# day_of, with_partition, to_lake, to_warehouse

EDGE_TIMES = [T0 - MINUTE_MS, T0, T0 + DAY_MS - MINUTE_MS]  # 23:59 the day before, 00:00, 23:59


@pytest.fixture(scope="module")
def edge_candles(spark):
    return candle_frame(
        spark, [candle(open_time=t, close=str(100 + i)) for i, t in enumerate(EDGE_TIMES)]
    )


def test_day_of_is_the_utc_date_of_a_ms_timestamp(edge_candles):
    from datetime import date

    got = collect(edge_candles.select("open_time", frames.day_of(F.col("open_time")).alias("d")))
    assert got == [
        (EDGE_TIMES[0], date(2023, 12, 31)),
        (EDGE_TIMES[1], date(2024, 1, 1)),
        (EDGE_TIMES[2], date(2024, 1, 1)),
    ]


def test_with_partition_adds_the_date_and_changes_nothing_else(edge_candles):
    from datetime import date

    out = frames.with_partition(edge_candles)
    assert schema_of(out) == schema_of(edge_candles) + [("date", "date")]
    assert_rows(
        out,
        [
            r + (d,)
            for r, d in zip(
                edge_candles.collect(), [date(2023, 12, 31), date(2024, 1, 1), date(2024, 1, 1)]
            )
        ],
    )


def test_to_lake_stores_timestamps_and_the_date_partition(edge_candles):
    from datetime import date

    out = frames.to_lake(edge_candles)
    schema = dict(schema_of(out))
    assert (schema["open_time"], schema["close_time"], schema["date"]) == (
        "timestamp",
        "timestamp",
        "date",
    )
    assert out.columns == list(frames.CANDLE_FRAME) + ["date"]
    fmt = "yyyy-MM-dd HH:mm:ss.SSS"  # rendered in the session's UTC, not the Python process's zone
    assert collect(
        out.select(
            F.unix_millis("open_time"),
            F.unix_millis("close_time"),
            F.date_format("open_time", fmt),
            F.date_format("close_time", fmt),
            "date",
            "close",
        )
    ) == [
        (
            EDGE_TIMES[0],
            T0 - 1,
            "2023-12-31 23:59:00.000",
            "2023-12-31 23:59:59.999",
            date(2023, 12, 31),
            D("100"),
        ),
        (
            T0,
            T0 + 59_999,
            "2024-01-01 00:00:00.000",
            "2024-01-01 00:00:59.999",
            date(2024, 1, 1),
            D("101"),
        ),
        (
            EDGE_TIMES[2],
            T0 + DAY_MS - 1,
            "2024-01-01 23:59:00.000",
            "2024-01-01 23:59:59.999",
            date(2024, 1, 1),
            D("102"),
        ),
    ]


def test_to_warehouse_orders_columns_as_market_candles_with_timestamps(edge_candles):
    out = frames.to_warehouse(edge_candles.select(*reversed(edge_candles.columns)), CANDLE_COLUMNS)
    assert out.columns == list(CANDLE_COLUMNS)
    schema = dict(schema_of(out))
    assert (schema["open_time"], schema["close_time"], schema["open"], schema["trades"]) == (
        "timestamp",
        "timestamp",
        DEC,
        "bigint",
    )
    assert collect(
        out.select(F.unix_millis("open_time"), F.unix_millis("close_time"), "close", "source")
    ) == [(t, t + MINUTE_MS - 1, D(100 + i), "test") for i, t in enumerate(EDGE_TIMES)]


def test_to_warehouse_with_a_column_subset(edge_candles):
    out = frames.to_warehouse(edge_candles, ("close", "open_time", "symbol"))
    assert schema_of(out) == [("close", DEC), ("open_time", "timestamp"), ("symbol", "string")]
    assert collect(out.select("close", F.unix_millis("open_time"), "symbol")) == [
        (D(100 + i), t, "BTCUSDT") for i, t in enumerate(EDGE_TIMES)
    ]


def test_candle_frame_matches_market_candles_columns():
    assert frames.CANDLE_FRAME == CANDLE_COLUMNS
