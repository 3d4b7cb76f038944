"""Time conversions (cryptoflow.times): ms <-> datetime, parsing, range merging."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cryptoflow.times import (
    datetime_from_ms,
    merge_ranges,
    ms_from_datetime,
    parse_utc,
    parse_utc_ms,
    utc_ms,
)

pytestmark = pytest.mark.quick

T = 1726221600000  # 2024-09-13T10:00:00Z
T_DT = datetime(2024, 9, 13, 10, tzinfo=timezone.utc)


def test_ms_and_datetime_round_trip():
    assert datetime_from_ms(T) == T_DT and datetime_from_ms(T).tzinfo == timezone.utc
    assert ms_from_datetime(T_DT) == T == utc_ms(2024, 9, 13, 10)
    assert ms_from_datetime(datetime(2024, 9, 13, 10)) == T  # naive is UTC
    assert ms_from_datetime(datetime_from_ms(T + 1)) == T + 1


@pytest.mark.parametrize(
    "value",
    [
        "2024-09-13T10:00",
        "2024-09-13T10:00:00Z",
        "2024-09-13T12:00+02:00",
        T_DT,
        datetime(2024, 9, 13, 10),
        T,
    ],
)
def test_parse_utc_reads_iso_datetimes_and_ms(value):
    assert parse_utc(value) == T_DT and parse_utc(value).utcoffset() == timedelta(0)
    assert parse_utc_ms(value) == T


def test_parse_utc_ms_keeps_none():
    assert parse_utc_ms(None) is None and parse_utc_ms("") is None


def test_merge_ranges_merges_touching_and_overlapping():
    assert merge_ranges([]) == []
    assert merge_ranges([(5, 6), (0, 2), (2, 3), (1, 2), (7, 9), (8, 8)]) == [
        (0, 3),
        (5, 6),
        (7, 9),
    ]
