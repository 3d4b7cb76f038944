"""cryptoflow.etl.frames.validate (and resolve_duplicates, source_candles, quarantine_rows): one verdict per row.

Every rule at its edge, the duplicates' cases, and agreement with the Python rules of
cryptoflow.candles; the verdicts come from ONE Spark action (a module-scoped fixture)."""

from __future__ import annotations

import pytest

from cryptoflow.candles import (
    MIN_OPEN_TIME_MS,
    CandleFormatError,
    LANDING_COLUMNS,
    check,
    from_landing_row,
)
from cryptoflow.etl import frames
from tests.factories import (
    DAY_MS,
    T0,
    assert_rows,
    collect,
    landing_frame,
    landing_row,
    raw_line,
    schema_of,
    slot,
)

# Spark is a service here, as in tests/integration/test_etl_copy_text.py: `-m quick` leaves these out.
pytestmark = pytest.mark.integration

SYMBOLS = ("BTCUSDT", "ETHUSDT")

# ---------------------------------------------------------------------------------------------
# validate (and resolve_duplicates, source_candles, quarantine_rows on the same verdicts)

# label -> (row, expected status, expected reason). Rows pass or break exactly one rule, at its edge
# where there is one. Every key differs, except in the duplicate cases further down.
RULE_CASES = {
    "valid": (landing_row(open_time=slot(10)), "kept", None),
    # missing_field
    "missing_close": (landing_row(open_time=slot(11), close=None), "rejected", "missing_field"),
    "missing_optional": (
        landing_row(
            open_time=slot(12), taker_buy_base_volume=None, taker_buy_quote_volume=None, trades=None
        ),
        "kept",
        None,
    ),
    # format reasons pass through
    "bad_number": (landing_row(open_time=slot(13), open="abc"), "rejected", "bad_number"),
    # unknown_interval
    "interval_7m": (
        landing_row(interval="7m", open_time=slot(14), close_time=slot(14) + 419_999),
        "rejected",
        "unknown_interval",
    ),
    "interval_1M": (
        landing_row(interval="1M", open_time=T0, close_time=T0 + 31 * DAY_MS - 1),
        "rejected",
        "unknown_interval",
    ),
    "interval_1w_monday": (
        landing_row(interval="1w", open_time=T0, close_time=T0 + 7 * DAY_MS - 1),
        "kept",
        None,
    ),
    # unknown_symbol
    "symbol_eth": (landing_row(symbol="ETHUSDT", open_time=slot(15)), "kept", None),
    "symbol_shib": (
        landing_row(symbol="SHIBUSDT", open_time=slot(15)),
        "rejected",
        "unknown_symbol",
    ),
    # implausible_open_time
    "open_time_min": (landing_row(open_time=MIN_OPEN_TIME_MS), "kept", None),
    "open_time_seconds": (landing_row(open_time=T0 // 1000), "rejected", "implausible_open_time"),
    # misaligned_open_time
    "misaligned_1m": (landing_row(open_time=slot(16) + 5), "rejected", "misaligned_open_time"),
    "misaligned_1w_tuesday": (
        landing_row(interval="1w", open_time=T0 + DAY_MS, close_time=T0 + 8 * DAY_MS - 1),
        "rejected",
        "misaligned_open_time",
    ),
    # bad_close_time
    "close_time_off": (
        landing_row(open_time=slot(17), close_time=slot(18)),
        "rejected",
        "bad_close_time",
    ),
    # negative_price
    "prices_zero": (
        landing_row(open_time=slot(19), open="0", high="0", low="0", close="0"),
        "kept",
        None,
    ),
    "low_negative": (
        landing_row(open_time=slot(20), low="-0.000000000000000001"),
        "rejected",
        "negative_price",
    ),
    # high_below_low (and the other range rules at their edge: high == low == open == close)
    "flat": (
        landing_row(open_time=slot(21), open="100", high="100", low="100", close="100"),
        "kept",
        None,
    ),
    "high_below_low": (
        landing_row(
            open_time=slot(22), open="100", high="99.999999999999999999", low="100", close="100"
        ),
        "rejected",
        "high_below_low",
    ),
    # open_outside_range
    "open_at_low": (landing_row(open_time=slot(23), open="100"), "kept", None),
    "open_above_high": (
        landing_row(open_time=slot(24), open="101.000000000000000001"),
        "rejected",
        "open_outside_range",
    ),
    # close_outside_range
    "close_at_high": (landing_row(open_time=slot(25), close="101"), "kept", None),
    "close_below_low": (
        landing_row(open_time=slot(26), close="99"),
        "rejected",
        "close_outside_range",
    ),
    # negative_volume (three rules share the reason)
    "volumes_zero": (
        landing_row(
            open_time=slot(27),
            base_volume="0",
            quote_volume="0",
            taker_buy_base_volume="0",
            taker_buy_quote_volume="0",
        ),
        "kept",
        None,
    ),
    "base_negative": (
        landing_row(open_time=slot(28), base_volume="-1"),
        "rejected",
        "negative_volume",
    ),
    "taker_base_negative": (
        landing_row(open_time=slot(29), taker_buy_base_volume="-1"),
        "rejected",
        "negative_volume",
    ),
    "taker_quote_negative": (
        landing_row(open_time=slot(30), taker_buy_quote_volume="-0.5"),
        "rejected",
        "negative_volume",
    ),
    # negative_trades
    "trades_zero": (landing_row(open_time=slot(31), trades="0"), "kept", None),
    "trades_negative": (
        landing_row(open_time=slot(32), trades="-1"),
        "rejected",
        "negative_trades",
    ),
    # several violations: the first in RULES order is the reason, all are in the detail
    "two_violations": (
        landing_row(open_time=slot(33), high="99", low="100", open="100", close="100", trades="-3"),
        "rejected",
        "high_below_low",
    ),
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
    landing_row(
        open_time=slot(45), high="99", low="100", open="100", close="100", source="dup_invalid"
    ),
    landing_row(
        open_time=slot(45), high="99", low="100", open="100", close="100", source="dup_invalid"
    ),
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
RULE_INPUT = [_labelled(row, label) for label, (row, _, _) in RULE_CASES.items()]
VALIDATE_INPUT = RULE_INPUT + DUP_ROWS


@pytest.fixture(scope="module")
def verdicts_df(spark):
    df = frames.validate(
        frames.typed_landing(landing_frame(spark, VALIDATE_INPUT)), SYMBOLS
    ).cache()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def verdicts(verdicts_df):
    out: dict[str, list] = {}
    for r in verdicts_df.collect():
        out.setdefault(r["source"], []).append(r)
    return out


def test_validate_output_columns(verdicts_df):
    assert verdicts_df.columns == [
        "symbol",
        "interval",
        "source",
        "_corrupt_record",
        "raw_record",
        "open",
        "high",
        "low",
        "close",
        "base_volume",
        "quote_volume",
        "taker_buy_base_volume",
        "taker_buy_quote_volume",
        "open_time",
        "close_time",
        "trades",
        "reason",
        "detail",
        "status",
    ]


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
        "interval is not a fixed-length Binance interval (interval=7m)"
    )
    assert verdicts["close_below_low"][0].detail == (
        "close is outside [low, high] (close=99.000000000000000000, low=100.000000000000000000,"
        " high=101.000000000000000000)"
    )
    # Both violations are in the detail, in RULES order; the first is the reason.
    assert verdicts["two_violations"][0].detail == (
        "high is below low (low=100.000000000000000000, high=99.000000000000000000); "
        "open is outside [low, high] (open=100.000000000000000000, low=100.000000000000000000,"
        " high=99.000000000000000000); "
        "close is outside [low, high] (close=100.000000000000000000, low=100.000000000000000000,"
        " high=99.000000000000000000); "
        "trade count is negative (trades=-3)"
    )


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
        f"2 copies of BTCUSDT 1m open_time={slot(43)} with 2 different sets of values"
    }


def test_validate_two_equal_copies_and_one_different_are_three_conflicts(verdicts):
    assert _statuses(verdicts["dup_three"]) == [("rejected", "conflicting_duplicate")] * 3
    assert {r.detail for r in verdicts["dup_three"]} == {
        f"3 copies of BTCUSDT 1m open_time={slot(44)} with 2 different sets of values"
    }


def test_validate_equal_copies_of_an_invalid_candle_one_rejected_one_collapsed(verdicts):
    # As importers/common.finish: duplicates are settled first, then the kept copy is judged.
    assert _statuses(verdicts["dup_invalid"]) == [("collapsed", ""), ("rejected", "high_below_low")]


def test_validate_a_conflict_takes_precedence_over_a_rule(verdicts):
    assert (
        _statuses(verdicts["dup_conflict_invalid"]) == [("rejected", "conflicting_duplicate")] * 2
    )


def test_validate_an_unreadable_copy_is_not_a_duplicate(verdicts):
    assert _statuses(verdicts["dup_unreadable"]) == [("kept", ""), ("rejected", "bad_number")]


def test_validate_same_open_time_of_another_symbol_is_no_duplicate(verdicts):
    assert [r.status for r in verdicts["same_time_btc"] + verdicts["same_time_eth"]] == [
        "kept",
        "kept",
    ]


def test_validate_without_symbols_skips_the_unknown_symbol_rule(spark):
    typed = frames.typed_landing(landing_frame(spark, [landing_row(symbol="SHIBUSDT")]))
    assert collect(frames.validate(typed, None), ["status", "reason"]) == [("kept", None)]


# Spark puts every null key in one window partition: such rows must not be compared as copies.
def test_validate_rows_without_a_key_are_missing_field_not_duplicates(spark):
    rows = [
        landing_row(open_time=None, close_time=str(slot(0) + 59_999), close="100.6", source="a"),
        landing_row(open_time=None, close_time=str(slot(1) + 59_999), close="100.7", source="b"),
    ]
    verdicts = frames.validate(frames.typed_landing(landing_frame(spark, rows)), SYMBOLS)
    assert collect(verdicts, ["source", "status", "reason"]) == [
        ("a", "rejected", "missing_field"),
        ("b", "rejected", "missing_field"),
    ]


def test_resolve_duplicates_marks_kept_collapsed_and_conflict(spark):
    rows = [
        landing_row(open_time=slot(0), source="one"),
        landing_row(open_time=slot(1), source="eq"),
        landing_row(open_time=slot(1), source="eq"),
        landing_row(open_time=slot(2), close="100.75", source="x"),
        landing_row(open_time=slot(2), close="100.5", source="y"),
    ]
    out = frames.resolve_duplicates(frames.typed_landing(landing_frame(spark, rows)))
    assert out.columns[-2:] == ["dup_status", "dup_detail"]
    detail = f"2 copies of BTCUSDT 1m open_time={slot(2)} with 2 different sets of values"
    assert_rows(
        out,
        [
            ("one", "kept", None),
            ("eq", "kept", None),
            ("eq", "collapsed", None),
            ("x", "conflict", detail),
            ("y", "conflict", detail),
        ],
        ["source", "dup_status", "dup_detail"],
    )


def test_source_candles_are_the_kept_rows_as_binance_candles(verdicts_df, verdicts):
    out = frames.source_candles(verdicts_df)
    assert tuple(out.columns) == frames.CANDLE_FRAME
    assert (
        dict(schema_of(out))["minute_count"] == "int"
        and dict(schema_of(out))["is_complete"] == "boolean"
    )
    rows = out.collect()
    kept = sorted(
        (r.source, r.open_time) for v in verdicts.values() for r in v if r.status == "kept"
    )
    assert sorted((r.source, r.open_time) for r in rows) == kept
    assert {(r.minute_count, r.is_complete) for r in rows} == {(None, True)}
    [eq] = [r for r in rows if r.open_time == slot(42)]
    assert eq.source == "dup_src_a"  # the collapsed copy is not loaded twice


def test_quarantine_rows_are_the_rejected_rows_with_their_raw_line(verdicts_df, verdicts):
    out = frames.quarantine_rows(verdicts_df)
    assert tuple(out.columns) == frames.QUARANTINE_FRAME
    want = sorted(
        (r.source, r.reason, r.raw_record)
        for v in verdicts.values()
        for r in v
        if r.status == "rejected"
    )
    assert sorted((r.source, r.reason, r.raw_record) for r in out.collect()) == want
    assert ("bad_number", raw_line(_labelled(RULE_CASES["bad_number"][0], "bad_number"))) in {
        (reason, raw) for _, reason, raw in want
    }


def test_duplicate_keys_are_the_keys_readable_rows_repeat(spark):
    typed = frames.typed_landing(landing_frame(spark, VALIDATE_INPUT))
    assert sorted(r.open_time for r in frames.duplicate_keys(typed).collect()) == [
        slot(i) for i in range(40, 48)
    ]
    assert frames.duplicate_keys(frames.typed_landing(landing_frame(spark, RULE_INPUT))).isEmpty()


# The job skips the duplicate sort when duplicate_keys is empty: the verdicts must not change.
def test_validate_without_the_duplicate_sort_gives_the_same_verdicts_when_no_key_repeats(spark):
    typed = frames.typed_landing(landing_frame(spark, RULE_INPUT))
    columns = ["source", "status", "reason", "detail"]
    assert collect(frames.validate(typed, SYMBOLS, duplicates=False), columns) == collect(
        frames.validate(typed, SYMBOLS), columns
    )
