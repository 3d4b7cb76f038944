"""Healing over REST: candles the stream missed, fetched from the source's history and landed.

Two callers. Sealing a window (cryptoflow.ingest) heals the window's own missing candles with
`heal`. Beside it, binance_ingest heals the warehouse's history (`heal_history`): closed candles
missing before the window (the demo's seed gap, a laptop asleep, a collector dead for hours, a
window whose run never happened), one snapshot per contiguous stretch under `healed_root`. What
REST does not have either is a hole, never filled in: the run's bookkeeping (`ingest.record_heal`)
explains it (ops.explained_gaps, `HOLE_REASON`) so it is never chased again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field

from cryptoflow import landing, sources
from cryptoflow import symbols as symbols_mod
from cryptoflow.candles import INTERVAL_MS, Candle, Rejection, check
from cryptoflow.settings import Settings
from cryptoflow.times import datetime_from_ms, merge_ranges, ms_from_datetime

log = logging.getLogger(__name__)

# How far back the healer looks for missing candles: a laptop asleep for a weekend, or a collector
# dead for days, comes back whole; older holes are history to import, not to heal every 10 minutes.
HEAL_HORIZON_MS = 31 * 86_400_000
# At most this many candles per symbol per run (10 REST requests): a month-long hole heals over a
# few runs instead of holding one window's sealing for minutes.
HEAL_MAX_PER_SYMBOL = 10_000
HOLE_REASON = "not available from the stream or Binance REST"


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


def as_configured(c: Candle, configured: tuple[str, ...]) -> Candle:
    """The candle under its configured symbol's name (MATIC's candles as POL's, and so on)."""
    name = symbols_mod.configured_for(c.symbol, configured)
    return c if name is None or name == c.symbol else dataclasses.replace(c, symbol=name)


def rest_client_for(settings: Settings):
    """The configured source's history client (Binance's REST at the settings' URL, or files): for
    callers outside Airflow (the CLI, tests). Inside Airflow the ingest tasks pass Binance's from
    BinanceHook (the binance_default connection)."""
    return sources.active(settings).history(settings)


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
                    found.append(as_configured(c, configured))
    return found, rejections


# --- completeness: closed candles missing from the warehouse, healed over REST -------------------


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


def _oldest_per_symbol(
    missing: set[tuple[str, int]], max_per_symbol: int
) -> tuple[set[tuple[str, int]], int]:
    """The oldest `max_per_symbol` missing candles of each symbol, and how many wait for next run."""
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
    return wanted, deferred


def _land_stretches(
    landing_uri: str, interval: str, kept: list[Candle]
) -> tuple[list[str], list[Rejection]]:
    """One snapshot under `healed_root` per contiguous stretch of healed candles: (URIs, rejections)."""
    uris: list[str] = []
    rejections: list[Rejection] = []
    step = INTERVAL_MS[interval]
    for lo, hi in merge_ranges((t, t + step) for t in {c.open_time for c in kept}):
        snap = landing.write_snapshot(
            healed_root(landing_uri),
            interval,
            lo,
            hi,
            [c for c in kept if lo <= c.open_time < hi],
        )
        rejections += snap.rejections
        uris.append(snap.uri)
    return uris, rejections


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
    wanted, deferred = _oldest_per_symbol(missing, max_per_symbol)
    rest_client = rest_client or rest_client_for(settings)
    found, rejections = heal(rest_client, configured, interval, wanted)
    kept, conflicts, _ = landing.prepare(found)
    rejections += conflicts
    uris, landing_rejections = _land_stretches(settings.landing_uri, interval, kept)
    rejections += landing_rejections
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


def explain_holes(cur, holes: list[tuple[str, int]], interval: str) -> None:
    """Candles neither the stream nor REST had: explained gaps with the reason (dq_gaps, the healer)."""
    cur.executemany(
        "INSERT INTO ops.explained_gaps (symbol, interval, gap_start, gap_end, reason) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (symbol, interval, gap_start) DO NOTHING",
        [
            (s, interval, datetime_from_ms(a), datetime_from_ms(b), HOLE_REASON)
            for s, a, b in hole_ranges(holes, INTERVAL_MS[interval])
        ],
    )
