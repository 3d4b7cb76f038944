"""Forecast metrics in price space, always computed beside the persistence forecast of the same hours.

- RMSE, MAE (quote currency), MAPE (%);
- MASE: MAE of the forecast / MAE of persistence on the same hours. Below 1 beats "next close =
  last close"; 1.0 means no better than doing nothing. (The textbook MASE scales by the in-sample
  naive MAE; scaling by the naive forecast of the very same hours answers the question we ask.)
- directional accuracy: among hours where the price moved, the share where the forecast moved the
  same way; None for a forecast that never predicts a move (persistence);
- direction_when_moved: the same among the hours where the forecast did predict a move (a
  forecast shrunk to persistence on most hours is judged on the hours it took a side);
- coverage: share of actual closes inside [lower, upper], over the hours that have an interval.
"""

from __future__ import annotations

import math

import numpy as np


def evaluate(actual, predicted, last_close, lower=None, upper=None) -> dict:
    actual = np.asarray(actual, dtype="float64")
    predicted = np.asarray(predicted, dtype="float64")
    last_close = np.asarray(last_close, dtype="float64")
    n = len(actual)
    if n == 0:
        return {"n": 0}
    err = predicted - actual
    mae = float(np.mean(np.abs(err)))
    naive_mae = float(np.mean(np.abs(last_close - actual)))
    moved = actual != last_close
    pred_dir = np.sign(predicted - last_close)
    out = {
        "n": n,
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": mae,
        "mape": float(np.mean(np.abs(err) / np.abs(actual)) * 100),
        "mase": mae / naive_mae if naive_mae > 0 else (1.0 if mae == 0 else math.inf),
        "directional_accuracy": (
            float(np.mean(pred_dir[moved] == np.sign(actual - last_close)[moved]))
            if moved.any() and np.any(pred_dir != 0)
            else None
        ),
    }
    took_side = moved & (pred_dir != 0)
    out["direction_when_moved"] = (
        float(np.mean(pred_dir[took_side] == np.sign(actual - last_close)[took_side]))
        if took_side.any()
        else None
    )
    out["hours_with_a_move_predicted"] = int(took_side.sum())
    if lower is not None and upper is not None:
        lower = np.asarray([np.nan if v is None else v for v in lower], dtype="float64")
        upper = np.asarray([np.nan if v is None else v for v in upper], dtype="float64")
        has = np.isfinite(lower) & np.isfinite(upper)
        if has.any():
            out["coverage"] = float(
                np.mean((actual[has] >= lower[has]) & (actual[has] <= upper[has]))
            )
            out["mean_interval_width"] = float(np.mean(upper[has] - lower[has]))
        out["hours_with_interval"] = int(has.sum())
    return out


def compare(
    actual, last_close, model_pred=None, baselines: dict | None = None, lower=None, upper=None
) -> dict:
    """{"model": ..., "persistence": ..., <other baselines>: ...} on the same hours."""
    out = {}
    if model_pred is not None:
        out["model"] = evaluate(actual, model_pred, last_close, lower, upper)
    out["persistence"] = evaluate(actual, last_close, last_close)
    for name, pred in (baselines or {}).items():
        if name != "persistence":
            out[name] = evaluate(actual, pred, last_close)
    return out


def format_table(results: dict, title: str = "") -> str:
    """Side-by-side text table: one row per forecast, MASE < 1 beats persistence."""
    cols = ("n", "rmse", "mae", "mape", "mase", "dm_p_value", "direction_when_moved", "coverage")
    lines = [title] if title else []
    lines.append(f"{'forecast':<26}" + "".join(f"{c:>22}" for c in cols))
    for name, m in results.items():
        cells = []
        for c in cols:
            v = m.get(c)
            cells.append(
                f"{'-':>22}" if v is None else f"{v:>22}" if isinstance(v, int) else f"{v:>22.6g}"
            )
        lines.append(f"{name:<26}" + "".join(cells))
    lines.append(
        "MASE < 1 means better than persistence (next close = last close) on the same hours; dm_p_value:"
        " one-sided Diebold-Mariano p of beating it (small: more than chance); direction_when_moved: right"
        " sign among the hours the price moved and the forecast predicted a move; coverage: of the 90 %"
        " interval."
    )
    return "\n".join(lines)
