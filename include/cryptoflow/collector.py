"""The collector process: the kline stream appended durably to segment files, and their reader.

Why raw segments and not candles: the collector's only job is to not lose what arrived. It records
every message exactly as received (malformed ones included) with its receive time; the 10-minute
ingest DAG reads a window back, parses and validates with cryptoflow.candles, keeps the closed
candles (`x=true`) and lands them. A parser bug is then fixed and the window re-read, which is
impossible once a message was dropped or rewritten on the way in.

Files (under `root`, default `<state>/collector/`):
- `seg-<window start, UTC, YYYYmmddTHHMMSSZ>-<seq>.jsonl.active`: the segment being written;
- `seg-<...>-<seq>.jsonl`: sealed (renamed from .active once complete; never written again).
A segment holds messages *received* in one window of `window_s` seconds (default 600 s, the ingest
DAG's window); a window may span several segments (size cap `max_segment_bytes`, restarts): `seq`
orders them. One JSON object per line: `{"r": receive ms, "m": "<raw message>"}`, or an event line
`{"r": ms, "ev": "connected"|"disconnected"|..., "d": "<detail>"}` marking where the stream had holes
(the DAG backfills those windows through REST).

Durability: each line is handed to the kernel with one write(2) as soon as it arrives, so a killed
process (SIGKILL, OOM) loses nothing already received; fsync runs at most every `fsync_interval_s`
(default 1 s) and on sealing, so a machine crash loses at most that last second. A line cut short
(crash mid-write, disk full) can only be the last line of a segment; the reader detects and skips
it, counting it (`torn`), instead of failing the window or misreading it. On start, the collector
seals segments a previous run left active (it died before sealing them).

Only one collector may write a root: an exclusive lock (`collector.lock`) enforces it.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import logging
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from cryptoflow.times import datetime_from_ms, ms_from_datetime

log = logging.getLogger(__name__)

ACTIVE = ".jsonl.active"
SEALED = ".jsonl"
_NAME = re.compile(
    r"^seg-(?P<window>\d{8}T\d{6}Z)-(?P<seq>\d{4,})(?P<suffix>\.jsonl(?:\.active)?)$"
)


def _window_name(window_ms: int) -> str:
    return datetime_from_ms(window_ms).strftime("%Y%m%dT%H%M%SZ")


def _window_ms(name: str) -> int:
    return ms_from_datetime(datetime.strptime(name, "%Y%m%dT%H%M%SZ"))


@dataclass(frozen=True)
class Segment:
    path: Path
    window_ms: int  # start of the receive-time window
    seq: int
    active: bool


def list_segments(root: str | Path) -> list[Segment]:
    """All segments under root, by window then seq."""
    out: list[Segment] = []
    root = Path(root)
    if not root.is_dir():
        return out
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m:
            out.append(Segment(p, _window_ms(m["window"]), int(m["seq"]), m["suffix"] == ACTIVE))
    return sorted(out, key=lambda s: (s.window_ms, s.seq, s.active))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentWriter:
    """Appends lines to the active segment of the current receive-time window (thread-safe)."""

    def __init__(
        self,
        root: str | Path,
        *,
        window_s: int = 600,
        max_segment_bytes: int = 64 << 20,
        fsync_interval_s: float = 1.0,
        clock=time.time,
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.window_ms = int(window_s * 1000)
        self.max_segment_bytes = max_segment_bytes
        self.fsync_interval_s = fsync_interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._lockfile = open(self.root / "collector.lock", "a+")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lockfile.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise RuntimeError(f"another collector is writing {self.root}") from None
            raise
        self._fd: int | None = None
        self._path: Path | None = None
        self._window: int | None = None
        self._size = 0
        self._dirty = False
        self._last_sync = clock()
        self.lines = 0
        self.recovered = self._recover()

    def _recover(self) -> int:
        """Seal segments a previous process left active (torn tails stay; the reader skips them)."""
        n = 0
        for seg in list_segments(self.root):
            if seg.active:
                seg.path.rename(seg.path.with_name(seg.path.name[: -len(ACTIVE)] + SEALED))
                n += 1
        if n:
            _fsync_dir(self.root)
            log.warning("collector: sealed %d segment(s) left active by a previous run", n)
        return n

    def _open(self, window: int) -> None:
        seqs = [s.seq for s in list_segments(self.root) if s.window_ms == window]
        seq = max(seqs) + 1 if seqs else 0
        self._path = self.root / f"seg-{_window_name(window)}-{seq:04d}{ACTIVE}"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        _fsync_dir(self.root)  # the new name must survive a crash too
        self._window, self._size = window, 0

    def _seal(self) -> None:
        if self._fd is None:
            return
        assert self._path is not None  # set with _fd
        os.fsync(self._fd)
        os.close(self._fd)
        sealed = self._path.with_name(self._path.name[: -len(ACTIVE)] + SEALED)
        os.rename(self._path, sealed)
        _fsync_dir(self.root)
        self._fd, self._path, self._window, self._dirty = None, None, None, False

    def _write_line(self, obj: dict, received_at: float) -> None:
        data = (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        window = int(received_at * 1000) // self.window_ms * self.window_ms
        with self._lock:
            # A clock stepping back keeps writing the current segment; the reader filters by "r".
            if (
                self._fd is None
                or self._window is None
                or (window > self._window)
                or self._size + len(data) > self.max_segment_bytes
            ):
                current = self._window  # _seal() forgets it
                self._seal()
                self._open(max(window, current or window))
            assert self._fd is not None  # opened above if it was not
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            self._size += len(data)
            self._dirty = True
            self.lines += 1
            if self.clock() - self._last_sync >= self.fsync_interval_s:
                os.fsync(self._fd)
                self._dirty, self._last_sync = False, self.clock()

    def append(self, raw: str, received_at: float) -> None:
        """One received message (the string exactly as received) and its receive time (epoch s)."""
        self._write_line({"r": int(received_at * 1000), "m": raw}, received_at)

    def event(self, name: str, detail: str = "", at: float | None = None) -> None:
        at = self.clock() if at is None else at
        self._write_line({"r": int(at * 1000), "ev": name, "d": detail}, at)

    def tick(self) -> None:
        """Periodic duty (about once a second): fsync pending lines; seal a window that has ended."""
        with self._lock:
            if self._fd is None:
                return
            now = self.clock()
            if self._window is not None and now * 1000 >= self._window + self.window_ms:
                self._seal()
            elif self._dirty and now - self._last_sync >= self.fsync_interval_s:
                os.fsync(self._fd)
                self._dirty, self._last_sync = False, now

    def close(self) -> None:
        with self._lock:
            self._seal()
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_UN)
        finally:
            self._lockfile.close()


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class RawMessage:
    received_at_ms: int
    raw: str
    segment: str
    line: int


@dataclass
class ReadStats:
    segments: int = 0
    active_segments: int = 0  # still being written: the window may not be complete yet
    lines: int = 0
    messages: int = 0
    events: list = field(default_factory=list)  # (ms, name, detail) of stream events in the window
    torn: int = 0  # last line of a sealed segment cut short (crash mid-write): skipped
    corrupt: int = 0  # complete lines that aren't a record (should never happen): skipped
    pending: int = 0  # unfinished last line of an active segment: not yet readable


def _segments_to_read(
    root: str | Path, start_ms: int, end_ms: int, clock_slack_ms: int
) -> list[Segment]:
    """The segments that may hold messages received in [start_ms, end_ms): the last one opened at or
    before start_ms - clock_slack_ms, and those opened after it, before end_ms + clock_slack_ms."""
    listed = list_segments(root)
    first = max(
        (s.window_ms for s in listed if s.window_ms <= start_ms - clock_slack_ms), default=None
    )
    return [
        s
        for s in listed
        if (first is None or s.window_ms >= first) and s.window_ms < end_ms + clock_slack_ms
    ]


def _segment_lines(seg: Segment, stats: ReadStats) -> tuple[Segment, list[bytes]]:
    """The segment's complete lines, and the segment as read (renamed if sealed meanwhile).

    Counts it in `stats`; an incomplete last line is pending in an active segment, torn in a
    sealed one (logged), and left out either way.
    """
    try:
        data = seg.path.read_bytes()
    except FileNotFoundError:  # sealed (renamed) between listing and reading
        sealed = seg.path.with_name(seg.path.name[: -len(ACTIVE)] + SEALED)
        data = sealed.read_bytes() if seg.active and sealed.exists() else b""
        seg = Segment(sealed, seg.window_ms, seg.seq, False)
    if seg.active:
        stats.active_segments += 1
    stats.segments += 1
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    if tail:
        if seg.active:
            stats.pending += 1
        else:
            stats.torn += 1
            log.warning(
                "collector segment %s: torn last line (%d bytes) skipped",
                seg.path.name,
                len(tail),
            )
    return seg, lines


def read_window(
    root: str | Path,
    start_ms: int,
    end_ms: int,
    stats: ReadStats | None = None,
    *,
    clock_slack_ms: int = 600_000,
) -> Iterator[RawMessage]:
    """Messages received in [start_ms, end_ms), in file order (= arrival order), from all segments.

    Pass a ReadStats to learn about torn/corrupt lines, active segments and stream events.
    Segments read: the last one opened at or before start_ms (it runs until the next one opens)
    and those opened before end_ms + clock_slack_ms (a clock stepped back keeps writing the
    current, later segment). Lines are then filtered by their own receive time.
    """
    stats = stats if stats is not None else ReadStats()
    for seg in _segments_to_read(root, start_ms, end_ms, clock_slack_ms):
        seg, lines = _segment_lines(seg, stats)
        for no, line in enumerate(lines, 1):
            stats.lines += 1
            try:
                rec = json.loads(line)
                r = rec["r"]
            except (ValueError, KeyError, TypeError):
                stats.corrupt += 1
                log.warning(
                    "collector segment %s line %d: not a record, skipped", seg.path.name, no
                )
                continue
            if not isinstance(r, int) or not start_ms <= r < end_ms:
                continue
            if "m" in rec:
                stats.messages += 1
                yield RawMessage(r, rec["m"], seg.path.name, no)
            elif "ev" in rec:
                stats.events.append((r, rec["ev"], rec.get("d", "")))


def window_sealed(root: str | Path, start_ms: int, end_ms: int) -> bool:
    """True when no segment that may hold messages of [start_ms, end_ms) is still active."""
    return not any(s.active and s.window_ms < end_ms for s in list_segments(root))


# ---------------------------------------------------------------------------------------------
# Heartbeat: a live collector rewrites it about once a second (the ingest DAG's sensor reads it)

HEARTBEAT = ".heartbeat.json"


def write_heartbeat(
    root: str | Path, connected: bool, clock: Callable[[], float] = time.time
) -> None:
    path = Path(root) / HEARTBEAT
    tmp = path.with_name(f"{HEARTBEAT}.{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps({"at_ms": int(clock() * 1000), "pid": os.getpid(), "connected": bool(connected)})
    )
    os.replace(tmp, path)


def read_heartbeat(root: str | Path) -> dict | None:
    """The collector's last heartbeat ({at_ms, pid, connected}), None when it never ran here."""
    try:
        return json.loads((Path(root) / HEARTBEAT).read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# The process


class Collector:
    """Stream + segment writer + the once-a-second duty thread. `run()` blocks until `stop()`."""

    def __init__(
        self,
        root: str | Path,
        ws_url: str | None = None,
        symbols=(),
        interval: str = "1m",
        *,
        open_stream: Callable[..., Any] | None = None,
        window_s: int = 600,
        fsync_interval_s: float = 1.0,
        max_segment_bytes: int = 64 << 20,
        **stream_options,
    ):
        """A collector of Binance's kline stream at `ws_url`, or of the stream `open_stream(on_message,
        on_event)` opens (a source's: see from_settings)."""
        self.writer = SegmentWriter(
            root,
            window_s=window_s,
            fsync_interval_s=fsync_interval_s,
            max_segment_bytes=max_segment_bytes,
        )
        if open_stream is None:
            from cryptoflow.sources.binance.stream import KlineStream

            def open_stream(on_message, on_event):
                return KlineStream(
                    ws_url, symbols, interval, on_message, on_event=on_event, **stream_options
                )

        self.stream = open_stream(self.writer.append, self._on_event)
        self._stop = threading.Event()

    @classmethod
    def from_settings(cls, settings, root: str | Path | None = None, **options) -> "Collector":
        """The collector of the configured source's stream (cryptoflow.sources)."""
        from cryptoflow import sources
        from cryptoflow.settings import ConfigError

        source = sources.active(settings)
        if not source.has_stream:
            raise ConfigError(f"source {source.name!r} has no stream: there is nothing to collect")
        writer = {
            k: options.pop(k)
            for k in ("window_s", "fsync_interval_s", "max_segment_bytes")
            if k in options
        }
        return cls(
            root or settings.state_dir / "collector",
            **writer,
            open_stream=lambda on_message, on_event: source.stream(
                settings, on_message, on_event=on_event, **options
            ),
        )

    def _on_event(self, name: str, detail: str) -> None:
        self.writer.event(name, detail)

    def _duty(self) -> None:
        while not self._stop.wait(min(1.0, self.writer.fsync_interval_s)):
            try:
                self.writer.tick()
                write_heartbeat(self.writer.root, connected=self.stream.connected)
            except Exception:
                log.exception("collector: segment duty failed")
                self.stream.stop(timeout=0)

    def run(self) -> None:
        duty = threading.Thread(target=self._duty, name="collector-duty", daemon=True)
        duty.start()
        try:
            self.stream.run()
        finally:
            self._stop.set()
            duty.join(5)
            self.writer.close()

    def stop(self) -> None:
        self.stream.stop(timeout=0)


def run_collector(settings, root: str | Path | None = None, **options) -> None:
    """Run the collector for `settings` until SIGTERM/SIGINT (the CLI's collector command)."""
    collector = Collector.from_settings(settings, root, **options)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda signum, frame: collector.stop())
    log.warning(
        "collector: %d streams from %s into %s",
        len(collector.stream.names),
        collector.stream.url,
        collector.writer.root,
    )
    collector.run()


def main(argv: list[str] | None = None) -> int:
    """`python -m cryptoflow.collector`: the collector with explicit arguments (tests, debugging)."""
    from cryptoflow import settings as settings_mod

    s = settings_mod.load()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(s.state_dir / "collector"))
    p.add_argument("--ws-url", default=s.binance_ws_url)
    p.add_argument("--symbols", default=",".join(s.symbols))
    p.add_argument("--interval", default=s.interval)
    p.add_argument("--window-s", type=int, default=600)
    p.add_argument("--fsync-interval-s", type=float, default=1.0)
    p.add_argument(
        "--stall-timeout-s",
        type=float,
        default=60.0,
        help="silence (no data, no ping) that ends a connection",
    )
    p.add_argument("--backoff-initial-s", type=float, default=1.0)
    p.add_argument("--backoff-max-s", type=float, default=60.0)
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    collector = Collector(
        args.root,
        args.ws_url,
        [x for x in args.symbols.split(",") if x],
        args.interval,
        window_s=args.window_s,
        fsync_interval_s=args.fsync_interval_s,
        stall_timeout_s=args.stall_timeout_s,
        backoff_initial_s=args.backoff_initial_s,
        backoff_max_s=args.backoff_max_s,
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: collector.stop())
    collector.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "SegmentWriter",
    "Collector",
    "write_heartbeat",
    "read_heartbeat",
    "HEARTBEAT",
    "RawMessage",
    "ReadStats",
    "Segment",
    "list_segments",
    "read_window",
    "window_sealed",
    "run_collector",
    "main",
]
