"""Market-data sources: where candles come from, behind one small interface.

A source is one module here, `cryptoflow.sources.<name>`, whose `SOURCE` is a `Source`, chosen by
one setting, CRYPTOFLOW_SOURCE (default `binance`). Adding an exchange is that module and that line
of configuration; nothing downstream of the landing snapshots knows which source filled them.

- `binance`: Binance spot, live or through the local replay server (the same client code).
- `files`: candle files on disk (CryptoDataDownload CSVs, data.binance.vision dumps), read through
  the importers; no network at all. It has no stream: every window is sealed from its history, as
  a backfill is, so it serves backfills and imports of history (`cryptoflow backfill`, `airflow
  backfill create --dag-id binance_ingest`) on a machine that can't reach an exchange.

One source feeds one deployment: the warehouse key (symbol, interval, open_time) holds one series
per configured symbol. Running two exchanges side by side would first need an exchange column in
that key (a migration); see docs/architecture.md.
"""

from __future__ import annotations

import importlib
import pkgutil
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

if TYPE_CHECKING:
    from cryptoflow.candles import Candle
    from cryptoflow.settings import Settings


class CandleHistory(Protocol):
    """Closed candles by time range: Binance's REST klines, or files. What healing and backfills read."""

    def fetch_klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, *, closed_only: bool = True
    ) -> list[Candle]:
        """Candles of `symbol` with open time in [start_ms, end_ms] (inclusive, ms UTC), oldest first."""
        ...

    def tick_sizes(self, symbols: Iterable[str]) -> dict[str, Decimal]:
        """The exchange's price grid (Binance: PRICE_FILTER tickSize) of `symbols`; {} from a source
        that publishes none (files): the forecast then infers the grid from the closes."""
        ...

    def close(self) -> None: ...


class CandleStream(Protocol):
    """A live feed of raw kline messages (text as received), delivered to a callback until stopped."""

    names: list[str]
    url: str

    @property
    def connected(self) -> bool: ...

    def run(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...


class Source(Protocol):
    name: str
    intervals: tuple[str, ...]  # the kline intervals it can deliver
    has_stream: bool  # False: no collector, every window is sealed from `history`

    def history(self, settings: Settings, **options: Any) -> CandleHistory:
        """The client for closed candles by time range, configured from the settings."""
        ...

    def stream(
        self, settings: Settings, on_message: Callable[[str, float], None], **options: Any
    ) -> CandleStream:
        """The live feed of settings.symbols at settings.interval (raises for a source without one)."""
        ...

    def parse_message(self, raw: str, label: str) -> Candle:
        """A candle from one message of the stream, as recorded by the collector; CandleFormatError
        if it is none (reason "not_kline" for a well-formed message that carries no candle)."""
        ...

    def control_kind(self, raw: str) -> str | None:
        """What a well-formed non-data message of the stream is (a server event, a reply), or None:
        such messages are counted, not quarantined."""
        ...


def names() -> list[str]:
    """The sources available: the modules of this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> Source:
    """The source called `name` (a module of this package), checked to be one."""
    from cryptoflow.settings import ConfigError

    if name not in names():
        raise ConfigError(
            f"CRYPTOFLOW_SOURCE={name!r}: no such source; available: {', '.join(names())}"
        )
    return importlib.import_module(f"{__name__}.{name}").SOURCE


def active(settings: Settings) -> Source:
    """The source the settings choose, refusing an interval it can't deliver."""
    from cryptoflow.settings import ConfigError

    source = get(settings.source)
    if settings.interval not in source.intervals:
        raise ConfigError(
            f"source {source.name!r} has no {settings.interval!r} candles "
            f"(CRYPTOFLOW_INTERVAL); it has {', '.join(source.intervals)}"
        )
    return source


__all__ = ["Source", "CandleHistory", "CandleStream", "names", "get", "active"]
