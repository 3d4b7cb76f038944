"""Windows, scaler, baselines and metrics of cryptoflow.forecast: small hand-made series, no TensorFlow."""

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from cryptoflow.forecast import baselines, metrics
from cryptoflow.forecast.data import frame_from_candles
from cryptoflow.forecast.windows import (
    Scaler,
    feature_frame,
    input_windows,
    latest_window,
    make_samples,
)

pytestmark = pytest.mark.quick
T0 = datetime(2021, 1, 1, tzinfo=timezone.utc)


def frame(closes, start=T0, drop=()):
    idx = pd.date_range(start, periods=len(closes), freq="h", tz="UTC", name="open_time")
    f = pd.DataFrame(
        {
            "close": np.asarray(closes, float),
            "quote_volume": np.arange(1, len(closes) + 1, dtype=float),
        },
        index=idx,
    )
    return f.drop(index=[idx[i] for i in drop])


def test_sample_is_lookback_returns_then_next_return():
    closes = [100 * 1.01**i for i in range(10)]
    closes[6] = 200.0  # a jump makes the alignment visible
    feats = feature_frame(frame(closes), ("log_return",))
    s = make_samples(feats, ("log_return",), lookback=3, horizon=1)
    # first window: returns of hours 1..3 (hour 0 has no return), target hour 4
    assert s.target_time[0] == T0 + timedelta(hours=4)
    i = list(s.target_time).index(T0 + timedelta(hours=6))
    assert s.y[i, 0] == pytest.approx(math.log(200 / closes[5]))
    assert s.last_close[i] == closes[5] and s.actual_close[i] == 200.0
    # the window before target hour 6 covers hours 3, 4, 5: the jump is not in it
    np.testing.assert_allclose(s.X[i, :, 0], np.log(1.01) * np.ones(3))


def test_a_gap_drops_every_window_and_target_touching_it():
    f = frame([100.0 + i for i in range(30)], drop=(10,))
    s = make_samples(feature_frame(f, ("log_return",)), ("log_return",), lookback=4, horizon=1)
    gone = {
        T0 + timedelta(hours=h) for h in range(10, 16)
    }  # targets 10, 11 (return spans gap) .. 15
    assert not gone & set(s.target_time)
    assert T0 + timedelta(hours=16) in set(s.target_time)
    assert latest_window(f, ("log_return",), 4, T0 + timedelta(hours=14)) is None
    assert latest_window(f, ("log_return",), 4, T0 + timedelta(hours=16)) is not None


def test_latest_window_is_the_same_window_as_the_training_samples():
    rng = np.random.default_rng(1)
    f = frame(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 60))))
    feats_names = ("log_return", "log_volume_change")
    s = make_samples(feature_frame(f, feats_names), feats_names, lookback=5, horizon=1)
    for i in (0, 17, len(s) - 1):
        window, last = latest_window(f, feats_names, 5, s.target_time[i])
        np.testing.assert_allclose(window[0], s.X[i])
        assert last == s.last_close[i]


def test_input_windows_are_the_windows_the_dag_builds_at_each_hour():
    rng = np.random.default_rng(2)
    f = frame(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 40))), drop=(20, 30))
    names = ("log_return", "log_volume_change")
    w = input_windows(f, names, 4)
    built = {
        T0 + timedelta(hours=h): latest_window(f, names, 4, T0 + timedelta(hours=h))
        for h in range(45)
    }
    assert list(w.target_time) == [t for t, got in built.items() if got is not None]
    assert w.target_time[-1] == T0 + timedelta(
        hours=40
    )  # the hour after the data: predictable, not scorable
    for i, t in enumerate(w.target_time):
        np.testing.assert_array_equal(w.X[i], built[t][0][0])
        assert w.last_close[i] == built[t][1]
    assert np.isnan(w.actual_close[-1]) and w.actual_close[0] == f.loc[w.target_time[0], "close"]


def test_horizon_targets_are_consecutive_returns():
    closes = [100, 101, 103, 106, 110, 115, 121]
    s = make_samples(
        feature_frame(frame(closes), ("log_return",)), ("log_return",), lookback=2, horizon=3
    )
    np.testing.assert_allclose(s.y[0], np.log([106 / 103, 110 / 106, 115 / 110]))


def test_scaler_is_fitted_on_what_it_is_given_and_round_trips():
    X = np.arange(24, dtype=float).reshape(4, 3, 2)
    sc = Scaler.fit(X[:2])  # the training part only
    assert sc.mean.tolist() == [5.0, 6.0]
    np.testing.assert_allclose(sc.inverse_y(sc.y(np.array([[7.0]]))), [[7.0]], rtol=1e-6)
    again = Scaler.from_dict(sc.to_dict())
    np.testing.assert_allclose(again.x(X), sc.x(X))


def test_first_feature_must_be_the_target():
    with pytest.raises(ValueError, match="log_return"):
        feature_frame(frame([1.0, 2.0]), ("log_volume_change",))


def test_baselines_use_only_earlier_hours():
    f = frame([100 * 1.01**i for i in range(50)])
    feats = feature_frame(f, ("log_return",))
    targets = feats.index[30:35]
    before = baselines.predicted_returns(feats["log_return"], targets, drift_hours=5, ewma_span=4)
    changed = feats["log_return"].copy()
    changed.iloc[30:] = 0.5  # the target hours themselves and later
    after = baselines.predicted_returns(changed, targets[:1], drift_hours=5, ewma_span=4)
    assert before["persistence"].tolist() == [0.0] * 5
    assert before["drift"][0] == pytest.approx(math.log(1.01))
    assert after["drift"][0] == before["drift"][0] and after["ewma"][0] == before["ewma"][0]


def test_metrics_by_hand():
    actual = np.array([101.0, 99.0, 100.0, 102.0])
    last = np.array([100.0, 101.0, 99.0, 100.0])
    pred = np.array([100.5, 100.0, 99.5, 101.0])
    m = metrics.evaluate(actual, pred, last, lower=pred - 1, upper=pred + 1)
    assert m["mae"] == pytest.approx((0.5 + 1 + 0.5 + 1) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 1 + 0.25 + 1) / 4))
    assert m["mase"] == pytest.approx(m["mae"] / ((1 + 2 + 1 + 2) / 4))
    assert m["directional_accuracy"] == 1.0
    assert m["coverage"] == 1.0
    assert m["mape"] == pytest.approx(np.mean([0.5 / 101, 1 / 99, 0.5 / 100, 1 / 102]) * 100)
    p = metrics.evaluate(actual, last, last)
    assert p["mase"] == 1.0 and p["directional_accuracy"] is None


def test_compare_puts_persistence_beside_the_model():
    actual, last = np.array([2.0, 3.0]), np.array([1.0, 2.0])
    out = metrics.compare(actual, last, model_pred=actual, baselines={"drift": last + 0.5})
    assert set(out) == {"model", "persistence", "drift"}
    assert out["model"]["mase"] == 0.0 and out["drift"]["mase"] == 0.5
    assert "MASE < 1" in metrics.format_table(out)


def test_frame_from_candles_keeps_hourly_only():
    class C:
        def __init__(self, t, interval="1h"):
            self.open_time, self.interval, self.close, self.quote_volume = t, interval, "1.5", "2"

    f = frame_from_candles([C(3_600_000), C(0), C(60_000, "1m")])
    assert list(f.index.hour) == [0, 1] and f["close"].tolist() == [1.5, 1.5]


def test_cli_settings_parse_like_the_environment():
    from cryptoflow.forecast import config

    cfg = config.with_settings(
        [
            "architecture=gru",
            "lookback=48",
            "features=log_return,log_volume_change",
            "pool=BTCUSDT,ETHUSDT",
        ],
        environ={"CRYPTOFLOW_FORECAST_EPOCHS": "3"},
    )
    assert (cfg.architecture, cfg.lookback, cfg.epochs) == ("gru", 48, 3)
    assert cfg.features == ("log_return", "log_volume_change") and cfg.pool == (
        "BTCUSDT",
        "ETHUSDT",
    )
    assert cfg.model_fingerprint() != config.load({}).model_fingerprint()
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        config.with_settings(["lookbak=48"], environ={})
    with pytest.raises(ValueError, match="not a valid int"):
        config.with_settings(["lookback=many"], environ={})


def test_cross_coin_feature_reads_the_reference_coins_closes_on_the_same_hours():
    from cryptoflow.forecast import data
    from cryptoflow.forecast.windows import feature_frame, reference_columns

    idx = pd.date_range("2021-03-01", periods=6, freq="h", tz="UTC", name="open_time")
    alt = pd.DataFrame({"close": [1.0, 1.1, 1.2, 1.1, 1.0, 1.05], "quote_volume": 1.0}, index=idx)
    btc = pd.DataFrame(
        {"close": [100.0, 101.0, 99.0, 98.0], "quote_volume": 1.0}, index=idx[[0, 1, 2, 4]]
    )
    assert reference_columns(("log_return", "btc_log_return")) == {"btc_close": "BTCUSDT"}
    joined = data.with_references(alt, {"btc_close": btc})
    f = feature_frame(joined, ("log_return", "btc_log_return"))
    assert f["btc_log_return"].iloc[1] == pytest.approx(np.log(101 / 100))
    assert np.isnan(f["btc_log_return"].iloc[3]) and np.isnan(
        f["btc_log_return"].iloc[4]
    )  # BTC's missing hour
    with pytest.raises(ValueError, match="btc_close"):
        feature_frame(alt, ("log_return", "btc_log_return"))


def test_level_feature_is_the_log_close_of_the_same_hour():
    f = feature_frame(frame([1.0002, 0.9999, 1.0001]), ("log_return", "log_level"))
    assert f["log_level"].tolist() == pytest.approx(np.log([1.0002, 0.9999, 1.0001]).tolist())
    assert f["log_return"].iloc[2] == pytest.approx(np.log(1.0001 / 0.9999))
