"""The task bodies of the forecast_hourly DAG (dags/forecast_hourly.py)."""

from __future__ import annotations

import logging
from contextlib import closing
from datetime import datetime, timedelta

from airflow.sdk.exceptions import AirflowFailException

from cryptoflow import settings
from cryptoflow.airflow.hooks import WarehouseHook, market_history

log = logging.getLogger(__name__)


def coins_waited_for(
    target: datetime, began: datetime, wait_minutes: float, now: datetime
) -> tuple[dict, bool]:
    """({coin: why} of the coins whose hour before `target` is not complete yet, whether the wait is over).

    The wait counts from the hour's end or from when the run began waiting, whichever is later."""
    from cryptoflow.forecast import config, hourly

    cfg = config.load()
    deadline = max(target, began) + timedelta(minutes=wait_minutes)
    with WarehouseHook().connect() as conn:
        waiting = {
            s: r.reason
            for s in settings.load().symbols
            if not (r := hourly.check_inputs(conn, s, target, cfg)).ok
        }
    over = now >= deadline
    for s, why in waiting.items():
        log.info("%s: %s", s, why)
    if waiting and over:
        log.info(
            "waited until %sZ: going on without %s (their checks fail with the reason)",
            f"{deadline:%H:%M}",
            ", ".join(waiting),
        )
    return waiting, over


def check_fresh(symbol: str, target: datetime, run_id: str) -> dict:
    """The coin's inputs for `target` are ready (recorded as a check); fails red with the reason if not."""
    from cryptoflow.forecast import config, hourly
    from cryptoflow.warehouse import db

    cfg = config.load()
    with WarehouseHook().connect() as conn:
        ready = hourly.check_inputs(conn, symbol, target, cfg)
        db.record_check(
            conn,
            run_id,
            hourly.PIPELINE,
            "forecast_input_ready",
            ready.ok,
            observed=ready.reason,
            expected="previous hour complete, lookback hours present",
            symbol=symbol,
        )
        conn.commit()
    if not ready.ok:
        # Red, not skipped: an hour without a forecast is something the user must see.
        raise AirflowFailException(
            f"{symbol}: no forecast for {target:%Y-%m-%d %H:%M}Z: {ready.reason}"
        )
    return ready.as_dict()


def train_if_needed(symbol: str, ready: dict) -> dict:
    """Retires the served model if it loses live, then trains one on the cadence or when missing or stale."""
    from cryptoflow.forecast import config, data, hourly
    from cryptoflow.forecast.registry import ObjectRegistry

    cfg = config.load()
    target = datetime.fromisoformat(ready["target_time"])

    def tick() -> float | None:
        # The coin's tick grid from exchangeInfo, asked only when a model is trained; one quick
        # retry: without it the grid is inferred from the closes.
        with closing(market_history(max_retries=1, timeout_s=5)) as market:
            return hourly.exchange_tick(market, symbol)

    with WarehouseHook().connect() as conn:
        registry = ObjectRegistry.from_settings(conn)
        retired = hourly.retire_if_losing(
            registry,
            symbol,
            target,
            cfg,
            lambda version: hourly.live_record(
                conn, symbol, version, target, cfg.retire_window_hours
            ),
        )
        frame = data.load_with_references(
            conn, symbol, before=target, hours=cfg.train_hours + cfg.lookback + 2
        )
        out = hourly.ensure_model(
            symbol,
            frame,
            target,
            registry,
            cfg,
            pool=lambda: hourly.load_pool(conn, target, cfg),
            tick=tick,
        )
        return {**out, "retired_live": retired}


def predict(symbol: str, ready: dict) -> dict:
    """The served forecast of the coin's target hour, and why that model serves."""
    from cryptoflow.forecast import config, data, hourly, serving
    from cryptoflow.forecast.registry import ObjectRegistry

    cfg = config.load()
    target = datetime.fromisoformat(ready["target_time"])
    with WarehouseHook().connect() as conn:
        frame = data.load_with_references(
            conn, symbol, before=target, hours=serving.history_hours(cfg)
        )
    forecast, why = hourly.predict(symbol, frame, target, ObjectRegistry.from_settings(), cfg)
    return {**forecast.as_dict(), "served_because": why}


def write(forecast: dict, run_id: str) -> tuple[int, dict]:
    """Stores the forecast (persistence beside it); returns the rows written and the PREDICTIONS event's extra."""
    from cryptoflow.forecast import hourly
    from cryptoflow.forecast.train import Forecast
    from cryptoflow.warehouse import db

    f = Forecast(**{k: v for k, v in forecast.items() if k != "served_because"})
    f.target_time = datetime.fromisoformat(forecast["target_time"])
    with (
        WarehouseHook().connect() as conn,
        db.pipeline_run(conn, hourly.PIPELINE, run_id, f"write:{f.symbol}") as stats,
    ):
        stats["rows_out"] = hourly.write_predictions(conn, [f], kind="live")
        stats["details"].update(forecast)
    return stats["rows_out"], {
        "symbol": f.symbol,
        "target_open_time": forecast["target_time"],
        "model_version": f.model_version,
    }


def score_earlier(symbol: str, run_id: str) -> dict:
    """Fills the actual close of the coin's earlier predictions whose hour has closed."""
    from cryptoflow.forecast import hourly
    from cryptoflow.warehouse import db

    with (
        WarehouseHook().connect() as conn,
        db.pipeline_run(conn, hourly.PIPELINE, run_id, f"score:{symbol}") as stats,
    ):
        summary = hourly.score(conn, symbol)
        stats["rows_out"] = summary["newly_scored"]
        stats["details"].update(summary)
    return summary
