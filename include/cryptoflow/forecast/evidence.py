"""When a model may serve instead of persistence, and how its raw output is served: plain numpy.

A network that predicts hourly returns mostly predicts noise. Three rules keep what is served honest:

- **Shrinkage toward persistence** (`fit_policy`): the served move is alpha x the predicted move,
  alpha in [0, 1] chosen on the validation hours to minimise MAE (alpha 0 *is* persistence).
  Prices then go to the coin's tick grid when that lowers validation MAE (stablecoins move by
  the tick; a forecast between ticks is never the close).
- **Promotion on evidence** (`promotion_evidence`): the policy is cross-fitted on the validation
  hours (fitted on one half, judged on the other, and back), and its absolute errors are compared
  with persistence's on the same hours by a one-sided Diebold-Mariano test with a Newey-West
  variance. Only a p-value below the configured level promotes; a tie serves persistence.
- **Live retirement** (`live_verdict`): the served model's MAE over its latest scored hours,
  against persistence's on the same hours; losing by more than a margin that chance does not
  explain (the DM test the other way round) retires it that hour. The same rule, applied to the
  latest validation hours, keeps a new model out that it would retire at once (registry.decide).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHAS = np.round(np.linspace(0.0, 1.0, 21), 2)  # shrinkage grid: 0, 0.05, ..., 1


@dataclass(frozen=True)
class Policy:
    """How a model's predicted log return becomes the served close."""

    alpha: float = 1.0  # the served move is alpha x the predicted move
    tick: float | None = None  # price grid of the coin (inferred from its closes)
    round_to_tick: bool = False  # snap the served close to the grid (only where validation says so)

    def closes(self, last_close, predicted_return) -> np.ndarray:
        last = np.asarray(last_close, dtype="float64")
        out = last * np.exp(self.alpha * np.asarray(predicted_return, dtype="float64"))
        if self.round_to_tick and self.tick:
            out = np.round(out / self.tick) * self.tick
        return out

    def as_dict(self) -> dict:
        return {"alpha": self.alpha, "tick": self.tick, "round_to_tick": self.round_to_tick}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Policy":
        """A model stored before policies existed serves its raw output (alpha 1, no rounding)."""
        if not d:
            return cls()
        return cls(float(d.get("alpha", 1.0)), d.get("tick"), bool(d.get("round_to_tick", False)))


def infer_tick(closes, max_decimals: int = 10) -> float | None:
    """The coarsest power-of-ten grid every close lies on (0.01 for BTC, 0.0001 for USDC), or None.

    Binance prices are multiples of the symbol's PRICE_FILTER tickSize; the closes show it.
    """
    c = np.asarray(closes, dtype="float64")
    c = c[np.isfinite(c)]
    if len(c) == 0:
        return None
    for k in range(0, max_decimals + 1):
        scaled = c * 10.0**k
        if np.all(
            np.abs(scaled - np.round(scaled)) <= 1e-6
        ):  # within a millionth of a tick: float noise
            return float(10.0**-k)
    return None


def _mae(pred, actual) -> float:
    return float(np.mean(np.abs(np.asarray(pred) - np.asarray(actual))))


def fit_policy(predicted_return, last_close, actual_close, tick: float | None) -> Policy:
    """alpha and rounding minimising MAE on these hours, searched jointly (a shrunk move that rounds to
    the next tick can beat both the raw move and none); ties go to the smaller alpha, then to no rounding."""
    r = np.asarray(predicted_return, dtype="float64")
    if len(r) == 0:
        return Policy(0.0, tick, False)
    candidates = [
        Policy(float(a), tick, rnd) for a in ALPHAS for rnd in ((False, True) if tick else (False,))
    ]
    return min(
        candidates,
        key=lambda p: (_mae(p.closes(last_close, r), actual_close), p.alpha, p.round_to_tick),
    )


def cross_fitted_closes(
    predicted_return, last_close, actual_close, tick: float | None
) -> np.ndarray:
    """Served closes with the policy fitted on the other half of the hours (two folds, in time order).

    What the policy would have done on hours it was not fitted on: the errors the promotion test uses.
    """
    r = np.asarray(predicted_return, dtype="float64")
    last = np.asarray(last_close, dtype="float64")
    actual = np.asarray(actual_close, dtype="float64")
    half = len(r) // 2
    out = np.empty(len(r))
    for fit, use in ((slice(half, None), slice(0, half)), (slice(0, half), slice(half, None))):
        policy = fit_policy(r[fit], last[fit], actual[fit], tick)
        out[use] = policy.closes(last[use], r[use])
    return out


def newey_west_lag(n: int) -> int:
    return int(4 * (n / 100) ** (2 / 9)) if n > 0 else 0


def diebold_mariano(loss_model, loss_base) -> dict:
    """One-sided DM test of "the model's expected loss is lower than the baseline's".

    d_t = loss_model - loss_base; statistic = mean(d) / sqrt(long-run variance / n) with a
    Newey-West (Bartlett) variance, since absolute errors cluster with volatility. p = Phi(stat):
    small when the model's loss is reliably lower. A zero differential (the model *is* the
    baseline) gives p = 1.
    """
    d = np.asarray(loss_model, dtype="float64") - np.asarray(loss_base, dtype="float64")
    n = len(d)
    if n < 2:
        return {
            "n": n,
            "mean_loss_difference": float(d.mean()) if n else 0.0,
            "statistic": None,
            "p_value": 1.0,
        }
    mean = float(d.mean())
    dc = d - mean
    lag = min(newey_west_lag(n), n - 1)
    var = float(dc @ dc) / n
    for k in range(1, lag + 1):
        var += 2 * (1 - k / (lag + 1)) * float(dc[k:] @ dc[:-k]) / n
    if var <= 0:
        p = 0.0 if mean < 0 else 1.0
        stat = -math.inf if mean < 0 else (math.inf if mean > 0 else 0.0)
    else:
        stat = mean / math.sqrt(var / n)
        p = 0.5 * math.erfc(-stat / math.sqrt(2))  # Phi(stat)
    if mean == 0:
        p = 1.0
    return {"n": n, "mean_loss_difference": mean, "statistic": stat, "p_value": p, "lag": lag}


def promotion_evidence(predicted_return, last_close, actual_close, tick: float | None) -> dict:
    """DM test of the cross-fitted served forecast against persistence on the same hours (absolute errors)."""
    actual = np.asarray(actual_close, dtype="float64")
    last = np.asarray(last_close, dtype="float64")
    served = cross_fitted_closes(predicted_return, last, actual, tick)
    dm = diebold_mariano(np.abs(served - actual), np.abs(last - actual))
    mae_p = _mae(last, actual)
    return {
        **dm,
        "mae_cross_fitted": _mae(served, actual),
        "mae_persistence": mae_p,
        "mase_cross_fitted": _mae(served, actual) / mae_p if mae_p > 0 else 1.0,
        "served": served,
    }


def retirement_rule(cfg) -> dict:
    """live_verdict's settings from a ForecastConfig: live (hourly.retire_if_losing), and on a
    candidate's latest validation hours (registry.decide)."""
    return {
        "window": cfg.retire_window_hours,
        "min_hours": cfg.retire_min_hours,
        "margin": cfg.retire_margin,
        "p_value": cfg.retire_p_value,
    }


def live_verdict(
    predicted_close,
    last_close,
    actual_close,
    *,
    window: int,
    min_hours: int,
    margin: float,
    p_value: float = 1.0,
) -> tuple[bool, str]:
    """(retire?, why) from the served model's latest scored hours (oldest first).

    Retire when, over its last `window` scored hours (at least `min_hours`), its MAE exceeds
    persistence's on the same hours by more than `margin` (MASE > 1 + margin) AND a one-sided DM
    test says it is worse with p below `p_value` (1: the margin alone decides). A day of bad luck
    is not a verdict; a clear loss is caught within a day.
    """
    pred = np.asarray(predicted_close, dtype="float64")[-window:]
    last = np.asarray(last_close, dtype="float64")[-window:]
    actual = np.asarray(actual_close, dtype="float64")[-window:]
    n = len(pred)
    if n < min_hours:
        return False, f"{n} scored hours (judged from {min_hours})"
    mae_p = _mae(last, actual)
    mase = (
        _mae(pred, actual) / mae_p if mae_p > 0 else (1.0 if _mae(pred, actual) == 0 else math.inf)
    )
    worse = diebold_mariano(np.abs(last - actual), np.abs(pred - actual))[
        "p_value"
    ]  # small: reliably worse
    if mase > 1 + margin and worse < p_value:
        return True, (
            f"live MASE {mase:.4f} over its last {n} scored hours (retired above {1 + margin:.4f}"
            f" when DM p={worse:.3g} < {p_value:g})"
        )
    return False, f"live MASE {mase:.4f} over its last {n} scored hours (DM p of worse {worse:.3g})"


def probation_verdict(
    predicted_close, last_close, actual_close, *, hours: int, window: int, margin: float
) -> str | None:
    """Why a promoted model may not serve yet (or no more), or None when it may.

    Its record is every hour scored since its cut, served or not (oldest first): a model earns the
    right to serve by out-of-sample hours, not by its validation alone, and hands back to persistence
    while its MASE over the latest `window` of them exceeds 1 + margin (no DM test: a hold, not a verdict).
    """
    n = len(np.asarray(predicted_close))
    if n < hours:
        return f"on probation: {n} of {hours} hours scored since its cut"
    pred = np.asarray(predicted_close, dtype="float64")[-window:]
    last = np.asarray(last_close, dtype="float64")[-window:]
    actual = np.asarray(actual_close, dtype="float64")[-window:]
    mae_p, mae_m = _mae(last, actual), _mae(pred, actual)
    mase = mae_m / mae_p if mae_p > 0 else (1.0 if mae_m == 0 else math.inf)
    if mase > 1 + margin:
        return f"held back: MASE {mase:.4f} over its last {len(pred)} hours since its cut (serves at most {1 + margin:.4f})"
    return None


__all__ = [
    "Policy",
    "infer_tick",
    "fit_policy",
    "cross_fitted_closes",
    "diebold_mariano",
    "promotion_evidence",
    "live_verdict",
    "retirement_rule",
    "probation_verdict",
    "ALPHAS",
]
