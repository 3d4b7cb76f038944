"""The replay server: one port, Binance's kline websocket and its REST side (`rest_api`), and `serve`.

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
- Any other HTTP request is REST (see `rest_api`: klines, time, ping, exchangeInfo).

Run it with `serve(settings)` (blocks; `cryptoflow replay-server`), or `ReplayServer(...).start()`
in a background thread (tests).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable
from urllib.parse import parse_qs, unquote

from binance_emulator.faults import Faults, Stats
from cryptoflow.sources.files import default_data_dirs, load_history
from binance_emulator.rest_api import RestApi
from binance_emulator.synthetic import partial
from binance_emulator.timeline import Timeline, _iso, anchored_timeline
from binance_emulator.wire import kline_event
from cryptoflow.candles import INTERVAL_MS, Candle

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

log = logging.getLogger(__package__)  # one logger for the whole replay

_STREAM = re.compile(r"^(?P<symbol>[a-z0-9]+)@kline_(?P<interval>[0-9]+[smhdwM])$")


@dataclass
class _StreamState:
    name: str
    symbol: str
    interval: str
    interval_ms: int
    next_open: int  # open time of the next candle whose closing update is due
    next_update: int  # replay time of the next x=false update


@dataclass
class _Conn:
    id: int
    ws: ServerConnection
    combined: bool
    streams: dict
    opened: float
    held: dict = field(default_factory=dict)  # stream -> closing updates held back (reorder fault)
    shutdown_at: float | None = None
    shutdown_sent: bool = False
    closing: bool = False
    incoming: deque = field(default_factory=deque)


def _as_timeline(
    history: dict[tuple[str, str], list[Candle]] | Timeline,
    speed: float,
    shift_to_present: bool,
    play_hours: float,
    start_ms: int | None,
) -> Timeline:
    """`history` if it is a Timeline already, else a Timeline of it with these options."""
    if isinstance(history, Timeline):
        return history
    return Timeline(
        history,
        speed=speed,
        shift_to_present=shift_to_present,
        play_hours=play_hours,
        start_ms=start_ms,
    )


class ReplayServer(RestApi):
    """The replay server; `start()` runs it in a background thread, `run_forever()` in this one."""

    def __init__(
        self,
        history: dict[tuple[str, str], list[Candle]] | Timeline,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 60.0,
        shift_to_present: bool = True,
        play_hours: float = 24.0,
        start_ms: int | None = None,
        symbols: Iterable[str] | None = None,
        update_interval_ms: int = 2000,
        ping_interval_s: float = 20.0,
        pong_timeout_s: float = 60.0,
        max_connection_age_s: float = 24 * 3600,
        max_incoming_per_s: int = 5,
        max_connects: int = 300,
        connect_window_s: float = 300.0,
        weight_budget: int = 6000,
        weight_window_s: float = 60.0,
        klines_weight: int = 2,
        exchange_info_weight: int = 20,
        ban_after_refusals: int = 5,
        ban_s: float = 120.0,
        record_sent: bool = False,
        tick_s: float | None = None,
    ):
        self.timeline = _as_timeline(history, speed, shift_to_present, play_hours, start_ms)
        self.host, self.port = host, port
        self.known_symbols = set(self.timeline.symbols) | {s.upper() for s in (symbols or ())}
        self.update_interval_ms = update_interval_ms
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s
        self.max_connection_age_s = max_connection_age_s
        self.max_incoming_per_s = max_incoming_per_s
        self.max_connects, self.connect_window_s = max_connects, connect_window_s
        self.weight_budget, self.weight_window_s = weight_budget, weight_window_s
        self.klines_weight = klines_weight
        self.exchange_info_weight = exchange_info_weight
        self.ban_after_refusals, self.ban_s = ban_after_refusals, ban_s
        self.record_sent = record_sent
        # Fast enough to send each update on time, slow enough not to spin: a quarter of the wall
        # time between updates, within [5 ms, 250 ms].
        self.tick_s = tick_s or min(
            0.25, max(0.005, self.timeline.wall_seconds(update_interval_ms) / 4)
        )
        self._init_state()

    def _init_state(self) -> None:
        """What the server keeps while it runs: faults, stats, connections, REST weight and bans,
        the thread and loop it runs on."""
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
        self._price_rules = {}  # symbol -> (tick, highest price), for exchangeInfo
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
        async with ws_serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            ping_interval=None,
            ping_timeout=None,
            compression=None,
            max_size=2**16,
            close_timeout=2,
        ) as server:
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

    # -- HTTP: routing (REST: rest_api) ---------------------------------------------------------

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
            return self._json(
                conn,
                429,
                {"code": -1003, "msg": "Too many connection attempts."},
                {"Retry-After": str(math.ceil(self._connects[0] + self.connect_window_s - now))},
            )
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

    # -- websocket ------------------------------------------------------------------------------

    def _stream_state(self, name: str, now_ms: int) -> _StreamState | None:
        m = _STREAM.match(name)
        if not m or m["interval"] not in INTERVAL_MS:
            return None  # other stream kinds are accepted and stay silent, as unknown symbols do
        iv = INTERVAL_MS[m["interval"]]
        return _StreamState(
            name, m["symbol"].upper(), m["interval"], iv, now_ms - now_ms % iv, now_ms
        )

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
            log.warning(
                "no %s candles for %s: stream %s stays silent", st.interval, st.symbol, name
            )

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
        good = self._wrap(
            conn, name, {"e": "kline", "E": self.timeline.now_ms(), "s": "BTCUSDT", "k": {}}
        )
        frames: list[str | bytes] = [
            good[: len(good) // 2],  # truncated JSON
            "this is not json",  # not JSON at all
            json.dumps(
                {"stream": name, "data": {"e": "kline", "k": {"t": "soon", "x": "yes"}}}
            ),  # wrong types
            b"\x00\x01binary\xff",  # a binary frame
            json.dumps([1, 2, 3]),  # JSON of the wrong shape
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
                    await self._send(
                        conn,
                        json.dumps({"event": {"e": "serverShutdown", "E": self.timeline.now_ms()}}),
                    )
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
                for c in self.timeline.candles(
                    st.symbol, st.interval, st.next_open, now_ms - st.interval_ms
                ):
                    await self._send_closing(conn, st, c, now_ms)
                    st.next_open = c.open_time + st.interval_ms
                if now_ms >= st.next_update:
                    st.next_update = (
                        now_ms - now_ms % self.update_interval_ms + self.update_interval_ms
                    )
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
            await conn.ws.send(
                json.dumps(
                    {
                        "error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"},
                        "id": rid,
                    }
                )
            )
            return
        await conn.ws.send(json.dumps({"result": result, "id": rid}))


def serve(
    settings,
    *,
    data_dirs: Iterable[str | Path] | None = None,
    speed: float = 60.0,
    shift_to_present: bool = True,
    play_hours: float = 24.0,
    port: int | None = None,
    host: str | None = None,
    anchor_file: Path | None = None,
    **server_options,
) -> None:
    """Run the replay server for `settings` until SIGINT/SIGTERM (the CLI's replay-server command).

    `anchor_file` (real time, shifted to present only): keep the timeline across restarts
    (anchored_timeline)."""
    source = _replay_source(settings, data_dirs, speed, shift_to_present, play_hours, anchor_file)
    server = ReplayServer(
        source,
        host=host or settings.bind_host,
        port=port or settings.replay_port,
        speed=speed,
        shift_to_present=shift_to_present,
        play_hours=play_hours,
        symbols=settings.symbols,
        **server_options,
    )
    _log_replay(server, settings.symbols, port)
    _run_until_signalled(server)


def _replay_source(
    settings,
    data_dirs: Iterable[str | Path] | None,
    speed: float,
    shift_to_present: bool,
    play_hours: float,
    anchor_file: Path | None,
) -> dict[tuple[str, str], list[Candle]] | Timeline:
    """What serve() replays: the settings' coins' history, or its anchored timeline (SystemExit
    without history, or with an anchor file on a timeline it cannot keep)."""
    dirs = list(data_dirs) if data_dirs else default_data_dirs(settings)
    history = load_history(dirs, settings.symbols)
    if not history:
        raise SystemExit(
            f"no candle files for {', '.join(settings.symbols)} under {', '.join(map(str, dirs))}"
        )
    if anchor_file is not None and (speed != 1.0 or not shift_to_present):
        raise SystemExit(
            "--anchor-file keeps a real-time (--speed 1), shifted-to-present timeline only"
        )
    return (
        anchored_timeline(history, anchor_file, play_hours=play_hours)
        if anchor_file is not None
        else history
    )


def _log_replay(server: ReplayServer, symbols: Iterable[str], port: int | None) -> None:
    """One line: what is replayed, where, how fast, and which coins have no history."""
    missing = sorted(set(symbols) - set(server.timeline.symbols))
    tl = server.timeline
    log.warning(
        "replay: %s on %s and %s; speed %gx; replay time %s .. %s%s",
        ", ".join(tl.symbols),
        server.ws_url if port else f"ws://{server.host}:{server.port}",
        server.rest_url,
        tl.speed,
        _iso(tl.start_ms),
        _iso(tl.end_ms),
        f"; no history for {', '.join(missing)} (their streams stay silent)" if missing else "",
    )


def _run_until_signalled(server: ReplayServer) -> None:
    """Run `server` in its thread until SIGINT or SIGTERM stops it (the handlers restored after)."""

    def stop(signum, frame):
        server.stop(timeout=0)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        thread = server._thread
        assert thread is not None  # made by start()
        while thread.is_alive():
            thread.join(0.5)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


__all__ = ["ReplayServer", "serve"]
