"""Binance spot: the kline websocket and the REST klines (cryptoflow.binance), live or replayed.

CRYPTOFLOW_BINANCE_MODE picks Binance itself or the local replay server, which speaks the same
protocol from real history: the client code is the same in both. Inside Airflow the REST URLs can
be moved by the `binance_default` connection (plugins/binance_hook.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from cryptoflow.candles import INTERVAL_MS


@dataclass(frozen=True)
class BinanceSource:
    name: str = "binance"
    # Every kline interval Binance serves that cryptoflow can key (candles.INTERVAL_MS).
    intervals: tuple[str, ...] = tuple(INTERVAL_MS)
    has_stream: bool = True

    def history(self, settings, *, rest_url: str | None = None, **options: Any):
        from cryptoflow.binance.rest import BinanceRestClient

        return BinanceRestClient(rest_url or settings.binance_rest_url, **options)

    def stream(self, settings, on_message: Callable[[str, float], None], *, ws_url: str | None = None,
               **options: Any):
        from cryptoflow.binance.stream import KlineStream

        return KlineStream(ws_url or settings.binance_ws_url, settings.symbols, settings.interval, on_message,
                           **options)


SOURCE = BinanceSource()
