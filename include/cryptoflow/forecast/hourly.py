"""What `forecast_hourly` does for one coin at hour T, as plain functions the backtest replays.

The run at T predicts the close of the hour that opens at T (closing at T+1h), from complete
candles that opened before T only. Steps:

1. `readiness`: the latest complete candle must be the previous hour (tolerance configurable) and
   the lookback hours all present; otherwise no prediction (stale data must not pose as a forecast).
2. `retire_if_losing`: a served model whose live MASE over its latest scored hours exceeds 1 +
   margin is retired now, not at the next training (evidence.live_verdict).
3. `ensure_model`: retrain on the cadence, when the configuration changed, or when the served model
   is missing or stale; apply the promotion rule (registry.decide: beat persistence on evidence).
4. `predict`: the promoted model if it is fresh enough and out of probation (its out-of-sample
   hours since its cut, cfg.probation_hours of them at least, do not lose to persistence), else
   persistence, labelled "persistence"; either with its conformal interval (serving.py).
5. `write_predictions` and, later, `score` once the target hour has closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from cryptoflow.forecast import data, evidence, serving, train as train_mod
from cryptoflow.forecast.config import ForecastConfig
from cryptoflow.forecast.data import HOUR, floor_hour, to_utc
from cryptoflow.forecast.registry import BaseRegistry, Decision, ModelUnavailable, decide
from cryptoflow.forecast.serving import PERSISTENCE
from cryptoflow.forecast.train import Forecast, NotEnoughData, TrainedModel

PIPELINE = "forecast_hourly"
log = logging.getLogger(__name__)


@dataclass
class Readiness:
    ok: bool
    reason: str
    target_time: datetime | None
    latest: datetime | None

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "reason": self.reason,
            "target_time": None
            if self.target_time is None
            else to_utc(self.target_time).isoformat(),
            "latest": None if self.latest is None else to_utc(self.latest).isoformat(),
        }


def readiness(frame: pd.DataFrame, now: datetime, cfg: ForecastConfig) -> Readiness:
    """Is there fresh, complete data to predict from at `now`? `frame`: complete 1h candles."""
    expected = floor_hour(now) - HOUR  # the hour that closed last
    frame = data.before(frame, expected + HOUR)
    if frame.empty:
        return Readiness(False, "no complete 1h candles", None, None)
    latest = to_utc(frame.index[-1])
    lag = int((expected - latest) / HOUR)
    if lag > cfg.freshness_tolerance_hours:
        return Readiness(
            False,
            f"stale: latest complete hour {latest:%Y-%m-%d %H:%M}Z, expected "
            f"{expected:%Y-%m-%d %H:%M}Z ({lag} h behind, tolerance "
            f"{cfg.freshness_tolerance_hours} h)",
            None,
            latest,
        )
    target = latest + HOUR
    need = pd.date_range(target - HOUR * (cfg.lookback + 1), target - HOUR, freq="h", tz="UTC")
    missing = need.difference(frame.index)
    if len(missing):
        shown = ", ".join(f"{t:%m-%d %H}h" for t in missing[:5])
        return Readiness(
            False,
            f"incomplete: {len(missing)} of the {len(need)} hours before "
            f"{target:%Y-%m-%d %H:%M}Z missing or incomplete ({shown})",
            None,
            latest,
        )
    return Readiness(True, "fresh and complete", target, latest)


def check_inputs(conn, symbol: str, now: datetime, cfg: ForecastConfig) -> Readiness:
    """`readiness` on the warehouse's complete candles (the DAG's sensor and per-coin check)."""
    frame = data.load_hourly(
        conn, symbol, before=floor_hour(now), hours=cfg.lookback + 2 + cfg.freshness_tolerance_hours
    )
    return readiness(frame, now, cfg)


def training_reason(
    registry: BaseRegistry, symbol: str, target: datetime, cfg: ForecastConfig
) -> str | None:
    """Why a model must be trained before predicting `target`, or None. Time is data time (the cut)."""
    try:
        attempt = registry.last_attempt(symbol)
    except ModelUnavailable as exc:
        return f"training record unavailable ({exc})"  # retraining rewrites it
    if attempt is None:
        return "no model trained yet"
    # A live retirement counts like a rejection at the hour it happened (registry.retire).
    since_attempt = (
        to_utc(target)
        - max(
            to_utc(pd.Timestamp(attempt["cut"])),
            to_utc(pd.Timestamp(attempt.get("retired_at") or attempt["cut"])),
        )
    ) / HOUR
    if since_attempt >= cfg.retrain_every_hours:
        return (
            f"cadence: last training {since_attempt:.0f} h ago (every {cfg.retrain_every_hours} h)"
        )
    try:
        current = registry.current_pointer(symbol)
    except ModelUnavailable as exc:
        return f"promoted model unavailable ({exc})"
    if current is not None and (why := registry.unavailable(symbol, current["version"])):
        return f"promoted model unavailable ({why})"  # the fix is a new model, whatever the cadence
    wait = retry_wait_hours(attempt, cfg)
    if since_attempt < wait:
        return None  # a model was just attempted; don't retrain every hour after a rejection
    if current is None:
        return (
            f"no promoted model; last attempt {since_attempt:.0f} h ago was {attempt['status']}"
            f" (retry after {wait} h)"
        )
    if attempt.get("fingerprint") != cfg.model_fingerprint():
        return "configuration changed since the last training"
    if _age_hours(current, target) >= cfg.max_model_age_hours:
        return f"stale: promoted model is {_age_hours(current, target):.0f} h old"
    return None


def retry_wait_hours(attempt: dict, cfg: ForecastConfig) -> int:
    """Hours to wait after `attempt` before training again while no model is served.

    Doubles with each rejection in a row (retry_hours, 2x, 4x ... capped at the cadence): a model that
    keeps losing to persistence is retried soon once, then less and less often, instead of burning
    a training every retry_hours (a few new hours barely change a 90-day training window).
    """
    rejections = int(
        attempt.get("rejections_in_a_row", 1 if attempt.get("status") == "rejected" else 0)
    )
    return min(cfg.retry_hours * 2 ** max(rejections - 1, 0), cfg.retrain_every_hours)


def _age_hours(pointer: dict, target: datetime) -> float:
    return (to_utc(target) - to_utc(pd.Timestamp(pointer["cut"]))) / HOUR


def exchange_tick(market, symbol: str) -> float | None:
    """The coin's price grid as its exchange serves it (`market`: a sources.CandleHistory, e.g.
    Binance's PRICE_FILTER tickSize), or None: training then infers the grid from the closes."""
    try:
        tick = market.tick_sizes([symbol]).get(symbol)
    except Exception as exc:  # the grid only refines the served close: an unreachable exchangeInfo
        log.warning(
            "%s: no tickSize from the exchange (%s); the grid is inferred from the closes",
            symbol,
            exc,
        )
        return None  # must not cost the hour its forecast
    return float(tick) if tick else None


def load_pool(conn, target: datetime, cfg: ForecastConfig) -> dict[str, pd.DataFrame]:
    """Candles of the coins of cfg.pool before `target` (one model across coins); {} without a pool."""
    return {
        s: data.load_with_references(
            conn, s, before=target, hours=cfg.train_hours + cfg.lookback + 2
        )
        for s in cfg.pool
    }


def ensure_model(
    symbol: str,
    frame: pd.DataFrame,
    target: datetime,
    registry: BaseRegistry,
    cfg: ForecastConfig,
    version: str | None = None,
    force: bool = False,
    pool: dict[str, pd.DataFrame] | Callable[[], dict[str, pd.DataFrame]] | None = None,
    tick: float | Callable[[], float | None] | None = None,
) -> dict:
    """Train if needed (or `force`) and apply the promotion rule. Returns what happened (for logs and XCom).

    `pool`: the other coins' candles when cfg.pool asks for one model across coins (see load_pool).
    `tick`: the exchange's price grid for the coin, None to infer it (see train.train).
    Either may be a callable returning it, called only when a model is trained: the DAG reads
    the pool's candles and asks the exchange only then, not every hour for every coin."""
    reason = "requested" if force else training_reason(registry, symbol, target, cfg)
    current = _readable_pointer(registry, symbol)
    out = {
        "symbol": symbol,
        "trained": False,
        "reason": reason or "model up to date",
        "current_version": current and current["version"],
    }
    if reason is None:
        return out
    history = data.before(frame, target)
    if callable(tick):
        tick = tick()
    if callable(pool):
        pool = pool()
    out["exchange_tick"] = tick
    try:
        new = train_mod.train(symbol, history, target, cfg, version=version, pool=pool, tick=tick)
    except NotEnoughData as exc:
        out["reason"] = f"{reason}; not trained: {exc}"
        return out
    current_model = _rival(registry, symbol, current, target, cfg)
    decision = decide(new, current_model, history, cfg)
    registry.record(new, decision)
    out.update(_trained_outcome(new, decision, registry.current_pointer(symbol)))
    return out


def _readable_pointer(registry: BaseRegistry, symbol: str) -> dict | None:
    """The promoted model's pointer; a damaged one serves nothing: dropped, the new model decides."""
    try:
        return registry.current_pointer(symbol)
    except ModelUnavailable as exc:
        registry.clear_current(symbol, f"unavailable: {exc}")
        return None


def _rival(
    registry: BaseRegistry, symbol: str, current: dict | None, target: datetime, cfg: ForecastConfig
) -> TrainedModel | None:
    """The promoted model a new one must beat, or None. A stale or unreadable one is retired."""
    if current and _age_hours(current, target) >= cfg.max_model_age_hours:
        # A stale model is not served any more, so it must not block a fresh one that beats
        # persistence: it is retired, and the new model faces persistence alone.
        registry.clear_current(
            symbol, f"stale: {_age_hours(current, target):.0f} h old at the next training"
        )
    elif current:
        try:
            return registry.load(symbol, current["version"])
        except ModelUnavailable as exc:
            # can't be compared, so it can't stay: retired with the reason
            registry.clear_current(symbol, f"unavailable: {exc}")
    return None


def _trained_outcome(new: TrainedModel, decision: Decision, now_current: dict | None) -> dict:
    """ensure_model's record of a training: the new model, the decision, what now serves."""
    return {
        "trained": True,
        "version": new.version,
        "decision": decision.action,
        "decision_reason": decision.reason,
        "comparison": decision.comparison,
        "current_version": now_current and now_current["version"],
        "metrics": new.metadata["metrics"],
        "baseline_metrics": new.metadata["baseline_metrics"],
        "train_seconds": new.metadata["train_seconds"],
        "epochs_run": new.metadata["epochs_run"],
    }


def served_model(
    registry: BaseRegistry,
    symbol: str,
    target: datetime,
    cfg: ForecastConfig,
    record: Callable | None = None,
):
    """(model or None, why): a promoted model younger than max_model_age_hours, and out of probation
    (cfg.probation_hours, evidence.probation_verdict), else None.

    `record(model)`: its (predicted, persistence, actual) closes on the scored hours since its cut
    before `target` (since_cut_record); without it there is no probation."""
    try:
        ptr = registry.current_pointer(symbol)
    except ModelUnavailable as exc:
        return None, f"promoted model unavailable: {exc}"
    if ptr is None:
        try:
            attempt = registry.last_attempt(symbol)
        except ModelUnavailable:
            attempt = None
        if attempt and (last := attempt.get("retired_reason") or attempt.get("reason")):
            return None, f"no promoted model (last: {attempt['version']} {last})"
        return None, "no promoted model"
    age = _age_hours(ptr, target)
    if age >= cfg.max_model_age_hours:
        return None, f"promoted model {ptr['version']} is stale ({age:.0f} h old)"
    try:
        model = registry.load(symbol, ptr["version"])
    except ModelUnavailable as exc:
        return None, f"promoted model unavailable: {exc}"
    if cfg.probation_hours and record is not None:
        held = evidence.probation_verdict(
            *record(model),
            hours=cfg.probation_hours,
            window=cfg.retire_window_hours,
            margin=cfg.probation_margin,
        )
        if held:
            return None, f"promoted model {ptr['version']} {held}"
    return model, f"promoted model {ptr['version']}"


def since_cut_record(
    model: TrainedModel,
    frame: pd.DataFrame,
    target: datetime,
    cfg: ForecastConfig,
    served: pd.DataFrame | None = None,
):
    """(predicted, persistence, actual) closes of `model` on its scored hours since its cut and before
    `target` (the latest max(retire_window_hours, probation_hours) of them), oldest first, from
    `frame`'s candles (the model is fixed, so these are the closes it served or would have served).
    `served`: serving.model_served rows already computed over those hours (the backtest's), instead
    of a model call."""
    target = pd.Timestamp(to_utc(target))
    since = max(
        pd.Timestamp(model.metadata["data_window"]["cut"]),
        target - HOUR * max(cfg.retire_window_hours, cfg.probation_hours),
    )
    if served is None:
        served = serving.model_served(model, frame, since, target - HOUR)
    rows = served.loc[(served.index >= since) & (served.index < target)]
    actual = frame["close"].reindex(rows.index)
    known = actual.notna().to_numpy()
    return (
        rows["predicted_close"].to_numpy()[known],
        rows["last_close"].to_numpy()[known],
        actual.to_numpy()[known],
    )


def predict(
    symbol: str, frame: pd.DataFrame, target: datetime, registry: BaseRegistry, cfg: ForecastConfig
) -> tuple[Forecast, str]:
    """The served forecast for `target` from rows before it; persistence (labelled) when no model serves.

    `frame` should reach serving.history_hours(cfg) back, or the interval has fewer errors to
    calibrate on (none below cfg.interval_min_scores)."""
    history = data.before(frame, target)
    model, why = served_model(
        registry, symbol, target, cfg, record=lambda m: since_cut_record(m, history, target, cfg)
    )
    f = serving.forecasts(symbol, history, [(target, model and model.version, why)], registry, cfg)[
        0
    ]
    return f, (why if f.model_version != PERSISTENCE else f.served_reason or why)


def live_record(conn, symbol: str, version: str, before: datetime, hours: int):
    """(predicted, persistence, actual) closes of `version`'s latest scored live hours before `before`,
    oldest first: the evidence live retirement judges on. Joined with the candles directly, so an hour
    whose score_earlier has not run yet counts as soon as its candle is complete."""
    rows = conn.execute(
        "SELECT p.predicted_close::float8, p.persistence_close::float8, c.close::float8"
        " FROM forecast.predictions p JOIN market.candles c ON c.symbol = p.symbol AND c.interval = p.interval"
        " AND c.open_time = p.target_open_time AND c.is_complete"
        " WHERE p.symbol = %s AND p.interval = '1h' AND p.kind = 'live' AND p.model_version = %s"
        " AND p.target_open_time < %s ORDER BY p.target_open_time DESC LIMIT %s",
        (symbol, version, to_utc(before), hours),
    ).fetchall()
    conn.commit()
    rows.reverse()
    return tuple(np.array([r[i] for r in rows], dtype="float64") for i in range(3))


def retire_if_losing(
    registry: BaseRegistry, symbol: str, target: datetime, cfg: ForecastConfig, scored
) -> str | None:
    """Retire the served model now if it loses live (evidence.live_verdict); returns why, or None.

    `scored(version)`: that version's (predicted, persistence, actual) closes on its latest scored
    hours before `target`, oldest first (live_record in the DAG, the replayed hours in the backtest).
    """
    try:
        ptr = registry.current_pointer(symbol)
    except ModelUnavailable:
        return None  # ensure_model drops a damaged pointer
    if ptr is None:
        return None
    retire, why = evidence.live_verdict(*scored(ptr["version"]), **evidence.retirement_rule(cfg))
    if not retire:
        return None
    registry.retire(symbol, f"retired live: {why}", target)
    return why


def write_predictions(
    conn, forecasts: list[Forecast], kind: str = "live", actuals: dict | None = None
) -> int:
    """Upsert predictions (one row per symbol, hour, kind, model version); commit."""
    rows = []
    for f in forecasts:
        actual = None if actuals is None else actuals.get(pd.Timestamp(f.target_time))
        rows.append(
            (
                f.symbol,
                to_utc(f.target_time),
                kind,
                f.model_version,
                f.predicted_close,
                f.lower_close,
                f.upper_close,
                f.last_close,
                actual,
                None if actual is None else datetime.now(timezone.utc),
                f.served_reason,
            )
        )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO forecast.predictions (symbol, interval, target_open_time, kind, model_version, predicted_close,"
            " lower_close, upper_close, persistence_close, actual_close, scored_at, served_reason)"
            " VALUES (%s, '1h', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (symbol, interval, target_open_time, kind, model_version) DO UPDATE SET"
            " predicted_close = EXCLUDED.predicted_close, lower_close = EXCLUDED.lower_close,"
            " upper_close = EXCLUDED.upper_close, persistence_close = EXCLUDED.persistence_close,"
            " served_reason = EXCLUDED.served_reason,"
            " created_at = now(), actual_close = EXCLUDED.actual_close, scored_at = EXCLUDED.scored_at",
            rows,
        )
    conn.commit()
    return len(rows)


def score(conn, symbol: str, window_hours: int = 168) -> dict:
    """Fill actual_close of predictions whose hour has closed; summarise recent live accuracy.

    The summary always puts the model's MAE beside persistence's on the same hours (MASE).
    """
    n = conn.execute(
        "UPDATE forecast.predictions p SET actual_close = c.close, scored_at = now()"
        " FROM market.candles c WHERE p.symbol = %s AND p.actual_close IS NULL AND c.symbol = p.symbol"
        " AND c.interval = p.interval AND c.open_time = p.target_open_time AND c.is_complete",
        (symbol,),
    ).rowcount
    rows = conn.execute(
        "SELECT predicted_close::float8, persistence_close::float8, actual_close::float8,"
        " lower_close::float8, upper_close::float8, model_version FROM forecast.predictions"
        " WHERE symbol = %s AND kind = 'live' AND actual_close IS NOT NULL"
        " AND target_open_time >= (SELECT max(target_open_time) FROM forecast.predictions"
        "   WHERE symbol = %s AND kind = 'live' AND actual_close IS NOT NULL) - make_interval(hours => %s)",
        (symbol, symbol, window_hours),
    ).fetchall()
    conn.commit()
    out = {"symbol": symbol, "newly_scored": n, "window_hours": window_hours, "n": len(rows)}
    if rows:
        from cryptoflow.forecast import metrics

        pred, last, actual, lo, hi, versions = (np.array(c, dtype=object) for c in zip(*rows))
        pred, last, actual = (a.astype("float64") for a in (pred, last, actual))
        has_iv = np.array([x is not None for x in lo]) & np.array([x is not None for x in hi])
        out["served"] = metrics.evaluate(actual, pred, last)
        out["persistence"] = metrics.evaluate(actual, last, last)
        out["share_served_by_persistence"] = float(np.mean(versions == PERSISTENCE))
        if has_iv.any():
            out["coverage"] = float(
                np.mean(
                    (actual[has_iv] >= lo[has_iv].astype(float))
                    & (actual[has_iv] <= hi[has_iv].astype(float))
                )
            )
    return out


def hours(start: datetime, end: datetime):
    """Hour starts in [start, end)."""
    t = floor_hour(start)
    if t < to_utc(start):
        t += timedelta(hours=1)
    end = to_utc(end)
    while t < end:
        yield t
        t += timedelta(hours=1)
