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
    out: dict[int, Forecast] = {}
    for version, ks in _entries_by_version(plan).items():
        model = registry.load(symbol, version)
        known = (served_by_version or {}).get(version)
        served = _served_for(model, frame, targets[ks], cfg, known)
        out.update(_model_forecasts(symbol, version, plan, ks, targets, served, realised, cfg))
    rest = [k for k in range(len(plan)) if k not in out]
    if rest:
        out.update(_persistence_forecasts(symbol, frame, plan, rest, targets, realised, cfg))
    return [out[k] for k in range(len(plan))]


def _entries_by_version(plan) -> dict[str, list[int]]:
    """{model version: the positions of the plan entries it serves}, in order of first entry."""
    by_version: dict[str, list[int]] = {}
    for k, (_t, version, _why) in enumerate(plan):
        if version is not None:
            by_version.setdefault(version, []).append(k)
    return by_version


def _served_for(
    model: TrainedModel,
    frame: pd.DataFrame,
    ts: pd.DatetimeIndex,
    cfg: ForecastConfig,
    known: pd.DataFrame | None,
) -> pd.DataFrame:
    """model_served over the hours `ts` and the calibration window before them; `known` (computed
    from the model's calibration start on) is sliced instead when it reaches the last hour."""
    since = max(calibration_start(model), ts.min() - HOUR * cfg.interval_window_hours)
    if known is not None and len(known) and known.index.max() >= ts.max():
        return known.loc[(known.index >= since) & (known.index <= ts.max())]
    return model_served(model, frame, since, ts.max())


def _bounds(
    served_returns: pd.Series,
    realised: pd.Series,
    hours: pd.DatetimeIndex,
    cfg: ForecastConfig,
):
    """The conformal interval's log-return bounds at `hours` (intervals.bounds with cfg's settings)."""
    return intervals.bounds(
        served_returns,
        realised,
        hours,
        level=cfg.interval_level,
        window=cfg.interval_window_hours,
        span=cfg.volatility_span_hours,
        min_scores=cfg.interval_min_scores,
    )


def _model_forecasts(
    symbol: str,
    version: str,
    plan,
    ks: list[int],
    targets: pd.DatetimeIndex,
    served: pd.DataFrame,
    realised: pd.Series,
    cfg: ForecastConfig,
) -> dict[int, Forecast]:
    """{k: the version's Forecast} for the plan entries `ks` whose input window is complete."""
    have = [k for k, t in zip(ks, targets[ks]) if t in served.index]
    if not have:
        return {}
    th = targets[have]
    lo, hi = _bounds(served["predicted_return"], realised, th, cfg)
    rows = served.loc[th]
    out = {}
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
    return out


def _persistence_forecasts(
    symbol: str,
    frame: pd.DataFrame,
    plan,
    rest: list[int],
    targets: pd.DatetimeIndex,
    realised: pd.Series,
    cfg: ForecastConfig,
) -> dict[int, Forecast]:
    """{k: persistence's Forecast, labelled with the reason} for the plan entries `rest`."""
    tr = targets[rest]
    lo, hi = _bounds(pd.Series(0.0, index=realised.index), realised, tr, cfg)
    pos = frame.index.searchsorted(tr, side="left") - 1  # the last close before each hour
    out = {}
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
    return out


def _close(last: float, log_return: float) -> float | None:
    return None if not np.isfinite(log_return) else float(last * np.exp(log_return))


__all__ = ["forecasts", "model_served", "history_hours", "calibration_start", "PERSISTENCE"]
