"""Forecast benchmark on the shared Binance data (no warehouse needed: the CSVs are read directly).

Figures:
- train_predict_all_seconds: train (default configuration) and predict the next hour for every
  configured coin that has data, one after the other in this process (target: < 300 s on 2 cores);
- inference_ms_p50 / _p95: one coin's forecast from a model in memory: window, scaling, model call
  (target: < 100 ms); load_and_predict_ms: the same including loading the model from a file:// registry;
- mase_<COIN> (served forecasts, promotion rule applied) and mase_raw_<COIN> (latest trained model,
  promoted or not) from a walk-forward backtest over the last CRYPTOFLOW_BENCH_FORECAST_DAYS days of
  each coin's data, retraining every CRYPTOFLOW_BENCH_FORECAST_RETRAIN_HOURS hours; drift/EWMA
  MASE beside them. MASE < 1 beats persistence (next close = last close).
  CRYPTOFLOW_BENCH_FORECAST_END_OFFSET_DAYS ends the window that many days earlier.
- per coin also: coverage_served_<COIN> (the served forecasts' conformal 90 % intervals), dm_p_served_
  / dm_p_model_raw_<COIN> (one-sided Diebold-Mariano p of beating persistence), direction_when_moved_,
  retirements_<COIN> (live retirements); overall mase_served_median/_max, coverage_served_min/_max.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from datetime import datetime, timedelta

from cryptoflow import settings
from cryptoflow.forecast import backtest, config
from cryptoflow.forecast.data import HOUR, frame_from_candles, with_references
from cryptoflow.forecast.registry import Decision, ObjectRegistry
from cryptoflow.forecast.train import NotEnoughData, train
from cryptoflow.forecast.windows import REFERENCES


def _frames(symbols) -> dict:
    from cryptoflow.importers.cryptodatadownload import import_cdd_csv

    def read(s):
        path = settings.shared_data_dir() / "cryptodatadownload" / f"Binance_{s}_1h.csv"
        return (
            frame_from_candles(import_cdd_csv(path, allow_missing_trades=True).candles)
            if path.exists()
            else None
        )

    # The reference coins' closes joined in, as the DAG's loader does (cross-coin features read them).
    refs = {col: f for col, s in REFERENCES.values() if (f := read(s)) is not None}
    return {s: with_references(f, refs) for s in symbols if (f := read(s)) is not None}


def _progress(msg: str) -> None:
    import sys

    print(f"[bench_forecast] {msg}", file=sys.stderr, flush=True)


def bench_forecast(
    days: int | None = None, retrain_hours: int | None = None, log=_progress
) -> dict:
    app = settings.load()
    days = days or app.bench_forecast_days
    retrain_hours = retrain_hours or app.bench_forecast_retrain_hours
    cfg = config.load()
    symbols = list(app.bench_forecast_symbols or app.symbols)
    frames = _frames(symbols)
    fig: dict = {
        "coins_with_data": len(frames),
        "coins_without_data": ",".join(s for s in symbols if s not in frames),
        "architecture": cfg.architecture,
        "train_hours": cfg.train_hours,
        "lookback": cfg.lookback,
        "tf_threads": app.forecast_tf_threads,
    }

    if app.bench_forecast_mase_only:  # split long runs: skip the speed figures
        return _mase_per_coin(fig, frames, cfg, days, retrain_hours, log)

    models = _train_predict_all(fig, frames, cfg, log)
    _inference_latency(fig, models, frames)
    return _mase_per_coin(fig, frames, cfg, days, retrain_hours, log)


def _train_predict_all(fig: dict, frames: dict, cfg, log) -> dict:
    """1. train + predict every coin, as the hourly DAG does when all models are due (timed as a
    whole): the trained models."""
    models = {}
    t0 = time.perf_counter()
    for s, f in frames.items():
        cut = (f.index[-1] + HOUR).to_pydatetime()
        try:
            m = train(s, f, cut, cfg)
        except NotEnoughData:
            continue
        m.forecast(f, cut)
        models[s] = m
        log(f"trained {s} in {m.metadata['train_seconds']} s ({m.metadata['epochs_run']} epochs)")
    fig["train_predict_all_seconds"] = round(time.perf_counter() - t0, 1)
    fig["train_predict_all_seconds_target"] = 300
    fig["train_predict_all_met"] = fig["train_predict_all_seconds"] < 300
    return models


def _inference_latency(fig: dict, models: dict, frames: dict) -> None:
    """2. one-coin inference latency, from a model in memory and loaded from a registry."""
    sym = "BTCUSDT" if "BTCUSDT" in models else next(iter(models))
    m, f = models[sym], frames[sym]
    cut = (f.index[-1] + HOUR).to_pydatetime()
    m.forecast(f, cut)
    times = []
    for _ in range(200):
        t = time.perf_counter()
        m.forecast(f, cut)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    fig["inference_ms_p50"] = round(statistics.median(times), 2)
    fig["inference_ms_p95"] = round(times[int(0.95 * len(times)) - 1], 2)
    fig["inference_ms_target"] = 100
    fig["inference_met"] = fig["inference_ms_p95"] < 100
    fig["load_and_predict_ms_p50"] = _load_and_predict_ms(m, sym, f, cut)


def _load_and_predict_ms(m, sym: str, f, cut) -> float:
    """Median ms of loading `sym`'s current model from a file:// registry and predicting with it."""
    with tempfile.TemporaryDirectory(prefix="cf-bench-models-") as tmp:
        reg = ObjectRegistry(f"file://{tmp}")
        reg.record(m, Decision("promote", "benchmark"))
        loads = []
        for _ in range(5):
            t = time.perf_counter()
            current = ObjectRegistry(f"file://{tmp}").current(sym)
            assert current is not None  # recorded as current above
            current.forecast(f, cut)
            loads.append((time.perf_counter() - t) * 1000)
        return round(statistics.median(loads), 1)


def _mase_per_coin(fig: dict, frames: dict, cfg, days: int, retrain_hours: int, log) -> dict:
    """3. walk-forward MASE per coin over the last `days` days of its data (each coin's figures are
    also logged as one JSON line as soon as they are known, so a long run's partial results survive)."""
    import json

    fig["backtest_days"], fig["backtest_retrain_every_hours"] = days, retrain_hours
    # An earlier window (e.g. 30: the 30 days before the last 30) checks rules on hours they were not tuned on.
    app = settings.load()
    offset = app.bench_forecast_end_offset_days
    if offset:
        fig["backtest_end_offset_days"] = offset
    for s, f in frames.items():
        before_keys = set(fig)
        end = (f.index[-1] + HOUR).to_pydatetime() - timedelta(days=offset)
        # Coins with a short history (XRP: 45 days) keep enough hours before the range to train on.
        start = max(
            end - timedelta(days=days),
            (f.index[0] + HOUR * min(cfg.train_hours, len(f) // 2)).to_pydatetime(),
        )
        if start >= end:
            log(f"backtest {s}: no hours to replay {offset} days before its data ends")
            continue
        # The backtest logs every training and retirement: shown only when asked for.
        logging.getLogger(backtest.__name__).setLevel(
            logging.INFO if app.bench_verbose else logging.WARNING
        )
        rep = backtest.backtest(s, start, end, retrain_hours, cfg=cfg, frame=f, store=False)
        ms = rep["metrics"]
        log(
            f"backtest {s}: {rep['hours_scored']} h in {rep['seconds']} s, MASE served {ms['served']['mase']:.4f}"
        )
        fig.update(_coin_backtest_figures(s.removesuffix("USDT"), rep))
        log("figures " + json.dumps({k: fig[k] for k in fig if k not in before_keys}))
    fig.update(_mase_summary(fig))
    return fig


def _coin_backtest_figures(short: str, rep: dict) -> dict:
    """One coin's backtest report as flat figures (`short`: the coin without USDT)."""
    ms = rep["metrics"]
    fig: dict = {f"mase_{short}": round(ms["served"]["mase"], 4)}
    if "model_raw" in ms:
        fig[f"mase_raw_{short}"] = round(
            ms["model_raw"]["mase"] / ms["persistence_on_raw_hours"]["mase"], 4
        )
    fig[f"mase_drift_{short}"] = round(ms["drift"]["mase"], 4)
    fig[f"mase_ewma_{short}"] = round(ms["ewma"]["mase"], 4)
    fig[f"served_by_model_share_{short}"] = round(
        rep["served_by_model"] / max(rep["hours_predicted"], 1), 3
    )
    fig[f"backtest_hours_{short}"] = rep["hours_scored"]
    fig[f"trainings_{short}"] = len(rep["trainings"])
    fig[f"backtest_seconds_{short}"] = rep["seconds"]
    for name in ("served", "model_raw", "drift", "ewma"):
        m = ms.get(name) or {}
        if m.get("directional_accuracy") is not None:
            fig[f"direction_{name}_{short}"] = round(m["directional_accuracy"], 4)
        if m.get("coverage") is not None:
            fig[f"coverage_{name}_{short}"] = round(m["coverage"], 4)
    # The per-coin report of issue #17: significance against persistence (one-sided DM on absolute
    # errors: small p = reliably better), direction where a move was predicted, live retirements.
    for name in ("served", "model_raw"):
        m = ms.get(name) or {}
        if m.get("dm_p_value") is not None:
            fig[f"dm_p_{name}_{short}"] = round(m["dm_p_value"], 4)
        if m.get("direction_when_moved") is not None:
            fig[f"direction_when_moved_{name}_{short}"] = round(m["direction_when_moved"], 4)
    fig[f"retirements_{short}"] = len(rep.get("retirements", []))
    return fig


def _mase_summary(fig: dict) -> dict:
    """Median and max of the coins' served MASE, min and max of their served coverage."""
    served = [v for k, v in fig.items() if k.startswith("mase_") and k.count("_") == 1]
    covered = [v for k, v in fig.items() if k.startswith("coverage_served_")]
    out: dict = {}
    if served:
        out["mase_served_median"] = round(statistics.median(served), 4)
        out["mase_served_max"] = max(served)
    if covered:
        out["coverage_served_min"], out["coverage_served_max"] = min(covered), max(covered)
    return out


# name -> configuration changes from the default (LSTM 2x50 on log returns, configured lookback).
# "pooled" is filled in with the compared coins: one network fitted on all of them.
VARIANTS: dict[str, dict] = {
    "lstm": {},
    "gru": {"architecture": "gru"},
    "lstm_volume": {"features": ("log_return", "log_volume_change")},
    "lstm_lookback48": {"lookback": 48},
    "lstm_pooled": {"pool": "compared coins"},
    "lstm_btc": {
        "features": ("log_return", "btc_log_return")
    },  # BTC's last hours beside the coin's own
}


def bench_forecast_compare(log=_progress) -> dict:
    """Walk-forward MASE of each variant (VARIANTS) beside persistence/drift/EWMA on the same hours.

    Settings (bench section): CRYPTOFLOW_BENCH_COMPARE_SYMBOLS (default BTCUSDT,ETHUSDT,SOLUSDT), _DAYS (14), _VARIANTS
    (all), CRYPTOFLOW_BENCH_FORECAST_RETRAIN_HOURS (168). Figures per variant and coin: mase (served,
    promotion rule applied), mase_raw (latest trained model, promoted or not), direction (raw),
    served share; then each variant's mean over the coins.
    """
    app = settings.load()
    symbols = list(app.bench_compare_symbols)
    days = app.bench_compare_days
    retrain_hours = app.bench_forecast_retrain_hours
    names = list(app.bench_compare_variants or VARIANTS)
    frames = _frames(symbols)
    base = config.load()
    end = min(f.index[-1] for f in frames.values()) + HOUR  # the same hours for every coin
    start = (end - timedelta(days=days)).to_pydatetime()
    fig: dict = {
        "symbols": ",".join(frames),
        "days": days,
        "start": start.isoformat(),
        "retrain_every_hours": retrain_hours,
        "lookback_default": base.lookback,
    }
    for name in names:
        changes = dict(VARIANTS[name])
        if "pool" in changes:
            changes["pool"] = tuple(frames)
        cfg = base.with_(**changes)
        first = name == names[0]
        _compare_variant(
            fig, name, first, cfg, frames, start, end.to_pydatetime(), retrain_hours, log
        )
    return fig


def _compare_variant(
    fig: dict,
    name: str,
    first: bool,
    cfg,
    frames: dict,
    start: datetime,
    end: datetime,
    retrain_hours: int,
    log,
) -> None:
    """One variant's walk-forward backtest on every coin over [start, end): its figures per coin
    and its means (the baselines' figures too when it is the `first` variant)."""
    mase, raw = [], []
    for s, f in frames.items():
        rep = backtest.backtest(
            s,
            start,
            end,
            retrain_hours,
            cfg=cfg,
            frame=f,
            store=False,
            pool=frames if cfg.pool else None,
        )
        ms, short = rep["metrics"], s.removesuffix("USDT")
        fig[f"{name}_mase_{short}"] = round(ms["served"]["mase"], 4)
        mase.append(ms["served"]["mase"])
        if "model_raw" in ms:
            r = ms["model_raw"]["mase"] / ms["persistence_on_raw_hours"]["mase"]
            fig[f"{name}_mase_raw_{short}"] = round(r, 4)
            raw.append(r)
            if ms["model_raw"].get("directional_accuracy") is not None:
                fig[f"{name}_direction_raw_{short}"] = round(
                    ms["model_raw"]["directional_accuracy"], 4
                )
        fig[f"{name}_served_share_{short}"] = round(
            rep["served_by_model"] / max(rep["hours_predicted"], 1), 3
        )
        if first:
            fig[f"drift_mase_{short}"] = round(ms["drift"]["mase"], 4)
            fig[f"ewma_mase_{short}"] = round(ms["ewma"]["mase"], 4)
            fig[f"hours_{short}"] = rep["hours_scored"]
        log(
            f"{name} {s}: MASE served {ms['served']['mase']:.4f}, raw {fig.get(f'{name}_mase_raw_{short}')}, "
            f"{len(rep['trainings'])} trainings in {rep['seconds']} s"
        )
    fig[f"{name}_mase_mean"] = round(statistics.mean(mase), 4)
    if raw:
        fig[f"{name}_mase_raw_mean"] = round(statistics.mean(raw), 4)


if __name__ == "__main__":  # python -m cryptoflow_bench.forecast
    import json
    import sys

    run = bench_forecast_compare if sys.argv[1:] == ["compare"] else bench_forecast
    print(json.dumps(run(), indent=1))
