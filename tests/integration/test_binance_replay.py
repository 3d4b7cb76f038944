"""The Binance clients against the replay server, over real sockets, with injected faults.

Replay runs at 1200x on the original 2021 timeline (deterministic candles): a 1m candle lasts
50 ms of wall time, so every test sees dozens of intervals in about a second. Each wait is a
bounded loop on a condition, never a fixed sleep standing in for one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from decimal import Decimal

import pytest
import requests

from cryptoflow.collector import Collector, ReadStats, SegmentWriter, list_segments, read_window
from binance_emulator import ReplayServer, load_history
from cryptoflow.sources.binance.rest import (
    BinanceBanned,
    BinanceRequestError,
    BinanceRestClient,
    BinanceUnavailable,
)
from cryptoflow.sources.binance.stream import KlineStream
from cryptoflow.candles import CandleFormatError, validate
from cryptoflow.sources.binance.wire import from_kline_payload
from cryptoflow.forecast import hourly
from cryptoflow.sources.files import FileHistory

pytestmark = pytest.mark.integration

SYMBOLS = ("BTCUSDT", "ETHUSDT", "ADAUSDT")
START_MS = 1_627_776_000_000  # 2021-08-01T00:00:00Z, inside every one of the three files
SPEED = 1200.0
MINUTE = 60_000


@pytest.fixture(scope="module")
def history(shared_data):
    return load_history([shared_data / "cryptodatadownload"], SYMBOLS)


@pytest.fixture
def make_server(history):
    servers = []

    def make(**options):
        opts = dict(speed=SPEED, shift_to_present=False, start_ms=START_MS, ping_interval_s=0.2)
        opts.update(options)
        srv = ReplayServer(history, **opts).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def make_stream():
    streams = []

    def make(server, on_message, **options):
        opts = dict(backoff_initial_s=0.2, backoff_max_s=1.0, poll_s=0.05)
        opts.update(options)
        s = KlineStream(server.ws_url, SYMBOLS, "1m", on_message, **opts).start()
        streams.append(s)
        return s

    yield make
    for s in streams:
        s.stop()
        assert not s.running


def wait_for(condition, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what() if callable(what) else what}"
            )
        time.sleep(0.01)


def closed_candles(raws):
    """The closed candles among raw combined-stream messages, in arrival order (bad ones skipped)."""
    out = []
    for raw in raws:
        try:
            msg = json.loads(raw)
            candle = from_kline_payload(msg["data"]["k"], "test")
        except (ValueError, KeyError, TypeError, CandleFormatError):
            continue
        if candle.closed:
            out.append(candle)
    return out


def core(c):
    return (
        c.open_time,
        c.close_time,
        c.open,
        c.high,
        c.low,
        c.close,
        c.base_volume,
        c.quote_volume,
        c.trades,
    )


def per_symbol(candles):
    by = defaultdict(list)
    for c in candles:
        by[c.symbol].append(c)
    return by


def n_closed_each(raws, n):
    def check():
        by = per_symbol(closed_candles(list(raws)))
        return all(len(by[s]) >= n for s in SYMBOLS)

    return check


def test_steady_stream_delivers_every_closed_candle_once(make_server, make_stream):
    srv = make_server()
    got = []
    stream = make_stream(srv, lambda raw, ts: got.append(raw))
    wait_for(n_closed_each(got, 20), what="20 closed candles per symbol")
    stream.stop()

    candles = closed_candles(got)
    by = per_symbol(candles)
    for sym in SYMBOLS:
        opens = [c.open_time for c in by[sym]]
        assert len(opens) == len(set(opens)), f"{sym}: a closed candle arrived twice"
        assert opens == list(range(opens[0], opens[-1] + 1, MINUTE)), f"{sym}: gap or disorder"
        # exactly what the replay's history holds, value for value
        expected = srv.timeline.candles(sym, "1m", opens[0], opens[-1])
        # (CDD files have no taker volumes: None in the history, "0" on the wire)
        assert [core(c) for c in by[sym]] == [core(c) for c in expected]
    assert all(not validate(c, SYMBOLS) for c in candles)
    assert stream.stats.disconnects == 0 and stream.stats.connects == 1
    # x=false updates came before each closing
    assert sum(1 for r in got if '"x":false' in r) > len(candles)


def test_disconnect_mid_interval_then_rest_backfill(make_server, make_stream):
    srv = make_server()
    got = []
    stream = make_stream(srv, lambda raw, ts: got.append(raw))
    wait_for(n_closed_each(got, 5), what="first candles")
    # Mid-candle: halfway into the current 50 ms minute.
    time.sleep(0.025)
    assert srv.faults.drop_connections() == 1
    wait_for(lambda: srv.stats.connections >= 2, what="reconnect")
    before = len(closed_candles(got))
    wait_for(lambda: len(closed_candles(list(got))) >= before + 15, what="candles after reconnect")
    stream.stop()
    assert stream.stats.disconnects == 1

    client = BinanceRestClient(srv.rest_url)
    for sym, cs in per_symbol(closed_candles(got)).items():
        have = {c.open_time: c for c in cs}
        first, last = min(have), max(have)
        missing = [t for t in range(first, last + 1, MINUTE) if t not in have]
        assert missing, f"{sym}: the drop should have cost candles (backoff >= 100 ms = 2 minutes)"
        fetched = client.fetch_klines(sym, "1m", first, last)
        by_time = {c.open_time: c for c in fetched}
        assert sorted(by_time) == list(range(first, last + 1, MINUTE))
        # websocket and REST agree on every candle both delivered
        for t, c in have.items():
            assert by_time[t].values() == c.values()
        assert all(t in by_time for t in missing)


def test_duplicates_and_out_of_order_deliveries(make_server, make_stream):
    srv = make_server()
    got = []
    make_stream(srv, lambda raw, ts: got.append(raw))
    wait_for(n_closed_each(got, 2), what="first candles")
    srv.faults.duplicate_closings(3)
    srv.faults.reorder_closings(2)
    wait_for(n_closed_each(got, 25), what="candles after the faults")

    candles = closed_candles(got)
    counts = Counter(c.key for c in candles)
    dups = [k for k, n in counts.items() if n > 1]
    assert len(dups) == 3
    # duplicates are identical copies, so deduplication by key is lossless
    for key in dups:
        assert len({c.values() for c in candles if c.key == key}) == 1
    by = per_symbol(candles)
    inversions = sum(
        1 for cs in by.values() for a, b in zip(cs, cs[1:]) if b.open_time < a.open_time
    )
    # 2 unless one tick closed two candles of a stream and both were held (then they invert once)
    assert 1 <= inversions <= 2
    for cs in by.values():
        opens = sorted({c.open_time for c in cs})
        assert opens == list(range(opens[0], opens[-1] + 1, MINUTE))


def test_malformed_frames_reach_the_collector_which_keeps_running(make_server, tmp_path):
    srv = make_server()
    collector = Collector(tmp_path, srv.ws_url, SYMBOLS, "1m", backoff_initial_s=0.2, poll_s=0.05)
    import threading

    runner = threading.Thread(target=collector.run, daemon=True)
    runner.start()
    try:
        wait_for(lambda: collector.writer.lines > 20, what="first messages")
        srv.faults.malformed(5)
        lines_then = collector.writer.lines
        wait_for(
            lambda: collector.writer.lines > lines_then + 100,
            what="messages after the malformed ones",
        )
    finally:
        collector.stop()
        runner.join(10)
    assert not runner.is_alive()
    assert collector.stream.stats.disconnects == 0

    stats = ReadStats()
    raws = [m.raw for m in read_window(tmp_path, 0, 2**62, stats)]
    assert stats.torn == 0 and stats.corrupt == 0 and stats.active_segments == 0
    bad = []
    for raw in raws:
        try:
            from_kline_payload(json.loads(raw)["data"]["k"], "test")
        except (ValueError, KeyError, TypeError, CandleFormatError):
            bad.append(raw)
    assert len(bad) == 5, bad
    assert "this is not json" in bad
    assert any(
        r.startswith("\x00\x01binary") for r in bad
    )  # the binary frame, decoded with replacement
    last_bad = max(i for i, r in enumerate(raws) if r in bad)
    assert len(closed_candles(raws[last_bad:])) > 3  # the stream went on after them
    assert [e[1] for e in stats.events][:1] == ["connected"]


def test_rest_429_retry_after_is_honoured(make_server):
    # 10 weight per 3 s window = 5 klines requests; this client does not know the server's budget.
    # (A 1 s window needed the 8 requests inside one second; a slow CI run once took longer and saw no 429.)
    srv = make_server(weight_budget=10, weight_window_s=3.0)
    client = BinanceRestClient(srv.rest_url, weight_window_s=3.0)
    t0 = time.monotonic()
    for i in range(8):
        client.klines_page("BTCUSDT", "1m", START_MS - 100 * MINUTE * (i + 1), limit=100)
    assert srv.stats.rest_status.get(429, 0) >= 1
    assert 418 not in srv.stats.rest_status  # waited, never hammered
    assert client.waited_s > 0 and time.monotonic() - t0 >= client.waited_s * 0.9

    # A forced 429 with Retry-After: 1 s is waited out, then the request succeeds.
    srv.faults.rest_fail(429, 1, retry_after=1)
    t0 = time.monotonic()
    rows = client.klines_page("ETHUSDT", "1m", START_MS - 10 * MINUTE, limit=5)
    assert len(rows) == 5 and time.monotonic() - t0 >= 1.0

    # A client that knows the budget paces itself and never sees a 429.
    refused = srv.stats.rest_status.get(429, 0)
    polite = BinanceRestClient(srv.rest_url, weight_budget=10, weight_margin=0, weight_window_s=3.0)
    for i in range(7):
        polite.klines_page("ADAUSDT", "1m", START_MS - 100 * MINUTE * (i + 1), limit=100)
    assert srv.stats.rest_status.get(429, 0) == refused

    # 418 with a long ban fails at once and loudly; 5xx is retried a bounded number of times.
    srv.faults.rest_fail(418, 1, retry_after=3600)
    with pytest.raises(BinanceBanned):
        client.klines_page("BTCUSDT", "1m", START_MS - 10 * MINUTE, limit=5)
    srv.faults.rest_fail(503, 2)
    assert len(client.klines_page("BTCUSDT", "1m", START_MS - 10 * MINUTE, limit=5)) == 5
    quick = BinanceRestClient(srv.rest_url, max_retries=2, backoff_initial_s=0.01)
    srv.faults.rest_fail(500, 3)
    with pytest.raises(BinanceUnavailable):
        quick.klines_page("BTCUSDT", "1m", START_MS - 10 * MINUTE, limit=5)


def test_rest_pagination_drops_the_open_candle(make_server):
    srv = make_server()
    client = BinanceRestClient(srv.rest_url)
    now = client.server_time()
    start = START_MS - 2500 * MINUTE
    candles = client.fetch_klines("BTCUSDT", "1m", start, now)
    opens = [c.open_time for c in candles]
    assert opens[0] == start and opens == list(range(start, opens[-1] + 1, MINUTE))
    assert candles[-1].close_time < client.server_time()  # no still-open candle
    assert client.requests >= 4  # 3 pages of 1000 + the time request
    hours = client.fetch_klines("BTCUSDT", "1h", START_MS - 24 * 3_600_000, START_MS - 1)
    assert len(hours) == 24 and all(not validate(c) for c in hours)


def test_exchange_info_tick_sizes_are_read_off_the_history(make_server, history):
    """The same client call that reads Binance's tick sizes reads the replay's: each the coarsest
    power of ten every price of the shared file is a multiple of; an unknown symbol is -1121."""
    srv = make_server(
        symbols=["POLUSDT"]
    )  # configured, but no file: accepted, nothing to infer from
    client = BinanceRestClient(srv.rest_url)
    ticks = client.tick_sizes(["BTCUSDT", "ethusdt", "ADAUSDT"])
    assert ticks == {
        "BTCUSDT": Decimal("0.01"),
        "ETHUSDT": Decimal("0.01"),
        "ADAUSDT": Decimal("0.00001"),
    }
    for symbol, tick in ticks.items():
        prices = [p for c in history[(symbol, "1h")] for p in (c.open, c.high, c.low, c.close)]
        assert all(p % tick == 0 for p in prices)
        assert any(p % (tick * 10) != 0 for p in prices)  # and no coarser tick would do
    assert client.tick_sizes() == {**ticks, "POLUSDT": Decimal("0.00000001")}
    assert client.tick_sizes([]) == {}

    with pytest.raises(BinanceRequestError) as unknown:
        client.tick_sizes(["BTCUSDT", "NOSUCHUSDT"])
    assert (unknown.value.status, unknown.value.code) == (400, -1121)
    # What training is handed: the served tick, or None (inferred from the closes) when the
    # exchange can't say; the files source publishes none.
    assert hourly.exchange_tick(client, "ADAUSDT") == 0.00001
    assert hourly.exchange_tick(client, "NOSUCHUSDT") is None
    assert hourly.exchange_tick(FileHistory([]), "BTCUSDT") is None

    # The wire, as Binance's: ?symbol=, the filter's strings with 8 decimals, weight 20.
    before = client.server_time()
    used = client.used_weight
    r = requests.get(f"{srv.rest_url}/api/v3/exchangeInfo", params={"symbol": "BTCUSDT"}, timeout=5)
    assert r.status_code == 200 and int(r.headers["X-MBX-USED-WEIGHT-1M"]) in (
        used + 20,
        20,
    )  # 20: a new window
    body = r.json()
    assert body["timezone"] == "UTC" and before <= body["serverTime"] <= client.server_time()
    (btc,) = body["symbols"]
    assert (btc["symbol"], btc["status"], btc["baseAsset"], btc["quoteAsset"]) == (
        "BTCUSDT",
        "TRADING",
        "BTC",
        "USDT",
    )
    assert btc["filters"][0] == {
        "filterType": "PRICE_FILTER",
        "minPrice": "0.01000000",
        "maxPrice": "1000000.00000000",
        "tickSize": "0.01000000",
    }
    r = requests.get(
        f"{srv.rest_url}/api/v3/exchangeInfo", params={"symbol": "NOSUCHUSDT"}, timeout=5
    )
    assert r.status_code == 400 and r.json() == {"code": -1121, "msg": "Invalid symbol."}
    r = requests.get(
        f"{srv.rest_url}/api/v3/exchangeInfo", params={"symbols": "BTCUSDT"}, timeout=5
    )
    assert r.status_code == 400 and r.json()["code"] == -1100  # not a JSON array


def test_server_shutdown_is_handled_make_before_break(make_server, make_stream):
    srv = make_server()
    got = []
    stream = make_stream(srv, lambda raw, ts: got.append(raw))
    wait_for(n_closed_each(got, 3), what="first candles")
    t0 = time.monotonic()
    assert srv.faults.server_shutdown(grace_s=3.0) == 1
    wait_for(lambda: srv.stats.connections >= 2, timeout=2.0, what="a new connection")
    assert time.monotonic() - t0 < 1.0, "reconnect must be prompt, long before the server closes"
    wait_for(
        lambda: srv.stats.active == 1, timeout=2.0, what="the old connection closed by the client"
    )
    before = len(closed_candles(got))
    wait_for(lambda: len(closed_candles(list(got))) >= before + 15, what="candles after the switch")
    stream.stop()
    assert stream.stats.server_shutdowns == 1
    assert any("serverShutdown" in r for r in got)
    for sym, cs in per_symbol(closed_candles(got)).items():
        opens = sorted({c.open_time for c in cs})
        assert opens == list(range(opens[0], opens[-1] + 1, MINUTE)), (
            f"{sym}: hole across the switch"
        )


def test_pings_answered_and_stall_detected(make_server, make_stream):
    srv = make_server(ping_interval_s=0.1, pong_timeout_s=1.0)
    got = []
    stream = make_stream(srv, lambda raw, ts: got.append(raw), stall_timeout_s=0.5)
    # The server resolves a ping only on a pong carrying its payload.
    # Both counts are awaited: the server can read a pong before the client's thread has counted it.
    wait_for(
        lambda: srv.stats.pongs >= 5 and stream.stats.pongs >= 5, what="5 pongs sent and received"
    )
    assert srv.stats.pong_timeouts == 0
    srv.faults.stall(1.5)  # no data, no pings: the client must give up on this connection
    wait_for(lambda: stream.stats.stalls >= 1, timeout=3.0, what="stall detection")
    wait_for(
        lambda: srv.stats.connections >= 2 and stream.connected(),
        timeout=5.0,
        what="reconnect after stall",
    )


def test_collector_sigkill_loses_at_most_the_tail(make_server, tmp_path):
    srv = make_server(record_sent=True)
    root = tmp_path / "segments"
    with open(tmp_path / "collector.log", "wb") as logfile:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cryptoflow.collector",
                "--root",
                str(root),
                "--ws-url",
                srv.ws_url,
                "--symbols",
                ",".join(SYMBOLS),
                "--interval",
                "1m",
            ],
            env=dict(os.environ),
            stdout=logfile,
            stderr=subprocess.STDOUT,
        )
    try:

        def lines():
            return sum(p.path.read_bytes().count(b"\n") for p in list_segments(root))

        wait_for(
            lambda: proc.poll() is None and lines() > 300,
            timeout=20,
            what=lambda: f"collector writing (log: {(tmp_path / 'collector.log').read_text()[-500:]!r})",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    segs = list_segments(root)
    assert segs and segs[-1].active, "killed: the last segment was never sealed"
    stats = ReadStats()
    written = [m.raw for m in read_window(root, 0, 2**62, stats)]
    assert stats.corrupt == 0 and stats.torn == 0
    conn_id = min(srv.stats.sent_log)
    sent = srv.stats.sent_log[conn_id]
    # What reached the disk is exactly what the server sent, in order, minus a tail.
    assert len(written) >= 250
    assert written == sent[: len(written)]

    # A write torn by the kill (simulated: half a line at the end) is detected and skipped...
    with open(segs[-1].path, "ab") as f:
        f.write(b'{"r":1,"m":"{\\"stream\\":\\"btcusd')
    # ...and the next collector seals what the dead one left active.
    writer = SegmentWriter(root)
    assert writer.recovered == 1
    writer.close()
    stats = ReadStats()
    again = [m.raw for m in read_window(root, 0, 2**62, stats)]
    assert again == written and stats.torn == 1 and stats.active_segments == 0


def test_rotation_before_the_age_limit_loses_nothing(make_server, make_stream):
    # Stands in for the 24 h limit: the client rotates at 0.4 s, the server would cut at 5 s.
    srv = make_server(max_connection_age_s=5.0)
    got = []
    stream = make_stream(srv, lambda raw, ts: got.append(raw), rotate_after_s=0.4)
    wait_for(lambda: stream.stats.rotations >= 2, timeout=5.0, what="two rotations")
    before = len(closed_candles(got))
    wait_for(lambda: len(closed_candles(list(got))) >= before + 6, what="candles after rotating")
    stream.stop()
    assert stream.stats.disconnects == 0 and srv.stats.connections >= 3
    assert (
        stream.stats.handover_timeouts == 0
    )  # each old connection went once the new one took over
    for sym, cs in per_symbol(closed_candles(got)).items():
        opens = sorted({c.open_time for c in cs})
        assert opens == list(range(opens[0], opens[-1] + 1, MINUTE)), (
            f"{sym}: hole across a rotation"
        )
