"""Hourly candles of one symbol as a pandas frame: complete candles only, strictly before a cut-off.

The cut-off is the guard against look-ahead: whoever predicts the hour starting at T asks for data
`before=T` and can't receive that hour's candle (or any later one) by construction.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterable

import numpy as np
import pandas as pd

from cryptoflow.times import datetime_from_ms

HOUR = pd.Timedelta(hours=1)
COLUMNS = ("close", "quote_volume")
# Features that read another coin (see windows): the frame column they need -> that coin. Defined
# here, where those columns are loaded, so that windows builds on data and never the reverse.
REFERENCES = {"btc_log_return": ("btc_close", "BTCUSDT")}


def load_hourly(conn, symbol: str, before: datetime, hours: int | None = None) -> pd.DataFrame:
    """Complete 1h candles of `symbol` with open_time in [before - hours, before), oldest first.

    Index: open_time (UTC, tz-aware); columns close, quote_volume as float64. Missing and incomplete
    hours are simply absent here; `windows` turns absences into NaN so no return spans a gap.
    """
    before = to_utc(before)
    since = before - timedelta(hours=hours) if hours else datetime(1970, 1, 1, tzinfo=timezone.utc)
    rows = conn.execute(
        "SELECT open_time, close::float8, quote_volume::float8 FROM market.candles"
        " WHERE symbol = %s AND interval = '1h' AND is_complete AND open_time >= %s AND open_time < %s"
        " ORDER BY open_time",
        (symbol, since, before),
    ).fetchall()
    return _frame(rows)


def load_range(conn, symbol: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Complete 1h candles with open_time in [start, end) (the backtest loads once, then slices)."""
    rows = conn.execute(
        "SELECT open_time, close::float8, quote_volume::float8 FROM market.candles"
        " WHERE symbol = %s AND interval = '1h' AND is_complete AND open_time >= %s AND open_time < %s"
        " ORDER BY open_time",
        (symbol, to_utc(start), to_utc(end)),
    ).fetchall()
    return _frame(rows)


def with_references(frame: pd.DataFrame, references: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """`frame` plus each reference coin's close as a column ({column: that coin's frame}), on the
    frame's own hours (an hour the other coin lacks is NaN: the windows using it are dropped)."""
    if not references:
        return frame
    out = frame.copy()
    for column, other in references.items():
        out[column] = other["close"].reindex(frame.index)
    return out


def load_with_references(
    conn, symbol: str, *, before: datetime, hours: int | None = None, start: datetime | None = None
) -> pd.DataFrame:
    """load_hourly (or load_range from `start`) with every reference coin's closes joined in, whatever
    the configured features: a served model whose features differ from the configuration's (until
    its replacement is promoted) still finds the columns it reads."""

    def load(s):
        return (
            load_range(conn, s, start, before)
            if start is not None
            else load_hourly(conn, s, before, hours)
        )

    return with_references(load(symbol), {col: load(s) for col, s in REFERENCES.values()})


def latest_complete_hour(conn, symbol: str) -> datetime | None:
    row = conn.execute(
        "SELECT max(open_time) FROM market.candles WHERE symbol = %s AND interval = '1h' AND is_complete",
        (symbol,),
    ).fetchone()
    return row[0] if row else None


def frame_from_candles(candles: Iterable) -> pd.DataFrame:
    """The same frame from Candle objects (importer output), for tests and benchmarks without a DB."""
    rows = [
        (datetime_from_ms(c.open_time), float(c.close), float(c.quote_volume))
        for c in candles
        if c.interval == "1h"
    ]
    rows.sort()
    return _frame(rows)


def before(frame: pd.DataFrame, cut: datetime) -> pd.DataFrame:
    """Rows strictly before `cut`: the only history a prediction for the hour `cut` may use."""
    return frame.loc[frame.index < pd.Timestamp(to_utc(cut))]


def _frame(rows) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(
            {c: pd.Series(dtype="float64") for c in COLUMNS},
            index=pd.DatetimeIndex([], tz="UTC", name="open_time"),
        )
    times, close, vol = zip(*rows)
    idx = pd.DatetimeIndex(pd.to_datetime(list(times), utc=True), name="open_time")
    return pd.DataFrame(
        {
            "close": np.asarray(close, dtype="float64"),
            "quote_volume": np.asarray(vol, dtype="float64"),
        },
        index=idx,
    )


def to_utc(t: datetime | pd.Timestamp) -> datetime:
    t = pd.Timestamp(t)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.to_pydatetime()


def floor_hour(t: datetime) -> datetime:
    return to_utc(t).replace(minute=0, second=0, microsecond=0)
