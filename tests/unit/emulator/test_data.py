"""Replay data without sockets: synthetic minutes, partial candles, timeline shifting, wire formats."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from binance_emulator import (
    HOUR_MS,
    Timeline,
    aggregate,
    kline_event,
    load_history,
    partial,
    rest_row,
    synthetic_minutes,
)
from cryptoflow.candles import Candle, validate
from cryptoflow.sources.binance.wire import from_kline_payload, from_rest_row

pytestmark = pytest.mark.quick


def hour(o, h, l, c, v="10", q="1000", n=61, t=1_600_000_000_000 // HOUR_MS * HOUR_MS):
    D = Decimal
    return Candle(
        "BTCUSDT",
        "1h",
        t,
        t + HOUR_MS - 1,
        D(o),
        D(h),
        D(l),
        D(c),
        D(v),
        D(q),
        None,
        None,
        n,
        True,
        "t",
    )


@pytest.fixture(scope="module")
def btc(shared_data):
    return load_history([shared_data / "cryptodatadownload" / "Binance_BTCUSDT_1h.csv"])


def test_synthetic_minutes_of_real_hours_aggregate_back_exactly(btc):
    hours = btc[("BTCUSDT", "1h")]
    for h in hours[:: len(hours) // 200]:
        minutes = synthetic_minutes(h)
        assert len(minutes) == 60
        assert [m.open_time for m in minutes] == list(
            range(h.open_time, h.open_time + HOUR_MS, 60_000)
        )
        assert all(not validate(m) for m in minutes)
        for m in minutes:
            if m.base_volume > 0 and m.high > m.low:
                assert (
                    m.low * Decimal("0.9999")
                    <= m.quote_volume / m.base_volume
                    <= m.high * Decimal("1.0001")
                )
        back = aggregate(list(minutes), "1h")
        assert back.values() == h.values()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("100000"), places=4),
        min_size=4,
        max_size=4,
    ),
    st.decimals(min_value=1, max_value=Decimal("1e6"), places=6),
    st.integers(0, 10**6),
    st.floats(0.05, 0.95),
)  # an average price at the very extreme is out of reach of the path (documented)
def test_synthetic_minutes_any_hour(prices, volume, trades, where):
    o, c = prices[0], prices[1]
    h, l = max(prices), min(prices)
    avg = l + (h - l) * Decimal(str(where))  # the hour's average price, anywhere in its range
    src = hour(o, h, l, c, v=volume, q=(volume * avg).quantize(Decimal("0.00000001")), n=trades)
    minutes = synthetic_minutes(src)
    assert all(not validate(m) for m in minutes)
    assert aggregate(list(minutes), "1h").values()[:7] == src.values()[:7]
    assert sum(m.trades for m in minutes) == trades
    # each minute's average price lies within its range (quote split by volume x mid price)
    for m in minutes:
        if m.quote_volume >= Decimal(
            "0.01"
        ):  # below that, 8-decimal rounding dominates the average
            vwap = m.quote_volume / m.base_volume
            assert (
                m.low * Decimal("0.999") - Decimal("1e-6")
                <= vwap
                <= m.high * Decimal("1.001") + Decimal("1e-6")
            )


def test_partial_candles_stay_valid_and_grow():
    src = hour("100", "110", "90", "105", v="60", q="6000", n=600)
    prev = None
    for i in range(0, 11):
        p = partial(src, i / 10)
        assert not p.closed and not validate(p)
        if prev is not None:
            assert p.base_volume >= prev.base_volume and p.high >= prev.high and p.low <= prev.low
        prev = p
    assert partial(src, 1.0).values()[:4] == (src.close_time, src.open, src.high, src.low)


def test_wire_formats_parse_back_with_candles_module():
    src = hour("100.5", "110", "90", "105.25")
    k = kline_event(src, 123)["k"]
    assert k["o"] == "100.50000000" and k["x"] is True and k["V"] == "0.00000000"
    assert from_kline_payload(k, "t").values()[:7] == src.values()[:7]
    row = rest_row(src)
    assert len(row) == 12 and isinstance(row[0], int) and isinstance(row[1], str)
    assert from_rest_row("BTCUSDT", "1h", row, "t").values()[:7] == src.values()[:7]


def test_shift_to_present_keeps_spacing_and_never_runs_ahead_of_the_wall_clock(btc):
    wall = time.time()
    tl = Timeline(btc, speed=60, shift_to_present=True, play_hours=24, wall_start=wall)
    assert tl.shift["BTCUSDT"] % HOUR_MS == 0
    assert tl.now_ms() <= wall * 1000 + 1000 * 60 * 2  # starts behind (or at) the wall clock
    # the last candle closes when the replay reaches it, 24 h / 60 = 24 wall minutes from now
    last = tl.candles("BTCUSDT", "1h", tl.end_ms - HOUR_MS, tl.end_ms)[-1]
    assert last.close_time + 1 == tl.end_ms
    assert abs(tl.end_ms - (wall * 1000 + 24 * 60 * 1000)) <= HOUR_MS
    original = btc[("BTCUSDT", "1h")]
    shifted = tl.candles("BTCUSDT", "1h", original[0].open_time + tl.shift["BTCUSDT"], tl.end_ms)
    assert [c.open_time - tl.shift["BTCUSDT"] for c in shifted] == [c.open_time for c in original]
    minutes = tl.candles("BTCUSDT", "1m", tl.end_ms - HOUR_MS, tl.end_ms - 1)
    assert len(minutes) == 60 and minutes[0].open_time % 60_000 == 0
    fives = tl.candles("BTCUSDT", "5m", tl.end_ms - HOUR_MS, tl.end_ms - 1)
    assert len(fives) == 12 and aggregate(fives, "1h").values()[:7] == last.values()[:7]


def test_real_time_replay_clock_is_the_wall_clock(btc):
    """At 1x the demo's feed must look live: the 10-minute ingest asks for the window that just ended."""
    wall = time.time()
    tl = Timeline(btc, speed=1, shift_to_present=True, play_hours=48, wall_start=wall)
    assert abs(tl.now_ms() - time.time() * 1000) < 1000
    # the minutes of the last 10 wall-clock minutes exist on the replay timeline
    end = int(wall * 1000) // 600_000 * 600_000
    assert len(tl.candles("BTCUSDT", "1m", end - 600_000, end - 1)) == 10


def test_a_restarted_replay_serves_the_same_candles_at_the_same_times(btc, tmp_path):
    """The demo's replay server records its timeline: restarted three hours later (a `make down`,
    then `make run`), it replays the same history at the same times, so the candles stored before
    the restart agree with what it serves now, and the downtime heals from the same timeline."""
    from binance_emulator import anchored_timeline

    anchor = tmp_path / "replay-anchor.json"
    wall = time.time() - 3 * 3600
    first = anchored_timeline(btc, anchor, play_hours=48, wall_start=wall)
    again = anchored_timeline(btc, anchor, play_hours=48, wall_start=wall + 3 * 3600)
    assert again.shift == first.shift and anchor.exists()
    before_restart = int(wall * 1000) // HOUR_MS * HOUR_MS
    assert [
        c.values()
        for c in again.candles("BTCUSDT", "1m", before_restart - HOUR_MS, before_restart - 1)
    ] == [
        c.values()
        for c in first.candles("BTCUSDT", "1m", before_restart - HOUR_MS, before_restart - 1)
    ]
    assert abs(again.now_ms() - time.time() * 1000) < 1000  # still the wall clock, still live
    # Without the anchor, a restart moves the history: the same times would carry other candles.
    fresh = Timeline(btc, speed=1, shift_to_present=True, play_hours=48, wall_start=wall + 3 * 3600)
    assert fresh.shift != first.shift


def test_an_exhausted_recorded_timeline_is_replaced(btc, tmp_path):
    from binance_emulator import anchored_timeline

    anchor = tmp_path / "replay-anchor.json"
    old = anchored_timeline(
        btc, anchor, play_hours=48, wall_start=time.time() - 10 * 86400
    )  # history ran out 8 days ago
    new = anchored_timeline(btc, anchor, play_hours=48)
    assert new.shift != old.shift and new.end_ms > time.time() * 1000
    assert (
        anchored_timeline(btc, anchor, play_hours=48).shift == new.shift
    )  # and recorded in its place
