"""data.binance.vision kline dumps: `<SYMBOL>-<interval>-YYYY-MM(.zip|.csv)` (daily: `-YYYY-MM-DD`).

Header-less CSV with the REST API's 12 columns. Spot dumps from 2025-01-01 carry microsecond
timestamps (16 digits), earlier ones milliseconds (13 digits): each row's unit is told apart by
magnitude (cryptoflow.candles.epoch_to_ms), so a file straddling the switch is read correctly.
Some (futures) dumps start with a header line `open_time,open,...`: skipped, not counted as a row.
Monthly-interval dumps (`1mo`) are refused: calendar months have no fixed length.
"""

from __future__ import annotations

import csv
import re
import zipfile
from pathlib import Path

from cryptoflow.candles import INTERVAL_MS, CandleFormatError, from_rest_row, reject
from cryptoflow.importers.common import ImportResult, finish

_FILE_NAME = re.compile(r"(?P<symbol>[A-Z0-9]+)-(?P<interval>\d+[smhdwM]|1mo)-(?P<date>\d{4}-\d\d(?:-\d\d)?)\.(?P<ext>zip|csv)")


def parse_file_name(path: str | Path) -> tuple[str, str]:
    name = Path(path).name
    m = _FILE_NAME.fullmatch(name)
    if not m:
        raise ValueError(f"{name}: not a data.binance.vision kline file name like BTCUSDT-1m-2024-01.zip")
    if m["interval"] not in INTERVAL_MS:
        raise ValueError(f"{name}: interval {m['interval']!r} has no fixed length / is not supported")
    return m["symbol"], m["interval"]


def _text(path: Path) -> str:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.endswith(".csv")]
            if len(members) != 1:
                raise ValueError(f"{path.name}: expected one CSV inside, found {members}")
            return zf.read(members[0]).decode("utf-8")
    return path.read_text(encoding="utf-8")


def import_binance_vision(path: str | Path, *, symbols=None, source: str | None = None) -> ImportResult:
    """Read one dump file (ZIP or CSV); every row is loaded, quarantined or collapsed."""
    path = Path(path)
    symbol, interval = parse_file_name(path)
    source = source or f"binance_vision:{path.name}"
    lines = [ln for ln in _text(path).splitlines() if ln.strip()]
    if lines and lines[0].split(",", 1)[0].strip().lower() == "open_time":
        lines = lines[1:]
    read = 0
    parsed, rejections = [], []
    for raw in lines:
        # One csv.reader per line: a stray quote must not swallow the following lines.
        row = next(csv.reader([raw]), [])
        read += 1
        try:
            if len(row) != 12:
                raise CandleFormatError("malformed_row", f"expected 12 columns, got {len(row)}")
            candle = from_rest_row(symbol, interval, row, source, time_unit="auto")
        except CandleFormatError as exc:
            rejections.append(reject(exc.reason, exc.detail, raw, source, symbol, interval))
            continue
        parsed.append((candle, raw))
    return finish(read, parsed, rejections, symbols=symbols)
