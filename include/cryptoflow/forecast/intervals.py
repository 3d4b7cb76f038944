"""Prediction intervals from the served forecast's own recent out-of-sample errors (split conformal).

For the hour T, the calibration set is the served forecast's errors on the `window` hours before T
(only hours it had not been trained on: a model's validation hours and later; persistence: any),
each divided by the volatility known at its hour. The interval is the served return plus the
conformal quantiles of those scores times the volatility known at T:

    score_t = (r_t - r^_t) / sigma_t          sigma_t = sqrt(EWMA of r^2 up to t-1, span `span`)
    [r^_T + q_lo sigma_T, r^_T + q_hi sigma_T]  q_lo, q_hi: the floor(a(m+1))-th and ceil((1-a)(m+1))-th
                                                smallest of the m scores, a = (1 - level) / 2

Scaling by volatility is what makes the coverage hold across calm and wild weeks: quantiles of raw
residuals over two weeks covered 0.875-0.924 of the next 30 days of persistence forecasts across the
coins (days -60..-30 of the shared data, where the window and span were chosen), scaled ones
0.897-0.915 (`cryptoflow bench --only forecast` reports the served forecasts' coverage per coin).
Every served hour gets an interval, persistence included; a path with fewer than `min_scores`
scores gets none (NaN).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view


def volatility(log_returns: pd.Series, span: int) -> pd.Series:
    """sigma_t from returns of hours before t only (the shift), on the returns' index."""
    return np.sqrt((log_returns**2).ewm(span=span, ignore_na=True).mean().shift(1))


def bounds(
    served_returns: pd.Series,
    log_returns: pd.Series,
    targets,
    *,
    level: float,
    window: int,
    span: int,
    min_scores: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper log-return bounds of the served forecast at each target hour (NaN: no interval).

    `log_returns`: realised returns on a complete hourly index that contains every target (NaN where
    unknown: a target's own return is never used for its interval). `served_returns`: the served
    forecast's predicted return at the hours it can be scored on and at the targets.
    """
    idx = log_returns.index
    targets = pd.DatetimeIndex(targets)
    sigma = volatility(log_returns, span)
    pred = served_returns.reindex(idx)
    scores = np.array(((log_returns - pred) / sigma).to_numpy(dtype="float64"))  # a writable copy
    scores[~np.isfinite(scores)] = np.nan
    pos = idx.get_indexer(targets)
    if (pos < 0).any():
        raise ValueError("every target hour must be on the returns' index")
    past = sliding_window_view(np.concatenate([np.full(window, np.nan), scores]), window)[
        pos
    ]  # hours [T-window, T)
    past = np.sort(past, axis=1)  # NaN sort last
    m = np.isfinite(past).sum(axis=1)
    a = (1 - level) / 2
    k_lo = np.floor(a * (m + 1)).astype(int)
    k_hi = np.ceil((1 - a) * (m + 1)).astype(int)
    ok = (m >= min_scores) & (k_lo >= 1) & (k_hi <= m)
    rows = np.arange(len(pos))
    q_lo = past[rows, np.clip(k_lo - 1, 0, window - 1)]
    q_hi = past[rows, np.clip(k_hi - 1, 0, window - 1)]
    centre = pred.to_numpy(dtype="float64")[pos]
    sig = sigma.to_numpy(dtype="float64")[pos]
    ok &= np.isfinite(centre) & np.isfinite(sig)
    return np.where(ok, centre + q_lo * sig, np.nan), np.where(ok, centre + q_hi * sig, np.nan)


__all__ = ["volatility", "bounds"]
