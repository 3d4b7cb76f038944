"""What a history file's content says about itself: times, date order, interval, symbol.

The one place for the rules that read times out of files as people really have them (re-saved by
a spreadsheet, renamed); the importers only apply them. Everything here is a pure function.

Dates (`read_date`): year first `2021-08-31 23:00:00` (also `/` or `.` separators, unpadded hour,
no seconds, `T` between date and time, `05-PM` as CryptoDataDownload writes it, `11:00 PM`), or
day/month first `31-08-2021 23:00`, `08/31/2020 11:00 PM`, `06-12-21` with a separate `time`
column. Day first or month first is never guessed row by row: `decide_date_order` settles it per
file from the data (a field above 12, the sequence of times, agreement with an exact unix column).

Unix values (`read_unix`): a whole number written out in full (`1630450800000`, `1502949600.0`)
is exact. Scientific notation (`1.63875E+12`) has lost digits: it only bounds the time to half a
unit of its last significant digit (`UnixValue.tolerance_ms`), so the date gives the time and the
unix value must agree with it within that bound. The unit (s, ms, µs) is told apart by magnitude
(cryptoflow.candles.epoch_to_ms), as for exact values.

A date that is the only source of a row's time (its unix too coarse to pin the candle) must also
fit the sequence of its neighbours (`unconfirmed_by_sequence`): a date shifted by hours or with
day and month swapped would otherwise load a shifted candle. Limits, because the content alone
can't tell: such a date shifted exactly into a real gap of the history, or three or more
consecutive rows shifted alike, read like true rows.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Iterable, Sequence

from cryptoflow.candles import INTERVAL_MS, CandleFormatError, epoch_to_ms

DAY_FIRST, MONTH_FIRST = "day-first", "month-first"
ORDERS = (DAY_FIRST, MONTH_FIRST)

# ---------------------------------------------------------------------------------------------
# Dates

_YEAR_FIRST = re.compile(r"(?P<y>\d{4})(?P<sep>[-/.])(?P<a>\d{1,2})(?P=sep)(?P<b>\d{1,2})")
_YEAR_LAST = re.compile(r"(?P<a>\d{1,2})(?P<sep>[-/.])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4}|\d\d)")
# 24-hour `0:00`, `23:00:00`; 12-hour `11:00 PM`; CryptoDataDownload's own `05-PM` (two digits).
_CLOCK = re.compile(
    r"(?P<h>\d{1,2}):(?P<mi>\d\d)(?::(?P<s>\d\d))?(?: (?P<ampm>AM|PM))?|(?P<h12>\d\d)-(?P<ampm2>AM|PM)"
)


@dataclass(frozen=True, slots=True)
class WrittenDate:
    """A date and time as written, before knowing whether it is day-first or month-first."""

    text: str
    year: int
    a: int  # month when year_first, else day or month: the file's order says which
    b: int
    year_first: bool
    hour: int
    minute: int
    second: int

    def instant(self, order: str | None) -> int | None:
        """ms UTC under `order` (ignored when year first); None when no such date exists that way."""
        month, day = (
            (self.a, self.b) if self.year_first or order == MONTH_FIRST else (self.b, self.a)
        )
        try:
            dt = datetime(
                self.year, month, day, self.hour, self.minute, self.second, tzinfo=timezone.utc
            )
        except ValueError:
            return None
        return int(dt.timestamp()) * 1000

    def readings(self) -> dict[str, int]:
        """{order: ms} for each order under which the date exists (both equal when year first)."""
        if self.year_first:
            ms = self.instant(None)
            return {} if ms is None else {DAY_FIRST: ms, MONTH_FIRST: ms}
        out = {}
        for order in ORDERS:
            ms = self.instant(order)
            if ms is not None:
                out[order] = ms
        return out

    @property
    def needs_order(self) -> bool:
        """True when day-first and month-first both name a date, and different ones."""
        return not self.year_first and self.a != self.b and len(self.readings()) == 2


def _clock(text: str) -> tuple[int, int, int]:
    m = _CLOCK.fullmatch(text)
    if not m:
        raise ValueError("unknown time layout")
    if m["h12"] is not None:
        h, mi, s, ampm = int(m["h12"]), 0, 0, m["ampm2"]
    else:
        h, mi, s, ampm = int(m["h"]), int(m["mi"]), int(m["s"] or 0), m["ampm"]
    if ampm:
        # The 12-hour clock's only convention: 12 AM is midnight, 12 PM noon; 0 and 13+ don't exist.
        if not 1 <= h <= 12:
            raise ValueError("hour outside 1..12 on a 12-hour clock")
        h = h % 12 + (12 if ampm == "PM" else 0)
    if h > 23 or mi > 59 or s > 59:
        raise ValueError("no such time of day")
    return h, mi, s


def read_date(date_text: str, time_text: str | None = None) -> WrittenDate:
    """The date column (plus a separate time column, when the file has one) as a WrittenDate.

    CandleFormatError(unparseable_date) for any other layout or an impossible time of day; whether
    the day and month exist is only known once the order is (WrittenDate.instant).
    """
    text = date_text if time_text is None else f"{date_text} {time_text}"
    try:
        date_part, sep, clock = text.partition(" ")
        if not sep and "T" in text:
            date_part, sep, clock = text.partition("T")
        m = _YEAR_FIRST.fullmatch(date_part)
        year_first = m is not None
        if not year_first:
            m = _YEAR_LAST.fullmatch(date_part)
        if not m:
            raise ValueError("unknown date layout")
        year = int(m["y"])
        if len(m["y"]) == 2:
            year += 2000  # two-digit years: Binance history starts in 2017
        h, mi, s = _clock(clock) if sep else (0, 0, 0)
        written = WrittenDate(text, year, int(m["a"]), int(m["b"]), year_first, h, mi, s)
        if not written.readings():
            raise ValueError("no such date")
    except ValueError as exc:
        raise CandleFormatError("unparseable_date", f"date {text[:40]!r}: {exc}") from None
    return written


def date_instant(written: WrittenDate, order: str | None) -> int:
    """ms UTC of `written` under the file's order; CandleFormatError(unparseable_date) when that
    reading names no date, or when no order is known and the two readings differ."""
    if order is None:
        values = set(written.readings().values())
        if len(values) > 1:
            raise CandleFormatError(
                "unparseable_date",
                f"date {written.text[:40]!r}: day-first or month-first? the file doesn't say",
            )
        return values.pop()
    ms = written.instant(order)
    if ms is None:
        raise CandleFormatError(
            "unparseable_date", f"date {written.text[:40]!r}: no such date read {order}"
        )
    return ms


# ---------------------------------------------------------------------------------------------
# Unix values


@dataclass(frozen=True, slots=True)
class UnixValue:
    """A unix column value in ms: exact, or (rounded by a spreadsheet) known within tolerance_ms."""

    text: str
    ms: Decimal  # the value as written, in ms (not necessarily whole when inexact)
    tolerance_ms: Decimal  # 0 when exact, else half a unit of the last significant digit

    @property
    def exact(self) -> bool:
        return not self.tolerance_ms

    def agrees(self, ms: int) -> bool:
        return abs(Decimal(ms) - self.ms) <= self.tolerance_ms

    def pins(self, interval_ms: int) -> bool:
        """True when at most one candle boundary is within the tolerance: agreeing pins the hour."""
        return 2 * self.tolerance_ms < interval_ms


def read_unix(text: str) -> UnixValue:
    """The unix column: s, ms or µs (told apart by magnitude), exact when written out in full."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = None
    if (
        value is None
        or not value.is_finite()
        or "_" in text
        or not text.isascii()
        or text != text.strip()
    ):
        if text == "":
            raise CandleFormatError("missing_field", "unix is empty")
        raise CandleFormatError("bad_timestamp", f"unix={text[:40]!r} is not a number")
    if value.adjusted() > 18:  # before int(): 1E+999999999 would take forever to expand
        raise CandleFormatError("bad_timestamp", f"unix={text[:40]!r} is too large for s, ms or µs")
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):  # "n"/"N"/"F" only for NaN and infinity, refused above
        raise CandleFormatError("bad_timestamp", f"unix={text[:40]!r} is not a number")
    if "e" not in text.lower() or exponent <= 0:
        # Written out in full (or with every digit): exact, so it must be whole.
        if value != value.to_integral_value():
            raise CandleFormatError("bad_timestamp", f"unix={text[:40]!r} is not a whole number")
        return UnixValue(text, Decimal(epoch_to_ms(int(value), "unix")), Decimal(0))
    # Scientific notation with digits missing: the unit from the magnitude, the tolerance from the
    # last significant digit (e.g. 1.63875E+12: ms, last digit worth 1e7 ms, so +-5e6 ms).
    whole = int(value)
    as_ms = epoch_to_ms(whole, "unix", floor=True)
    scale = (
        Decimal(1000)
        if whole and as_ms == whole * 1000
        else Decimal(1)
        if as_ms == whole
        else Decimal("0.001")
    )
    return UnixValue(text, value * scale, Decimal(5) * Decimal(10) ** (exponent - 1) * scale)


# ---------------------------------------------------------------------------------------------
# Date order


@dataclass(frozen=True)
class OrderDecision:
    order: str | None  # DAY_FIRST, MONTH_FIRST, or None (no date needs one, or undecided)
    needed: int  # dates whose two readings differ
    evidence: str  # what decided it (or why nothing did), for notes and refusals

    @property
    def ambiguous(self) -> bool:
        return self.order is None and self.needed > 0


def _sequence_score(times: Iterable[int]) -> int:
    """How many consecutive distinct times are one interval (their most common step, if known) apart."""
    interval, steps = most_common_step(times)
    return steps[interval] if interval is not None and interval in INTERVAL_MS.values() else 0


def most_common_step(times: Iterable[int]) -> tuple[int | None, Counter[int]]:
    """The most common positive difference between consecutive distinct times, and all of them."""
    distinct = sorted(set(times))
    steps = Counter(b - a for a, b in zip(distinct, distinct[1:]))
    return (steps.most_common(1)[0][0] if steps else None), steps


def decide_date_order(
    dates: Sequence[WrittenDate | None], unix: Sequence[UnixValue | None], share: float = 0.9
) -> OrderDecision:
    """Day-first or month-first for the whole file, from three kinds of evidence:

    - a field above 12: rows that name a date one way only;
    - the sequence: with the wrong order the times stop advancing by the interval at each change
      of day (23:00 on 05/08 is followed by 00:00 on 06/08, not by a day a month later);
    - an exact unix value equal to one reading and not the other.
    The order with at least `share` of the votes wins; the others' rows then read as no date or
    as another instant, and are quarantined by the row rules. Anything less is undecided.
    """
    needed = sum(1 for d in dates if d is not None and d.needs_order)
    if not needed:
        return OrderDecision(None, 0, "no date needs a day/month order")
    only: Counter[str] = Counter()
    by_unix: Counter[str] = Counter()
    for d, u in zip(dates, unix):
        if d is None or d.year_first:
            continue
        readings = d.readings()
        if len(readings) == 1:
            only[next(iter(readings))] += 1
        elif u is not None and u.exact and d.needs_order:
            agreeing = [o for o, ms in readings.items() if u.agrees(ms)]
            if len(agreeing) == 1:
                by_unix[agreeing[0]] += 1
    seq = {
        o: _sequence_score(ms for d in dates if d is not None and (ms := d.instant(o)) is not None)
        for o in ORDERS
    }
    votes = {
        o: only[o] + by_unix[o] + max(0, seq[o] - seq[other])
        for o, other in zip(ORDERS, reversed(ORDERS))
    }
    evidence = (
        f"{only[DAY_FIRST]} date(s) exist only day-first, {only[MONTH_FIRST]} only month-first (a field "
        f"above 12); exact unix agrees with {by_unix[DAY_FIRST]} day-first, {by_unix[MONTH_FIRST]} "
        f"month-first reading(s); {seq[DAY_FIRST]} vs {seq[MONTH_FIRST]} steps of one interval in sequence"
    )
    total = sum(votes.values())
    for order in ORDERS:
        if total and votes[order] >= share * total:
            return OrderDecision(order, needed, evidence)
    if not total:
        evidence = (
            "no field above 12, no exact unix to compare, and the sequence reads the same either way: "
            + evidence
        )
    else:
        evidence = "the evidence disagrees: " + evidence
    return OrderDecision(None, needed, evidence)


# ---------------------------------------------------------------------------------------------
# Interval


def fmt_ms(ms: int) -> str:
    """A duration for messages: `1h`, `1d`, `2h13m`."""
    for name, length in sorted(INTERVAL_MS.items(), key=lambda kv: -kv[1]):
        if ms == length:
            return name
    h, rest = divmod(ms, 3_600_000)
    return f"{h}h{rest // 60_000:02d}m" if h else f"{ms / 60_000:g}m"


def decide_interval(times: Iterable[int], hint: str | None) -> tuple[str | None, str]:
    """(interval, note) from the spacing of the open times; `hint` (e.g. the file name's) is used
    only where the data can't tell. None, with the reason, when neither can."""
    times = list(times)
    step, steps = most_common_step(times)
    by_ms = {v: k for k, v in INTERVAL_MS.items()}
    n = sum(steps.values())
    if step in by_ms and n >= 2 and steps[step] * 2 >= n:
        interval = by_ms[step]
        if hint and hint != interval:
            return (
                interval,
                f"the file name says {hint} but the times are {interval} apart: read as {interval}",
            )
        return interval, ""
    # Too few times, or no clear spacing: the hint, if the times fit it (gaps are whole intervals).
    if hint and all(s % INTERVAL_MS[hint] == 0 for s in steps):
        return hint, (
            f"interval {hint} from the file name"
            if not steps
            else f"interval {hint} from the file name (the times fit it but have no clear spacing)"
        )
    if step is None:  # no steps at all
        return None, "fewer than two distinct times and no interval in the file name"
    spacing = (
        f"most common step {fmt_ms(step)} in only {steps[step]} of {n} steps"
        if step in by_ms
        else f"most common step {fmt_ms(step)}, not a known interval"
    )
    name = (
        f"; the file name says {hint}, which the times don't fit"
        if hint
        else "; the file name gives none"
    )
    return None, f"no clear spacing of the times ({spacing}){name}"


# ---------------------------------------------------------------------------------------------
# Sequence


@dataclass(frozen=True, slots=True)
class Timed:
    """One row's time as read, for the sequence rule."""

    position: int  # index among the file's data rows
    ms: int
    copy_key: tuple  # equal for rows that are copies of one another (same values)


def unconfirmed_by_sequence(
    rows: Sequence[Timed], candidates: Iterable[int], interval_ms: int
) -> set[int]:
    """Positions (among `candidates`) whose time the neighbouring rows don't confirm.

    A row is confirmed when nothing around it contradicts it (its neighbours, in file order, are
    strictly before/after it in the file's direction, by at least as many intervals as rows lie
    between) and one neighbour, itself uncontradicted, is exactly one interval away. Copies of
    one row in a row count as one. A date shifted by hours or with day and month swapped lands
    out of step with both neighbours and is caught; see the module docstring for the limits.
    """
    # Copies next to each other are one entry (they are collapsed later, or all quarantined).
    entries: list[list[Timed]] = []
    for r in rows:
        if entries and entries[-1][-1].ms == r.ms and entries[-1][-1].copy_key == r.copy_key:
            entries[-1].append(r)
        else:
            entries.append([r])
    if not entries:
        return set()
    down = sum((a[0].ms > b[0].ms) - (a[0].ms < b[0].ms) for a, b in zip(entries, entries[1:])) >= 0
    n = len(entries)
    fits, exact = [False] * max(n - 1, 0), [False] * max(n - 1, 0)
    for k in range(n - 1):
        a, b = entries[k], entries[k + 1]
        step = (a[0].ms - b[0].ms) if down else (b[0].ms - a[0].ms)
        apart = b[0].position - a[-1].position
        fits[k] = step >= apart * interval_ms and step > 0
        exact[k] = step == interval_ms and apart == 1
    clean = [(k == 0 or fits[k - 1]) and (k == n - 1 or fits[k]) for k in range(n)]
    confirmed: set[int] = set()
    for k in range(n):
        if clean[k] and (
            (k > 0 and exact[k - 1] and clean[k - 1]) or (k < n - 1 and exact[k] and clean[k + 1])
        ):
            confirmed.update(r.position for r in entries[k])
    return set(candidates) - confirmed


# ---------------------------------------------------------------------------------------------
# Symbol


def normalise_symbol(text: str) -> str:
    """`ADA/USDT` -> `ADAUSDT`."""
    return text.replace("/", "").strip().upper()


def decide_symbol(
    row_symbols: Iterable[str], fits, hint: str | None, given: str | None
) -> tuple[str, str]:
    """(symbol, note) from the symbol column; `given` (--symbol) must agree with it, `hint` (the
    file name) is used only when the column names none. `fits(symbol)`: the header has its volume
    columns. ValueError with the reason when there is no symbol or `given` disagrees."""
    counts = Counter(s for s in map(normalise_symbol, row_symbols) if s and fits(s))
    data = counts.most_common(1)[0][0] if counts else None
    if given:
        given = given.replace("/", "").upper()
        if data and data != given:
            raise ValueError(
                f"--symbol {given} but the symbol column says {data} ({counts[data]} rows)"
            )
        if not fits(given):
            raise ValueError(f"--symbol {given} doesn't match the header's volume columns")
        return given, ""
    if data:
        if hint and hint != data:
            return (
                data,
                f"the file name says {hint} but the symbol column says {data}: read as {data}",
            )
        return data, ""
    if hint and fits(hint):
        return hint, ""
    raise ValueError(
        "no symbol: the symbol column names none the header's volume columns fit, and neither "
        "does the file name (give --symbol)"
    )
