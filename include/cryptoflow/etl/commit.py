"""What an ETL run's one transaction does with its staging tables: the quarantine and analytics
rows moved into their tables (the analytics the run recomputed replaced), the merge's counts
checked against the run's prediction. The merges themselves are cryptoflow.warehouse.load's.
"""

from __future__ import annotations

from typing import cast

from psycopg import sql

from cryptoflow import quarantine
from cryptoflow.etl import analytics
from cryptoflow.etl.stored import ts
from cryptoflow.warehouse.load import CANDLE_COLUMNS

# staging suffix -> (table it is shaped like, columns)
STAGING = {
    "src": ("market.candles", CANDLE_COLUMNS),
    "der": ("market.candles", CANDLE_COLUMNS),
    "qua": ("ops.quarantine", quarantine.COLUMNS),
    "hm": ("market.hourly_metrics", analytics.METRICS_COLUMNS),
    "rc": ("market.return_correlation", analytics.CORRELATION_COLUMNS),
    "vp": ("market.volume_profile", analytics.PROFILE_COLUMNS),
}


def incomplete_hours(conn, staging: sql.Composable) -> int:
    """The staged rollups of hours whose minutes are not all there."""
    return cast(
        tuple,
        conn.execute(
            sql.SQL(  # an aggregate: one row
                "SELECT count(*) FROM {} WHERE NOT is_complete"
            ).format(staging)
        ).fetchone(),
    )[0]


def check_prediction(src, der, staged: dict[str, int]) -> None:
    """Fails the run when the merges (`src` of the new candles, `der` of the rollups) did not do
    what the run predicted and staged its analytics from: market.candles changed during the run."""
    if (src.conflicts, der.kept_source) != (
        staged["predicted_conflicts"],
        staged["predicted_kept_source"],
    ):
        raise RuntimeError(
            f"the merge found {src.conflicts} late updates and refused {der.kept_source} rollups, the run"
            f" predicted {staged['predicted_conflicts']} and {staged['predicted_kept_source']}:"
            " market.candles changed during the run; rerun it"
        )


def insert_staged(conn, name: str, table: str, staging: sql.Composable) -> None:
    cols = sql.SQL(", ").join(map(sql.Identifier, STAGING[name][1]))
    schema, tname = table.split(".")
    conn.execute(
        sql.SQL("INSERT INTO {} ({c}) SELECT {c} FROM {}").format(
            sql.Identifier(schema, tname), staging, c=cols
        )
    )


def replace_analytics(conn, stg, names, staged, m_lo, m_hi, d_lo, d_hi, profile_parts) -> dict:
    """Delete the analytics rows this run recomputed, insert the staged ones (caller's transaction)."""
    out = {}
    if "hm" in names:
        conn.execute(
            "DELETE FROM market.hourly_metrics WHERE open_time >= %s AND open_time <= %s",
            (ts(m_lo), ts(m_hi)),
        )
        insert_staged(conn, "hm", "market.hourly_metrics", stg("hm"))
        out["hourly_metrics"] = staged["hm"]
        conn.execute(
            "DELETE FROM market.return_correlation WHERE day >= %s::timestamptz::date"
            " AND day <= %s::timestamptz::date AND window_days = %s",
            (ts(d_lo), ts(d_hi), analytics.CORRELATION_DAYS),
        )
        insert_staged(conn, "rc", "market.return_correlation", stg("rc"))
        out["return_correlation"] = staged["rc"]
    if "vp" in names:
        keys = sorted(profile_parts)
        conn.execute(
            "DELETE FROM market.volume_profile v USING unnest(%s::text[], %s::text[], %s::date[]) k(s, i, d)"
            " WHERE v.symbol = k.s AND v.interval = k.i AND v.day = k.d",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
        )
        insert_staged(conn, "vp", "market.volume_profile", stg("vp"))
        out["volume_profile"] = staged["vp"]
    return out


__all__ = ["STAGING", "incomplete_hours", "check_prediction", "insert_staged", "replace_analytics"]
