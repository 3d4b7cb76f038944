"""The hourly steps without TensorFlow: look-ahead, readiness, retrain cadence, promotion rule.

Models here are TrainedModel objects around a numpy stand-in for Keras, so the very code paths of
the DAG and the backtest run (windows, scaler, forecast, registry decisions) in milliseconds.
"""

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from cryptoflow.forecast import hourly
from cryptoflow.forecast.config import ForecastConfig
from cryptoflow.forecast.data import before
from cryptoflow.forecast.registry import MemoryRegistry, decide
from cryptoflow.forecast.train import TrainedModel
from cryptoflow.forecast.windows import Scaler

pytestmark = pytest.mark.quick
T0 = datetime(2021, 3, 1, tzinfo=timezone.utc)
H = timedelta(hours=1)
CFG = ForecastConfig(lookback=4, retrain_every_hours=24, retry_hours=6, max_model_age_hours=72)


class WindowSum:
    """Predicts 0.3 x the sum of its (scaled) window: any input change moves the forecast."""

    def predict_on_batch(self, x):
        return 0.3 * np.asarray(x).sum(axis=(1, 2))[:, None]


class Constant:
    def __init__(self, r):
        self.r = r

    def predict_on_batch(self, x):
        return np.full((len(x), 1), self.r)


def model(keras_like, version="m1", cut=T0 + 100 * H, val=(T0 + 60 * H, T0 + 100 * H), lookback=4):
    return TrainedModel(
        keras_like,
        Scaler(np.array([0.0]), np.array([1.0])),
        {
            "version": version,
            "symbol": "BTCUSDT",
            "fingerprint": CFG.model_fingerprint(),
            "hyperparameters": {"features": ["log_return"], "lookback": lookback},
            "data_window": {
                "cut": cut.isoformat(),
                "validation_start": val[0].isoformat(),
                "validation_end": val[1].isoformat(),
            },
            "interval": {"q_low": -0.01, "q_high": 0.01},
        },
    )


def series(n=200, r=0.01, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    closes = 100 * np.exp(np.cumsum(r + rng.normal(0, noise, n) if noise else np.full(n, r)))
    idx = pd.date_range(T0, periods=n, freq="h", tz="UTC", name="open_time")
    return pd.DataFrame({"close": closes, "quote_volume": 1.0}, index=idx)


# --- look-ahead -------------------------------------------------------------------------------


def test_forecast_ignores_the_target_hour_and_everything_after():
    f = series(120, noise=0.01)
    m = model(WindowSum())
    target = T0 + 80 * H
    honest = m.forecast(before(f, target), target)
    tampered = f.copy()
    tampered.loc[tampered.index >= target, "close"] *= 10  # the hour being predicted, and later
    assert m.forecast(tampered, target).predicted_close == honest.predicted_close
    assert m.forecast(f, target).predicted_close == honest.predicted_close
    # the test has teeth: the last hour before the target does move the forecast
    moved = f.copy()
    moved.loc[target - H, "close"] *= 1.05
    assert m.forecast(moved, target).predicted_close != honest.predicted_close


def test_batch_evaluation_uses_the_same_windows_and_no_target_data():
    f = series(120, noise=0.01)
    m = model(WindowSum())
    targets = pd.date_range(T0 + 50 * H, T0 + 60 * H, freq="h", inclusive="left")
    batch = m.forecast_hours(f, targets)
    for t in targets:
        assert batch.loc[t, "predicted_close"] == pytest.approx(
            m.forecast(before(f, t), t).predicted_close, rel=1e-12
        )
    tampered = f.copy()
    tampered.loc[targets[3], "close"] *= (
        3  # only the target hour of one sample (and input of later ones)
    )
    again = m.forecast_hours(tampered, targets[:4])
    assert again.loc[targets[3], "predicted_close"] == batch.loc[targets[3], "predicted_close"]
    assert again.loc[targets[3], "actual_close"] != batch.loc[targets[3], "actual_close"]


def test_hourly_predict_serves_from_data_before_the_target_only():
    f = series(150, noise=0.01)
    reg = MemoryRegistry()
    m = model(WindowSum(), cut=T0 + 100 * H)
    reg.models[("BTCUSDT", "m1")] = m
    reg.set_current(m, "test")
    target = T0 + 120 * H
    tampered = f.copy()
    tampered.loc[tampered.index >= target, "close"] = 1.0
    a, why = hourly.predict("BTCUSDT", f, target, reg, CFG)
    b, _ = hourly.predict("BTCUSDT", tampered, target, reg, CFG)
    assert a == b and a.model_version == "m1" and "promoted" in why
    assert (
        a.last_close == f["close"].iloc[119] and a.lower_close < a.predicted_close < a.upper_close
    )


def test_no_promoted_model_means_labelled_persistence():
    f = series(50)
    fc, why = hourly.predict("BTCUSDT", f, T0 + 50 * H, MemoryRegistry(), CFG)
    assert fc.model_version == hourly.PERSISTENCE and fc.predicted_close == f["close"].iloc[-1]
    assert "no promoted model" in why


def test_stale_promoted_model_is_not_served():
    reg = MemoryRegistry()
    m = model(Constant(0.0), cut=T0 + 10 * H)
    reg.models[("BTCUSDT", "m1")] = m
    reg.set_current(m, "test")
    fc, why = hourly.predict("BTCUSDT", series(100), T0 + 90 * H, reg, CFG)
    assert fc.model_version == hourly.PERSISTENCE and "stale" in why


def test_a_promoted_model_serves_after_its_probation_and_only_while_it_does_not_lose():
    cfg = CFG.with_(probation_hours=6, retire_window_hours=12)
    f = series(160, r=0.002)  # a steady rise: a model predicting it beats persistence
    good, bad = (
        model(Constant(0.002), "good", cut=T0 + 100 * H),
        model(Constant(-0.002), "bad", cut=T0 + 100 * H),
    )
    for m, serves_at in ((good, T0 + 106 * H), (bad, None)):
        reg = MemoryRegistry()
        reg.models[("BTCUSDT", m.version)] = m
        reg.set_current(m, "test")
        for t in (T0 + 100 * H, T0 + 103 * H, T0 + 106 * H, T0 + 130 * H):
            fc, why = hourly.predict("BTCUSDT", f, t, reg, cfg)
            if serves_at is not None and t >= serves_at:
                assert fc.model_version == m.version, why
            else:
                assert fc.model_version == hourly.PERSISTENCE
                assert ("on probation" in why) if t < T0 + 106 * H else ("held back" in why), why
    # no probation: served from its cut on
    assert hourly.predict("BTCUSDT", f, T0 + 100 * H, reg, CFG)[0].model_version == "bad"


# --- readiness --------------------------------------------------------------------------------


def test_readiness_fresh_stale_and_gappy():
    f = series(48)  # hours 0..47
    now = T0 + 48 * H + timedelta(minutes=5)
    ok = hourly.readiness(f, now, CFG)
    assert ok.ok and ok.target_time == T0 + 48 * H
    stale = hourly.readiness(f.iloc[:-2], now, CFG)
    assert not stale.ok and stale.reason.startswith("stale") and "2 h behind" in stale.reason
    assert hourly.readiness(f.iloc[:-2], now, CFG.with_(freshness_tolerance_hours=2)).ok
    gappy = hourly.readiness(f.drop(index=f.index[-3]), now, CFG)
    assert not gappy.ok and gappy.reason.startswith("incomplete")
    assert not hourly.readiness(f.iloc[:0], now, CFG).ok
    # candles of the running hour (or later) are ignored, not taken as fresh
    assert hourly.readiness(series(60), now, CFG).target_time == T0 + 48 * H


# --- retrain cadence --------------------------------------------------------------------------


def test_training_reasons_follow_data_time():
    reg = MemoryRegistry()
    assert hourly.training_reason(reg, "BTCUSDT", T0, CFG) == "no model trained yet"
    m = model(Constant(0.0), cut=T0)
    reg.save(m, "promoted", "test")
    reg.set_current(m, "test")
    assert hourly.training_reason(reg, "BTCUSDT", T0 + 5 * H, CFG) is None
    assert hourly.training_reason(reg, "BTCUSDT", T0 + 24 * H, CFG).startswith("cadence")
    reg.clear_current("BTCUSDT", "test")
    assert (
        hourly.training_reason(reg, "BTCUSDT", T0 + 5 * H, CFG) is None
    )  # just attempted: wait retry_hours
    assert hourly.training_reason(reg, "BTCUSDT", T0 + 6 * H, CFG).startswith("no promoted model")
    reg.set_current(m, "test")
    assert (
        hourly.training_reason(reg, "BTCUSDT", T0 + 8 * H, CFG.with_(lookback=8))
        == "configuration changed since the last training"
    )
    assert hourly.training_reason(
        reg, "BTCUSDT", T0 + 8 * H, CFG.with_(max_model_age_hours=8, retrain_every_hours=99)
    ).startswith("stale")


# --- promotion --------------------------------------------------------------------------------

TREND = series(120, r=0.01)  # a steady 1 %/h rise: predicting +1 % is perfect, 0 is persistence


@pytest.mark.parametrize(
    "new_r, cur_r, action",
    [
        (0.01, None, "promote"),  # better than persistence, nothing to beat
        (-0.01, None, "none_served"),  # worse than persistence: never served
        (0.005, 0.01, "keep_current"),  # better than persistence but worse than current
        (0.01, 0.005, "promote"),  # better than both
        (-0.01, 0.005, "keep_current"),  # worse than persistence, current still fine
        (-0.01, -0.02, "none_served"),  # both worse than persistence: current retired
    ],
)
def test_promotion_rule(new_r, cur_r, action):
    new = model(Constant(new_r), version="new")
    cur = None if cur_r is None else model(Constant(cur_r), version="cur")
    d = decide(new, cur, before(TREND, T0 + 100 * H))
    assert d.action == action, d
    assert d.comparison["n"] == 40 and d.comparison["mae_persistence"] > 0

    reg = MemoryRegistry()
    if cur is not None:
        reg.save(cur, "promoted", "earlier")
        reg.set_current(cur, "earlier")
    reg.record(new, d)
    served = reg.current_pointer("BTCUSDT")
    expected = {"promote": "new", "keep_current": "cur", "none_served": None}[action]
    assert (served and served["version"]) == expected
    assert reg.last_attempt("BTCUSDT")["status"] == (
        "promoted" if action == "promote" else "rejected"
    )


def test_rejections_in_a_row_back_off_up_to_the_cadence():
    reg = MemoryRegistry()
    cfg = CFG.with_(retrain_every_hours=48)
    cut, waits = T0, []
    for k in range(5):
        m = model(Constant(-0.01), version=f"r{k}", cut=cut, val=(cut - 40 * H, cut))
        reg.record(m, decide(m, None, before(TREND, cut)))
        assert reg.last_attempt("BTCUSDT")["rejections_in_a_row"] == k + 1
        wait = next(
            h for h in range(1, 100) if hourly.training_reason(reg, "BTCUSDT", cut + h * H, cfg)
        )
        waits.append(wait)
        cut += wait * H
    assert waits == [6, 12, 24, 48, 48]
    good = model(Constant(0.01), version="g", cut=cut, val=(cut - 40 * H, cut))
    reg.record(good, decide(good, None, before(TREND, cut)))
    assert reg.last_attempt("BTCUSDT")["rejections_in_a_row"] == 0


# --- the backtest replays the DAG's steps -----------------------------------------------------


def fake_train(symbol, history, cut, cfg, version=None, min_samples=0, pool=None, tick=None):
    """Training stand-in: a model good on a rising series at even cut hours, bad at odd ones."""
    sign = 1.0 if cut.hour % 2 == 0 else -1.0
    keras_like = WindowSum() if sign > 0 else Constant(-0.02)
    m = model(keras_like, version=version, cut=cut, val=(cut - 40 * H, cut))
    m.metadata.update(metrics={}, baseline_metrics={}, train_seconds=0.0, epochs_run=1)
    return m


@pytest.mark.parametrize("probation_hours", [0, 6])
def test_backtest_batches_exactly_what_the_dag_serves_hour_by_hour(monkeypatch, probation_hours):
    from cryptoflow.forecast import backtest, train as train_mod

    monkeypatch.setattr(train_mod, "train", fake_train)
    f = series(
        400, r=0.003, noise=0.004, seed=3
    )  # models that pass the evidence test, and one that then loses live
    f = f.drop(
        index=f.index[[250, 251, 300]]
    )  # gaps: skipped hours, then windows rebuilt after them
    cfg = CFG.with_(
        retrain_every_hours=29,
        retry_hours=5,
        max_model_age_hours=40,
        probation_hours=probation_hours,
    )
    start, end = T0 + 150 * H, T0 + 400 * H
    served, raw, skipped, trainings = backtest.replay("BTCUSDT", f, start, end, cfg)

    reg, expected, n_skipped = MemoryRegistry(), [], 0

    def scored(
        version,
    ):  # what the DAG reads back from forecast.predictions: the version's scored live hours
        rows = [
            x
            for x in expected
            if x.model_version == version and pd.Timestamp(x.target_time) in f.index
        ]
        rows = rows[-cfg.retire_window_hours :]
        return (
            np.array([x.predicted_close for x in rows]),
            np.array([x.last_close for x in rows]),
            f["close"].reindex(pd.DatetimeIndex([x.target_time for x in rows])).to_numpy(),
        )

    for t in hourly.hours(start, end):
        history = before(f, t)
        ready = hourly.readiness(history, t, cfg)
        if not ready.ok or ready.target_time != t:
            n_skipped += 1
            continue
        hourly.retire_if_losing(reg, "BTCUSDT", t, cfg, scored)
        hourly.ensure_model(
            "BTCUSDT", history, t, reg, cfg, version=f"bt-BTCUSDT-lstm-{t:%Y%m%dT%H}Z"
        )
        expected.append(hourly.predict("BTCUSDT", history, t, reg, cfg)[0])
    assert sum(skipped.values()) == n_skipped > 0
    if probation_hours:  # the losing model is held back instead of served, then retired
        assert any("on probation" in x.served_reason for x in served)
        assert any("held back" in x.served_reason for x in served)
    else:
        assert any("retired" in tr for tr in trainings)  # live retirement replayed too
    assert [(x.target_time, x.model_version, x.last_close, x.served_reason) for x in served] == [
        (x.target_time, x.model_version, x.last_close, x.served_reason) for x in expected
    ]
    for a, b in zip(served, expected):
        assert a.predicted_close == pytest.approx(b.predicted_close, rel=1e-12)
        # The same conformal interval (the hour's own history vs the whole frame: the same hours used)
        assert (a.lower_close is None) == (b.lower_close is None)
        if a.lower_close is not None:
            assert (a.lower_close, a.upper_close) == pytest.approx(
                (b.lower_close, b.upper_close), rel=1e-9
            )
    with_interval = {
        x.model_version == hourly.PERSISTENCE for x in served if x.lower_close is not None
    }
    assert with_interval == {True, False}  # persistence and models both carry intervals
    versions = {x.model_version for x in served}
    assert hourly.PERSISTENCE in versions and len(versions) > 2  # both paths exercised
    assert {t["decision"] for t in trainings if "decision" in t} >= {"promote", "none_served"}
    assert len(raw) >= sum(x.model_version != hourly.PERSISTENCE for x in served)


def test_a_stale_model_does_not_block_a_fresh_one_that_beats_persistence(monkeypatch):
    from cryptoflow.forecast import train as train_mod

    reg = MemoryRegistry()
    old = model(
        Constant(0.01), version="old", cut=T0 + 20 * H
    )  # perfect on TREND, but 80 h old at T0+100h
    reg.save(old, "promoted", "earlier")
    reg.set_current(old, "earlier")

    def half_as_good(symbol, history, cut, cfg, version=None, pool=None, **kw):
        m = model(Constant(0.005), version="new", cut=cut)
        m.metadata.update(metrics={}, baseline_metrics={}, train_seconds=0.0, epochs_run=1)
        return m

    monkeypatch.setattr(train_mod, "train", half_as_good)
    target = T0 + 100 * H
    assert hourly.training_reason(reg, "BTCUSDT", target, CFG).startswith("cadence")
    out = hourly.ensure_model("BTCUSDT", TREND, target, reg, CFG)
    assert out["decision"] == "promote" and reg.current_pointer("BTCUSDT")["version"] == "new"
    fresh = dict(reg.pointers)
    reg.pointers = {
        "BTCUSDT": {**fresh["BTCUSDT"], "version": "old", "cut": (T0 + 90 * H).isoformat()}
    }
    reg.models[("BTCUSDT", "old")] = old
    out = hourly.ensure_model(
        "BTCUSDT", TREND, target, reg, CFG, force=True
    )  # a fresh current still counts
    assert out["decision"] == "keep_current"


def test_the_exchange_tick_and_the_pool_are_asked_for_only_when_a_model_is_trained(monkeypatch):
    """The DAG passes callables (exchangeInfo is a network call, the pool a read of every pool coin's
    candles): an up-to-date model costs neither."""
    from cryptoflow.forecast import train as train_mod

    seen = []

    def recording_train(symbol, history, cut, cfg, version=None, pool=None, tick=None, **kw):
        seen.append((tick, pool))
        return fake_train(symbol, history, cut, cfg, version=version, pool=pool, tick=tick)

    monkeypatch.setattr(train_mod, "train", recording_train)
    reg, asked = MemoryRegistry(), []

    def tick():
        asked.append("tick")
        return 0.01

    def pool():
        asked.append("pool")
        return {"ETHUSDT": TREND}

    target = T0 + 100 * H
    out = hourly.ensure_model("BTCUSDT", TREND, target, reg, CFG, tick=tick, pool=pool)
    assert out["trained"] and out["exchange_tick"] == 0.01 and asked == ["tick", "pool"]
    assert seen[0][0] == 0.01 and list(seen[0][1]) == ["ETHUSDT"]
    out = hourly.ensure_model("BTCUSDT", TREND, target + H, reg, CFG, tick=tick, pool=pool)
    assert not out["trained"] and len(asked) == 2  # model up to date: neither is asked for again
