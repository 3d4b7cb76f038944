"""Collector and REST faults, end to end: replay server -> collector process -> seal_window -> Spark -> warehouse.

One scenario injects every collector fault into one run of the real collector process (so the
faults also meet each other): the server drops the connection mid-candle; it stalls (no data, no
pings) without closing; it sends serverShutdown; the collector is SIGKILLed between writes and
started again. Sealing the windows then meets REST faults while healing the gaps: 429 with
Retry-After, a short 418, a timeout, and 5xx that outlast the retries (that run fails loudly and
writes nothing; the next run heals). The Spark job loads every snapshot, and the warehouse must
hold every closed candle of every sealed window exactly once, value for value the replay's source.

Replay at 1200x on the original 2021 timeline: a 1m candle lasts 50 ms of wall time.
(Stream-level behaviour of each fault alone is in test_binance_replay.py.)
"""

from __future__ import annotations

import time

import psycopg
import pytest

from cryptoflow import ingest, landing, settings, sources
from cryptoflow_bench.soak import (
    CollectorProcess,
    received_range,
    wait_for,
    warehouse_counts,
    windows_between,
)
from cryptoflow.collector import ReadStats, read_window
from binance_emulator import ReplayServer, load_history
from cryptoflow.sources.binance.rest import BinanceRestClient, BinanceUnavailable
from cryptoflow.times import datetime_from_ms

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "ADAUSDT")
START_MS = 1_627_776_000_000  # 2021-08-01T00:00:00Z
MINUTE = 60_000


@pytest.fixture(scope="module")
def history(shared_data):
    return load_history([shared_data / "cryptodatadownload"], SYMBOLS)


def _events(root) -> list[tuple[str, str]]:
    stats = ReadStats()
    for _ in read_window(root, 0, 2**62, stats):
        pass
    return [(name, detail) for _, name, detail in stats.events]


@pytest.fixture
def srv(history):
    server = ReplayServer(
        history,
        speed=1200,
        shift_to_present=False,
        start_ms=START_MS,
        ping_interval_s=0.2,
        pong_timeout_s=2.0,
    ).start()
    yield server
    server.stop()


def test_collector_faults_then_ingest_and_etl_hold_every_candle_once(
    srv, tmp_path, spark, warehouse
):
    tl = srv.timeline
    root = tmp_path / "collector"
    opts = dict(stall_timeout_s=0.6, backoff_initial_s=0.1, backoff_max_s=0.4)
    first = CollectorProcess(root, srv.ws_url, SYMBOLS, log_path=tmp_path / "collector.log", **opts)
    second = None
    try:
        first.start()
        wait_for(
            lambda: srv.stats.connections >= 1 and srv.stats.closing_updates >= 3 * len(SYMBOLS),
            timeout=30,
            what=lambda: f"collector streaming ({first.log_tail()})",
        )
        begin_ms = tl.now_ms()

        # 1. The TCP connection dropped in the middle of a candle (no close frame).
        wait_for(lambda: 20_000 < tl.now_ms() % MINUTE < 40_000, what="mid-candle")
        assert srv.faults.drop_connections() == 1
        wait_for(
            lambda: srv.stats.connections >= 2 and srv.stats.active == 1,
            what="reconnect after the drop",
        )

        # 2. A stall: the connection stays open, nothing comes, not even pings.
        time.sleep(0.3)
        srv.faults.stall(1.5)
        wait_for(lambda: not srv.faults.stalled(), timeout=5, what="stall over")
        n = srv.stats.connections
        wait_for(
            lambda: srv.stats.active == 1 and srv.stats.closing_updates > 0,
            timeout=10,
            what="streaming again",
        )
        assert n >= 3, "the client must have given up on the silent connection"

        # 3. serverShutdown: a new connection before the old one closes.
        time.sleep(0.3)
        n = srv.stats.connections
        assert srv.faults.server_shutdown(grace_s=1.0) == 1
        wait_for(
            lambda: srv.stats.connections >= n + 1, timeout=3, what="reconnect on serverShutdown"
        )

        # 4. SIGKILL between writes, then a new collector on the same directory.
        time.sleep(0.5)
        assert first.kill() < 0
        time.sleep(0.4)  # ~8 replay minutes nobody receives
        second = CollectorProcess(
            root, srv.ws_url, SYMBOLS, log_path=tmp_path / "collector2.log", **opts
        ).start()
        n = srv.stats.connections
        wait_for(
            lambda: srv.stats.connections > n,
            timeout=30,
            what=lambda: f"restart ({second.log_tail()})",
        )
        time.sleep(1.0)
        # Enough replay time for the sealing below to meet at least 8 whole windows, however fast the
        # faults went by (a quick run once covered 84 replay minutes: only 7 whole windows).
        wait_for(
            lambda: tl.now_ms() - begin_ms >= 100 * MINUTE, timeout=30, what="100 replay minutes"
        )
        end_ms = tl.now_ms()
        assert second.stop() == 0
    finally:
        for c in (first, second):
            if c is not None and c.alive():
                c.proc.kill()
                c.proc.wait()

    events = _events(root)
    details = " | ".join(d for name, d in events if name == "disconnected")
    assert "stalled" in details, details
    assert any(name == "server_shutdown" for name, _ in events)  # replaced make-before-break
    assert sum(1 for name, _ in events if name == "connected") >= 5

    cfg = settings.load(
        {
            "CRYPTOFLOW_STATE_DIR": str(tmp_path / "state"),
            "CRYPTOFLOW_SYMBOLS": ",".join(SYMBOLS),
            "CRYPTOFLOW_BINANCE_MODE": "replay",
            "CRYPTOFLOW_BINANCE_REST_URL": srv.rest_url,
            "CRYPTOFLOW_LANDING_URI": f"file://{tmp_path}/landing",
        }
    )
    windows = windows_between(begin_ms, end_ms - MINUTE)
    assert len(windows) >= 8, (begin_ms, end_ms)
    rest = BinanceRestClient(srv.rest_url, timeout_s=1.0, backoff_initial_s=0.05, max_retries=2)
    results = {}
    stages = [
        "outage",
        "timeout",
    ]  # what healing meets at the first and the second window with a gap
    for w_lo, w_hi in windows:
        seal = dict(
            rest_client=rest, collector_root=root, received_ms=received_range(tl, w_lo, w_hi)
        )
        stage = stages.pop(0) if stages and _missing(root, tl, cfg, w_lo, w_hi) else None
        if stage == "outage":
            srv.faults.rest_fail(
                503, 10
            )  # outlasts max_retries: the run fails loudly and writes nothing
            with pytest.raises(BinanceUnavailable):
                ingest.seal_window(cfg, w_lo, w_hi, **seal)
            assert landing.list_snapshots(cfg.landing_uri, "1m", w_lo, w_hi) == []
            while srv.faults.take_rest() is not None:  # the outage ends
                pass
            # The later run meets a 429 with Retry-After and a short 418 ban, waits both out, heals.
            srv.faults.rest_fail(429, 1, retry_after=1)
            srv.faults.rest_fail(418, 1, retry_after=1)
            waited = rest.waited_s
            results[w_lo] = ingest.seal_window(cfg, w_lo, w_hi, **seal)
            assert rest.waited_s - waited >= 1.99  # 1 s Retry-After each
            assert results[w_lo].healed
        elif stage == "timeout":
            srv.faults.rest_delay(
                3.0, 1
            )  # the answer comes after the client's 1 s timeout: retried
            requests_before = rest.requests
            results[w_lo] = ingest.seal_window(cfg, w_lo, w_hi, **seal)
            assert results[w_lo].healed and rest.requests > requests_before + 1
        else:
            results[w_lo] = ingest.seal_window(cfg, w_lo, w_hi, **seal)
    assert stages == [], "the faults should have cost the stream candles in at least two windows"
    assert srv.stats.rest_status.get(429, 0) == 1 and srv.stats.rest_status.get(418, 0) == 1
    assert rest.used_weight <= rest.weight_budget
    healed = sum(len(r.healed) for r in results.values())
    from_stream = sum(r.from_stream for r in results.values())
    assert healed > 0 and from_stream > healed
    assert all(r.holes == [] and r.rejected == {} for r in results.values())
    for r in results.values():  # every message read is accounted for
        st = r.stream
        assert st["messages"] == (
            st["from_stream"]
            + st["duplicates"]
            + st["rejected"]
            + st["open_updates"]
            + sum(st["ignored"].values())
        ), st
    assert sum(r.stream["ignored"].get("event:serverShutdown", 0) for r in results.values()) >= 1

    # The same windows sealed again (a retried DAG run) give the same bytes.
    w_lo, w_hi = windows[len(windows) // 2]
    again = ingest.seal_window(
        cfg,
        w_lo,
        w_hi,
        rest_client=rest,
        collector_root=root,
        received_ms=received_range(tl, w_lo, w_hi),
    )
    assert again.sha256 == results[w_lo].sha256

    from cryptoflow.etl import job

    uris = [r.uri for r in results.values()]
    out = job.run(
        spark,
        uris,
        "faults-ingest",
        dsn=warehouse.writer_dsn,
        lake_uri=f"file://{tmp_path}/lake",
        symbols=SYMBOLS,
    )
    assert out.counts["quarantined"] == 0
    lo, hi = windows[0][0], windows[-1][1]
    stored = warehouse_counts(warehouse.reader_dsn, "1m", lo, hi)
    with psycopg.connect(warehouse.reader_dsn) as conn:
        for sym in SYMBOLS:
            source = tl.candles(sym, "1m", lo, hi - 1)
            assert stored[sym] == (len(source), len(source)), sym
            rows = conn.execute(
                "SELECT open_time, open, high, low, close, base_volume, quote_volume, trades FROM market.candles"
                " WHERE symbol = %s AND interval = '1m' AND open_time >= %s AND open_time < %s ORDER BY open_time",
                (sym, datetime_from_ms(lo), datetime_from_ms(hi)),
            ).fetchall()
            assert [
                (
                    datetime_from_ms(c.open_time),
                    c.open,
                    c.high,
                    c.low,
                    c.close,
                    c.base_volume,
                    c.quote_volume,
                    c.trades,
                )
                for c in source
            ] == rows, sym


def _missing(root, tl, cfg, w_lo, w_hi) -> bool:
    """Whether the collector's record of this window lacks a closed candle (healing will call REST)."""
    candles, _, _ = ingest.parse_messages(
        read_window(root, *received_range(tl, w_lo, w_hi)),
        tuple(cfg.symbols),
        cfg.interval,
        w_lo,
        w_hi,
        feed=sources.active(cfg),
    )
    have = {(c.symbol, c.open_time) for c in candles}
    return bool(ingest.expected_keys(tuple(cfg.symbols), cfg.interval, w_lo, w_hi) - have)
