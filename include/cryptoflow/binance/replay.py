"""A local Binance: the kline websocket and REST klines, served from real historical candles.

Binance is unreachable from CI and from most development machines, and its failures (dropped
connections, bans, server shutdowns) can't be produced on demand. This server speaks the parts of
the protocol cryptoflow uses, on one port, from files, with switches for every failure the clients
must survive.

What it serves
--------------
- Websocket `/stream?streams=<a>/<b>` (combined: each message wrapped as
  `{"stream": name, "data": payload}`) and `/ws/<a>/<b>` (raw payloads). Stream names are
  `<symbol lowercase>@kline_<interval>`. Live SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS work.
  While a candle is open it is pushed with `x=false` every `update_interval_ms` of replay time
  (Binance: 2 s); when it closes, one final update with `x=true`. A connection that joins mid-candle
  gets that candle's closing update, nothing older (as on Binance: history is REST's job).
- Server pings every `ping_interval_s` with a payload; a client that doesn't pong within
  `pong_timeout_s` is disconnected. More than `max_incoming_per_s` messages a second from a client
  closes its connection; connections older than `max_connection_age_s` are closed (Binance: 24 h);
  more than `max_connects` handshakes per `connect_window_s` are refused with HTTP 429.
- REST `GET /api/v3/klines` (symbol, interval, startTime, endTime, limit <= 1000; 12-column rows,
  times and trade counts as integers, prices and volumes as strings), `/api/v3/time`,
  `/api/v3/ping`. Every request costs weight (klines 2); `X-MBX-USED-WEIGHT-1M` reports the
  window's total; over `weight_budget` the answer is 429 with `Retry-After`, and a client that keeps
  going while refused is banned with 418 (growing bans), as Binance does.
- The currently open candle is included in REST answers with its partial values, as Binance does:
  clients must drop it (close_time >= `/api/v3/time`).

Which candles: real hourly history, and synthetic minutes
----------------------------------------------------------
The shared data (/work/shared/data/cryptodatadownload) is hourly, while the platform collects
`1m`. Decision: **both**, clearly told apart.
- `1h` streams and REST serve the real hourly candles as loaded by cryptoflow.importers (rows the
  importer quarantines are holes here, like exchange outages, which are kept as holes too).
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
- CryptoDataDownload files carry no taker-buy volumes: those fields are sent as "0.00000000" (the
  protocol has no "unknown"). First/last trade ids are synthetic (`f = open_time // 10`,
  `L = f + n - 1`, `-1` for no trades).

Time: speed and "shift to present"
----------------------------------
Replay time runs `speed` times faster than the wall clock. `shift_to_present=True` moves each
symbol's history by a whole number of hours so that its last candle closes exactly when the replay
reaches it, `play_hours` of history after the replay starts. Consequences, by design:
- order and spacing are kept, and the last candle is "now" when it is played;
- replay time never runs ahead of the wall clock (at speed s it starts (1 - 1/s) x play_hours behind
  and catches up at the end), so "closed" means the same on both clocks and nothing is served from
  the future; at speed 1 the replay is a faithful live feed (event times = wall time);
- symbols are aligned on their own last candle: all shared files but XRP end on 2021-08-31 23:00,
  so they keep their real relative timing; XRP's 2022 history plays alongside.
- REST serves the shifted history up to replay time (so a backfill can reach back a year).
`shift_to_present=False` keeps the original timestamps and starts at `start_ms` (tests use this for
deterministic candles). After the last candle the streams go quiet (pings continue).

Fault injection (`server.faults`, thread-safe, usable from tests while the server runs)
------------------------------------------------------------------------------------
`drop_connections()` (TCP abort, no close frame), `stall(seconds)` (nothing sent, no pings),
`server_shutdown(grace_s)` (serverShutdown event, close after the grace), `duplicate_closings(n)`,
`reorder_closings(n)` (a closing update held back and sent after its stream's next one), `malformed(n)`
(broken frames of several kinds), `rest_fail(status, count, retry_after)` (forced 429/418/5xx),
`rest_delay(seconds, count)` (answers held back: client timeouts).

Run it with `serve(settings)` (blocks; `cryptoflow replay-server`), or `ReplayServer(...).start()`
in a background thread (tests).
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import functools
import json
import logging
import math
import os
import re
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Iterable
from urllib.parse import parse_qs, unquote

from cryptoflow.candles import INTERVAL_MS, Candle

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
SYNTHETIC_INTERVALS = ("1m", "3m", "5m", "15m", "30m")
_Q8 = Decimal("0.00000001")
_ZERO = Decimal(0)
_STREAM = re.compile(r"^(?P<symbol>[a-z0-9]+)@kline_(?P<interval>[0-9]+[smhdwM])$")


# ---------------------------------------------------------------------------------------------
# Candles: loading, synthetic minutes, partial candles, wire formats

def history_files(paths: Iterable[str | Path]) -> list[tuple[Path, str, str]]:
    """(file, SYMBOL, "cdd" | "binance_vision") for every candle file under `paths`.

    Directories are searched (not recursively) for `Binance_<SYMBOL>_<interval>.csv` (CDD) and
    `<SYMBOL>-<interval>-*.csv|zip` (dumps).
    """
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.iterdir()) if p.is_dir() else [p])
    out = []
    for f in files:
        name = f.name
        if re.fullmatch(r"Binance_[A-Z0-9]+_[0-9a-z]+\.csv", name, re.I):
            out.append((f, name.split("_")[1].upper(), "cdd"))
        elif re.fullmatch(r"[A-Z0-9]+-[0-9]+[smhdw]-\d{4}-\d\d(-\d\d)?\.(csv|zip)", name):
            out.append((f, name.split("-")[0].upper(), "binance_vision"))
    return out


def symbols_with_history(paths: Iterable[str | Path]) -> set[str]:
    """The symbols a replay of `paths` can serve (from file names; nothing is parsed)."""
    return {symbol for _, symbol, _ in history_files(paths)}


def load_history(paths: Iterable[str | Path], symbols: Iterable[str] | None = None) -> dict[tuple[str, str], list[Candle]]:
    """{(symbol, interval): candles oldest first} from CDD CSVs and data.binance.vision dumps.

    Rows the importers quarantine are left out: the replay must never serve a candle the platform
    itself would reject.
    """
    from cryptoflow.importers.binance_vision import import_binance_vision
    from cryptoflow.importers.cryptodatadownload import import_cdd_csv

    importers = {"cdd": import_cdd_csv, "binance_vision": import_binance_vision}
    wanted = {s.upper() for s in symbols} if symbols else None
    out: dict[tuple[str, str], dict[int, Candle]] = {}
    for f, symbol, kind in history_files(paths):
        if wanted is not None and symbol not in wanted:
            continue
        result = importers[kind](f)
        for c in result.candles:
            out.setdefault((c.symbol, c.interval), {})[c.open_time] = c
        if result.rejections:
            log.info("%s: %d rows quarantined by the importer are holes in the replay", f.name, len(result.rejections))
    return {key: [by_time[t] for t in sorted(by_time)] for key, by_time in out.items()}


def _q(value: Decimal) -> Decimal:
    return value.quantize(_Q8, rounding=ROUND_HALF_EVEN)


def _split(total: Decimal | None, weights: list[Decimal]) -> list[Decimal | None]:
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
    return [(_ZERO, c.open), (Decimal(1) / 3, first), (Decimal(2) / 3, second), (Decimal(1), c.close)]


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
    mean = sum(mids) / n
    side = [i for i, m in enumerate(mids) if (m > target if target > mean else m < target)]
    if not side or target == mean:
        return even
    side_mean = sum(mids[i] for i in side) / len(side)
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
        out.append(Candle(
            symbol=hour.symbol, interval="1m", open_time=t, close_time=t + MINUTE_MS - 1,
            open=path[i], high=max(path[i], path[i + 1]), low=min(path[i], path[i + 1]), close=path[i + 1],
            base_volume=volumes[i], quote_volume=quotes[i], taker_buy_base_volume=tb[i], taker_buy_quote_volume=tq[i],
            trades=None if n is None else n // 60 + (1 if i < n % 60 else 0),
            closed=True, source="replay:synthetic",
        ))
    return tuple(out)


def aggregate(candles: list[Candle], interval: str) -> Candle:
    """One candle of `interval` from consecutive smaller candles (first open, last close, sums)."""
    first, last = candles[0], candles[-1]

    def total(name):
        values = [getattr(c, name) for c in candles]
        return None if any(v is None for v in values) else sum(values)

    return Candle(
        symbol=first.symbol, interval=interval, open_time=first.open_time,
        close_time=first.open_time + INTERVAL_MS[interval] - 1,
        open=first.open, high=max(c.high for c in candles), low=min(c.low for c in candles), close=last.close,
        base_volume=total("base_volume"), quote_volume=total("quote_volume"),
        taker_buy_base_volume=total("taker_buy_base_volume"), taker_buy_quote_volume=total("taker_buy_quote_volume"),
        trades=total("trades"), closed=True, source=first.source,
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
        c, close=price, high=max(seen), low=min(seen), base_volume=part(c.base_volume),
        quote_volume=part(c.quote_volume), taker_buy_base_volume=part(c.taker_buy_base_volume),
        taker_buy_quote_volume=part(c.taker_buy_quote_volume),
        trades=None if c.trades is None else int(c.trades * f), closed=False)


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
    return {"e": "kline", "E": event_ms, "s": c.symbol, "k": {
        "t": c.open_time, "T": c.close_time, "s": c.symbol, "i": c.interval, "f": f, "L": last,
        "o": _fmt(c.open), "c": _fmt(c.close), "h": _fmt(c.high), "l": _fmt(c.low),
        "v": _fmt(c.base_volume), "n": c.trades or 0, "x": c.closed, "q": _fmt(c.quote_volume),
        "V": _fmt(c.taker_buy_base_volume), "Q": _fmt(c.taker_buy_quote_volume), "B": "0"}}


def rest_row(c: Candle) -> list:
    """The 12-column REST klines row for `c`."""
    return [c.open_time, _fmt(c.open), _fmt(c.high), _fmt(c.low), _fmt(c.close), _fmt(c.base_volume),
            c.close_time, _fmt(c.quote_volume), c.trades or 0, _fmt(c.taker_buy_base_volume),
            _fmt(c.taker_buy_quote_volume), "0"]


# ---------------------------------------------------------------------------------------------
# The replay timeline

class Timeline:
    """Historical candles moved onto a replay clock (see "Time" in the module docstring)."""

    def __init__(self, history: dict[tuple[str, str], list[Candle]], *, speed: float = 60.0,
                 shift_to_present: bool = True, play_hours: float = 24.0, start_ms: int | None = None,
                 wall_start: float | None = None, shift: dict[str, int] | None = None):
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = float(speed)
        self.history = history
        self._opens = {key: [c.open_time for c in cs] for key, cs in history.items()}
        self.symbols = sorted({s for s, _ in history})
        if not self.symbols:
            raise ValueError("no historical candles to replay")
        wall_ms = int((time.time() if wall_start is None else wall_start) * 1000)
        span = int(play_hours * HOUR_MS)
        ends = {s: max(_ceil(cs[-1].open_time + INTERVAL_MS[i], HOUR_MS) for (sym, i), cs in history.items() if sym == s)
                for s in self.symbols}
        if shift_to_present:
            end = (wall_ms + int(span / self.speed)) // HOUR_MS * HOUR_MS
            # `shift`: a recorded timeline (anchored_timeline), so that a restart replays the same
            # candles at the same times instead of moving the history again.
            self.shift = {s: shift[s] for s in self.symbols} if shift is not None else {
                s: end - ends[s] for s in self.symbols}
            # At 1x the feed must look live: replay time IS the wall clock (a clock floored to the
            # hour would lag by up to an hour, and the 10-minute ingest would find every window empty).
            start = wall_ms if self.speed == 1.0 else end - span
        else:
            self.shift = {s: 0 for s in self.symbols}
            start = start_ms if start_ms is not None else max(ends.values()) - span
        self.start_ms = start
        self.end_ms = max(ends[s] + self.shift[s] for s in self.symbols)
        self._anchor_wall = wall_ms / 1000.0
        self._anchor_ms = start

    def now_ms(self) -> int:
        """Replay time (ms since the epoch on the shifted timeline)."""
        return self._anchor_ms + int((time.time() - self._anchor_wall) * 1000 * self.speed)

    def wall_time(self, replay_ms: int) -> float:
        """The wall-clock time (epoch s) at which the replay clock shows `replay_ms`."""
        return self._anchor_wall + (replay_ms - self._anchor_ms) / 1000.0 / self.speed

    def wall_seconds(self, replay_ms: int) -> float:
        """Wall-clock seconds that `replay_ms` of replay time take."""
        return replay_ms / 1000.0 / self.speed

    def serves(self, symbol: str, interval: str) -> str | None:
        """'native', 'synthetic' or None (no such candles here)."""
        if (symbol, interval) in self.history:
            return "native"
        if interval in SYNTHETIC_INTERVALS and (symbol, "1h") in self.history:
            return "synthetic"
        return None

    def candles(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Full candles with open_time in [start_ms, end_ms] (replay time), oldest first."""
        kind = self.serves(symbol, interval)
        if kind is None or end_ms < start_ms:
            return []
        shift = self.shift[symbol]
        lo, hi = start_ms - shift, end_ms - shift          # original timeline
        if kind == "native":
            key = (symbol, interval)
            src = self.history[key]
            opens = self._opens[key]
            picked = src[bisect.bisect_left(opens, lo):bisect.bisect_right(opens, hi)]
        else:
            key = (symbol, "1h")
            hours, opens = self.history[key], self._opens[key]
            picked = []
            step = INTERVAL_MS[interval] // MINUTE_MS
            for hour in hours[bisect.bisect_left(opens, lo - HOUR_MS + 1):bisect.bisect_right(opens, hi)]:
                minutes = synthetic_minutes(hour)
                groups = [minutes[i:i + step] for i in range(0, 60, step)] if step > 1 else [(m,) for m in minutes]
                for g in groups:
                    if lo <= g[0].open_time <= hi:
                        picked.append(g[0] if step == 1 else aggregate(list(g), interval))
        if not shift:
            return list(picked)
        return [dataclasses.replace(c, open_time=c.open_time + shift, close_time=c.close_time + shift) for c in picked]

    def candle_at(self, symbol: str, interval: str, t_ms: int) -> Candle | None:
        """The candle whose interval contains t_ms, or None (no data there)."""
        iv = INTERVAL_MS.get(interval)
        if iv is None:
            return None
        found = self.candles(symbol, interval, t_ms - t_ms % iv, t_ms - t_ms % iv)
        return found[0] if found else None


def _ceil(value: int, step: int) -> int:
    return -(-value // step) * step


# ---------------------------------------------------------------------------------------------
# Faults and statistics

class Faults:
    """Switches the tests flip while the server runs; every method is thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self.stall_until = 0.0
        self._counts = {"duplicate": 0, "reorder": 0, "malformed": 0}
        self._rest: deque[tuple[int, float | None]] = deque()
        self._delays: deque[float] = deque()
        self._server: ReplayServer | None = None

    def _take(self, name: str) -> bool:
        with self._lock:
            if self._counts[name] > 0:
                self._counts[name] -= 1
                return True
            return False

    def duplicate_closings(self, n: int = 1) -> None:
        """The next n closing (x=true) updates are each sent twice."""
        with self._lock:
            self._counts["duplicate"] += n

    def reorder_closings(self, n: int = 1) -> None:
        """The next n closing updates are held back and sent after the next closing update of their stream."""
        with self._lock:
            self._counts["reorder"] += n

    def malformed(self, n: int = 1) -> None:
        """Send n malformed frames (truncated JSON, non-JSON text, wrong shapes, binary)."""
        with self._lock:
            self._counts["malformed"] += n

    def stall(self, seconds: float) -> None:
        """Send nothing at all (no data, no pings) for `seconds`; connections stay open."""
        with self._lock:
            self.stall_until = time.time() + seconds

    def stalled(self) -> bool:
        return time.time() < self.stall_until

    def rest_fail(self, status: int, count: int = 1, retry_after: float | None = None) -> None:
        """The next `count` REST requests answer `status` (429, 418, 500, 502, 503, 504...)."""
        with self._lock:
            self._rest.extend([(status, retry_after)] * count)

    def take_rest(self) -> tuple[int, float | None] | None:
        with self._lock:
            return self._rest.popleft() if self._rest else None

    def rest_delay(self, seconds: float, count: int = 1) -> None:
        """The next `count` REST requests are answered only after `seconds` (a client's timeout)."""
        with self._lock:
            self._delays.extend([seconds] * count)

    def take_delay(self) -> float:
        with self._lock:
            return self._delays.popleft() if self._delays else 0.0

    def drop_connections(self) -> int:
        """Abort every websocket connection now (TCP reset, no close frame). Returns how many."""
        return self._server._call(self._server._drop_all) if self._server else 0

    def server_shutdown(self, grace_s: float = 1.0) -> int:
        """Send serverShutdown on every connection, close them `grace_s` later. Returns how many."""
        return self._server._call(lambda: self._server._shutdown_all(grace_s)) if self._server else 0


@dataclass
class Stats:
    connections: int = 0            # accepted websocket connections
    refused_connections: int = 0    # handshakes refused over the connection-attempt limit
    active: int = 0
    messages: int = 0               # data frames sent (kline updates, events, malformed)
    closing_updates: int = 0        # x=true updates sent (including injected duplicates)
    pings: int = 0
    pongs: int = 0                  # pongs received that matched a ping's payload
    pong_timeouts: int = 0
    incoming: int = 0               # data frames received from clients
    rest_requests: int = 0
    rest_status: dict = field(default_factory=dict)
    sent_log: dict = field(default_factory=dict)  # connection id -> [text] when record_sent


# ---------------------------------------------------------------------------------------------
# The server

@dataclass
class _StreamState:
    name: str
    symbol: str
    interval: str
    interval_ms: int
    next_open: int          # open time of the next candle whose closing update is due
    next_update: int        # replay time of the next x=false update


@dataclass
class _Conn:
    id: int
    ws: object
    combined: bool
    streams: dict
    opened: float
    held: dict = field(default_factory=dict)   # stream -> closing updates held back (reorder fault)
    shutdown_at: float | None = None
    shutdown_sent: bool = False
    closing: bool = False
    incoming: deque = field(default_factory=deque)


class ReplayServer:
    """The replay server; `start()` runs it in a background thread, `run_forever()` in this one."""

    def __init__(self, history: dict[tuple[str, str], list[Candle]] | Timeline, *, host: str = "127.0.0.1",
                 port: int = 0, speed: float = 60.0, shift_to_present: bool = True, play_hours: float = 24.0,
                 start_ms: int | None = None, symbols: Iterable[str] | None = None,
                 update_interval_ms: int = 2000, ping_interval_s: float = 20.0, pong_timeout_s: float = 60.0,
                 max_connection_age_s: float = 24 * 3600, max_incoming_per_s: int = 5,
                 max_connects: int = 300, connect_window_s: float = 300.0,
                 weight_budget: int = 6000, weight_window_s: float = 60.0, klines_weight: int = 2,
                 ban_after_refusals: int = 5, ban_s: float = 120.0, record_sent: bool = False,
                 tick_s: float | None = None):
        self.timeline = history if isinstance(history, Timeline) else Timeline(
            history, speed=speed, shift_to_present=shift_to_present, play_hours=play_hours, start_ms=start_ms)
        self.host, self.port = host, port
        self.known_symbols = set(self.timeline.symbols) | {s.upper() for s in (symbols or ())}
        self.update_interval_ms = update_interval_ms
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s
        self.max_connection_age_s = max_connection_age_s
        self.max_incoming_per_s = max_incoming_per_s
        self.max_connects, self.connect_window_s = max_connects, connect_window_s
        self.weight_budget, self.weight_window_s, self.klines_weight = weight_budget, weight_window_s, klines_weight
        self.ban_after_refusals, self.ban_s = ban_after_refusals, ban_s
        self.record_sent = record_sent
        # Fast enough to send each update on time, slow enough not to spin: a quarter of the wall
        # time between updates, within [5 ms, 250 ms].
        self.tick_s = tick_s or min(0.25, max(0.005, self.timeline.wall_seconds(update_interval_ms) / 4))
        self.faults = Faults()
        self.faults._server = self
        self.stats = Stats()
        self._conns: dict[int, _Conn] = {}
        self._next_id = 1
        self._connects: deque[float] = deque()
        self._weight_lock = threading.Lock()
        self._weight_window = -1
        self._weight_used = 0
        self._refusals = 0
        self._bans = 0
        self._banned_until = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> "ReplayServer":
        self._thread = threading.Thread(target=self.run_forever, name="binance-replay", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("replay server did not start")
        if self._error:
            raise RuntimeError(f"replay server failed: {self._error}") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread:
            self._thread.join(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def run_forever(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start(); logged for serve()
            self._error = exc
            self._ready.set()
            if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                log.exception("replay server crashed")
            raise

    async def _main(self) -> None:
        from websockets.asyncio.server import serve as ws_serve

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with ws_serve(self._handle, self.host, self.port, process_request=self._process_request,
                            ping_interval=None, ping_timeout=None, compression=None,
                            max_size=2 ** 16, close_timeout=2) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()
            for c in list(self._conns.values()):
                c.closing = True

    def _call(self, fn):
        """Run `fn` on the server's loop from another thread and return its result."""
        async def wrapper():
            return fn()
        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(10)

    def _drop_all(self) -> int:
        for c in self._conns.values():
            c.closing = True
            c.ws.transport.abort()
        return len(self._conns)

    def _shutdown_all(self, grace_s: float) -> int:
        for c in self._conns.values():
            c.shutdown_at = time.time() + grace_s
        return len(self._conns)

    # -- HTTP: routing, REST --------------------------------------------------------------------

    def _process_request(self, conn, request):
        path, _, query = request.path.partition("?")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            delay = self.faults.take_delay()
            if delay > 0:
                return self._delayed_rest(conn, path, parse_qs(query), delay)
            return self._rest(conn, path, parse_qs(query))
        now = time.time()
        while self._connects and self._connects[0] < now - self.connect_window_s:
            self._connects.popleft()
        if len(self._connects) >= self.max_connects:
            self.stats.refused_connections += 1
            return self._json(conn, 429, {"code": -1003, "msg": "Too many connection attempts."},
                              {"Retry-After": str(math.ceil(self._connects[0] + self.connect_window_s - now))})
        self._connects.append(now)
        if path == "/stream":
            names = (parse_qs(query).get("streams") or [""])[0]
            conn.cf_route = (True, [n for n in unquote(names).split("/") if n])
        elif path == "/ws" or path.startswith("/ws/"):
            conn.cf_route = (False, [n for n in path[4:].split("/") if n])
        else:
            return self._json(conn, 404, {"code": -1, "msg": "Unknown path."})
        return None

    async def _delayed_rest(self, conn, path: str, params: dict, delay: float):
        await asyncio.sleep(delay)  # on the loop: other connections are served meanwhile
        return self._rest(conn, path, params)

    def _json(self, conn, status: int, body, headers: dict | None = None):
        resp = conn.respond(status, json.dumps(body, separators=(",", ":")))
        del resp.headers["Content-Type"]
        resp.headers["Content-Type"] = "application/json;charset=UTF-8"
        # respond() already says "Connection: close": websockets serves one request per TCP
        # connection, and that header keeps HTTP clients from reusing a socket being closed.
        for k, v in (headers or {}).items():
            resp.headers[k] = v
        self.stats.rest_status[status] = self.stats.rest_status.get(status, 0) + 1
        return resp

    def _charge(self, weight: int) -> tuple[int | None, dict]:
        """Weight accounting; (refusal status or None, headers)."""
        now = time.time()
        with self._weight_lock:
            window = int(now // self.weight_window_s)
            if window != self._weight_window:
                self._weight_window, self._weight_used, self._refusals = window, 0, 0
            window_end = (window + 1) * self.weight_window_s
            if now < self._banned_until:
                return 418, {"Retry-After": str(math.ceil(self._banned_until - now)),
                             "X-MBX-USED-WEIGHT-1M": str(self._weight_used)}
            if self._weight_used + weight > self.weight_budget:
                self._refusals += 1
                if self._refusals > self.ban_after_refusals:
                    # Binance: "repeatedly violating rate limits ... will result in an automated IP
                    # ban (HTTP 418)", scaling from 2 minutes up to 3 days for repeat offenders.
                    ban = self.ban_s * 2 ** self._bans
                    self._bans += 1
                    self._banned_until = now + ban
                    return 418, {"Retry-After": str(math.ceil(ban)), "X-MBX-USED-WEIGHT-1M": str(self._weight_used)}
                return 429, {"Retry-After": str(max(1, math.ceil(window_end - now))),
                             "X-MBX-USED-WEIGHT-1M": str(self._weight_used)}
            self._weight_used += weight
            return None, {"X-MBX-USED-WEIGHT-1M": str(self._weight_used), "X-MBX-USED-WEIGHT": str(self._weight_used)}

    def _rest(self, conn, path: str, params: dict):
        self.stats.rest_requests += 1
        weight = self.klines_weight if path == "/api/v3/klines" else 1
        forced = self.faults.take_rest()
        if forced is not None:
            status, retry_after = forced
            headers = {"X-MBX-USED-WEIGHT-1M": str(self._weight_used)}
            if retry_after is not None:
                headers["Retry-After"] = str(math.ceil(retry_after))
            msg = {429: "Too many requests.", 418: "IP banned (injected)."}.get(status, "Injected server error.")
            return self._json(conn, status, {"code": -1003 if status in (418, 429) else -1000, "msg": msg}, headers)
        refused, headers = self._charge(weight)
        if refused:
            return self._json(conn, refused, {"code": -1003, "msg": "Too much request weight used; "
                                              "current limit is %d request weight per window." % self.weight_budget},
                              headers)
        now_ms = self.timeline.now_ms()
        if path == "/api/v3/ping":
            return self._json(conn, 200, {}, headers)
        if path == "/api/v3/time":
            return self._json(conn, 200, {"serverTime": now_ms}, headers)
        if path != "/api/v3/klines":
            return self._json(conn, 404, {"code": -1, "msg": f"Unknown endpoint {path}."}, headers)

        def one(name):
            values = params.get(name)
            return values[-1] if values else None

        symbol, interval = (one("symbol") or "").upper(), one("interval")
        if not symbol:
            return self._json(conn, 400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent."}, headers)
        if symbol not in self.known_symbols:
            return self._json(conn, 400, {"code": -1121, "msg": "Invalid symbol."}, headers)
        if interval not in INTERVAL_MS:
            return self._json(conn, 400, {"code": -1120, "msg": "Invalid interval."}, headers)
        try:
            limit = int(one("limit") or 500)
            start = int(one("startTime")) if one("startTime") is not None else None
            end = int(one("endTime")) if one("endTime") is not None else None
        except ValueError:
            return self._json(conn, 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}, headers)
        if not 1 <= limit <= 1000:
            return self._json(conn, 400, {"code": -1130, "msg": "Invalid data sent for a parameter."}, headers)
        iv = INTERVAL_MS[interval]
        upto = now_ms if end is None else min(end, now_ms)
        if start is not None:
            # Candles are found by open time; a startTime inside a candle starts at the next one.
            rows = self._window(symbol, interval, _ceil(start, iv), upto, limit, oldest=True)
        else:
            rows = self._window(symbol, interval, None, upto, limit, oldest=False)
        out = []
        for c in rows:
            if c.close_time >= now_ms:  # still open on the replay clock: partial, as Binance serves it
                c = partial(c, (now_ms - c.open_time) / iv)
            out.append(rest_row(c))
        return self._json(conn, 200, out, headers)

    def _window(self, symbol, interval, start, end, limit, oldest):
        iv = INTERVAL_MS[interval]
        if oldest:
            # Search in growing spans so a request for 1000 minutes doesn't derive a year of minutes.
            span = iv * limit
            found: list[Candle] = []
            lo = start
            while len(found) < limit and lo <= end:
                hi = min(end, lo + span - 1)
                found.extend(self.timeline.candles(symbol, interval, lo, hi))
                lo = hi + 1
                span *= 4
            return found[:limit]
        span = iv * limit
        found = []
        hi = end
        floor = self.timeline.start_ms - 10 * 366 * 86_400_000
        while len(found) < limit and hi > floor:
            lo = hi - span + 1
            found = self.timeline.candles(symbol, interval, lo, hi) + found
            hi = lo - 1
            span *= 4
        return found[-limit:]

    # -- websocket ------------------------------------------------------------------------------

    def _stream_state(self, name: str, now_ms: int) -> _StreamState | None:
        m = _STREAM.match(name)
        if not m or m["interval"] not in INTERVAL_MS:
            return None  # other stream kinds are accepted and stay silent, as unknown symbols do
        iv = INTERVAL_MS[m["interval"]]
        return _StreamState(name, m["symbol"].upper(), m["interval"], iv, now_ms - now_ms % iv, now_ms)

    async def _handle(self, ws) -> None:
        combined, names = getattr(ws, "cf_route", (True, []))
        now_ms = self.timeline.now_ms()
        conn = _Conn(self._next_id, ws, combined, {}, time.time())
        self._next_id += 1
        for name in names:
            self._subscribe(conn, name, now_ms)
        self._conns[conn.id] = conn
        self.stats.connections += 1
        self.stats.active += 1
        if self.record_sent:
            self.stats.sent_log[conn.id] = []
        tasks = [asyncio.create_task(self._pinger(conn)), asyncio.create_task(self._reader(conn))]
        try:
            await self._sender(conn)
        except Exception as exc:  # a closed socket ends this connection, never the server
            log.debug("connection %d ended: %r", conn.id, exc)
        finally:
            for t in tasks:
                t.cancel()
            self._conns.pop(conn.id, None)
            self.stats.active -= 1
            try:
                await ws.close()
            except Exception:
                pass

    def _subscribe(self, conn: _Conn, name: str, now_ms: int) -> None:
        name = name.lower()  # Binance stream names are lowercase; accept any case
        st = self._stream_state(name, now_ms)
        conn.streams[name] = st
        if st is not None and self.timeline.serves(st.symbol, st.interval) is None:
            log.warning("no %s candles for %s: stream %s stays silent", st.interval, st.symbol, name)

    async def _send(self, conn: _Conn, text: str | bytes) -> None:
        await conn.ws.send(text)
        self.stats.messages += 1
        if self.record_sent and isinstance(text, str):
            self.stats.sent_log[conn.id].append(text)

    def _wrap(self, conn: _Conn, stream: str, payload: dict) -> str:
        body = {"stream": stream, "data": payload} if conn.combined else payload
        return json.dumps(body, separators=(",", ":"))

    async def _send_closing(self, conn: _Conn, st: _StreamState, c: Candle, now_ms: int) -> None:
        text = self._wrap(conn, st.name, kline_event(c, max(now_ms, c.close_time + 1)))
        if self.faults._take("reorder"):
            # Held until the same stream's next closing: that symbol then sees t+1 before t.
            conn.held.setdefault(st.name, []).append(text)
            return
        await self._send(conn, text)
        self.stats.closing_updates += 1
        for held in conn.held.pop(st.name, []):
            await self._send(conn, held)
            self.stats.closing_updates += 1
        if self.faults._take("duplicate"):
            await self._send(conn, text)
            self.stats.closing_updates += 1

    async def _send_malformed(self, conn: _Conn, kind: int) -> None:
        name = next(iter(conn.streams), "btcusdt@kline_1m")
        good = self._wrap(conn, name, {"e": "kline", "E": self.timeline.now_ms(), "s": "BTCUSDT", "k": {}})
        frames: list[str | bytes] = [
            good[: len(good) // 2],                                   # truncated JSON
            "this is not json",                                       # not JSON at all
            json.dumps({"stream": name, "data": {"e": "kline", "k": {"t": "soon", "x": "yes"}}}),  # wrong types
            b"\x00\x01binary\xff",                                     # a binary frame
            json.dumps([1, 2, 3]),                                    # JSON of the wrong shape
        ]
        await self._send(conn, frames[kind % len(frames)])

    async def _sender(self, conn: _Conn) -> None:
        malformed_kind = 0
        while not conn.closing:
            await asyncio.sleep(self.tick_s)
            wall = time.time()
            if self.faults.stalled():
                continue
            if wall - conn.opened > self.max_connection_age_s:
                await conn.ws.close(1000, "connection age limit")
                return
            if conn.shutdown_at is not None:
                if not conn.shutdown_sent:
                    conn.shutdown_sent = True
                    await self._send(conn, json.dumps({"event": {"e": "serverShutdown", "E": self.timeline.now_ms()}}))
                if wall >= conn.shutdown_at:
                    await conn.ws.close(1001, "server shutdown")
                    return
            while self.faults._take("malformed"):
                await self._send_malformed(conn, malformed_kind)
                malformed_kind += 1
            now_ms = self.timeline.now_ms()
            for st in list(conn.streams.values()):
                if st is None:
                    continue
                for c in self.timeline.candles(st.symbol, st.interval, st.next_open, now_ms - st.interval_ms):
                    await self._send_closing(conn, st, c, now_ms)
                    st.next_open = c.open_time + st.interval_ms
                if now_ms >= st.next_update:
                    st.next_update = now_ms - now_ms % self.update_interval_ms + self.update_interval_ms
                    cur = self.timeline.candle_at(st.symbol, st.interval, now_ms)
                    if cur is not None:
                        # An update for a candle whose closing went out already can't happen: cur
                        # contains now_ms, closings cover candles ending before now_ms.
                        p = partial(cur, (now_ms - cur.open_time) / st.interval_ms)
                        await self._send(conn, self._wrap(conn, st.name, kline_event(p, now_ms)))

    async def _pinger(self, conn: _Conn) -> None:
        try:
            while not conn.closing:
                await asyncio.sleep(self.ping_interval_s)
                if self.faults.stalled():
                    continue
                payload = str(self.timeline.now_ms()).encode()
                waiter = await conn.ws.ping(payload)
                self.stats.pings += 1
                try:
                    await asyncio.wait_for(waiter, self.pong_timeout_s)
                    self.stats.pongs += 1
                except asyncio.TimeoutError:
                    self.stats.pong_timeouts += 1
                    await conn.ws.close(1008, "pong timeout")
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            return

    async def _reader(self, conn: _Conn) -> None:
        try:
            async for message in conn.ws:
                self.stats.incoming += 1
                now = time.time()
                conn.incoming.append(now)
                while conn.incoming and conn.incoming[0] < now - 1.0:
                    conn.incoming.popleft()
                if len(conn.incoming) > self.max_incoming_per_s:
                    await conn.ws.close(1008, "too many messages")
                    return
                await self._command(conn, message)
        except asyncio.CancelledError:
            raise
        except Exception:
            return

    async def _command(self, conn: _Conn, message) -> None:
        try:
            req = json.loads(message)
            method, rid = req.get("method"), req.get("id")
        except (ValueError, AttributeError):
            await conn.ws.send(json.dumps({"error": {"code": 3, "msg": "Invalid JSON"}}))
            return
        params = req.get("params") or []
        now_ms = self.timeline.now_ms()
        if method == "SUBSCRIBE":
            for name in params:
                if name.lower() not in conn.streams:
                    self._subscribe(conn, name, now_ms)
            result = None
        elif method == "UNSUBSCRIBE":
            for name in params:
                conn.streams.pop(name.lower(), None)
            result = None
        elif method == "LIST_SUBSCRIPTIONS":
            result = list(conn.streams)
        else:
            await conn.ws.send(json.dumps({"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": rid}))
            return
        await conn.ws.send(json.dumps({"result": result, "id": rid}))


# ---------------------------------------------------------------------------------------------
# Entry point

def default_data_dirs(settings) -> list[Path]:
    """Where the history comes from: the settings' replay data (CRYPTOFLOW_REPLAY_DATA), else the
    cryptodatadownload/ of the shared data (CRYPTOFLOW_SHARED_DATA)."""
    if settings.replay_data:
        return list(settings.replay_data)
    return [settings.shared_data / "cryptodatadownload"]


def anchored_timeline(history: dict[tuple[str, str], list[Candle]], anchor_file: Path, *, play_hours: float,
                      wall_start: float | None = None) -> Timeline:
    """A real-time (1x), shifted-to-present Timeline whose shift survives restarts.

    The first start records the shift per symbol in `anchor_file`; later starts reuse it while the
    history still reaches past now. So a demo stopped and started again replays the same candles at
    the same times: what the warehouse stored agrees with what the replay serves, and the downtime
    is healed from the same timeline. (A new shift would move the history by hours or days, and
    every stored minute would come back as a late_update_conflict.) Once the recorded history is
    exhausted, a new timeline is started and recorded, with a warning.
    """
    anchor_file = Path(anchor_file)
    symbols = sorted({s for s, _ in history})
    try:
        recorded = json.loads(anchor_file.read_text())["shift"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if isinstance(recorded, dict) and all(isinstance(recorded.get(s), int) for s in symbols):
        tl = Timeline(history, speed=1.0, shift_to_present=True, play_hours=play_hours, wall_start=wall_start,
                      shift=recorded)
        if tl.end_ms > tl.start_ms:
            log.info("replay: the timeline recorded in %s (history until %s)", anchor_file, _iso(tl.end_ms))
            return tl
        log.warning("replay: the timeline recorded in %s ran out of history at %s: starting a new one (the "
                    "candles stored before now will not line up with it)", anchor_file, _iso(tl.end_ms))
    tl = Timeline(history, speed=1.0, shift_to_present=True, play_hours=play_hours, wall_start=wall_start)
    anchor_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = anchor_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"shift": tl.shift, "recorded_at": _iso(int(tl.start_ms))}, indent=1) + "\n")
    os.replace(tmp, anchor_file)
    return tl


def serve(settings, *, data_dirs: Iterable[str | Path] | None = None, speed: float = 60.0,
          shift_to_present: bool = True, play_hours: float = 24.0, port: int | None = None,
          host: str | None = None, anchor_file: Path | None = None, **server_options) -> None:
    """Run the replay server for `settings` until SIGINT/SIGTERM (the CLI's replay-server command).

    `anchor_file` (real time, shifted to present only): keep the timeline across restarts
    (anchored_timeline)."""
    dirs = list(data_dirs) if data_dirs else default_data_dirs(settings)
    history = load_history(dirs, settings.symbols)
    if not history:
        raise SystemExit(f"no candle files for {', '.join(settings.symbols)} under {', '.join(map(str, dirs))}")
    if anchor_file is not None and (speed != 1.0 or not shift_to_present):
        raise SystemExit("--anchor-file keeps a real-time (--speed 1), shifted-to-present timeline only")
    source = anchored_timeline(history, anchor_file, play_hours=play_hours) if anchor_file is not None else history
    server = ReplayServer(source, host=host or settings.bind_host, port=port or settings.replay_port,
                          speed=speed, shift_to_present=shift_to_present, play_hours=play_hours,
                          symbols=settings.symbols, **server_options)
    missing = sorted(set(settings.symbols) - set(server.timeline.symbols))
    tl = server.timeline
    log.warning("replay: %s on %s and %s; speed %gx; replay time %s .. %s%s",
                ", ".join(tl.symbols), server.ws_url if port else f"ws://{server.host}:{server.port}",
                server.rest_url, tl.speed, _iso(tl.start_ms), _iso(tl.end_ms),
                f"; no history for {', '.join(missing)} (their streams stay silent)" if missing else "")

    def stop(signum, frame):
        server.stop(timeout=0)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        while server._thread.is_alive():
            server._thread.join(0.5)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


__all__ = ["ReplayServer", "Timeline", "anchored_timeline", "Faults", "Stats", "load_history", "synthetic_minutes", "aggregate",
           "partial", "kline_event", "rest_row", "serve", "default_data_dirs", "SYNTHETIC_INTERVALS"]
