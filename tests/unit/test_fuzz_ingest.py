"""Fuzzing the ingest path above the field parsers (those are fuzzed in test_candles/test_importers):

- the collector's segment files keep any text exactly, and a torn tail is skipped, never misread;
- a window of arbitrary messages (valid candles, open updates, mutated klines, control messages,
  garbage) never crashes the parser, and every message lands in exactly one place: a candle, a
  rejection with its reason and raw record, an open update, or an ignored non-data message;
- mutated rows of real data.binance.vision and CryptoDataDownload files: read = loaded +
  quarantined + collapsed duplicates, every quarantined row with a known reason.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cryptoflow import ingest, landing, sources
from cryptoflow.collector import RawMessage, ReadStats, SegmentWriter, read_window
from cryptoflow.candles import REASONS
from cryptoflow.importers import import_cdd_csv
from cryptoflow.sources.binance.archive import import_binance_vision

pytestmark = pytest.mark.quick

START = 1_627_776_000_000  # 2021-08-01T00:00Z
END = START + 600_000
CONFIGURED = ("BTCUSDT", "ETHUSDT")
K = {
    "t": START,
    "T": START + 59_999,
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

_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(
        ["1", "0.5", "-3", "1e5", "NaN", "", "12.00000000", "ETHUSDT", "DOGEUSDT", "1h"]
    ),
)


@st.composite
def kline(draw):
    """A kline message: valid, or with some fields replaced/dropped; raw or combined; closed or not."""
    minute = draw(st.integers(min_value=-3, max_value=12))
    k = {
        **K,
        "t": START + minute * 60_000,
        "T": START + minute * 60_000 + 59_999,
        "s": draw(st.sampled_from(["BTCUSDT", "ETHUSDT", "XRPUSDT"])),
        "x": draw(st.booleans()),
    }
    if draw(st.booleans()):
        k.update(
            draw(st.dictionaries(st.sampled_from(list("tTsiohlcvnxqVQ")), _scalar, max_size=3))
        )
        for key in draw(st.sets(st.sampled_from(list("tTsiohlcvnxqVQ")), max_size=2)):
            k.pop(key, None)
    event = {"e": "kline", "E": START, "s": k.get("s"), "k": k}
    body = {"stream": "btcusdt@kline_1m", "data": event} if draw(st.booleans()) else event
    return json.dumps(body, allow_nan=True)


CONTROL = [
    '{"result":null,"id":1}',
    '{"result":["btcusdt@kline_1m"],"id":3}',
    '{"error":{"code":2,"msg":"Invalid request"},"id":4}',
    '{"event":{"e":"serverShutdown","E":1627776000000}}',
    '{"stream":"btcusdt@kline_1m","data":{"e":"serverShutdown","E":1}}',
]
BROKEN = [
    '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1}}',
    "[1,2,3]",
    "42",
    '"kline"',
    "{}",
    '{"stream":"x","data":[]}',
    "this is not json",
    '{"e":"kline","k":',
    "\x00\x01binary\ufffd",
]

messages = st.lists(
    st.one_of(
        kline(),
        kline(),
        kline(),
        st.sampled_from(CONTROL),
        st.sampled_from(BROKEN),
        st.text(max_size=40),
    ),
    max_size=40,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.text(max_size=60), max_size=30), st.binary(max_size=20))
def test_segments_keep_any_text_and_skip_a_torn_tail(tmp_path_factory, texts, tail):
    root = tmp_path_factory.mktemp("seg")
    writer = SegmentWriter(root, fsync_interval_s=3600)
    for i, text in enumerate(texts):
        writer.append(text, START / 1000 + i * 0.001)
    writer.close()
    segs = sorted(root.glob("seg-*"))
    if tail.strip(b"\n") and segs:
        with open(segs[-1], "ab") as f:  # a write cut short by a crash
            f.write(tail.replace(b"\n", b" "))
    stats = ReadStats()
    got = [m.raw for m in read_window(root, 0, 2**62, stats)]
    assert got == texts
    assert stats.corrupt == 0
    assert stats.torn == (1 if tail.strip(b"\n") and segs else 0)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_every_message_of_a_window_is_accounted_for(raws):
    msgs = [RawMessage(START + i, raw, "seg", i) for i, raw in enumerate(raws)]
    ignored = Counter()
    candles, rejections, open_updates = ingest.parse_messages(
        msgs, CONFIGURED, "1m", START, END, ignored=ignored, feed=sources.get("binance")
    )
    assert len(candles) + len(rejections) + open_updates + sum(ignored.values()) == len(raws)
    for r in rejections:
        assert r.reason in REASONS
        assert r.raw in raws
    assert set(ignored) <= {"reply", "other_interval", "other_window"} | {
        f"event:{e}" for e in ("serverShutdown",)
    }
    for c in candles:
        assert c.closed and START <= c.open_time < END and c.symbol in CONFIGURED
    # Whatever the stream delivered twice or contradicted, the snapshot rows are one per key.
    kept, conflicts, collapsed = landing.prepare(candles)
    assert len(kept) + len(conflicts) + collapsed == len(candles)
    assert len({c.key for c in kept}) == len(kept)
    # Broken records are never silently dropped.
    for raw in raws:
        if raw in BROKEN:
            assert any(r.raw == raw for r in rejections), raw


_VISION_ROW = [
    START,
    "37388.05000000",
    "37600.00000000",
    "37254.05000000",
    "37584.76000000",
    "798.27649900",
    START + 59_999,
    "29889500.42010495",
    10796,
    "400.1",
    "14900000.5",
    "0",
]


@st.composite
def vision_line(draw):
    row = [str(v) for v in _VISION_ROW]
    minute = draw(st.integers(min_value=0, max_value=5))
    row[0], row[6] = str(START + minute * 60_000), str(START + minute * 60_000 + 59_999)
    if draw(st.booleans()):  # microseconds, as 2025+ dumps have them
        row[0], row[6] = row[0] + "000", row[6] + "999"
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        i = draw(st.integers(min_value=0, max_value=11))
        row[i] = draw(
            st.one_of(
                st.text(alphabet='0123456789.-eE," x', max_size=12),
                st.sampled_from(["", "-1", "1e400", "NaN", "0"]),
            )
        )
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        row = row[: draw(st.integers(min_value=0, max_value=11))]
    return ",".join(row)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(vision_line(), max_size=15), st.booleans())
def test_binance_vision_rows_are_all_accounted_for(tmp_path_factory, lines, header):
    path = tmp_path_factory.mktemp("bv") / "BTCUSDT-1m-2021-08.csv"
    text = (
        (
            "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
            "taker_buy_quote_volume,ignore\n"
            if header
            else ""
        )
        + "\n".join(lines)
        + "\n"
    )
    path.write_text(text)
    res = import_binance_vision(path, symbols=CONFIGURED)
    assert res.balanced
    assert res.counts["read"] == sum(1 for ln in lines if ln.strip())
    assert all(r.reason in REASONS and r.raw in lines for r in res.rejections)
    assert len({c.key for c in res.candles}) == len(res.candles)


CDD_HEADER = "unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount"


@st.composite
def cdd_line(draw):
    hour = draw(st.integers(min_value=0, max_value=5))
    t = START + hour * 3_600_000
    row = [
        str(t),
        f"2021-08-01 {hour:02d}:00:00",
        "BTC/USDT",
        "39000.1",
        "39500",
        "38800",
        "39200.5",
        "100.5",
        "3920000.25",
        "1234",
    ]
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        i = draw(st.integers(min_value=0, max_value=9))
        row[i] = draw(
            st.one_of(
                st.text(alphabet='0123456789.-:/ ,"ABTCUSDNL', max_size=14),
                st.sampled_from(["", "NULL", "-5", "1e3", "2021-08-01 01-AM", "ETH/USDT"]),
            )
        )
    return ",".join(row)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(cdd_line(), max_size=12))
def test_cdd_rows_are_all_accounted_for(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("cdd") / "Binance_BTCUSDT_1h.csv"
    path.write_text(
        "https://www.CryptoDataDownload.com\n" + CDD_HEADER + "\n" + "\n".join(lines) + "\n"
    )
    res = import_cdd_csv(path, symbols=CONFIGURED)
    assert res.balanced
    assert res.counts["read"] == sum(1 for ln in lines if ln.strip())
    assert all(r.reason in REASONS and r.raw in lines for r in res.rejections)
