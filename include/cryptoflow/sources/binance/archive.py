"""data.binance.vision kline dumps: `<SYMBOL>-<interval>-YYYY-MM(.zip|.csv)` (daily: `-YYYY-MM-DD`).

Header-less CSV with the REST API's 12 columns. Spot dumps from 2025-01-01 carry microsecond
timestamps (16 digits), earlier ones milliseconds (13 digits): each row's unit is told apart by
magnitude (cryptoflow.candles.epoch_to_ms), so a file straddling the switch is read correctly.
Some (futures) dumps start with a header line `open_time,open,...`: skipped, not counted as a row.
Monthly-interval dumps (`1mo`) are refused: calendar months have no fixed length.

The rows don't name their symbol: it comes from the file name, or from `symbol=` (the CLI's
--symbol) for a renamed file. The interval is the rows' own length (close - open + 1) where most
agree; else the name's, else the spacing of the open times (cryptoflow.importers.layout).
A ZIP is checked against the `.CHECKSUM` file data.binance.vision publishes beside it
(`<sha256 hex>  BTCUSDT-1m-2024-01.zip`): a mismatch refuses the file; a missing one is noted.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import re
import zipfile
from collections import Counter
from pathlib import Path

from cryptoflow.candles import (
    INTERVAL_MS,
    MAX_OPEN_TIME_MS,
    MIN_OPEN_TIME_MS,
    UNSUPPORTED_INTERVALS,
    Candle,
    CandleFormatError,
    Rejection,
    reject,
)
from cryptoflow.importers import layout
from cryptoflow.sources.binance.wire import from_rest_row
from cryptoflow.importers.common import (
    PROGRESS_EVERY,
    ImportRefused,
    ImportResult,
    Progress,
    finish,
)

_FILE_NAME = re.compile(
    r"(?P<symbol>[A-Z0-9]+)-(?P<interval>\d+[smhdwM]|1mo)-(?P<date>\d{4}-\d\d(?:-\d\d)?)\.(?P<ext>zip|csv)"
)
_UNDECIDED = "x"  # the interval rows are parsed with until the spacing of their times decides it


def parse_file_name(path: str | Path) -> tuple[str, str]:
    name = Path(path).name
    m = _FILE_NAME.fullmatch(name)
    if not m:
        raise ValueError(
            f"{name}: not a data.binance.vision kline file name like BTCUSDT-1m-2024-01.zip"
        )
    if m["interval"] not in INTERVAL_MS:
        raise ValueError(
            f"{name}: interval {m['interval']!r} has no fixed length / is not supported"
        )
    return m["symbol"], m["interval"]


def verify_checksum(path: Path) -> str:
    """A note on the published checksum beside `path`; ImportRefused when it doesn't match."""
    checksum = path.with_name(path.name + ".CHECKSUM")
    if not checksum.is_file():
        return f"no {checksum.name} beside it: integrity not verified"
    fields = checksum.read_text(encoding="utf-8", errors="replace").split()
    expected = fields[0].lower() if fields else ""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if actual != expected:
        raise ImportRefused(
            f"checksum mismatch: the file's sha256 is {actual[:16]}..., "
            f"{checksum.name} says {expected[:16] or '(nothing)'}..."
        )
    return ""


def _text(path: Path) -> str:
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                members = [n for n in zf.namelist() if n.endswith(".csv")]
                if len(members) != 1:
                    raise ImportRefused(f"expected one CSV inside, found {members}")
                return zf.read(members[0]).decode("utf-8")
        except zipfile.BadZipFile as exc:
            raise ImportRefused(f"not a readable ZIP ({exc})") from None
    return path.read_text(encoding="utf-8")


def _identity(path: Path, symbol: str | None) -> tuple[str, str | None, list[str]]:
    """(symbol, interval hint, notes) from the file name and the user's `symbol`."""
    m = _FILE_NAME.fullmatch(path.name)
    if m and m["interval"] in UNSUPPORTED_INTERVALS:
        raise ImportRefused(f"interval {m['interval']!r}: {UNSUPPORTED_INTERVALS[m['interval']]}")
    name_symbol, hint = (
        (m["symbol"], m["interval"] if m["interval"] in INTERVAL_MS else None)
        if m
        else (None, None)
    )
    if symbol:
        symbol = symbol.replace("/", "").upper()
        notes = (
            [f"the file name says {name_symbol}, read as {symbol} (--symbol)"]
            if name_symbol not in (None, symbol)
            else []
        )
        return symbol, hint, notes
    if name_symbol is None:
        raise ImportRefused(
            "the rows don't name their symbol and the file name isn't like BTCUSDT-1m-2024-01.zip: "
            "give --symbol"
        )
    return name_symbol, hint, []


def _interval(parsed, hint: str | None) -> tuple[str | None, str]:
    """Each row states its own length (close - open + 1 ms): the one most plausible rows agree on.
    Else the file name's interval, else the spacing of the open times (layout.decide_interval)."""
    by_ms = {v: k for k, v in INTERVAL_MS.items()}
    # Rows with an impossible open time or length are quarantined anyway: they are no evidence.
    lengths = Counter(
        c.close_time - c.open_time + 1
        for c, _ in parsed
        if MIN_OPEN_TIME_MS <= c.open_time < MAX_OPEN_TIME_MS
        and c.close_time - c.open_time + 1 in by_ms
    )
    if lengths:
        length, n = lengths.most_common(1)[0]
        if n * 2 > sum(lengths.values()):
            interval = by_ms[length]
            if hint and hint != interval:
                return (
                    interval,
                    f"the file name says {hint} but the rows are {interval} candles: read as {interval}",
                )
            return interval, ""
    if hint:
        return hint, ""
    return layout.decide_interval((c.open_time for c, _ in parsed), None)


def import_binance_vision(
    path: str | Path,
    *,
    symbols=None,
    source: str | None = None,
    symbol: str | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Read one dump file (ZIP or CSV); every row is loaded, quarantined or collapsed.

    Raises ImportRefused (a ValueError) when the file as a whole can't be read safely.
    """
    path = Path(path)
    symbol, hint, notes = _identity(path, symbol)
    note = verify_checksum(path)
    notes += [note] if note and path.suffix == ".zip" else []
    source = source or f"binance_vision:{path.name}"
    lines = [ln for ln in _text(path).splitlines() if ln.strip()]
    if lines and lines[0].split(",", 1)[0].strip().lower() == "open_time":
        lines = lines[1:]
    parsed: list[tuple[Candle, str]] = []
    errors: list[
        tuple[CandleFormatError, str]
    ] = []  # unreadable rows, rejected once the interval is known
    for i, raw in enumerate(lines):
        if progress and i % PROGRESS_EVERY == 0 and i:
            progress("reading", i, len(lines))
        # One csv.reader per line: a stray quote must not swallow the following lines.
        row = next(csv.reader([raw]), [])
        try:
            if len(row) != 12:
                raise CandleFormatError("malformed_row", f"expected 12 columns, got {len(row)}")
            candle = from_rest_row(symbol, _UNDECIDED, row, source, time_unit="auto")
        except CandleFormatError as exc:
            errors.append((exc, raw))
            continue
        parsed.append((candle, raw))
    interval, note = _interval(parsed, hint)
    if interval is None:
        raise ImportRefused(f"no interval: {note}")
    notes += [note] if note else []
    parsed = [(dataclasses.replace(c, interval=interval), raw) for c, raw in parsed]
    rejections: list[Rejection] = [
        reject(exc.reason, exc.detail, raw, source, symbol, interval) for exc, raw in errors
    ]
    return finish(
        len(lines),
        parsed,
        rejections,
        symbols=symbols,
        notes=notes,
        symbol=symbol,
        interval=interval,
    )
