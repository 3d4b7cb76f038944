"""Candles as Binance sends them: the websocket kline payload and the 12-column REST klines row.

Prices and volumes are strings with 8 decimals, times and trade counts integers, as on Binance.
CryptoDataDownload files carry no taker-buy volumes: those fields are sent as "0.00000000" (the
protocol has no "unknown"). First/last trade ids are synthetic (`f = open_time // 10`,
`L = f + n - 1`, `-1` for no trades).
"""

from __future__ import annotations

from decimal import Decimal

from cryptoflow.candles import Candle


def _fmt(d: Decimal | None) -> str:
    return "0.00000000" if d is None else f"{d:.8f}"


def _trade_ids(c: Candle) -> tuple[int, int]:
    n = c.trades or 0
    if n == 0:
        return -1, -1
    first = c.open_time // 10
    return first, first + n - 1


def kline_event(c: Candle, event_ms: int) -> dict:
    """The websocket kline payload for `c` (`x` is `c.closed`)."""
    f, last = _trade_ids(c)
    return {
        "e": "kline",
        "E": event_ms,
        "s": c.symbol,
        "k": {
            "t": c.open_time,
            "T": c.close_time,
            "s": c.symbol,
            "i": c.interval,
            "f": f,
            "L": last,
            "o": _fmt(c.open),
            "c": _fmt(c.close),
            "h": _fmt(c.high),
            "l": _fmt(c.low),
            "v": _fmt(c.base_volume),
            "n": c.trades or 0,
            "x": c.closed,
            "q": _fmt(c.quote_volume),
            "V": _fmt(c.taker_buy_base_volume),
            "Q": _fmt(c.taker_buy_quote_volume),
            "B": "0",
        },
    }


def rest_row(c: Candle) -> list:
    """The 12-column REST klines row for `c`."""
    return [
        c.open_time,
        _fmt(c.open),
        _fmt(c.high),
        _fmt(c.low),
        _fmt(c.close),
        _fmt(c.base_volume),
        c.close_time,
        _fmt(c.quote_volume),
        c.trades or 0,
        _fmt(c.taker_buy_base_volume),
        _fmt(c.taker_buy_quote_volume),
        "0",
    ]


__all__ = ["kline_event", "rest_row"]
