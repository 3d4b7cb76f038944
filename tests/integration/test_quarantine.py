"""Rejections land in ops.quarantine whole, with their reason, through the writer role."""

from __future__ import annotations

from datetime import datetime, timezone

import psycopg
import pytest

from cryptoflow.candles import Rejection
from cryptoflow.importers import import_cdd_csv
from cryptoflow.quarantine import count_by_reason, write_rejections

pytestmark = pytest.mark.integration


def test_raw_file_rejections_into_the_warehouse(warehouse, shared_data):
    res = import_cdd_csv(shared_data / "raw" / "Binance_BTCUSDT_1h_2017-2021.csv")
    with psycopg.connect(warehouse.writer_dsn) as conn:
        assert write_rejections(conn, res.rejections, run_id="import-raw-1") == 31233
        conn.commit()
        assert (
            count_by_reason(conn, run_id="import-raw-1")
            == res.by_reason
            == {
                "conflicting_duplicate": 5298,
                "date_unix_mismatch": 91,
                "missing_trade_count": 25844,
            }
        )
        assert count_by_reason(conn, run_id="another-run") == {}
        assert (
            count_by_reason(conn, source="cryptodatadownload:Binance_BTCUSDT_1h_2017-2021.csv")[
                "date_unix_mismatch"
            ]
            == 91
        )
        # The record exactly as received, and the candle's identity as a timestamptz.
        raw, sym, interval, open_time = conn.execute(
            "SELECT raw_record, symbol, interval, open_time FROM ops.quarantine"
            " WHERE reason = 'date_unix_mismatch' ORDER BY open_time DESC LIMIT 1"
        ).fetchone()
        assert (
            raw
            == "1506448800.0,2017-09-26 02-PM,BTC/USDT,3891.03,3920,3890.98,3900,4.76,18580.82,NULL"
        )
        assert (sym, interval) == ("BTCUSDT", "1h")
        assert open_time == datetime(2017, 9, 26, 18, tzinfo=timezone.utc)


def test_odd_records_survive(warehouse):
    odd = [
        Rejection("bad_number", "o='\\x00'", '{"k":{"o":"\x00; DROP TABLE x;--"}}', "websocket"),
        Rejection(
            "unknown_symbol", "détail ünïcode", 'é,\t,\\N,"q"', "rest", "XYZ", "1m", 1726221600000
        ),
    ]
    with psycopg.connect(warehouse.writer_dsn) as conn:
        assert write_rejections(conn, odd, run_id=None) == 2
        conn.commit()
        rows = conn.execute(
            "SELECT reason, raw_record, open_time FROM ops.quarantine ORDER BY id"
        ).fetchall()
    assert rows[0][1] == '{"k":{"o":"\\x00; DROP TABLE x;--"}}'  # NUL made visible, not fatal
    assert rows[1] == (
        "unknown_symbol",
        'é,\t,\\N,"q"',
        datetime(2024, 9, 13, 10, tzinfo=timezone.utc),
    )
    with psycopg.connect(warehouse.writer_dsn) as conn:
        assert count_by_reason(conn) == {"bad_number": 1, "unknown_symbol": 1}


def test_reader_role_cannot_quarantine(warehouse):
    with psycopg.connect(warehouse.reader_dsn) as conn:
        with pytest.raises(psycopg.Error):
            write_rejections(conn, [Rejection("x", "y", "z", "s")], run_id="r")
