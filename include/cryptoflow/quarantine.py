"""ops.quarantine: rows that failed validation, kept whole with their reason (nothing dropped silently)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable

from cryptoflow.candles import Rejection

_COLUMNS = "source, reason, detail, raw_record, symbol, interval, open_time, run_id"


def _ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc)


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
        with cur.copy(f"COPY ops.quarantine ({_COLUMNS}) FROM STDIN") as copy:
            for r in rejections:
                copy.write_row((_text(r.source), r.reason, _text(r.detail), _text(r.raw), r.symbol, r.interval,
                                _ts(r.open_time), run_id))
                n += 1
    return n


def count_by_reason(conn, run_id: str | None = None, source: str | None = None) -> dict[str, int]:
    """Quarantined rows per reason, optionally for one run and/or one source."""
    rows = conn.execute(
        "SELECT reason, count(*) FROM ops.quarantine"
        " WHERE (%(run)s::text IS NULL OR run_id = %(run)s) AND (%(src)s::text IS NULL OR source = %(src)s)"
        " GROUP BY reason ORDER BY reason",
        {"run": run_id, "src": source},
    ).fetchall()
    return {reason: int(n) for reason, n in rows}


__all__ = ["write_rejections", "count_by_reason"]
