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
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cryptoflow import landing, quarantine, sources
from cryptoflow import symbols as symbols_mod
from cryptoflow.collector import ReadStats, read_window
from cryptoflow.candles import INTERVAL_MS, Candle, CandleFormatError, Rejection, check, reject
from cryptoflow.settings import Settings
from cryptoflow.sources import Source
from cryptoflow.times import datetime_from_ms, merge_ranges, ms_from_datetime

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


def expected_keys(
    configured: tuple[str, ...], interval: str, start_ms: int, end_ms: int
) -> set[tuple[str, int]]:
    """(configured symbol, open time) of every candle that should exist in [start, end)."""
    step = INTERVAL_MS[interval]
    first = -(-start_ms // step) * step
    return {
        (name, t)
        for name in configured
        for t in range(first, end_ms, step)
        if symbols_mod.exchange_symbol(name, t) is not None
    }


def _as_configured(c: Candle, configured: tuple[str, ...]) -> Candle:
    name = symbols_mod.configured_for(c.symbol, configured)
    return c if name is None or name == c.symbol else dataclasses.replace(c, symbol=name)


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
        candles.append(_as_configured(c, configured))
    return candles, rejections, open_updates


def heal(
    rest_client, configured: tuple[str, ...], interval: str, missing: set[tuple[str, int]]
) -> tuple[list[Candle], list[Rejection]]:
    """Fetch the missing candles from REST, one request range per symbol; invalid rows are rejected."""
    step = INTERVAL_MS[interval]
    accepted = symbols_mod.exchange_symbols(configured)
    by_symbol: dict[str, list[int]] = {}
    for name, t in missing:
        by_symbol.setdefault(name, []).append(t)
    found, rejections = [], []
    for name, times in sorted(by_symbol.items()):
        lo, hi = min(times), max(times) + step
        wanted = set(times)
        for seg in symbols_mod.segments_between(name, lo, hi):
            assert seg.end_ms is not None  # clipped to [lo, hi)
            for c in rest_client.fetch_klines(seg.symbol, interval, seg.start_ms, seg.end_ms - 1):
                if c.open_time not in wanted:
                    continue
                bad = check(c, ",".join(c.landing_row()), accepted)
                if bad:
                    rejections.append(bad)
                else:
                    found.append(_as_configured(c, configured))
    return found, rejections


def rest_client_for(settings: Settings):
    """The configured source's history client (Binance's REST at the settings' URL, or files): for
    callers outside Airflow (the CLI, tests). Inside Airflow the ingest tasks pass Binance's from
    BinanceHook (the binance_default connection)."""
    from cryptoflow import sources

    return sources.active(settings).history(settings)


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
    root = Path(collector_root or settings.state_dir / "collector")
    stats = ReadStats()
    r_lo, r_hi = received_ms or (start_ms, end_ms + grace_ms)
    messages = (
        read_window(root, r_lo, r_hi, stats, clock_slack_ms=clock_slack_ms)
        if root.exists()
        else iter(())
    )
    ignored: Counter = Counter()
    candles, rejections, open_updates = parse_messages(
        messages,
        configured,
        interval,
        start_ms,
        end_ms,
        ignored=ignored,
        feed=sources.active(settings),
    )

    # Conflicting duplicates leave their key empty: prepare() tells us which, so REST can settle them.
    kept, conflicts, collapsed = landing.prepare(candles)
    rejections += conflicts
    stream_rejected = len(rejections)
    present = {(c.symbol, c.open_time) for c in kept}
    missing = expected_keys(configured, interval, start_ms, end_ms) - present

    healed_candles: list[Candle] = []
    if missing:
        rest_client = rest_client or rest_client_for(settings)
        healed_candles, rest_rejections = heal(rest_client, configured, interval, missing)
        rejections += rest_rejections
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
        healed=healed,
        holes=holes,
        rejected=dict(Counter(r.reason for r in rejections)),
        open_updates=open_updates,
        # messages == from_stream + duplicates + rejected + open_updates + sum(ignored)
        stream={
            "messages": stats.messages,
            "from_stream": len(kept),
            "duplicates": collapsed,
            "rejected": stream_rejected,
            "open_updates": open_updates,
            "ignored": dict(ignored),
            "torn": stats.torn,
            "corrupt": stats.corrupt,
            "active_segments": stats.active_segments,
            "events": len(stats.events),
        },
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
            _explain_holes(cur, result.holes, interval)


def window_run_id(interval: str, start_ms: int) -> str:
    """The bookkeeping id of a window, the same for every run that seals it."""
    return f"binance_ingest:{interval}:{datetime_from_ms(start_ms).strftime('%Y-%m-%dT%H:%MZ')}"


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
                parsed.append((_as_configured(c, configured), ",".join(c.landing_row())))
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


# --- completeness: closed candles missing from the warehouse, healed over REST -------------------

# How far back the healer looks for missing candles: a laptop asleep for a weekend, or a collector
# dead for days, comes back whole; older holes are history to import, not to heal every 10 minutes.
HEAL_HORIZON_MS = 31 * 86_400_000
# At most this many candles per symbol per run (10 REST requests): a month-long hole heals over a
# few runs instead of holding one window's sealing for minutes.
HEAL_MAX_PER_SYMBOL = 10_000
HOLE_REASON = "not available from the stream or Binance REST"


@dataclass
class HealResult:
    uris: list[str]
    wanted: int  # missing candles looked for
    healed: list[tuple[str, int]] = field(default_factory=list)  # fetched from REST and landed
    holes: list[tuple[str, int]] = field(default_factory=list)  # REST has none: explained gaps
    rejections: list[Rejection] = field(default_factory=list, repr=False)
    deferred: int = 0  # over the per-run cap: next run

    def summary(self) -> dict:
        return {
            "uris": self.uris,
            "wanted": self.wanted,
            "healed": len(self.healed),
            "holes": len(self.holes),
            "rejected": dict(Counter(r.reason for r in self.rejections)),
            "deferred": self.deferred,
        }


def missing_ranges(
    conn, symbols, interval: str, lo_ms: int, before_ms: int
) -> dict[str, list[tuple[int, int]]]:
    """[start, end) ranges of `interval` open times missing from market.candles, per symbol.

    Between the symbol's first stored candle at or after `lo_ms` and `before_ms`: the holes between
    stored candles and the tail after the last one. A symbol with nothing stored in that span has
    no history to be incomplete against yet (its first load, a seed, is still on its way).
    """
    step = INTERVAL_MS[interval]
    rows = conn.execute(
        """
        SELECT symbol, open_time, lead(open_time) OVER (PARTITION BY symbol ORDER BY open_time) AS next
        FROM market.candles
        WHERE interval = %(iv)s AND symbol = ANY(%(symbols)s) AND open_time >= %(lo)s AND open_time < %(hi)s
        """,
        {
            "iv": interval,
            "symbols": list(symbols),
            "lo": datetime_from_ms(lo_ms),
            "hi": datetime_from_ms(before_ms),
        },
    ).fetchall()
    out: dict[str, list[tuple[int, int]]] = {}
    for symbol, t, nxt in rows:
        a = ms_from_datetime(t) + step
        b = before_ms if nxt is None else ms_from_datetime(nxt)
        if b > a:
            out.setdefault(symbol, []).append((a, b))
    return out


def _known_keys(
    conn, interval: str, ranges: dict[str, list[tuple[int, int]]]
) -> set[tuple[str, int]]:
    """Missing keys that healing must not chase again: quarantined rows and explained gaps."""
    known: set[tuple[str, int]] = set()
    step = INTERVAL_MS[interval]
    for symbol, spans in ranges.items():
        lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
        for (t,) in conn.execute(
            "SELECT open_time FROM ops.quarantine WHERE symbol = %s AND interval = %s"
            " AND open_time >= %s AND open_time < %s",
            (symbol, interval, datetime_from_ms(lo), datetime_from_ms(hi)),
        ).fetchall():
            known.add((symbol, ms_from_datetime(t)))
        for a, b in conn.execute(
            "SELECT gap_start, gap_end FROM ops.explained_gaps WHERE symbol = %s AND interval = %s"
            " AND gap_end > %s AND gap_start < %s",
            (symbol, interval, datetime_from_ms(lo), datetime_from_ms(hi)),
        ).fetchall():
            a_ms, b_ms = ms_from_datetime(a), ms_from_datetime(b)
            first = -(-a_ms // step) * step
            known.update((symbol, t) for t in range(max(first, lo), min(b_ms, hi), step))
    return known


def landed_windows(
    landing_uri: str, interval: str, lo_ms: int, before_ms: int
) -> list[tuple[int, int]]:
    """Windows of the snapshots already landed over [lo, before): sealed windows and healed stretches.

    Their candles are on their way to the warehouse (spark_etl follows the landing Asset), or are
    holes the sealing explained; either way there is nothing to fetch again. (A snapshot that
    failed to load stays a red spark_etl run to retry, not a reason to fetch it twice.)
    """
    out = []
    for root in (landing_uri, healed_root(landing_uri)):
        for uri in landing.list_snapshots(root, interval, lo_ms, before_ms):
            out.append(landing.parse_snapshot_name(uri))
    return out


def healed_root(landing_uri: str) -> str:
    """Healed stretches land beside the 10-minute windows, never in their place: a stretch that
    happens to span exactly one window must not replace that window's own snapshot."""
    return landing_uri.rstrip("/") + "/healed"


def find_missing(
    conn, settings: Settings, before_ms: int, horizon_ms: int = HEAL_HORIZON_MS
) -> set[tuple[str, int]]:
    """(symbol, open time) of closed candles that should be in the warehouse before `before_ms` and
    are not: not stored, not in a snapshot on its way, not quarantined, not an explained gap."""
    interval, configured = settings.interval, tuple(settings.symbols)
    lo = before_ms - horizon_ms
    ranges = missing_ranges(conn, configured, interval, lo, before_ms)
    if not ranges:
        return set()
    missing: set[tuple[str, int]] = set()
    for symbol, spans in ranges.items():
        for a, b in spans:
            missing |= expected_keys((symbol,), interval, a, b)
    lo_missing = min(t for _, t in missing) if missing else before_ms
    for s, e in landed_windows(settings.landing_uri, interval, lo_missing, before_ms):
        missing = {(sym, t) for sym, t in missing if not s <= t < e}
    return missing - _known_keys(conn, interval, ranges)


def heal_history(
    conn,
    settings: Settings,
    before_ms: int,
    *,
    rest_client=None,
    horizon_ms: int = HEAL_HORIZON_MS,
    max_per_symbol: int = HEAL_MAX_PER_SYMBOL,
) -> HealResult:
    """Fetch the closed candles missing from the warehouse before `before_ms` from REST and land them.

    What binance_ingest does beside sealing its window, so the platform heals itself: the demo's
    seed gap, a laptop asleep, a collector dead for hours, a window whose run never happened. One
    snapshot per contiguous stretch of healed candles (its name is its range, so the next run sees
    it as on its way). What REST does not have either is a hole: recorded as an explained gap with
    its reason (`record_heal`), never chased again, never filled in.
    """
    interval, configured = settings.interval, tuple(settings.symbols)
    missing = find_missing(conn, settings, before_ms, horizon_ms)
    if not missing:
        return HealResult(uris=[], wanted=0)
    by_symbol: dict[str, list[int]] = {}
    for s, t in sorted(missing):
        by_symbol.setdefault(s, []).append(t)
    wanted: set[tuple[str, int]] = set()
    deferred = 0
    for s, times in by_symbol.items():
        wanted.update(
            (s, t) for t in times[:max_per_symbol]
        )  # oldest first: the tail follows next run
        deferred += max(len(times) - max_per_symbol, 0)
    rest_client = rest_client or rest_client_for(settings)
    found, rejections = heal(rest_client, configured, interval, wanted)
    kept, conflicts, _ = landing.prepare(found)
    rejections += conflicts
    uris = []
    step = INTERVAL_MS[interval]
    for lo, hi in merge_ranges((t, t + step) for t in {c.open_time for c in kept}):
        snap = landing.write_snapshot(
            healed_root(settings.landing_uri),
            interval,
            lo,
            hi,
            [c for c in kept if lo <= c.open_time < hi],
        )
        rejections += snap.rejections
        uris.append(snap.uri)
    healed = sorted((c.symbol, c.open_time) for c in kept)
    rejected = {(r.symbol, r.open_time) for r in rejections}
    holes = sorted(wanted - set(healed) - rejected)
    if holes:
        log.warning(
            "healing: %d candles not available from Binance REST either (kept as holes): %s",
            len(holes),
            holes[:10],
        )
    return HealResult(
        uris=uris,
        wanted=len(wanted),
        healed=healed,
        holes=holes,
        rejections=rejections,
        deferred=deferred,
    )


def hole_ranges(holes: list[tuple[str, int]], step: int) -> list[tuple[str, int, int]]:
    """(symbol, start, end) of consecutive holes, for ops.explained_gaps."""
    out: list[tuple[str, int, int]] = []
    for s, t in sorted(holes):
        if out and out[-1][0] == s and out[-1][2] == t:
            out[-1] = (s, out[-1][1], t + step)
        else:
            out.append((s, t, t + step))
    return out


def record_heal(conn, result: HealResult, run_id: str, interval: str) -> None:
    """Quarantine the healing's rejections, note what it healed and explain its holes: `record`, under
    the window's run id + ":heal" (resealing the window replaces its own rows, never the healing's)."""
    record(conn, result, f"{run_id}:heal", interval)


def _explain_holes(cur, holes: list[tuple[str, int]], interval: str) -> None:
    """Candles neither the stream nor REST had: explained gaps with the reason (dq_gaps, the healer)."""
    cur.executemany(
        "INSERT INTO ops.explained_gaps (symbol, interval, gap_start, gap_end, reason) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (symbol, interval, gap_start) DO NOTHING",
        [
            (s, interval, datetime_from_ms(a), datetime_from_ms(b), HOLE_REASON)
            for s, a, b in hole_ranges(holes, INTERVAL_MS[interval])
        ],
    )
