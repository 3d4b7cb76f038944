"""The model registry round trip on file:// and on a real S3-compatible endpoint (moto server mode)."""

import json

import psycopg
import pytest

from cryptoflow.forecast import config
from cryptoflow.forecast.data import frame_from_candles
from cryptoflow.forecast.registry import Decision, ObjectRegistry
from cryptoflow.forecast.train import train
from tests.conftest import forget_object_stores
from tests.integration.test_forecast_training import shared_candles

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def frame(shared_data):
    return frame_from_candles(shared_candles(shared_data, "ETHUSDT")[-500:])


@pytest.fixture(scope="module")
def trained(frame):
    cfg = config.load({}, train_hours=400, epochs=1)
    return train("ETHUSDT", frame, frame.index[-20].to_pydatetime(), cfg)


def round_trip(registry: ObjectRegistry, trained, frame):
    target = frame.index[-10]
    expected = trained.forecast(frame, target)
    assert registry.current_pointer("ETHUSDT") is None and registry.last_attempt("ETHUSDT") is None
    registry.record(trained, Decision("promote", "test promotion"))
    assert registry.current_pointer("ETHUSDT")["version"] == trained.version
    assert registry.last_attempt("ETHUSDT")["status"] == "promoted"
    assert registry.versions("ETHUSDT") == [trained.version]

    fresh = type(registry)(registry.uri, conn=registry.conn)  # nothing cached
    loaded = fresh.current("ETHUSDT")
    assert loaded.version == trained.version
    assert loaded.forecast(frame, target) == expected
    meta = fresh.metadata("ETHUSDT", trained.version)
    for key in (
        "data_window",
        "hyperparameters",
        "metrics",
        "baseline_metrics",
        "code_version",
        "scaler",
        "interval",
    ):
        assert meta[key], key
    assert meta["metrics"]["n"] == meta["baseline_metrics"]["persistence"]["n"]

    fresh.clear_current("ETHUSDT", "test retirement")
    assert fresh.current_pointer("ETHUSDT") is None and fresh.current("ETHUSDT") is None
    return meta


def test_file_registry_round_trip_with_warehouse_index(tmp_path, trained, frame, warehouse):
    with psycopg.connect(warehouse.writer_dsn) as conn:
        reg = ObjectRegistry(f"file://{tmp_path}/models", conn=conn)
        conn.execute("SELECT 1")
        meta = round_trip(reg, trained, frame)
        assert (
            tmp_path / "models" / "ETHUSDT" / trained.version / "model.keras"
        ).stat().st_size > 10_000
        assert (
            meta["artifact_uri"]
            == f"file://{tmp_path}/models/ETHUSDT/{trained.version}/model.keras"
        )
        row = conn.execute(
            "SELECT status, status_reason, artifact_uri, metrics, baseline_metrics, train_start,"
            " train_end, code_version FROM forecast.model_versions WHERE version = %s",
            (trained.version,),
        ).fetchone()
    status, reason, artifact, metrics, base, start, end, code = row
    assert (status, reason, artifact) == ("retired", "test retirement", meta["artifact_uri"])
    assert metrics["mase"] == meta["metrics"]["mase"] and base["persistence"]["mase"] == 1.0
    assert start < end and code


@pytest.fixture
def s3_endpoint(monkeypatch):
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    creds = {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }
    s3 = boto3.client("s3", endpoint_url=endpoint, **creds)
    s3.create_bucket(Bucket="cf-models")
    # The same shape of connection as the local stack and docker-compose define.
    monkeypatch.setenv(
        "AIRFLOW_CONN_CRYPTOFLOW_MODELS",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            }
        ),
    )
    forget_object_stores()  # this endpoint, not an earlier test's
    yield s3
    forget_object_stores()
    server.stop()


def test_s3_registry_round_trip_through_the_airflow_connection(s3_endpoint, trained, frame):
    reg = ObjectRegistry("s3://cf-models/models")
    meta = round_trip(reg, trained, frame)
    keys = {o["Key"] for o in s3_endpoint.list_objects_v2(Bucket="cf-models")["Contents"]}
    assert {
        f"models/ETHUSDT/{trained.version}/model.keras",
        f"models/ETHUSDT/{trained.version}/metadata.json",
        "models/ETHUSDT/last_attempt.json",
    } <= keys
    assert "models/ETHUSDT/current.json" not in keys  # retired at the end of the round trip
    assert meta["artifact_uri"].startswith("s3://cf-models/models/ETHUSDT/")
