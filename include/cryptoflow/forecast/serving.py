"""The served forecasts of a plan of hours: one path for the hourly DAG (one hour) and the backtest (all).

A plan entry is (target hour, model version or None, why). A version serves its policy's close
(evidence.Policy: shrunk move, tick grid) when its input window is complete; otherwise, and for
None, persistence serves, labelled with the reason. Every forecast gets its conformal interval
(intervals.bounds) from the same served path's errors on the hours before it: the model's on hours
it was not trained on, persistence's on the realised returns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cryptoflow.forecast import intervals
from cryptoflow.forecast.config import ForecastConfig
from cryptoflow.forecast.data import HOUR, to_utc
from cryptoflow.forecast.train import Forecast, TrainedModel
from cryptoflow.forecast.windows import complete_index, input_windows

PERSISTENCE = "persistence"


def history_hours(cfg: ForecastConfig) -> int:
    """Hours of candles before the target that serving one hour needs: the calibration window, the
    model's input windows over it, and ten volatility spans to warm the EWMA up (its weight on
    older hours is then below 1e-8, so a longer history gives the same interval)."""
    return cfg.interval_window_hours + cfg.lookback + 10 * cfg.volatility_span_hours + 2


def model_served(model: TrainedModel, frame: pd.DataFrame, since, until) -> pd.DataFrame:
    """The model's served close at every hour in [since, until] whose input window is complete.

    Columns predicted_close, last_close, predicted_return (of the served close); one model call.
    """
    w = input_windows(frame, model.features, model.lookback)
    keep = (w.target_time >= pd.Timestamp(to_utc(since))) & (
        w.target_time <= pd.Timestamp(to_utc(until))
    )
    w = w.subset(keep)
    pred = model.served_closes(w.X, w.last_close) if len(w) else np.empty(0)
    return pd.DataFrame(
        {
            "predicted_close": pred,
            "last_close": w.last_close,
            "predicted_return": np.log(pred / w.last_close) if len(w) else np.empty(0),
        },
        index=w.target_time,
    )


def calibration_start(model: TrainedModel):
    """The first hour a model's errors say something about unseen data: its validation start."""
    return pd.Timestamp(model.metadata["data_window"]["validation_start"])


def forecasts(
    symbol: str,
    frame: pd.DataFrame,
    plan,
    registry,
    cfg: ForecastConfig,
    served_by_version: dict[str, pd.DataFrame] | None = None,
) -> list[Forecast]:
    """The Forecast of each plan entry, from `frame`'s candles before each entry's hour only.

    `served_by_version`: model_served frames already computed (the backtest's live retirement
    needs them), from the model's calibration start on: reused instead of a second model call."""
    if not plan:
        return []
    targets = pd.DatetimeIndex([pd.Timestamp(to_utc(t)) for t, _, _ in plan])
    # Realised returns on a complete index through the last target (whose own return is NaN here or
    # unused: an interval is calibrated on the hours before its target only).
    full = complete_index(frame, end=targets.max() + HOUR)
    realised = np.log(full["close"]).diff()

    def bounds(served_returns: pd.Series, hours: pd.DatetimeIndex):
        return intervals.bounds(
            served_returns,
            realised,
            hours,
            level=cfg.interval_level,
            window=cfg.interval_window_hours,
            span=cfg.volatility_span_hours,
            min_scores=cfg.interval_min_scores,
        )

    out: list[Forecast | None] = [None] * len(plan)

    by_version: dict[str, list[int]] = {}
    for k, (_t, version, _why) in enumerate(plan):
        if version is not None:
            by_version.setdefault(version, []).append(k)
    for version, ks in by_version.items():
        model = registry.load(symbol, version)
        ts = targets[ks]
        since = max(calibration_start(model), ts.min() - HOUR * cfg.interval_window_hours)
        known = (served_by_version or {}).get(version)
        if (
            known is not None and len(known) and known.index.max() >= ts.max()
        ):  # starts at calibration
            served = known.loc[(known.index >= since) & (known.index <= ts.max())]
        else:
            served = model_served(model, frame, since, ts.max())
        have = [k for k, t in zip(ks, ts) if t in served.index]
        if have:
            th = targets[have]
            lo, hi = bounds(served["predicted_return"], th)
            rows = served.loc[th]
            for j, k in enumerate(have):
                last = float(rows["last_close"].iloc[j])
                out[k] = Forecast(
                    symbol,
                    to_utc(th[j]),
                    float(rows["predicted_close"].iloc[j]),
                    _close(last, lo[j]),
                    _close(last, hi[j]),
                    last,
                    version,
                    plan[k][2],
                )

    rest = [k for k in range(len(plan)) if out[k] is None]
    if rest:
        tr = targets[rest]
        lo, hi = bounds(pd.Series(0.0, index=realised.index), tr)
        pos = frame.index.searchsorted(tr, side="left") - 1  # the last close before each hour
        for j, k in enumerate(rest):
            why = plan[k][2] if plan[k][1] is None else f"{plan[k][2]} could not build its window"
            last = float(frame["close"].iloc[pos[j]])
            out[k] = Forecast(
                symbol,
                to_utc(tr[j]),
                last,
                _close(last, lo[j]),
                _close(last, hi[j]),
                last,
                PERSISTENCE,
                f"persistence: {why}",
            )
    return out  # type: ignore[return-value]


def _close(last: float, log_return: float) -> float | None:
    return None if not np.isfinite(log_return) else float(last * np.exp(log_return))


__all__ = ["forecasts", "model_served", "history_hours", "calibration_start", "PERSISTENCE"]
