"""The platform's main job on one machine: `cryptoflow up --demo` (what `make run` does).

1. Binance live if reachable, else the replay server on loopback, serving the real shared candles
   shifted to the present, in real time (so the 10-minute ingest sees fresh windows as if live).
2. The collector holds the kline stream for the configured coins and writes its segments.
3. History is seeded from REST so the forecasts have something to learn from at once, spark_etl
   is triggered on those snapshots and forecast_backtest on their last hours (a walk-forward
   backtest, so the Forecasts dashboard is full from the start); from then on binance_ingest
   seals every 10 minutes (healing what is missing) -> spark_etl on the landing Asset, and
   forecast_hourly forecasts every hour once the hour is complete.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from cryptoflow_stack import process
from cryptoflow.settings import LIVE_REST_URL, Settings, given
from cryptoflow.times import datetime_from_ms, ms_from_datetime, now_ms

log = logging.getLogger(__name__)

# 20 days of minutes: enough hourly candles for the LSTM's lookback and a validation window.
DEFAULT_HISTORY_HOURS = 20 * 24
# The walk-forward backtest over the seed's last hours: scored forecasts on the dashboard at once
# (more than a day of them), one or two trainings per coin.
DEFAULT_BACKTEST_HOURS = 30
SEED_RUN_ID = "demo_seed"
# Where the replay server records its timeline (binance.replay.anchored_timeline).
REPLAY_ANCHOR = "replay-anchor.json"


def binance_reachable(timeout: float = 2.0) -> bool:
    """One TCP connect to Binance's REST host (no request is sent)."""
    host = urlparse(LIVE_REST_URL).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def choose_mode(environ=os.environ) -> str:
    """An explicit CRYPTOFLOW_BINANCE_MODE wins; otherwise live where Binance answers, else replay."""
    explicit = given(environ).get("binance_mode")
    if explicit:
        return explicit
    if binance_reachable():
        log.info("Binance is reachable: live mode")
        return "live"
    log.info(
        "Binance is out of reach: the demo replays the shared historical candles (replay mode)"
    )
    return "replay"


def demo_settings(environ=os.environ) -> Settings:
    """The demo's settings: the chosen mode and, in replay mode, only the coins the replay can serve.

    A coin with no history to replay (POLUSDT has no shared file) would stay silent, and every
    freshness check would then fail on it, rightly. An explicit CRYPTOFLOW_SYMBOLS is kept as given.
    """
    import binance_emulator as replay
    from cryptoflow.settings import load

    mode = choose_mode(environ)
    env = {**environ, "CRYPTOFLOW_BINANCE_MODE": mode}
    settings = load(env)
    if mode != "replay" or "symbols" in given(environ):
        return settings
    dirs = replay.default_data_dirs(settings)
    served = replay.symbols_with_history(dirs)
    kept = [s for s in settings.symbols if s in served]
    left_out = [s for s in settings.symbols if s not in served]
    if not kept:
        # Say where it looked: the usual cause is a clone without ../shared beside it.
        raise SystemExit(
            f"no replay history for any of {', '.join(settings.symbols)} in "
            f"{', '.join(str(d) for d in dirs)}; set CRYPTOFLOW_SHARED_DATA to the shared data"
            " directory (or CRYPTOFLOW_REPLAY_DATA to candle files)"
        )
    if left_out:
        log.info(
            f"Replay       no history to replay for {', '.join(left_out)}: left out of the demo "
            "(set CRYPTOFLOW_SYMBOLS to choose the coins)"
        )
    return load({**env, "CRYPTOFLOW_SYMBOLS": ",".join(kept)})


def _cli() -> str:
    return str(Path(sys.executable).parent / "cryptoflow")


def start_feed(settings: Settings, play_hours: float = DEFAULT_HISTORY_HOURS + 24) -> None:
    """Replay server (in replay mode) and the collector, as background services of the stack."""
    env = {**os.environ, **settings.as_env()}
    run_dir, logs = settings.state_dir / "run", settings.logs_dir
    if settings.binance_mode == "replay":
        # The anchor keeps the replayed history at the same times across restarts of the stack.
        process.start(
            "replay-server",
            [
                _cli(),
                "replay-server",
                "--speed",
                "1",
                "--play-hours",
                str(play_hours),
                "--anchor-file",
                str(settings.state_dir / REPLAY_ANCHOR),
            ],
            env,
            run_dir,
            logs,
            cwd=settings.home,
        )
        process.wait_http(
            f"{settings.binance_rest_url}/api/v3/ping",
            60,
            "replay server",
            logs / "replay-server.log",
            pid_alive=lambda: process.read_pid(run_dir, "replay-server") is not None,
        )
        log.info(
            f"Replay       {settings.binance_rest_url} (REST) and {settings.binance_ws_url} (websocket)"
        )
    process.start("collector", [_cli(), "collect"], env, run_dir, logs, cwd=settings.home)
    log.info(
        f"Collector    segments in {settings.state_dir / 'collector'}, log {logs / 'collector.log'}"
    )


def seed_history(settings: Settings, hours: float) -> tuple[list[str], int]:
    """Backfill `hours` of history from REST into landing snapshots; returns their URIs and the end (ms).

    One snapshot per UTC day, named by the span it holds (ingest.land_span), so the healing and
    the gap check know which times the seed promised. It ends at the whole hour;
    the minutes from there to the first 10-minute window the scheduler seals are healed over REST
    by that window's run (binance_ingest), like any other gap.
    """
    from cryptoflow import ingest

    end = now_ms()
    end -= end % 3_600_000
    start = end - int(hours * 3_600_000)
    result, uris = ingest.backfill_and_land(settings, start, end, SEED_RUN_ID)
    log.info(
        f"History      {result.counts['loaded']} candles of {len(settings.symbols)} coins from REST "
        f"({result.counts['quarantined']} quarantined) in {len(uris)} snapshots"
    )
    return uris, end


def stored_spans(settings: Settings) -> dict[str, tuple[int, int]]:
    """Each configured coin's (first, newest) stored candle of the ingest interval (open times, ms);
    coins with none are absent."""
    from cryptoflow.warehouse import db

    with db.connect(settings.warehouse_dsn) as conn:
        rows = conn.execute(
            "SELECT symbol, min(open_time), max(open_time) FROM market.candles"
            " WHERE interval = %s AND symbol = ANY(%s) GROUP BY symbol",
            (settings.interval, list(settings.symbols)),
        ).fetchall()
    return {s: (ms_from_datetime(lo), ms_from_datetime(hi)) for s, lo, hi in rows}


def why_seed(spans: dict[str, tuple[int, int]], symbols, now_ms: int, hours: float) -> str | None:
    """Why the demo must seed history from REST; None when every coin's stored history already
    reaches back the seed's `hours` and ends recently enough for binance_ingest's healing to bring
    it up to now (a restarted demo). The scheduler's first window may be stored before this is
    asked: ten minutes of a fresh stack are not a history."""
    from cryptoflow.ingest import HEAL_HORIZON_MS

    missing = [s for s in symbols if s not in spans]
    if missing:
        return f"no stored history for {', '.join(missing)}"
    short = [s for s in symbols if spans[s][0] > now_ms - int(hours * 3_600_000) + 3_600_000]
    if short:
        return f"the stored history of {', '.join(short)} starts less than {hours:g} h ago"
    old = [s for s in symbols if now_ms - spans[s][1] > HEAL_HORIZON_MS]
    if old:
        return f"the stored history of {', '.join(old)} ends more than {HEAL_HORIZON_MS // 86_400_000} days ago"
    return None


def run(
    settings: Settings,
    airflow_api,
    hours: float = DEFAULT_HISTORY_HOURS,
    backtest_hours: int = DEFAULT_BACKTEST_HOURS,
) -> None:
    """Seed the history, load it, and backtest its last hours (the feed is already running:
    `cryptoflow up --demo` starts it before the scheduler). A restarted demo whose history is
    stored seeds nothing: binance_ingest heals the time it was down, from the same replayed
    timeline (the replay server's anchor)."""
    spans = stored_spans(settings)
    reason = why_seed(spans, settings.symbols, now_ms(), hours)
    if reason is None:
        since = datetime_from_ms(min(hi for _, hi in spans.values())).strftime("%Y-%m-%d %H:%M UTC")
        log.info(
            f"History      kept: every coin's history is stored (up to {since} at least); the next "
            "binance_ingest run heals the time since then over REST"
        )
        log.info("The 10-minute binance_ingest runs from now on; watch it in the Airflow UI.")
        return
    if spans:
        log.info(f"History      seeding: {reason}")
    uris, end = seed_history(settings, hours)
    dags = airflow_api.dag_ids()
    if "spark_etl" in dags:
        airflow_api.trigger("spark_etl", {"uris": uris})
        log.info("Triggered    spark_etl on the seeded history")
    else:
        log.info("spark_etl is not deployed: history stays in the landing zone")
    if "forecast_backtest" in dags and backtest_hours > 0:
        bt_start = end - backtest_hours * 3_600_000
        airflow_api.trigger(
            "forecast_backtest",
            {
                "start": datetime_from_ms(bt_start).isoformat(),
                "end": datetime_from_ms(end).isoformat(),
            },
        )
        log.info(
            f"Triggered    forecast_backtest on the last {backtest_hours} seeded hours (walk-forward, "
            "labelled 'backtest' on the Forecasts dashboard); forecast_hourly forecasts every hour from now on"
        )
    log.info("The 10-minute binance_ingest runs from now on; watch it in the Airflow UI.")


__all__ = ["run", "choose_mode", "demo_settings", "start_feed", "seed_history", "binance_reachable"]
