"""A run's staging tables in PostgreSQL: their names, the advisory locks that mark them in use,
their creation, and the removal of those a dead run left behind.

Staging tables are named after the run id (a rerun drops its own leftovers). A run holds an
advisory lock while its staging tables exist; tables whose lock nobody holds (a killed run never
rerun) are dropped by the next run (`drop_orphaned_staging`). The same key names the run's
pending lake directory (etl.lake) and its per-partition COPY locks (etl.staging_copy).
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator

from psycopg import sql

STAGING_PREFIX = "etl_"
STAGE_PART_COLUMN = "_stage_part"


def staging_key(run_id: str) -> str:
    """16 hex digits naming a run's staging tables (and its advisory lock): stable across reruns."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:16]


def staging_name(run_id: str, what: str) -> str:
    """A staging table name derived from the run id, so a rerun finds (and drops) its own leftovers."""
    return f"{STAGING_PREFIX}{staging_key(run_id)}_{what}"


def _lock_id(key: str) -> int:
    """The advisory lock id of a staging key (signed 64-bit, as pg_advisory_lock takes it)."""
    v = int(key, 16)
    return v - (1 << 64) if v >= 1 << 63 else v


def partition_lock_class(run_id: str) -> int:
    """The first key of a run's per-partition staging locks (int4, the run's staging key): runs never
    wait on each other, attempts of one partition of one run do."""
    return int(staging_key(run_id)[:7], 16)


def hold_staging_lock(conn, run_id: str) -> None:
    """Mark this run's staging tables as in use for as long as `conn` lives (session advisory lock).

    Taken before the tables are created: a table whose lock nobody holds belongs to a run that is
    no longer running (its process died and its connection with it), see drop_orphaned_staging.
    """
    conn.execute("SELECT pg_advisory_lock(%s)", (_lock_id(staging_key(run_id)),))
    conn.commit()


def release_staging_lock(conn, run_id: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_id(staging_key(run_id)),))
    conn.commit()


def drop_orphaned_staging(conn, keep_run_id: str | None = None) -> list[str]:
    """Drop the ETL staging tables of runs that are no longer running; returns the tables dropped.

    A run holds its staging lock while its tables exist; a killed run that is never rerun leaves
    its tables behind with nobody holding the lock. Each candidate's lock is tried (not waited
    for): taken means orphaned (dropped, lock released), busy means a live run (left alone).
    """
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'staging' AND tablename LIKE %s ORDER BY 1",
        (STAGING_PREFIX.replace("_", r"\_") + "%",),
    ).fetchall()
    conn.commit()
    keep = staging_key(keep_run_id) if keep_run_id else None
    by_key: dict[str, list[str]] = {}
    for (name,) in rows:
        key = name[len(STAGING_PREFIX) : len(STAGING_PREFIX) + 16]
        if is_staging_key(key) and key != keep:
            by_key.setdefault(key, []).append(name)
    dropped = []
    for key, names in by_key.items():
        with orphan_lock(conn, key) as orphaned:
            if orphaned:
                for name in names:
                    conn.execute(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("staging", name))
                    )
                conn.commit()
                dropped += names
    return dropped


def is_staging_key(text: str) -> bool:
    return len(text) == 16 and all(ch in "0123456789abcdef" for ch in text)


@contextmanager
def orphan_lock(conn, key: str) -> Iterator[bool]:
    """Tries (does not wait for) the staging lock of `key`: True while held here, so the run it
    belongs to is gone and its leftovers may be removed; False if a live run holds it."""
    taken = conn.execute("SELECT pg_try_advisory_lock(%s)", (_lock_id(key),)).fetchone()[0]
    conn.commit()
    try:
        yield taken
    finally:
        if taken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_id(key),))
            conn.commit()


def create_unlogged_staging(conn, name: str, like: str, columns: tuple[str, ...]) -> sql.Composable:
    """(Re)create UNLOGGED staging.<name> with `columns` of table `like` (schema.table); committed."""
    ident = sql.Identifier("staging", name)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
    schema, table = like.split(".")
    conn.execute(
        sql.SQL("CREATE UNLOGGED TABLE {} AS SELECT {} FROM {} WITH NO DATA").format(
            ident, sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(schema, table)
        )
    )
    # The Spark partition that staged each row (set by the writing task, see
    # staging_copy._stage_partition; a writer that did not set it fails on NOT NULL); the merge
    # names its columns, never this one.
    conn.execute(
        sql.SQL(
            "ALTER TABLE {} ADD COLUMN {} int NOT NULL"
            " DEFAULT current_setting('cryptoflow.stage_part', true)::int"
        ).format(ident, sql.Identifier(STAGE_PART_COLUMN))
    )
    conn.commit()
    return ident


__all__ = [
    "STAGING_PREFIX",
    "STAGE_PART_COLUMN",
    "staging_key",
    "staging_name",
    "partition_lock_class",
    "hold_staging_lock",
    "release_staging_lock",
    "drop_orphaned_staging",
    "is_staging_key",
    "orphan_lock",
    "create_unlogged_staging",
]
