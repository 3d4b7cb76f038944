"""cryptoflow.sources: the interface, Binance behind it, and the files source sealing windows with no network."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from cryptoflow import ingest, landing, settings, sources
from cryptoflow.sources.binance.rest import BinanceRestClient
from cryptoflow.candles import INTERVAL_MS
from cryptoflow.settings import ConfigError

pytestmark = pytest.mark.quick

HOUR_MS = INTERVAL_MS["1h"]
T0 = int(datetime(2024, 3, 1, tzinfo=timezone.utc).timestamp() * 1000)


def write_cdd(directory, symbol: str, hours: list[int]) -> None:
    """A CryptoDataDownload hourly file (newest row first, as they publish them) with the given hours."""
    rows = []
    for h in sorted(hours, reverse=True):
        t = T0 + h * HOUR_MS
        stamp = datetime.fromtimestamp(t / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        o = 100 + h
        rows.append(
            f"{t},{stamp},{symbol[:-4]}/USDT,{o},{o + 2},{o - 1},{o + 1},10.5,{(o + 1) * 10.5},42"
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"Binance_{symbol}_1h.csv").write_text(
        "https://www.CryptoDataDownload.com\n"
        f"unix,date,symbol,open,high,low,close,Volume {symbol[:-4]},Volume USDT,tradecount\n"
        + "\n".join(rows)
        + "\n"
    )


def files_settings(tmp_path, **over):
    env = {
        "CRYPTOFLOW_STATE_DIR": str(tmp_path / "state"),
        "CRYPTOFLOW_SOURCE": "files",
        "CRYPTOFLOW_REPLAY_DATA": str(tmp_path / "files"),
        "CRYPTOFLOW_INTERVAL": "1h",
        "CRYPTOFLOW_SYMBOLS": "BTCUSDT",
        "CRYPTOFLOW_LANDING_URI": f"file://{tmp_path}/landing",
        # Nothing listens here: a request to "Binance" would fail the test.
        "CRYPTOFLOW_BINANCE_REST_URL": "http://127.0.0.1:9",
        "CRYPTOFLOW_BINANCE_WS_URL": "ws://127.0.0.1:9",
        **over,
    }
    return settings.load(env, stack_file=False)


def test_the_sources_are_the_modules_of_the_package_and_a_wrong_name_says_which_exist():
    assert {"binance", "files"} <= set(sources.names())
    assert sources.get("binance").has_stream and not sources.get("files").has_stream
    with pytest.raises(ConfigError, match="available: .*binance.*files"):
        sources.get("kraken")


def test_an_interval_the_source_lacks_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="no '7m' candles"):
        sources.active(files_settings(tmp_path, CRYPTOFLOW_INTERVAL="7m"))


def test_binance_is_the_default_and_its_history_is_the_rest_client_at_the_settings_url(tmp_path):
    cfg = settings.load(
        {
            "CRYPTOFLOW_STATE_DIR": str(tmp_path),
            "CRYPTOFLOW_BINANCE_REST_URL": "http://binance.test",
        },
        stack_file=False,
    )
    assert cfg.source == "binance"
    client = ingest.rest_client_for(cfg)
    assert isinstance(client, BinanceRestClient) and client.base_url == "http://binance.test"
    client.close()


def test_file_history_keeps_the_rest_contract_inclusive_bounds_oldest_first(tmp_path):
    write_cdd(tmp_path / "files", "BTCUSDT", [0, 1, 2, 3, 5])
    history = sources.active(files_settings(tmp_path)).history(files_settings(tmp_path))
    got = history.fetch_klines("BTCUSDT", "1h", T0 + HOUR_MS, T0 + 3 * HOUR_MS)
    assert [c.open_time for c in got] == [T0 + HOUR_MS, T0 + 2 * HOUR_MS, T0 + 3 * HOUR_MS]
    assert str(got[0].close) == "102" and got[0].trades == 42
    assert (
        history.fetch_klines("BTCUSDT", "1m", T0, T0 + 3 * HOUR_MS) == []
    )  # no such files: nothing
    assert history.fetch_klines("ETHUSDT", "1h", T0, T0 + 3 * HOUR_MS) == []


def test_the_files_source_seals_windows_without_network_and_keeps_a_missing_hour_a_hole(tmp_path):
    write_cdd(tmp_path / "files", "BTCUSDT", [0, 1, 3])  # hour 2 is absent from the file
    cfg = files_settings(tmp_path)
    result = ingest.seal_window(cfg, T0, T0 + 4 * HOUR_MS)
    assert result.rows == 3 and result.from_stream == 0
    assert [t for _, t in result.healed] == [T0, T0 + HOUR_MS, T0 + 3 * HOUR_MS]
    assert result.holes == [("BTCUSDT", T0 + 2 * HOUR_MS)]  # reported, never filled in
    stored = landing.read_snapshot(result.uri)
    assert sorted(c.open_time for c in stored) == [T0, T0 + HOUR_MS, T0 + 3 * HOUR_MS]
    ready, why = ingest.collector_ready(None, T0, T0, T0, has_stream=sources.active(cfg).has_stream)
    assert ready and "no stream" in why


def test_a_source_without_a_stream_has_no_collector(tmp_path):
    from cryptoflow.collector import Collector

    with pytest.raises(ConfigError, match="no stream"):
        Collector.from_settings(files_settings(tmp_path))
