"""Binance client logic without sockets: rate limiting, retries, weight pacing, segment files."""

from __future__ import annotations

import json
import random

import pytest
import requests

from cryptoflow.collector import ReadStats, SegmentWriter, list_segments, read_window, window_sealed
from cryptoflow.sources.binance.rest import (
    BinanceBanned,
    BinanceRateLimited,
    BinanceRequestError,
    BinanceRestClient,
)
from cryptoflow.sources.binance.stream import (
    KlineStream,
    RateLimiter,
    combined_url,
    is_server_shutdown,
    kline_position,
    stream_names,
)

pytestmark = pytest.mark.quick


class FakeClock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_rate_limiter_is_a_strict_sliding_window():
    clock = FakeClock()
    lim = RateLimiter(5, 1.0, clock)
    assert all(lim.try_acquire() for _ in range(5))
    assert not lim.try_acquire() and lim.delay() == pytest.approx(1.0)
    clock.t += 0.5
    assert not lim.try_acquire()  # a token bucket would have refilled 2.5 here
    clock.t += 0.5
    assert lim.try_acquire()
    # never more than 5 in any 1 s window over a long random run
    times = []
    for _ in range(2000):
        clock.t += random.Random(len(times)).uniform(0, 0.1)
        if lim.try_acquire():
            times.append(clock.t)
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(times, times[5:]))


def test_stream_url_and_shutdown_detection():
    names = stream_names(["BTCUSDT", "EthUsdt"], "1m")
    assert names == ["btcusdt@kline_1m", "ethusdt@kline_1m"]
    assert (
        combined_url("wss://x/", names)
        == "wss://x/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
    )
    assert is_server_shutdown('{"event":{"e":"serverShutdown","E":1}}')
    assert is_server_shutdown('{"e":"serverShutdown","E":1}')
    assert is_server_shutdown('{"stream":"x","data":{"e":"serverShutdown"}}')
    assert not is_server_shutdown('{"stream":"x","data":{"e":"kline","note":"serverShutdown"}}')
    assert not is_server_shutdown("serverShutdown{")


def test_kline_position_says_how_far_a_connection_got():
    def msg(t, closed):
        return json.dumps(
            {
                "stream": "btcusdt@kline_1m",
                "data": {"e": "kline", "k": {"t": t, "T": t + 59_999, "x": closed}},
            }
        )

    # an update of candle t: every candle before t has closed; the closing of t: t has too
    assert kline_position(msg(120_000, False)) == ("btcusdt@kline_1m", 120_000, 120_000)
    assert kline_position(msg(120_000, True)) == ("btcusdt@kline_1m", 120_000, 180_000)
    for other in (
        '{"event":{"e":"serverShutdown","E":1}}',
        '{"stream":"x","data":{"e":"kline","k":{}}}',
        'not json with "kline"',
        '{"result":null,"id":1}',
    ):
        assert kline_position(other) is None


def test_stream_backoff_grows_with_jitter_and_is_capped():
    s = KlineStream(
        "ws://127.0.0.1:1",
        ["BTCUSDT"],
        "1m",
        lambda r, t: None,
        backoff_initial_s=1,
        backoff_max_s=8,
        rng=random.Random(1),
    )
    waits = [s._backoff(a) for a in range(8)]
    assert all(0.5 <= w <= 1 for w in waits[:1]) and all(4 <= w <= 8 for w in waits[3:])
    with pytest.raises(ValueError):
        KlineStream("ws://x", [f"S{i}" for i in range(1025)], "1m", lambda r, t: None)


class FakeResponse:
    def __init__(self, status, body, headers=None):
        self.status_code, self._body = status, body
        self.headers = requests.structures.CaseInsensitiveDict(headers or {})
        self.text = json.dumps(body)

    def json(self):
        return self._body


class FakeSession:
    def __init__(self, responses):
        self.responses = list(responses)
        self.calls = []

    def get(self, url, params=None, timeout=None):
        self.calls.append((url, dict(params or {})))
        r = self.responses.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    def close(self):
        pass


def client(responses, **kw):
    clock = FakeClock()
    c = BinanceRestClient(
        "http://x",
        session=FakeSession(responses),
        sleep=clock.sleep,
        clock=clock,
        rng=random.Random(0),
        **kw,
    )
    return c, clock


def row(t):
    return [t, "1", "1", "1", "1", "1", t + 59_999, "1", 1, "0", "0", "0"]


def test_429_waits_retry_after_then_succeeds():
    c, clock = client(
        [FakeResponse(429, {"code": -1003}, {"Retry-After": "7"}), FakeResponse(200, [row(0)])]
    )
    t0 = clock.t
    assert c.klines_page("BTCUSDT", "1m", 0) == [row(0)]
    assert clock.t - t0 == pytest.approx(7)


def test_429_forever_and_418_fail_loudly():
    c, _ = client([FakeResponse(429, {}, {"Retry-After": "1"})] * 3, max_429=2)
    with pytest.raises(BinanceRateLimited):
        c.klines_page("BTCUSDT", "1m", 0)
    c, clock = client([FakeResponse(418, {}, {"Retry-After": "7200"})])
    t0 = clock.t
    with pytest.raises(BinanceBanned, match="banned"):
        c.klines_page("BTCUSDT", "1m", 0)
    assert clock.t == t0  # a long ban is not waited out
    c, _ = client([FakeResponse(400, {"code": -1121, "msg": "Invalid symbol."})])
    with pytest.raises(BinanceRequestError) as exc:
        c.klines_page("NOPE", "1m", 0)
    assert exc.value.code == -1121


def test_5xx_and_timeouts_are_retried_with_backoff():
    c, clock = client([requests.Timeout("slow"), FakeResponse(502, {}), FakeResponse(200, [])])
    assert c.klines_page("BTCUSDT", "1m", 0) == []
    assert c.requests == 3 and c.waited_s > 0


def test_weight_budget_pauses_until_the_next_window():
    c, clock = client(
        [
            FakeResponse(200, [], {"X-MBX-USED-WEIGHT-1M": "5390"}),
            FakeResponse(200, [], {"X-MBX-USED-WEIGHT-1M": "2"}),
        ],
        weight_budget=6000,
        weight_margin=600,
    )
    clock.t = 60 * 1000 + 10  # 10 s into a window
    c.klines_page("BTCUSDT", "1m", 0)
    assert c.used_weight == 5390
    c.klines_page("BTCUSDT", "1m", 0)  # 5390 + 2 > 5400? no: 5392 fits
    c.session.responses = [
        FakeResponse(200, [], {"X-MBX-USED-WEIGHT-1M": "5399"}),
        FakeResponse(200, [], {"X-MBX-USED-WEIGHT-1M": "2"}),
    ]
    c.klines_page("BTCUSDT", "1m", 0)
    t0 = clock.t
    c.klines_page("BTCUSDT", "1m", 0)  # 5399 + 2 > 5400: wait for the next minute
    assert clock.t > t0 and int(clock.t // 60) == int(t0 // 60) + 1


def test_pagination_uses_last_open_plus_one_and_drops_open_candle():
    page1 = [row(i * 60_000) for i in range(1000)]
    page2 = [row(i * 60_000) for i in range(1000, 1500)]
    c, _ = client(
        [
            FakeResponse(200, page1),
            FakeResponse(200, page2),
            FakeResponse(200, {"serverTime": 1499 * 60_000 + 5}),
        ]
    )
    candles = c.fetch_klines("btcusdt", "1m", 0, 10**12)
    assert len(candles) == 1499 and candles[-1].open_time == 1498 * 60_000  # the open one dropped
    assert c.session.calls[1][1]["startTime"] == 999 * 60_000 + 1
    assert c.session.calls[0][1]["limit"] == 1000 and c.session.calls[0][1]["symbol"] == "BTCUSDT"


def test_a_clock_stepped_back_keeps_the_current_window_when_a_segment_fills(tmp_path):
    clock = FakeClock(1_700_000_400.0)
    w = SegmentWriter(tmp_path, window_s=600, max_segment_bytes=200, clock=clock)
    for i in range(3):
        w.append(f'{{"n":{i}}}', clock.t)
    current = list_segments(tmp_path)[-1].window_ms
    for i in range(3, 20):  # received 10 minutes earlier, enough to fill several segments
        w.append(f'{{"n":{i}}}', clock.t - 600)
    w.close()
    segs = list_segments(tmp_path)
    assert len(segs) > 1 and {s.window_ms for s in segs} == {current}
    assert [json.loads(m.raw)["n"] for m in read_window(tmp_path, 0, 2**62)] == list(range(20))


def test_segments_rotate_by_window_and_reader_skips_torn_tail(tmp_path):
    clock = FakeClock(1_700_000_000.0)
    w = SegmentWriter(tmp_path, window_s=600, clock=clock)
    for i in range(10):
        w.append(f'{{"n":{i}}}', clock.t)
        clock.t += 100  # 10 messages over 1000 s: two windows
    w.event("disconnected", "test")
    with pytest.raises(RuntimeError, match="another collector"):
        SegmentWriter(tmp_path)
    segs = list_segments(tmp_path)
    assert len(segs) >= 2 and [s.active for s in segs] == [False] * (len(segs) - 1) + [
        True
    ]  # sealed on rotation
    assert not window_sealed(tmp_path, 0, 2**62)
    stats = ReadStats()
    msgs = list(read_window(tmp_path, 0, 2**62, stats))
    assert [json.loads(m.raw)["n"] for m in msgs] == list(range(10))
    assert stats.events and stats.events[0][1] == "disconnected"
    # window selection by receive time
    first_window = segs[0].window_ms
    assert all(
        first_window <= m.received_at_ms < first_window + 600_000
        for m in read_window(tmp_path, first_window, first_window + 600_000)
    )
    clock.t += 1000
    w.tick()  # the window ended: sealed
    assert window_sealed(tmp_path, 0, 2**62)
    w.close()
    with open(list_segments(tmp_path)[-1].path, "ab") as f:
        f.write(b'{"r":17000000')
    stats = ReadStats()
    assert len(list(read_window(tmp_path, 0, 2**62, stats))) == 10 and stats.torn == 1
