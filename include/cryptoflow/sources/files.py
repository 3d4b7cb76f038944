"""Candle files on disk as a source: no network, no stream, history only.

Also what the Binance emulator serves: `history_files`, `load_history` and `default_data_dirs`
are the one reading of a data directory, here and there.

The files are the ones the replay server serves (CryptoDataDownload CSVs, data.binance.vision
dumps), found in CRYPTOFLOW_REPLAY_DATA or else the shared data's cryptodatadownload/, and read
through the importers: a row they would quarantine is absent here (a hole, healed by nobody),
never repaired. A symbol's files are parsed once, on its first request.
"""

from __future__ import annotations

import bisect
import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

from cryptoflow.candles import INTERVAL_MS, Candle

log = logging.getLogger(__name__)


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


def load_history(
    paths: Iterable[str | Path], symbols: Iterable[str] | None = None
) -> dict[tuple[str, str], list[Candle]]:
    """{(symbol, interval): candles oldest first} from CDD CSVs and data.binance.vision dumps.

    Rows the importers quarantine are left out: the replay must never serve a candle the platform
    itself would reject.
    """
    from cryptoflow.sources.binance.archive import import_binance_vision
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
            log.info(
                "%s: %d rows quarantined by the importer are holes in the replay",
                f.name,
                len(result.rejections),
            )
    return {key: [by_time[t] for t in sorted(by_time)] for key, by_time in out.items()}


def default_data_dirs(settings) -> list[Path]:
    """Where the history comes from: the settings' replay data (CRYPTOFLOW_REPLAY_DATA), else the
    cryptodatadownload/ of the shared data (CRYPTOFLOW_SHARED_DATA)."""
    if settings.replay_data:
        return list(settings.replay_data)
    return [settings.shared_data / "cryptodatadownload"]


class FileHistory:
    """`fetch_klines` over candle files, with the REST client's contract (open time in [start, end])."""

    def __init__(self, paths: list[Path]):
        self.paths = list(paths)
        # symbol -> interval -> (open times, candles), both oldest first: parsed once, searched by bisect
        self._loaded: dict[str, dict[str, tuple[list[int], list[Candle]]]] = {}

    def _series(self, symbol: str, interval: str) -> tuple[list[int], list[Candle]]:
        symbol = symbol.upper()
        if symbol not in self._loaded:
            self._loaded[symbol] = {
                iv: ([c.open_time for c in candles], candles)
                for (_, iv), candles in load_history(self.paths, [symbol]).items()
            }
        return self._loaded[symbol].get(interval, ([], []))

    def fetch_klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, *, closed_only: bool = True
    ) -> list[Candle]:
        times, series = self._series(
            symbol, interval
        )  # files hold closed candles only: closed_only holds
        return series[bisect.bisect_left(times, start_ms) : bisect.bisect_right(times, end_ms)]

    def tick_sizes(self, symbols: Iterable[str]) -> dict[str, Decimal]:
        return {}  # candle files carry no exchange rules

    def close(self) -> None:
        self._loaded.clear()


@dataclass(frozen=True)
class FileSource:
    name: str = "files"
    intervals: tuple[str, ...] = tuple(
        INTERVAL_MS
    )  # whatever the files hold; absent ones are holes
    has_stream: bool = False

    def history(self, settings, *, paths: list[Path] | None = None, **options: Any) -> FileHistory:
        return FileHistory(paths or default_data_dirs(settings))

    def stream(self, settings, on_message, **options: Any):
        raise RuntimeError(
            "the files source has no live feed: its windows are sealed from the files"
        )

    def parse_message(self, raw: str, label: str) -> Candle:
        raise RuntimeError("the files source has no stream messages to parse")

    def control_kind(self, raw: str) -> str | None:
        return None


SOURCE = FileSource()
