"""cryptoflow.etl.frames, DataFrame in / DataFrame out: tiny hand-written frames, exact expected rows.

Each group of tests shares ONE Spark action (a module-scoped fixture collects the result once), so
the whole file costs a few seconds beyond the session's SparkSession.
"""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from cryptoflow.candles import (MIN_OPEN_TIME_MS, CandleFormatError, LANDING_COLUMNS, check, from_landing_row,
                               parse_decimal)
from cryptoflow.etl import frames
from cryptoflow.warehouse.load import CANDLE_COLUMNS
from tests.factories import (D, DAY_MS, HOUR_MS, MINUTE_MS, T0, assert_rows, candle, candle_frame, collect,
                             landing_frame, landing_row, raw_line, schema_of)

# Spark is a service here, as in tests/integration/test_etl_copy_text.py: `-m quick` leaves these out.
pytestmark = pytest.mark.integration

SYMBOLS = ("BTCUSDT", "ETHUSDT")
DEC = "decimal(38,18)"


def slot(n: int) -> int:
    """The open time of the n-th one-minute key used by a test case (keys never collide by accident)."""
    return T0 + n * MINUTE_MS


# ---------------------------------------------------------------------------------------------
# typed_landing

TYPED_CASES = {
    "good": landing_row(source="good"),
    "optional_empty": landing_row(open_time=slot(1), taker_buy_base_volume=None, taker_buy_quote_volume=None,
                                  trades=None, source="optional_empty"),
    "required_empty": landing_row(open_time=slot(2), close=None, source="required_empty"),
    "bad_number": landing_row(open_time=slot(3), open="abc", source="bad_number"),
    "bad_number_long": landing_row(open_time=slot(4), high="9" * 30 + "x" * 20, source="bad_number_long"),
    "bad_type_trades": landing_row(open_time=slot(5), trades="1.5", source="bad_type_trades"),
    "bad_type_time": landing_row(open_time="soon", close_time=str(slot(6)), source="bad_type_time"),
    "first_decimal_wins": landing_row(open_time=slot(7), high="h", open="o", source="first_decimal_wins"),
    "decimal_before_int": landing_row(open_time="t", low="l", source="decimal_before_int"),
    "malformed": ("a", "b", "c") + (None,) * 10 + ("malformed", "a,b,c"),
    "exact_decimals": landing_row(open_time=slot(8), open="0.000000000000000001", high="99999999999999999999",
                                  low="0", close="12345.678901234567890123", base_volume="37388.05000000",
                                  source="exact_decimals"),
}


@pytest.fixture(scope="module")
def typed_df(spark):
    return frames.typed_landing(landing_frame(spark, TYPED_CASES.values()))


@pytest.fixture(scope="module")
def typed(typed_df):
    return {r["source"]: r for r in typed_df.collect()}


def test_typed_landing_schema_types_every_numeric_field_and_adds_the_format_verdict(typed_df):
    assert schema_of(typed_df) == [
        ("symbol", "string"), ("interval", "string"), ("source", "string"), ("_corrupt_record", "string"),
        ("raw_record", "string"), *[(c, DEC) for c in ("open", "high", "low", "close", "base_volume", "quote_volume",
                                                       "taker_buy_base_volume", "taker_buy_quote_volume")],
        ("open_time", "bigint"), ("close_time", "bigint"), ("trades", "bigint"),
        ("format_reason", "string"), ("format_detail", "string")]


def test_typed_landing_parses_a_good_row_exactly_and_keeps_its_raw_line(typed):
    r = typed["good"]
    assert (r.symbol, r.interval, r.open_time, r.close_time, r.trades) == ("BTCUSDT", "1m", T0, T0 + 59_999, 10)
    assert (r.open, r.high, r.low, r.close) == (D("100.5"), D("101"), D("100"), D("100.75"))
    assert (r.base_volume, r.quote_volume, r.taker_buy_base_volume, r.taker_buy_quote_volume) == (
        D("2"), D("201.25"), D("1"), D("100.5"))
    assert (r.format_reason, r.format_detail) == (None, None)
    assert r.raw_record == raw_line(TYPED_CASES["good"]) == (
        f"BTCUSDT,1m,{T0},{T0 + 59_999},100.5,101,100,100.75,2,201.25,1,100.5,10,good")


def test_typed_landing_keeps_decimals_exact_to_18_places_and_20_integer_digits(typed):
    r = typed["exact_decimals"]
    assert r.format_reason is None
    assert r.open == D("1E-18") and r.high == D("99999999999999999999")
    assert r.close == D("12345.678901234567890123") and r.base_volume == D("37388.05")


def test_typed_landing_leaves_empty_fields_null_without_a_format_reason(typed):
    opt, req = typed["optional_empty"], typed["required_empty"]
    assert (opt.taker_buy_base_volume, opt.taker_buy_quote_volume, opt.trades, opt.format_reason) == (
        None, None, None, None)
    assert opt.raw_record.endswith(",2,201.25,,,,optional_empty")  # empty fields stay empty in the raw line
    assert (req.close, req.format_reason) == (None, None)  # missing_field is validate's call, not this one's


def test_typed_landing_unparseable_decimal_is_bad_number_with_the_value(typed):
    assert (typed["bad_number"].format_reason, typed["bad_number"].format_detail) == (
        "bad_number", "open=abc does not parse")
    assert typed["bad_number"].open is None


def test_typed_landing_quotes_at_most_40_characters_of_the_value(typed):
    r = typed["bad_number_long"]
    assert (r.format_reason, r.format_detail) == ("bad_number", "high=" + "9" * 30 + "x" * 10 + " does not parse")


def test_typed_landing_unparseable_integer_is_bad_type(typed):
    assert (typed["bad_type_trades"].format_reason, typed["bad_type_trades"].format_detail) == (
        "bad_type", "trades=1.5 does not parse")
    assert (typed["bad_type_time"].format_reason, typed["bad_type_time"].format_detail) == (
        "bad_type", "open_time=soon does not parse")


def test_typed_landing_first_failing_field_wins_decimals_before_integers(typed):
    assert (typed["first_decimal_wins"].format_reason, typed["first_decimal_wins"].format_detail) == (
        "bad_number", "open=o does not parse")  # open is checked before high
    assert (typed["decimal_before_int"].format_reason, typed["decimal_before_int"].format_detail) == (
        "bad_number", "low=l does not parse")  # every decimal before open_time


def test_typed_landing_corrupt_record_is_malformed_row_with_the_line_as_read(typed):
    r = typed["malformed"]
    assert (r.format_reason, r.format_detail, r.raw_record) == ("malformed_row", "expected 14 columns", "a,b,c")


def test_typed_landing_without_a_corrupt_record_column(spark):
    df = frames.typed_landing(landing_frame(spark, [landing_row(open="x", source="s")], with_corrupt=False))
    assert "_corrupt_record" not in df.columns
    assert collect(df, ["format_reason", "format_detail", "raw_record"]) == [
        ("bad_number", "open=x does not parse", raw_line(landing_row(open="x", source="s")))]


# Values the Python parsers (from_landing_row) refuse, with the reason they give.
ODD_VALUES = {
    "fraction": (landing_row(open_time=slot(0), open="0.0000000000000000001", low="0.0000000000000000001",
                             source="fraction"), "bad_number"),  # 19 fraction digits: does not fit
    "padded": (landing_row(open_time=slot(1), open=" 100.5", source="padded"), "bad_number"),
    "fullwidth": (landing_row(open_time=slot(2), base_volume="\uff12", source="fullwidth"), "bad_number"),
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
    assert dict(collect(typed, ["source", "format_reason"])) == {k: r for k, (_, r) in ODD_VALUES.items()}


# Text forms both parsers accept, and the exact value each must read.
PLAIN_VALUES = {"plus": "+100.5", "exponent": "1.005E2", "leading_dot": ".5", "trailing_dot": "100.",
                "negative_exponent": "100500E-3", "eighteen_digits": "0.000000000000000001",
                "zero_exponent": "0E-18"}


def test_typed_landing_reads_what_the_python_parsers_read_and_the_same_value(spark):
    rows = [landing_row(open_time=slot(i), base_volume=v, source=k) for i, (k, v) in enumerate(PLAIN_VALUES.items())]
    typed = frames.typed_landing(landing_frame(spark, rows))
    got = {r["source"]: (r["format_reason"], r["base_volume"]) for r in typed.collect()}
    for label, text in PLAIN_VALUES.items():
        assert got[label] == (None, parse_decimal(text, "base_volume")), label


# ---------------------------------------------------------------------------------------------
# validate (and resolve_duplicates, source_candles, quarantine_rows on the same verdicts)

# label -> (row, expected status, expected reason). Rows pass or break exactly one rule, at its edge
# where there is one. Every key differs, except in the duplicate cases further down.
RULE_CASES = {
    "valid": (landing_row(open_time=slot(10)), "kept", None),
    # missing_field
    "missing_close": (landing_row(open_time=slot(11), close=None), "rejected", "missing_field"),
    "missing_optional": (landing_row(open_time=slot(12), taker_buy_base_volume=None, taker_buy_quote_volume=None,
                                     trades=None), "kept", None),
    # format reasons pass through
    "bad_number": (landing_row(open_time=slot(13), open="abc"), "rejected", "bad_number"),
    # unknown_interval
    "interval_7m": (landing_row(interval="7m", open_time=slot(14), close_time=slot(14) + 419_999),
                    "rejected", "unknown_interval"),
    "interval_1M": (landing_row(interval="1M", open_time=T0, close_time=T0 + 31 * DAY_MS - 1),
                    "rejected", "unknown_interval"),
    "interval_1w_monday": (landing_row(interval="1w", open_time=T0, close_time=T0 + 7 * DAY_MS - 1), "kept", None),
    # unknown_symbol
    "symbol_eth": (landing_row(symbol="ETHUSDT", open_time=slot(15)), "kept", None),
    "symbol_shib": (landing_row(symbol="SHIBUSDT", open_time=slot(15)), "rejected", "unknown_symbol"),
    # implausible_open_time
    "open_time_min": (landing_row(open_time=MIN_OPEN_TIME_MS), "kept", None),
    "open_time_seconds": (landing_row(open_time=T0 // 1000), "rejected", "implausible_open_time"),
    # misaligned_open_time
    "misaligned_1m": (landing_row(open_time=slot(16) + 5), "rejected", "misaligned_open_time"),
    "misaligned_1w_tuesday": (landing_row(interval="1w", open_time=T0 + DAY_MS, close_time=T0 + 8 * DAY_MS - 1),
                              "rejected", "misaligned_open_time"),
    # bad_close_time
    "close_time_off": (landing_row(open_time=slot(17), close_time=slot(18)), "rejected", "bad_close_time"),
    # negative_price
    "prices_zero": (landing_row(open_time=slot(19), open="0", high="0", low="0", close="0"), "kept", None),
    "low_negative": (landing_row(open_time=slot(20), low="-0.000000000000000001"), "rejected", "negative_price"),
    # high_below_low (and the other range rules at their edge: high == low == open == close)
    "flat": (landing_row(open_time=slot(21), open="100", high="100", low="100", close="100"), "kept", None),
    "high_below_low": (landing_row(open_time=slot(22), open="100", high="99.999999999999999999", low="100",
                                   close="100"), "rejected", "high_below_low"),
    # open_outside_range
    "open_at_low": (landing_row(open_time=slot(23), open="100"), "kept", None),
    "open_above_high": (landing_row(open_time=slot(24), open="101.000000000000000001"), "rejected",
                        "open_outside_range"),
    # close_outside_range
    "close_at_high": (landing_row(open_time=slot(25), close="101"), "kept", None),
    "close_below_low": (landing_row(open_time=slot(26), close="99"), "rejected", "close_outside_range"),
    # negative_volume (three rules share the reason)
    "volumes_zero": (landing_row(open_time=slot(27), base_volume="0", quote_volume="0", taker_buy_base_volume="0",
                                 taker_buy_quote_volume="0"), "kept", None),
    "base_negative": (landing_row(open_time=slot(28), base_volume="-1"), "rejected", "negative_volume"),
    "taker_base_negative": (landing_row(open_time=slot(29), taker_buy_base_volume="-1"), "rejected",
                            "negative_volume"),
    "taker_quote_negative": (landing_row(open_time=slot(30), taker_buy_quote_volume="-0.5"), "rejected",
                             "negative_volume"),
    # negative_trades
    "trades_zero": (landing_row(open_time=slot(31), trades="0"), "kept", None),
    "trades_negative": (landing_row(open_time=slot(32), trades="-1"), "rejected", "negative_trades"),
    # several violations: the first in RULES order is the reason, all are in the detail
    "two_violations": (landing_row(open_time=slot(33), high="99", low="100", open="100", close="100",
                                   trades="-3"), "rejected", "high_below_low"),
}


def _labelled(row: tuple, label: str) -> tuple:
    """`row` with `source` := label (how the verdicts are told apart)."""
    return row[:13] + (label,) + row[14:]


DUP_ROWS = [
    # equal copies collapse (numerically equal spellings too), whatever their source
    landing_row(open_time=slot(40), source="dup_exact"),
    landing_row(open_time=slot(40), source="dup_exact"),
    landing_row(open_time=slot(41), open="100.5", source="dup_spelling"),
    landing_row(open_time=slot(41), open="100.500000000000000000", source="dup_spelling"),
    landing_row(open_time=slot(42), source="dup_src_b"),
    landing_row(open_time=slot(42), source="dup_src_a"),
    # copies that differ: all of them are conflicts
    landing_row(open_time=slot(43), close="100.75", source="dup_conflict"),
    landing_row(open_time=slot(43), close="100.76", source="dup_conflict"),
    landing_row(open_time=slot(44), source="dup_three"),
    landing_row(open_time=slot(44), source="dup_three"),
    landing_row(open_time=slot(44), trades="11", source="dup_three"),
    # equal copies of an invalid candle: one judged (rejected), the other collapsed
    landing_row(open_time=slot(45), high="99", low="100", open="100", close="100", source="dup_invalid"),
    landing_row(open_time=slot(45), high="99", low="100", open="100", close="100", source="dup_invalid"),
    # a conflict wins over a rule one copy breaks
    landing_row(open_time=slot(46), close="100.75", source="dup_conflict_invalid"),
    landing_row(open_time=slot(46), close="99", source="dup_conflict_invalid"),
    # an unreadable copy is no duplicate: the readable one is kept
    landing_row(open_time=slot(47), source="dup_unreadable"),
    landing_row(open_time=slot(47), open="abc", source="dup_unreadable"),
    # the key is (symbol, interval, open_time): another symbol at the same time is no duplicate
    landing_row(open_time=slot(48), source="same_time_btc"),
    landing_row(symbol="ETHUSDT", open_time=slot(48), source="same_time_eth"),
]
VALIDATE_INPUT = [_labelled(row, label) for label, (row, _, _) in RULE_CASES.items()] + DUP_ROWS


@pytest.fixture(scope="module")
def verdicts_df(spark):
    df = frames.validate(frames.typed_landing(landing_frame(spark, VALIDATE_INPUT)), SYMBOLS).cache()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def verdicts(verdicts_df):
    out: dict[str, list] = {}
    for r in verdicts_df.collect():
        out.setdefault(r["source"], []).append(r)
    return out


def test_validate_output_columns(verdicts_df):
    assert verdicts_df.columns == ["symbol", "interval", "source", "_corrupt_record", "raw_record", "open", "high",
                                   "low", "close", "base_volume", "quote_volume", "taker_buy_base_volume",
                                   "taker_buy_quote_volume", "open_time", "close_time", "trades", "reason",
                                   "detail", "status"]


def test_validate_gives_every_input_row_exactly_one_verdict(verdicts):
    assert sum(len(v) for v in verdicts.values()) == len(VALIDATE_INPUT)
    assert {r.status for v in verdicts.values() for r in v} == {"kept", "collapsed", "rejected"}


@pytest.mark.parametrize("label", list(RULE_CASES))
def test_validate_rule_case(verdicts, label):
    _, status, reason = RULE_CASES[label]
    [r] = verdicts[label]
    assert (r.status, r.reason) == (status, reason)
    assert (r.detail is None) == (status == "kept")


@pytest.mark.parametrize("label", list(RULE_CASES))
def test_validate_rule_case_agrees_with_the_python_rules(label):
    """The expectations above are the ingester's/importers' own verdicts (no Spark needed)."""
    row, _, reason = RULE_CASES[label]
    try:
        rejection = check(from_landing_row(dict(zip(LANDING_COLUMNS, row))), "raw", set(SYMBOLS))
        python = None if rejection is None else rejection.reason
    except CandleFormatError as exc:
        python = exc.reason
    assert python == reason


def test_validate_details_quote_the_rule_and_the_values(verdicts):
    assert verdicts["missing_close"][0].detail == "a required field is empty: close"
    assert verdicts["bad_number"][0].detail == "open=abc does not parse"
    assert verdicts["interval_7m"][0].detail.startswith(
        "interval is not a fixed-length Binance interval (interval=7m)")
    assert verdicts["close_below_low"][0].detail == (
        "close is outside [low, high] (close=99.000000000000000000, low=100.000000000000000000,"
        " high=101.000000000000000000)")
    # Both violations are in the detail, in RULES order; the first is the reason.
    assert verdicts["two_violations"][0].detail == (
        "high is below low (low=100.000000000000000000, high=99.000000000000000000); "
        "open is outside [low, high] (open=100.000000000000000000, low=100.000000000000000000,"
        " high=99.000000000000000000); "
        "close is outside [low, high] (close=100.000000000000000000, low=100.000000000000000000,"
        " high=99.000000000000000000); "
        "trade count is negative (trades=-3)")


def _statuses(rows) -> list[tuple]:
    return sorted((r.status, r.reason or "") for r in rows)


def test_validate_exact_duplicates_collapse_to_one_kept_row(verdicts):
    assert _statuses(verdicts["dup_exact"]) == [("collapsed", ""), ("kept", "")]
    assert all(r.detail is None for r in verdicts["dup_exact"])


def test_validate_numerically_equal_spellings_are_the_same_candle(verdicts):
    assert _statuses(verdicts["dup_spelling"]) == [("collapsed", ""), ("kept", "")]
    [kept] = [r for r in verdicts["dup_spelling"] if r.status == "kept"]
    # The kept copy is chosen by content (source, then raw line), never by arrival order.
    assert kept.raw_record == min(r.raw_record for r in verdicts["dup_spelling"])


def test_validate_equal_copies_from_two_sources_keep_the_first_source_by_name(verdicts):
    assert [r.status for r in verdicts["dup_src_a"]] == ["kept"]
    assert [r.status for r in verdicts["dup_src_b"]] == ["collapsed"]


def test_validate_conflicting_duplicates_are_all_quarantined(verdicts):
    assert _statuses(verdicts["dup_conflict"]) == [("rejected", "conflicting_duplicate")] * 2
    assert {r.detail for r in verdicts["dup_conflict"]} == {
        f"2 copies of BTCUSDT 1m open_time={slot(43)} with 2 different sets of values"}


def test_validate_two_equal_copies_and_one_different_are_three_conflicts(verdicts):
    assert _statuses(verdicts["dup_three"]) == [("rejected", "conflicting_duplicate")] * 3
    assert {r.detail for r in verdicts["dup_three"]} == {
        f"3 copies of BTCUSDT 1m open_time={slot(44)} with 2 different sets of values"}


def test_validate_equal_copies_of_an_invalid_candle_one_rejected_one_collapsed(verdicts):
    # As importers/common.finish: duplicates are settled first, then the kept copy is judged.
    assert _statuses(verdicts["dup_invalid"]) == [("collapsed", ""), ("rejected", "high_below_low")]


def test_validate_a_conflict_takes_precedence_over_a_rule(verdicts):
    assert _statuses(verdicts["dup_conflict_invalid"]) == [("rejected", "conflicting_duplicate")] * 2


def test_validate_an_unreadable_copy_is_not_a_duplicate(verdicts):
    assert _statuses(verdicts["dup_unreadable"]) == [("kept", ""), ("rejected", "bad_number")]


def test_validate_same_open_time_of_another_symbol_is_no_duplicate(verdicts):
    assert [r.status for r in verdicts["same_time_btc"] + verdicts["same_time_eth"]] == ["kept", "kept"]


def test_validate_without_symbols_skips_the_unknown_symbol_rule(spark):
    typed = frames.typed_landing(landing_frame(spark, [landing_row(symbol="SHIBUSDT")]))
    assert collect(frames.validate(typed, None), ["status", "reason"]) == [("kept", None)]


# Spark puts every null key in one window partition: such rows must not be compared as copies.
def test_validate_rows_without_a_key_are_missing_field_not_duplicates(spark):
    rows = [landing_row(open_time=None, close_time=str(slot(0) + 59_999), close="100.6", source="a"),
            landing_row(open_time=None, close_time=str(slot(1) + 59_999), close="100.7", source="b")]
    verdicts = frames.validate(frames.typed_landing(landing_frame(spark, rows)), SYMBOLS)
    assert collect(verdicts, ["source", "status", "reason"]) == [
        ("a", "rejected", "missing_field"), ("b", "rejected", "missing_field")]


def test_resolve_duplicates_marks_kept_collapsed_and_conflict(spark):
    rows = [landing_row(open_time=slot(0), source="one"),
            landing_row(open_time=slot(1), source="eq"), landing_row(open_time=slot(1), source="eq"),
            landing_row(open_time=slot(2), close="100.75", source="x"),
            landing_row(open_time=slot(2), close="100.5", source="y")]
    out = frames.resolve_duplicates(frames.typed_landing(landing_frame(spark, rows)))
    assert out.columns[-2:] == ["dup_status", "dup_detail"]
    detail = f"2 copies of BTCUSDT 1m open_time={slot(2)} with 2 different sets of values"
    assert_rows(out, [("one", "kept", None), ("eq", "kept", None), ("eq", "collapsed", None),
                      ("x", "conflict", detail), ("y", "conflict", detail)],
                ["source", "dup_status", "dup_detail"])


def test_source_candles_are_the_kept_rows_as_binance_candles(verdicts_df, verdicts):
    out = frames.source_candles(verdicts_df)
    assert tuple(out.columns) == frames.CANDLE_FRAME
    assert dict(schema_of(out))["minute_count"] == "int" and dict(schema_of(out))["is_complete"] == "boolean"
    rows = out.collect()
    kept = sorted((r.source, r.open_time) for v in verdicts.values() for r in v if r.status == "kept")
    assert sorted((r.source, r.open_time) for r in rows) == kept
    assert {(r.minute_count, r.is_complete) for r in rows} == {(None, True)}
    [eq] = [r for r in rows if r.open_time == slot(42)]
    assert eq.source == "dup_src_a"  # the collapsed copy is not loaded twice


def test_quarantine_rows_are_the_rejected_rows_with_their_raw_line(verdicts_df, verdicts):
    out = frames.quarantine_rows(verdicts_df)
    assert tuple(out.columns) == frames.QUARANTINE_FRAME
    want = sorted((r.source, r.reason, r.raw_record) for v in verdicts.values() for r in v if r.status == "rejected")
    assert sorted((r.source, r.reason, r.raw_record) for r in out.collect()) == want
    assert ("bad_number", raw_line(_labelled(RULE_CASES["bad_number"][0], "bad_number"))) in {
        (reason, raw) for _, reason, raw in want}


# ---------------------------------------------------------------------------------------------
# resolve_against_stored

def test_resolve_against_stored_source_candles(spark):
    """derived=False, as merge_staged(derived=False): a stored source candle stays; a differing
    newcomer is a late update (refused, counted); a stored rollup is replaced; a new key inserted."""
    k = [slot(i) for i in range(8)]
    new = candle_frame(spark, [
        candle(open_time=k[1], close="105", source="new"),                       # new key
        candle(open_time=k[2], close="105", source="new"),                       # identical re-delivery
        candle(open_time=k[3], close="106", source="new"),                       # late update
        candle(interval="1h", open_time=T0 + HOUR_MS, close="105", source="new"),  # over a stored rollup
        candle(open_time=k[5], taker_buy_base_volume=None, trades=None, source="new"),  # equal nulls
        candle(open_time=k[6], taker_buy_base_volume=None, source="new"),        # null vs a value
        candle(interval="1h", open_time=k[0], source="new"),                     # 1h: not the 1m key below
    ])
    stored = candle_frame(spark, [
        candle(open_time=k[2], close="105.000", source="stored"),
        candle(open_time=k[3], close="105", source="stored"),
        candle(interval="1h", open_time=T0 + HOUR_MS, close="104", minute_count=60, source="rollup:1m"),
        candle(open_time=k[4], source="stored"),                                 # stored only
        candle(open_time=k[5], taker_buy_base_volume=None, trades=None, source="stored"),
        candle(open_time=k[6], source="stored"),
        candle(open_time=k[0], source="stored"),
    ])
    out = frames.resolve_against_stored(new, stored, derived=False)
    assert tuple(out.columns) == frames.CANDLE_FRAME + ("refused_new",)
    assert_rows(out, [
        ("1m", k[0], D("105"), None, "stored", False),
        ("1h", k[0], D("105"), None, "new", False),
        ("1m", k[1], D("105"), None, "new", False),
        ("1m", k[2], D("105"), None, "stored", False),
        ("1m", k[3], D("105"), None, "stored", True),
        ("1h", T0 + HOUR_MS, D("105"), None, "new", False),
        ("1m", k[4], D("105"), None, "stored", False),
        ("1m", k[5], D("105"), None, "stored", False),
        ("1m", k[6], D("105"), None, "stored", True),
    ], ["interval", "open_time", "close", "minute_count", "source", "refused_new"])


def test_resolve_against_stored_rollups(spark):
    """derived=True: a rollup never replaces a source candle (refused, counted as kept_source), and
    always replaces a stored rollup, equal or not."""
    h = [T0 + i * HOUR_MS for i in range(5)]

    def rollup(t, minutes=60, close="105"):
        return candle(interval="1h", open_time=t, close=close, minute_count=minutes, is_complete=minutes == 60,
                      source="rollup:1m")

    new = candle_frame(spark, [rollup(h[0]), rollup(h[1]), rollup(h[2]), rollup(h[3])])
    stored = candle_frame(spark, [
        candle(interval="1h", open_time=h[0], close="104", source="binance"),  # a source candle
        rollup(h[1], minutes=59, close="103"),                                  # an incomplete rollup
        rollup(h[3]),                                                           # the same rollup
        candle(interval="1h", open_time=h[4], source="binance"),               # stored only
    ])
    assert_rows(frames.resolve_against_stored(new, stored, derived=True), [
        (h[0], D("104"), None, True, "binance", True),
        (h[1], D("105"), 60, True, "rollup:1m", False),
        (h[2], D("105"), 60, True, "rollup:1m", False),
        (h[3], D("105"), 60, True, "rollup:1m", False),
        (h[4], D("105"), None, True, "binance", False),
    ], ["open_time", "close", "minute_count", "is_complete", "source", "refused_new"])


# ---------------------------------------------------------------------------------------------
# rollup_hours

def _minute(symbol, i, *, hour=0, **over):
    """The i-th minute of `hour` with distinct, 18-digit exact values."""
    o = D("100") + D(i) / 100 + D("0.000000000000000001") * i
    values = dict(open=o, high=o + D("0.5") + D(i % 7) / 10, low=o - D("0.25") - D(i % 5) / 10, close=o + D("0.01"),
                  base_volume=D("1.000000000000000001") * (i + 1), quote_volume=D("100.123456789012345678") * (i + 1),
                  taker_buy_base_volume=D("0.5") + D("1E-18") * i, taker_buy_quote_volume=D("50.000000000000000001"),
                  trades=i + 1)
    values.update(over)
    t = T0 + hour * HOUR_MS + i * MINUTE_MS
    return (symbol, "1m", t, t + MINUTE_MS - 1, values["open"], values["high"], values["low"], values["close"],
            values["base_volume"], values["quote_volume"], values["taker_buy_base_volume"],
            values["taker_buy_quote_volume"], values["trades"], None, True, "test")


def _expected_hour(minutes):
    m = sorted(minutes, key=lambda r: r[2])

    def full_sum(i):
        return None if any(r[i] is None for r in m) else sum(r[i] for r in m)

    hour = m[0][2] - m[0][2] % HOUR_MS
    return (m[0][0], "1h", hour, hour + HOUR_MS - 1, m[0][4], max(r[5] for r in m), min(r[6] for r in m), m[-1][7],
            sum(r[8] for r in m), sum(r[9] for r in m), full_sum(10), full_sum(11), full_sum(12), len(m), len(m) == 60,
            "rollup:1m")


BTC_HOUR = [_minute("BTCUSDT", i) for i in range(60)]
ETH_PARTIAL = [_minute("ETHUSDT", i, hour=1, **({"taker_buy_base_volume": None, "trades": None} if i == 5 else {}))
               for i in (0, 5, 59)]


@pytest.fixture(scope="module")
def rollups(spark):
    # Minutes in reverse arrival order (open/close come from the times, not the order), plus a 1h
    # candle that must not be counted as a minute.
    rows = list(reversed(BTC_HOUR)) + ETH_PARTIAL + [candle(interval="1h", open_time=T0, base_volume="1000")]
    df = frames.rollup_hours(candle_frame(spark, rows))
    return schema_of(df), collect(df)


def test_rollup_hours_schema_is_a_candle_frame(rollups):
    schema, _ = rollups
    assert schema == [("symbol", "string"), ("interval", "string"), ("open_time", "bigint"), ("close_time", "bigint"),
                      *[(c, DEC) for c in ("open", "high", "low", "close", "base_volume", "quote_volume",
                                           "taker_buy_base_volume", "taker_buy_quote_volume")],
                      ("trades", "bigint"), ("minute_count", "int"), ("is_complete", "boolean"), ("source", "string")]


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
    return candle_frame(spark, [candle(open_time=t, close=str(100 + i)) for i, t in enumerate(EDGE_TIMES)])


def test_day_of_is_the_utc_date_of_a_ms_timestamp(edge_candles):
    from datetime import date

    got = collect(edge_candles.select("open_time", frames.day_of(F.col("open_time")).alias("d")))
    assert got == [(EDGE_TIMES[0], date(2023, 12, 31)), (EDGE_TIMES[1], date(2024, 1, 1)),
                   (EDGE_TIMES[2], date(2024, 1, 1))]


def test_with_partition_adds_the_date_and_changes_nothing_else(edge_candles):
    from datetime import date

    out = frames.with_partition(edge_candles)
    assert schema_of(out) == schema_of(edge_candles) + [("date", "date")]
    assert_rows(out, [r + (d,) for r, d in zip(edge_candles.collect(),
                                                [date(2023, 12, 31), date(2024, 1, 1), date(2024, 1, 1)])])


def test_to_lake_stores_timestamps_and_the_date_partition(edge_candles):
    from datetime import date

    out = frames.to_lake(edge_candles)
    schema = dict(schema_of(out))
    assert (schema["open_time"], schema["close_time"], schema["date"]) == ("timestamp", "timestamp", "date")
    assert out.columns == list(frames.CANDLE_FRAME) + ["date"]
    fmt = "yyyy-MM-dd HH:mm:ss.SSS"  # rendered in the session's UTC, not the Python process's zone
    assert collect(out.select(F.unix_millis("open_time"), F.unix_millis("close_time"), F.date_format("open_time", fmt),
                              F.date_format("close_time", fmt), "date", "close")) == [
        (EDGE_TIMES[0], T0 - 1, "2023-12-31 23:59:00.000", "2023-12-31 23:59:59.999", date(2023, 12, 31), D("100")),
        (T0, T0 + 59_999, "2024-01-01 00:00:00.000", "2024-01-01 00:00:59.999", date(2024, 1, 1), D("101")),
        (EDGE_TIMES[2], T0 + DAY_MS - 1, "2024-01-01 23:59:00.000", "2024-01-01 23:59:59.999", date(2024, 1, 1),
         D("102")),
    ]


def test_to_warehouse_orders_columns_as_market_candles_with_timestamps(edge_candles):
    out = frames.to_warehouse(edge_candles.select(*reversed(edge_candles.columns)), CANDLE_COLUMNS)
    assert out.columns == list(CANDLE_COLUMNS)
    schema = dict(schema_of(out))
    assert (schema["open_time"], schema["close_time"], schema["open"], schema["trades"]) == (
        "timestamp", "timestamp", DEC, "bigint")
    assert collect(out.select(F.unix_millis("open_time"), F.unix_millis("close_time"), "close", "source")) == [
        (t, t + MINUTE_MS - 1, D(100 + i), "test") for i, t in enumerate(EDGE_TIMES)]


def test_to_warehouse_with_a_column_subset(edge_candles):
    out = frames.to_warehouse(edge_candles, ("close", "open_time", "symbol"))
    assert schema_of(out) == [("close", DEC), ("open_time", "timestamp"), ("symbol", "string")]
    assert collect(out.select("close", F.unix_millis("open_time"), "symbol")) == [
        (D(100 + i), t, "BTCUSDT") for i, t in enumerate(EDGE_TIMES)]


def test_candle_frame_matches_market_candles_columns():
    assert frames.CANDLE_FRAME == CANDLE_COLUMNS
