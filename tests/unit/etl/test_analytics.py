"""cryptoflow.etl.analytics on tiny hand-written frames: every metric against its formula in Python.

Prices and volumes are exact Decimals in and out; the metrics are doubles (compared with a 1e-12
relative tolerance). One Spark action per group of tests (module-scoped fixtures).
"""

from __future__ import annotations

import math
import statistics
from datetime import date

import pytest

from cryptoflow.etl import analytics
from tests.factories import D, DAY_MS, HOUR_MS, T0, candle, candle_frame, collect, schema_of

pytestmark = pytest.mark.integration  # Spark is a service here (see test_frames.py)


def approx(v):
    return None if v is None else pytest.approx(v, rel=1e-12, abs=1e-15)


def hour(symbol, h, close, *, interval="1h", quote_volume="10", is_complete=True):
    c = str(close)
    return candle(
        symbol,
        interval,
        T0 + h * HOUR_MS,
        open=c,
        high=c,
        low=c,
        close=c,
        quote_volume=quote_volume,
        is_complete=is_complete,
        minute_count=None if is_complete else 59,
    )


# ---------------------------------------------------------------------------------------------
# hourly_metrics

# AAA: hours 0-4 back to back, a gap (hour 5 missing), hour 6, then hour 40 (alone in its 24 h).
AAA = {0: "100", 1: "110", 2: "99", 3: "99", 4: "108.9", 6: "120", 40: "90"}
# BBB: a zero close: no return from it, no log return into it.
BBB = {0: "10", 1: "0", 2: "5"}


@pytest.fixture(scope="module")
def metrics(spark):
    rows = [hour("AAA", h, c) for h, c in AAA.items()] + [hour("BBB", h, c) for h, c in BBB.items()]
    rows[-1] = hour("BBB", 2, "5", quote_volume="12.345678901234567891", is_complete=False)
    rows.append(
        hour("AAA", 5, "1000", interval="1m")
    )  # another interval: neither a row nor a neighbour
    df = analytics.hourly_metrics(candle_frame(spark, rows))
    return (
        df.columns,
        dict(schema_of(df)),
        {(r.symbol, (r.open_time - T0) // HOUR_MS): r for r in df.collect()},
    )


def test_hourly_metrics_columns_and_one_row_per_hourly_candle(metrics):
    columns, schema, rows = metrics
    assert tuple(columns) == analytics.METRICS_COLUMNS
    assert (
        schema["close"] == "decimal(38,18)"
        and schema["return_pct"] == schema["volatility_24h"] == "double"
    )
    assert sorted(rows) == sorted([("AAA", h) for h in AAA] + [("BBB", h) for h in BBB])


def _returns(closes: dict) -> dict:
    out = {}
    for h, c in closes.items():
        prev = closes.get(h - 1)
        c, prev = float(c), None if prev is None else float(prev)
        out[h] = (
            None if prev is None or prev <= 0 else (c / prev - 1) * 100,
            None if prev is None or prev <= 0 or c <= 0 else math.log(c / prev),
        )
    return out


def test_hourly_metrics_returns_only_against_the_hour_right_before(metrics):
    _, _, rows = metrics
    got = {h: (rows["AAA", h].return_pct, rows["AAA", h].log_return) for h in AAA}
    want = _returns(AAA)
    assert got == {h: (approx(p), approx(lr)) for h, (p, lr) in want.items()}
    # Spelled out: 100 -> 110 is +10 %, 110 -> 99 is -10 %; hour 6 follows a gap: no return.
    assert (
        got[1][0] == pytest.approx(10) and got[2][0] == pytest.approx(-10) and got[3] == (0.0, 0.0)
    )
    assert got[0] == got[6] == got[40] == (None, None)


def test_hourly_metrics_zero_close_has_no_log_return_and_no_return_after_it(metrics):
    _, _, rows = metrics
    assert (rows["BBB", 1].return_pct, rows["BBB", 1].log_return) == (pytest.approx(-100), None)
    assert (rows["BBB", 2].return_pct, rows["BBB", 2].log_return) == (None, None)


def _trailing(closes: dict, h: int, hours: int) -> list[int]:
    return [k for k in closes if h - hours < k <= h]


def test_hourly_metrics_volatility_is_the_sample_stddev_of_log_returns_over_24h(metrics):
    _, _, rows = metrics
    log_returns = {h: lr for h, (_, lr) in _returns(AAA).items()}
    for h in AAA:
        window = [log_returns[k] for k in _trailing(AAA, h, 24) if log_returns[k] is not None]
        want = statistics.stdev(window) if len(window) > 1 else None
        assert rows["AAA", h].volatility_24h == approx(want), h
    assert rows["AAA", 2].volatility_24h == approx(statistics.stdev([math.log(1.1), math.log(0.9)]))
    assert rows["AAA", 1].volatility_24h is None  # one return: no sample deviation
    assert (
        rows["AAA", 40].volatility_24h is None
    )  # no return within its 24 h: never reaches further back


def test_hourly_metrics_moving_averages_are_over_time_not_rows(metrics):
    _, _, rows = metrics
    for h in AAA:
        assert rows["AAA", h].ma_24h == approx(
            statistics.fmean(float(AAA[k]) for k in _trailing(AAA, h, 24))
        ), h
        assert rows["AAA", h].ma_168h == approx(
            statistics.fmean(float(AAA[k]) for k in _trailing(AAA, h, 168))
        ), h
    assert rows["AAA", 6].ma_24h == approx((100 + 110 + 99 + 99 + 108.9 + 120) / 6)
    assert rows["AAA", 40].ma_24h == 90.0
    assert rows["AAA", 40].ma_168h == approx((100 + 110 + 99 + 99 + 108.9 + 120 + 90) / 7)
    # Each symbol has its own windows.
    assert rows["BBB", 2].ma_24h == approx(5.0) and rows["BBB", 0].ma_24h == 10.0


def test_hourly_metrics_passes_close_volume_and_completeness_through(metrics):
    _, _, rows = metrics
    r = rows["BBB", 2]
    assert (r.close, r.quote_volume, r.is_complete) == (D("5"), D("12.345678901234567891"), False)
    assert (rows["AAA", 4].close, rows["AAA", 4].is_complete) == (D("108.9"), True)


# ---------------------------------------------------------------------------------------------
# volume_profile


def bar(symbol, t, h, l, c, base="1", quote="100", interval="1h"):
    return candle(
        symbol, interval, t, open=c, high=h, low=l, close=c, base_volume=base, quote_volume=quote
    )


DAY2 = T0 + DAY_MS


@pytest.fixture(scope="module")
def profile(spark):
    rows = [
        # BTCUSDT 1h on 2024-01-01: low 100, high 120 -> 20 buckets of width 1
        bar("BTCUSDT", T0, "102", "100", "101", base="1.000000000000000001"),  # tp 101 -> bucket 1
        bar("BTCUSDT", T0 + HOUR_MS, "101.5", "100.5", "101", base="2.5"),  # tp 101 -> bucket 1
        bar("BTCUSDT", T0 + 2 * HOUR_MS, "120", "119", "120"),  # tp 119.67 -> bucket 19
        bar(
            "BTCUSDT", T0 + 3 * HOUR_MS, "120", "120", "120", quote="0.000000000000000001"
        ),  # tp = high -> 19
        bar("BTCUSDT", T0 + 4 * HOUR_MS, "100", "100", "100", base="0"),  # tp = low -> bucket 0
        # the same symbol's 1m candles of that day are a profile of their own
        bar("BTCUSDT", T0, "500", "500", "500", interval="1m"),
        # 2024-01-02: one candle, high == low: everything in bucket 0, zero width
        bar("BTCUSDT", DAY2, "50", "50", "50", base="7"),
        # (h + l + c) / 3 of the day's low lands below it in floating point: clamped to bucket 0
        bar("ETHUSDT", T0, "100.001", "100.001", "100.001"),
        bar("ETHUSDT", T0 + HOUR_MS, "101", "100.001", "101"),
    ]
    df = analytics.volume_profile(candle_frame(spark, rows))
    return df.columns, collect(df)


def test_volume_profile_columns(profile):
    columns, _ = profile
    assert tuple(columns) == analytics.PROFILE_COLUMNS


def _btc_1h(rows):
    return [r for r in rows if r[:3] == ("BTCUSDT", "1h", date(2024, 1, 1))]


def test_volume_profile_buckets_by_typical_price_with_exact_volume_sums(profile):
    _, rows = profile
    got = [(r[3], r[4], r[5], r[6], r[7], r[8]) for r in _btc_1h(rows)]
    assert got == [
        (0, approx(100.0), approx(101.0), D("0"), D("100"), 1),
        (1, approx(101.0), approx(102.0), D("3.500000000000000001"), D("200"), 2),
        (
            19,
            approx(119.0),
            approx(120.0),
            D("2"),
            D("100.000000000000000001"),
            2,
        ),  # the day's high included
    ]


def test_volume_profile_omits_buckets_without_candles(profile):
    _, rows = profile
    assert [r[3] for r in _btc_1h(rows)] == [0, 1, 19]


def test_volume_profile_is_per_symbol_interval_and_day(profile):
    _, rows = profile
    assert sorted({r[:3] for r in rows}) == [
        ("BTCUSDT", "1h", date(2024, 1, 1)),
        ("BTCUSDT", "1h", date(2024, 1, 2)),
        ("BTCUSDT", "1m", date(2024, 1, 1)),
        ("ETHUSDT", "1h", date(2024, 1, 1)),
    ]
    # The 1m candle at 500 did not stretch the 1h day's range (its buckets are still 1 wide).
    assert [r[3:] for r in rows if r[1] == "1m"] == [(0, 500.0, 500.0, D("1"), D("100"), 1)]


def test_volume_profile_a_day_of_one_price_is_one_zero_width_bucket(profile):
    _, rows = profile
    assert [r[3:] for r in rows if r[2] == date(2024, 1, 2)] == [
        (0, 50.0, 50.0, D("7"), D("100"), 1)
    ]


def test_volume_profile_clamps_floating_point_overshoot_into_the_range(profile):
    _, rows = profile
    assert (
        float(D("100.001") * 3) / 3 < 100.001
    )  # the overshoot the clamp is for: bucket -1 unclamped
    eth = [(r[3], r[4], r[5], r[8]) for r in rows if r[0] == "ETHUSDT"]
    low, width = 100.001, (101 - 100.001) / 20
    tp = float(D("302.001")) / 3
    assert math.floor((tp - low) / width) == 13
    assert eth == [
        (0, approx(low), approx(low + width), 1),
        (13, approx(low + 13 * width), approx(low + 14 * width), 1),
    ]


# ---------------------------------------------------------------------------------------------
# return_correlation

# Hourly log returns on 2024-01-01 21:00-23:00 and 2024-01-02 00:00-01:00 (one window of hours).
HOURS = [T0 + (21 + i) * HOUR_MS for i in range(5)]
X = [0.01, -0.02, 0.015, 0.005, -0.01]
RETURNS = {
    "AAA": X,
    "BBB": [2 * x + 0.001 for x in X],  # perfectly correlated with AAA
    "CCC": [-x for x in X],  # perfectly anti-correlated
    "DDD": [0.003, 0.001, -0.004, 0.002, None],  # its last hour has no return: not paired
}
DAY1, DAY2_DATE = date(2024, 1, 1), date(2024, 1, 2)


def _metrics_frame(spark, returns: dict):
    rows = [(s, t, lr) for s, lrs in returns.items() for t, lr in zip(HOURS, lrs)]
    return spark.createDataFrame(rows, "symbol string, open_time bigint, log_return double")


@pytest.fixture(scope="module")
def correlations(spark):
    m = _metrics_frame(spark, RETURNS)
    month, one_day = analytics.return_correlation(m), analytics.return_correlation(m, days=1)
    return month.columns, collect(month), collect(one_day)


def _pearson(a, b):
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    return statistics.correlation([x for x, _ in pairs], [y for _, y in pairs]), len(pairs)


def test_return_correlation_columns(correlations):
    columns, _, _ = correlations
    assert tuple(columns) == analytics.CORRELATION_COLUMNS


def test_return_correlation_every_pair_once_ordered_by_name(correlations):
    _, month, _ = correlations
    pairs = sorted({(r[1], r[2]) for r in month})
    assert pairs == [
        ("AAA", "BBB"),
        ("AAA", "CCC"),
        ("AAA", "DDD"),
        ("BBB", "CCC"),
        ("BBB", "DDD"),
        ("CCC", "DDD"),
    ]


def test_return_correlation_over_the_window_ending_each_day(correlations):
    _, month, _ = correlations
    want = []
    for a, b in [
        ("AAA", "BBB"),
        ("AAA", "CCC"),
        ("AAA", "DDD"),
        ("BBB", "CCC"),
        ("BBB", "DDD"),
        ("CCC", "DDD"),
    ]:
        day1, n1 = _pearson(RETURNS[a][:3], RETURNS[b][:3])
        day2, n2 = _pearson(
            RETURNS[a], RETURNS[b]
        )  # 30 days: day 2's window holds day 1's hours too
        want += [(DAY1, a, b, 30, approx(day1), n1), (DAY2_DATE, a, b, 30, approx(day2), n2)]
    assert month == sorted(want, key=lambda r: (r[0], r[1], r[2]))
    by_key = {(r[0], r[1], r[2]): r for r in month}
    assert by_key[DAY2_DATE, "AAA", "BBB"][4:] == (approx(1.0), 5)
    assert by_key[DAY2_DATE, "AAA", "CCC"][4:] == (approx(-1.0), 5)
    assert by_key[DAY2_DATE, "AAA", "DDD"][5] == 4  # the hour without a return is not counted
    assert all(-1.0 <= r[4] <= 1.0 for r in month)


def test_return_correlation_window_of_one_day_counts_that_day_only(correlations):
    _, _, one_day = correlations
    assert {r[3] for r in one_day} == {1}
    # Day 2 alone: 2 common hours (1 with DDD, whose last hour has no return).
    assert sorted((r[1], r[2], r[5]) for r in one_day if r[0] == DAY2_DATE) == [
        ("AAA", "BBB", 2),
        ("AAA", "CCC", 2),
        ("AAA", "DDD", 1),
        ("BBB", "CCC", 2),
        ("BBB", "DDD", 1),
        ("CCC", "DDD", 1),
    ]
    # Day 1 is the same as in the 30-day window (nothing before it).
    _, month, _ = correlations
    assert [r[1:3] + r[4:] for r in one_day if r[0] == DAY1] == [
        r[1:3] + r[4:] for r in month if r[0] == DAY1
    ]


# Once a bug (greatest() skips NULLs: a NULL correlation was clamped to -1.0): NULL stays NULL.
def test_return_correlation_is_null_with_fewer_than_three_hours(correlations):
    _, _, one_day = correlations
    assert {r[4] for r in one_day if r[0] == DAY2_DATE} == {None}


def test_return_correlation_of_a_series_without_variance_is_null(spark):
    m = _metrics_frame(
        spark, {"AAA": X, "ZZZ": [0.0] * 5}
    )  # a flat price: every log return exactly 0
    assert [(r[0], r[4], r[5]) for r in collect(analytics.return_correlation(m))] == [
        (DAY1, None, 3),
        (DAY2_DATE, None, 5),
    ]


# The one-pass variance of a constant series is rounding noise (0.01 x 3: 5.4e-20), not 0.
def test_return_correlation_of_a_constant_nonzero_series_is_null(spark):
    m = _metrics_frame(spark, {"AAA": X, "ZZZ": [0.01] * 5})
    assert [r[4] for r in collect(analytics.return_correlation(m)) if r[0] == DAY1] == [None]
