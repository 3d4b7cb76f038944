"""Importer results into the landing zone: the same snapshot format the ingest DAG writes.

Imported history lands under `<landing>/import=<file stem>/...`, one snapshot per UTC month (bulk
history in few files: Spark pays per file, not per row), so two
imported files never overwrite each other's windows, and re-importing a file replaces its own
snapshots byte for byte. Rejected rows go to ops.quarantine with their reason.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from cryptoflow import landing
from cryptoflow.importers.common import ImportResult
from cryptoflow.times import datetime_from_ms, utc_ms


def month_window(ms: int) -> tuple[int, int]:
    """[first ms of the UTC month holding `ms`, first ms of the next month)."""
    t = datetime_from_ms(ms)
    return utc_ms(t.year, t.month, 1), utc_ms(t.year + (t.month == 12), t.month % 12 + 1, 1)


def land(result: ImportResult, landing_uri: str, name: str) -> list[str]:
    """Write the result's candles as monthly snapshots; returns their URIs, oldest first."""
    by_window: dict[tuple[str, tuple[int, int]], list] = defaultdict(list)
    for c in result.candles:
        by_window[(c.interval, month_window(c.open_time))].append(c)
    root = landing_uri.rstrip("/") + f"/import={name}"
    return [
        landing.write_snapshot(root, interval, start, end, candles).uri
        for (interval, (start, end)), candles in sorted(by_window.items())
    ]


def import_name(path: str | Path) -> str:
    return Path(path).name.split(".")[0]
