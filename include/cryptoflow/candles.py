"""The one definition of a valid candle, used by every component that accepts candles.

The websocket/REST ingester, the importers and the Spark ETL all validate through `RULES` below:
each rule is a named predicate written with operators only (`c.low <= c.high`, `&`, `==`, `%`), so
the very same lambda evaluates on a `Candle` (Python values) and on pyspark Columns
(cryptoflow.etl.rules.spark_violations). No rule is written twice.

Values are kept as `Decimal`, parsed from the exact strings Binance sends:
- exact: `Decimal("37388.05000000")` prints back as `37388.05000000`, so landing files carry the
  values as received, and comparisons (low <= open) are exact, like PostgreSQL `numeric` and Spark
  `decimal` on the other side. Floats would make the Python and Spark verdicts differ at the edges.
- fast enough: C `_decimal` parses a price in ~0.1 µs; the whole parse + validate + land path
  measures far above the 50,000 messages/s per core target (see cryptoflow_bench.ingest_parse).
  Keeping the raw strings instead would save little and force every rule to parse them anyway.
Times are int milliseconds since the epoch, UTC (Binance's REST/websocket unit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from operator import attrgetter
from typing import Callable, Iterable, cast

# Fixed-length Binance intervals in milliseconds. "1M" (calendar month) is deliberately absent:
# it has no fixed length, so alignment and close time can't be checked by arithmetic; candles of
# that interval are rejected as unknown_interval with a detail saying why.
INTERVAL_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 3 * 60_000,
    "5m": 5 * 60_000,
    "15m": 15 * 60_000,
    "30m": 30 * 60_000,
    "1h": 3_600_000,
    "2h": 2 * 3_600_000,
    "4h": 4 * 3_600_000,
    "6h": 6 * 3_600_000,
    "8h": 8 * 3_600_000,
    "12h": 12 * 3_600_000,
    "1d": 86_400_000,
    "3d": 3 * 86_400_000,
    # Binance weeks start on Monday 00:00 UTC; the epoch was a Thursday, so a week candle's open
    # time is 4 days off a multiple of 7 days. The alignment rule handles that via INTERVAL_OFFSET_MS.
    "1w": 7 * 86_400_000,
}
INTERVAL_OFFSET_MS: dict[str, int] = {k: (4 * 86_400_000 if k == "1w" else 0) for k in INTERVAL_MS}
UNSUPPORTED_INTERVALS = {
    "1M": "calendar-month candles have no fixed length; not supported",
    "1mo": "calendar-month candles have no fixed length; not supported",
}

# Open times outside this range are unit mistakes (seconds or microseconds read as ms), not data:
# Binance opened in July 2017; 2100 leaves room without accepting µs values (which are ~1000x larger).
MIN_OPEN_TIME_MS = 1_483_228_800_000  # 2017-01-01T00:00:00Z
MAX_OPEN_TIME_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z

# The landing format's columns, in file order (also the Candle field names, minus `closed`:
# only closed candles are landed).
LANDING_COLUMNS: tuple[str, ...] = (
    "symbol",
    "interval",
    "open_time",
    "close_time",
    "open",
    "high",
    "low",
    "close",
    "base_volume",
    "quote_volume",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
    "trades",
    "source",
)
# A candle as market.candles, the lake and the Spark frames hold it: the landing columns, then what
# a rollup of minutes adds (NULL on a source candle), source last.
KEY_COLUMNS: tuple[str, ...] = ("symbol", "interval", "open_time")
ROLLUP_COLUMNS: tuple[str, ...] = ("minute_count", "is_complete")
CANDLE_COLUMNS: tuple[str, ...] = LANDING_COLUMNS[:-1] + ROLLUP_COLUMNS + ("source",)
# What makes two copies of a key different candles: all but key and source (the Spark prediction and the SQL merge).
VALUE_COLUMNS: tuple[str, ...] = tuple(
    c for c in CANDLE_COLUMNS if c not in KEY_COLUMNS + ("source",)
)
PRICE_FIELDS = ("open", "high", "low", "close")
DECIMAL_FIELDS = PRICE_FIELDS + (
    "base_volume",
    "quote_volume",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
)
# Fields a candle can't exist without (the others are absent in some sources, e.g. CDD files).
REQUIRED_FIELDS = (
    ("symbol", "interval", "open_time", "close_time")
    + PRICE_FIELDS
    + ("base_volume", "quote_volume")
)


@dataclass(frozen=True, slots=True)
class Candle:
    symbol: str
    interval: str
    open_time: int  # ms UTC
    close_time: int  # ms UTC, Binance's: open_time + interval - 1
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    base_volume: Decimal
    quote_volume: Decimal
    taker_buy_base_volume: Decimal | None
    taker_buy_quote_volume: Decimal | None
    trades: int | None
    closed: bool
    source: str

    @property
    def key(self) -> tuple[str, str, int]:
        """The natural key (symbol, interval, open_time): the upsert key everywhere."""
        return (self.symbol, self.interval, self.open_time)

    def values(self) -> tuple:
        """The values compared when deciding whether two copies of a key are the same candle."""
        return (
            self.close_time,
            self.open,
            self.high,
            self.low,
            self.close,
            self.base_volume,
            self.quote_volume,
            self.taker_buy_base_volume,
            self.taker_buy_quote_volume,
            self.trades,
        )

    def landing_row(self) -> list[str]:
        """The candle as strings in LANDING_COLUMNS order (None -> empty), numbers as received."""
        tb, tq, n = self.taker_buy_base_volume, self.taker_buy_quote_volume, self.trades
        return [
            self.symbol,
            self.interval,
            str(self.open_time),
            str(self.close_time),
            _plain(self.open),
            _plain(self.high),
            _plain(self.low),
            _plain(self.close),
            _plain(self.base_volume),
            _plain(self.quote_volume),
            "" if tb is None else _plain(tb),
            "" if tq is None else _plain(tq),
            "" if n is None else str(n),
            self.source,
        ]


def _plain(d: Decimal) -> str:
    """The decimal as Binance wrote it: str() keeps "37388.05000000" but turns "0.00000000" into
    "0E-8"; positional notation is slower, so only for those (zero volumes are common)."""
    s = str(d)
    return format(d, "f") if "E" in s else s


@dataclass(frozen=True)
class Rejection:
    reason: str  # stable snake_case code (see REASONS)
    detail: str  # human-readable specifics
    raw: str  # the record exactly as received
    source: str
    symbol: str | None = None
    interval: str | None = None
    open_time: int | None = None  # ms UTC, when known


class CandleFormatError(ValueError):
    """A record that can't even be read as a candle (missing field, wrong type, not a number)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------------------------------------
# The rules


@dataclass(frozen=True)
class Rule:
    """A candle is valid for this rule when `ok(c)` is true.

    `ok` uses operators only, so it evaluates on a Candle-like object of Python values and on an
    object whose attributes are pyspark Columns. `needs`: attributes that may be None/null; when
    any is, the rule does not apply (Python skips it, Spark's null logic yields "not violated").
    `fields` name the values quoted in the detail text.
    """

    reason: str
    ok: Callable
    description: str
    fields: tuple[str, ...]
    needs: tuple[str, ...] = ()


# Order matters: the first violated rule gives the quarantine reason, the others go in the detail.
# Identity problems come first (an unknown interval makes the time rules meaningless).
RULES: tuple[Rule, ...] = (
    Rule(
        "unknown_interval",
        lambda c: c.interval_known,
        "interval is not a fixed-length Binance interval",
        ("interval",),
    ),
    Rule(
        "unknown_symbol",
        lambda c: c.symbol_known,
        "symbol is not configured",
        ("symbol",),
        needs=("symbol_known",),
    ),
    Rule(
        "implausible_open_time",
        lambda c: (c.open_time >= MIN_OPEN_TIME_MS) & (c.open_time < MAX_OPEN_TIME_MS),
        "open time outside 2017..2100 (seconds or microseconds read as milliseconds?)",
        ("open_time",),
    ),
    Rule(
        "misaligned_open_time",
        lambda c: (c.open_time - c.interval_offset_ms) % c.interval_ms == 0,
        "open time is not on an interval boundary",
        ("open_time", "interval"),
        needs=("interval_ms", "interval_offset_ms"),
    ),
    Rule(
        "bad_close_time",
        lambda c: c.close_time == c.open_time + c.interval_ms - 1,
        "close time is not open time + interval - 1 ms",
        ("open_time", "close_time", "interval"),
        needs=("interval_ms",),
    ),
    Rule(
        "negative_price",
        lambda c: (c.open >= 0) & (c.high >= 0) & (c.low >= 0) & (c.close >= 0),
        "a price is negative",
        PRICE_FIELDS,
    ),
    Rule("high_below_low", lambda c: c.low <= c.high, "high is below low", ("low", "high")),
    Rule(
        "open_outside_range",
        lambda c: (c.low <= c.open) & (c.open <= c.high),
        "open is outside [low, high]",
        ("open", "low", "high"),
    ),
    Rule(
        "close_outside_range",
        lambda c: (c.low <= c.close) & (c.close <= c.high),
        "close is outside [low, high]",
        ("close", "low", "high"),
    ),
    Rule(
        "negative_volume",
        lambda c: (c.base_volume >= 0) & (c.quote_volume >= 0),
        "a volume is negative",
        ("base_volume", "quote_volume"),
    ),
    # Taker volumes and trade counts are absent from some sources (None), hence separate rules.
    Rule(
        "negative_volume",
        lambda c: c.taker_buy_base_volume >= 0,
        "taker buy base volume is negative",
        ("taker_buy_base_volume",),
        needs=("taker_buy_base_volume",),
    ),
    Rule(
        "negative_volume",
        lambda c: c.taker_buy_quote_volume >= 0,
        "taker buy quote volume is negative",
        ("taker_buy_quote_volume",),
        needs=("taker_buy_quote_volume",),
    ),
    Rule(
        "negative_trades",
        lambda c: c.trades >= 0,
        "trade count is negative",
        ("trades",),
        needs=("trades",),
    ),
)

# Every reason code a Rejection can carry, with what it means (docs and tests read this).
REASONS: dict[str, str] = {r.reason: r.description for r in RULES}
REASONS.update(
    {
        "missing_field": "a required field is absent or empty",
        "bad_type": "a field has the wrong type",
        "bad_number": "a price/volume is not a plain finite decimal number",
        "bad_timestamp": "a timestamp is not an integer of a recognisable unit",
        "conflicting_duplicate": "the same (symbol, interval, open_time) arrived with different values",
        "date_unix_mismatch": "the file's date column disagrees with its unix column",
        "unparseable_date": "the date column can't be read unambiguously",
        "missing_trade_count": "the trade count is NULL (missing data)",
        "not_closed": "the candle is still open (x=false)",
        "malformed_row": "the row does not have the expected number of columns",
        "symbol_mismatch": "the row's symbol is not the file's symbol",
        "bad_json": "the message is not valid JSON",
        "not_kline": "the message is not a kline event",
    }
)


class _PyRow:
    """The Python side of a rule's `c`: the candle's fields plus derived lookups.

    Copying fourteen slots is cheaper than __getattr__ delegation on the hot path.
    """

    __slots__ = LANDING_COLUMNS + (
        "interval_ms",
        "interval_offset_ms",
        "interval_known",
        "symbol_known",
    )

    def __init__(self, c: Candle, symbols):
        self.symbol = c.symbol
        self.interval = c.interval
        self.open_time = c.open_time
        self.close_time = c.close_time
        self.open = c.open
        self.high = c.high
        self.low = c.low
        self.close = c.close
        self.base_volume = c.base_volume
        self.quote_volume = c.quote_volume
        self.taker_buy_base_volume = c.taker_buy_base_volume
        self.taker_buy_quote_volume = c.taker_buy_quote_volume
        self.trades = c.trades
        self.source = c.source
        self.interval_ms = INTERVAL_MS.get(c.interval)
        self.interval_offset_ms = INTERVAL_OFFSET_MS.get(c.interval)
        self.interval_known = self.interval_ms is not None
        self.symbol_known = None if symbols is None else c.symbol in symbols


def _detail(rule: Rule, row) -> str:
    values = ", ".join(f"{f}={getattr(row, f)}" for f in rule.fields)
    text = f"{rule.description} ({values})"
    if rule.reason == "unknown_interval" and row.interval in UNSUPPORTED_INTERVALS:
        text += f": {UNSUPPORTED_INTERVALS[row.interval]}"
    return text


# Every value some rule may find None, fetched in one C call to decide the hot path.
_nullable_values = attrgetter(*sorted({n for r in RULES for n in r.needs}))


def validate(candle: Candle, symbols: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """All rule violations of `candle` as (reason, detail), in RULES order; [] when valid.

    `symbols`: the configured symbols (a set is fastest); None skips the unknown_symbol rule.
    """
    row = _PyRow(candle, symbols)
    # Hot path (every websocket message): when no optional value is None, no rule needs skipping.
    applicable: Iterable[Rule]
    if None in _nullable_values(row):
        applicable = [r for r in RULES if not any(getattr(row, n) is None for n in r.needs)]
    else:
        applicable = RULES
    out: list[tuple[str, str]] = []
    for rule in applicable:
        if not rule.ok(row):
            out.append((rule.reason, _detail(rule, row)))
    return out


def check(candle: Candle, raw: str, symbols: Iterable[str] | None = None) -> Rejection | None:
    """A Rejection (first violated rule as reason, all violations in the detail) or None when valid."""
    problems = validate(candle, symbols)
    if not problems:
        return None
    return reject(
        problems[0][0],
        "; ".join(d for _, d in problems),
        raw,
        candle.source,
        candle.symbol,
        candle.interval,
        candle.open_time,
    )


def reject(
    reason: str, detail: str, raw: str, source: str, symbol=None, interval=None, open_time=None
) -> Rejection:
    return Rejection(
        reason=reason,
        detail=detail,
        raw=raw,
        source=source,
        symbol=symbol,
        interval=interval,
        open_time=open_time,
    )


# ---------------------------------------------------------------------------------------------
# Parsing

# The text forms the parsers accept, as patterns Spark's rlike can apply too (etl.frames): an
# integer is ASCII digits with an optional minus; a decimal is what Decimal() reads once
# parse_decimal has refused spaces, underscores, non-ASCII digits and NaN/Infinity.
INTEGER_PATTERN = r"-?[0-9]+"
DECIMAL_PATTERN = r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
_INTEGER = re.compile(INTEGER_PATTERN)

# The landing file is read by Spark as decimal(38,18) and stored as numeric: a value with more
# integer or fractional digits would be altered (or nulled) downstream, so it is refused here and
# Python and Spark never judge different numbers. (Binance sends 8 decimals.)
MAX_INTEGER_DIGITS = 20
MAX_FRACTION_DIGITS = 18


def _fits(d: Decimal, name: str) -> Decimal:
    # `d` is finite (the callers refuse NaN/Infinity), so its exponent is an int, not 'n'/'N'/'F'.
    if d and (
        d.adjusted() >= MAX_INTEGER_DIGITS
        or -cast(int, d.as_tuple().exponent) > MAX_FRACTION_DIGITS
    ):
        raise CandleFormatError("bad_number", f"{name}={d} does not fit decimal(38,18)")
    if not d and -cast(int, d.as_tuple().exponent) > MAX_FRACTION_DIGITS:
        raise CandleFormatError("bad_number", f"{name}={d} does not fit decimal(38,18)")
    return d


def parse_decimal(value, name: str) -> Decimal:
    if isinstance(value, str):
        # Decimal() itself is the fast parser (~0.1 µs, a regex first would triple the cost), but it is
        # lenient: NaN/Infinity, "1_000", surrounding spaces and non-ASCII digits are refused here.
        try:
            d = Decimal(value)
        except InvalidOperation:
            if value == "":
                raise CandleFormatError("missing_field", f"{name} is empty") from None
            raise CandleFormatError(
                "bad_number", f"{name}={value[:40]!r} is not a decimal number"
            ) from None
        if (
            not d.is_finite()
            or "_" in value
            or not value.isascii()
            or value[0].isspace()
            or value[-1].isspace()
        ):
            raise CandleFormatError(
                "bad_number", f"{name}={value[:40]!r} is not a plain finite decimal number"
            )
        return _fits(d, name)
    if value is None:
        raise CandleFormatError("missing_field", f"{name} is missing")
    if isinstance(value, int) and not isinstance(value, bool):
        return _fits(Decimal(value), name)
    # Floats are refused: they have already lost the exact value Binance sent.
    raise CandleFormatError(
        "bad_type", f"{name} must be a decimal string, got {type(value).__name__}"
    )


def _optional_decimal(value, name: str) -> Decimal | None:
    if value is None or value == "":
        return None
    return parse_decimal(value, name)


def parse_int(value, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if _INTEGER.fullmatch(value) is None:
            if value == "":
                raise CandleFormatError("missing_field", f"{name} is empty")
            raise CandleFormatError("bad_type", f"{name}={value[:40]!r} is not an integer")
        return int(value)
    if value is None:
        raise CandleFormatError("missing_field", f"{name} is missing")
    raise CandleFormatError("bad_type", f"{name} must be an integer, got {type(value).__name__}")


def parse_symbol(value, name: str) -> str:
    if not isinstance(value, str):
        if value is None:
            raise CandleFormatError("missing_field", f"{name} is missing")
        raise CandleFormatError("bad_type", f"{name} must be a string, got {type(value).__name__}")
    if not value.isascii() or not value.isalnum():
        raise CandleFormatError("bad_type", f"{name}={value[:40]!r} is not an alphanumeric name")
    return value


def epoch_to_ms(value: int, name: str = "timestamp", *, floor: bool = False) -> int:
    """An epoch timestamp of unknown unit (s, ms or µs) as ms, told apart by magnitude.

    Seconds < 1e11 (until year 5138), ms < 1e14 (until 5138), µs < 1e17. Never assumed: the public
    dumps switched to µs on 2025-01-01 and old CDD files use seconds. µs must be whole ms unless
    `floor` (close times end in 999999 µs, i.e. x.999 ms, which Binance's ms close times floor to).
    """
    a = abs(value)
    if a < 100_000_000_000:
        return value * 1000
    if a < 100_000_000_000_000:
        return value
    if a < 100_000_000_000_000_000:
        if value % 1000 and not floor:
            raise CandleFormatError(
                "bad_timestamp", f"{name}={value} µs is not a whole millisecond"
            )
        return value // 1000
    raise CandleFormatError("bad_timestamp", f"{name}={value} is too large for s, ms or µs")


def from_landing_row(row: dict | list, *, closed: bool = True) -> Candle:
    """A Candle from a landing-format row (dict keyed by LANDING_COLUMNS, or a list in that order)."""
    if isinstance(row, (list, tuple)):
        if len(row) != len(LANDING_COLUMNS):
            raise CandleFormatError(
                "malformed_row", f"expected {len(LANDING_COLUMNS)} columns, got {len(row)}"
            )
        row = dict(zip(LANDING_COLUMNS, row))
    trades = row.get("trades")
    return Candle(
        symbol=parse_symbol(row.get("symbol"), "symbol"),
        interval=parse_symbol(row.get("interval"), "interval"),
        open_time=parse_int(row.get("open_time"), "open_time"),
        close_time=parse_int(row.get("close_time"), "close_time"),
        open=parse_decimal(row.get("open"), "open"),
        high=parse_decimal(row.get("high"), "high"),
        low=parse_decimal(row.get("low"), "low"),
        close=parse_decimal(row.get("close"), "close"),
        base_volume=parse_decimal(row.get("base_volume"), "base_volume"),
        quote_volume=parse_decimal(row.get("quote_volume"), "quote_volume"),
        taker_buy_base_volume=_optional_decimal(
            row.get("taker_buy_base_volume"), "taker_buy_base_volume"
        ),
        taker_buy_quote_volume=_optional_decimal(
            row.get("taker_buy_quote_volume"), "taker_buy_quote_volume"
        ),
        trades=None if trades in (None, "") else parse_int(trades, "trades"),
        closed=closed,
        source=row.get("source") or "",
    )


__all__ = [
    "INTERVAL_MS",
    "LANDING_COLUMNS",
    "Candle",
    "Rejection",
    "CandleFormatError",
    "Rule",
    "RULES",
    "REASONS",
    "validate",
    "check",
    "reject",
    "from_landing_row",
    "parse_decimal",
    "parse_int",
    "parse_symbol",
    "epoch_to_ms",
]
