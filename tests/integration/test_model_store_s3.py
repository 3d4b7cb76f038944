"""Models in S3 through the production code path: settings -> ObjectRegistry -> ObjectStoragePath.

A real S3 HTTP endpoint (moto's server on loopback) stands in for MinIO. The store is reached only
through the Airflow connection `cryptoflow_models` defined by environment variable, as the local
stack and docker-compose define it: no AWS_* variable or credentials file can help it along.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets

import psycopg
import pytest

from tests.conftest import forget_object_stores

pytestmark = pytest.mark.integration

BUCKET = "cf-models-s3-test"
STORE = f"s3://{BUCKET}/models"
SYMBOL = "ETHUSDT"


@pytest.fixture
def moto_s3(monkeypatch, tmp_path):
    import boto3
    from moto.server import ThreadedMotoServer

    # Port 0: the OS picks a free port and the server keeps it (no pick-then-bind race).
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            monkeypatch.delenv(key)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        # moto accepts any keys; made up per run so no credential-like literal sits in the repository
        key_id, key = "cf-" + secrets.token_hex(6), secrets.token_hex(12)
        monkeypatch.setenv(
            "AIRFLOW_CONN_CRYPTOFLOW_MODELS",
            json.dumps(
                {
                    "conn_type": "aws",
                    "login": key_id,
                    "password": key,
                    "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
                }
            ),
        )
        monkeypatch.setenv("CRYPTOFLOW_MODEL_STORE_URI", STORE)
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=key_id,
            aws_secret_access_key=key,
        )
        s3.create_bucket(Bucket=BUCKET)
        forget_object_stores()  # this endpoint, not an earlier test's
        yield s3
        forget_object_stores()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def small_model(shared_data):
    """One epoch on 400 hours of the real ETH candles (as test_forecast_registry trains it)."""
    from cryptoflow.forecast import config
    from cryptoflow.forecast.data import frame_from_candles
    from cryptoflow.forecast.train import train
    from tests.integration.test_forecast_training import shared_candles

    frame = frame_from_candles(shared_candles(shared_data, SYMBOL)[-500:])
    cfg = config.load({}, train_hours=400, epochs=1)
    return train(SYMBOL, frame, frame.index[-20].to_pydatetime(), cfg), frame


def _keys(s3) -> dict[str, int]:
    return {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def test_model_saved_to_s3_and_served_back_by_a_new_registry(moto_s3, small_model, warehouse):
    from cryptoflow.forecast.registry import Decision, ModelUnavailable, ObjectRegistry

    trained, frame = small_model
    target = frame.index[-10]
    expected = trained.forecast(frame, target)
    v = trained.version

    with psycopg.connect(warehouse.writer_dsn) as conn:
        reg = ObjectRegistry.from_settings(conn=conn)  # what forecast_hourly's tasks build
        assert reg.current_pointer(SYMBOL) is None and reg.versions(SYMBOL) == []
        reg.record(trained, Decision("promote", "s3 test promotion"))
        indexed = conn.execute(
            "SELECT status, artifact_uri FROM forecast.model_versions WHERE version = %s", (v,)
        ).fetchone()
    assert indexed == (
        "promoted",
        f"{STORE}/{SYMBOL}/{v}/model.keras",
    )  # the store's URI, no conn id in it

    # Really in the bucket, byte for byte what the metadata vouches for.
    keys = _keys(moto_s3)
    assert set(keys) == {
        f"models/{SYMBOL}/{v}/model.keras",
        f"models/{SYMBOL}/{v}/metadata.json",
        f"models/{SYMBOL}/current.json",
        f"models/{SYMBOL}/last_attempt.json",
    }
    blob = moto_s3.get_object(Bucket=BUCKET, Key=f"models/{SYMBOL}/{v}/model.keras")["Body"].read()
    meta = json.loads(
        moto_s3.get_object(Bucket=BUCKET, Key=f"models/{SYMBOL}/{v}/metadata.json")["Body"].read()
    )
    assert len(blob) > 10_000 and meta["artifact_sha256"] == hashlib.sha256(blob).hexdigest()
    assert (
        json.loads(
            moto_s3.get_object(Bucket=BUCKET, Key=f"models/{SYMBOL}/current.json")["Body"].read()
        )["version"]
        == v
    )

    # A new registry (nothing cached) finds, loads and serves the same model.
    fresh = ObjectRegistry(STORE)
    assert fresh.versions(SYMBOL) == [v] and fresh.last_attempt(SYMBOL)["status"] == "promoted"
    loaded = fresh.current(SYMBOL)
    assert loaded is not trained and loaded.version == v
    assert loaded.forecast(frame, target) == expected
    assert fresh.metadata(SYMBOL, v) == meta

    # What the registry reads is the bucket's: a replaced object is refused, a deleted one is missing.
    moto_s3.put_object(
        Bucket=BUCKET,
        Key=f"models/{SYMBOL}/{v}/model.keras",
        Body=blob[:100] + bytes([blob[100] ^ 0xFF]) + blob[101:],
    )
    with pytest.raises(ModelUnavailable, match="sha256"):
        ObjectRegistry(STORE).load(SYMBOL, v)
    moto_s3.delete_object(Bucket=BUCKET, Key=f"models/{SYMBOL}/{v}/model.keras")
    assert "missing" in ObjectRegistry(STORE).unavailable(SYMBOL, v)

    fresh.clear_current(SYMBOL, "s3 test retirement")
    assert f"models/{SYMBOL}/current.json" not in _keys(moto_s3)
    assert ObjectRegistry(STORE).current_pointer(SYMBOL) is None
