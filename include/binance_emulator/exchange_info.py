"""What `GET /api/v3/exchangeInfo` says about replayed symbols: their price rules, read off their history.

Binance answers `{"timezone": "UTC", "serverTime": ms, "rateLimits": [...], "exchangeFilters": [],
"symbols": [...]}`, one entry per symbol with its assets, precisions, order types and filters.
The replay serves what a market-data client can use: symbol, status `TRADING`, base and quote
asset, the precisions (8, as Binance's spot pairs), the request-weight limit the server enforces,
and one filter, `PRICE_FILTER`:
- `tickSize`: the largest power of ten of which every open/high/low/close in the symbol's loaded
  history is a multiple (`price_tick`), between 1e-8 and 1, as a decimal string with 8 decimals
  like Binance's ("0.01000000"). Synthetic minutes follow a path between real prices, so their
  prices are not all on the tick: only the history decides.
- `minPrice`: the tick (as on Binance); `maxPrice`: 1,000,000, or the first power of ten above
  that leaves ten times room over the history's highest price.
A symbol the server accepts without any history (configured, its streams silent) has no price to
infer from: it gets the finest tick, 1e-8, which rejects no price Binance could send.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Iterable

from binance_emulator.wire import _fmt

MIN_TICK = Decimal("0.00000001")
MAX_TICK = Decimal(1)
MAX_PRICE = Decimal(1_000_000)
PRECISION = 8
# Quote assets recognised at the end of a symbol, longest first (FDUSD before USD-anything).
QUOTE_ASSETS = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY")


def _last_digit_exponent(digits: tuple[int, ...], exponent: int) -> int:
    """The exponent of a decimal's last non-zero digit: 43250.50 -> -1, 43200 -> 2 (no context rounding)."""
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return exponent + trailing


def price_tick(prices: Iterable[Decimal]) -> Decimal:
    """The largest power of ten, between 1e-8 and 1, of which every one of `prices` is a multiple.

    Zero is a multiple of any tick. Prices with more than 8 decimals (not Binance's) give 1e-8.
    No (non-zero) prices at all: 1e-8, the finest tick, since there is nothing to infer from.
    Raises ValueError for NaN or infinity.
    """
    lowest = 0  # the tick so far is 10 ** lowest; 1 is the cap
    seen = False
    for p in prices:
        _, digits, exponent = p.as_tuple()
        if not isinstance(exponent, int):
            raise ValueError(f"not a price: {p}")
        if p.is_zero():
            continue
        seen = True
        # The last non-zero digit is at or above the written exponent: only a price written with
        # more decimals than the tick so far can make it finer (the fast path for a long history).
        if exponent < lowest:
            lowest = min(lowest, _last_digit_exponent(digits, exponent))
            if lowest <= -PRECISION:
                return MIN_TICK
    return MAX_TICK.scaleb(lowest) if seen else MIN_TICK


def max_price(highest: Decimal | None) -> Decimal:
    """1,000,000, or the first power of ten above it at least ten times `highest`."""
    limit = MAX_PRICE
    while highest is not None and limit < highest * 10:
        limit *= 10
    return limit


def split_symbol(symbol: str) -> tuple[str, str]:
    """(base asset, quote asset) of `symbol`: BTCUSDT -> ("BTC", "USDT"); ("SYMBOL", "") if no quote is known."""
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol, ""


def symbol_info(symbol: str, tick: Decimal, highest: Decimal | None) -> dict:
    """One entry of exchangeInfo's `symbols`."""
    base, quote = split_symbol(symbol)
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": PRECISION,
        "quoteAsset": quote,
        "quotePrecision": PRECISION,
        "quoteAssetPrecision": PRECISION,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": _fmt(tick),
                "maxPrice": _fmt(max_price(highest)),
                "tickSize": _fmt(tick),
            }
        ],
    }


def rate_limits(weight_budget: int, weight_window_s: float) -> list[dict]:
    """exchangeInfo's `rateLimits`: the request-weight budget the server enforces."""
    window = int(weight_window_s)
    interval, num = (
        ("MINUTE", window // 60)
        if window >= 60 and window % 60 == 0
        else ("SECOND", max(1, window))
    )
    return [
        {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": interval,
            "intervalNum": num,
            "limit": weight_budget,
        }
    ]


def exchange_info(
    entries: list[dict], server_time_ms: int, weight_budget: int, weight_window_s: float
) -> dict:
    """The whole exchangeInfo answer for `entries` (symbol_info dicts)."""
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "rateLimits": rate_limits(weight_budget, weight_window_s),
        "exchangeFilters": [],
        "symbols": entries,
    }


__all__ = [
    "MIN_TICK",
    "MAX_TICK",
    "price_tick",
    "max_price",
    "split_symbol",
    "symbol_info",
    "rate_limits",
    "exchange_info",
]
