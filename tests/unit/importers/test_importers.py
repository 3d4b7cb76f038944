"""Importers against the real shared files and small crafted ones: every row accounted for."""

from __future__ import annotations

import zipfile
from datetime import datetime, timezone

import pytest

from cryptoflow.candles import CandleFormatError
from cryptoflow.importers import ImportRefused, import_cdd_csv
from cryptoflow.sources.binance.archive import import_binance_vision
from cryptoflow.sources.binance.archive import parse_file_name as vision_name
from cryptoflow.importers.cryptodatadownload import parse_cdd_date, parse_file_name as cdd_name

pytestmark = pytest.mark.quick


def ms(*args) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


# The README's table: hours per coin and first/last open time (UTC).
README_TABLE = {
    **{
        c: (9465, ms(2020, 8, 1, 23), ms(2021, 8, 31, 23))
        for c in ("BTC", "ETH", "ADA", "BNB", "USDC")
    },
    **{c: (3060, ms(2021, 4, 26, 8), ms(2021, 8, 31, 23)) for c in ("DOGE", "DOT", "SOL")},
    "XRP": (1079, ms(2022, 1, 1, 1), ms(2022, 2, 14, 23)),
}


@pytest.mark.parametrize("coin", sorted(README_TABLE))
def test_cdd_shared_files_match_the_readme(shared_data, coin):
    hours, first, last = README_TABLE[coin]
    res = import_cdd_csv(shared_data / "cryptodatadownload" / f"Binance_{coin}USDT_1h.csv")
    assert res.counts == {
        "read": hours,
        "loaded": hours,
        "quarantined": 0,
        "duplicates_collapsed": 0,
    }
    assert res.balanced
    assert res.candles[0].open_time == first and res.candles[-1].open_time == last  # oldest first
    assert all(c.symbol == f"{coin}USDT" and c.interval == "1h" for c in res.candles)
    assert all(
        c.close_time == c.open_time + 3_599_999 and c.trades is not None for c in res.candles
    )
    # Real gaps are kept as gaps (nothing filled): hours between first and last minus rows present.
    assert (last - first) // 3_600_000 + 1 >= hours


def test_raw_file_quarantine_figures(shared_data):
    """The raw 2017-2021 file's quirks, counted (measured, then frozen here)."""
    res = import_cdd_csv(shared_data / "raw" / "Binance_BTCUSDT_1h_2017-2021.csv")
    assert res.balanced
    assert res.counts == {
        "read": 36062,
        "loaded": 4829,
        "quarantined": 31233,
        "duplicates_collapsed": 0,
    }
    assert res.by_reason == {
        # 2,649 hours (2020-08-01 23:00 .. 2020-11-20 07:00) are present twice, once in ms with full
        # precision and a trade count, once in seconds with rounded values and NULL: all copies out.
        "conflicting_duplicate": 5298,
        # 2017-09-22 20:00 .. 2017-09-26 14:00: the date column is 4 h behind unix (a US-Eastern
        # clock?) -- one of the two is wrong and nothing says which.
        "date_unix_mismatch": 91,
        # The remaining seconds-era rows: NULL trade counts.
        "missing_trade_count": 25844,
    }
    # The clean part: ms rows from 2020-11-20 08:00 to 2021-06-10 00:00.
    assert res.candles[0].open_time == ms(2020, 11, 20, 8) and res.candles[-1].open_time == ms(
        2021, 6, 10
    )
    conflicts = [r for r in res.rejections if r.reason == "conflicting_duplicate"]
    assert {r.raw.split(",")[0].endswith(".0") for r in conflicts} == {
        True,
        False,
    }  # both copies of each hour
    mismatch = [r for r in res.rejections if r.reason == "date_unix_mismatch"]
    assert all("-4 h" in r.detail for r in mismatch)
    assert all(
        r.raw and r.source == "cryptodatadownload:Binance_BTCUSDT_1h_2017-2021.csv"
        for r in res.rejections
    )


def test_raw_file_with_missing_trades_allowed(shared_data):
    res = import_cdd_csv(
        shared_data / "raw" / "Binance_BTCUSDT_1h_2017-2021.csv", allow_missing_trades=True
    )
    assert res.balanced
    assert res.counts["loaded"] == 30673
    assert res.by_reason == {"conflicting_duplicate": 5298, "date_unix_mismatch": 91}
    # Seconds-era rows became ms: 2017-08-17 04:00 is the first hour, nothing lands in 1970.
    assert res.candles[0].open_time == ms(2017, 8, 17, 4)
    assert sum(c.trades is None for c in res.candles) == 25844


def test_cdd_dates():
    assert parse_cdd_date("2017-08-17 05-AM") == ms(2017, 8, 17, 5)
    assert parse_cdd_date("2017-08-17 12-AM") == ms(2017, 8, 17, 0)
    assert parse_cdd_date("2017-08-17 12-PM") == ms(2017, 8, 17, 12)
    assert parse_cdd_date("2017-08-17 01-PM") == ms(2017, 8, 17, 13)
    assert parse_cdd_date("2021-08-31 23:00:00") == ms(2021, 8, 31, 23)
    for bad in (
        "2017-08-17 13-PM",
        "2017-08-17 00-AM",
        "17/08/2017 05",
        "2017-08-17 5-AM",
        "2017-02-30 01:00:00",
        "2017-08-17 05-am",
        "",
    ):
        with pytest.raises(CandleFormatError) as e:
            parse_cdd_date(bad)
        assert e.value.reason == "unparseable_date"


def test_file_names():
    assert cdd_name("Binance_BTCUSDT_1h.csv") == ("BTCUSDT", "1h")
    assert cdd_name("/x/Binance_BTCUSDT_1h_2017-2021.csv") == ("BTCUSDT", "1h")
    assert cdd_name("Binance_ETHUSDT_d.csv") == ("ETHUSDT", "1d")
    with pytest.raises(ValueError):
        cdd_name("Binance_BTCUSDT_1m.csv")  # minute or month? refused
    assert vision_name("BTCUSDT-1m-2024-01.zip") == ("BTCUSDT", "1m")
    assert vision_name("POLUSDT-1h-2025-02-03.csv") == ("POLUSDT", "1h")
    with pytest.raises(ValueError):
        vision_name("BTCUSDT-1mo-2024-01.zip")


HEADER = "unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount"


def write_cdd(tmp_path, rows, name="Binance_BTCUSDT_1h.csv", url=True):
    path = tmp_path / name
    path.write_text(
        ("https://www.CryptoDataDownload.com\n" if url else "")
        + HEADER
        + "\n"
        + "\n".join(rows)
        + "\n"
    )
    return path


def test_cdd_crafted_rows(tmp_path):
    rows = [
        "1630450800000,2021-08-31 23:00:00,BTC/USDT,47091.36,47345.0,46993.0,47100.89,1242.5,58632506.77,34359",
        # exact duplicate, spelled differently: collapses
        "1630450800000,2021-08-31 23:00:00,BTC/USDT,47091.36000000,47345.0,46993.0,47100.89,1242.5,58632506.77,34359",
        # the same hour twice with different values: both quarantined
        "1630447200000,2021-08-31 22:00:00,BTC/USDT,46911.49,47104.96,46744.57,47088.84,1359.88,63772233.52,41533",
        "1630447200000,2021-08-31 22:00:00,BTC/USDT,46911.49,47104.96,46744.57,47088.85,1359.88,63772233.52,41533",
        # seconds with .0, AM/PM date: fine
        "1630443600.0,2021-08-31 09-PM,BTC/USDT,46900,46950,46800,46911.49,100,4690000,1000",
        # NULL trade count
        "1630440000.0,2021-08-31 08-PM,BTC/USDT,46900,46950,46800,46900,100,4690000,NULL",
        # date and unix disagree
        "1630436400000,2021-08-31 15:00:00,BTC/USDT,46900,46950,46800,46900,100,4690000,1000",
        # unreadable date
        "1630432800000,31.08.2021 18h,BTC/USDT,46900,46950,46800,46900,100,4690000,1000",
        # high below low
        "1630429200000,2021-08-31 17:00:00,BTC/USDT,46900,46000,46800,46900,100,4690000,1000",
        # wrong symbol, short row, bad number
        "1630425600000,2021-08-31 16:00:00,ETH/USDT,1,1,1,1,1,1,1",
        "1630422000000,2021-08-31 15:00:00,BTC/USDT,1,1",
        "1630418400000,2021-08-31 14:00:00,BTC/USDT,x,1,1,1,1,1,1",
        "",
    ]
    res = import_cdd_csv(write_cdd(tmp_path, rows))
    assert res.counts == {"read": 12, "loaded": 2, "quarantined": 9, "duplicates_collapsed": 1}
    assert res.by_reason == {
        "bad_number": 1,
        "conflicting_duplicate": 2,
        "date_unix_mismatch": 1,
        "high_below_low": 1,
        "malformed_row": 1,
        "missing_trade_count": 1,
        "symbol_mismatch": 1,
        "unparseable_date": 1,
    }
    assert [c.open_time for c in res.candles] == [1630443600000, 1630450800000]
    assert str(res.candles[1].open) == "47091.36"  # the first copy in file order
    unknown = import_cdd_csv(write_cdd(tmp_path, rows[:1], url=False), symbols={"ETHUSDT"})
    assert unknown.by_reason == {"unknown_symbol": 1}


def test_cdd_bad_header(tmp_path):
    path = tmp_path / "Binance_BTCUSDT_1h.csv"
    path.write_text("https://www.CryptoDataDownload.com\nfoo,bar\n")
    with pytest.raises(ImportRefused, match="expected a CryptoDataDownload header"):  # a ValueError
        import_cdd_csv(path)


def _vision_rows(open_times, unit="ms"):
    out = []
    for t in open_times:
        f = 1000 if unit == "us" else 1
        out.append(
            f"{t * f},100.5,101.0,100.0,100.7,12.5,{(t + 59_999) * f + (999 if unit == 'us' else 0)},"
            f"1258.75,42,6.1,614.3,0"
        )
    return out


def test_binance_vision_zip_ms_and_us(tmp_path):
    t0 = ms(2024, 12, 31, 23, 58)
    rows = _vision_rows([t0, t0 + 60_000]) + _vision_rows([t0 + 120_000, t0 + 180_000], unit="us")
    rows += rows[:1]  # exact duplicate
    rows += ["1735689840000,100,99,100,100,1,1735689899999,1,1,1,1,0"]  # high below low
    rows += ["1735689900000,100,101"]  # malformed
    path = tmp_path / "BTCUSDT-1m-2025-01.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("BTCUSDT-1m-2025-01.csv", "\n".join(rows) + "\n")
    res = import_binance_vision(path)
    assert res.counts == {"read": 7, "loaded": 4, "quarantined": 2, "duplicates_collapsed": 1}
    assert res.by_reason == {"high_below_low": 1, "malformed_row": 1}
    assert [c.open_time for c in res.candles] == [t0 + i * 60_000 for i in range(4)]
    assert all(
        c.close_time == c.open_time + 59_999 for c in res.candles
    )  # µs close times floor to ms


def test_binance_vision_csv_with_header_and_conflict(tmp_path):
    t0 = ms(2024, 1, 1)
    rows = [
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
        "taker_buy_quote_volume,ignore"
    ] + _vision_rows([t0, t0 + 60_000])
    rows.append(rows[1].replace(",42,", ",43,"))
    path = tmp_path / "ETHUSDT-1m-2024-01-01.csv"
    path.write_text("\n".join(rows))
    res = import_binance_vision(path, symbols={"ETHUSDT"})
    assert res.counts == {"read": 3, "loaded": 1, "quarantined": 2, "duplicates_collapsed": 0}
    assert res.by_reason == {"conflicting_duplicate": 2}
    assert (
        res.candles[0].symbol == "ETHUSDT"
        and res.candles[0].source == "binance_vision:ETHUSDT-1m-2024-01-01.csv"
    )


# --- fuzzing the CDD field parsers: a value or a clear CandleFormatError, never a crash --------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from cryptoflow.candles import REASONS  # noqa: E402
from cryptoflow.importers.cryptodatadownload import _unix_ms  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=25),
        st.from_regex(r"\d{4}-\d\d-\d\d \d\d(-(AM|PM)|:\d\d:\d\d)", fullmatch=True),
    )
)
def test_fuzz_cdd_date(text):
    try:
        value = parse_cdd_date(text)
    except CandleFormatError as exc:
        assert exc.reason == "unparseable_date"
        return
    assert value % 1000 == 0


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=25), st.from_regex(r"-?\d{1,19}(\.0*)?", fullmatch=True)))
def test_fuzz_unix(text):
    try:
        value = _unix_ms(text)
    except CandleFormatError as exc:
        assert exc.reason in REASONS
        return
    assert isinstance(value, int)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet='0123456789.,-: NULAMP/BTCUSD\n"\r', max_size=80), max_size=8))
def test_fuzz_cdd_file_accounts_for_every_row(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("fuzz") / "Binance_BTCUSDT_1h.csv"
    path.write_text(HEADER + "\n" + "\n".join(lines) + "\n")
    res = import_cdd_csv(path)
    assert res.balanced
    assert res.counts["read"] == sum(1 for ln in "\n".join(lines).splitlines() if ln.strip())
