"""Training and the walk-forward backtest end to end on the shared Binance data (small settings for CI)."""

from datetime import timedelta

import numpy as np
import psycopg
import pytest

from cryptoflow.forecast import backtest, config
from cryptoflow.forecast.data import before, frame_from_candles
from cryptoflow.forecast.train import train

pytestmark = pytest.mark.integration
# Sized for 2 busy cores: about 3 s per training. The benchmark uses the real defaults.
SMALL = config.load({}, train_hours=600, epochs=4, patience=2)


def shared_candles(shared_data, symbol):
    from cryptoflow.importers.cryptodatadownload import import_cdd_csv

    res = import_cdd_csv(
        shared_data / "cryptodatadownload" / f"Binance_{symbol}_1h.csv", allow_missing_trades=True
    )
    return res.candles  # oldest first


def load_into_warehouse(dsn, candles):
    from cryptoflow.warehouse.load import upsert_candles

    with psycopg.connect(dsn) as conn:
        return upsert_candles(conn, candles)


@pytest.fixture(scope="module")
def btc(shared_data):
    candles = shared_candles(shared_data, "BTCUSDT")
    return candles, frame_from_candles(candles)


def test_training_is_deterministic_and_never_looks_past_the_cut(btc):
    _, frame = btc
    cut = frame.index[-150].to_pydatetime()
    full = train("BTCUSDT", frame, cut, SMALL, version="a")  # handed data after the cut too
    cut_only = train("BTCUSDT", before(frame, cut), cut, SMALL, version="b")
    target = frame.index[-150]
    # Same seeds, same data before the cut: the same model. Anything after the cut leaking into
    # training (windows, scaler, early stopping) would make these differ.
    a, b = full.forecast(frame, target), cut_only.forecast(frame, target)
    assert a.predicted_close == pytest.approx(b.predicted_close, rel=1e-9)
    assert full.metadata["scaler"] == cut_only.metadata["scaler"]

    m = full.metadata
    dw = m["data_window"]
    assert dw["validation_end"] <= dw["cut"] == cut.isoformat()
    assert dw["n_validation"] >= 0.19 * (dw["n_train"] + dw["n_validation"])
    assert m["hyperparameters"]["lookback"] == 24 and m["architecture"] == "lstm"
    # every model metric has the baselines' figures on the same hours beside it
    assert set(m["baseline_metrics"]) == {"persistence", "drift", "ewma"}
    assert m["metrics"]["n"] == m["baseline_metrics"]["persistence"]["n"] == dw["n_validation"]
    assert m["baseline_metrics"]["persistence"]["mase"] == 1.0
    assert 0.5 < m["metrics"]["mase"] < 1.5 and 0.7 < m["metrics"]["coverage"] <= 1.0
    assert m["code_version"] and m["epochs_run"] >= 1
    # no tick from an exchange: the grid comes from the closes (BTC's are on cents)
    assert (m["policy"]["tick"], m["policy"]["tick_source"]) == (
        pytest.approx(0.01),
        "inferred from the closes",
    )
    assert a.lower_close < a.predicted_close < a.upper_close
    assert (
        abs(np.log(a.predicted_close / a.last_close)) < 0.05
    )  # a return-sized move, not a price jump


def test_gru_architecture_is_picked_by_name_and_the_exchange_tick_is_served(btc):
    _, frame = btc
    m = train(
        "BTCUSDT",
        frame,
        frame.index[-10].to_pydatetime(),
        SMALL.with_(architecture="gru", epochs=1),
        tick=0.1,
    )
    assert m.model.name == "gru" and m.metadata["architecture"] == "gru"
    # the exchange's grid wins over the one the closes show (0.01)
    assert (m.metadata["policy"]["tick"], m.metadata["policy"]["tick_source"]) == (0.1, "exchange")


def test_walk_forward_backtest_stores_scored_backtest_predictions(btc, use_warehouse):
    candles, frame = btc
    load_into_warehouse(use_warehouse.writer_dsn, candles[-900:])
    start = frame.index[-30].to_pydatetime()
    end = start + timedelta(hours=30)
    with psycopg.connect(use_warehouse.writer_dsn) as conn:
        report = backtest.backtest(
            "BTCUSDT", start, end, retrain_every_hours=24, cfg=SMALL, conn=conn
        )
        rows = conn.execute(
            "SELECT count(*), count(actual_close), min(target_open_time), max(target_open_time),"
            " bool_and(persistence_close IS NOT NULL) FROM forecast.predictions WHERE kind = 'backtest'"
        ).fetchone()
    assert report["hours_predicted"] == 30 and report["stored"] == 30
    # The DAG's cadence: the next training 24 h after a promotion, retry_hours after a rejection
    # (hourly.training_reason), whichever the evidence test decided.
    trainings = report["trainings"]
    gap = 24 if trainings[0]["decision"] == "promote" else SMALL.retry_hours
    assert [t["version"] for t in trainings[:2]] == [
        f"bt-BTCUSDT-lstm-{start:%Y%m%dT%H}Z",
        f"bt-BTCUSDT-lstm-{start + timedelta(hours=gap):%Y%m%dT%H}Z",
    ]
    assert rows == (30, 30, start, end - timedelta(hours=1), True)
    ms = report["metrics"]
    assert ms["persistence"]["mase"] == 1.0 and ms["served"]["n"] == ms["persistence"]["n"] == 30
    assert {"rmse", "mae", "mape", "mase", "directional_accuracy"} <= set(ms["served"])
    assert "model_raw" in ms and "drift" in ms and "ewma" in ms
    assert "MASE" in backtest.format_report(report)


def test_one_model_across_coins_shares_the_network_and_keeps_each_coins_scaler(btc, shared_data):
    from cryptoflow.forecast import train as train_mod

    _, frame = btc
    eth = frame_from_candles(shared_candles(shared_data, "ETHUSDT"))
    cut = frame.index[-100].to_pydatetime()
    cfg = SMALL.with_(pool=("BTCUSDT", "ETHUSDT"), epochs=1, train_hours=400)
    train_mod._pooled_fits.clear()
    b = train("BTCUSDT", frame, cut, cfg, pool={"ETHUSDT": eth, "BTCUSDT": frame})
    e = train("ETHUSDT", eth, cut, cfg, pool={"ETHUSDT": eth, "BTCUSDT": frame})  # reuses the fit
    assert b.metadata["pooled_with"] == ["ETHUSDT"] and e.metadata["pooled_with"] == ["BTCUSDT"]
    assert (
        b.metadata["n_train_pooled"]
        == e.metadata["n_train_pooled"]
        > 1.9 * b.metadata["data_window"]["n_train"]
    )
    for wb, we in zip(b.model.get_weights(), e.model.get_weights()):
        np.testing.assert_array_equal(wb, we)
    assert b.metadata["scaler"] != e.metadata["scaler"]
    assert b.metadata["hyperparameters"]["pool"] == ["BTCUSDT", "ETHUSDT"]
    assert "pool" not in SMALL.hyperparameters()  # per-coin models keep their fingerprints
    # the other coins' hours at or after the cut are not used either
    train_mod._pooled_fits.clear()
    b2 = train("BTCUSDT", frame, cut, cfg, pool={"ETHUSDT": before(eth, cut)})
    for w1, w2 in zip(b.model.get_weights(), b2.model.get_weights()):
        np.testing.assert_allclose(w1, w2, rtol=1e-6)
