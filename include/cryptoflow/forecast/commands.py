"""Plain functions behind `cryptoflow backtest` and `cryptoflow train` (the CLI only parses arguments)."""

from __future__ import annotations

import logging
from contextlib import closing
from datetime import datetime

from cryptoflow import ingest, settings
from cryptoflow.forecast import backtest as backtest_mod, config, data, hourly
from cryptoflow.forecast.registry import ObjectRegistry

log = logging.getLogger(__name__)


def backtest(
    symbols,
    start: datetime,
    end: datetime,
    retrain_every_hours: int | None = None,
    dsn: str | None = None,
    store: bool = True,
    cfg=None,
) -> list[dict]:
    """Walk-forward backtest of each symbol over [start, end) on warehouse data; logs each report.

    `cfg`: another configuration to replay (architecture, features, lookback, pool...; default: the DAG's)."""
    from cryptoflow.warehouse import db

    reports = []
    with db.connect(dsn) as conn:
        for symbol in symbols:
            rep = backtest_mod.backtest(
                symbol, start, end, retrain_every_hours, cfg=cfg, conn=conn, store=store
            )
            log.info("%s", backtest_mod.format_report(rep))
            reports.append(rep)
    return reports


def train(symbols=None, at: datetime | None = None, dsn: str | None = None) -> list[dict]:
    """Train now (whatever the cadence) for each symbol on the hours before `at` (default: after the
    latest complete hour), apply the promotion rule and register the model."""
    from cryptoflow.warehouse import db

    cfg, app = config.load(), settings.load()
    out = []
    with db.connect(dsn) as conn, closing(ingest.rest_client_for(app)) as market:
        registry = ObjectRegistry(app.model_store_uri, conn=conn)
        for symbol in symbols or app.symbols:
            target = at or (lambda t: t and t + data.HOUR)(data.latest_complete_hour(conn, symbol))
            if target is None:
                log.info("%s: no complete 1h candles in the warehouse; nothing trained", symbol)
                continue
            frame = data.load_with_references(
                conn, symbol, before=target, hours=cfg.train_hours + cfg.lookback + 2
            )
            res = hourly.ensure_model(
                symbol,
                frame,
                target,
                registry,
                cfg,
                force=True,
                pool=hourly.load_pool(conn, target, cfg),
                tick=hourly.exchange_tick(market, symbol),
            )
            if res["trained"]:
                m, p = res["metrics"], res["baseline_metrics"]["persistence"]
                log.info(
                    "%s: %s %s (%s); validation MAE %.6g vs persistence %.6g, MASE %.4f",
                    symbol,
                    res["version"],
                    res["decision"],
                    res["decision_reason"],
                    m["mae"],
                    p["mae"],
                    m["mase"],
                )
            else:
                log.info("%s: %s", symbol, res["reason"])
            out.append(res)
    return out
