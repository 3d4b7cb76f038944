"""Configured symbols and the Binance symbol that trades under each at a given instant.

One configured name stands for one continuous series in the warehouse, even when Binance renamed
the pair: MATIC spot pairs were delisted on 2024-09-10 03:00 UTC and POL (a 1:1 token swap)
started trading on 2024-09-13 10:00 UTC. Whether POLUSDT (settings' default, the current name) or
the older MATICUSDT is configured, the series is MATICUSDT before the delisting, nothing during the
three-day hole, POLUSDT afterwards. The hole stays a hole: `exchange_symbol` answers None inside
it, so nobody asks Binance for (or interpolates) candles that never existed.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptoflow.times import utc_ms

MATIC_DELISTED_MS = utc_ms(2024, 9, 10, 3, 0)  # first instant without MATIC trading
POL_LISTED_MS = utc_ms(2024, 9, 13, 10, 0)  # first instant of POL trading


@dataclass(frozen=True)
class Segment:
    """`symbol` trades on Binance during [start_ms, end_ms) (None: unbounded)."""

    symbol: str
    start_ms: int | None
    end_ms: int | None

    def contains(self, at_ms: int) -> bool:
        return (self.start_ms is None or at_ms >= self.start_ms) and (
            self.end_ms is None or at_ms < self.end_ms
        )


_MATIC_POL = (
    Segment("MATICUSDT", None, MATIC_DELISTED_MS),
    Segment("POLUSDT", POL_LISTED_MS, None),
)

# Configured name -> the exchange symbols of its history, oldest first. Names not listed are one
# symbol for all time.
HISTORY: dict[str, tuple[Segment, ...]] = {
    "POLUSDT": _MATIC_POL,
    "MATICUSDT": _MATIC_POL,
}


def configured_symbols(settings=None) -> tuple[str, ...]:
    """The symbols in force (CRYPTOFLOW_SYMBOLS), as configured."""
    if settings is None:
        from cryptoflow import settings as _settings

        settings = _settings.load()
    return tuple(settings.symbols)


def history(configured: str) -> tuple[Segment, ...]:
    return HISTORY.get(configured.upper(), (Segment(configured.upper(), None, None),))


def exchange_symbol(configured: str, at_ms: int) -> str | None:
    """The Binance symbol trading for `configured` at `at_ms` (ms UTC); None when none trades."""
    for seg in history(configured):
        if seg.contains(at_ms):
            return seg.symbol
    return None


def segments_between(configured: str, start_ms: int, end_ms: int) -> list[Segment]:
    """The exchange symbols covering [start_ms, end_ms), clipped; holes are simply absent.

    For REST backfills and dump downloads: ask for each segment's symbol over its own range only.
    """
    out = []
    for seg in history(configured):
        lo = start_ms if seg.start_ms is None else max(start_ms, seg.start_ms)
        hi = end_ms if seg.end_ms is None else min(end_ms, seg.end_ms)
        if lo < hi:
            out.append(Segment(seg.symbol, lo, hi))
    return out


def configured_for(exchange: str, configured: tuple[str, ...] | list[str]) -> str | None:
    """The configured name whose history includes the exchange symbol `exchange` (None: not configured).

    Candles are stored under the configured name, so MATICUSDT history continues as POLUSDT's series.
    """
    exchange = exchange.upper()
    for name in configured:
        if any(seg.symbol == exchange for seg in history(name)):
            return name
    return None


def exchange_symbols(configured: tuple[str, ...] | list[str]) -> set[str]:
    """Every Binance symbol that ever traded for the configured names (accepted by validation)."""
    return {seg.symbol for name in configured for seg in history(name)}


__all__ = [
    "MATIC_DELISTED_MS",
    "POL_LISTED_MS",
    "Segment",
    "HISTORY",
    "configured_symbols",
    "history",
    "exchange_symbol",
    "segments_between",
    "configured_for",
    "exchange_symbols",
]
