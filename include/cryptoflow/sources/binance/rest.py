"""The Binance REST klines client: paginated history within the request-weight budget.

Rules it follows, and why:
- Pages of up to 1000 rows, the next page starting at the last open time + 1 (Binance and ccxt's
  convention; asking for `last open + interval` would skip nothing either, but +1 doesn't need to
  know the interval's length and can't skip a candle after a gap).
- Weight: every answer carries `X-MBX-USED-WEIGHT-1M`, the IP's weight in the current minute. Before
  a request that would take it over `weight_budget - weight_margin`, the client waits for the next
  window instead of collecting a 429. The margin leaves room for other processes on the same IP.
- 429: wait `Retry-After` (else until the next window) and retry, at most `max_429` times in a row.
  Binance bans IPs that keep going after 429s (418), so a 429 is never retried early.
- 418 (banned): wait `Retry-After` if it is short (<= `max_ban_wait_s`) at most `max_418` times,
  else raise `BinanceBanned` at once: a ban of hours must fail the task loudly, not hang it.
- 5xx, timeouts, connection errors: bounded retries with exponential backoff and jitter (the
  request is a read, so repeating it is safe). Other 4xx are our mistakes: raised at once.
- The still-open last candle Binance includes is dropped (`closed_only`), judged against the
  server's own clock (`/api/v3/time`): the replay's clock is not the wall clock, and a drifting local
  clock would keep or drop the wrong row.
- Symbol rules come from `/api/v3/exchangeInfo` (weight 20): `tick_sizes` reads each symbol's
  PRICE_FILTER tickSize, from Binance or from the replay server (which infers it from its history).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Callable, Iterable

import requests

from cryptoflow.candles import Candle
from cryptoflow.sources.binance.wire import from_rest_row

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
EXCHANGE_INFO_WEIGHT = 20


class BinanceError(RuntimeError):
    def __init__(self, message: str, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status, self.code = status, code


class BinanceRequestError(BinanceError):
    """A 4xx other than 418/429: the request itself is wrong (bad symbol, bad interval...)."""


class BinanceRateLimited(BinanceError):
    """Still refused with 429 after the allowed retries."""


class BinanceBanned(BinanceError):
    """418: this IP is banned. Never retried for long: the operator has to look."""


class BinanceUnavailable(BinanceError):
    """5xx or network failures outlasted the retries."""


@dataclass
class _Tries:
    """One request's retries so far, by kind: each kind has its own limit."""

    failures: int = 0  # 5xx, timeouts, connection errors
    n429: int = 0
    n418: int = 0


class BinanceRestClient:
    def __init__(
        self,
        base_url: str,
        *,
        weight_budget: int = 6000,
        weight_margin: int = 600,
        weight_window_s: float = 60.0,
        request_weight: int = 2,
        timeout_s: float = 10.0,
        max_retries: int = 5,
        max_429: int = 5,
        max_418: int = 1,
        max_ban_wait_s: float = 300.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        source: str = "binance_rest",
    ):
        self.base_url = base_url.rstrip("/")
        self.weight_budget, self.weight_margin = weight_budget, weight_margin
        self.weight_window_s, self.request_weight = weight_window_s, request_weight
        self.timeout_s = timeout_s
        self.max_retries, self.max_429, self.max_418, self.max_ban_wait_s = (
            max_retries,
            max_429,
            max_418,
            max_ban_wait_s,
        )
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.session = session or requests.Session()
        self.sleep, self.clock = sleep, clock
        self.rng = rng or random.Random()
        self.source = source
        self._lock = threading.Lock()
        self._used = 0  # weight reported by the server in window `_window`
        self._window = -1
        self.requests = 0  # HTTP requests sent (statistics, tests)
        self.waited_s = 0.0  # time spent waiting for weight, Retry-After and backoff

    # -- weight -----------------------------------------------------------------------------------

    @property
    def used_weight(self) -> int:
        """The last weight the server reported for the current window (0 in a new window)."""
        return self._used if int(self.clock() // self.weight_window_s) == self._window else 0

    def _wait(self, seconds: float, why: str) -> None:
        if seconds > 0:
            log.info("binance rest: waiting %.2f s (%s)", seconds, why)
            self.waited_s += seconds
            self.sleep(seconds)

    def _reserve(self, weight: int) -> None:
        """Wait for the next window if this request would take the window over budget - margin."""
        limit = max(weight, self.weight_budget - self.weight_margin)
        while True:
            now = self.clock()
            window = int(now // self.weight_window_s)
            used = self._used if window == self._window else 0
            if used + weight <= limit:
                return
            # Windows are fixed (Binance resets the counter each minute): sleep to the next one.
            self._wait(
                (window + 1) * self.weight_window_s - now + 0.05,
                f"weight {used}/{self.weight_budget}",
            )

    def _record(self, response: requests.Response) -> None:
        value = response.headers.get(WEIGHT_HEADER)
        if value is None or not value.isdigit():
            return
        window = int(self.clock() // self.weight_window_s)
        with self._lock:
            if window != self._window:
                self._window, self._used = window, 0
            # Other processes share the IP's budget: the server's number is the truth, even if lower.
            self._used = int(value)

    # -- requests ---------------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2**attempt)
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def get(self, path: str, params: dict | None = None, weight: int | None = None):
        """GET a JSON endpoint with all the retry rules above."""
        weight = self.request_weight if weight is None else weight
        tries = _Tries()
        while True:
            self._reserve(weight)
            self.requests += 1
            try:
                response = self.session.get(
                    f"{self.base_url}{path}", params=params, timeout=self.timeout_s
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                tries.failures += 1
                if tries.failures > self.max_retries:
                    raise BinanceUnavailable(
                        f"GET {path}: {type(exc).__name__} after {tries.failures} attempts: {exc}"
                    ) from exc
                self._wait(self._backoff(tries.failures - 1), f"{type(exc).__name__}")
                continue
            self._record(response)
            if response.status_code == 200:
                return response.json()
            self._refused(path, params, response, tries)

    def _refused(
        self, path: str, params: dict | None, response: requests.Response, tries: _Tries
    ) -> None:
        """Wait before retrying a refused request (429, 418, 5xx), or raise when it must not be."""
        status = response.status_code
        if status == 429:
            self._rate_limited(path, response, tries)
        elif status == 418:
            self._banned(path, response, tries)
        elif status >= 500:
            tries.failures += 1
            if tries.failures > self.max_retries:
                raise BinanceUnavailable(
                    f"GET {path}: HTTP {status} after {tries.failures} attempts",
                    status,
                    _code(response),
                )
            self._wait(self._backoff(tries.failures - 1), f"HTTP {status}")
        else:
            raise BinanceRequestError(
                f"GET {path} {params}: HTTP {status}: {response.text[:300]}",
                status,
                _code(response),
            )

    def _rate_limited(self, path: str, response: requests.Response, tries: _Tries) -> None:
        """429: wait Retry-After (else until the next weight window), at most max_429 times in a row."""
        retry_after = _retry_after(response)
        tries.n429 += 1
        if tries.n429 > self.max_429:
            raise BinanceRateLimited(
                f"GET {path}: still 429 after {self.max_429} waits", 429, _code(response)
            )
        window_end = (
            int(self.clock() // self.weight_window_s) + 1
        ) * self.weight_window_s - self.clock()
        self._wait(retry_after if retry_after is not None else window_end + 0.05, "429 Retry-After")

    def _banned(self, path: str, response: requests.Response, tries: _Tries) -> None:
        """418: wait a short ban out (at most max_418 times); a long one raises BinanceBanned."""
        retry_after = _retry_after(response)
        tries.n418 += 1
        wait = retry_after if retry_after is not None else self.max_ban_wait_s * 2
        if tries.n418 > self.max_418 or wait > self.max_ban_wait_s:
            raise BinanceBanned(
                f"GET {path}: HTTP 418, this IP is banned by Binance for {wait:g} s "
                f"(after ignored 429s); not retrying",
                418,
                _code(response),
            )
        self._wait(wait, "418 ban")

    def server_time(self) -> int:
        """The server's clock in ms (replay time against the replay server)."""
        return int(self.get("/api/v3/time", weight=1)["serverTime"])

    def exchange_info(self, symbols: Iterable[str] | None = None) -> dict:
        """/api/v3/exchangeInfo for `symbols` (one request, `symbols=[...]`), or for every symbol if None.

        An unknown symbol fails the whole request: BinanceRequestError with code -1121.
        """
        params = None
        if symbols is not None:
            params = {"symbols": json.dumps([s.upper() for s in symbols], separators=(",", ":"))}
        body = self.get("/api/v3/exchangeInfo", params, weight=EXCHANGE_INFO_WEIGHT)
        if not isinstance(body, dict) or not isinstance(body.get("symbols"), list):
            raise BinanceError(
                f"exchangeInfo: expected an object with a symbols list, got {type(body).__name__}"
            )
        return body

    def tick_sizes(self, symbols: Iterable[str] | None = None) -> dict[str, Decimal]:
        """{symbol: PRICE_FILTER tickSize} for `symbols` (every symbol the server lists if None).

        A symbol the answer leaves out, or lists without a PRICE_FILTER, raises BinanceError.
        """
        wanted = None if symbols is None else list(dict.fromkeys(s.upper() for s in symbols))
        if wanted == []:
            return {}
        out: dict[str, Decimal] = {}
        for entry in self.exchange_info(wanted)["symbols"]:
            if not isinstance(entry, dict) or not entry.get("symbol"):
                raise BinanceError(f"exchangeInfo: a symbol entry without a symbol: {entry!r:.200}")
            name = str(entry["symbol"])
            tick = next(
                (
                    f.get("tickSize")
                    for f in entry.get("filters") or []
                    if isinstance(f, dict) and f.get("filterType") == "PRICE_FILTER"
                ),
                None,
            )
            try:
                value = Decimal(str(tick))
            except InvalidOperation:
                value = None
            if value is None or not value.is_finite() or value <= 0:
                raise BinanceError(
                    f"exchangeInfo: no valid PRICE_FILTER tickSize for {name} (got {tick!r})"
                )
            out[name] = value
        missing = [s for s in wanted or () if s not in out]
        if missing:
            raise BinanceError(f"exchangeInfo: no entry for {', '.join(missing)}")
        return out

    def klines_page(
        self,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = MAX_LIMIT,
    ) -> list[list]:
        """One /api/v3/klines request: raw 12-column rows, oldest first."""
        params = {
            "symbol": symbol.upper(),
            "interval": interval,
            "limit": min(max(limit, 1), MAX_LIMIT),
        }
        if start_ms is not None:
            params["startTime"] = int(start_ms)
        if end_ms is not None:
            params["endTime"] = int(end_ms)
        rows = self.get("/api/v3/klines", params)
        if not isinstance(rows, list):
            raise BinanceError(f"klines: expected a list, got {type(rows).__name__}")
        return rows

    def fetch_rows(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, *, closed_only: bool = True
    ) -> list[list]:
        """All raw rows with open time in [start_ms, end_ms], paginated; the open candle dropped if closed_only."""
        rows: list[list] = []
        start = int(start_ms)
        while start <= end_ms:
            page = self.klines_page(symbol, interval, start, end_ms, MAX_LIMIT)
            if not page:
                break
            rows.extend(page)
            last_open = int(page[-1][0])
            if len(page) < MAX_LIMIT or last_open + 1 <= start:
                break
            start = last_open + 1
        if closed_only and rows:
            now = self.server_time()
            rows = [r for r in rows if int(r[6]) < now]
        return rows

    def fetch_klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, *, closed_only: bool = True
    ) -> list[Candle]:
        """Candles with open time in [start_ms, end_ms] (inclusive, ms UTC), oldest first.

        Rows that can't be read raise cryptoflow.candles.CandleFormatError; to quarantine them
        row by row instead, use `fetch_rows` and `from_rest_row` yourself.
        """
        return [
            from_rest_row(symbol.upper(), interval, r, self.source)
            for r in self.fetch_rows(symbol, interval, start_ms, end_ms, closed_only=closed_only)
        ]

    def close(self) -> None:
        self.session.close()


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _code(response: requests.Response) -> int | None:
    try:
        body = response.json()
        return body.get("code") if isinstance(body, dict) else None
    except ValueError:
        return None


def fetch_klines(
    base_url: str, symbol: str, interval: str, start_ms: int, end_ms: int, **kwargs
) -> list[Candle]:
    """One-shot convenience: a client for `base_url`, the candles, the client closed."""
    client = BinanceRestClient(base_url, **kwargs)
    try:
        return client.fetch_klines(symbol, interval, start_ms, end_ms)
    finally:
        client.close()


__all__ = [
    "BinanceRestClient",
    "fetch_klines",
    "BinanceError",
    "BinanceRequestError",
    "BinanceRateLimited",
    "BinanceBanned",
    "BinanceUnavailable",
    "MAX_LIMIT",
    "WEIGHT_HEADER",
    "EXCHANGE_INFO_WEIGHT",
]
