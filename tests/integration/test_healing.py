"""The platform heals itself: closed candles missing from the warehouse are found, fetched over REST
from the replay server (real sockets) and landed; what REST lacks too stays a hole with its reason.

Cases: a seed that ends before the first 10-minute window (the demo's own edge), a gap inside the
history (a collector dead for a while), the tail after downtime; and what must not be fetched
again: snapshots already landed, quarantined rows, explained holes.
"""

from __future__ import annotations

import json
import time
import urllib.request

import psycopg
import pytest

from cryptoflow import ingest, landing, settings
from binance_emulator import ReplayServer, load_history, synthetic_minutes
from cryptoflow.sources.binance.rest import BinanceRestClient
from cryptoflow.times import datetime_from_ms

pytestmark = pytest.mark.integration

SYMBOLS = ("BTCUSDT", "ETHUSDT")
START = 1_627_776_000_000  # 2021-08-01T00:00Z
MIN = 60_000
BEFORE = START + 60 * MIN  # the window being sealed starts here


@pytest.fixture(scope="module")
def history(shared_data):
    return load_history([shared_data / "cryptodatadownload"], SYMBOLS)


@pytest.fixture(scope="module")
def replay(history):
    srv = ReplayServer(history, speed=3600, shift_to_present=False, start_ms=START).start()
    deadline = time.monotonic() + 20
    while True:  # REST serves closed candles only: wait until the replay clock is past the hour
        with urllib.request.urlopen(f"{srv.rest_url}/api/v3/time", timeout=5) as resp:
            if json.load(resp)["serverTime"] > BEFORE + MIN:
                break
        assert time.monotonic() < deadline, "replay clock did not pass the hour"
        time.sleep(0.05)
    yield srv
    srv.stop()


def minutes(history, symbol):
    hour = next(c for c in history[(symbol, "1h")] if c.open_time == START)
    return synthetic_minutes(hour)


def test_missing_candles_are_found_healed_and_recorded(tmp_path, history, replay, use_warehouse):
    from tests.integration.test_forecast_training import load_into_warehouse

    cfg = settings.load(
        {
            "CRYPTOFLOW_STATE_DIR": str(tmp_path),
            "CRYPTOFLOW_SYMBOLS": ",".join(SYMBOLS),
            "CRYPTOFLOW_BINANCE_MODE": "replay",
            "CRYPTOFLOW_BINANCE_REST_URL": replay.rest_url,
            "CRYPTOFLOW_WAREHOUSE_DSN": use_warehouse.writer_dsn,
        }
    )
    btc, eth = minutes(history, "BTCUSDT"), minutes(history, "ETHUSDT")
    # Stored: BTC up to 00:40 (the "seed"), then its 00:50 window is on its way in the landing zone;
    # ETH has a 5-minute hole at 00:10 (collector dead) and stops at 00:30 (downtime).
    stored = [m for m in btc if m.open_time < START + 40 * MIN]
    stored += [
        m
        for m in eth
        if m.open_time < START + 30 * MIN and not START + 10 * MIN <= m.open_time < START + 15 * MIN
    ]
    load_into_warehouse(use_warehouse.writer_dsn, stored)
    landing.write_snapshot(
        cfg.landing_uri,
        "1m",
        START + 50 * MIN,
        START + 60 * MIN,
        [m for m in btc if m.open_time >= START + 50 * MIN],
    )
    with psycopg.connect(use_warehouse.writer_dsn) as conn:
        # ETH 00:20-00:22 were quarantined (REST would give the same bad rows again): not chased.
        conn.execute(
            "DELETE FROM market.candles WHERE symbol = 'ETHUSDT' AND open_time >= %s AND open_time < %s",
            (datetime_from_ms(START + 20 * MIN), datetime_from_ms(START + 22 * MIN)),
        )
        conn.execute(
            "INSERT INTO ops.quarantine (source, reason, raw_record, symbol, interval, open_time, run_id)"
            " SELECT 'binance_ws', 'high_below_low', 'x', 'ETHUSDT', '1m', t, 'test'"
            " FROM generate_series(%s::timestamptz, %s::timestamptz, interval '1 minute') t",
            (datetime_from_ms(START + 20 * MIN), datetime_from_ms(START + 21 * MIN)),
        )
        conn.commit()

        missing = ingest.find_missing(conn, cfg, BEFORE)
        want = {("BTCUSDT", START + i * MIN) for i in range(40, 50)}
        # (ETH's 00:50 minutes are in the landed window too: a sealed window holds every coin.)
        want |= {("ETHUSDT", START + i * MIN) for i in [*range(10, 15), *range(30, 50)]}
        assert missing == want

        result = ingest.heal_history(
            conn, cfg, BEFORE, rest_client=BinanceRestClient(replay.rest_url)
        )
        ingest.record_heal(conn, result, "binance_ingest:1m:test", "1m")
        conn.commit()
        assert (
            result.wanted == len(want)
            and sorted(result.healed) == sorted(want)
            and result.holes == []
        )
        healed_rows = [c for u in result.uris for c in landing.read_snapshot(u)]
        source = {(m.symbol, m.open_time): m.close for m in btc + eth}
        assert {(c.symbol, c.open_time): c.close for c in healed_rows} == {
            k: source[k] for k in want
        }
        assert all("/healed/" in u for u in result.uris)
        assert conn.execute(
            "SELECT count(*) FROM ops.healed_gaps WHERE run_id LIKE '%:heal'"
        ).fetchone()[0] == len(want)

        # Once landed, the healed snapshots are on their way: the next run fetches nothing again.
        assert ingest.find_missing(conn, cfg, BEFORE) == set()


def test_what_rest_lacks_stays_an_explained_hole(tmp_path, history, replay, use_warehouse):
    from tests.integration.test_forecast_training import load_into_warehouse

    cfg = settings.load(
        {
            "CRYPTOFLOW_STATE_DIR": str(tmp_path),
            "CRYPTOFLOW_SYMBOLS": "BTCUSDT",
            "CRYPTOFLOW_WAREHOUSE_DSN": use_warehouse.writer_dsn,
        }
    )
    btc = minutes(history, "BTCUSDT")
    load_into_warehouse(
        use_warehouse.writer_dsn, [m for m in btc if m.open_time < START + 50 * MIN]
    )

    class OutageRest:  # Binance had an outage at 00:55-00:57: REST returns nothing for it
        def __init__(self):
            self.inner = BinanceRestClient(replay.rest_url)

        def fetch_klines(self, *args, **kw):
            return [
                c
                for c in self.inner.fetch_klines(*args, **kw)
                if not START + 55 * MIN <= c.open_time < START + 58 * MIN
            ]

    with psycopg.connect(use_warehouse.writer_dsn) as conn:
        result = ingest.heal_history(conn, cfg, BEFORE, rest_client=OutageRest())
        ingest.record_heal(conn, result, "binance_ingest:1m:test", "1m")
        conn.commit()
        assert len(result.healed) == 7 and result.holes == [
            ("BTCUSDT", START + i * MIN) for i in (55, 56, 57)
        ]
        gaps = conn.execute("SELECT gap_start, gap_end, reason FROM ops.explained_gaps").fetchall()
        assert gaps == [
            (
                datetime_from_ms(START + 55 * MIN),
                datetime_from_ms(START + 58 * MIN),
                ingest.HOLE_REASON,
            )
        ]
        # Holes are never chased again; the healed stretches are landed.
        assert ingest.find_missing(conn, cfg, BEFORE) == set()


def test_collector_ready_needs_a_live_collector_for_a_live_window():
    end = START + 10 * MIN
    grace = ingest.DEFAULT_GRACE_MS
    assert ingest.collector_ready(None, end, end + 5_000, end + 5_000)[0] is False  # grace not over
    assert (
        ingest.collector_ready(None, end, end + grace + 1, end + 1)[0] is False
    )  # nobody collecting
    stale = {"at_ms": end - 60_000, "pid": 1, "connected": True}
    assert ingest.collector_ready(stale, end, end + grace + 1, end + 1)[0] is False
    alive = {"at_ms": end + grace + 500, "pid": 1, "connected": True}
    assert ingest.collector_ready(alive, end, end + grace + 1_000, end + 1)[0] is True
    # A run that began long after its window (backfill, coming back from downtime) seals from REST.
    assert ingest.collector_ready(None, end, end + 3_600_000, end + 3_600_000)[0] is True
