"""History files as users really have them (issue #15): renamed, re-saved by a spreadsheet.

Every mangled file is made here from a clean shared file, and must load at least 90 % of its rows
with every loaded candle equal to the clean file's candle at the same hour. Helpers below are also
used by test_importers_fuzz.py and test_importers_cli.py.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from cryptoflow.candles import CandleFormatError
from cryptoflow.importers import ImportRefused, import_cdd_csv
from cryptoflow.importers.cryptodatadownload import parse_cdd_date
from cryptoflow.importers.layout import DAY_FIRST, MONTH_FIRST, read_date, read_unix
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.quick

CLEAN = SHARED_DATA / "cryptodatadownload" / "Binance_ADAUSDT_1h.csv"
URL = "https://www.CryptoDataDownload.com"


@dataclass(frozen=True)
class Stamp:
    """The parts of a date as a spreadsheet writes them; swapping day and month is a field swap."""

    y: int
    mo: int
    d: int
    h: int
    mi: int = 0
    s: int = 0
    seconds: bool = True  # write the seconds
    padded: bool = True  # zero-pad the hour

    @classmethod
    def of(cls, ms: int, **kw) -> "Stamp":
        t = datetime.fromtimestamp(ms / 1000, timezone.utc)
        return cls(t.year, t.month, t.day, t.hour, t.minute, t.second, **kw)

    def clock(self) -> str:
        hour = f"{self.h:02d}" if self.padded else str(self.h)
        return f"{hour}:{self.mi:02d}" + (f":{self.s:02d}" if self.seconds else "")

    def clock12(self) -> str:
        return f"{(self.h % 12) or 12}:{self.mi:02d} {'PM' if self.h >= 12 else 'AM'}"


# name -> Stamp -> (date column, time column or None). Swapped stamps may name no real date: a
# spreadsheet writes the text anyway.
FORMATS = {
    "iso": lambda p: (f"{p.y:04d}-{p.mo:02d}-{p.d:02d} {p.clock()}", None),
    "iso_slash": lambda p: (f"{p.y:04d}/{p.mo:02d}/{p.d:02d} {p.clock()}", None),
    "cdd_ampm": lambda p: (
        f"{p.y:04d}-{p.mo:02d}-{p.d:02d} {(p.h % 12) or 12:02d}-{'PM' if p.h >= 12 else 'AM'}",
        None,
    ),
    "dmy_dash": lambda p: (f"{p.d:02d}-{p.mo:02d}-{p.y:04d} {p.clock()}", None),
    "dmy_slash": lambda p: (f"{p.d:02d}/{p.mo:02d}/{p.y:04d} {p.clock()}", None),
    "dmy_yy_time": lambda p: (f"{p.d:02d}-{p.mo:02d}-{p.y % 100:02d}", p.clock()),
    "mdy_ampm": lambda p: (f"{p.mo:02d}/{p.d:02d}/{p.y:04d} {p.clock12()}", None),
    "mdy_slash": lambda p: (f"{p.mo}/{p.d}/{p.y:04d} {p.clock()}", None),
}
MONTH_FIRST_FORMATS = {"mdy_ampm", "mdy_slash"}


def need_shared_data() -> None:
    """Skip the calling test (or fixture) when the shared data directory is absent: the clean files
    come from it, and a checkout without it can still run every other test."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"shared data directory not found at {SHARED_DATA} (set CRYPTOFLOW_SHARED_DATA to it): "
            "this test mangles its clean files"
        )


def clean_rows(path: Path = CLEAN) -> tuple[list[str], list[list[str]]]:
    need_shared_data()
    lines = path.read_text().splitlines()
    return next(csv.reader([lines[1]])), [next(csv.reader([ln])) for ln in lines[2:] if ln.strip()]


def sci(ms: int, digits: int) -> str:
    """`ms` as a spreadsheet writes a number in scientific notation with `digits` significant digits."""
    return f"{ms:.{digits - 1}E}"


def write_file(path: Path, header: list[str], rows: list[list[str]], url: bool = True) -> Path:
    with open(path, "w", newline="") as f:
        if url:
            f.write(URL + "\n")
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def mangle(
    path: Path,
    rows: list[list[str]],
    header: list[str],
    fmt: str = "iso",
    unix=None,
    stamp=lambda ms: Stamp.of(ms),
) -> Path:
    """The clean rows re-saved: dates in `fmt` (a separate time column if the format has one),
    `unix(ms) -> text` for the unix column (None: unchanged)."""
    out, has_time = [], False
    for r in rows:
        ms = int(r[0])
        date, time = FORMATS[fmt](stamp(ms))
        new = [unix(ms) if unix else r[0], date, *r[2:]]
        if time is not None:
            new.insert(2, time)
            has_time = True
        out.append(new)
    head = header[:2] + (["time"] if has_time else []) + header[2:]
    return write_file(path, head, out)


@pytest.fixture(scope="module")
def clean():
    """The clean file: header, rows, and its candles by open time."""
    header, rows = clean_rows()
    res = import_cdd_csv(CLEAN)
    return header, rows, {c.open_time: c for c in res.candles}


def assert_recovered(res, by_time, rows_in: int, share: float = 0.9):
    """Done when: >= share of the rows load, each loaded candle equal to the clean one."""
    assert res.balanced and res.counts["read"] == rows_in
    assert res.counts["loaded"] >= share * rows_in, (res.counts, res.by_reason, res.notes)
    for c in res.candles:
        ref = by_time[c.open_time]
        assert (c.key, c.values()) == (ref.key, ref.values())


def figures(res) -> dict:
    return {**res.counts, "by_reason": res.by_reason}


# --- one test per shape ---------------------------------------------------------------------------


def test_renamed_file_takes_symbol_and_interval_from_its_content(tmp_path, clean):
    header, rows, by_time = clean
    res = import_cdd_csv(write_file(tmp_path / "j_ADA.csv", header, rows))
    assert res.symbol == "ADAUSDT" and res.interval == "1h"
    assert_recovered(res, by_time, len(rows), share=1.0)
    assert res.notes == []  # the name says nothing, so nothing disagrees


def test_renamed_file_with_another_interval_and_a_misleading_name(tmp_path, clean):
    header, rows, by_time = clean
    four_hourly = [r for r in rows if int(r[0]) % (4 * 3_600_000) == 0]
    res = import_cdd_csv(write_file(tmp_path / "Binance_BTCUSDT_1h.csv", header, four_hourly))
    assert (res.symbol, res.interval) == ("ADAUSDT", "4h")
    assert res.counts["loaded"] == len(four_hourly)
    assert any("file name says 1h" in n for n in res.notes) and any(
        "file name says BTCUSDT" in n for n in res.notes
    )


def test_times_without_clear_spacing_refused(tmp_path, clean):
    header, rows, _ = clean
    odd = [r for i, r in enumerate(rows[:300]) if i % 7 in (0, 3)]  # steps of 3 h and 4 h alternate
    with pytest.raises(ImportRefused, match="no clear spacing"):
        import_cdd_csv(write_file(tmp_path / "x.csv", header, odd))


@pytest.mark.parametrize("digits", [6, 3])
def test_scientific_unix_times_come_from_the_date(tmp_path, clean, digits):
    header, rows, by_time = clean
    res = import_cdd_csv(
        mangle(tmp_path / "sci.csv", rows, header, unix=lambda ms: sci(ms, digits))
    )
    assert_recovered(res, by_time, len(rows))
    assert sci(int(rows[0][0]), digits) in ("1.63045E+12", "1.63E+12")  # as the file shows it


def test_scientific_unix_still_bounds_the_date(tmp_path, clean):
    """A date shifted by more than the unix value's precision is caught; within it, the sequence does."""
    header, rows, by_time = clean
    rows = rows[:500]
    shifted = {10: 5, 200: 1, 300: -2}  # row -> hours the date is off

    def stamp_of(ms):
        i = next(i for i, r in enumerate(rows) if int(r[0]) == ms)
        return Stamp.of(ms + shifted.get(i, 0) * 3_600_000)

    res = import_cdd_csv(
        mangle(tmp_path / "sci.csv", rows, header, unix=lambda ms: sci(ms, 6), stamp=stamp_of)
    )
    assert_recovered(res, by_time, len(rows))
    bad = {r.raw.split(",")[0]: r.reason for r in res.rejections}
    assert {sci(int(rows[i][0]), 6) for i in shifted} <= set(bad)
    assert "date_unix_mismatch" in res.by_reason  # 5 h: beyond +-1.4 h
    assert res.counts["loaded"] == len(rows) - len(res.rejections)


def test_day_month_two_digit_year_with_a_time_column(tmp_path, clean):
    header, rows, by_time = clean
    path = mangle(
        tmp_path / "dmy_yy.csv", rows, header, fmt="dmy_yy_time", unix=lambda ms: sci(ms, 6)
    )
    assert "06-12-20,00:00:00" in path.read_text()  # the shape from the issue
    res = import_cdd_csv(path)
    assert_recovered(res, by_time, len(rows))
    assert any(f"dates read {DAY_FIRST}" in n for n in res.notes)


def test_day_month_year_unpadded_hour_without_seconds(tmp_path, clean):
    header, rows, by_time = clean
    path = mangle(
        tmp_path / "dmy.csv",
        rows,
        header,
        fmt="dmy_dash",
        stamp=lambda ms: Stamp.of(ms, seconds=False, padded=False),
    )
    assert "01-08-2020 23:00," in path.read_text()
    assert_recovered(import_cdd_csv(path), by_time, len(rows), share=1.0)


def test_unpadded_hour_with_exact_unix(tmp_path, clean):
    header, rows, by_time = clean
    path = mangle(
        tmp_path / "unpadded.csv", rows, header, stamp=lambda ms: Stamp.of(ms, padded=False)
    )
    assert "2021-01-01 0:00:00" in path.read_text()
    assert_recovered(import_cdd_csv(path), by_time, len(rows), share=1.0)


@pytest.mark.parametrize("fmt", ["cdd_ampm", "mdy_ampm", "dmy_slash", "mdy_slash", "iso_slash"])
def test_other_spreadsheet_spellings(tmp_path, clean, fmt):
    header, rows, by_time = clean
    res = import_cdd_csv(
        mangle(
            tmp_path / f"{fmt}.csv",
            rows,
            header,
            fmt=fmt,
            stamp=lambda ms: Stamp.of(ms, seconds=fmt != "dmy_slash"),
        )
    )
    assert_recovered(res, by_time, len(rows), share=1.0)


# --- day first or month first: decided per file ------------------------------------------------------


def _days(rows, first, last):
    """Rows of 2021-03-<first> .. 2021-03-<last> (all days <= 12: no field above 12)."""
    lo = int(datetime(2021, 3, first, tzinfo=timezone.utc).timestamp() * 1000)
    hi = int(datetime(2021, 3, last + 1, tzinfo=timezone.utc).timestamp() * 1000)
    return [r for r in rows if lo <= int(r[0]) < hi]


@pytest.mark.parametrize("fmt,order", [("dmy_dash", DAY_FIRST), ("mdy_ampm", MONTH_FIRST)])
def test_order_decided_by_a_field_above_12(tmp_path, clean, fmt, order):
    header, rows, by_time = clean
    res = import_cdd_csv(
        mangle(tmp_path / "f.csv", rows, header, fmt=fmt, unix=lambda ms: sci(ms, 3))
    )
    assert any(n.startswith(f"dates read {order}") and "only" in n for n in res.notes)
    assert_recovered(res, by_time, len(rows))


@pytest.mark.parametrize("fmt,order", [("dmy_dash", DAY_FIRST), ("mdy_slash", MONTH_FIRST)])
def test_order_decided_by_the_hourly_sequence(tmp_path, clean, fmt, order):
    header, rows, by_time = clean
    part = _days(rows, 1, 12)
    # 3 significant digits: +-58 days, so the unix column can't tell 03/05 from 05/03.
    res = import_cdd_csv(
        mangle(tmp_path / "seq.csv", part, header, fmt=fmt, unix=lambda ms: sci(ms, 3))
    )
    note = next(n for n in res.notes if n.startswith("dates read"))
    assert note.startswith(
        f"dates read {order} (0 date(s) exist only day-first, 0 only month-first"
    )
    assert_recovered(res, by_time, len(part))


@pytest.mark.parametrize("fmt,order", [("dmy_dash", DAY_FIRST), ("mdy_slash", MONTH_FIRST)])
def test_order_decided_by_an_exact_unix(tmp_path, clean, fmt, order):
    header, rows, by_time = clean
    day = _days(rows, 5, 5)  # one day: the sequence reads the same either way
    res = import_cdd_csv(mangle(tmp_path / "unix.csv", day, header, fmt=fmt))
    assert any(
        n.startswith(f"dates read {order}")
        and f"exact unix agrees with {24 * (order == DAY_FIRST)} day-first" in n
        for n in res.notes
    )
    assert_recovered(res, by_time, len(day), share=1.0)


def test_ambiguous_file_refused_whole(tmp_path, clean):
    header, rows, _ = clean
    day = _days(rows, 5, 5)
    path = mangle(tmp_path / "j_ADA.csv", day, header, fmt="dmy_dash", unix=lambda ms: sci(ms, 6))
    with pytest.raises(ImportRefused) as e:
        import_cdd_csv(path)
    assert str(e.value).startswith(
        "date order ambiguous (no field above 12, no exact unix to compare"
    )
    assert "\n" not in str(e.value)


def test_symbol_option_must_agree_with_the_symbol_column(tmp_path, clean):
    header, rows, by_time = clean
    path = write_file(tmp_path / "j_ADA.csv", header, rows[:100])
    assert import_cdd_csv(path, symbol="ADA/USDT").counts["loaded"] == 100
    with pytest.raises(ImportRefused, match="--symbol BTCUSDT but the symbol column says ADAUSDT"):
        import_cdd_csv(path, symbol="BTCUSDT")
    # Rows of another symbol in the file stay row-level symbol_mismatch.
    other = [[*r[:2], "BTC/USDT", *r[3:]] if i % 10 == 0 else r for i, r in enumerate(rows[:100])]
    res = import_cdd_csv(write_file(tmp_path / "mixed.csv", header, other))
    assert res.symbol == "ADAUSDT" and res.by_reason == {"symbol_mismatch": 10}


def test_no_symbol_anywhere_refused(tmp_path, clean):
    header, rows, _ = clean
    garbled = [[*r[:2], "?", *r[3:]] for r in rows[:10]]
    path = write_file(tmp_path / "ADA_1h.csv", header, garbled)  # "ADA" fits no volume column
    with pytest.raises(ImportRefused, match="give --symbol"):
        import_cdd_csv(path)
    assert import_cdd_csv(path, symbol="ADAUSDT").by_reason == {"symbol_mismatch": 10}


# --- the field readers ----------------------------------------------------------------------------------


def ms(*args) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


def test_read_date_spellings():
    cases = {
        "2021-01-01 0:00:00": ms(2021, 1, 1),
        "2021-08-31 23:00": ms(2021, 8, 31, 23),
        "2021/08/31 23:00:00": ms(2021, 8, 31, 23),
        "2021-08-31T23:00:00": ms(2021, 8, 31, 23),
        "31-08-2021 23:00": ms(2021, 8, 31, 23),
        "31/08/2021 11:00 PM": ms(2021, 8, 31, 23),
        "08/31/2021 12:00 AM": ms(2021, 8, 31),
        "1/8/2020 23:00": None,
        "2017-08-17 04-AM": ms(2017, 8, 17, 4),
    }
    for text, expected in cases.items():
        if expected is None:
            with pytest.raises(CandleFormatError, match="day-first or month-first"):
                parse_cdd_date(text)
        else:
            assert parse_cdd_date(text) == expected, text
    assert parse_cdd_date("1/8/2020 23:00", DAY_FIRST) == ms(2020, 8, 1, 23)
    assert parse_cdd_date("1/8/2020 23:00", MONTH_FIRST) == ms(2020, 1, 8, 23)
    assert read_date("06-12-21", "00:00:00").instant(DAY_FIRST) == ms(2021, 12, 6)
    for bad in (
        "2021-08-31 24:00",
        "31-08-2021 13:00 PM",
        "2021-08-31 23:60",
        "31-13-2021 01:00",
        "2021-08-31 23",
    ):
        with pytest.raises(CandleFormatError):
            parse_cdd_date(bad)


def test_read_unix_precision():
    exact = read_unix("1502949600.0")
    assert exact.exact and exact.ms == 1502949600000
    assert read_unix("1630450800000").exact and read_unix("1630450800000000").ms == 1630450800000
    six = read_unix("1.63875E+12")
    assert not six.exact and six.ms == 1638750000000 and six.tolerance_ms == 5_000_000
    assert six.agrees(1638750000000 + 5_000_000) and not six.agrees(1638750000000 + 5_000_001)
    three = read_unix("1.60E+12")
    assert three.tolerance_ms == 5_000_000_000 and not three.pins(3_600_000)
    seconds = read_unix(
        "1.50295E+09"
    )  # seconds: the unit told apart by magnitude, as for exact values
    assert seconds.ms == 1502950000000 and seconds.tolerance_ms == 5_000_000
    assert read_unix("1.6304508E+12").pins(3_600_000)  # +-50 s: agreeing pins the hour
    assert read_unix("1.630450800000E+12").exact  # every digit written: exact
    with pytest.raises(CandleFormatError):
        read_unix("1630450800000.5")


def test_stamp_helper_swaps_and_formats():
    p = Stamp.of(ms(2020, 12, 6, 0))
    assert FORMATS["dmy_yy_time"](p) == ("06-12-20", "00:00:00")
    assert FORMATS["mdy_ampm"](replace(p, h=23)) == ("12/06/2020 11:00 PM", None)
    assert sci(1638748800000, 6) == "1.63875E+12" and Decimal(sci(1600000000000, 3)) == Decimal(
        "1.60E+12"
    )
    assert Stamp.of(ms(2020, 1, 1) + int(timedelta(hours=5).total_seconds() * 1000)).h == 5
