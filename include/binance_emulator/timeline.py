"""The replay clock: historical candles moved onto a timeline that runs at `speed` x the wall clock.

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

`anchored_timeline` records a real-time timeline's shift in a file, so that a restarted replay
serves the same candles at the same times.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

from binance_emulator.synthetic import (
    HOUR_MS,
    MINUTE_MS,
    SYNTHETIC_INTERVALS,
    aggregate,
    synthetic_minutes,
)
from cryptoflow.candles import INTERVAL_MS, Candle

log = logging.getLogger(__package__)  # one logger for the whole replay


class Timeline:
    """Historical candles moved onto a replay clock (see "Time" in the module docstring)."""

    def __init__(
        self,
        history: dict[tuple[str, str], list[Candle]],
        *,
        speed: float = 60.0,
        shift_to_present: bool = True,
        play_hours: float = 24.0,
        start_ms: int | None = None,
        wall_start: float | None = None,
        shift: dict[str, int] | None = None,
    ):
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
        ends = {
            s: max(
                _ceil(cs[-1].open_time + INTERVAL_MS[i], HOUR_MS)
                for (sym, i), cs in history.items()
                if sym == s
            )
            for s in self.symbols
        }
        if shift_to_present:
            end = (wall_ms + int(span / self.speed)) // HOUR_MS * HOUR_MS
            # `shift`: a recorded timeline (anchored_timeline), so that a restart replays the same
            # candles at the same times instead of moving the history again.
            self.shift = (
                {s: shift[s] for s in self.symbols}
                if shift is not None
                else {s: end - ends[s] for s in self.symbols}
            )
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
        lo, hi = start_ms - shift, end_ms - shift  # original timeline
        if kind == "native":
            key = (symbol, interval)
            src = self.history[key]
            opens = self._opens[key]
            picked = src[bisect.bisect_left(opens, lo) : bisect.bisect_right(opens, hi)]
        else:
            key = (symbol, "1h")
            hours, opens = self.history[key], self._opens[key]
            picked = []
            step = INTERVAL_MS[interval] // MINUTE_MS
            for hour in hours[
                bisect.bisect_left(opens, lo - HOUR_MS + 1) : bisect.bisect_right(opens, hi)
            ]:
                minutes = synthetic_minutes(hour)
                groups = (
                    [minutes[i : i + step] for i in range(0, 60, step)]
                    if step > 1
                    else [(m,) for m in minutes]
                )
                for g in groups:
                    if lo <= g[0].open_time <= hi:
                        picked.append(g[0] if step == 1 else aggregate(list(g), interval))
        if not shift:
            return list(picked)
        return [
            dataclasses.replace(c, open_time=c.open_time + shift, close_time=c.close_time + shift)
            for c in picked
        ]

    def candle_at(self, symbol: str, interval: str, t_ms: int) -> Candle | None:
        """The candle whose interval contains t_ms, or None (no data there)."""
        iv = INTERVAL_MS.get(interval)
        if iv is None:
            return None
        found = self.candles(symbol, interval, t_ms - t_ms % iv, t_ms - t_ms % iv)
        return found[0] if found else None


def _ceil(value: int, step: int) -> int:
    return -(-value // step) * step


def anchored_timeline(
    history: dict[tuple[str, str], list[Candle]],
    anchor_file: Path,
    *,
    play_hours: float,
    wall_start: float | None = None,
) -> Timeline:
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
        tl = Timeline(
            history,
            speed=1.0,
            shift_to_present=True,
            play_hours=play_hours,
            wall_start=wall_start,
            shift=recorded,
        )
        if tl.end_ms > tl.start_ms:
            log.info(
                "replay: the timeline recorded in %s (history until %s)",
                anchor_file,
                _iso(tl.end_ms),
            )
            return tl
        log.warning(
            "replay: the timeline recorded in %s ran out of history at %s: starting a new one (the "
            "candles stored before now will not line up with it)",
            anchor_file,
            _iso(tl.end_ms),
        )
    tl = Timeline(
        history, speed=1.0, shift_to_present=True, play_hours=play_hours, wall_start=wall_start
    )
    anchor_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = anchor_file.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"shift": tl.shift, "recorded_at": _iso(int(tl.start_ms))}, indent=1) + "\n"
    )
    os.replace(tmp, anchor_file)
    return tl


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


__all__ = ["Timeline", "anchored_timeline"]
