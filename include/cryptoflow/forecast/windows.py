"""From hourly closes to training samples, built once and explained here.

Target: the log return of the next hour, r_t = ln(close_t / close_{t-1}), where t is the hour being
predicted. Prices are not stationary (a model fitted on 30k BTC extrapolates nonsense at 60k);
log returns roughly are, and the predicted close is last_close * exp(predicted r_t).

A sample for target hour t: inputs are the features of the `lookback` hours t-lookback .. t-1
(each feature of hour h uses closes up to h only), targets are r_t .. r_{t+horizon-1}. The hourly
index is made complete first, so a missing candle becomes NaN and every window or target touching
it is dropped: a "1-hour return" across a gap would really be a 2-hour one.

Scaling: standardisation (mean/std per feature) fitted on the training split only, stored with the
model; the target is scaled with the log_return feature's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import numpy as np
import pandas as pd

from cryptoflow.forecast.data import HOUR, REFERENCES, to_utc

# name -> feature of hour h computed from the complete-index frame (closes/volumes up to h only).
FEATURES: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "log_return": lambda f: np.log(f["close"]).diff(),
    # Exogenous: change of log quote volume; +1 keeps zero-volume hours finite.
    "log_volume_change": lambda f: np.log1p(f["quote_volume"]).diff(),
    # Cross-coin: BTC's return of the same hour (altcoins follow BTC; does its last hours' move lead
    # theirs?). Reads BTCUSDT's closes joined as a column (data.with_references).
    "btc_log_return": lambda f: np.log(_column(f, "btc_close")).diff(),
    # Level: the log close itself. For a pegged coin (USDC) it is the distance from the peg, which
    # mean-reverts, so the model can tell a drift away from 1 from a return towards it; for a
    # floating coin it only says which price regime the window is in (a backtest option, see README).
    "log_level": lambda f: np.log(f["close"]),
}


def reference_columns(features) -> dict[str, str]:
    """{frame column: symbol} of the other coins `features` read (empty for single-coin features)."""
    return dict(REFERENCES[f] for f in features if f in REFERENCES)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame.columns:
        raise ValueError(
            f"this feature needs the column {name!r}: the other coin's closes joined with "
            "data.with_references (the DAG and the backtest do it when the features ask)"
        )
    return frame[name]


def complete_index(frame: pd.DataFrame, end: datetime | None = None) -> pd.DataFrame:
    """Reindex to every hour from the first row to `end` (exclusive) or the last row; gaps become NaN."""
    if frame.empty:
        return frame
    last = frame.index[-1] if end is None else pd.Timestamp(to_utc(end)) - HOUR
    idx = pd.date_range(frame.index[0], last, freq="h", tz="UTC", name="open_time")
    return frame.reindex(idx)


def feature_frame(
    frame: pd.DataFrame, features: tuple[str, ...], end: datetime | None = None
) -> pd.DataFrame:
    """Columns: the features, then close; one row per hour, NaN where the data is missing."""
    if not features or features[0] != "log_return":
        raise ValueError("the first feature must be log_return (it is also the target)")
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ValueError(f"unknown features {unknown}; known: {sorted(FEATURES)}")
    full = complete_index(frame, end)
    out = pd.DataFrame({name: FEATURES[name](full) for name in features}, index=full.index)
    out["close"] = full["close"]
    return out


@dataclass
class Samples:
    X: np.ndarray  # (n, lookback, n_features), unscaled
    y: np.ndarray  # (n, horizon) log returns, unscaled
    target_time: pd.DatetimeIndex  # open time of the first predicted hour
    last_close: np.ndarray  # close of the hour before the target (the persistence forecast)
    actual_close: np.ndarray  # close of the target hour

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, sl) -> "Samples":
        return Samples(
            self.X[sl], self.y[sl], self.target_time[sl], self.last_close[sl], self.actual_close[sl]
        )


def make_samples(
    feats: pd.DataFrame, features: tuple[str, ...], lookback: int, horizon: int
) -> Samples:
    """Every complete (window, target) pair of a feature frame, oldest first."""
    values = feats[list(features)].to_numpy(dtype="float64")
    ret = feats["log_return"].to_numpy(dtype="float64")
    close = feats["close"].to_numpy(dtype="float64")
    n = len(values) - lookback - horizon + 1
    nf = len(features)
    if n <= 0:
        return Samples(
            np.empty((0, lookback, nf)),
            np.empty((0, horizon)),
            pd.DatetimeIndex([], tz="UTC"),
            np.empty(0),
            np.empty(0),
        )
    from numpy.lib.stride_tricks import sliding_window_view

    # Window i covers rows i .. i+lookback-1; its targets are rows i+lookback .. i+lookback+horizon-1.
    X = sliding_window_view(values, (lookback, nf))[:n, 0]
    y = sliding_window_view(ret[lookback:], horizon)[:n]
    t = np.arange(n) + lookback
    last = close[t - 1]
    actual = close[t]
    ok = ~(
        np.isnan(X).any(axis=(1, 2)) | np.isnan(y).any(axis=1) | np.isnan(last) | np.isnan(actual)
    )
    return Samples(
        np.ascontiguousarray(X[ok]),
        np.ascontiguousarray(y[ok]),
        feats.index[t[ok]],
        last[ok],
        actual[ok],
    )


def latest_window(
    history: pd.DataFrame, features: tuple[str, ...], lookback: int, target_time: datetime
) -> tuple[np.ndarray, float] | None:
    """The input window for predicting the hour starting at `target_time`, and the last close.

    Only rows strictly before target_time are used, whatever `history` holds. None when any of the
    lookback+1 hours needed (lookback returns need one more close) is missing.
    """
    target = pd.Timestamp(to_utc(target_time))
    start = target - HOUR * (lookback + 1)
    past = history.loc[(history.index >= start) & (history.index < target)]
    if len(past) < lookback + 1:
        return None
    feats = feature_frame(past, features, end=target)
    window = feats[list(features)].to_numpy(dtype="float64")[-lookback:]
    last_close = feats["close"].iloc[-1]
    if len(feats) != lookback + 1 or np.isnan(window).any() or np.isnan(last_close):
        return None
    return window[None, :, :], float(last_close)


def input_windows(frame: pd.DataFrame, features: tuple[str, ...], lookback: int) -> Samples:
    """The input window of every hour whose `lookback` previous hours are complete, in one pass.

    The same window `latest_window` builds for that hour (each from earlier hours only), including the
    hour right after the last row; the target hour itself need not exist (actual_close is then NaN,
    and y is empty). The walk-forward backtest prepares its windows once with this.
    """
    nf = len(features)
    empty = Samples(
        np.empty((0, lookback, nf)),
        np.empty((0, 0)),
        pd.DatetimeIndex([], tz="UTC"),
        np.empty(0),
        np.empty(0),
    )
    if frame.empty:
        return empty
    feats = feature_frame(
        frame, features, end=frame.index[-1] + 2 * HOUR
    )  # one empty row after the data
    values = feats[list(features)].to_numpy(dtype="float64")
    close = feats["close"].to_numpy(dtype="float64")
    n = len(values) - lookback  # window i: rows i .. i+lookback-1, target row i+lookback (< len)
    if n <= 0:
        return empty
    from numpy.lib.stride_tricks import sliding_window_view

    X = sliding_window_view(values, (lookback, nf))[:n, 0]
    t = np.arange(n) + lookback
    last = close[t - 1]
    ok = ~(np.isnan(X).any(axis=(1, 2)) | np.isnan(last))
    return Samples(
        np.ascontiguousarray(X[ok]),
        np.empty((int(ok.sum()), 0)),
        feats.index[t[ok]],
        last[ok],
        close[t[ok]],
    )


@dataclass
class Scaler:
    mean: np.ndarray  # per feature
    std: np.ndarray

    @classmethod
    def fit(cls, X_train: np.ndarray) -> "Scaler":
        flat = X_train.reshape(-1, X_train.shape[-1])
        std = flat.std(axis=0)
        return cls(flat.mean(axis=0), np.where(std > 0, std, 1.0))

    def x(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.std).astype("float32")

    def y(self, y: np.ndarray) -> np.ndarray:
        return ((y - self.mean[0]) / self.std[0]).astype("float32")

    def inverse_y(self, y_scaled: np.ndarray) -> np.ndarray:
        return np.asarray(y_scaled, dtype="float64") * self.std[0] + self.mean[0]

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Scaler":
        return cls(np.asarray(d["mean"], dtype="float64"), np.asarray(d["std"], dtype="float64"))
