"""The task bodies of the binance_ingest DAG (dags/binance_ingest.py)."""

from __future__ import annotations

import logging
from contextlib import closing
from datetime import datetime, timezone

from cryptoflow import ingest, settings, sources
from cryptoflow.airflow.hooks import WarehouseHook, market_history
from cryptoflow.assets import SnapshotsSealed
from cryptoflow.warehouse import db

log = logging.getLogger(__name__)


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def collector_ready(window_end: datetime, first_poke: datetime | None) -> bool:
    """The window's closing messages have arrived from a live collector (its heartbeat), or the wait is over."""
    from cryptoflow.collector import read_heartbeat

    cfg = settings.load()
    now = datetime.now(timezone.utc)
    ready, why = ingest.collector_ready(
        read_heartbeat(cfg.state_dir / "collector"),
        ms(window_end),
        ms(now),
        ms(first_poke or now),
        has_stream=sources.active(cfg).has_stream,
    )
    log.info("%s", why)
    return ready


def seal_snapshot(start_ms: int, end_ms: int, backfill: bool) -> tuple[SnapshotsSealed, dict]:
    """Seals the window [start_ms, end_ms) into a landing snapshot, healing what the stream and the
    warehouse miss; returns the LANDING_SNAPSHOTS event's content and the seal's summary."""
    cfg = settings.load()
    run_id = ingest.window_run_id(cfg.interval, start_ms)
    # Binance's REST through the binance_default connection when there is one (an operator's
    # edit in the UI or a secrets backend takes effect here), else the settings' URL. Another
    # source (files) has no connection: its own history client.
    rest = market_history(cfg)
    with (
        closing(rest),
        WarehouseHook().connect() as conn,
        db.pipeline_run(conn, "binance_ingest", run_id, "seal_snapshot") as run,
    ):
        result = ingest.seal_window(cfg, start_ms, end_ms, rest_client=rest)
        ingest.record(conn, result, run_id, cfg.interval)
        # Closed candles missing from the warehouse before this window (a seed's edge, downtime,
        # a run that never happened) are fetched too. A backfill's windows are their own healing.
        healing = (
            ingest.heal_history(conn, cfg, before_ms=start_ms, rest_client=rest)
            if not backfill
            else ingest.HealResult(uris=[], wanted=0)
        )
        ingest.record_heal(conn, healing, run_id, cfg.interval)
        run.update(
            rows_in=result.from_stream + len(result.healed) + len(healing.healed),
            rows_out=result.rows + len(healing.healed),
            rows_quarantined=sum(result.rejected.values()) + len(healing.rejections),
        )
        run["details"].update(result.summary())
        run["details"]["history_healing"] = healing.summary()
    if healing.wanted:
        log.info(
            "healed %d of %d candles missing from the warehouse (%d holes kept, %d left for the next run)",
            len(healing.healed),
            healing.wanted,
            len(healing.holes),
            healing.deferred,
        )
    return SnapshotsSealed(
        (result.uri, *healing.uris), cfg.interval, start_ms, end_ms
    ), result.summary()


def verify_snapshot(summary: dict) -> dict:
    """Every expected candle is in the snapshot, or is a hole REST could not fill either (logged)."""
    from cryptoflow import landing

    cfg = settings.load()
    rows = landing.read_snapshot(summary["uri"])
    if len(rows) != summary["rows"]:
        raise ValueError(
            f"snapshot {summary['uri']} holds {len(rows)} rows, sealed {summary['rows']}"
        )
    if summary["stream"]["corrupt"]:
        raise ValueError(
            f"{summary['stream']['corrupt']} corrupt collector lines: inspect the segments"
        )
    return {"rows": len(rows), "holes": summary["holes"], "interval": cfg.interval}
