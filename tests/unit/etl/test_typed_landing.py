"""cryptoflow.etl.frames.typed_landing: landing text -> typed columns and a format verdict, exactly.

Each group of tests shares ONE Spark action (a module-scoped fixture collects the result once)."""

from __future__ import annotations

import pytest

from cryptoflow.candles import CandleFormatError, LANDING_COLUMNS, from_landing_row, parse_decimal
from cryptoflow.etl import frames
from tests.factories import (
    D,
    DEC,
    T0,
    collect,
    landing_frame,
    landing_row,
    raw_line,
    schema_of,
    slot,
)

# Spark is a service here, as in tests/integration/test_etl_copy_text.py: `-m quick` leaves these out.
pytestmark = pytest.mark.integration

# ---------------------------------------------------------------------------------------------
# typed_landing

TYPED_CASES = {
    "good": landing_row(source="good"),
    "optional_empty": landing_row(
        open_time=slot(1),
        taker_buy_base_volume=None,
        taker_buy_quote_volume=None,
        trades=None,
        source="optional_empty",
    ),
    "required_empty": landing_row(open_time=slot(2), close=None, source="required_empty"),
    "bad_number": landing_row(open_time=slot(3), open="abc", source="bad_number"),
    "bad_number_long": landing_row(
        open_time=slot(4), high="9" * 30 + "x" * 20, source="bad_number_long"
    ),
    "bad_type_trades": landing_row(open_time=slot(5), trades="1.5", source="bad_type_trades"),
    "bad_type_time": landing_row(open_time="soon", close_time=str(slot(6)), source="bad_type_time"),
    "first_decimal_wins": landing_row(
        open_time=slot(7), high="h", open="o", source="first_decimal_wins"
    ),
    "decimal_before_int": landing_row(open_time="t", low="l", source="decimal_before_int"),
    "malformed": ("a", "b", "c") + (None,) * 10 + ("malformed", "a,b,c"),
    "exact_decimals": landing_row(
        open_time=slot(8),
        open="0.000000000000000001",
        high="99999999999999999999",
        low="0",
        close="12345.678901234567890123",
        base_volume="37388.05000000",
        source="exact_decimals",
    ),
}


@pytest.fixture(scope="module")
def typed_df(spark):
    return frames.typed_landing(landing_frame(spark, TYPED_CASES.values()))


@pytest.fixture(scope="module")
def typed(typed_df):
    return {r["source"]: r for r in typed_df.collect()}


def test_typed_landing_schema_types_every_numeric_field_and_adds_the_format_verdict(typed_df):
    assert schema_of(typed_df) == [
        ("symbol", "string"),
        ("interval", "string"),
        ("source", "string"),
        ("_corrupt_record", "string"),
        ("raw_record", "string"),
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
        ("open_time", "bigint"),
        ("close_time", "bigint"),
        ("trades", "bigint"),
        ("format_reason", "string"),
        ("format_detail", "string"),
    ]


def test_typed_landing_parses_a_good_row_exactly_and_keeps_its_raw_line(typed):
    r = typed["good"]
    assert (r.symbol, r.interval, r.open_time, r.close_time, r.trades) == (
        "BTCUSDT",
        "1m",
        T0,
        T0 + 59_999,
        10,
    )
    assert (r.open, r.high, r.low, r.close) == (D("100.5"), D("101"), D("100"), D("100.75"))
    assert (r.base_volume, r.quote_volume, r.taker_buy_base_volume, r.taker_buy_quote_volume) == (
        D("2"),
        D("201.25"),
        D("1"),
        D("100.5"),
    )
    assert (r.format_reason, r.format_detail) == (None, None)
    assert (
        r.raw_record
        == raw_line(TYPED_CASES["good"])
        == (f"BTCUSDT,1m,{T0},{T0 + 59_999},100.5,101,100,100.75,2,201.25,1,100.5,10,good")
    )


def test_typed_landing_keeps_decimals_exact_to_18_places_and_20_integer_digits(typed):
    r = typed["exact_decimals"]
    assert r.format_reason is None
    assert r.open == D("1E-18") and r.high == D("99999999999999999999")
    assert r.close == D("12345.678901234567890123") and r.base_volume == D("37388.05")


def test_typed_landing_leaves_empty_fields_null_without_a_format_reason(typed):
    opt, req = typed["optional_empty"], typed["required_empty"]
    assert (
        opt.taker_buy_base_volume,
        opt.taker_buy_quote_volume,
        opt.trades,
        opt.format_reason,
    ) == (None, None, None, None)
    assert opt.raw_record.endswith(
        ",2,201.25,,,,optional_empty"
    )  # empty fields stay empty in the raw line
    assert (req.close, req.format_reason) == (
        None,
        None,
    )  # missing_field is validate's call, not this one's


def test_typed_landing_unparseable_decimal_is_bad_number_with_the_value(typed):
    assert (typed["bad_number"].format_reason, typed["bad_number"].format_detail) == (
        "bad_number",
        "open=abc does not parse",
    )
    assert typed["bad_number"].open is None


def test_typed_landing_quotes_at_most_40_characters_of_the_value(typed):
    r = typed["bad_number_long"]
    assert (r.format_reason, r.format_detail) == (
        "bad_number",
        "high=" + "9" * 30 + "x" * 10 + " does not parse",
    )


def test_typed_landing_unparseable_integer_is_bad_type(typed):
    assert (typed["bad_type_trades"].format_reason, typed["bad_type_trades"].format_detail) == (
        "bad_type",
        "trades=1.5 does not parse",
    )
    assert (typed["bad_type_time"].format_reason, typed["bad_type_time"].format_detail) == (
        "bad_type",
        "open_time=soon does not parse",
    )


def test_typed_landing_first_failing_field_wins_decimals_before_integers(typed):
    assert (
        typed["first_decimal_wins"].format_reason,
        typed["first_decimal_wins"].format_detail,
    ) == ("bad_number", "open=o does not parse")  # open is checked before high
    assert (
        typed["decimal_before_int"].format_reason,
        typed["decimal_before_int"].format_detail,
    ) == ("bad_number", "low=l does not parse")  # every decimal before open_time


def test_typed_landing_corrupt_record_is_malformed_row_with_the_line_as_read(typed):
    r = typed["malformed"]
    assert (r.format_reason, r.format_detail, r.raw_record) == (
        "malformed_row",
        "expected 14 columns",
        "a,b,c",
    )


def test_typed_landing_without_a_corrupt_record_column(spark):
    df = frames.typed_landing(
        landing_frame(spark, [landing_row(open="x", source="s")], with_corrupt=False)
    )
    assert "_corrupt_record" not in df.columns
    assert collect(df, ["format_reason", "format_detail", "raw_record"]) == [
        ("bad_number", "open=x does not parse", raw_line(landing_row(open="x", source="s")))
    ]


# Values the Python parsers (from_landing_row) refuse, with the reason they give.
ODD_VALUES = {
    "fraction": (
        landing_row(
            open_time=slot(0),
            open="0.0000000000000000001",
            low="0.0000000000000000001",
            source="fraction",
        ),
        "bad_number",
    ),  # 19 fraction digits: does not fit
    "padded": (landing_row(open_time=slot(1), open=" 100.5", source="padded"), "bad_number"),
    "fullwidth": (
        landing_row(open_time=slot(2), base_volume="\uff12", source="fullwidth"),
        "bad_number",
    ),
    "plus": (landing_row(open_time=slot(3), trades="+5", source="plus"), "bad_type"),
    "padded_int": (landing_row(open_time=slot(4), trades=" 5", source="padded_int"), "bad_type"),
}


@pytest.mark.parametrize("label", list(ODD_VALUES))
def test_the_python_parsers_refuse_the_odd_values(label):
    row, reason = ODD_VALUES[label]
    with pytest.raises(CandleFormatError) as exc:
        from_landing_row(dict(zip(LANDING_COLUMNS, row)))
    assert exc.value.reason == reason


def test_typed_landing_refuses_what_the_python_parsers_refuse(spark):
    typed = frames.typed_landing(landing_frame(spark, [row for row, _ in ODD_VALUES.values()]))
    assert dict(collect(typed, ["source", "format_reason"])) == {
        k: r for k, (_, r) in ODD_VALUES.items()
    }


# Text forms both parsers accept, and the exact value each must read.
PLAIN_VALUES = {
    "plus": "+100.5",
    "exponent": "1.005E2",
    "leading_dot": ".5",
    "trailing_dot": "100.",
    "negative_exponent": "100500E-3",
    "eighteen_digits": "0.000000000000000001",
    "zero_exponent": "0E-18",
}


def test_typed_landing_reads_what_the_python_parsers_read_and_the_same_value(spark):
    rows = [
        landing_row(open_time=slot(i), base_volume=v, source=k)
        for i, (k, v) in enumerate(PLAIN_VALUES.items())
    ]
    typed = frames.typed_landing(landing_frame(spark, rows))
    got = {r["source"]: (r["format_reason"], r["base_volume"]) for r in typed.collect()}
    for label, text in PLAIN_VALUES.items():
        assert got[label] == (None, parse_decimal(text, "base_volume")), label
