"""Binance spot, live or replayed: everything cryptoflow knows of Binance lives in this package.

- `stream`: the kline websocket client (combined streams, pings, reconnects, rate limits).
- `rest`: the REST klines client (pagination, weight accounting, 429/418/5xx handling).
- `wire`: the websocket message and the REST row read into neutral candles.

CRYPTOFLOW_BINANCE_MODE picks Binance itself or the local emulator (the `binance_emulator`
package), which speaks the same protocol from real history: the client code is the same in both.
Inside Airflow the REST URLs can be moved by the `binance_default` connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from cryptoflow.candles import INTERVAL_MS
from cryptoflow.sources.binance import wire


@dataclass(frozen=True)
class BinanceSource:
    name: str = "binance"
    # Every kline interval Binance serves that cryptoflow can key (candles.INTERVAL_MS).
    intervals: tuple[str, ...] = tuple(INTERVAL_MS)
    has_stream: bool = True

    def history(self, settings, *, rest_url: str | None = None, **options: Any):
        from cryptoflow.sources.binance.rest import BinanceRestClient

        return BinanceRestClient(rest_url or settings.binance_rest_url, **options)

    def stream(
        self,
        settings,
        on_message: Callable[[str, float], None],
        *,
        ws_url: str | None = None,
        **options: Any,
    ):
        from cryptoflow.sources.binance.stream import KlineStream

        return KlineStream(
            ws_url or settings.binance_ws_url,
            settings.symbols,
            settings.interval,
            on_message,
            **options,
        )

    def parse_message(self, raw: str, label: str):
        return wire.from_stream_message(raw, label)

    def control_kind(self, raw: str) -> str | None:
        return wire.control_kind(raw)


SOURCE = BinanceSource()
