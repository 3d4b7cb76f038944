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

from cryptoflow import landing, quarantine
from cryptoflow import symbols as symbols_mod
from cryptoflow.binance.collector import ReadStats, read_window
from cryptoflow.candles import INTERVAL_MS, Candle, CandleFormatError, Rejection, check, from_stream_message, reject
from cryptoflow.settings import Settings

log = logging.getLogger(__name__)

STREAM_SOURCE = "binance_ws"
# How long after a window's end its last closing message may still arrive (Binance pushes ~every 2 s).
DEFAULT_GRACE_MS = 30_000


@dataclass
class SealResult:
    uri: str
    window_start_ms: int
    window_end_ms: int
    rows: int
    from_stream: int
    healed: list[tuple[str, int]] = field(default_factory=list)    # (symbol, open_time) fetched from REST
    holes: list[tuple[str, int]] = field(default_factory=list)     # expected, not available anywhere
    rejected: dict[str, int] = field(default_factory=dict)         # reason -> count
    open_updates: int = 0                                          # x=false messages (expected, not landed)
    stream: dict = field(default_factory=dict)                     # torn/corrupt lines, events
    sha256: str = ""
    rejections: list[Rejection] = field(default_factory=list, repr=False)  # for the quarantine

    def summary(self) -> dict:
        return {"uri": self.uri, "rows": self.rows, "from_stream": self.from_stream, "healed": len(self.healed),
                "holes": len(self.holes), "rejected": self.rejected, "open_updates": self.open_updates,
                "stream": self.stream, "sha256": self.sha256}


def expected_keys(configured: tuple[str, ...], interval: str, start_ms: int, end_ms: int) -> set[tuple[str, int]]:
    """(configured symbol, open time) of every candle that should exist in [start, end)."""
    step = INTERVAL_MS[interval]
    first = -(-start_ms // step) * step
    return {(name, t) for name in configured for t in range(first, end_ms, step)
            if symbols_mod.exchange_symbol(name, t) is not None}


def _as_configured(c: Candle, configured: tuple[str, ...]) -> Candle:
    name = symbols_mod.configured_for(c.symbol, configured)
    return c if name is None or name == c.symbol else dataclasses.replace(c, symbol=name)


def _control_kind(raw: str) -> str | None:
    """What a well-formed non-data message is ("event:<e>" or "reply"), None if it is not one.

    Binance sends server events (`{"e": "serverShutdown", ...}`, bare or wrapped) and replies to
    SUBSCRIBE & co (`{"result": ..., "id": ...}`, `{"error": ..., "id": ...}`): not data, nothing to
    quarantine. Any other message that isn't a kline (a kline event without its `k`, a JSON array,
    a bare number) is a broken record and is rejected like one.
    """
    import json

    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if isinstance(msg, dict) and "data" in msg and "stream" in msg:
        msg = msg["data"]
    if not isinstance(msg, dict):
        return None
    for obj in (msg, msg.get("event")):
        if isinstance(obj, dict) and isinstance(obj.get("e"), str) and obj["e"] != "kline":
            return f"event:{obj['e'][:40]}"
    if "id" in msg and ("result" in msg or "error" in msg):
        return "reply"
    return None


def parse_messages(messages, configured: tuple[str, ...], interval: str, start_ms: int, end_ms: int,
                   source: str = STREAM_SOURCE, ignored: Counter | None = None
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
            c = from_stream_message(raw, source)
        except CandleFormatError as exc:
            if exc.reason == "not_kline":
                kind = _control_kind(raw)
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


def heal(rest_client, configured: tuple[str, ...], interval: str, missing: set[tuple[str, int]]
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
            for c in rest_client.fetch_klines(seg.symbol, interval, seg.start_ms, seg.end_ms - 1):
                if c.open_time not in wanted:
                    continue
                bad = check(c, ",".join(c.landing_row()), accepted)
                if bad:
                    rejections.append(bad)
                else:
                    found.append(_as_configured(c, configured))
    return found, rejections


def seal_window(settings: Settings, start_ms: int, end_ms: int, *, rest_client=None, collector_root=None,
                grace_ms: int = DEFAULT_GRACE_MS, received_ms: tuple[int, int] | None = None,
                clock_slack_ms: int = 600_000) -> SealResult:
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
    messages = read_window(root, r_lo, r_hi, stats, clock_slack_ms=clock_slack_ms) if root.exists() else iter(())
    ignored: Counter = Counter()
    candles, rejections, open_updates = parse_messages(messages, configured, interval, start_ms, end_ms,
                                                       ignored=ignored)

    # Conflicting duplicates leave their key empty: prepare() tells us which, so REST can settle them.
    kept, conflicts, collapsed = landing.prepare(candles)
    rejections += conflicts
    stream_rejected = len(rejections)
    present = {(c.symbol, c.open_time) for c in kept}
    missing = expected_keys(configured, interval, start_ms, end_ms) - present

    healed_candles: list[Candle] = []
    if missing:
        if rest_client is None:
            from cryptoflow.binance.rest import BinanceRestClient

            rest_client = BinanceRestClient(settings.binance_rest_url)
        healed_candles, rest_rejections = heal(rest_client, configured, interval, missing)
        rejections += rest_rejections
    healed = sorted((c.symbol, c.open_time) for c in healed_candles)
    holes = sorted(missing - set(healed))
    if holes:
        log.warning("window %s..%s: %d candles not available from stream or REST (holes kept): %s",
                    start_ms, end_ms, len(holes), holes[:10])

    snap = landing.write_snapshot(settings.landing_uri, interval, start_ms, end_ms, kept + healed_candles)
    rejections += snap.rejections
    return SealResult(
        uri=snap.uri, window_start_ms=start_ms, window_end_ms=end_ms, rows=snap.rows,
        from_stream=len(kept), healed=healed, holes=holes,
        rejected=dict(Counter(r.reason for r in rejections)), open_updates=open_updates,
        # messages == from_stream + duplicates + rejected + open_updates + sum(ignored)
        stream={"messages": stats.messages, "from_stream": len(kept), "duplicates": collapsed,
                "rejected": stream_rejected, "open_updates": open_updates, "ignored": dict(ignored),
                "torn": stats.torn, "corrupt": stats.corrupt,
                "active_segments": stats.active_segments, "events": len(stats.events)},
        sha256=snap.sha256, rejections=rejections,
    )


def record(conn, result: SealResult, run_id: str, interval: str) -> None:
    """Quarantine the rejections and note the healed candles, in one transaction.

    `run_id` names the window (not the Airflow try): sealing a window again replaces its earlier
    quarantine rows instead of adding a second copy of each.
    """
    from cryptoflow.warehouse.load import ms_to_ts

    with conn.transaction():
        conn.execute("DELETE FROM ops.quarantine WHERE run_id = %s", (run_id,))
        quarantine.write_rejections(conn, result.rejections, run_id)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO ops.healed_gaps (symbol, interval, open_time, run_id) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (symbol, interval, open_time) DO NOTHING",
                [(s, interval, ms_to_ts(t), run_id) for s, t in result.healed],
            )


def window_run_id(interval: str, start_ms: int) -> str:
    """The bookkeeping id of a window, the same for every run that seals it."""
    from cryptoflow.warehouse.load import ms_to_ts

    return f"binance_ingest:{interval}:{ms_to_ts(start_ms).strftime('%Y-%m-%dT%H:%MZ')}"


def backfill_from_rest(settings: Settings, start_ms: int, end_ms: int, rest_client=None):
    """Bulk history of [start, end) for every configured symbol straight from REST, as an ImportResult.

    For seeding a new platform (the demo, a first deployment) without thousands of 10-minute DAG
    runs; the candles land through `importers.land` like any other imported history. Candles REST
    does not have are simply absent (holes), never filled in.
    """
    from cryptoflow.importers.common import finish

    if rest_client is None:
        from cryptoflow.binance.rest import BinanceRestClient

        rest_client = BinanceRestClient(settings.binance_rest_url)
    configured = tuple(settings.symbols)
    parsed, read = [], 0
    for name in configured:
        for seg in symbols_mod.segments_between(name, start_ms, end_ms):
            for c in rest_client.fetch_klines(seg.symbol, settings.interval, seg.start_ms, seg.end_ms - 1):
                read += 1
                parsed.append((_as_configured(c, configured), ",".join(c.landing_row())))
    return finish(read, parsed, [], symbols=configured)
