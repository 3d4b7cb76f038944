"""The replay server's REST side: klines, time, ping and exchangeInfo, within Binance's weight rules.

- REST `GET /api/v3/klines` (symbol, interval, startTime, endTime, limit <= 1000; 12-column rows,
  times and trade counts as integers, prices and volumes as strings), `/api/v3/time`,
  `/api/v3/ping`. Every request costs weight (klines 2); `X-MBX-USED-WEIGHT-1M` reports the
  window's total; over `weight_budget` the answer is 429 with `Retry-After`, and a client that keeps
  going while refused is banned with 418 (growing bans), as Binance does.
- The currently open candle is included in REST answers with its partial values, as Binance does:
  clients must drop it (close_time >= `/api/v3/time`).
- `GET /api/v3/exchangeInfo` (weight 20, as Binance's): `?symbol=X`, `?symbols=["X","Y"]` (a JSON
  array) or nothing (every symbol served); each symbol with its PRICE_FILTER, the tick inferred
  from its history (see `exchange_info`). Any unknown symbol: 400, code -1121 "Invalid symbol.".

Errors have Binance's shape, `{"code": <negative>, "msg": "..."}`. `RestApi` is a part of
`ReplayServer` (a mixin): it uses the server's timeline, faults, stats and limits.
"""

from __future__ import annotations

import json
import math
import threading
import time
from decimal import Decimal

from binance_emulator.exchange_info import exchange_info, price_tick, symbol_info
from binance_emulator.faults import Faults, Stats
from binance_emulator.synthetic import partial
from binance_emulator.timeline import Timeline, _ceil
from binance_emulator.wire import rest_row
from cryptoflow.candles import INTERVAL_MS, Candle


class RestApi:
    """REST endpoints and weight accounting of the replay server (attributes set by ReplayServer)."""

    timeline: Timeline
    faults: Faults
    stats: Stats
    known_symbols: set[str]
    weight_budget: int
    weight_window_s: float
    klines_weight: int
    exchange_info_weight: int
    ban_after_refusals: int
    ban_s: float
    _weight_lock: threading.Lock
    _weight_window: int
    _weight_used: int
    _refusals: int
    _bans: int
    _banned_until: float
    _price_rules: dict[str, tuple[Decimal, Decimal | None]]

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
                return 418, {
                    "Retry-After": str(math.ceil(self._banned_until - now)),
                    "X-MBX-USED-WEIGHT-1M": str(self._weight_used),
                }
            if self._weight_used + weight > self.weight_budget:
                self._refusals += 1
                if self._refusals > self.ban_after_refusals:
                    # Binance: "repeatedly violating rate limits ... will result in an automated IP
                    # ban (HTTP 418)", scaling from 2 minutes up to 3 days for repeat offenders.
                    ban = self.ban_s * 2**self._bans
                    self._bans += 1
                    self._banned_until = now + ban
                    return 418, {
                        "Retry-After": str(math.ceil(ban)),
                        "X-MBX-USED-WEIGHT-1M": str(self._weight_used),
                    }
                return 429, {
                    "Retry-After": str(max(1, math.ceil(window_end - now))),
                    "X-MBX-USED-WEIGHT-1M": str(self._weight_used),
                }
            self._weight_used += weight
            return None, {
                "X-MBX-USED-WEIGHT-1M": str(self._weight_used),
                "X-MBX-USED-WEIGHT": str(self._weight_used),
            }

    def _rest(self, conn, path: str, params: dict):
        self.stats.rest_requests += 1
        weight = {
            "/api/v3/klines": self.klines_weight,
            "/api/v3/exchangeInfo": self.exchange_info_weight,
        }.get(path, 1)
        forced = self.faults.take_rest()
        if forced is not None:
            return self._injected_error(conn, *forced)
        refused, headers = self._charge(weight)
        if refused:
            return self._json(
                conn,
                refused,
                {
                    "code": -1003,
                    "msg": "Too much request weight used; "
                    "current limit is %d request weight per window." % self.weight_budget,
                },
                headers,
            )
        now_ms = self.timeline.now_ms()
        if path == "/api/v3/ping":
            return self._json(conn, 200, {}, headers)
        if path == "/api/v3/time":
            return self._json(conn, 200, {"serverTime": now_ms}, headers)
        if path == "/api/v3/exchangeInfo":
            return self._exchange_info(conn, params, now_ms, headers)
        if path != "/api/v3/klines":
            return self._json(conn, 404, {"code": -1, "msg": f"Unknown endpoint {path}."}, headers)
        return self._klines(conn, params, now_ms, headers)

    def _injected_error(self, conn, status: int, retry_after: float | None):
        """The error a fault plan forces on a request (429/418 with Retry-After, or a 5xx)."""
        headers = {"X-MBX-USED-WEIGHT-1M": str(self._weight_used)}
        if retry_after is not None:
            headers["Retry-After"] = str(math.ceil(retry_after))
        msg = {429: "Too many requests.", 418: "IP banned (injected)."}.get(
            status, "Injected server error."
        )
        return self._json(
            conn, status, {"code": -1003 if status in (418, 429) else -1000, "msg": msg}, headers
        )

    def _klines(self, conn, params: dict, now_ms: int, headers: dict):
        """GET /api/v3/klines: its parameters checked as Binance does, then the candles up to the replay clock."""

        def one(name):
            values = params.get(name)
            return values[-1] if values else None

        symbol, interval = (one("symbol") or "").upper(), one("interval")
        if not symbol:
            return self._json(
                conn,
                400,
                {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent."},
                headers,
            )
        if symbol not in self.known_symbols:
            return self._json(conn, 400, {"code": -1121, "msg": "Invalid symbol."}, headers)
        if interval not in INTERVAL_MS:
            return self._json(conn, 400, {"code": -1120, "msg": "Invalid interval."}, headers)
        try:
            limit = int(one("limit") or 500)
            start = int(one("startTime")) if one("startTime") is not None else None
            end = int(one("endTime")) if one("endTime") is not None else None
        except ValueError:
            return self._json(
                conn,
                400,
                {"code": -1100, "msg": "Illegal characters found in a parameter."},
                headers,
            )
        if not 1 <= limit <= 1000:
            return self._json(
                conn, 400, {"code": -1130, "msg": "Invalid data sent for a parameter."}, headers
            )
        iv = INTERVAL_MS[interval]
        upto = now_ms if end is None else min(end, now_ms)
        if start is not None:
            # Candles are found by open time; a startTime inside a candle starts at the next one.
            rows = self._window(symbol, interval, _ceil(start, iv), upto, limit, oldest=True)
        else:
            rows = self._window(symbol, interval, None, upto, limit, oldest=False)
        out = []
        for c in rows:
            if (
                c.close_time >= now_ms
            ):  # still open on the replay clock: partial, as Binance serves it
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

    def _exchange_info(self, conn, params: dict, now_ms: int, headers: dict):
        symbol, symbols = params.get("symbol"), params.get("symbols")
        if symbol and symbols:
            return self._json(
                conn,
                400,
                {"code": -1128, "msg": "Combination of optional parameters invalid."},
                headers,
            )
        wanted: list[str]
        if symbol:
            wanted = [symbol[-1].upper()]
        elif symbols:
            try:
                asked = json.loads(symbols[-1])
            except ValueError:
                asked = None
            if not isinstance(asked, list) or not all(isinstance(s, str) and s for s in asked):
                return self._json(
                    conn,
                    400,
                    {
                        "code": -1100,
                        "msg": "Illegal characters found in parameter 'symbols'; "
                        "legal range is a JSON array of symbols.",
                    },
                    headers,
                )
            if not asked:
                return self._json(
                    conn,
                    400,
                    {
                        "code": -1102,
                        "msg": "Mandatory parameter 'symbols' was not sent, was "
                        "empty/null, or malformed.",
                    },
                    headers,
                )
            wanted = list(dict.fromkeys(s.upper() for s in asked))
        else:
            wanted = sorted(self.known_symbols)
        if any(s not in self.known_symbols for s in wanted):
            return self._json(conn, 400, {"code": -1121, "msg": "Invalid symbol."}, headers)
        entries = [symbol_info(s, *self._price_rule(s)) for s in wanted]
        return self._json(
            conn,
            200,
            exchange_info(entries, now_ms, self.weight_budget, self.weight_window_s),
            headers,
        )

    def _price_rule(self, symbol: str) -> tuple[Decimal, Decimal | None]:
        """(tick, highest price) of `symbol`'s loaded history, every interval; computed once per symbol."""
        rule = self._price_rules.get(symbol)
        if rule is None:
            candles = [c for (s, _), cs in self.timeline.history.items() if s == symbol for c in cs]
            tick = price_tick(p for c in candles for p in (c.open, c.high, c.low, c.close))
            rule = self._price_rules[symbol] = (tick, max((c.high for c in candles), default=None))
        return rule


__all__ = ["RestApi"]
