"""forecast_hourly: each coin's next-hour close from a model that must beat "next close = last close".

Runs hourly (at minute 5, leaving the ETL time to load the hour that just closed) and whenever
spark_etl updates the warehouse candles. Mapped over the configured symbols, per coin:

1. check_fresh: the latest complete 1h candle is the previous hour and the lookback hours are all
   there, else the coin is skipped with the reason (no prediction from stale or gappy data);
2. train_if_needed: retrain on the cadence or when the model is missing/stale; the new model is
   promoted only if at least as good as the current one and persistence on its validation window;
3. predict: the promoted model, or persistence labelled as such when no model earns its place;
4. write: one row in forecast.predictions with the persistence forecast beside it (emits PREDICTIONS).
score_earlier fills the actual close of earlier predictions whose hour has closed.

The logic lives in cryptoflow.forecast (hourly, registry, train); `cryptoflow backtest` replays it.
"""

from datetime import datetime, timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task, task_group
from airflow.sdk.exceptions import AirflowSkipException

from cryptoflow import settings
from cryptoflow.assets import PREDICTIONS, WAREHOUSE_CANDLES


def _now(context) -> datetime:
    # Asset-triggered runs have no logical date: they predict for the hour they run in.
    return context.get("logical_date") or context["dag_run"].run_after


@dag(
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("5 * * * *", timezone="UTC"),
                                 assets=WAREHOUSE_CANDLES),
    # Early enough for runs over imported history (backfills, dag.test on 2021 data); catchup stays off.
    start_date=datetime(2020, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2)},
    tags=["forecast"],
    doc_md=__doc__,
)
def forecast_hourly():
    @task
    def symbols() -> list[str]:
        return list(settings.load().symbols)

    @task
    def check_fresh(symbol: str, **context) -> dict:
        from cryptoflow.forecast import config, data, hourly
        from cryptoflow.warehouse import db

        cfg = config.load()
        now = _now(context)
        with db.connect() as conn:
            frame = data.load_hourly(conn, symbol, before=data.floor_hour(now), hours=cfg.lookback + 2 + cfg.freshness_tolerance_hours)
            ready = hourly.readiness(frame, now, cfg)
            db.record_check(conn, context["run_id"], hourly.PIPELINE, "forecast_input_ready", ready.ok,
                            observed=ready.reason, expected="previous hour complete, lookback hours present",
                            symbol=symbol)
            conn.commit()
        if not ready.ok:
            raise AirflowSkipException(f"{symbol}: {ready.reason}")
        return ready.as_dict()

    @task
    def train_if_needed(symbol: str, ready: dict) -> dict:
        from cryptoflow.forecast import config, data, hourly
        from cryptoflow.forecast.registry import ObjectRegistry
        from cryptoflow.warehouse import db

        cfg = config.load()
        target = datetime.fromisoformat(ready["target_time"])
        with db.connect() as conn:
            frame = data.load_hourly(conn, symbol, before=target, hours=cfg.train_hours + cfg.lookback + 2)
            return hourly.ensure_model(symbol, frame, target, ObjectRegistry.from_settings(conn), cfg,
                                       pool=hourly.load_pool(conn, target, cfg))

    @task
    def predict(symbol: str, ready: dict, model: dict) -> dict:
        from cryptoflow.forecast import config, data, hourly
        from cryptoflow.forecast.registry import ObjectRegistry
        from cryptoflow.warehouse import db

        cfg = config.load()
        target = datetime.fromisoformat(ready["target_time"])
        with db.connect() as conn:
            frame = data.load_hourly(conn, symbol, before=target, hours=cfg.lookback + 2)
        forecast, why = hourly.predict(symbol, frame, target, ObjectRegistry.from_settings(), cfg)
        return {**forecast.as_dict(), "served_because": why}

    @task(outlets=[PREDICTIONS])
    def write(forecast: dict, **context) -> int:
        from cryptoflow.forecast import hourly
        from cryptoflow.forecast.train import Forecast
        from cryptoflow.warehouse import db

        f = Forecast(**{k: v for k, v in forecast.items() if k != "served_because"})
        f.target_time = datetime.fromisoformat(forecast["target_time"])
        with db.connect() as conn, db.pipeline_run(conn, hourly.PIPELINE, context["run_id"], f"write:{f.symbol}") as stats:
            stats["rows_out"] = hourly.write_predictions(conn, [f], kind="live")
            stats["details"].update(forecast)
        context["outlet_events"][PREDICTIONS].extra = {"symbol": f.symbol, "target_open_time": forecast["target_time"],
                                                       "model_version": f.model_version}
        return stats["rows_out"]

    @task_group
    def per_symbol(symbol: str):
        ready = check_fresh(symbol)
        model = train_if_needed(symbol, ready)
        write(predict(symbol, ready, model))

    @task
    def score_earlier(symbol: str, **context) -> dict:
        from cryptoflow.forecast import hourly
        from cryptoflow.warehouse import db

        with db.connect() as conn, db.pipeline_run(conn, hourly.PIPELINE, context["run_id"], f"score:{symbol}") as stats:
            summary = hourly.score(conn, symbol)
            stats["rows_out"] = summary["newly_scored"]
            stats["details"].update(summary)
        return summary

    coins = symbols()
    per_symbol.expand(symbol=coins)
    score_earlier.expand(symbol=coins)


forecast_hourly()
