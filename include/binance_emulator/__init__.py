"""A local Binance: the kline websocket and REST market data, served from real historical candles.

Binance is unreachable from CI and from most development machines, and its failures (dropped
connections, bans, server shutdowns) can't be produced on demand. This server speaks the parts of
the protocol cryptoflow uses, on one port, from files, with switches for every failure the clients
must survive.

One module per concern (each explains its part):
- `history`: which candle files a data directory holds, loaded through the importers.
- `synthetic`: synthetic minutes (and 3m..30m) cut from real hours; partial (still open) candles.
- `wire`: candles as Binance sends them (websocket kline payload, REST klines row).
- `timeline`: the replay clock (speed, shift to present) and the timeline that survives restarts.
- `faults`: fault injection switches and the server's statistics.
- `exchange_info`: exchangeInfo's symbol rules, the price tick inferred from the history.
- `rest_api`: the REST endpoints and the request-weight rules.
- `server`: `ReplayServer` (websocket, routing, lifecycle) and `serve`, the CLI's entry point.

Run it with `serve(settings)` (blocks; `cryptoflow replay-server`), or `ReplayServer(...).start()`
in a background thread (tests). Everything is importable from here, as before the split.
"""

from binance_emulator.exchange_info import price_tick, symbol_info
from binance_emulator.faults import Faults, Stats
from cryptoflow.sources.files import (
    default_data_dirs,
    history_files,
    load_history,
    symbols_with_history,
)
from binance_emulator.server import ReplayServer, serve
from binance_emulator.synthetic import (
    HOUR_MS,
    MINUTE_MS,
    SYNTHETIC_INTERVALS,
    aggregate,
    partial,
    synthetic_minutes,
)
from binance_emulator.timeline import Timeline, anchored_timeline
from binance_emulator.wire import kline_event, rest_row

__all__ = [
    "ReplayServer",
    "Timeline",
    "anchored_timeline",
    "Faults",
    "Stats",
    "load_history",
    "synthetic_minutes",
    "aggregate",
    "partial",
    "kline_event",
    "rest_row",
    "serve",
    "default_data_dirs",
    "SYNTHETIC_INTERVALS",
    "HOUR_MS",
    "MINUTE_MS",
    "history_files",
    "symbols_with_history",
    "price_tick",
    "symbol_info",
]
