"""Bulk history from REST, landed as daily snapshots: seeding a new platform (the demo, a first
deployment) without thousands of 10-minute binance_ingest runs."""

from __future__ import annotations

from cryptoflow import landing, quarantine
from cryptoflow import symbols as symbols_mod
from cryptoflow.candles import Candle
from cryptoflow.healing import as_configured, rest_client_for
from cryptoflow.settings import Settings


def land_span(settings: Settings, candles: list[Candle], start_ms: int, end_ms: int) -> list[str]:
    """Land history of [start, end) as one snapshot per UTC day, each named by the span it holds.

    Like a 10-minute window, only longer: the name says which times the snapshot promises, so the
    healing (landed_windows) and the gap check (dq.snapshot_windows) judge it like any window.
    """
    day_ms = 86_400_000
    uris = []
    for day in range(start_ms - start_ms % day_ms, end_ms, day_ms):
        lo, hi = max(day, start_ms), min(day + day_ms, end_ms)
        snap = landing.write_snapshot(
            settings.landing_uri,
            settings.interval,
            lo,
            hi,
            [c for c in candles if lo <= c.open_time < hi],
        )
        uris.append(snap.uri)
    return uris


def backfill_from_rest(settings: Settings, start_ms: int, end_ms: int, rest_client=None):
    """Bulk history of [start, end) for every configured symbol straight from REST, as an ImportResult.

    For seeding a new platform (the demo, a first deployment) without thousands of 10-minute DAG
    runs; the candles land through `importers.land` like any other imported history. Candles REST
    does not have are simply absent (holes), never filled in.
    """
    from cryptoflow.importers.common import finish

    rest_client = rest_client or rest_client_for(settings)
    configured = tuple(settings.symbols)
    parsed, read = [], 0
    for name in configured:
        for seg in symbols_mod.segments_between(name, start_ms, end_ms):
            assert seg.end_ms is not None  # clipped to [start_ms, end_ms)
            for c in rest_client.fetch_klines(
                seg.symbol, settings.interval, seg.start_ms, seg.end_ms - 1
            ):
                read += 1
                parsed.append((as_configured(c, configured), ",".join(c.landing_row())))
    return finish(read, parsed, [], symbols=configured)


def backfill_and_land(
    settings: Settings,
    start_ms: int,
    end_ms: int,
    run_id: str,
    *,
    quarantine_rejections: bool = True,
    rest_client=None,
):
    """History of [start, end) from REST landed as daily snapshots (`land_span`), its rejections
    quarantined under `run_id` (replacing that run's earlier rows). Returns (ImportResult, URIs)."""
    from cryptoflow.warehouse import db

    result = backfill_from_rest(settings, start_ms, end_ms, rest_client)
    uris = land_span(settings, result.candles, start_ms, end_ms)
    if result.rejections and quarantine_rejections:
        with db.connect(settings.warehouse_dsn) as conn:
            quarantine.replace_run(conn, run_id, result.rejections)
    return result, uris
