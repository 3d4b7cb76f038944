"""The serving rules of issue #17 on synthetic series with known answers: shrinkage, tick grid,
the Diebold-Mariano promotion test, live retirement, conformal intervals."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from cryptoflow.forecast import evidence, hourly, intervals
from cryptoflow.forecast.config import ForecastConfig
from cryptoflow.forecast.registry import MemoryRegistry

pytestmark = pytest.mark.quick
T0 = datetime(2021, 3, 1, tzinfo=timezone.utc)
H = timedelta(hours=1)


def walk(n, sigma=0.01, seed=0, start=100.0):
    rng = np.random.default_rng(seed)
    r = rng.normal(0, sigma, n)
    return r, start * np.exp(np.concatenate([[0.0], np.cumsum(r)]))


# --- tick grid ---------------------------------------------------------------------------------


def test_tick_is_read_from_the_closes():
    assert evidence.infer_tick([43250.17, 43251.02, 43249.99]) == pytest.approx(0.01)
    assert evidence.infer_tick([1.0001, 0.9999, 1.0]) == pytest.approx(0.0001)
    assert evidence.infer_tick([0.06231, 0.06229]) == pytest.approx(0.00001)
    assert evidence.infer_tick([120.0, 121.0]) == 1.0
    assert evidence.infer_tick([np.pi]) is None  # no grid within 10 decimals
    assert evidence.infer_tick([]) is None


# --- shrinkage ---------------------------------------------------------------------------------


def test_shrinkage_keeps_a_real_signal_and_drops_noise():
    r, closes = walk(600, seed=1)
    last, actual = closes[:-1], closes[1:]
    rng = np.random.default_rng(2)
    informed = r + rng.normal(0, 0.002, len(r))  # knows most of the move
    noise = rng.normal(0, 0.01, len(r))  # knows nothing
    assert evidence.fit_policy(informed, last, actual, None).alpha >= 0.9
    assert evidence.fit_policy(noise, last, actual, None).alpha <= 0.15
    assert (
        evidence.fit_policy(np.zeros(len(r)), last, actual, None).alpha == 0.0
    )  # a tie goes to persistence


def test_a_stablecoin_forecast_goes_to_the_tick_when_that_lowers_mae():
    # USDC-like: moves of 0 or +-1 tick; the model gets the sign right 80 % of the time with 0.6 tick.
    rng = np.random.default_rng(3)
    n, tick = 800, 0.0001
    steps = rng.choice([-1, 0, 0, 1], n)
    closes = np.round((1.0 + tick * np.concatenate([[0], np.cumsum(steps)])) / tick) * tick
    last, actual = closes[:-1], closes[1:]
    right = rng.random(n) < 0.8
    # a move of 0.6 tick where the price moves (right 80 % of the time), 0.2 tick where it does not
    move = np.where(steps == 0, 0.2 * rng.choice([-1, 1], n), 0.6 * np.where(right, steps, -steps))
    pred = np.log((last + tick * move) / last)
    policy = evidence.fit_policy(pred, last, actual, tick)
    assert policy.round_to_tick and policy.tick == tick
    served = policy.closes(last, pred)
    assert np.allclose(served / tick, np.round(served / tick))  # on the grid
    assert np.mean(np.abs(served - actual)) < np.mean(np.abs(last - actual))
    assert np.mean(np.abs(served - actual)) < np.mean(
        np.abs(last * np.exp(pred) - actual)
    )  # beats the raw move


def test_cross_fitting_judges_each_half_with_the_other_halfs_policy():
    r, closes = walk(400, seed=4)
    last, actual = closes[:-1], closes[1:]
    pred = np.concatenate(
        [r[:200], -r[200:]]
    )  # right in the first half, exactly wrong in the second
    served = evidence.cross_fitted_closes(pred, last, actual, None)
    # first half: the policy fitted on the second (alpha 0) -> persistence; second: alpha 1 -> the wrong move
    assert np.allclose(served[:200], last[:200])
    assert np.allclose(served[200:], last[200:] * np.exp(pred[200:]))


# --- Diebold-Mariano ---------------------------------------------------------------------------


def test_diebold_mariano_one_sided():
    rng = np.random.default_rng(5)
    base = np.abs(rng.normal(0, 1, 500))
    assert evidence.diebold_mariano(base, base)["p_value"] == 1.0  # the same forecast: no evidence
    assert evidence.diebold_mariano(base * 0.8, base)["p_value"] < 0.001  # reliably lower loss
    assert evidence.diebold_mariano(base * 1.2, base)["p_value"] > 0.999  # reliably higher
    noisy = base + rng.normal(0, 0.5, 500)
    assert 0.01 < evidence.diebold_mariano(noisy, base + rng.normal(0, 0.5, 500))["p_value"] < 0.99


def test_promotion_needs_evidence_not_luck():
    r, closes = walk(432, seed=6)
    last, actual = closes[:-1], closes[1:]
    rng = np.random.default_rng(7)
    lucky = rng.normal(0, 0.003, len(r))  # pure noise: whatever its validation MAE, no promotion
    ev = evidence.promotion_evidence(lucky, last, actual, None)
    assert ev["p_value"] >= 0.05
    skilled = 0.5 * r + rng.normal(0, 0.004, len(r))  # half the move, known ahead: promoted
    assert evidence.promotion_evidence(skilled, last, actual, None)["p_value"] < 0.01


# --- live retirement -------------------------------------------------------------------------


def test_live_verdict():
    r, closes = walk(100, seed=8)
    last, actual = closes[:-1], closes[1:]
    bad = last * np.exp(-r)  # every move predicted the wrong way
    assert (
        evidence.live_verdict(
            bad[:10], last[:10], actual[:10], window=72, min_hours=24, margin=0.01
        )[0]
        is False
    )
    retire, why = evidence.live_verdict(bad, last, actual, window=72, min_hours=24, margin=0.01)
    assert retire and "over its last 72 scored hours" in why
    near = last * np.exp(0.001 * r)  # a hair better than persistence
    assert (
        evidence.live_verdict(near, last, actual, window=72, min_hours=24, margin=0.01)[0] is False
    )


def test_retirement_backs_off_like_a_rejection():
    from cryptoflow.forecast.train import TrainedModel
    from cryptoflow.forecast.windows import Scaler

    reg = MemoryRegistry()
    m = TrainedModel(
        None,
        Scaler(np.array([0.0]), np.array([1.0])),
        {
            "version": "m1",
            "symbol": "BTCUSDT",
            "hyperparameters": {"features": ["log_return"], "lookback": 4},
            "data_window": {"cut": (T0 + 100 * H).isoformat()},
        },
    )
    reg.save(m, "promoted", "test")
    reg.set_current(m, "test")
    cfg = ForecastConfig(lookback=4, retrain_every_hours=48, retry_hours=6, max_model_age_hours=72)
    at = T0 + 110 * H
    reg.retire("BTCUSDT", "retired live: test", at)
    assert reg.current_pointer("BTCUSDT") is None
    attempt = reg.last_attempt("BTCUSDT")
    assert attempt["rejections_in_a_row"] == 1 and attempt["retired_at"] == at.isoformat()
    assert (
        hourly.training_reason(reg, "BTCUSDT", at + 5 * H, cfg) is None
    )  # waits from the retirement
    assert hourly.training_reason(reg, "BTCUSDT", at + 6 * H, cfg).startswith("no promoted model")
    _, why = hourly.served_model(reg, "BTCUSDT", at + H, cfg)
    assert "retired live: test" in why  # the label says why persistence serves


# --- conformal intervals -----------------------------------------------------------------------


def _returns(r):
    idx = pd.date_range(T0, periods=len(r), freq="h", tz="UTC")
    return pd.Series(r, index=idx)


def test_conformal_intervals_cover_across_volatility_regimes():
    rng = np.random.default_rng(9)
    vol = np.repeat([0.005, 0.02, 0.008, 0.03], 700)  # calm, wild, calm, wilder
    realised = _returns(rng.standard_t(5, len(vol)) * vol)
    targets = realised.index[400:]
    cfg = ForecastConfig()
    lo, hi = intervals.bounds(
        pd.Series(0.0, index=realised.index),
        realised,
        targets,
        level=0.9,
        window=cfg.interval_window_hours,
        span=cfg.volatility_span_hours,
        min_scores=cfg.interval_min_scores,
    )
    y = realised.loc[targets].to_numpy()
    assert 0.88 <= np.mean((y >= lo) & (y <= hi)) <= 0.92
    # per regime too: scaling by volatility is what keeps a wild week covered
    for k in range(1, 4):
        sl = slice(700 * k - 400 + 100, 700 * (k + 1) - 400)
        assert 0.85 <= np.mean((y[sl] >= lo[sl]) & (y[sl] <= hi[sl])) <= 0.95


def test_an_interval_uses_only_earlier_hours_and_needs_enough_of_them():
    rng = np.random.default_rng(10)
    realised = _returns(rng.normal(0, 0.01, 200))
    zero = pd.Series(0.0, index=realised.index)
    t = realised.index[150:151]
    opts = {"level": 0.9, "window": 336, "span": 24, "min_scores": 48}
    a = intervals.bounds(zero, realised, t, **opts)
    tampered = realised.copy()
    tampered.iloc[150:] *= 50  # the target hour and later
    assert np.allclose(a, intervals.bounds(zero, tampered, t, **opts))
    moved = realised.copy()
    moved.iloc[149] *= 50  # the hour before does count
    assert not np.allclose(a, intervals.bounds(zero, moved, t, **opts))
    lo, hi = intervals.bounds(zero, realised, realised.index[30:31], **opts)  # 29 scores < 48
    assert np.isnan(lo[0]) and np.isnan(hi[0])


def test_a_candidate_the_live_rule_would_retire_at_once_is_not_promoted():
    from cryptoflow.forecast.registry import decide
    from cryptoflow.forecast.train import TrainedModel
    from cryptoflow.forecast.windows import Scaler

    class Rise:  # always predicts +1 %/h
        def predict_on_batch(self, x):
            return np.full((len(x), 1), 0.01)

    n, fall = (
        400,
        50,
    )  # a steady rise, then the last 50 hours fall: right for 250 validation hours, then wrong
    r = np.where(np.arange(n) < n - fall, 0.01, -0.01)
    idx = pd.date_range(T0, periods=n, freq="h", tz="UTC", name="open_time")
    frame = pd.DataFrame({"close": 100 * np.exp(np.cumsum(r)), "quote_volume": 1.0}, index=idx)
    cut = T0 + n * H
    m = TrainedModel(
        Rise(),
        Scaler(np.array([0.0]), np.array([1.0])),
        {
            "version": "rise",
            "symbol": "BTCUSDT",
            "hyperparameters": {"features": ["log_return"], "lookback": 4},
            "data_window": {
                "cut": cut.isoformat(),
                "validation_start": (cut - 300 * H).isoformat(),
                "validation_end": cut.isoformat(),
            },
        },
    )
    d = decide(m, None, frame, ForecastConfig())
    assert (
        d.comparison["dm_p_value"] < 0.05
    )  # over the whole validation it clearly beats persistence ...
    assert (
        d.action == "none_served" and "would be retired on the latest of those hours" in d.reason
    )  # ... not lately
    early = decide(
        m, None, frame.iloc[: n - fall], ForecastConfig()
    )  # judged before the fall: promoted
    assert early.action == "promote"
