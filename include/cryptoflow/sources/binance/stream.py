"""The Binance kline websocket client: one combined stream, kept alive, every message handed on raw.

What it guarantees, and why:
- Every text frame received is passed to `on_message(raw, received_at)` exactly as received,
  malformed or not, in arrival order (one callback at a time). Parsing belongs to the consumer
  (cryptoflow.candles), so a message that fails to parse is still on record to be quarantined.
- Server pings are answered with a pong carrying the ping's payload (Binance drops a connection
  without a pong within a minute). websocket-client would answer pings itself, but outside our rate
  limit, so frames are read one by one here and pongs sent explicitly.
- Outgoing messages (pongs, close frames) stay within `max_outgoing_per_s` (Binance: 5 a second,
  pings and pongs included) and connection attempts within `max_connects` per `connect_window_s`
  (Binance: 300 per 5 minutes per IP). Both limits are sliding windows, not token buckets: a
  bucket of size N refilled at N/window lets 2N through in one window, which is exactly the burst
  a strict server counts against you.
- Reconnects use exponential backoff with jitter, reset once a connection delivered data (a server
  that accepts and drops at once keeps the backoff growing).
- Connections are replaced before Binance's 24 h limit (`rotate_after_s`) and as soon as a
  `serverShutdown` event arrives, make-before-break: the old connection is closed only once it has
  handed over every stream, that is, once on each stream it has delivered up to the candle the new
  connection started with (a new subscription starts at the current candle, so the candle that
  closed just before it exists only on the old connection). The switch loses nothing; the overlap
  may deliver a message twice, which the consumer's (symbol, interval, open_time) key absorbs.
  A stream that stays silent can't hand over: after `handover_timeout_s` the old one goes anyway.
  An unexpected drop still loses what was sent meanwhile: the websocket alone can't be complete,
  REST backfills the holes.
- A connection on which nothing at all arrives for `stall_timeout_s` (no data, no ping) is treated
  as dead: half-open TCP connections otherwise hang forever.
- `stop()` ends everything cleanly (close frames sent, threads joined) within about `poll_s` + 1 s.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

import websocket
from websocket import ABNF

log = logging.getLogger(__name__)

MAX_STREAMS_PER_CONNECTION = 1024


class RateLimiter:
    """At most `limit` events in any `window_s` seconds (sliding log of the last `limit` events)."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic):
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._events: deque[float] = deque()
        self._lock = threading.Lock()

    def delay(self) -> float:
        """Seconds until one more event is allowed (0: now)."""
        with self._lock:
            return self._delay(self.clock())

    def _delay(self, now: float) -> float:
        while self._events and self._events[0] <= now - self.window_s:
            self._events.popleft()
        if len(self._events) < self.limit:
            return 0.0
        return self._events[0] + self.window_s - now

    def try_acquire(self) -> bool:
        with self._lock:
            now = self.clock()
            if self._delay(now) > 0:
                return False
            self._events.append(now)
            return True

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait until allowed and record the event; False if `stop` was set meanwhile."""
        while True:
            with self._lock:
                now = self.clock()
                wait = self._delay(now)
                if wait <= 0:
                    self._events.append(now)
                    return True
            if stop is None:
                time.sleep(wait)
            elif stop.wait(wait):
                return False


def stream_names(symbols: Iterable[str], interval: str) -> list[str]:
    """Binance kline stream names (lowercase symbols)."""
    return [f"{s.lower()}@kline_{interval}" for s in symbols]


def combined_url(base_url: str, names: list[str]) -> str:
    return f"{base_url.rstrip('/')}/stream?streams={'/'.join(names)}"


def is_server_shutdown(raw: str) -> bool:
    """Whether a message is Binance's serverShutdown event (bare, wrapped in "event" or in "data")."""
    if "serverShutdown" not in raw:  # cheap test first: this runs on every message
        return False
    try:
        msg = json.loads(raw)
    except ValueError:
        return False
    if not isinstance(msg, dict):
        return False
    for obj in (msg, msg.get("event"), msg.get("data")):
        if isinstance(obj, dict) and obj.get("e") == "serverShutdown":
            return True
    return False


def kline_position(raw: str) -> tuple[str, int, int] | None:
    """(stream, open time of the candle, open time of the first candle not yet closed) of a
    combined-stream kline message; None for anything else. An update of candle t says every candle
    before t has closed; the closing of t (k.x) says t has too, so the next one starts at k.T + 1."""
    if '"kline"' not in raw:
        return None
    try:
        msg = json.loads(raw)
        k = msg["data"]["k"]
        t = int(k["t"])
        return str(msg["stream"]), t, (int(k["T"]) + 1 if k["x"] is True else t)
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class StreamStats:
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    messages: int = 0
    pings: int = 0
    pongs: int = 0
    server_shutdowns: int = 0
    rotations: int = 0
    handover_timeouts: int = 0
    stalls: int = 0
    last_error: str = ""


class _Connection:
    """One websocket connection and the thread reading it. All socket I/O happens in that thread."""

    def __init__(self, owner: "KlineStream", seq: int, ws: websocket.WebSocket):
        self.owner, self.seq, self.ws = owner, seq, ws
        self.opened = time.monotonic()
        self.last_frame = self.opened
        self.got_data = False
        self.replace = False  # serverShutdown received: open a new one now
        self.closing = False  # asked to close (rotation, replacement, stop)
        self.reason = ""
        # Per stream: the open time of the first candle this connection spoke of (where it starts),
        # and the open time of the first candle whose closing it has not delivered (how far it got).
        self.first_open: dict[str, int] = {}
        self.frontier: dict[str, int] = {}
        self.dead = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"kline-stream-{seq}", daemon=True)

    def _run(self) -> None:
        owner, ws = self.owner, self.ws
        reason = "closed"
        try:
            while True:
                if self.closing:
                    self._close()
                    break
                try:
                    frame = ws.recv_frame()
                except websocket.WebSocketTimeoutException:
                    if time.monotonic() - self.last_frame > owner.stall_timeout_s:
                        owner.stats.stalls += 1
                        reason = f"stalled: nothing received for {owner.stall_timeout_s:g} s"
                        break
                    continue
                now = time.time()
                self.last_frame = time.monotonic()
                op = frame.opcode
                if op in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY, ABNF.OPCODE_CONT):
                    ws.cont_frame.validate(frame)
                    ws.cont_frame.add(frame)
                    if ws.cont_frame.is_fire(frame):
                        _, whole = ws.cont_frame.extract(frame)
                        data = whole.data
                        text = (
                            data.decode("utf-8", "replace")
                            if isinstance(data, (bytes, bytearray))
                            else data
                        )
                        self.got_data = True
                        owner._deliver(self, text, now)
                elif op == ABNF.OPCODE_PING:
                    owner.stats.pings += 1
                    if owner._outgoing.acquire(owner._stop_event):
                        ws.pong(frame.data)  # the ping's payload, as Binance requires
                        owner.stats.pongs += 1
                elif op == ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else None
                    reason = f"closed by server (code {code}, {frame.data[2:].decode('utf-8', 'replace')!r})"
                    try:
                        if owner._outgoing.try_acquire():
                            ws.send_close()
                    except Exception:
                        pass
                    break
        except Exception as exc:  # any socket/protocol error ends this connection, not the stream
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                ws.shutdown()
            except Exception:
                pass
            self.reason = reason
            self.dead.set()
            owner._wake.set()

    def _close(self) -> None:
        try:
            # Closing is an outgoing message too; if the budget is spent, dropping the TCP
            # connection is the polite alternative to exceeding it.
            if self.owner._outgoing.try_acquire():
                self.ws.close(timeout=1)
        except Exception:
            pass


class KlineStream:
    """The combined kline stream of `symbols` at `interval`, delivering raw messages to a callback.

    `on_message(raw: str, received_at: float)` runs in a reader thread, one call at a time; if it
    raises, the stream stops and `run()` re-raises (a collector that can't write must not go on
    silently). `on_event(name, detail)` (optional) hears connected / disconnected / server_shutdown
    / rotating, for logs and metrics.
    """

    def __init__(
        self,
        ws_url: str,
        symbols: Iterable[str],
        interval: str,
        on_message: Callable[[str, float], None],
        *,
        on_event: Callable[[str, str], None] | None = None,
        max_outgoing_per_s: int = 5,
        max_connects: int = 300,
        connect_window_s: float = 300.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        rotate_after_s: float = 23 * 3600.0,
        handover_timeout_s: float = 30.0,
        stall_timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        poll_s: float = 0.25,
        rng: random.Random | None = None,
    ):
        self.names = stream_names(symbols, interval)
        if not self.names:
            raise ValueError("no symbols to stream")
        if len(self.names) > MAX_STREAMS_PER_CONNECTION:
            raise ValueError(
                f"{len(self.names)} streams: Binance allows {MAX_STREAMS_PER_CONNECTION} per connection"
            )
        self.url = combined_url(ws_url, self.names)
        self.on_message, self.on_event = on_message, on_event
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.rotate_after_s, self.stall_timeout_s = rotate_after_s, stall_timeout_s
        self.handover_timeout_s = handover_timeout_s
        self.connect_timeout_s, self.poll_s = connect_timeout_s, poll_s
        self.rng = rng or random.Random()
        self.stats = StreamStats()
        self._outgoing = RateLimiter(max_outgoing_per_s, 1.0)
        self._connects = RateLimiter(max_connects, connect_window_s)
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        self._deliver_lock = threading.Lock()
        self._conns: list[_Connection] = []
        self._seq = 0
        self._fatal: BaseException | None = None
        self._thread: threading.Thread | None = None

    # -- public ----------------------------------------------------------------------------------

    def start(self) -> "KlineStream":
        """Run in a background thread; `stop()` ends it."""
        self._thread = threading.Thread(target=self._run_quietly, name="kline-stream", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop_event.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        """What stopped the stream, if the callback failed."""
        return self._fatal

    def connected(self) -> bool:
        return any(not c.dead.is_set() for c in self._conns)

    def run(self) -> None:
        """Block until stop(); re-raises the callback's exception if that is what stopped it."""
        attempt = 0
        current: _Connection | None = None
        retiring: _Connection | None = (
            None  # replaced, still open until `current` took over from it
        )
        retiring_since = 0.0
        try:
            while not self._stop_event.is_set():
                retiring = self._settle_handover(retiring, retiring_since, current)
                if current is not None and current.dead.is_set():
                    current, retiring, attempt, then = self._after_disconnect(
                        current, retiring, attempt
                    )
                    if then == "break":
                        break
                    if then == "continue":
                        continue
                if current is None:
                    current, attempt = self._connect(attempt)
                    continue
                if retiring is None and (
                    current.replace or time.monotonic() - current.opened > self.rotate_after_s
                ):
                    current, retiring, retiring_since, attempt = self._replace(
                        current, retiring_since, attempt
                    )
                    continue
                self._wake.wait(self.poll_s)
                self._wake.clear()
                self._conns = [
                    c for c in self._conns if not c.dead.is_set() or c is current or c is retiring
                ]
        finally:
            self._close_all()
        if self._fatal is not None:
            raise self._fatal

    def _settle_handover(
        self, retiring: _Connection | None, retiring_since: float, current: _Connection | None
    ) -> _Connection | None:
        """`retiring`, or None (it is told to close) once the live `current` took over from it, it
        died, or the handover timed out."""
        if retiring is not None and current is not None and not current.dead.is_set():
            waited = time.monotonic() - retiring_since
            gone, handed = retiring.dead.is_set(), self._handed_over(retiring, current)
            if gone or handed or waited > self.handover_timeout_s:
                if not (gone or handed):
                    self.stats.handover_timeouts += 1
                    log.warning(
                        "binance stream: connection %d closed after %.0f s without handing over "
                        "every stream (a silent stream?)",
                        retiring.seq,
                        waited,
                    )
                retiring.closing = True
                retiring = None
        return retiring

    def _after_disconnect(self, current: _Connection, retiring: _Connection | None, attempt: int):
        """`current` died: (current, retiring, attempt, then), `then` being what the loop does next:
        "continue" (the old connection kept), "break" (stopped during the backoff) or None (reconnect)."""
        self.stats.disconnects += 1
        self._event("disconnected", current.reason)
        log.warning("binance stream connection %d ended: %s", current.seq, current.reason)
        if current.got_data:
            attempt = 0
        prompt = current.replace
        if retiring is not None and not retiring.dead.is_set():
            # The replacement died before taking over: the old one still reads; keep it
            # and try the replacement again after the backoff.
            retiring.opened = time.monotonic() - self.rotate_after_s + self._backoff(attempt)
            return retiring, None, attempt + 1, "continue"
        if not prompt:
            if self._stop_event.wait(self._backoff(attempt)):
                return None, None, attempt, "break"
            attempt += 1
        return None, None, attempt, None

    def _connect(self, attempt: int) -> tuple[_Connection | None, int]:
        """(a new connection, attempt), or (None, attempt + 1) after waiting out the backoff."""
        current, retry_after = self._open()
        if current is None:
            delay = max(self._backoff(attempt), retry_after)
            attempt += 1
            self._stop_event.wait(delay)
        return current, attempt

    def _replace(self, current: _Connection, retiring_since: float, attempt: int):
        """Rotation or a server's shutdown notice: (current, retiring, retiring_since, attempt)."""
        why = "server_shutdown" if current.replace else "rotating"
        if why == "rotating":
            self.stats.rotations += 1
        self._event(why, f"replacing connection {current.seq}")
        new, retry_after = self._open()
        if new is not None:
            # make-before-break: the old one reads on until the new one took over
            return new, current, time.monotonic(), attempt
        # Keep the old one as long as it lives; try again after the backoff.
        current.replace = False
        current.opened = (
            time.monotonic() - self.rotate_after_s + max(self._backoff(attempt), retry_after)
        )
        return current, None, retiring_since, attempt + 1

    def _close_all(self) -> None:
        for c in self._conns:
            c.closing = True
        for c in self._conns:
            c.thread.join(self.poll_s + 2.0)
        self._conns = []

    def _handed_over(self, old: _Connection, new: _Connection) -> bool:
        """Whether, on every stream, `old` delivered up to the candle `new` started with."""
        return all(
            name in new.first_open and old.frontier.get(name, -1) >= new.first_open[name]
            for name in self.names
        )

    # -- internals -------------------------------------------------------------------------------

    def _run_quietly(self) -> None:
        try:
            self.run()
        except BaseException:
            log.exception("binance stream stopped by its callback")

    def _event(self, name: str, detail: str) -> None:
        if self.on_event is not None:
            try:
                self.on_event(name, detail)
            except Exception:
                log.exception("on_event callback failed")

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, so waits never collapse to 0."""
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** min(attempt, 30))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def _open(self) -> tuple[_Connection | None, float]:
        """A new connection reading in its thread, or (None, seconds the server asked us to wait)."""
        if not self._connects.acquire(self._stop_event):
            return None, 0.0
        ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=True)
        try:
            ws.connect(self.url, timeout=self.connect_timeout_s, suppress_origin=True)
        except Exception as exc:
            self.stats.connect_failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            retry_after = 0.0
            headers = getattr(exc, "resp_headers", None) or {}
            if getattr(exc, "status_code", None) in (418, 429):
                try:
                    retry_after = float(headers.get("retry-after", 0))
                except ValueError:
                    pass
            log.warning("binance stream: connect to %s failed: %s", self.url, self.stats.last_error)
            try:
                ws.shutdown()
            except Exception:
                pass
            return None, retry_after
        ws.settimeout(self.poll_s)
        self._seq += 1
        conn = _Connection(self, self._seq, ws)
        self._conns.append(conn)
        self.stats.connects += 1
        conn.thread.start()
        self._event("connected", f"connection {conn.seq} to {self.url}")
        return conn, 0.0

    def _deliver(self, conn: _Connection, text: str, received_at: float) -> None:
        if self._fatal is not None:
            return
        with self._deliver_lock:
            self.stats.messages += 1
            pos = kline_position(text)
            if pos is not None:
                name, open_time, frontier = pos
                conn.first_open.setdefault(name, open_time)
                if frontier > conn.frontier.get(name, -1):
                    conn.frontier[name] = frontier
            try:
                self.on_message(text, received_at)
            except BaseException as exc:
                self._fatal = exc
                self._stop_event.set()
                self._wake.set()
                return
        if is_server_shutdown(text) and not conn.replace:
            conn.replace = True
            self.stats.server_shutdowns += 1
            self._wake.set()


__all__ = [
    "KlineStream",
    "RateLimiter",
    "StreamStats",
    "stream_names",
    "combined_url",
    "is_server_shutdown",
    "kline_position",
]
