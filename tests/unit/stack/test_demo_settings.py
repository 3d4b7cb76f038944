"""The demo runs only the coins its feed can serve, so its freshness checks test something real."""

from __future__ import annotations

import logging

import pytest

import binance_emulator as replay
from cryptoflow_stack import demo
from cryptoflow.settings import DEFAULT_SYMBOLS

pytestmark = pytest.mark.quick


def test_symbols_with_history_reads_file_names(tmp_path):
    for name in (
        "Binance_BTCUSDT_1h.csv",
        "ETHUSDT-1m-2024-01.zip",
        "notes.txt",
        "Binance_btcusdt_1h.csv",
    ):
        (tmp_path / name).write_text("")
    assert replay.symbols_with_history([tmp_path]) == {"BTCUSDT", "ETHUSDT"}


def test_replay_demo_leaves_out_coins_without_history(tmp_path, caplog):
    (tmp_path / "Binance_BTCUSDT_1h.csv").write_text("")
    (tmp_path / "Binance_SOLUSDT_1h.csv").write_text("")
    with caplog.at_level(logging.INFO, logger=demo.__name__):
        settings = demo.demo_settings(
            {"CRYPTOFLOW_BINANCE_MODE": "replay", "CRYPTOFLOW_REPLAY_DATA": str(tmp_path)}
        )
    said = [r.getMessage() for r in caplog.records if r.name == demo.__name__]
    assert settings.symbols == ("BTCUSDT", "SOLUSDT")
    assert settings.binance_mode == "replay"
    assert any("POLUSDT" in line and "left out" in line for line in said)


def test_a_replay_demo_without_history_says_where_it_looked(tmp_path):
    # A clone without ../shared beside it: the error names the directory and the setting to change.
    with pytest.raises(
        SystemExit,
        match=f"no replay history .* in {tmp_path}/cryptodatadownload;.*CRYPTOFLOW_SHARED_DATA",
    ):
        demo.demo_settings(
            {"CRYPTOFLOW_BINANCE_MODE": "replay", "CRYPTOFLOW_SHARED_DATA": str(tmp_path)}
        )


def test_explicit_symbols_and_live_mode_are_kept(tmp_path):
    (tmp_path / "Binance_BTCUSDT_1h.csv").write_text("")
    explicit = demo.demo_settings(
        {
            "CRYPTOFLOW_BINANCE_MODE": "replay",
            "CRYPTOFLOW_REPLAY_DATA": str(tmp_path),
            "CRYPTOFLOW_SYMBOLS": "BTCUSDT,ETHUSDT",
        }
    )
    assert explicit.symbols == ("BTCUSDT", "ETHUSDT")
    live = demo.demo_settings(
        {"CRYPTOFLOW_BINANCE_MODE": "live", "CRYPTOFLOW_REPLAY_DATA": str(tmp_path)}
    )
    assert live.symbols == tuple(DEFAULT_SYMBOLS)


def test_a_restarted_demo_seeds_only_what_healing_cannot_bring_back():
    from cryptoflow.ingest import HEAL_HORIZON_MS
    from cryptoflow_stack.demo import why_seed

    now, day, hours = 1_800_000_000_000, 86_400_000, 480
    coins = ("BTCUSDT", "ETHUSDT")
    seeded = now - 21 * day  # a demo that ran before: 20 days of seed and more
    assert why_seed({}, coins, now, hours) == "no stored history for BTCUSDT, ETHUSDT"
    assert (
        why_seed({"BTCUSDT": (seeded, now - 60_000)}, coins, now, hours)
        == "no stored history for ETHUSDT"
    )
    # A fresh stack whose first scheduled window was loaded before the demo asked: not a history.
    first_window = (now - 10 * 60_000, now - 60_000)
    assert (
        why_seed({"BTCUSDT": first_window, "ETHUSDT": first_window}, coins, now, hours)
        == "the stored history of BTCUSDT, ETHUSDT starts less than 480 h ago"
    )
    # Restarted after 3 h and after a day down: healing brings both up to now.
    assert (
        why_seed(
            {"BTCUSDT": (seeded, now - 3 * 3_600_000), "ETHUSDT": (seeded, now - day)},
            coins,
            now,
            hours,
        )
        is None
    )
    assert "ETHUSDT ends more than 31 days ago" in why_seed(
        {
            "BTCUSDT": (seeded - 40 * day, now),
            "ETHUSDT": (seeded - 40 * day, now - HEAL_HORIZON_MS - 1),
        },
        coins,
        now,
        hours,
    )
