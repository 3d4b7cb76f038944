"""Fault injection: the failures clients must survive, on demand, while the server runs; and its statistics.

Fault injection (`server.faults`, thread-safe, usable from tests while the server runs)
------------------------------------------------------------------------------------
`drop_connections()` (TCP abort, no close frame), `stall(seconds)` (nothing sent, no pings),
`server_shutdown(grace_s)` (serverShutdown event, close after the grace), `duplicate_closings(n)`,
`reorder_closings(n)` (a closing update held back and sent after its stream's next one), `malformed(n)`
(broken frames of several kinds), `rest_fail(status, count, retry_after)` (forced 429/418/5xx),
`rest_delay(seconds, count)` (answers held back: client timeouts).

The switches are only counted here; the server (`server`, `rest_api`) takes them as it sends.
`server.stats` (`Stats`) counts what the server did, faults included, for the tests to check.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from binance_emulator.server import ReplayServer


class Faults:
    """Switches the tests flip while the server runs; every method is thread-safe."""

    def __init__(self) -> None:
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
        return (
            self._server._call(lambda: self._server._shutdown_all(grace_s)) if self._server else 0
        )


@dataclass
class Stats:
    connections: int = 0  # accepted websocket connections
    refused_connections: int = 0  # handshakes refused over the connection-attempt limit
    active: int = 0
    messages: int = 0  # data frames sent (kline updates, events, malformed)
    closing_updates: int = 0  # x=true updates sent (including injected duplicates)
    pings: int = 0
    pongs: int = 0  # pongs received that matched a ping's payload
    pong_timeouts: int = 0
    incoming: int = 0  # data frames received from clients
    rest_requests: int = 0
    rest_status: dict = field(default_factory=dict)
    sent_log: dict = field(default_factory=dict)  # connection id -> [text] when record_sent


__all__ = ["Faults", "Stats"]
