"""The warehouse load ceiling: a plain psycopg COPY of one-minute candles into market.candles.

The Spark ETL's end-to-end load rate is judged against this figure (target: at least a third).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import cast

from cryptoflow import settings
from cryptoflow_stack.postgres import LocalPostgres, free_port
from cryptoflow.times import datetime_from_ms, utc_ms
from cryptoflow.warehouse.migrate import migrate

MINUTE_MS = 60_000


def synthetic_minute_rows(n: int, symbols=("BTCUSDT", "ETHUSDT")):
    """n deterministic, valid 1m candles spread over the symbols (a random walk, not real prices)."""
    start = utc_ms(2024, 1, 1)
    per_symbol = -(-n // len(symbols))
    price = 100.0
    for i in range(n):
        sym = symbols[i // per_symbol]
        t = start + (i % per_symbol) * MINUTE_MS
        price = max(1.0, price * (1 + ((i * 7919) % 200 - 100) / 100_000))
        o, c = price, price * 1.0003
        yield (
            sym,
            "1m",
            datetime_from_ms(t),
            datetime_from_ms(t + MINUTE_MS - 1),
            f"{o:.8f}",
            f"{c * 1.001:.8f}",
            f"{o * 0.999:.8f}",
            f"{c:.8f}",
            "12.5",
            f"{12.5 * o:.8f}",
            "6.1",
            f"{6.1 * o:.8f}",
            321,
            "bench",
        )


def bench_copy_ceiling(n: int | None = None) -> dict:
    n = settings.load().bench_rows if n is None else n
    with tempfile.TemporaryDirectory(prefix="cf-bench-pg-") as root:
        pg = LocalPostgres(Path(root), free_port(), superuser_password="bench", throwaway=True)
        pg.init()
        pg.start()
        try:
            pg.ensure_database("bench")
            migrate(pg.dsn("bench"))
            import psycopg

            rows = list(synthetic_minute_rows(n))
            with psycopg.connect(pg.dsn("bench")) as conn:
                t0 = time.perf_counter()
                with conn.cursor().copy(
                    "COPY market.candles (symbol, interval, open_time, close_time, open, high, low, close,"
                    " base_volume, quote_volume, taker_buy_base_volume, taker_buy_quote_volume, trades, source)"
                    " FROM STDIN"
                ) as copy:
                    for row in rows:
                        copy.write_row(row)
                conn.commit()
                seconds = time.perf_counter() - t0
                loaded = cast(
                    tuple, conn.execute("SELECT count(*) FROM market.candles").fetchone()
                )[0]
        finally:
            pg.destroy()
    return {
        "rows": loaded,
        "seconds": round(seconds, 2),
        "rows_per_second": round(loaded / seconds),
    }
