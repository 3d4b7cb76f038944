"""Sealing windows into landing snapshots: stream messages from collector segments, gaps healed over
REST from the replay server (real sockets), bad frames quarantined, and the DAG under dag.test().

The collector's segments are written here with receive times equal to the candles' close times,
as live collection produces them; the replay server's REST side serves the same deterministic
minutes (derived from the real hourly candles of 2021-08-01) that the messages carry.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from cryptoflow import ingest, landing, settings
from cryptoflow.collector import SegmentWriter
from binance_emulator import ReplayServer, kline_event, load_history, partial, synthetic_minutes
from cryptoflow.sources.binance.rest import BinanceRestClient

pytestmark = pytest.mark.integration

SYMBOLS = ("BTCUSDT", "ETHUSDT", "ADAUSDT")
START = 1_627_776_000_000  # 2021-08-01T00:00Z
END = START + 10 * 60_000


@pytest.fixture(scope="module")
def history(shared_data):
    return load_history([shared_data / "cryptodatadownload"], SYMBOLS)


@pytest.fixture(scope="module")
def replay(history):
    srv = ReplayServer(history, speed=1200, shift_to_present=False, start_ms=START).start()
    deadline = time.monotonic() + 10
    while True:  # REST serves closed candles only: wait until the replay clock is past the window
        with urllib.request.urlopen(f"{srv.rest_url}/api/v3/time", timeout=5) as resp:
            if json.load(resp)["serverTime"] > END + 60_000:
                break
        assert time.monotonic() < deadline, "replay clock did not pass the window"
        time.sleep(0.05)
    yield srv
    srv.stop()


def minutes(history, symbol):
    hour = next(c for c in history[(symbol, "1h")] if c.open_time == START)
    return [m for m in synthetic_minutes(hour) if m.open_time < END]


def wrap(c) -> str:
    return json.dumps(
        {"stream": f"{c.symbol.lower()}@kline_1m", "data": kline_event(c, c.close_time + 1)}
    )


def cfg_for(tmp_path, replay, **extra):
    return settings.load(
        {
            "CRYPTOFLOW_STATE_DIR": str(tmp_path),
            "CRYPTOFLOW_SYMBOLS": ",".join(SYMBOLS),
            "CRYPTOFLOW_BINANCE_MODE": "replay",
            "CRYPTOFLOW_BINANCE_REST_URL": replay.rest_url,
            **extra,
        }
    )


def test_seal_window_heals_gaps_and_quarantines_bad_frames(tmp_path, history, replay):
    cfg = cfg_for(tmp_path, replay)
    writer = SegmentWriter(cfg.state_dir / "collector")
    dropped = ("ETHUSDT", START + 3 * 60_000)
    for sym in SYMBOLS:
        for m in minutes(history, sym):
            received = (m.close_time + 500) / 1000
            writer.append(wrap(partial(m, 0.5)), received - 30)  # an update of the open candle
            if (sym, m.open_time) == dropped:
                continue  # lost while disconnected
            writer.append(wrap(m), received)
            if sym == "BTCUSDT" and m.open_time == START:
                writer.append(wrap(m), received + 0.1)  # delivered twice
    bad = dataclasses.replace(
        minutes(history, "ADAUSDT")[5], high=minutes(history, "ADAUSDT")[5].low / 2
    )
    writer.append(wrap(bad), (bad.close_time + 700) / 1000)  # an invalid copy of a valid candle
    writer.append(
        '{"stream": "btcusdt@kline_1m", "data": {"e": "kline", "k": ', (START + 61_000) / 1000
    )
    writer.append(
        '{"stream": "dogeusdt@kline_1m", "data": '
        + json.dumps(
            kline_event(
                dataclasses.replace(minutes(history, "BTCUSDT")[1], symbol="DOGEUSDT"), START
            )
        )
        + "}",
        (START + 120_500) / 1000,
    )
    writer.close()

    result = ingest.seal_window(cfg, START, END, rest_client=BinanceRestClient(replay.rest_url))

    assert result.rows == 30 and result.holes == []
    assert result.healed == [dropped]
    assert result.open_updates == 30
    assert result.rejected == {"bad_json": 1, "unknown_symbol": 1, "high_below_low": 1}
    rows = landing.read_snapshot(result.uri)
    assert [c.key for c in rows] == sorted(c.key for c in rows)
    expected = {(s, m.open_time): m.close for s in SYMBOLS for m in minutes(history, s)}
    assert {(c.symbol, c.open_time): c.close for c in rows} == expected


def test_backfill_from_rest_alone_is_idempotent(tmp_path, replay):
    cfg = cfg_for(tmp_path, replay)
    first = ingest.seal_window(cfg, START, END)  # no collector segments at all: a past window
    second = ingest.seal_window(cfg, START, END)
    assert first.rows == 30 and len(first.healed) == 30
    assert (first.uri, first.sha256) == (second.uri, second.sha256)
    assert landing.list_snapshots(cfg.landing_uri, "1m") == [first.uri]


def test_binance_ingest_follows_the_binance_default_connection(
    tmp_path, replay, airflow_db, use_warehouse, monkeypatch
):
    """An operator who points the `binance_default` connection elsewhere (UI, secrets backend, or
    AIRFLOW_CONN_* as here) moves the ingest tasks' REST with it: the settings' URL is dead, the
    connection's is the replay server, and the window is sealed from REST all the same."""
    from airflow.dag_processing.dagbag import DagBag

    from cryptoflow_stack.postgres import free_port
    from tests.conftest import PROJECT_ROOT

    for key, value in cfg_for(tmp_path, replay).as_env().items():
        if key not in ("CRYPTOFLOW_WAREHOUSE_DSN", "CRYPTOFLOW_WAREHOUSE_READER_DSN"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv(
        "CRYPTOFLOW_BINANCE_REST_URL", f"http://127.0.0.1:{free_port()}"
    )  # nothing listens
    monkeypatch.setenv(
        "AIRFLOW_CONN_BINANCE_DEFAULT",
        json.dumps({"conn_type": "http", "extra": {"rest_url": replay.rest_url}}),
    )
    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "binance_ingest.py")).dags["binance_ingest"]
    for t in dag.tasks:
        t.retries = 0
    run = dag.test(logical_date=datetime.fromtimestamp(END / 1000, timezone.utc))
    assert run.state == "success"
    snaps = landing.list_snapshots(f"file://{tmp_path}/landing", "1m")
    assert (
        len(snaps) == 1 and len(landing.read_snapshot(snaps[0])) == 30
    )  # every candle came over REST

    monkeypatch.delenv(
        "AIRFLOW_CONN_BINANCE_DEFAULT"
    )  # without the connection: the settings' dead URL
    run = dag.test(
        logical_date=datetime.fromtimestamp(END / 1000, timezone.utc) + timedelta(minutes=10)
    )
    assert run.state == "failed"


def test_binance_ingest_dag_end_to_end(tmp_path, replay, airflow_db, use_warehouse, monkeypatch):
    for key, value in cfg_for(tmp_path, replay).as_env().items():
        if key not in ("CRYPTOFLOW_WAREHOUSE_DSN", "CRYPTOFLOW_WAREHOUSE_READER_DSN"):
            monkeypatch.setenv(key, value)
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import PROJECT_ROOT

    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "binance_ingest.py")).dags["binance_ingest"]
    for t in dag.tasks:
        t.retries = 0
    # A manual run covers the 10 minutes that end at its logical date.
    logical = datetime.fromtimestamp(END / 1000, timezone.utc)
    for _ in range(
        2
    ):  # the second run re-seals the same window: same snapshot, no double bookkeeping
        run = dag.test(logical_date=logical)
        assert run.state == "success"
    snaps = landing.list_snapshots(f"file://{tmp_path}/landing", "1m")
    assert len(snaps) == 1 and len(landing.read_snapshot(snaps[0])) == 30
    with psycopg.connect(use_warehouse.reader_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM ops.healed_gaps").fetchone()[0] == 30
        status, rows_out = conn.execute(
            "SELECT status, rows_out FROM ops.pipeline_runs WHERE pipeline = 'binance_ingest'"
        ).fetchone()
        assert (status, rows_out) == ("success", 30)
