"""CryptoDataDownload CSV files, e.g. `Binance_BTCUSDT_1h.csv`.

Layout: line 1 the site's URL (absent from some republished copies), then the header
`unix,date,symbol,open,high,low,close,Volume <BASE>,Volume <QUOTE>,tradecount`, then rows newest
first. Real files (see /work/shared/data/README.md) also carry:
- `unix` in seconds with a trailing ".0" in older rows, milliseconds in newer ones: the unit is
  told apart by magnitude (cryptoflow.candles.epoch_to_ms), never assumed;
- `date` as `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DD HH-AM` (12-hour clock): it must name the same
  instant as `unix` (else date_unix_mismatch: one of the two is wrong and we can't tell which);
  any other spelling is unparseable_date;
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
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

from cryptoflow.candles import (
    INTERVAL_MS, Candle, CandleFormatError, epoch_to_ms, parse_decimal, parse_int, reject,
)
from cryptoflow.importers.common import ImportResult, finish

_FILE_NAME = re.compile(r"(?:[A-Za-z]+_)?(?P<symbol>[A-Z0-9]+)_(?P<interval>[0-9A-Za-z]+)(?:_[^.]*)?\.csv", re.I)
# CDD's interval spellings -> Binance's. "1m" is left out on purpose: minute or month?
_INTERVALS = {"1h": "1h", "h": "1h", "d": "1d", "1d": "1d", "minute": "1m", "4h": "4h", "1w": "1w", "w": "1w"}
_ISO = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)")
_AMPM = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d)-(AM|PM)")


def parse_file_name(path: str | Path) -> tuple[str, str]:
    """(symbol, interval) from `Binance_BTCUSDT_1h.csv` / `Binance_BTCUSDT_1h_2017-2021.csv`."""
    name = Path(path).name
    m = _FILE_NAME.fullmatch(name)
    if not m:
        raise ValueError(f"{name}: not a CryptoDataDownload file name like Binance_BTCUSDT_1h.csv")
    interval = _INTERVALS.get(m["interval"].lower())
    if interval is None:
        raise ValueError(f"{name}: interval {m['interval']!r} is not one this importer can read unambiguously")
    return m["symbol"].upper(), interval


def parse_cdd_date(text: str) -> int:
    """The CDD `date` column as ms UTC; CandleFormatError(unparseable_date) unless unambiguous.

    `05-AM` is hour 5, `12-AM` midnight, `12-PM` noon (the 12-hour clock's only convention);
    hours outside 01..12 with AM/PM, or any other layout, are refused.
    """
    m = _ISO.fullmatch(text)
    try:
        if m:
            y, mo, d, h, mi, s = map(int, m.groups())
            dt = datetime(y, mo, d, h, mi, s, tzinfo=timezone.utc)
        else:
            m = _AMPM.fullmatch(text)
            if not m:
                raise ValueError("unknown layout")
            h12 = int(m[4])
            if not 1 <= h12 <= 12:
                raise ValueError("hour outside 01..12 on a 12-hour clock")
            hour = (h12 % 12) + (12 if m[5] == "PM" else 0)
            dt = datetime(int(m[1]), int(m[2]), int(m[3]), hour, tzinfo=timezone.utc)
    except ValueError as exc:
        raise CandleFormatError("unparseable_date", f"date {text[:40]!r}: {exc}") from None
    return int(dt.timestamp()) * 1000


def _unix_ms(text: str) -> int:
    """`unix` in s, ms or µs, possibly written as a float ("1502949600.0"); must be whole."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value != value.to_integral_value() or "_" in text or not text.isascii():
        if text == "":
            raise CandleFormatError("missing_field", "unix is empty")
        raise CandleFormatError("bad_timestamp", f"unix={text[:40]!r} is not a whole number")
    return epoch_to_ms(int(value), "unix")


def _columns(header: list[str], symbol: str) -> dict[str, int]:
    names = [h.strip() for h in header]
    pos = {n.lower(): i for i, n in enumerate(names)}
    missing = [n for n in ("unix", "date", "symbol", "open", "high", "low", "close", "tradecount") if n not in pos]
    vols = [(i, n[len("Volume "):].upper()) for i, n in enumerate(names) if n.lower().startswith("volume ")]
    base = [i for i, asset in vols if symbol.startswith(asset)]
    quote = [i for i, asset in vols if symbol.endswith(asset) and i not in base]
    if missing or len(base) != 1 or len(quote) != 1:
        raise ValueError(f"unexpected CryptoDataDownload header {names} for {symbol} (missing {missing})")
    cols = {n: pos[n] for n in ("unix", "date", "symbol", "open", "high", "low", "close", "tradecount")}
    cols["base_volume"], cols["quote_volume"] = base[0], quote[0]
    return cols


def import_cdd_csv(path: str | Path, *, symbols=None, allow_missing_trades: bool = False,
                   source: str | None = None) -> ImportResult:
    """Read one CDD file; every data row ends up loaded, quarantined or collapsed as a duplicate.

    `symbols`: configured symbols for the unknown_symbol rule (None: any). Blank lines are not rows.
    """
    path = Path(path)
    symbol, interval = parse_file_name(path)
    interval_ms = INTERVAL_MS[interval]
    source = source or f"cryptodatadownload:{path.name}"
    lines = path.read_text(encoding="utf-8").splitlines()
    # The URL line is there in files as CDD serves them, missing in some republished copies.
    if lines and lines[0].lower().startswith("http"):
        lines = lines[1:]
    if not lines or not lines[0].lower().startswith("unix,"):
        raise ValueError(f"{path.name}: expected a CryptoDataDownload header (unix,date,symbol,...)")
    header = next(csv.reader([lines[0]]))
    cols = _columns(header, symbol)
    width = len(header)

    read = 0
    parsed: list[tuple[Candle, str]] = []
    rejections = []
    data = [ln for ln in lines[1:] if ln.strip()]
    for raw in data:
        # One csv.reader per line: a stray quote must not swallow the following lines.
        fields = next(csv.reader([raw]), [])
        read += 1
        open_time = None
        try:
            if len(fields) != width:
                raise CandleFormatError("malformed_row", f"expected {width} columns, got {len(fields)}")
            open_time = _unix_ms(fields[cols["unix"]])
            row_symbol = fields[cols["symbol"]].replace("/", "").upper()
            if row_symbol != symbol:
                raise CandleFormatError("symbol_mismatch", f"row symbol {fields[cols['symbol']]!r} in a {symbol} file")
            date_ms = parse_cdd_date(fields[cols["date"]])
            if date_ms != open_time:
                raise CandleFormatError(
                    "date_unix_mismatch",
                    f"date {fields[cols['date']]!r} is {(date_ms - open_time) / 3_600_000:+g} h from unix "
                    f"{fields[cols['unix']]!r}")
            trades_text = fields[cols["tradecount"]]
            trades = None if trades_text.upper() in ("NULL", "") else parse_int(trades_text, "tradecount")
            candle = Candle(
                symbol=symbol, interval=interval, open_time=open_time,
                close_time=open_time + interval_ms - 1,
                open=parse_decimal(fields[cols["open"]], "open"),
                high=parse_decimal(fields[cols["high"]], "high"),
                low=parse_decimal(fields[cols["low"]], "low"),
                close=parse_decimal(fields[cols["close"]], "close"),
                base_volume=parse_decimal(fields[cols["base_volume"]], "base_volume"),
                quote_volume=parse_decimal(fields[cols["quote_volume"]], "quote_volume"),
                taker_buy_base_volume=None, taker_buy_quote_volume=None,
                trades=trades, closed=True, source=source,
            )
        except CandleFormatError as exc:
            rejections.append(reject(exc.reason, exc.detail, raw, source, symbol, interval, open_time))
            continue
        parsed.append((candle, raw))
    return finish(read, parsed, rejections, symbols=symbols, allow_missing_trades=allow_missing_trades)
