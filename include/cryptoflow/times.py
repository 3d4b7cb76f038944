"""Instants as the platform passes them around: ms since the epoch, UTC; and ranges of them.

Candles, snapshots and windows carry ms; PostgreSQL, names and people use datetimes and ISO text.
Every conversion between the two goes through here, so a naive time always means UTC.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone


def ms_from_datetime(dt: datetime) -> int:
    """ms UTC of `dt` (a naive datetime is read as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def datetime_from_ms(ms: int) -> datetime:
    """The UTC datetime of `ms`."""
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """ms UTC of that UTC date and time."""
    return ms_from_datetime(datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc))


def now_ms() -> int:
    """The current time, ms UTC."""
    return int(time.time() * 1000)


def parse_utc(value: str | datetime | int | float) -> datetime:
    """A UTC datetime from ISO text, a datetime or ms; a time without an offset is UTC."""
    if isinstance(value, (int, float)):
        return datetime_from_ms(int(value))
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def parse_utc_ms(value: str | datetime | int | float | None) -> int | None:
    """ms UTC from ISO text, a datetime or ms (as `parse_utc`); None or "" stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return int(value)
    return ms_from_datetime(parse_utc(value))


def merge_ranges(ranges) -> list[tuple[int, int]]:
    """[lo, hi) ranges sorted, touching or overlapping ones merged."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


__all__ = [
    "ms_from_datetime",
    "datetime_from_ms",
    "utc_ms",
    "now_ms",
    "parse_utc",
    "parse_utc_ms",
    "merge_ranges",
]
