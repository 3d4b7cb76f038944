"""ops.quarantine: rows that failed validation, kept whole with their reason (nothing dropped silently)."""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

from psycopg import sql

from cryptoflow.candles import Rejection
from cryptoflow.times import datetime_from_ms

# The columns every writer of ops.quarantine fills, in COPY and INSERT order (id and quarantined_at
# are the table's own).
COLUMNS = ("source", "reason", "detail", "raw_record", "symbol", "interval", "open_time", "run_id")
COLUMN_LIST = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))


def _ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime_from_ms(ms)


def _text(value: str | None) -> str | None:
    # PostgreSQL text can't hold NUL; a fuzzed or corrupt record may. Keep it visible, not fatal.
    return None if value is None else value.replace("\x00", "\\x00")


def write_rejections(conn, rejections: Iterable[Rejection], run_id: str | None) -> int:
    """Insert the rejections into ops.quarantine with COPY (parameters, never string-built SQL).

    Runs in the caller's transaction and does not commit: a batch's candles and its quarantine are
    meant to commit together. Returns the number of rows written.
    """
    n = 0
    with conn.cursor() as cur:
        with cur.copy(sql.SQL("COPY ops.quarantine ({}) FROM STDIN").format(COLUMN_LIST)) as copy:
            for r in rejections:
                copy.write_row(
                    (
                        _text(r.source),
                        r.reason,
                        _text(r.detail),
                        _text(r.raw),
                        r.symbol,
                        r.interval,
                        _ts(r.open_time),
                        run_id,
                    )
                )
                n += 1
    return n


def replace_run(conn, run_id: str, rejections: Iterable[Rejection]) -> int:
    """Replace the quarantine rows of `run_id` with `rejections`; returns the number written.

    Running the same work again (a resealed window, a re-import) must not quarantine each row twice.
    One transaction (a savepoint inside the caller's, so its other writes commit with it).
    """
    with conn.transaction():
        conn.execute("DELETE FROM ops.quarantine WHERE run_id = %s", (run_id,))
        return write_rejections(conn, rejections, run_id)


def count_by_reason(conn, run_id: str | None = None, source: str | None = None) -> dict[str, int]:
    """Quarantined rows per reason, optionally for one run and/or one source."""
    rows = conn.execute(
        "SELECT reason, count(*) FROM ops.quarantine"
        " WHERE (%(run)s::text IS NULL OR run_id = %(run)s) AND (%(src)s::text IS NULL OR source = %(src)s)"
        " GROUP BY reason ORDER BY reason",
        {"run": run_id, "src": source},
    ).fetchall()
    return {reason: int(n) for reason, n in rows}


__all__ = ["COLUMNS", "COLUMN_LIST", "write_rejections", "replace_run", "count_by_reason"]
