"""Naive forecasts of the next close, computed on exactly the hours the model is judged on.

Published hourly studies find LSTMs often lose to these; every metric we store has them beside it.
Each baseline predicts the next log return from returns up to the previous hour only:
- persistence: r = 0, i.e. next close = last close (the random-walk forecast; MASE's yardstick);
- drift: the mean return of the last `drift_hours` hours;
- ewma: an exponentially weighted mean of past returns (span `ewma_span`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NAMES = ("persistence", "drift", "ewma")


def predicted_returns(
    returns: pd.Series, target_times, drift_hours: int = 24, ewma_span: int = 12
) -> dict[str, np.ndarray]:
    """Baseline log returns for each target hour. `returns` is indexed on a complete hourly index.

    The shift(1) is what keeps these honest: the value used for hour t is computed from hours <= t-1.
    """
    targets = pd.DatetimeIndex(target_times)
    drift = returns.rolling(drift_hours, min_periods=1).mean().shift(1)
    ewma = returns.ewm(span=ewma_span, ignore_na=True).mean().shift(1)
    out = {
        "persistence": np.zeros(len(targets)),
        "drift": drift.reindex(targets).to_numpy(dtype="float64"),
        "ewma": ewma.reindex(targets).to_numpy(dtype="float64"),
    }
    # A baseline without history (start of a series) falls back to persistence rather than NaN.
    return {k: np.nan_to_num(v, nan=0.0) for k, v in out.items()}


def predicted_closes(
    last_close: np.ndarray, returns_by_name: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    return {k: np.asarray(last_close) * np.exp(v) for k, v in returns_by_name.items()}
