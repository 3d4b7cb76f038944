"""Walk-forward backtest: the one-hour-ahead forecasts the hourly DAG would have made, hour by hour.

For every hour T in [start, end): the history is cut to candles opened before T (the DAG at T can't
see more), then the very functions of the DAG run (hourly.readiness, ensure_model with the same
retrain cadence and promotion rule on an in-memory registry, predict). Skipped hours are counted
with their reasons. Predictions are stored with kind='backtest' (a rerun replaces the range) and
scored at once, since the actual closes are known.

The report gives RMSE, MAE, MAPE, MASE vs persistence, directional accuracy and interval coverage
for the served forecasts beside persistence, drift and EWMA on the same hours, plus "model_raw":
the latest trained model's forecasts whether or not it was promoted, so the LSTM's own skill is
visible even where the promotion rule fell back to persistence.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime

import numpy as np
import pandas as pd

from cryptoflow.forecast import (
    baselines,
    config as config_mod,
    data,
    evidence,
    hourly,
    metrics,
    serving,
)
from cryptoflow.forecast.config import ForecastConfig
from cryptoflow.forecast.data import HOUR, to_utc
from cryptoflow.forecast.registry import MemoryRegistry
from cryptoflow.forecast.train import Forecast, TrainedModel
from cryptoflow.forecast.windows import Samples, feature_frame, input_windows

log = logging.getLogger(__name__)


def backtest(
    symbol: str,
    start: datetime,
    end: datetime,
    retrain_every_hours: int | None = None,
    *,
    cfg: ForecastConfig | None = None,
    conn=None,
    frame: pd.DataFrame | None = None,
    store: bool = True,
    pool: dict[str, pd.DataFrame] | None = None,
) -> dict:
    """Replay [start, end) for one symbol; `frame` (all candles) or `conn` (read from the warehouse).

    Two passes, so the model calls are batched without changing what is served:
    1. hour by hour, the DAG's decisions: readiness, ensure_model (training and promotion, which are
       what costs), and which model serves (hourly.served_model) -- all from data before the hour;
    2. per model, one predict call over all the hours it served (a served model is fixed between
       trainings), from windows prepared once (windows.input_windows: the very windows the DAG
       builds at each hour). tests/unit/forecast/test_hourly.py checks both passes against
       hourly.predict called hour by hour.
    """
    cfg = cfg or config_mod.load()
    if retrain_every_hours:
        cfg = cfg.with_(retrain_every_hours=retrain_every_hours)
    start, end = to_utc(start), to_utc(end)
    t0 = time.perf_counter()
    if frame is None:
        frame = data.load_with_references(
            conn, symbol, start=start - HOUR * (cfg.train_hours + cfg.lookback + 2), before=end
        )
    if pool is None and cfg.pool and conn is not None:
        pool = {
            s: data.load_with_references(
                conn, s, start=start - HOUR * (cfg.train_hours + cfg.lookback + 2), before=end
            )
            for s in cfg.pool
        }
    served, raw, skipped, trainings = replay(symbol, frame, start, end, cfg, pool)
    actuals = frame["close"]
    report = _report(symbol, start, end, cfg, served, raw, actuals, frame)
    report.update(
        {
            "skipped_hours": dict(skipped),
            "trainings": [t for t in trainings if "retired" not in t],
            "retirements": [t for t in trainings if "retired" in t],
            "seconds": round(time.perf_counter() - t0, 1),
        }
    )
    if store and conn is not None:
        conn.execute(
            "DELETE FROM forecast.predictions WHERE symbol = %s AND kind = 'backtest'"
            " AND target_open_time >= %s AND target_open_time < %s",
            (symbol, start, end),
        )
        report["stored"] = hourly.write_predictions(
            conn, served, kind="backtest", actuals={k: v for k, v in actuals.items()}
        )
    return report


def replay(
    symbol: str,
    frame: pd.DataFrame,
    start: datetime,
    end: datetime,
    cfg: ForecastConfig,
    pool: dict[str, pd.DataFrame] | None = None,
):
    """(served forecasts, latest-trained-model forecasts, skipped hours by reason, trainings and
    live retirements) for the hours in [start, end), as the hourly DAG would have made them."""
    registry = MemoryRegistry()
    live = _LiveRecord(symbol, frame, end, registry, cfg)
    served_plan, raw_plan, skipped, trainings = _plan(
        symbol, frame, start, end, cfg, pool, registry, live
    )
    served = serving.forecasts(
        symbol, frame, served_plan, registry, cfg, served_by_version=live.served_closes
    )
    raw = _raw_forecasts(
        symbol, raw_plan, registry, input_windows(frame, cfg.features, cfg.lookback)
    )
    return served, raw, skipped, trainings


class _LiveRecord:
    """What live retirement and probation read of each served model at the replayed hour: its
    served closes on every hour, computed once per model (one call, reused by serving.forecasts),
    and the hours it served."""

    current: pd.Timestamp  # the hour being replayed, set by _plan before any read

    def __init__(
        self,
        symbol: str,
        frame: pd.DataFrame,
        end: datetime,
        registry: MemoryRegistry,
        cfg: ForecastConfig,
    ):
        self.symbol, self.frame, self.end = symbol, frame, end
        self.registry, self.cfg = registry, cfg
        self.closes = frame["close"]
        self.served_closes: dict[str, pd.DataFrame] = {}
        self.served_hours: dict[str, list[pd.Timestamp]] = {}

    def _compute(self, model: TrainedModel) -> None:
        self.served_closes[model.version] = serving.model_served(
            model, self.frame, serving.calibration_start(model), self.end
        )

    def scored(self, version: str):
        """The version's (predicted, persistence, actual) closes on its latest served hours."""
        if version not in self.served_closes:
            self._compute(self.registry.load(self.symbol, version))
        known = [
            t
            for t in self.served_hours.get(version, ())
            if t < self.current and t in self.closes.index
        ]
        known = known[-self.cfg.retire_window_hours :]
        rows = self.served_closes[version].reindex(known)
        return (
            rows["predicted_close"].to_numpy(),
            rows["last_close"].to_numpy(),
            self.closes.reindex(known).to_numpy(),
        )

    def since_cut(self, model: TrainedModel):
        """hourly.since_cut_record from the model's served closes computed once."""
        if model.version not in self.served_closes:
            self._compute(model)
        return hourly.since_cut_record(
            model, self.frame, self.current, self.cfg, served=self.served_closes[model.version]
        )


def _plan(
    symbol: str,
    frame: pd.DataFrame,
    start: datetime,
    end: datetime,
    cfg: ForecastConfig,
    pool: dict[str, pd.DataFrame] | None,
    registry: MemoryRegistry,
    live: _LiveRecord,
):
    """The first pass, hour by hour: the DAG's decisions from data before the hour. (served plan
    of (hour, model version or None, why), raw plan of (hour, latest trained version), skipped
    hours by reason, trainings and live retirements.)"""
    skipped: Counter[str] = Counter()
    trainings: list[dict] = []
    served_plan: list[tuple[pd.Timestamp, str | None, str]] = []
    raw_plan: list[tuple[pd.Timestamp, str]] = []
    for target in hourly.hours(start, end):
        current = live.current = pd.Timestamp(target)
        history = data.before(frame, target)  # the DAG running at `target` sees nothing later
        ready = hourly.readiness(history, target, cfg)
        if not ready.ok or ready.target_time != target:
            skipped[ready.reason.split(":")[0]] += 1
            continue
        trainings += _retire_and_train(symbol, history, target, registry, cfg, live.scored, pool)
        model, why = hourly.served_model(registry, symbol, target, cfg, record=live.since_cut)
        served_plan.append((current, model and model.version, why))
        if model is not None:
            live.served_hours.setdefault(model.version, []).append(current)
        attempt = registry.last_attempt(symbol)
        if attempt is not None:
            raw_plan.append((current, attempt["version"]))
    return served_plan, raw_plan, skipped, trainings


def _retire_and_train(
    symbol: str,
    history: pd.DataFrame,
    target,
    registry: MemoryRegistry,
    cfg: ForecastConfig,
    scored,
    pool: dict[str, pd.DataFrame] | None,
) -> list[dict]:
    """The hourly DAG's model steps at `target`: retire a losing model, train when due; their records."""
    records: list[dict] = []
    retired = hourly.retire_if_losing(registry, symbol, target, cfg, scored)
    if retired:
        records.append({"retired": f"{target:%Y-%m-%d %H}h", "why": retired})
        log.info("%s %sh retired: %s", symbol, f"{target:%Y-%m-%d %H}", retired)
    # Backtest versions are named by cut so a report can be tied to its models.
    outcome = hourly.ensure_model(
        symbol,
        history,
        target,
        registry,
        cfg,
        version=f"bt-{symbol}-{cfg.architecture}-{target:%Y%m%dT%H}Z",
        pool=pool,
    )
    if outcome["trained"]:
        records.append(
            {k: outcome[k] for k in ("version", "decision", "decision_reason", "train_seconds")}
        )
        log.info(
            "%s %sh trained %s: %s (%s)",
            symbol,
            f"{target:%Y-%m-%d %H}",
            outcome["version"],
            outcome["decision"],
            outcome["decision_reason"],
        )
    return records


def _raw_forecasts(symbol, plan, registry, windows: Samples) -> list[Forecast]:
    """The raw output (no shrinkage, validation-quantile interval) of the latest trained model at each
    hour of `plan`, one model call per version; hours whose window is incomplete are left out."""
    pos = {t: i for i, t in enumerate(windows.target_time)}
    by_version: dict[str, list[pd.Timestamp]] = {}
    for t, version in plan:
        if t in pos:
            by_version.setdefault(version, []).append(t)
    out: list[Forecast] = []
    for version, ts in by_version.items():
        rows = [pos[t] for t in ts]
        out += registry.load(symbol, version).forecast_windows(
            windows.X[rows], windows.last_close[rows], windows.target_time[rows]
        )
    return sorted(out, key=lambda f: f.target_time)


def _report(symbol, start, end, cfg, served, raw, actuals: pd.Series, frame) -> dict:
    scored = [f for f in served if pd.Timestamp(f.target_time) in actuals.index]
    out = {
        "symbol": symbol,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "hours_predicted": len(served),
        "hours_scored": len(scored),
        "served_by_model": sum(f.model_version != hourly.PERSISTENCE for f in served),
        "retrain_every_hours": cfg.retrain_every_hours,
        "architecture": cfg.architecture,
    }
    if not scored:
        out["metrics"] = {}
        return out
    idx = pd.DatetimeIndex([f.target_time for f in scored])
    actual = actuals.reindex(idx).to_numpy()
    last = np.array([f.last_close for f in scored])
    pred = np.array([f.predicted_close for f in scored])
    lo = [f.lower_close for f in scored]
    hi = [f.upper_close for f in scored]
    feats = feature_frame(frame, cfg.features)
    base = baselines.predicted_closes(
        last, baselines.predicted_returns(feats["log_return"], idx, cfg.drift_hours, cfg.ewma_span)
    )
    results = metrics.compare(actual, last, pred, base, lo, hi)
    results = {"served": results.pop("model"), **results}
    # Is the served forecast's difference from persistence more than chance? (one-sided DM, as promotion)
    dm = evidence.diebold_mariano(np.abs(pred - actual), np.abs(last - actual))
    results["served"].update(dm_statistic=dm["statistic"], dm_p_value=dm["p_value"])
    raw_scored = [f for f in raw if pd.Timestamp(f.target_time) in actuals.index]
    if raw_scored:
        ridx = pd.DatetimeIndex([f.target_time for f in raw_scored])
        ractual = actuals.reindex(ridx).to_numpy()
        rpred, rlast = (
            np.array([f.predicted_close for f in raw_scored]),
            np.array([f.last_close for f in raw_scored]),
        )
        results["model_raw"] = metrics.evaluate(
            ractual,
            rpred,
            rlast,
            [f.lower_close for f in raw_scored],
            [f.upper_close for f in raw_scored],
        )
        dm = evidence.diebold_mariano(np.abs(rpred - ractual), np.abs(rlast - ractual))
        results["model_raw"].update(dm_statistic=dm["statistic"], dm_p_value=dm["p_value"])
        # persistence on the raw model's own hours (may differ from the served hours at the start)
        results["persistence_on_raw_hours"] = metrics.evaluate(
            actuals.reindex(ridx).to_numpy(),
            [f.last_close for f in raw_scored],
            [f.last_close for f in raw_scored],
        )
    out["metrics"] = results
    return out


def format_report(report: dict) -> str:
    head = (
        f"walk-forward backtest {report['symbol']} {report['start']} .. {report['end']}: "
        f"{report['hours_predicted']} hours predicted ({report['served_by_model']} by a promoted model, "
        f"the rest by persistence), retrain every {report['retrain_every_hours']} h, "
        f"skipped {report.get('skipped_hours') or 'none'}"
    )
    return metrics.format_table(report.get("metrics") or {}, head)
