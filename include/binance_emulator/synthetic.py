"""Synthetic sub-hour candles cut from real hours, and partial (still open) candles.

Which candles: real hourly history, and synthetic minutes
----------------------------------------------------------
The shared data (its cryptodatadownload directory) is hourly, while the platform collects
`1m`. Decision: **both**, clearly told apart.
- `1h` streams and REST serve the real hourly candles as loaded by cryptoflow.importers (rows the
  importer quarantines are holes here, like exchange outages, which are kept as holes too; see
  `history`).
- Sub-hour intervals that divide an hour (`1m`, `3m`, `5m`, `15m`, `30m`) are SYNTHETIC: each real
  hour is cut into 60 minute candles along a deterministic price path open -> first extreme (minute
  20) -> second extreme (minute 40) -> close, where the first extreme is the low when the hour
  closed up, the high otherwise. Minute i opens at the path's value at i and closes at i+1, so the
  60 minutes aggregate back exactly to the hour's open/high/low/close. Base volume is split so
  that the minutes' volume-weighted mid price equals the hour's average price (quote / base), quote
  volume as volume x mid price, trades evenly; remainders go to the last minute, so sums match the
  hour exactly and each minute's average price is (up to rounding) its mid price, inside its range. Larger sub-hour intervals aggregate those minutes. This keeps the whole pipeline
  exercisable at its real cadence without inventing a market; nothing downstream should read
  minute-level structure into replayed data. Native `1m` files (data.binance.vision dumps,
  `<SYMBOL>-1m-YYYY-MM[-DD].csv|zip`) found in a data directory are served as they are instead.

The same path gives `partial`: a candle as it looked part of the way through its interval (the
open candle's updates on the stream, and the open candle REST includes).
"""

from __future__ import annotations

import dataclasses
import functools
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import overload

from cryptoflow.candles import INTERVAL_MS, Candle

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
SYNTHETIC_INTERVALS = ("1m", "3m", "5m", "15m", "30m")
_Q8 = Decimal("0.00000001")
_ZERO = Decimal(0)


def _q(value: Decimal) -> Decimal:
    return value.quantize(_Q8, rounding=ROUND_HALF_EVEN)


@overload
def _split(total: Decimal, weights: list[Decimal]) -> list[Decimal]: ...
@overload
def _split(total: Decimal | None, weights: list[Decimal]) -> list[Decimal] | list[None]: ...
def _split(total: Decimal | None, weights: list[Decimal]) -> list[Decimal] | list[None]:
    """`total` split in proportion to `weights`, rounded down to 8 places, remainder on the last part.

    Rounding down keeps every part >= 0 and the remainder >= its own share, so parts sum exactly.
    """
    if total is None:
        return [None] * len(weights)
    w_sum = sum(weights)
    if w_sum <= 0:
        weights = [Decimal(1)] * len(weights)
        w_sum = Decimal(len(weights))
    parts = [(total * w / w_sum).quantize(_Q8, rounding=ROUND_DOWN) for w in weights[:-1]]
    parts.append(total - sum(parts))
    return parts


def _path_points(c: Candle) -> list[tuple[Decimal, Decimal]]:
    """(fraction, price) checkpoints of the deterministic intra-candle path."""
    first, second = (c.low, c.high) if c.close >= c.open else (c.high, c.low)
    return [
        (_ZERO, c.open),
        (Decimal(1) / 3, first),
        (Decimal(2) / 3, second),
        (Decimal(1), c.close),
    ]


def _price_at(points, frac: Decimal) -> Decimal:
    for (f0, p0), (f1, p1) in zip(points, points[1:]):
        if frac <= f1:
            return _q(p0 + (p1 - p0) * (frac - f0) / (f1 - f0))
    return points[-1][1]


def _volume_weights(mids: list[Decimal], hour: Candle) -> list[Decimal]:
    """Volume weights whose mid-price average is the hour's average price (quote / base volume).

    Even weights would put the minutes' volume-weighted price at the path's mean, not the hour's
    real average price; quote volume then couldn't be both consistent with the hour's total and
    inside each minute's range. Extra weight goes evenly to the minutes beyond the hour's average
    price, just enough to move the weighted mean onto it. If the path never gets beyond it (an
    average price at the hour's very high or low), weights stay even and minutes' average prices
    are only approximately inside their ranges.
    """
    n = len(mids)
    even = [Decimal(1)] * n
    if hour.base_volume <= 0 or hour.quote_volume <= 0:
        return even
    target = hour.quote_volume / hour.base_volume
    mean = sum(mids, _ZERO) / n
    side = [i for i, m in enumerate(mids) if (m > target if target > mean else m < target)]
    if not side or target == mean:
        return even
    side_mean = sum((mids[i] for i in side), _ZERO) / len(side)
    extra = n * (target - mean) / (len(side) * (side_mean - target))
    members = set(side)
    return [Decimal(1) + (extra if i in members else 0) for i in range(n)]


@functools.lru_cache(maxsize=4096)
def synthetic_minutes(hour: Candle) -> tuple[Candle, ...]:
    """The 60 synthetic minute candles of one real hourly candle (see the module docstring)."""
    points = _path_points(hour)
    # Checkpoints fall on minutes 0, 20, 40, 60, so the hour's high and low are hit exactly.
    path = [_price_at(points, Decimal(i) / 60) for i in range(61)]
    mids = [(path[i] + path[i + 1]) / 2 for i in range(60)]
    volumes = _split(hour.base_volume, _volume_weights(mids, hour))
    quotes = _split(hour.quote_volume, [v * m for v, m in zip(volumes, mids)])
    tb = _split(hour.taker_buy_base_volume, volumes)
    tq = _split(hour.taker_buy_quote_volume, quotes)
    n = hour.trades
    out = []
    for i in range(60):
        t = hour.open_time + i * MINUTE_MS
        out.append(
            Candle(
                symbol=hour.symbol,
                interval="1m",
                open_time=t,
                close_time=t + MINUTE_MS - 1,
                open=path[i],
                high=max(path[i], path[i + 1]),
                low=min(path[i], path[i + 1]),
                close=path[i + 1],
                base_volume=volumes[i],
                quote_volume=quotes[i],
                taker_buy_base_volume=tb[i],
                taker_buy_quote_volume=tq[i],
                trades=None if n is None else n // 60 + (1 if i < n % 60 else 0),
                closed=True,
                source="replay:synthetic",
            )
        )
    return tuple(out)


def aggregate(candles: list[Candle], interval: str) -> Candle:
    """One candle of `interval` from consecutive smaller candles (first open, last close, sums)."""
    first, last = candles[0], candles[-1]

    def total(name):
        values = [getattr(c, name) for c in candles]
        return None if any(v is None for v in values) else sum(values)

    return Candle(
        symbol=first.symbol,
        interval=interval,
        open_time=first.open_time,
        close_time=first.open_time + INTERVAL_MS[interval] - 1,
        open=first.open,
        high=max(c.high for c in candles),
        low=min(c.low for c in candles),
        close=last.close,
        base_volume=total("base_volume"),
        quote_volume=total("quote_volume"),
        taker_buy_base_volume=total("taker_buy_base_volume"),
        taker_buy_quote_volume=total("taker_buy_quote_volume"),
        trades=total("trades"),
        closed=True,
        source=first.source,
    )


def partial(c: Candle, frac: float) -> Candle:
    """The candle as it looked `frac` (0..1) of the way through its interval: path so far, volumes pro rata."""
    f = Decimal(str(min(max(frac, 0.0), 1.0)))
    points = _path_points(c)
    price = _price_at(points, f)
    seen = [p for fr, p in points if fr <= f] + [price]

    def part(v):
        return None if v is None else (v * f).quantize(_Q8, rounding=ROUND_DOWN)

    return dataclasses.replace(
        c,
        close=price,
        high=max(seen),
        low=min(seen),
        base_volume=part(c.base_volume),
        quote_volume=part(c.quote_volume),
        taker_buy_base_volume=part(c.taker_buy_base_volume),
        taker_buy_quote_volume=part(c.taker_buy_quote_volume),
        trades=None if c.trades is None else int(c.trades * f),
        closed=False,
    )


__all__ = [
    "HOUR_MS",
    "MINUTE_MS",
    "SYNTHETIC_INTERVALS",
    "synthetic_minutes",
    "aggregate",
    "partial",
]
