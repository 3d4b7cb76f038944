"""The history the replay serves: candle files found in data directories, loaded through the importers.

Two kinds of files are served: CryptoDataDownload hourly CSVs (`Binance_<SYMBOL>_1h.csv`, the
shared data's cryptodatadownload/) and data.binance.vision dumps (`<SYMBOL>-<interval>-YYYY-MM[-DD]
.csv|zip`, e.g. native `1m`). Rows the importers quarantine are left out: they are holes in the
replay, like exchange outages, which are kept as holes too.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable

from cryptoflow.candles import Candle

log = logging.getLogger(__package__)  # one logger for the whole replay


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


def default_data_dirs(settings) -> list[Path]:
    """Where the history comes from: the settings' replay data (CRYPTOFLOW_REPLAY_DATA), else the
    cryptodatadownload/ of the shared data (CRYPTOFLOW_SHARED_DATA)."""
    if settings.replay_data:
        return list(settings.replay_data)
    return [settings.shared_data / "cryptodatadownload"]


__all__ = ["history_files", "symbols_with_history", "load_history", "default_data_dirs"]
