"""The task bodies of the spark_etl DAG (dags/spark_etl.py)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from airflow.sdk.exceptions import AirflowFailException

from cryptoflow import settings
from cryptoflow.airflow.hooks import WarehouseHook
from cryptoflow.assets import CandlesLoaded

log = logging.getLogger(__name__)


def plan(params, run_id: str, triggering_asset_events) -> dict | bool:
    """The snapshots this run processes, written to a manifest: {"manifest", "snapshots"}; False
    when there is nothing to process (the short circuit skips the job and the checks)."""
    from cryptoflow import times
    from cryptoflow.etl import plan as planning

    cfg = settings.load()
    events = [ev for evs in (triggering_asset_events or {}).values() for ev in evs]
    uris = planning.snapshots_from_events(events)
    if not events and params.get("uris"):
        uris = list(
            params["uris"]
        )  # explicit snapshots, e.g. history seeded by the demo or an import
    elif not events:
        start, end = (
            times.parse_utc_ms(params.get("start")),
            times.parse_utc_ms(params.get("end")),
        )
        if start is None or end is None:
            raise AirflowFailException("a manual run needs params start and end (ISO times)")
        uris = planning.snapshots_for_range(
            cfg.landing_uri, params.get("intervals") or [cfg.interval], start, end
        )
    if not uris:
        log.info("no snapshots to process")
        return False  # nothing new, no Asset event
    return {
        "manifest": planning.write_manifest(cfg.landing_uri, run_id, uris),
        "snapshots": len(uris),
    }


def data_quality(check: str, run_id: str, manifest: str) -> str:
    """Runs one check of cryptoflow.etl.dq.CHECKS on the run's load; fails red with the reason when violated."""
    from cryptoflow.etl import dq
    from cryptoflow.etl.plan import read_manifest

    cfg = settings.load()
    uris = read_manifest(manifest) if check == "gaps" else None
    with WarehouseHook().connect() as conn:
        failures = dq.run_check(
            conn, check, run_id, symbols=cfg.symbols, interval=cfg.interval, snapshot_uris=uris
        )
    if failures:
        raise AirflowFailException(dq.describe_failures(check, failures))
    return "ok"


def candles_loaded(run_id: str) -> CandlesLoaded:
    """What the run's load stored: the WAREHOUSE_CANDLES event's content."""
    from cryptoflow.etl import dq

    with WarehouseHook().connect() as conn:
        run = dq.load_record(conn, run_id)

    def iso(ms):
        return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat()

    return CandlesLoaded(
        run_id,
        run.get("counts", {}).get("kept", 0),
        {key: (iso(lo), iso(hi)) for key, (lo, hi) in run.get("ranges", {}).items()},
    )
