"""Warehouse health: is the schema current, and how fresh is each configured symbol's data?"""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg

from cryptoflow.warehouse import db
from cryptoflow.warehouse.migrate import applied, discover

PIPELINE = "warehouse_health"


def schema_status(conn: psycopg.Connection) -> dict:
    """Versions applied vs shipped; raises if the warehouse lags behind the code or was edited."""
    shipped = {m.version: m.checksum for m in discover()}
    done = applied(conn)
    missing = sorted(set(shipped) - set(done))
    changed = sorted(v for v in shipped if v in done and done[v] != shipped[v])
    if missing or changed:
        raise RuntimeError(
            f"warehouse schema not current: missing migrations {missing}, changed {changed}; "
            "run `cryptoflow db migrate`"
        )
    return {"applied": sorted(done)}


def freshness(
    conn: psycopg.Connection,
    symbols,
    interval: str,
    run_id: str,
    max_age: timedelta = timedelta(minutes=30),
) -> dict[str, float | None]:
    """Age in minutes of each symbol's newest candle of `interval`; one data-quality result per symbol."""
    now = db.utcnow()
    rows: dict[str, datetime] = dict(
        conn.execute(
            "SELECT symbol, max(open_time) FROM market.candles WHERE interval = %s AND symbol = ANY(%s) GROUP BY symbol",
            (interval, list(symbols)),
        ).fetchall()
    )
    ages = {}
    for symbol in symbols:
        newest = rows.get(symbol)
        age = None if newest is None else (now - newest).total_seconds() / 60
        ages[symbol] = age
        db.record_check(
            conn,
            run_id,
            PIPELINE,
            f"freshness_{interval}",
            passed=age is not None and age <= max_age.total_seconds() / 60,
            observed="no data" if age is None else f"{age:.1f} min",
            expected=f"<= {max_age}",
            symbol=symbol,
        )
    conn.commit()
    return ages
