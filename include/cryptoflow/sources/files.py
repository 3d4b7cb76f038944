"""Candle files on disk as a source: no network, no stream, history only.

The files are the ones the replay server serves (CryptoDataDownload CSVs, data.binance.vision
dumps), found in CRYPTOFLOW_REPLAY_DATA or else the shared data's cryptodatadownload/, and read
through the importers: a row they would quarantine is absent here (a hole, healed by nobody),
never repaired. A symbol's files are parsed once, on its first request.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

from cryptoflow.candles import INTERVAL_MS, Candle


class FileHistory:
    """`fetch_klines` over candle files, with the REST client's contract (open time in [start, end])."""

    def __init__(self, paths: list[Path]):
        self.paths = list(paths)
        # symbol -> interval -> (open times, candles), both oldest first: parsed once, searched by bisect
        self._loaded: dict[str, dict[str, tuple[list[int], list[Candle]]]] = {}

    def _series(self, symbol: str, interval: str) -> tuple[list[int], list[Candle]]:
        from cryptoflow.binance.replay.history import load_history

        symbol = symbol.upper()
        if symbol not in self._loaded:
            self._loaded[symbol] = {iv: ([c.open_time for c in candles], candles)
                                    for (_, iv), candles in load_history(self.paths, [symbol]).items()}
        return self._loaded[symbol].get(interval, ([], []))

    def fetch_klines(self, symbol: str, interval: str, start_ms: int, end_ms: int, *,
                     closed_only: bool = True) -> list[Candle]:
        times, series = self._series(symbol, interval)  # files hold closed candles only: closed_only holds
        return series[bisect.bisect_left(times, start_ms):bisect.bisect_right(times, end_ms)]

    def tick_sizes(self, symbols: Iterable[str]) -> dict[str, Decimal]:
        return {}  # candle files carry no exchange rules

    def close(self) -> None:
        self._loaded.clear()


@dataclass(frozen=True)
class FileSource:
    name: str = "files"
    intervals: tuple[str, ...] = tuple(INTERVAL_MS)  # whatever the files hold; absent ones are holes
    has_stream: bool = False

    def history(self, settings, *, paths: list[Path] | None = None, **options: Any) -> FileHistory:
        from cryptoflow.binance.replay.history import default_data_dirs

        return FileHistory(paths or default_data_dirs(settings))

    def stream(self, settings, on_message, **options: Any):
        raise RuntimeError("the files source has no live feed: its windows are sealed from the files")


SOURCE = FileSource()
