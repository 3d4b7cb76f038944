"""CryptoDataDownload CSV files, e.g. `Binance_BTCUSDT_1h.csv`, also as they come back from others.

Layout: line 1 the site's URL (absent from some republished copies), then the header
`unix,date,symbol,open,high,low,close,Volume <BASE>,Volume <QUOTE>,tradecount` (columns found by
name; a spreadsheet may add a separate `time` column), then rows newest first.

The file's meaning is read from its content; its name is only a hint (files get renamed):
- symbol: the symbol column (`ADA/USDT` -> ADAUSDT), the one the header's volume columns fit;
  `symbol=` (the CLI's --symbol) must agree with it, else the file is refused. Rows of another
  symbol are quarantined as symbol_mismatch;
- interval: the most common spacing of the open times (cryptoflow.importers.layout);
- date order: day-first or month-first, decided once per file from the data; a file that stays
  ambiguous is refused whole (ImportRefused, with the reason).

The time of a row comes from whichever column is exact (rules in cryptoflow.importers.layout):
- an exact `unix` (s with a trailing ".0" in older rows, ms in newer ones, told apart by magnitude)
  is the open time, and `date` must name the same instant (else date_unix_mismatch: one of the
  two is wrong and we can't tell which);
- a `unix` a spreadsheet rewrote in scientific notation (`1.63875E+12`) has lost digits: `date`
  gives the time, the unix value must agree within its precision (else date_unix_mismatch), and
  where that precision can't pin the candle the date must fit the sequence of its neighbours
  (else unparseable_date);
- `date` as `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DD HH-AM` (12-hour clock), unpadded hours, missing
  seconds, `/` separators, `31-08-2021 23:00`, `08/31/2021 11:00 PM`, `06-12-21` plus a time
  column; anything else is unparseable_date.
Other quirks of real files (see the README of the shared data directory):
- `NULL` trade counts: missing data. The prices may be fine, but the row is not a complete
  candle, and the issue wants such rows quarantined with their reason (missing_trade_count)
  rather than loaded as if clean. `allow_missing_trades=True` loads them with trades=NULL
  instead, for whoever decides an incomplete history beats none; the default follows the issue.
- hours present twice: equal copies collapse (counted), differing copies are all quarantined.
CDD files have no close time and no taker volumes: close = open + interval - 1, takers NULL.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptoflow.candles import (
    Candle,
    CandleFormatError,
    INTERVAL_MS,
    Rejection,
    parse_decimal,
    parse_int,
    reject,
)
from cryptoflow.importers import layout
from cryptoflow.importers.common import (
    PROGRESS_EVERY,
    ImportRefused,
    ImportResult,
    Progress,
    finish,
)

_FILE_NAME = re.compile(
    r"(?:[A-Za-z]+_)?(?P<symbol>[A-Z0-9]+)_(?P<interval>[0-9A-Za-z]+)(?:_[^.]*)?\.csv", re.I
)
# CDD's interval spellings -> Binance's. "1m" is left out on purpose: minute or month?
_INTERVALS = {
    "1h": "1h",
    "h": "1h",
    "d": "1d",
    "1d": "1d",
    "minute": "1m",
    "4h": "4h",
    "1w": "1w",
    "w": "1w",
}
_REQUIRED = ("unix", "date", "symbol", "open", "high", "low", "close", "tradecount")
_ALIASES = {"unix timestamp": "unix"}
_T = TypeVar("_T")


def parse_file_name(path: str | Path) -> tuple[str, str]:
    """(symbol, interval) from `Binance_BTCUSDT_1h.csv` / `Binance_BTCUSDT_1h_2017-2021.csv`."""
    name = Path(path).name
    m = _FILE_NAME.fullmatch(name)
    if not m:
        raise ValueError(f"{name}: not a CryptoDataDownload file name like Binance_BTCUSDT_1h.csv")
    interval = _INTERVALS.get(m["interval"].lower())
    if interval is None:
        raise ValueError(
            f"{name}: interval {m['interval']!r} is not one this importer can read unambiguously"
        )
    return m["symbol"].upper(), interval


def file_name_hint(path: str | Path) -> tuple[str | None, str | None]:
    """What the file name suggests, (symbol, interval), each None where it says nothing usable."""
    m = _FILE_NAME.fullmatch(Path(path).name)
    # `j_ADA.csv` fits the pattern too, but "ADA" is no interval: then the name follows no layout.
    if not m or not (
        m["interval"].lower() in _INTERVALS or re.fullmatch(r"\d+[a-z]+", m["interval"], re.I)
    ):
        return None, None
    return m["symbol"].upper(), _INTERVALS.get(m["interval"].lower())


def parse_cdd_date(text: str, order: str | None = None) -> int:
    """The CDD `date` column as ms UTC; CandleFormatError(unparseable_date) unless unambiguous.

    `order` (layout.DAY_FIRST / MONTH_FIRST) is the file's, for dates not written year first;
    without it such a date is read only when both orders name the same day or only one exists.
    `05-AM` is hour 5, `12-AM` midnight, `12-PM` noon (the 12-hour clock's only convention).
    """
    return layout.date_instant(layout.read_date(text), order)


def _unix_ms(text: str) -> int:
    """An exact `unix` in ms (s, ms or µs, possibly "1502949600.0"); a value that has lost digits
    (scientific notation) is bad_timestamp here: it can bound a time, never give one."""
    value = layout.read_unix(text)
    if not value.exact:
        raise CandleFormatError(
            "bad_timestamp", f"unix={text[:40]!r} has lost digits (±{value.tolerance_ms} ms)"
        )
    return int(value.ms)


@dataclass(frozen=True)
class _Columns:
    pos: dict[str, int]  # required names (+ "time" when present) -> index
    volumes: list[tuple[int, str]]  # (index, asset) of each "Volume <ASSET>" column
    width: int

    def volume_columns(self, symbol: str) -> tuple[int, int] | None:
        """(base, quote) volume columns for `symbol`, None when the header doesn't fit it."""
        base = [i for i, asset in self.volumes if symbol.startswith(asset)]
        quote = [i for i, asset in self.volumes if symbol.endswith(asset) and i not in base]
        return (base[0], quote[0]) if len(base) == 1 and len(quote) == 1 else None


def _columns(header: list[str]) -> _Columns:
    names = [h.strip() for h in header]
    pos: dict[str, int] = {}
    for i, n in enumerate(names):
        pos.setdefault(_ALIASES.get(n.lower(), n.lower()), i)
    missing = [n for n in _REQUIRED if n not in pos]
    if missing:
        raise ImportRefused(f"unexpected CryptoDataDownload header {names} (missing {missing})")
    vols = [
        (i, n[len("Volume ") :].strip().upper())
        for i, n in enumerate(names)
        if n.lower().startswith("volume ")
    ]
    keep = {n: pos[n] for n in _REQUIRED + ("time",) if n in pos}
    return _Columns(keep, vols, len(names))


def _header_and_data(path: Path) -> tuple[list[str], list[str]]:
    # utf-8-sig: spreadsheets often write a byte-order mark.
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    # The URL line is there in files as CDD serves them, missing in some republished copies
    # (and padded with commas by spreadsheets).
    if lines and next(csv.reader([lines[0]]), [""])[0].strip().lower().startswith("http"):
        lines = lines[1:]
    header = next(csv.reader(lines[:1]), [])
    if not {"unix", "date"} <= {_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header}:
        raise ImportRefused("expected a CryptoDataDownload header (unix,date,symbol,...)")
    return header, [ln for ln in lines[1:] if ln.strip()]


@dataclass
class _Row:
    """One data row after the first pass: what could be read of its time and symbol."""

    raw: str
    fields: list[str] | None = None
    error: CandleFormatError | None = None  # the first problem, in the order rows are judged
    unix: layout.UnixValue | None = None
    unix_error: CandleFormatError | None = None
    date: layout.WrittenDate | None = None
    date_error: CandleFormatError | None = None
    open_time: int | None = None


@dataclass(frozen=True)
class _Timed:
    """A row the second pass gave a time: what the later passes need of it."""

    index: int  # among the file's data rows
    fields: list[str]
    unix: layout.UnixValue
    date: layout.WrittenDate
    open_time: int
    from_date: bool  # the time came from the date alone


def _read(value: _T | None, error: CandleFormatError | None) -> _T:
    """A column of a row _first_pass read: its value, or (raised) the error met reading it."""
    if error is not None:
        raise error
    # _first_pass records either a value or an error for each column of a row it read.
    assert value is not None
    return value


def _first_pass(data: list[str], cols: _Columns, progress: Progress | None) -> list[_Row]:
    rows = []
    time_col = cols.pos.get("time")
    for i, raw in enumerate(data):
        if progress and i % PROGRESS_EVERY == 0 and i:
            progress("reading", i, len(data))
        # One csv.reader per line: a stray quote must not swallow the following lines.
        fields = next(csv.reader([raw]), [])
        row = _Row(raw)
        rows.append(row)
        if len(fields) != cols.width:
            row.error = CandleFormatError(
                "malformed_row", f"expected {cols.width} columns, got {len(fields)}"
            )
            continue
        row.fields = fields
        try:
            row.unix = layout.read_unix(fields[cols.pos["unix"]])
        except CandleFormatError as exc:
            row.unix_error = exc
        try:
            row.date = layout.read_date(
                fields[cols.pos["date"]], None if time_col is None else fields[time_col]
            )
        except CandleFormatError as exc:
            row.date_error = exc
    return rows


def _hours(ms) -> str:
    return f"{float(ms) / 3_600_000:+g} h"


def _time_of(
    unix: layout.UnixValue, date: layout.WrittenDate, order: str | None
) -> tuple[int, bool]:
    """(open time, whether it came from the date alone) from the exact column; CandleFormatError
    when the columns disagree (the order rows were always judged in: unix, then date, then their
    agreement)."""
    date_text = date.text
    ms = layout.date_instant(date, order)
    if unix.exact:
        open_time = int(unix.ms)
        if ms != open_time:
            raise CandleFormatError(
                "date_unix_mismatch",
                f"date {date_text!r} is {(ms - open_time) / 3_600_000:+g} h from unix {unix.text!r}",
            )
        return open_time, False
    if not unix.agrees(ms):
        raise CandleFormatError(
            "date_unix_mismatch",
            f"date {date_text!r} is {_hours(ms - unix.ms)} from unix {unix.text!r}, more than its precision "
            f"(±{float(unix.tolerance_ms) / 3_600_000:g} h)",
        )
    return ms, True


def _candle(
    fields: list[str],
    cols: _Columns,
    volumes: tuple[int, int],
    symbol: str,
    interval: str,
    open_time: int,
    source: str,
) -> Candle:
    trades_text = fields[cols.pos["tradecount"]]
    trades = None if trades_text.upper() in ("NULL", "") else parse_int(trades_text, "tradecount")
    return Candle(
        symbol=symbol,
        interval=interval,
        open_time=open_time,
        close_time=open_time + INTERVAL_MS[interval] - 1,
        open=parse_decimal(fields[cols.pos["open"]], "open"),
        high=parse_decimal(fields[cols.pos["high"]], "high"),
        low=parse_decimal(fields[cols.pos["low"]], "low"),
        close=parse_decimal(fields[cols.pos["close"]], "close"),
        base_volume=parse_decimal(fields[volumes[0]], "base_volume"),
        quote_volume=parse_decimal(fields[volumes[1]], "quote_volume"),
        taker_buy_base_volume=None,
        taker_buy_quote_volume=None,
        trades=trades,
        closed=True,
        source=source,
    )


def _decide_order(rows: list[_Row], notes: list[str]) -> str | None:
    decision = layout.decide_date_order([r.date for r in rows], [r.unix for r in rows])
    if decision.order:
        notes.append(f"dates read {decision.order} ({decision.evidence})")
    elif decision.ambiguous:
        dated = sum(r.date is not None for r in rows)
        if decision.needed * 2 > dated:
            raise ImportRefused(f"date order ambiguous ({decision.evidence})")
        # A few odd dates among year-first ones don't make the file ambiguous: only those rows are.
        notes.append(
            f"{decision.needed} date(s) that read differently day-first and month-first are "
            f"quarantined ({decision.evidence})"
        )
    return decision.order


def import_cdd_csv(
    path: str | Path,
    *,
    symbols=None,
    allow_missing_trades: bool = False,
    source: str | None = None,
    symbol: str | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Read one CDD file; every data row ends up loaded, quarantined or collapsed as a duplicate.

    `symbols`: configured symbols for the unknown_symbol rule (None: any). Blank lines are not rows.
    `symbol`: the file's symbol as the user states it; it must agree with the symbol column.
    Raises ImportRefused (a ValueError) when the file as a whole can't be read safely.
    """
    path = Path(path)
    source = source or f"cryptodatadownload:{path.name}"
    name_symbol, name_interval = file_name_hint(path)
    header, data = _header_and_data(path)
    cols = _columns(header)
    rows = _first_pass(data, cols, progress)
    notes: list[str] = []
    file_symbol, volumes = _decide_symbol(rows, cols, name_symbol, symbol, notes)
    order = _decide_order(rows, notes)
    timed = _second_pass(rows, cols, file_symbol, order)
    interval, note = layout.decide_interval((t.open_time for t in timed.values()), name_interval)
    if interval is None:
        raise ImportRefused(f"no interval: {note}")
    notes += [note] if note else []
    _check_sequence(rows, timed, cols, interval)
    parsed, rejections = _third_pass(
        rows, timed, cols, volumes, file_symbol, interval, source, progress
    )
    return finish(
        len(rows),
        parsed,
        rejections,
        symbols=symbols,
        allow_missing_trades=allow_missing_trades,
        notes=notes,
        symbol=file_symbol,
        interval=interval,
    )


def _decide_symbol(
    rows: list[_Row], cols: _Columns, name_symbol: str | None, symbol: str | None, notes: list[str]
) -> tuple[str, tuple[int, int]]:
    """(the file's symbol, its volume columns), from its rows, its name and what the user states."""
    try:
        file_symbol, note = layout.decide_symbol(
            (r.fields[cols.pos["symbol"]] for r in rows if r.fields),
            lambda s: cols.volume_columns(s) is not None,
            name_symbol,
            symbol,
        )
    except ValueError as exc:
        raise ImportRefused(str(exc)) from None
    notes += [note] if note else []
    volumes = cols.volume_columns(file_symbol)
    if volumes is None:  # decide_symbol only returns a symbol the header's volume columns fit
        raise ImportRefused(f"the header's volume columns don't fit {file_symbol}")
    return file_symbol, volumes


def _second_pass(
    rows: list[_Row], cols: _Columns, file_symbol: str, order: str | None
) -> dict[int, _Timed]:
    """Each readable row's symbol checked and open time decided: {row index: _Timed}; the others
    get their error."""
    timed: dict[int, _Timed] = {}  # by row index: the rows without error from here on
    for i, row in enumerate(rows):
        fields = row.fields
        if fields is None:  # malformed: the first pass set row.error
            continue
        try:
            unix = _read(row.unix, row.unix_error)
            if unix.exact:
                row.open_time = int(unix.ms)  # known before the date is judged, as it always was
            row_symbol = layout.normalise_symbol(fields[cols.pos["symbol"]])
            if row_symbol != file_symbol:
                raise CandleFormatError(
                    "symbol_mismatch",
                    f"row symbol {fields[cols.pos['symbol']]!r} in a {file_symbol} file",
                )
            date = _read(row.date, row.date_error)
            open_time, from_date = _time_of(unix, date, order)
            row.open_time = open_time
            timed[i] = _Timed(i, fields, unix, date, open_time, from_date)
        except CandleFormatError as exc:
            row.error = exc
    return timed


def _third_pass(
    rows: list[_Row],
    timed: dict[int, _Timed],
    cols: _Columns,
    volumes: tuple[int, int],
    file_symbol: str,
    interval: str,
    source: str,
    progress: Progress | None,
) -> tuple[list[tuple[Candle, str]], list[Rejection]]:
    """(candles with their raw lines, rejections): every row parsed or quarantined with its error."""
    parsed: list[tuple[Candle, str]] = []
    rejections: list[Rejection] = []
    for i, row in enumerate(rows):
        if progress and i % PROGRESS_EVERY == 0 and i:
            progress("checking", i, len(rows))
        try:
            if row.error:
                raise row.error
            t = timed[i]  # a row still without error was timed by the second pass
            parsed.append(
                (
                    _candle(t.fields, cols, volumes, file_symbol, interval, t.open_time, source),
                    row.raw,
                )
            )
        except CandleFormatError as exc:
            rejections.append(
                reject(
                    exc.reason, exc.detail, row.raw, source, file_symbol, interval, row.open_time
                )
            )
    return parsed, rejections


def _check_sequence(
    rows: list[_Row], timed: dict[int, _Timed], cols: _Columns, interval: str
) -> None:
    """Quarantines rows whose time rests on the date alone and which their neighbours don't confirm.

    `timed`: the rows without error (all the second pass timed), by index in `rows`."""
    interval_ms = INTERVAL_MS[interval]
    time_cols = {cols.pos["unix"], cols.pos["date"], cols.pos.get("time")}
    candidates = [i for i, t in timed.items() if t.from_date and not t.unix.pins(interval_ms)]
    if not candidates:
        return
    sequence = [
        layout.Timed(i, t.open_time, tuple(f for j, f in enumerate(t.fields) if j not in time_cols))
        for i, t in timed.items()
    ]
    for i in layout.unconfirmed_by_sequence(sequence, candidates, interval_ms):
        t = timed[i]
        rows[i].error = CandleFormatError(
            "unparseable_date",
            f"date {t.date.text!r} is out of step with the neighbouring rows, and unix {t.unix.text!r} "
            f"(±{float(t.unix.tolerance_ms) / 3_600_000:g} h) is too coarse to confirm it",
        )
