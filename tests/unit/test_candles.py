"""The one definition of a valid candle: parsing, rules, symbols (all pure, no services)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cryptoflow import symbols
from cryptoflow.candles import (
    INTERVAL_MS,
    LANDING_COLUMNS,
    REASONS,
    RULES,
    Candle,
    CandleFormatError,
    Rejection,
    check,
    epoch_to_ms,
    from_landing_row,
    validate,
)
from cryptoflow.sources.binance.wire import (
    _from_kline_payload_strict,
    from_kline_payload,
    from_rest_row,
    from_stream_message,
)

pytestmark = pytest.mark.quick

# A real closed 1m kline as Binance pushes it (values from BTCUSDT's 2021-06-10 00:00 hour).
K = {
    "t": 1623283200000,
    "T": 1623283259999,
    "s": "BTCUSDT",
    "i": "1m",
    "f": 100,
    "L": 200,
    "o": "37388.05000000",
    "c": "37584.76000000",
    "h": "37600.00000000",
    "l": "37254.05000000",
    "v": "798.27649900",
    "n": 10796,
    "x": True,
    "q": "29889500.42010495",
    "V": "400.1",
    "Q": "14900000.5",
    "B": "0",
}
REST_ROW = [
    1623283200000,
    "37388.05000000",
    "37600.00000000",
    "37254.05000000",
    "37584.76000000",
    "798.27649900",
    1623286799999,
    "29889500.42010495",
    10796,
    "400.1",
    "14900000.5",
    "0",
]
SYMBOLS = {"BTCUSDT", "ETHUSDT"}


def candle(**over) -> Candle:
    return dataclasses.replace(from_kline_payload(K, "websocket"), **over)


def reasons(c, syms=SYMBOLS):
    return [r for r, _ in validate(c, syms)]


def test_intervals():
    assert (
        INTERVAL_MS["1s"] == 1000 and INTERVAL_MS["1m"] == 60_000 and INTERVAL_MS["1h"] == 3_600_000
    )
    assert INTERVAL_MS["1d"] == 86_400_000 and INTERVAL_MS["1w"] == 604_800_000
    assert set(INTERVAL_MS) == {
        "1s",
        "1m",
        "3m",
        "5m",
        "15m",
        "30m",
        "1h",
        "2h",
        "4h",
        "6h",
        "8h",
        "12h",
        "1d",
        "3d",
        "1w",
    }
    # 1M has no fixed length: rejected explicitly, with the reason spelled out.
    problems = validate(candle(interval="1M"))
    assert problems[0][0] == "unknown_interval" and "no fixed length" in problems[0][1]


def test_kline_payload_parses_exact_values():
    c = from_kline_payload(K, "websocket")
    assert c.key == ("BTCUSDT", "1m", 1623283200000)
    assert c.close_time == c.open_time + 60_000 - 1
    assert c.open == Decimal("37388.05000000") and str(c.open) == "37388.05000000"  # as received
    assert c.trades == 10796 and c.closed is True and c.source == "websocket"
    assert validate(c, SYMBOLS) == [] and check(c, "raw", SYMBOLS) is None


def test_rest_row_and_dump_units():
    c = from_rest_row("BTCUSDT", "1h", REST_ROW, "rest")
    assert (
        c.open_time == 1623283200000
        and c.close_time == 1623286799999
        and validate(c, SYMBOLS) == []
    )
    # Dumps from 2025 on: µs. Same candle, same Candle.
    us = (
        ["1623283200000000"]
        + [str(v) for v in REST_ROW[1:6]]
        + ["1623286799999999"]
        + [str(v) for v in REST_ROW[7:]]
    )
    assert from_rest_row("BTCUSDT", "1h", us, "dump", time_unit="auto") == dataclasses.replace(
        c, source="dump"
    )
    with pytest.raises(CandleFormatError) as e:
        from_rest_row("BTCUSDT", "1h", REST_ROW[:5], "rest")
    assert e.value.reason == "malformed_row"


def test_epoch_units_by_magnitude():
    assert epoch_to_ms(1502942400) == 1502942400000  # seconds (old CDD rows)
    assert epoch_to_ms(1502942400000) == 1502942400000  # ms
    assert epoch_to_ms(1735689600000000) == 1735689600000  # µs (dumps from 2025)
    assert epoch_to_ms(1735689659999999, floor=True) == 1735689659999
    with pytest.raises(CandleFormatError):
        epoch_to_ms(1735689600000001)  # not a whole ms
    with pytest.raises(CandleFormatError):
        epoch_to_ms(10**18)


@pytest.mark.parametrize(
    "over, expected",
    [
        (dict(high=Decimal("37000"), low=Decimal("37254.05")), "high_below_low"),
        (dict(open=Decimal("37700")), "open_outside_range"),
        (dict(close=Decimal("1")), "close_outside_range"),
        (dict(low=Decimal("-1"), open=Decimal("0"), close=Decimal("0")), "negative_price"),
        (dict(base_volume=Decimal("-0.1")), "negative_volume"),
        (dict(taker_buy_quote_volume=Decimal("-5")), "negative_volume"),
        (dict(trades=-1), "negative_trades"),
        (dict(open_time=1623283200000 + 1, close_time=1623283260000), "misaligned_open_time"),
        (dict(close_time=1623283260000), "bad_close_time"),
        (dict(symbol="SHIBUSDT"), "unknown_symbol"),
        (dict(interval="7m"), "unknown_interval"),
        (dict(open_time=1623283200, close_time=1623283200 + 59_999), "implausible_open_time"),
    ],
)
def test_each_rule(over, expected):
    assert reasons(candle(**over))[0] == expected
    rej = check(candle(**over), "the raw message", SYMBOLS)
    assert isinstance(rej, Rejection) and rej.reason == expected and rej.raw == "the raw message"
    assert rej.symbol == candle(**over).symbol and rej.open_time == candle(**over).open_time


def test_required_reasons_exist_and_are_snake_case():
    needed = {
        "high_below_low",
        "open_outside_range",
        "close_outside_range",
        "negative_price",
        "negative_volume",
        "misaligned_open_time",
        "bad_close_time",
        "unknown_symbol",
        "unknown_interval",
        "conflicting_duplicate",
        "date_unix_mismatch",
        "unparseable_date",
    }
    assert needed <= set(REASONS)
    assert all(r.replace("_", "").isalpha() and r.islower() for r in REASONS)


def test_all_violations_reported_and_unknown_interval_skips_time_rules():
    c = candle(interval="1M", high=Decimal("1"))
    got = reasons(c)
    assert got[0] == "unknown_interval" and "high_below_low" in got
    assert "misaligned_open_time" not in got and "bad_close_time" not in got
    assert reasons(candle(symbol="XYZUSDT"), None) == []  # no symbol list: rule not applied


def test_weekly_candles_open_on_monday():
    monday = 1704067200000  # 2024-01-01, a Monday: Binance's 1w candles open then
    week = candle(interval="1w", open_time=monday, close_time=monday + 7 * 86_400_000 - 1)
    assert reasons(week) == []
    thursday = monday + 3 * 86_400_000
    assert "misaligned_open_time" in reasons(
        candle(interval="1w", open_time=thursday, close_time=thursday + 7 * 86_400_000 - 1)
    )


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("o", None, "missing_field"),
        ("o", "", "missing_field"),
        ("o", 37388.05, "bad_type"),  # a float has already lost the exact value
        ("o", "NaN", "bad_number"),
        ("o", "Infinity", "bad_number"),
        ("o", "1_000", "bad_number"),
        ("o", " 1", "bad_number"),
        ("o", "\u0661", "bad_number"),  # ARABIC-INDIC DIGIT ONE: Decimal() would accept it
        ("o", "abc", "bad_number"),
        (
            "t",
            "1623283200000",
            "bad_type",
        ),  # websocket times are JSON numbers... but strings of digits parse:
        ("t", True, "bad_type"),
        ("x", "true", "bad_type"),
        ("s", "BTC/USDT", "bad_type"),
        ("n", 1.5, "bad_type"),
    ],
)
def test_format_errors(field, value, reason):
    k = dict(K)
    k[field] = value
    if field == "t" and isinstance(value, str):
        # Digits in a string are still an exact integer: accepted (REST sends some numbers as strings).
        assert from_kline_payload(k, "ws").open_time == 1623283200000
        return
    with pytest.raises(CandleFormatError) as e:
        from_kline_payload(k, "ws")
    assert e.value.reason == reason


def test_stream_messages():
    import json

    combined = json.dumps(
        {"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": 1, "s": "BTCUSDT", "k": K}}
    )
    raw = json.dumps({"e": "kline", "E": 1, "s": "BTCUSDT", "k": K})
    assert (
        from_stream_message(combined, "ws")
        == from_stream_message(raw.encode(), "ws")
        == from_kline_payload(K, "ws")
    )
    for msg, reason in (
        ("{not json", "bad_json"),
        (b"\xff", "bad_json"),
        ('{"e":"serverShutdown","E":1}', "not_kline"),
        ('{"result":null,"id":1}', "not_kline"),
        ("[1,2]", "not_kline"),
        ('{"stream":"x","data":{"e":"kline","k":[]}}', "bad_type"),
    ):
        with pytest.raises(CandleFormatError) as e:
            from_stream_message(msg, "ws")
        assert e.value.reason == reason


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=60),
        st.binary(max_size=60),
        st.recursive(
            _json_scalar_base := st.one_of(
                st.none(), st.booleans(), st.integers(), st.text(max_size=8)
            ),
            lambda inner: st.one_of(
                st.lists(inner, max_size=3),
                st.dictionaries(
                    st.sampled_from(["e", "k", "data", "stream", "t", "o"]), inner, max_size=4
                ),
            ),
            max_leaves=10,
        ).map(__import__("json").dumps),
    )
)
def test_fuzz_stream_message(msg):
    try:
        c = from_stream_message(msg, "ws")
    except CandleFormatError as exc:
        assert exc.reason in REASONS
        return
    assert isinstance(c, Candle)


def test_missing_key():
    k = dict(K)
    del k["Q"]
    with pytest.raises(CandleFormatError) as e:
        from_kline_payload(k, "ws")
    assert e.value.reason == "missing_field" and "'Q'" in e.value.detail


def test_numbers_are_landed_as_received():
    c = from_kline_payload({**K, "v": "0.00000000", "V": "0.00000001", "q": "0", "Q": "1e-7"}, "ws")
    row = dict(zip(LANDING_COLUMNS, c.landing_row()))
    assert (
        row["open"],
        row["base_volume"],
        row["taker_buy_base_volume"],
        row["quote_volume"],
        row["taker_buy_quote_volume"],
    ) == ("37388.05000000", "0.00000000", "0.00000001", "0", "0.0000001")


@pytest.mark.parametrize(
    "value", ["100000000000000000000", "0.0000000000000000001", "1e25", "1e-19"]
)
def test_numbers_must_fit_the_warehouse_type(value):
    # decimal(38,18) downstream: a number that would be altered there is refused up front.
    with pytest.raises(CandleFormatError) as e:
        from_kline_payload({**K, "v": value}, "ws")
    assert e.value.reason == "bad_number"
    assert (
        from_kline_payload({**K, "v": "99999999999999999999.000000000000000001"}, "ws").base_volume
        > 0
    )


def test_landing_row_round_trip():
    c = candle()
    row = c.landing_row()
    assert len(row) == len(LANDING_COLUMNS)
    assert from_landing_row(row) == c
    cdd = candle(taker_buy_base_volume=None, taker_buy_quote_volume=None, trades=None)
    assert from_landing_row(cdd.landing_row()) == cdd


class _Probe:
    """A value like a Spark Column: operators build expressions, truth-testing raises."""

    def _op(self, *_):
        return _Probe()

    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = _op
    __add__ = __radd__ = __sub__ = __rsub__ = __mod__ = __rmod__ = __mul__ = __and__ = __or__ = (
        __invert__
    ) = _op

    def __bool__(self):
        raise TypeError("rules must use operators only (and/or/not/if call bool())")


def test_rules_are_written_with_operators_only():
    # `and`/`or`/`not`/`if`/`is` would call bool() on (or ignore) a Spark Column; operators work on both.
    row = type(
        "Row",
        (),
        {
            name: _Probe()
            for name in LANDING_COLUMNS
            + ("interval_ms", "interval_offset_ms", "interval_known", "symbol_known")
        },
    )()
    for rule in RULES:
        assert isinstance(rule.ok(row), _Probe), rule.reason


# --- fuzzing: never crash, either a Candle or a clear CandleFormatError ---------------------------

_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["1", "0.5", "-3", "1e5", "NaN", "", " 7", "1_0", "12.00000000"]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(list("tTsiocdhlvnxqVQB")), _json_scalar, max_size=16),
    st.sets(st.sampled_from(list("tTsiohlcvnxqVQ"))),
)
def test_fuzz_kline_payload(overrides, drop):
    k = {key: v for key, v in {**K, **overrides}.items() if key not in drop}
    try:
        fast = from_kline_payload(k, "ws")
    except CandleFormatError as exc:
        assert exc.reason in REASONS
        with pytest.raises(CandleFormatError):
            _from_kline_payload_strict(k, "ws")
        return
    # The fast path never accepts what the strict parser refuses, and reads it the same way.
    assert fast == _from_kline_payload_strict(k, "ws")
    validate(fast, SYMBOLS)  # validation never crashes on a parsed candle


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(_json_scalar, st.from_regex(r"-?\d{1,17}(\.\d{0,8})?", fullmatch=True)),
        min_size=0,
        max_size=13,
    ),
    st.sampled_from(["ms", "auto"]),
)
def test_fuzz_rest_row(row, unit):
    try:
        c = from_rest_row("BTCUSDT", "1m", row, "rest", time_unit=unit)
    except CandleFormatError as exc:
        assert exc.reason in REASONS
        return
    assert isinstance(c, Candle)
    validate(c, SYMBOLS)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=len(LANDING_COLUMNS), max_size=len(LANDING_COLUMNS)))
def test_fuzz_landing_row(row):
    try:
        c = from_landing_row(row)
    except CandleFormatError as exc:
        assert exc.reason in REASONS
        return
    validate(c, SYMBOLS)


# --- symbols: MATIC -> POL with a hole ------------------------------------------------------------


def test_matic_becomes_pol_with_a_hole():
    before = symbols.MATIC_DELISTED_MS - 60_000
    hole = symbols.MATIC_DELISTED_MS + 3_600_000
    after = symbols.POL_LISTED_MS
    for configured in ("POLUSDT", "MATICUSDT", "polusdt"):
        assert symbols.exchange_symbol(configured, before) == "MATICUSDT"
        assert symbols.exchange_symbol(configured, symbols.MATIC_DELISTED_MS) is None
        assert symbols.exchange_symbol(configured, hole) is None
        assert symbols.exchange_symbol(configured, after - 1) is None
        assert symbols.exchange_symbol(configured, after) == "POLUSDT"
    assert symbols.MATIC_DELISTED_MS == 1725937200000  # 2024-09-10T03:00:00Z
    assert symbols.POL_LISTED_MS == 1726221600000  # 2024-09-13T10:00:00Z
    assert symbols.exchange_symbol("BTCUSDT", before) == "BTCUSDT"


def test_segments_skip_the_hole():
    day = 86_400_000
    segs = symbols.segments_between(
        "POLUSDT", symbols.MATIC_DELISTED_MS - day, symbols.POL_LISTED_MS + day
    )
    assert [(s.symbol, s.start_ms, s.end_ms) for s in segs] == [
        ("MATICUSDT", symbols.MATIC_DELISTED_MS - day, symbols.MATIC_DELISTED_MS),
        ("POLUSDT", symbols.POL_LISTED_MS, symbols.POL_LISTED_MS + day),
    ]
    assert symbols.configured_for("MATICUSDT", ("BTCUSDT", "POLUSDT")) == "POLUSDT"
    assert symbols.configured_for("SHIBUSDT", ("BTCUSDT", "POLUSDT")) is None
    assert symbols.exchange_symbols(("BTCUSDT", "POLUSDT")) == {"BTCUSDT", "MATICUSDT", "POLUSDT"}


def test_configured_symbols_from_settings():
    from cryptoflow import settings

    assert symbols.configured_symbols(settings.load({"CRYPTOFLOW_SYMBOLS": "btcusdt,POLUSDT"})) == (
        "BTCUSDT",
        "POLUSDT",
    )


def test_the_candle_columns_are_defined_once_and_every_layer_uses_that_definition():
    from cryptoflow import candles
    from cryptoflow.etl import frames
    from cryptoflow.warehouse import load

    fields = [f.name for f in dataclasses.fields(candles.Candle)]
    assert [f for f in fields if f != "closed"] == list(candles.LANDING_COLUMNS)
    assert frames.CANDLE_FRAME is load.CANDLE_COLUMNS is candles.CANDLE_COLUMNS
    assert frames.VALUE_COLUMNS is load._VALUE_COLUMNS is candles.VALUE_COLUMNS
    assert len(
        candles.Candle("BTCUSDT", "1m", 0, 59_999, *[1] * 6, None, None, None, True, "x").values()
    ) == (len(candles.VALUE_COLUMNS) - len(candles.ROLLUP_COLUMNS))
