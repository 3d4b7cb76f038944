"""Loading candles into market.candles: stage, then merge in one transaction.

No reader ever sees a half-loaded batch: rows are first copied into a staging table, then merged
into market.candles by one INSERT ... ON CONFLICT in the same transaction as the bookkeeping.
The merge is the single place that decides what happens to a key that already exists:

- the same values again (a snapshot delivered twice, a rerun): nothing changes;
- a candle Binance delivered (a "source" candle, `minute_count` NULL) always wins over a derived
  one (an hour rolled up from minutes, `minute_count` set): a source candle replaces a stored
  rollup, and a rollup never replaces a stored source candle (it is dropped and counted as
  `kept_source`, `derived=True`);
- different values for a stored source candle from a source candle (a "late update of a closed
  candle"): the stored candle is kept and the new row goes to quarantine as `late_update_conflict`
  (a closed candle never changes on Binance; a difference means one of the two copies is wrong,
  so a person decides);
- different values for a stored derived candle: replaced, since a rollup is recomputed whenever
  its minutes change (e.g. a healed gap completes the hour).

The Spark job predicts this policy (cryptoflow.etl.frames.resolve_against_stored) to compute the
lake and the analytics from what the merge leaves, and checks its prediction against the counts
returned here.

Both the Python path (COPY from Candle objects) and the Spark job (JDBC/COPY into a staging table it
names) end in `merge_staged`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, cast

import psycopg
from psycopg import sql

from cryptoflow import quarantine
from cryptoflow.candles import CANDLE_COLUMNS, VALUE_COLUMNS, Candle
from cryptoflow.times import datetime_from_ms

# Columns whose difference makes a row "different" (ingested_at and source don't).
_VALUE_COLUMNS = VALUE_COLUMNS
# market.candles' loaded columns, in COPY and INSERT order (the staging tables have the same).
_CANDLE_COLS = sql.SQL(", ").join(map(sql.Identifier, CANDLE_COLUMNS))
# What makes a stored candle a source candle (one Binance delivered) rather than a derived rollup.
STORED_IS_SOURCE = sql.SQL("t.minute_count IS NULL")


@dataclass(frozen=True)
class MergeResult:
    staged: int
    inserted: int
    updated: int
    unchanged: int
    conflicts: int  # quarantined as late_update_conflict
    kept_source: int = 0  # derived rows not applied: a source candle holds the key

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def create_temp_candle_staging(
    conn: psycopg.Connection, name: str = "candles_stage"
) -> sql.Identifier:
    """A temporary staging table shaped like market.candles, dropped at commit."""
    ident = sql.Identifier(name)
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {} (LIKE market.candles INCLUDING DEFAULTS) ON COMMIT DROP"
        ).format(ident)
    )
    return ident


def copy_candles(
    conn: psycopg.Connection,
    table: sql.Composable,
    candles: Iterable[Candle],
    minute_counts: dict | None = None,
) -> int:
    n = 0
    cols = _CANDLE_COLS
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(table, cols)) as copy:
        for c in candles:
            mc = None if minute_counts is None else minute_counts.get(c.key)
            copy.write_row(
                (
                    c.symbol,
                    c.interval,
                    datetime_from_ms(c.open_time),
                    datetime_from_ms(c.close_time),
                    c.open,
                    c.high,
                    c.low,
                    c.close,
                    c.base_volume,
                    c.quote_volume,
                    c.taker_buy_base_volume,
                    c.taker_buy_quote_volume,
                    c.trades,
                    mc,
                    True if mc is None else mc == 60,
                    c.source,
                )
            )
            n += 1
    return n


def merge_staged(
    conn: psycopg.Connection,
    staging: sql.Composable,
    *,
    derived: bool = False,
    run_id: str | None = None,
) -> MergeResult:
    """Merge a staging table into market.candles inside the caller's transaction.

    Duplicate keys inside the staging table itself must have been resolved by the caller (the
    landing writer quarantines conflicting duplicates); a duplicate here is an error, not a choice.
    """
    dup = conn.execute(
        sql.SQL(
            "SELECT symbol, interval, open_time FROM {} GROUP BY 1, 2, 3 HAVING count(*) > 1 LIMIT 1"
        ).format(staging)
    ).fetchone()
    if dup:
        raise ValueError(
            f"staging table holds duplicate key {dup}; resolve duplicates before merging"
        )

    # Fresh statistics: without them the planner may join a small staging table to market.candles
    # by scanning the whole history, and the cost of a small load would grow with the table.
    conn.execute(sql.SQL("ANALYZE {}").format(staging))
    staged = cast(
        tuple, conn.execute(sql.SQL("SELECT count(*) FROM {}").format(staging)).fetchone()
    )[0]
    conflicts, kept_source = _set_aside_stored(conn, staging, derived, run_id)
    inserted, changed = _upsert_staged(conn, staging)
    updated = changed - inserted
    return MergeResult(
        staged=staged,
        inserted=inserted,
        updated=updated,
        unchanged=staged - conflicts - kept_source - inserted - updated,
        conflicts=conflicts,
        kept_source=kept_source,
    )


def _set_aside_stored(
    conn: psycopg.Connection, staging: sql.Composable, derived: bool, run_id: str | None
) -> tuple[int, int]:
    """(conflicts, kept_source): staged rows that must not replace a stored candle, out of the batch."""
    differs = sql.SQL(" OR ").join(
        sql.SQL("t.{c} IS DISTINCT FROM s.{c}").format(c=sql.Identifier(c)) for c in _VALUE_COLUMNS
    )
    same_key = sql.SQL(
        "t.symbol = s.symbol AND t.interval = s.interval AND t.open_time = s.open_time"
    )
    conflicts = kept_source = 0
    if derived:
        # A rollup never replaces a candle Binance delivered: drop it from the batch, count it.
        kept_source = conn.execute(
            sql.SQL("DELETE FROM {} s USING market.candles t WHERE {} AND {}").format(
                staging, same_key, STORED_IS_SOURCE
            )
        ).rowcount
    else:
        # Late updates of closed candles: quarantine the newcomer with both versions, keep the stored one.
        conflicts = conn.execute(
            sql.SQL(
                "INSERT INTO ops.quarantine ({})"
                " SELECT s.source, 'late_update_conflict',"
                "  'stored candle differs: ' || row_to_json(t)::text, row_to_json(s)::text,"
                "  s.symbol, s.interval, s.open_time, %s"
                " FROM {} s JOIN market.candles t USING (symbol, interval, open_time) WHERE {} AND ({})"
            ).format(quarantine.COLUMN_LIST, staging, STORED_IS_SOURCE, differs),
            (run_id,),
        ).rowcount
        if conflicts:
            conn.execute(
                sql.SQL("DELETE FROM {} s USING market.candles t WHERE {} AND {} AND ({})").format(
                    staging, same_key, STORED_IS_SOURCE, differs
                )
            )
    return conflicts, kept_source


def _upsert_staged(conn: psycopg.Connection, staging: sql.Composable) -> tuple[int, int]:
    """(inserted, inserted + updated): the staging table upserted into market.candles; a row equal
    to the stored one is left untouched."""
    cols = _CANDLE_COLS
    updates = sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
        for c in (*_VALUE_COLUMNS, "source")
    )
    excluded_differs = sql.SQL(" OR ").join(
        sql.SQL("t.{c} IS DISTINCT FROM EXCLUDED.{c}").format(c=sql.Identifier(c))
        for c in _VALUE_COLUMNS
    )
    # xmax = 0 tells a fresh insert from an update; counted in the server, not fetched row by row.
    # An aggregate without GROUP BY: always one row.
    inserted, changed = cast(
        tuple,
        conn.execute(
            sql.SQL(
                "WITH m AS (INSERT INTO market.candles AS t ({cols}) SELECT {cols} FROM {staging}"
                " ON CONFLICT (symbol, interval, open_time) DO UPDATE SET {updates}, ingested_at = now()"
                " WHERE {excluded_differs}"
                " RETURNING (xmax = 0) AS fresh)"
                " SELECT count(*) FILTER (WHERE fresh), count(*) FROM m"
            ).format(cols=cols, staging=staging, updates=updates, excluded_differs=excluded_differs)
        ).fetchone(),
    )
    return inserted, changed


class StoredMeanwhile(RuntimeError):
    """A key the run was told nobody stored was stored by someone else during the run."""


def insert_staged_fresh(conn: psycopg.Connection, staging: sql.Composable) -> MergeResult:
    """merge_staged for a staging table whose keys the caller has PROVEN absent from market.candles
    (the Spark job's index probe found nothing stored in the range, a backfill's usual case).

    Every policy of merge_staged then reduces to "insert": a plain INSERT, with no duplicate scan,
    no conflict join and no ON CONFLICT, which makes a bulk load markedly cheaper. The primary key
    still stands guard: a duplicate inside the batch, or a row someone stored meanwhile, fails the
    caller's transaction with StoredMeanwhile, as merge_staged's differing counts do.
    """
    cols = _CANDLE_COLS
    try:
        with conn.transaction():  # a savepoint inside the caller's: the error names what happened
            inserted = conn.execute(
                sql.SQL("INSERT INTO market.candles ({cols}) SELECT {cols} FROM {staging}").format(
                    cols=cols, staging=staging
                )
            ).rowcount
    except psycopg.errors.UniqueViolation as exc:
        raise StoredMeanwhile(
            f"a key the run found empty is taken ({exc.diag.message_detail}):"
            " market.candles changed during the run, or the batch repeats a key; rerun it"
        ) from exc
    return MergeResult(
        staged=inserted, inserted=inserted, updated=0, unchanged=0, conflicts=0, kept_source=0
    )


def upsert_candles(
    conn: psycopg.Connection,
    candles: Iterable[Candle],
    *,
    derived: bool = False,
    run_id: str | None = None,
    minute_counts: dict | None = None,
) -> MergeResult:
    """Stage `candles` with COPY and merge them, committing once: all or nothing."""
    with conn.transaction():
        staging = create_temp_candle_staging(conn)
        copy_candles(conn, staging, candles, minute_counts)
        return merge_staged(conn, staging, derived=derived, run_id=run_id)
