"""The Binance hook: URLs from cryptoflow settings, overridable by the binance_default connection."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.quick


@pytest.fixture
def hook_cls(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_BINANCE_DEFAULT", raising=False)
    from cryptoflow.airflow.hooks import BinanceHook

    return BinanceHook


def test_settings_without_connection(hook_cls, monkeypatch):
    monkeypatch.setenv("CRYPTOFLOW_BINANCE_MODE", "replay")
    monkeypatch.setenv("CRYPTOFLOW_REPLAY_PORT", "9555")
    monkeypatch.setenv("CRYPTOFLOW_SYMBOLS", "BTCUSDT,ETHUSDT")
    hook = hook_cls()
    assert hook.rest_url == "http://127.0.0.1:9555" and hook.ws_url == "ws://127.0.0.1:9555"
    cfg = hook.stream_config()
    assert cfg["url"] == "ws://127.0.0.1:9555/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
    assert hook.get_conn().base_url == "http://127.0.0.1:9555"


def test_connection_overrides_urls_and_budget(hook_cls, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_BINANCE_DEFAULT",
        json.dumps(
            {
                "conn_type": "http",
                "host": "10.0.0.5",
                "schema": "http",
                "port": 8443,
                "extra": {"ws_url": "ws://10.0.0.5:8443", "weight_budget": 1200},
            }
        ),
    )
    hook = hook_cls()
    assert hook.rest_url == "http://10.0.0.5:8443" and hook.ws_url == "ws://10.0.0.5:8443"
    assert hook.get_conn().weight_budget == 1200
