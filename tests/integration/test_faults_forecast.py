"""Forecast faults against a real registry (file://) holding a real trained Keras model.

The promoted model's files damaged in the ways storage damages them: the model file missing, cut
short, overwritten with garbage or with another valid model; its metadata unreadable; the pointer
to it unreadable. Each time
the hourly step must serve no forecast from that model: it falls back to the persistence forecast,
labelled as such with the reason; never a number from a broken model. Stale input data (no prediction at all, with the reason) is covered by test_forecast_dag.py
and unit/forecast/test_hourly.py; a stale model by unit/forecast/test_hourly.py.
"""

from __future__ import annotations

import shutil

import pytest

from cryptoflow.forecast import config, hourly
from cryptoflow.forecast.data import frame_from_candles
from cryptoflow.forecast.registry import Decision, ObjectRegistry
from cryptoflow.forecast.train import train
from tests.integration.test_forecast_training import shared_candles

pytestmark = pytest.mark.integration

SYMBOL = "ETHUSDT"


@pytest.fixture(scope="module")
def frame(shared_data):
    return frame_from_candles(shared_candles(shared_data, SYMBOL)[-500:])


@pytest.fixture(scope="module")
def cfg():
    return config.load(
        {}, train_hours=400, epochs=1
    )  # a real Keras model; its quality is beside the point


@pytest.fixture(scope="module")
def trained(frame, cfg):
    return train(SYMBOL, frame, frame.index[-20].to_pydatetime(), cfg)


@pytest.fixture
def registry(tmp_path, trained):
    reg = ObjectRegistry(f"file://{tmp_path}/models", conn_id=None)
    reg.record(trained, Decision("promote", "test promotion"))
    return reg


def _serve(registry, frame, cfg):
    """The hourly step with a registry instance that has nothing cached (as each Airflow task has)."""
    fresh = ObjectRegistry(registry.uri, conn_id=None)
    target = frame.index[-10].to_pydatetime()
    return hourly.predict(SYMBOL, frame, target, fresh, cfg), float(frame["close"].iloc[-11])


def test_healthy_model_is_served(registry, trained, frame, cfg):
    (f, why), _ = _serve(registry, frame, cfg)
    assert f.model_version == trained.version and why.startswith("promoted model")


def _version_dir(registry, trained):
    from pathlib import Path

    return Path(registry.uri.removeprefix("file://")) / SYMBOL / trained.version


def _model_file(registry, trained):
    return _version_dir(registry, trained) / "model.keras"


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "empty"])
def test_damaged_model_file_is_never_served(registry, trained, frame, cfg, damage):
    path = _model_file(registry, trained)
    data = path.read_bytes()
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a keras file\xff" * 100)
    else:
        path.write_bytes(b"")
    (f, why), last_close = _serve(registry, frame, cfg)
    assert f.model_version == hourly.PERSISTENCE
    assert f.predicted_close == last_close  # the labelled baseline, not a broken model's number
    assert trained.version in why and ("missing" in why or "unreadable" in why), why


def test_unreadable_metadata_is_never_served(registry, trained, frame, cfg):
    meta = _version_dir(registry, trained) / "metadata.json"
    meta.write_text('{"scaler": ')
    (f, why), last_close = _serve(registry, frame, cfg)
    assert f.model_version == hourly.PERSISTENCE and f.predicted_close == last_close
    assert "unreadable" in why, why


def test_unreadable_pointer_is_never_served(registry, trained, frame, cfg):
    # current.json cut short (a crash mid-write on a store without atomic rename)
    pointer = _version_dir(registry, trained).parent / "current.json"
    pointer.write_text(pointer.read_text()[:15])
    (f, why), last_close = _serve(registry, frame, cfg)
    assert f.model_version == hourly.PERSISTENCE and f.predicted_close == last_close, why
    assert "unreadable" in why and "current.json" in why, why


def test_swapped_model_file_is_never_served(registry, trained, frame, cfg, tmp_path):
    # A valid Keras file of the same architecture, but not the one registered (other weights).
    import keras

    clone = keras.models.clone_model(trained.model)
    clone.set_weights([w * 1.5 for w in trained.model.get_weights()])
    other = tmp_path / "other.keras"
    clone.save(other)
    assert other.read_bytes() != _model_file(registry, trained).read_bytes()
    _model_file(registry, trained).write_bytes(other.read_bytes())
    (f, why), last_close = _serve(registry, frame, cfg)
    assert f.model_version == hourly.PERSISTENCE and f.predicted_close == last_close
    assert "sha256" in why, why


def test_model_directory_gone_is_never_served(registry, trained, frame, cfg):
    shutil.rmtree(_version_dir(registry, trained))
    (f, why), last_close = _serve(registry, frame, cfg)
    assert f.model_version == hourly.PERSISTENCE and f.predicted_close == last_close
    assert "missing" in why, why
