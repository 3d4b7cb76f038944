"""Which snapshots a run processes, and the manifest that hands the list to the Spark job.

A run processes exactly the snapshots its triggering Asset events name (cryptoflow.assets.
SnapshotsSealed: the URIs binance_ingest sealed), or, for a manual run/backfill, those whose window overlaps the
requested [start, end). Nothing else is listed or read, so a run's cost follows its new data, not
the history. The list goes to the job as a manifest file in the landing store (every worker and
the Spark driver can read it, and spark-submit's command line stays short for a backfill).
"""

from __future__ import annotations

import hashlib
import logging

from cryptoflow import landing

# A run's params give its range as ISO text or ms; the DAGs read them through this name.

log = logging.getLogger(__name__)


def snapshots_from_events(events) -> list[str]:
    """Snapshot URIs named by the triggering LANDING_SNAPSHOTS events (events, or their extras).

    An event of another shape (one made by hand in the UI, say) names no snapshot: it is logged as
    a warning and skipped, so it never holds back the snapshots the other events name."""
    from cryptoflow.assets import MalformedEvent, SnapshotsSealed

    out: set[str] = set()
    for ev in events:
        extra = ev if isinstance(ev, dict) else getattr(ev, "extra", None)
        try:
            out.update(SnapshotsSealed.from_extra(extra).uris)
        except MalformedEvent as exc:
            log.warning("skipped an event that names no snapshot: %s", exc)
    return sorted(out)


def snapshots_for_range(
    landing_uri: str, intervals, start_ms: int | None, end_ms: int | None
) -> list[str]:
    out = []
    for interval in intervals:
        out += landing.list_snapshots(landing_uri, interval, start_ms, end_ms)
    return out


def manifest_uri(landing_uri: str, run_id: str) -> str:
    return (
        landing_uri.rstrip("/")
        + f"/_manifests/{hashlib.sha256(run_id.encode()).hexdigest()[:24]}.txt"
    )


def write_manifest(landing_uri: str, run_id: str, uris: list[str]) -> str:
    uri = manifest_uri(landing_uri, run_id)
    landing.write_atomic(uri, ("\n".join(uris) + "\n").encode() if uris else b"")
    return uri


def read_manifest(uri: str) -> list[str]:
    return [line.strip() for line in landing.read_bytes(uri).decode().splitlines() if line.strip()]


__all__ = [
    "snapshots_from_events",
    "snapshots_for_range",
    "write_manifest",
    "read_manifest",
    "manifest_uri",
    "package_zip",
]


def package_zip(dest_dir) -> str:
    """A zip of the cryptoflow package for spark-submit --py-files (shipped to every executor).

    Built from the code the submitting worker runs, so driver and executors run the same version;
    deterministic (sorted, fixed timestamps), and rewritten only when its content changes.
    """
    import io
    import zipfile
    from pathlib import Path

    import cryptoflow

    root = Path(cryptoflow.__file__).resolve().parent
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(root.rglob("*")):
            if path.suffix in (".py", ".sql") and "__pycache__" not in path.parts:
                info = zipfile.ZipInfo(
                    str(Path("cryptoflow") / path.relative_to(root)), (1980, 1, 1, 0, 0, 0)
                )
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, path.read_bytes())
    data = buf.getvalue()
    dest = Path(dest_dir) / f"cryptoflow-{hashlib.sha256(data).hexdigest()[:12]}.zip"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        landing.write_atomic(str(dest), data)
    return str(dest)
