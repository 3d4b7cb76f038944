"""Connections to the warehouse and the bookkeeping every pipeline shares (runs, data-quality results)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timezone

import psycopg

from cryptoflow import settings as settings_mod


def connect(dsn: str | None = None, **kw) -> psycopg.Connection:
    """A psycopg connection to the warehouse (writer DSN from the settings by default)."""
    return psycopg.connect(dsn or settings_mod.load().warehouse_dsn, **kw)


@contextmanager
def pipeline_run(
    conn: psycopg.Connection,
    pipeline: str,
    run_id: str,
    task: str = "",
    started_at: datetime | None = None,
):
    """Record a run in ops.pipeline_runs: 'running' now, then 'success' or 'failed' with its counts.

    The yielded dict collects rows_in / rows_out / rows_quarantined and free-form details.
    A rerun of the same (pipeline, task, run_id) overwrites the earlier record. `started_at`: when
    the work began, if the record is opened only for its last step (the Spark job records at its
    commit); the dashboards' run time is finished_at - started_at.
    """
    stats: dict = {"details": {}}
    conn.execute(
        "INSERT INTO ops.pipeline_runs (run_id, pipeline, task, started_at) VALUES (%s, %s, %s, coalesce(%s, now()))"
        " ON CONFLICT (pipeline, task, run_id) DO UPDATE SET started_at = EXCLUDED.started_at, finished_at = NULL,"
        " status = 'running', rows_in = NULL, rows_out = NULL, rows_quarantined = NULL, details = '{}'",
        (run_id, pipeline, task, started_at),
    )
    conn.commit()
    status = "failed"
    try:
        yield stats
        status = stats.get("status", "success")
    except Exception as exc:
        stats["details"]["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        conn.rollback()
        raise
    finally:
        conn.execute(
            "UPDATE ops.pipeline_runs SET finished_at = now(), status = %s, rows_in = %s, rows_out = %s,"
            " rows_quarantined = %s, details = %s WHERE pipeline = %s AND task = %s AND run_id = %s",
            (
                status,
                stats.get("rows_in"),
                stats.get("rows_out"),
                stats.get("rows_quarantined"),
                json.dumps(stats["details"], default=str),
                pipeline,
                task,
                run_id,
            ),
        )
        conn.commit()


def record_check(
    conn: psycopg.Connection,
    run_id: str,
    pipeline: str,
    check_name: str,
    passed: bool,
    observed=None,
    expected=None,
    symbol: str | None = None,
    details: dict | None = None,
) -> None:
    conn.execute(
        "INSERT INTO ops.data_quality_results (run_id, pipeline, check_name, symbol, passed, observed, expected, details)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            run_id,
            pipeline,
            check_name,
            symbol,
            passed,
            None if observed is None else str(observed),
            None if expected is None else str(expected),
            json.dumps(details or {}, default=str),
        ),
    )


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
