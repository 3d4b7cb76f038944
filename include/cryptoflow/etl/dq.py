"""Data-quality checks run by the spark_etl DAG after a load; each records its results in
ops.data_quality_results (the pipeline-health dashboard) and returns the failures.

They judge the run's own range (ops.pipeline_runs details written by the job), so their cost is
the run's, not the history's:
- row_counts: every input row is loaded, collapsed as an equal duplicate or quarantined;
- freshness: each configured symbol's newest candle is within `max_lag` of the run's newest data
  (a symbol with no exchange pair at that time, e.g. MATIC->POL, is explained, not stale);
- duplicate_keys: no (symbol, interval, open_time) twice in the run's range;
- gaps: every expected open time in the run's range is stored, or quarantined (the row came but
  was rejected), or inside an explained gap (ops.explained_gaps), or outside the symbol's trading life.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from cryptoflow.candles import INTERVAL_MS
from cryptoflow.symbols import exchange_symbol
from cryptoflow.times import datetime_from_ms, ms_from_datetime
from cryptoflow.warehouse import db

PIPELINE = "spark_etl"


@dataclass
class Check:
    name: str
    passed: bool
    observed: object = None
    expected: object = None
    symbol: str | None = None
    details: dict | None = None


def load_record(conn, run_id: str) -> dict:
    """The job's record of a load (counts, ranges, merge figures), for the checks and the Asset event."""
    row = conn.execute(
        "SELECT status, rows_in, details FROM ops.pipeline_runs WHERE pipeline = %s AND task = 'load'"
        " AND run_id = %s",
        (PIPELINE, run_id),
    ).fetchone()
    if row is None:
        raise LookupError(f"no spark_etl load recorded for run {run_id!r}")
    return {"status": row[0], "rows_in": row[1], **(row[2] or {})}


def _record(conn, run_id: str, checks: list[Check]) -> list[Check]:
    for c in checks:
        db.record_check(
            conn, run_id, PIPELINE, c.name, c.passed, c.observed, c.expected, c.symbol, c.details
        )
    conn.commit()
    return [c for c in checks if not c.passed]


def row_counts(conn, run_id: str) -> list[Check]:
    run = load_record(conn, run_id)
    c = run.get("counts", {})
    accounted = c.get("kept", 0) + c.get("collapsed_duplicates", 0) + c.get("quarantined", 0)
    merge = c.get("merge", {})
    merged = (
        merge.get("inserted", 0)
        + merge.get("updated", 0)
        + merge.get("unchanged", 0)
        + merge.get("conflicts", 0)
    )
    checks = [
        Check(
            "row_counts_balanced",
            c.get("rows_in") == accounted,
            c.get("rows_in"),
            accounted,
            details={
                "kept": c.get("kept"),
                "collapsed": c.get("collapsed_duplicates"),
                "quarantined": c.get("quarantined"),
            },
        ),
        Check("row_counts_merged", merged == c.get("kept"), merged, c.get("kept"), details=merge),
        Check(
            "row_counts_nonempty",
            c.get("snapshots", 0) == 0 or c.get("rows_in", 0) > 0,
            c.get("rows_in"),
            "> 0 when snapshots were read",
        ),
    ]
    return _record(conn, run_id, checks)


def freshness(
    conn, run_id: str, symbols, interval: str, max_lag: timedelta = timedelta(minutes=30)
) -> list[Check]:
    run = load_record(conn, run_id)
    ranges = {k: v for k, v in run.get("ranges", {}).items() if k.endswith(f"/{interval}")}
    if not ranges:
        return _record(
            conn,
            run_id,
            [Check(f"freshness_{interval}", True, "no data of this interval in the run", None)],
        )
    newest = max(hi for _, hi in ranges.values()) + INTERVAL_MS[interval]
    stored = dict(
        conn.execute(
            "SELECT symbol, max(open_time) FROM market.candles WHERE interval = %s"
            " AND symbol = ANY(%s) AND open_time >= %s GROUP BY symbol",
            (interval, list(symbols), datetime_from_ms(newest) - 4 * max_lag),
        ).fetchall()
    )
    checks = []
    for s in symbols:
        last = stored.get(s)
        lag = (
            None
            if last is None
            else datetime_from_ms(newest) - (last + timedelta(milliseconds=INTERVAL_MS[interval]))
        )
        traded = exchange_symbol(s, newest - INTERVAL_MS[interval]) is not None
        ok = (lag is not None and lag <= max_lag) or not traded
        checks.append(
            Check(
                f"freshness_{interval}",
                ok,
                "no recent data" if lag is None else f"{lag.total_seconds() / 60:.1f} min",
                f"<= {max_lag} behind {datetime_from_ms(newest).isoformat()}",
                s,
                None if traded else {"explained": "no exchange pair at that time"},
            )
        )
    return _record(conn, run_id, checks)


def duplicate_keys(conn, run_id: str) -> list[Check]:
    run = load_record(conn, run_id)
    checks = []
    for key, (lo, hi) in sorted(run.get("ranges", {}).items()):
        symbol, interval = key.split("/")
        n = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM market.candles WHERE symbol = %s AND interval = %s"
            " AND open_time BETWEEN %s AND %s GROUP BY open_time HAVING count(*) > 1) d",
            (symbol, interval, datetime_from_ms(lo), datetime_from_ms(hi)),
        ).fetchone()[0]
        checks.append(Check(f"duplicate_keys_{interval}", n == 0, n, 0, symbol))
    return _record(conn, run_id, checks or [Check("duplicate_keys", True, "nothing loaded", 0)])


def snapshot_windows(uris) -> list[tuple[int, int]] | None:
    """The [start, end) windows the run's snapshots were sealed for, None if a name carries none."""
    from cryptoflow.landing import parse_snapshot_name

    try:
        return [parse_snapshot_name(u) for u in uris]
    except ValueError:
        return None


def gaps(
    conn, run_id: str, interval: str, windows: list[tuple[int, int]] | None = None
) -> list[Check]:
    """Missing open times of `interval` within each symbol's range in the run, and their explanation.

    With `windows` (the run's snapshot windows), only the times inside them are judged: a sealed
    window promises every candle of its span, but the time between two windows the run happened to
    load together (a seed and the first 10-minute window) is nobody's promise yet; binance_ingest's
    healing fills it, and the next check that covers it judges it. Those times are counted
    (`between_windows`), not failed.
    """
    run = load_record(conn, run_id)
    step = INTERVAL_MS[interval]
    checks = []
    for key, (lo, hi) in sorted(run.get("ranges", {}).items()):
        symbol, iv = key.split("/")
        if iv != interval:
            continue
        missing = [
            r[0]
            for r in conn.execute(
                "SELECT t FROM generate_series(%s::timestamptz, %s::timestamptz, %s * interval '1 millisecond') t"
                " WHERE NOT EXISTS (SELECT 1 FROM market.candles c WHERE c.symbol = %s AND c.interval = %s AND c.open_time = t)",
                (datetime_from_ms(lo), datetime_from_ms(hi), step, symbol, interval),
            ).fetchall()
        ]
        unexplained, between = [], 0
        for t in missing:
            ms = ms_from_datetime(t)
            if exchange_symbol(symbol, ms) is None:
                continue
            if windows is not None and not any(a <= ms < b for a, b in windows):
                between += 1
                continue
            explained = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM ops.quarantine WHERE symbol = %s AND interval = %s AND open_time = %s)"
                " OR EXISTS (SELECT 1 FROM ops.explained_gaps WHERE symbol = %s AND interval = %s"
                "            AND gap_start <= %s AND %s < gap_end)",
                (symbol, interval, t, symbol, interval, t, t),
            ).fetchone()[0]
            if not explained:
                unexplained.append(t.isoformat())
        checks.append(
            Check(
                f"gaps_{interval}",
                not unexplained,
                len(unexplained),
                0,
                symbol,
                {
                    "missing": len(missing),
                    "between_windows": between,
                    "unexplained_first": unexplained[:10],
                },
            )
        )
    return _record(
        conn, run_id, checks or [Check(f"gaps_{interval}", True, "no data of this interval", 0)]
    )


# The checks spark_etl runs after every load, by the name its mapped task shows in the UI.
CHECKS = ("row_counts", "freshness", "duplicate_keys", "gaps")


def run_check(
    conn, name: str, run_id: str, *, symbols, interval: str, snapshot_uris=None
) -> list[Check]:
    """The named check of CHECKS on the load of `run_id`; returns its failures (all are recorded).

    `snapshot_uris`: the snapshots the run loaded (the gap check judges their windows only)."""
    if name == "row_counts":
        return row_counts(conn, run_id)
    if name == "freshness":
        return freshness(conn, run_id, symbols, interval)
    if name == "duplicate_keys":
        return duplicate_keys(conn, run_id)
    if name == "gaps":
        return gaps(
            conn,
            run_id,
            interval,
            snapshot_windows(snapshot_uris) if snapshot_uris is not None else None,
        )
    raise ValueError(f"unknown data-quality check {name!r} (known: {', '.join(CHECKS)})")


def describe_failures(name: str, failures: list[Check], limit: int = 20) -> str:
    """One line for the UI: which check failed, for which symbols, observed against expected."""
    listed = "; ".join(
        f"{c.name}{'/' + c.symbol if c.symbol else ''}: observed {c.observed}, expected {c.expected}"
        for c in failures[:limit]
    )
    return f"{name}: {len(failures)} failed: {listed}"


__all__ = [
    "Check",
    "CHECKS",
    "run_check",
    "describe_failures",
    "row_counts",
    "freshness",
    "duplicate_keys",
    "gaps",
    "snapshot_windows",
    "load_record",
]
