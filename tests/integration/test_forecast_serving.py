"""What the hourly steps store, on a real warehouse and a file:// registry of real Keras models.

The models are Keras networks with set weights (a constant return) instead of fitted ones, so each
outcome is certain: on a steadily rising series, a model predicting the rise beats persistence and
one predicting a fall loses. Paths checked by the stored rows:
- the model loses -> persistence is served, labelled, with the reason on the prediction row;
- a promoted model -> it serves, its version and reason on the row, with an interval;
- the promoted model's file swapped for another model's, corrupt, then missing, or the pointer to it
  half-written -> persistence with the reason, never a guess; and the next training replaces it
  (the unavailable one retired, with status and reason in forecast.model_versions).
"""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import psycopg
import pytest

from cryptoflow.candles import Candle
from cryptoflow.forecast import data, hourly, train as train_mod
from cryptoflow.forecast.config import ForecastConfig
from cryptoflow.forecast.registry import ObjectRegistry
from cryptoflow.forecast.train import TrainedModel
from cryptoflow.forecast.windows import Scaler
from tests.integration.test_forecast_training import load_into_warehouse

pytestmark = pytest.mark.integration
T0 = datetime(2021, 6, 1, tzinfo=timezone.utc)
H = timedelta(hours=1)
N = 300
# interval_min_scores 30: the stand-in models validate on 40 hours (real ones on hundreds)
CFG = ForecastConfig(lookback=6, train_hours=200, interval_min_scores=30)
RISE = 0.005  # per hour, with a small alternating wiggle


def rising_candles():
    out = []
    for i in range(N):
        close = 100 * np.exp(RISE * i + (0.001 if i % 2 else -0.001))
        t = int((T0 + i * H).timestamp() * 1000)
        c = Decimal(f"{close:.6f}")
        out.append(
            Candle(
                "BTCUSDT",
                "1h",
                t,
                t + 3_599_999,
                c,
                c * Decimal("1.002"),
                c * Decimal("0.998"),
                c,
                Decimal(10),
                Decimal(1000),
                None,
                None,
                100,
                True,
                "test",
            )
        )
    return out


def constant_model(r: float, cut: datetime, frame, version: str) -> TrainedModel:
    """A real Keras network that predicts log return `r` whatever its window, judged like a trained one."""
    import keras

    net = keras.Sequential(
        [keras.Input((CFG.lookback, 1)), keras.layers.Flatten(), keras.layers.Dense(1)]
    )
    net.set_weights([np.zeros((CFG.lookback, 1), "float32"), np.array([r], "float32")])
    feats, samples = train_mod.training_samples(frame, cut, CFG)
    va = samples.subset(slice(len(samples) - 40, None))
    m = TrainedModel(
        net,
        Scaler(np.array([0.0]), np.array([1.0])),
        {
            "version": version,
            "symbol": "BTCUSDT",
            "architecture": "constant",
            "fingerprint": CFG.model_fingerprint(),
            "hyperparameters": CFG.hyperparameters(),
            "scaler": {"mean": [0.0], "std": [1.0]},
            "interval": {"q_low": -0.003, "q_high": 0.003},
            "data_window": {
                "cut": cut.isoformat(),
                "train_start": (cut - 200 * H).isoformat(),
                "validation_start": va.target_time[0].isoformat(),
                "validation_end": (va.target_time[-1] + H).isoformat(),
            },
            "trained_at": datetime.now(timezone.utc).isoformat(),
            "code_version": "test",
            "train_seconds": 0.0,
            "epochs_run": 0,
        },
    )
    ev = train_mod.evaluate_on(m, feats, va, CFG)
    m.metadata.update(
        metrics=ev["model"], baseline_metrics={k: v for k, v in ev.items() if k != "model"}
    )
    return m


def test_served_model_or_labelled_persistence_with_the_reason_stored(
    use_warehouse, tmp_path, monkeypatch
):
    load_into_warehouse(use_warehouse.writer_dsn, rising_candles())
    next_return = {"r": -4 * RISE}  # the next "training" predicts a fall: it must lose
    monkeypatch.setattr(
        train_mod,
        "train",
        lambda symbol, history, cut, cfg, version=None, pool=None, **kw: constant_model(
            next_return["r"], cut, history, version or f"m{next_return['r']:+.3f}-{cut:%dT%H}"
        ),
    )
    uri = f"file://{tmp_path}/models"

    def run_hour(target, conn, force=False):
        """The DAG's train_if_needed, predict and write for one hour, with a fresh registry each step."""
        frame = data.load_hourly(
            conn, "BTCUSDT", before=target, hours=CFG.train_hours + CFG.lookback + 2
        )
        outcome = hourly.ensure_model(
            "BTCUSDT", frame, target, ObjectRegistry(uri, conn=conn), CFG, force=force
        )
        forecast, _why = hourly.predict("BTCUSDT", frame, target, ObjectRegistry(uri), CFG)
        hourly.write_predictions(conn, [forecast])
        row = conn.execute(
            "SELECT model_version, predicted_close::float8, persistence_close::float8, lower_close, served_reason"
            " FROM forecast.predictions WHERE target_open_time = %s",
            (target,),
        ).fetchone()
        return outcome, row

    with psycopg.connect(use_warehouse.writer_dsn) as conn:
        # 1. The model loses to persistence: not promoted, persistence served with the reason.
        t1 = T0 + (N - 30) * H
        outcome, (version, predicted, persistence, lower, reason) = run_hour(t1, conn)
        assert outcome["decision"] == "none_served"
        # with its interval (above the forecast here: on a steady rise every persistence error is positive)
        assert (version, predicted) == ("persistence", persistence) and lower is not None
        assert reason.startswith("persistence: no promoted model")
        [(status, status_reason)] = conn.execute(
            "SELECT status, status_reason FROM forecast.model_versions"
        ).fetchall()
        assert status == "rejected"
        assert status_reason.startswith(
            "new model not better than persistence beyond chance (DM p=1,"
        )

        # 2. A model predicting the rise beats persistence: promoted and served, interval included.
        next_return["r"] = RISE
        t2 = t1 + H
        outcome, (version, predicted, persistence, lower, reason) = run_hour(t2, conn, force=True)
        assert outcome["decision"] == "promote" and version == outcome["version"]
        assert predicted == pytest.approx(persistence * np.exp(RISE)) and lower is not None
        assert reason == f"promoted model {version}"
        promoted = version

        # 3. Its file replaced by another (valid) model's, then damaged: never served from it;
        #    persistence with the reason, and a retrain is due.
        model_file = tmp_path / "models" / "BTCUSDT" / promoted / "model.keras"
        rejected = conn.execute(
            "SELECT version FROM forecast.model_versions WHERE status = 'rejected'"
        ).fetchone()[0]
        model_file.write_bytes((model_file.parent.parent / rejected / "model.keras").read_bytes())
        t3 = t2 + H
        forecast, why = hourly.predict(
            "BTCUSDT",
            data.load_hourly(conn, "BTCUSDT", before=t3, hours=20),
            t3,
            ObjectRegistry(uri),
            CFG,
        )
        assert forecast.model_version == "persistence" and "sha256" in forecast.served_reason
        model_file.write_bytes(b"not a keras archive")
        reg = ObjectRegistry(uri, conn=conn)
        assert hourly.training_reason(reg, "BTCUSDT", t3, CFG).startswith(
            "promoted model unavailable"
        )
        forecast, why = hourly.predict(
            "BTCUSDT",
            data.load_hourly(conn, "BTCUSDT", before=t3, hours=20),
            t3,
            ObjectRegistry(uri),
            CFG,
        )
        hourly.write_predictions(conn, [forecast])
        version, reason = conn.execute(
            "SELECT model_version, served_reason FROM forecast.predictions"
            " WHERE target_open_time = %s",
            (t3,),
        ).fetchone()
        assert version == "persistence" and "unavailable" in reason and "unreadable" in reason

        # 4. Missing altogether: the same, "missing" in the reason.
        for f in model_file.parent.iterdir():
            f.unlink()
        forecast, why = hourly.predict(
            "BTCUSDT",
            data.load_hourly(conn, "BTCUSDT", before=t3, hours=20),
            t3,
            ObjectRegistry(uri),
            CFG,
        )
        assert forecast.model_version == "persistence" and "missing" in forecast.served_reason

        # 5. The next run retrains at once; the unavailable model is retired with the reason.
        outcome, (version, *_rest, reason) = run_hour(t3 + H, conn)
        assert outcome["trained"] and outcome["reason"].startswith("promoted model unavailable")
        assert outcome["decision"] == "promote" and version == outcome["version"] != promoted
        status, status_reason = conn.execute(
            "SELECT status, status_reason FROM forecast.model_versions WHERE version = %s",
            (promoted,),
        ).fetchone()
        assert status == "retired" and status_reason.startswith("unavailable: model")

        # 6. A damaged pointer (half-written current.json): persistence with the reason; the next
        #    training replaces the pointer.
        pointer = tmp_path / "models" / "BTCUSDT" / "current.json"
        pointer.write_text(pointer.read_text()[:25])
        t6 = t3 + 2 * H
        forecast, why = hourly.predict(
            "BTCUSDT",
            data.load_hourly(conn, "BTCUSDT", before=t6, hours=20),
            t6,
            ObjectRegistry(uri),
            CFG,
        )
        assert (
            forecast.model_version == "persistence"
            and "unreadable BTCUSDT/current.json" in forecast.served_reason
        )
        outcome, (version, *_rest, reason) = run_hour(t6, conn)
        assert outcome["reason"].startswith("promoted model unavailable (unreadable")
        assert outcome["decision"] == "promote" and reason == f"promoted model {version}"
