"""Landing snapshots: naming, deterministic bytes, duplicates, atomic replacement, reading back."""

from __future__ import annotations

import dataclasses
import os
import random
from decimal import Decimal

import pytest

from cryptoflow.candles import LANDING_COLUMNS
from cryptoflow.sources.binance.wire import from_kline_payload
from cryptoflow.landing import (
    WINDOW_MS,
    list_snapshots,
    parse_snapshot_name,
    read_snapshot,
    snapshot_relpath,
    window_of,
    write_snapshot,
)

pytestmark = pytest.mark.quick

W0 = 1726221600000  # 2024-09-13T10:00:00Z (POL's first minute)
K = {
    "t": W0,
    "T": W0 + 59_999,
    "s": "BTCUSDT",
    "i": "1m",
    "o": "58000.10000000",
    "c": "58010.00000000",
    "h": "58020.00000000",
    "l": "57990.00000000",
    "v": "12.50000000",
    "n": 321,
    "x": True,
    "q": "725001.25000000",
    "V": "6.1",
    "Q": "353800.5",
}


def minute(symbol: str, i: int, **over):
    c = from_kline_payload(
        {**K, "s": symbol, "t": W0 + i * 60_000, "T": W0 + i * 60_000 + 59_999}, "websocket"
    )
    return dataclasses.replace(c, **over)


def window_candles():
    return [minute(s, i) for s in ("ETHUSDT", "BTCUSDT", "POLUSDT") for i in range(10)]


def test_naming():
    assert window_of(W0 + 7 * 60_000 + 5) == (W0, W0 + WINDOW_MS)
    rel = snapshot_relpath("1m", W0, W0 + WINDOW_MS)
    assert rel == "interval=1m/date=2024-09-13/20240913T100000Z_20240913T101000Z.csv"
    assert parse_snapshot_name(rel) == (W0, W0 + WINDOW_MS)


def test_write_read_deterministic(tmp_path):
    root = f"file://{tmp_path}/landing"
    candles = window_candles()
    first = write_snapshot(root, "1m", W0, W0 + WINDOW_MS, candles)
    path = tmp_path / "landing" / snapshot_relpath("1m", W0, W0 + WINDOW_MS)
    assert first.uri == f"file://{path}" and first.rows == 30 and first.rejections == []
    data = path.read_bytes()
    lines = data.decode().splitlines()
    assert lines[0] == ",".join(LANDING_COLUMNS)
    assert lines[1].startswith(
        f"BTCUSDT,1m,{W0},{W0 + 59_999},58000.10000000,"
    )  # sorted by symbol, open_time
    assert data.endswith(b"\n") and b"\r" not in data
    # Any arrival order, plus exact duplicates: the same bytes.
    shuffled = candles + random.Random(1).sample(candles, 10)
    random.Random(2).shuffle(shuffled)
    again = write_snapshot(root, "1m", W0, W0 + WINDOW_MS, shuffled)
    assert again.duplicates_collapsed == 10 and again.rows == 30
    assert path.read_bytes() == data and again.sha256 == first.sha256
    back = read_snapshot(first.uri)
    assert back == sorted(candles, key=lambda c: (c.symbol, c.open_time))
    assert str(back[0].open) == "58000.10000000"  # exact strings survive
    # Readable by other users (Spark may run as another user); no temp files left behind.
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_equal_values_spelled_differently_are_deterministic(tmp_path):
    a = minute("BTCUSDT", 0)
    b = dataclasses.replace(a, open=Decimal("58000.1"))  # the same number
    r1 = write_snapshot(str(tmp_path / "x"), "1m", W0, W0 + WINDOW_MS, [a, b])
    d1 = open(r1.uri, "rb").read()
    r2 = write_snapshot(str(tmp_path / "x"), "1m", W0, W0 + WINDOW_MS, [b, a])
    assert open(r2.uri, "rb").read() == d1 and r1.duplicates_collapsed == 1


def test_conflicting_duplicates_are_returned_not_resolved(tmp_path):
    good = minute("BTCUSDT", 1)
    other = dataclasses.replace(good, close=Decimal("58011"), source="rest")
    res = write_snapshot(
        f"file://{tmp_path}", "1m", W0, W0 + WINDOW_MS, [minute("BTCUSDT", 0), good, other]
    )
    assert res.rows == 1
    assert [r.reason for r in res.rejections] == ["conflicting_duplicate"] * 2
    assert {r.source for r in res.rejections} == {"rest", "websocket"}
    assert all(
        r.open_time == good.open_time and r.symbol == "BTCUSDT" and r.raw.startswith("BTCUSDT,1m,")
        for r in res.rejections
    )
    assert [c.open_time for c in read_snapshot(res.uri)] == [W0]


def test_open_candles_and_foreign_candles(tmp_path):
    res = write_snapshot(
        str(tmp_path), "1m", W0, W0 + WINDOW_MS, [minute("BTCUSDT", 0, closed=False)]
    )
    assert res.rows == 0 and [r.reason for r in res.rejections] == ["not_closed"]
    with pytest.raises(ValueError):
        write_snapshot(
            str(tmp_path), "1m", W0, W0 + WINDOW_MS, [minute("BTCUSDT", 10)]
        )  # next window
    with pytest.raises(ValueError):
        write_snapshot(str(tmp_path), "5m", W0, W0 + WINDOW_MS, [minute("BTCUSDT", 0)])


def test_empty_window_is_a_header_only_file(tmp_path):
    res = write_snapshot(str(tmp_path), "1m", W0, W0 + WINDOW_MS, [])
    assert res.rows == 0 and read_snapshot(res.uri) == []


def test_list_snapshots(tmp_path):
    root = f"file://{tmp_path}"
    for w in range(3):
        start = W0 + w * WINDOW_MS
        write_snapshot(
            root,
            "1m",
            start,
            start + WINDOW_MS,
            [
                dataclasses.replace(
                    c,
                    open_time=c.open_time + w * WINDOW_MS,
                    close_time=c.close_time + w * WINDOW_MS,
                )
                for c in window_candles()
            ],
        )
    # A temp file of a writer in progress is not a snapshot.
    day = tmp_path / "interval=1m" / "date=2024-09-13"
    (day / ".20240913T103000Z_20240913T104000Z.csv.1.0.tmp").write_text("partial")
    found = list_snapshots(root, "1m")
    assert [parse_snapshot_name(u)[0] for u in found] == [W0, W0 + WINDOW_MS, W0 + 2 * WINDOW_MS]
    assert all(u.startswith("file://") for u in found)
    assert len(list_snapshots(root, "1m", W0 + WINDOW_MS, W0 + 2 * WINDOW_MS)) == 1
    assert list_snapshots(root, "5m") == []


def test_bad_file_is_refused(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError):
        read_snapshot(str(p))


def test_write_failure_leaves_old_file(tmp_path, monkeypatch):
    root = str(tmp_path)
    res = write_snapshot(root, "1m", W0, W0 + WINDOW_MS, window_candles())
    before = open(res.uri, "rb").read()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        write_snapshot(root, "1m", W0, W0 + WINDOW_MS, window_candles()[:3])
    assert open(res.uri, "rb").read() == before
    assert len(os.listdir(os.path.dirname(res.uri))) == 1
