"""Landing snapshots: the sealed hand-over from ingest to the Spark ETL.

One CSV file per (interval, window) — CSV as the original system did, and for good reasons here:
the values stay the exact decimal strings Binance sent (no float or decimal(p,s) rounding before
validation), a snapshot is ~100 rows (10 symbols x 10 minutes) so columnar compression buys
nothing, the bytes are deterministic and diffable, and a human can `head` a suspicious window.
Spark reads it with the explicit schema `LANDING_SPARK_SCHEMA` (no inference).

Layout (Hive-style directories, so a date's snapshots are one listing):

    <landing_uri>/interval=<interval>/date=<YYYY-MM-DD of window start>/<start>_<end>.csv
    e.g. file:///.../landing/interval=1m/date=2024-09-13/20240913T100000Z_20240913T101000Z.csv

Start/end are UTC, the window is [start, end) on open_time. Content: a header of LANDING_COLUMNS,
then rows sorted by (symbol, open_time); "\\n" line ends; empty field = NULL. The same input gives
the same bytes whatever the arrival order: copies of one key with equal values collapse (the first
in (source, row) order is kept); copies that differ are not resolved here, all of them come back as
`conflicting_duplicate` rejections for the quarantine (and the key is left a gap for the healer).

Writes are atomic: on file:// a temp file in the same directory, fsync, rename, fsync of the
directory; on hdfs:// temp + rename (atomic in HDFS); on s3:// a single PUT (objects appear whole).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass, field
from datetime import datetime
from itertools import count, groupby
from operator import attrgetter
from pathlib import Path
from urllib.parse import urlparse

from cryptoflow.candles import LANDING_COLUMNS, Candle, Rejection, from_landing_row, reject
from cryptoflow.times import datetime_from_ms, ms_from_datetime

WINDOW_MS = 10 * 60_000

# Spark DDL of a landing file. decimal(38,18): 20 integer digits, 18 fractional (Binance sends 8).
LANDING_SPARK_SCHEMA = (
    "symbol STRING, interval STRING, open_time BIGINT, close_time BIGINT, "
    "open DECIMAL(38,18), high DECIMAL(38,18), low DECIMAL(38,18), close DECIMAL(38,18), "
    "base_volume DECIMAL(38,18), quote_volume DECIMAL(38,18), "
    "taker_buy_base_volume DECIMAL(38,18), taker_buy_quote_volume DECIMAL(38,18), "
    "trades BIGINT, source STRING"
)


@dataclass
class SnapshotResult:
    uri: str
    rows: int
    duplicates_collapsed: int
    rejections: list[Rejection] = field(default_factory=list)
    sha256: str = ""
    bytes: int = 0


def window_of(open_time_ms: int, window_ms: int = WINDOW_MS) -> tuple[int, int]:
    """The [start, end) window containing `open_time_ms`."""
    start = open_time_ms - open_time_ms % window_ms
    return start, start + window_ms


def _compact(ms: int) -> str:
    return datetime_from_ms(ms).strftime("%Y%m%dT%H%M%SZ")


def snapshot_relpath(interval: str, window_start_ms: int, window_end_ms: int) -> str:
    day = datetime_from_ms(window_start_ms).strftime("%Y-%m-%d")
    return (
        f"interval={interval}/date={day}/{_compact(window_start_ms)}_{_compact(window_end_ms)}.csv"
    )


def snapshot_uri(landing_uri: str, interval: str, window_start_ms: int, window_end_ms: int) -> str:
    return (
        landing_uri.rstrip("/") + "/" + snapshot_relpath(interval, window_start_ms, window_end_ms)
    )


def parse_snapshot_name(name: str) -> tuple[int, int]:
    """(window_start_ms, window_end_ms) from a snapshot file name."""
    stem = Path(name).name.removesuffix(".csv")
    a, _, b = stem.partition("_")

    def ms(s):
        return ms_from_datetime(datetime.strptime(s, "%Y%m%dT%H%M%SZ"))

    return ms(a), ms(b)


def prepare(candles: list[Candle]) -> tuple[list[Candle], list[Rejection], int]:
    """Deterministic rows: (kept candles sorted by symbol, open_time), conflict rejections, collapsed count."""
    ordered = sorted(candles, key=_sort_key)
    kept, rejections, collapsed = [], [], 0
    for _, group in groupby(ordered, key=_sort_key):
        copies = list(group)
        if len(copies) == 1:
            kept.append(copies[0])
            continue
        if len({c.values() for c in copies}) == 1:
            # Equal values may still be spelled differently ("1.0" / "1.00"): keep a copy chosen by
            # content, not by arrival order, so the bytes never depend on the order of arrival.
            kept.append(min(copies, key=lambda c: (c.source, c.landing_row())))
            collapsed += len(copies) - 1
            continue
        sources = ", ".join(sorted({x.source for x in copies}))
        for c in sorted(copies, key=lambda c: (c.source, c.landing_row())):
            rejections.append(
                reject(
                    "conflicting_duplicate",
                    f"{len(copies)} copies of {c.symbol} {c.interval} open_time={c.open_time} differ (sources: {sources})",
                    _csv_line(c.landing_row()),
                    c.source,
                    c.symbol,
                    c.interval,
                    c.open_time,
                )
            )
    return kept, rejections, collapsed


_sort_key = attrgetter("symbol", "interval", "open_time")


def _csv_line(row: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(row)
    return buf.getvalue()


def render(candles: list[Candle]) -> bytes:
    """The file content of already-prepared candles."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LANDING_COLUMNS)
    w.writerows(c.landing_row() for c in candles)
    return buf.getvalue().encode("utf-8")


def write_snapshot(
    landing_uri: str, interval: str, window_start_ms: int, window_end_ms: int, candles: list[Candle]
) -> SnapshotResult:
    """Seal one window's candles as a snapshot file (atomically replacing an earlier seal).

    Candles still open come back as `not_closed` rejections. A candle of another interval or
    outside [start, end) is a caller bug (group with `window_of`), so it raises ValueError.
    """
    if window_end_ms <= window_start_ms:
        raise ValueError("window end must be after its start")
    for c in candles:
        if c.interval != interval or not window_start_ms <= c.open_time < window_end_ms:
            raise ValueError(
                f"candle {c.key} does not belong to window {interval} "
                f"[{window_start_ms}, {window_end_ms})"
            )
    not_closed = [
        reject(
            "not_closed",
            "candle still open (x=false) at sealing time",
            _csv_line(c.landing_row()),
            c.source,
            c.symbol,
            c.interval,
            c.open_time,
        )
        for c in candles
        if not c.closed
    ]
    kept, rejections, collapsed = prepare([c for c in candles if c.closed])
    data = render(kept)
    uri = snapshot_uri(landing_uri, interval, window_start_ms, window_end_ms)
    write_atomic(uri, data)
    return SnapshotResult(
        uri=uri,
        rows=len(kept),
        duplicates_collapsed=collapsed,
        rejections=not_closed + rejections,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
    )


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


def _filesystem(uri: str):
    """A pyarrow filesystem and path for a non-local URI (s3:// honours CRYPTOFLOW_S3_ENDPOINT_URL)."""
    from pyarrow import fs

    from cryptoflow import settings

    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        endpoint = settings.load().s3_endpoint_url or None
        s3 = fs.S3FileSystem(endpoint_override=endpoint) if endpoint else fs.S3FileSystem()
        return s3, parsed.netloc + parsed.path
    return fs.FileSystem.from_uri(uri)


_tmp_counter = count()


def write_atomic(uri: str, data: bytes) -> None:
    """Replace the file at `uri` with `data` so that readers see the old or the new file, never half."""
    path = _local_path(uri)
    if path is not None:
        # Unique per writer (pid + counter); a leftover from a crash is ignored by readers (dot name).
        tmp = path.parent / f".{path.name}.{os.getpid()}.{next(_tmp_counter)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            try:
                fd = os.open(tmp, flags, 0o644)
            except FileNotFoundError:  # first snapshot of the day: create the directories once
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(tmp, flags, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        # The rename itself must survive a crash: fsync the directory entry.
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return
    filesystem, fpath = _filesystem(uri)
    parent = fpath.rsplit("/", 1)[0]
    filesystem.create_dir(parent, recursive=True)
    if urlparse(uri).scheme == "s3":
        with filesystem.open_output_stream(
            fpath
        ) as out:  # one PUT: the object appears whole or not at all
            out.write(data)
        return
    tmp_fpath = f"{parent}/.{fpath.rsplit('/', 1)[1]}.{os.getpid()}.tmp"
    with filesystem.open_output_stream(tmp_fpath) as out:
        out.write(data)
    filesystem.move(tmp_fpath, fpath)


def read_bytes(uri: str) -> bytes:
    path = _local_path(uri)
    if path is not None:
        return path.read_bytes()
    filesystem, fpath = _filesystem(uri)
    with filesystem.open_input_stream(fpath) as f:
        return f.read()


def read_snapshot(uri: str) -> list[Candle]:
    """The candles of a snapshot file, in file order; ValueError when it is not a landing file."""
    text = read_bytes(uri).decode("utf-8")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if tuple(header or ()) != LANDING_COLUMNS:
        raise ValueError(
            f"{uri}: header {header} is not the landing format {list(LANDING_COLUMNS)}"
        )
    return [from_landing_row(row) for row in reader]


def list_snapshots(
    landing_uri: str, interval: str, start_ms: int | None = None, end_ms: int | None = None
) -> list[str]:
    """URIs of the snapshots of `interval` whose window overlaps [start_ms, end_ms), oldest first."""
    base = landing_uri.rstrip("/") + f"/interval={interval}"
    path = _local_path(base)
    if path is not None:
        if not path.is_dir():
            return []
        names = [p for p in path.glob("date=*/*.csv")]
        prefix = "file://" if landing_uri.startswith("file://") else ""
        found = [(p.name, prefix + str(p)) for p in names]
    else:
        from pyarrow import fs

        filesystem, fpath = _filesystem(base)
        infos = filesystem.get_file_info(
            fs.FileSelector(fpath, recursive=True, allow_not_found=True)
        )
        scheme = urlparse(base)
        found = [
            (
                i.base_name,
                f"{scheme.scheme}://{scheme.netloc}/{i.path.lstrip('/')}"
                if scheme.scheme != "s3"
                else f"s3://{i.path}",
            )
            for i in infos
            if i.is_file and i.base_name.endswith(".csv")
        ]
    out = []
    for name, uri in found:
        if name.startswith("."):
            continue  # a temp file of a write in progress
        try:
            s, e = parse_snapshot_name(name)
        except ValueError:
            continue
        if (end_ms is None or s < end_ms) and (start_ms is None or e > start_ms):
            out.append((s, uri))
    return [u for _, u in sorted(out)]


__all__ = [
    "WINDOW_MS",
    "LANDING_SPARK_SCHEMA",
    "SnapshotResult",
    "window_of",
    "snapshot_relpath",
    "snapshot_uri",
    "parse_snapshot_name",
    "prepare",
    "render",
    "write_snapshot",
    "write_atomic",
    "read_snapshot",
    "list_snapshots",
]
