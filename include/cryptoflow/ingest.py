"""Sealing one window of collected websocket messages into a landing snapshot, healing gaps from REST.

What the binance_ingest DAG does every 10 minutes, and what `airflow backfill create` repeats for
past windows (with no collected messages, everything comes from REST: the same snapshot).

1. Read the messages the collector received in [start, end + grace): the closing (x=true) message
   of the window's last candle arrives just after the window ends.
2. Parse each with the one candle definition (cryptoflow.candles); keep closed candles whose open
   time is in the window; malformed or invalid ones become rejections (quarantine), with reasons.
3. Expected: every open time of the interval in the window for every configured symbol that trades
   then (MATIC->POL: the delisting hole is expected to be empty and stays a hole).
4. Missing ones are fetched from REST and recorded as healed; what REST does not have either is a
   hole, reported as such (exchange outages exist), never filled in.
5. The snapshot is written atomically; its URI goes out with the Asset event.
A REST failure while healing fails the run before anything is written: a later run heals it.

Healing over REST (the window's missing candles, and the warehouse's history beside it) lives in
cryptoflow.healing, bulk history from REST in cryptoflow.backfill; their names are importable from
here too, as the DAG tasks, the CLI and the tools use them.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cryptoflow import landing, quarantine, sources
from cryptoflow import symbols as symbols_mod
from cryptoflow.backfill import backfill_and_land, backfill_from_rest, land_span
from cryptoflow.candles import Candle, CandleFormatError, Rejection, check, reject
from cryptoflow.collector import ReadStats, read_window
from cryptoflow.healing import (
    HEAL_HORIZON_MS,
    HEAL_MAX_PER_SYMBOL,
    HOLE_REASON,
    HealResult,
    as_configured,
    expected_keys,
    explain_holes,
    find_missing,
    heal,
    heal_history,
    healed_root,
    hole_ranges,
    landed_windows,
    missing_ranges,
    rest_client_for,
)
from cryptoflow.settings import Settings
from cryptoflow.sources import Source
from cryptoflow.times import datetime_from_ms

__all__ = [
    # sealing a window (here)
    "STREAM_SOURCE",
    "DEFAULT_GRACE_MS",
    "CATCH_UP_MS",
    "SealResult",
    "parse_messages",
    "seal_window",
    "collector_ready",
    "record",
    "record_heal",
    "window_run_id",
    # healing over REST (cryptoflow.healing)
    "HEAL_HORIZON_MS",
    "HEAL_MAX_PER_SYMBOL",
    "HOLE_REASON",
    "HealResult",
    "expected_keys",
    "heal",
    "rest_client_for",
    "missing_ranges",
    "landed_windows",
    "healed_root",
    "find_missing",
    "heal_history",
    "hole_ranges",
    # bulk history from REST (cryptoflow.backfill)
    "land_span",
    "backfill_from_rest",
    "backfill_and_land",
]

log = logging.getLogger(__name__)

STREAM_SOURCE = "binance_ws"
# How long after a window's end its last closing message may still arrive: Binance pushes a kline
# update every 2 s, so its closing one comes within seconds; one that comes later still is healed
# over REST. Every second here is a second of staleness in the warehouse (target: 12 min behind).
DEFAULT_GRACE_MS = 15_000


@dataclass
class SealResult:
    uri: str
    window_start_ms: int
    window_end_ms: int
    rows: int
    from_stream: int
    healed: list[tuple[str, int]] = field(
        default_factory=list
    )  # (symbol, open_time) fetched from REST
    holes: list[tuple[str, int]] = field(default_factory=list)  # expected, not available anywhere
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count
    open_updates: int = 0  # x=false messages (expected, not landed)
    stream: dict = field(default_factory=dict)  # torn/corrupt lines, events
    sha256: str = ""
    rejections: list[Rejection] = field(default_factory=list, repr=False)  # for the quarantine

    def summary(self) -> dict:
        return {
            "uri": self.uri,
            "rows": self.rows,
            "from_stream": self.from_stream,
            "healed": len(self.healed),
            "holes": len(self.holes),
            "rejected": self.rejected,
            "open_updates": self.open_updates,
            "stream": self.stream,
            "sha256": self.sha256,
        }


def parse_messages(
    messages,
    configured: tuple[str, ...],
    interval: str,
    start_ms: int,
    end_ms: int,
    source: str = STREAM_SOURCE,
    ignored: Counter | None = None,
    *,
    feed: Source,
) -> tuple[list[Candle], list[Rejection], int]:
    """Closed, valid candles of the window from raw stream messages; rejections; count of open updates.

    Every message ends up in exactly one place: a candle, a rejection (with its reason), an open
    update, or `ignored` (pass a Counter to see them: server events, replies, closed candles of
    another interval or window, which that window's run reads).
    """
    accepted = symbols_mod.exchange_symbols(configured)
    ignored = ignored if ignored is not None else Counter()
    candles, rejections, open_updates = [], [], 0
    for msg in messages:
        raw = msg.raw
        try:
            c = feed.parse_message(raw, source)
        except CandleFormatError as exc:
            if exc.reason == "not_kline":
                kind = feed.control_kind(raw)
                if kind is not None:
                    ignored[kind] += 1
                    continue
            rejections.append(reject(exc.reason, exc.detail, raw, source))
            continue
        if not c.closed:
            open_updates += 1
            continue
        if c.interval != interval:
            ignored["other_interval"] += 1
            continue
        if not start_ms <= c.open_time < end_ms:
            ignored["other_window"] += 1
            continue
        bad = check(c, raw, accepted)
        if bad:
            rejections.append(bad)
            continue
        candles.append(as_configured(c, configured))
    return candles, rejections, open_updates


def _collected(
    settings: Settings,
    collector_root,
    received: tuple[int, int],
    stats: ReadStats,
    clock_slack_ms: int,
):
    """The collector's messages received in `received` (lazily; none without a collector root)."""
    root = Path(collector_root or settings.state_dir / "collector")
    r_lo, r_hi = received
    return (
        read_window(root, r_lo, r_hi, stats, clock_slack_ms=clock_slack_ms)
        if root.exists()
        else iter(())
    )


def _from_stream(
    settings: Settings,
    start_ms: int,
    end_ms: int,
    collector_root,
    received: tuple[int, int],
    clock_slack_ms: int,
) -> tuple[list[Candle], list[Rejection], int, dict]:
    """The window's candles from the collected messages: (kept, rejections, open updates, counts).

    Conflicting duplicates leave their key empty: prepare() tells us which, so REST can settle them.
    """
    stats = ReadStats()
    feed = sources.active(settings)
    # A source without a stream seals every window from its history: a collector root left by
    # another source holds nothing this one can read.
    messages = (
        _collected(settings, collector_root, received, stats, clock_slack_ms)
        if feed.has_stream
        else iter(())
    )
    ignored: Counter = Counter()
    candles, rejections, open_updates = parse_messages(
        messages,
        tuple(settings.symbols),
        settings.interval,
        start_ms,
        end_ms,
        ignored=ignored,
        feed=feed,
    )
    kept, conflicts, collapsed = landing.prepare(candles)
    rejections += conflicts
    # messages == from_stream + duplicates + rejected + open_updates + sum(ignored)
    counts = {
        "messages": stats.messages,
        "from_stream": len(kept),
        "duplicates": collapsed,
        "rejected": len(rejections),
        "open_updates": open_updates,
        "ignored": dict(ignored),
        "torn": stats.torn,
        "corrupt": stats.corrupt,
        "active_segments": stats.active_segments,
        "events": len(stats.events),
    }
    return kept, rejections, open_updates, counts


def _heal_window(
    settings: Settings, rest_client, missing: set[tuple[str, int]], start_ms: int, end_ms: int
) -> tuple[list[Candle], list[Rejection], list[tuple[str, int]]]:
    """The window's missing candles from REST: (healed candles, their rejections, holes left)."""
    healed_candles: list[Candle] = []
    rejections: list[Rejection] = []
    if missing:
        rest_client = rest_client or rest_client_for(settings)
        healed_candles, rejections = heal(
            rest_client, tuple(settings.symbols), settings.interval, missing
        )
    healed = sorted((c.symbol, c.open_time) for c in healed_candles)
    holes = sorted(missing - set(healed))
    if holes:
        log.warning(
            "window %s..%s: %d candles not available from stream or REST (holes kept): %s",
            start_ms,
            end_ms,
            len(holes),
            holes[:10],
        )
    return healed_candles, rejections, holes


def seal_window(
    settings: Settings,
    start_ms: int,
    end_ms: int,
    *,
    rest_client=None,
    collector_root=None,
    grace_ms: int = DEFAULT_GRACE_MS,
    received_ms: tuple[int, int] | None = None,
    clock_slack_ms: int = 600_000,
) -> SealResult:
    """Seal [start_ms, end_ms) of settings.interval into one landing snapshot (see module doc).

    `received_ms`: the receive-time range to read from the collector, by default
    [start, end + grace). Live, receive time and candle time are one clock; a replay faster than
    real time runs candle time on its own clock, so its caller maps the window onto the wall clock
    (and may narrow `clock_slack_ms`, the allowance for a stepped-back clock, see read_window).
    """
    interval, configured = settings.interval, tuple(settings.symbols)
    received = received_ms or (start_ms, end_ms + grace_ms)
    kept, rejections, open_updates, stream = _from_stream(
        settings, start_ms, end_ms, collector_root, received, clock_slack_ms
    )
    present = {(c.symbol, c.open_time) for c in kept}
    missing = expected_keys(configured, interval, start_ms, end_ms) - present
    healed_candles, rest_rejections, holes = _heal_window(
        settings, rest_client, missing, start_ms, end_ms
    )
    rejections += rest_rejections
    snap = landing.write_snapshot(
        settings.landing_uri, interval, start_ms, end_ms, kept + healed_candles
    )
    rejections += snap.rejections
    return SealResult(
        uri=snap.uri,
        window_start_ms=start_ms,
        window_end_ms=end_ms,
        rows=snap.rows,
        from_stream=len(kept),
        healed=sorted((c.symbol, c.open_time) for c in healed_candles),
        holes=holes,
        rejected=dict(Counter(r.reason for r in rejections)),
        open_updates=open_updates,
        stream=stream,
        sha256=snap.sha256,
        rejections=rejections,
    )


# A run that starts this long after its window ended is catching up (a backfill, a stack coming back
# from downtime): the collector can't have the window any more, REST seals it alone.
CATCH_UP_MS = 300_000


def collector_ready(
    heartbeat: dict | None,
    window_end_ms: int,
    now_ms: int,
    run_started_ms: int,
    grace_ms: int = DEFAULT_GRACE_MS,
    *,
    has_stream: bool = True,
) -> tuple[bool, str]:
    """May the window be sealed now? (the binance_ingest sensor). Returns (ready, why).

    A live window waits for its closing messages (the grace period) and for a collector that was
    alive after them: its heartbeat is newer than the window's end + grace. Without one the
    sensor keeps waiting and times out red: a dead collector is an incident, not a quiet REST run.
    A source without a stream (files) has no collector: its windows are sealed from its history.
    """
    if not has_stream:
        return True, "the source has no stream: the window is sealed from its history"
    if run_started_ms >= window_end_ms + CATCH_UP_MS:
        return (
            True,
            "catching up on a past window: sealed from what was collected, healed over REST",
        )
    if now_ms < window_end_ms + grace_ms:
        return False, "waiting for the window's closing messages (grace period)"
    if heartbeat is None:
        return (
            False,
            "no collector heartbeat: is the collector running? (cryptoflow collect; make status)",
        )
    if heartbeat.get("at_ms", 0) < window_end_ms + grace_ms:
        age = (now_ms - heartbeat.get("at_ms", 0)) / 1000
        return (
            False,
            f"collector heartbeat is {age:.0f} s old (pid {heartbeat.get('pid')}): collector down?",
        )
    return True, "collector alive" + (
        "" if heartbeat.get("connected") else " (reconnecting; REST heals)"
    )


def record(conn, result: SealResult | HealResult, run_id: str, interval: str) -> None:
    """Quarantine the rejections and note the healed candles, in one transaction.

    `run_id` names the window (not the Airflow try): sealing a window again replaces its earlier
    quarantine rows instead of adding a second copy of each.
    """
    with conn.transaction():
        quarantine.replace_run(conn, run_id, result.rejections)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO ops.healed_gaps (symbol, interval, open_time, run_id) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (symbol, interval, open_time) DO NOTHING",
                [(s, interval, datetime_from_ms(t), run_id) for s, t in result.healed],
            )
            explain_holes(cur, result.holes, interval)


def window_run_id(interval: str, start_ms: int) -> str:
    """The bookkeeping id of a window, the same for every run that seals it."""
    return f"binance_ingest:{interval}:{datetime_from_ms(start_ms).strftime('%Y-%m-%dT%H:%MZ')}"


def record_heal(conn, result: HealResult, run_id: str, interval: str) -> None:
    """Quarantine the healing's rejections, note what it healed and explain its holes: `record`, under
    the window's run id + ":heal" (resealing the window replaces its own rows, never the healing's)."""
    record(conn, result, f"{run_id}:heal", interval)
