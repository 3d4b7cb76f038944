"""forecast_hourly: each coin's next-hour close from a model that must beat "next close = last close".

One run per hour H (the data interval [H-1h, H)), predicting the close of the hour that opens at H:

    wait_for_candles ─► per coin (mapped): check_fresh ─► train_if_needed ─► predict ─► write
                     └► per coin (mapped): score_earlier

1. wait_for_candles: waits (rescheduling, no worker held) until every coin's hour H-1 is complete
   in the warehouse, which spark_etl loads a minute or two after H; after `wait_minutes` it
   goes on with the coins that are ready, so one late coin never holds back the others;
2. check_fresh: the latest complete 1h candle is H-1 and the lookback hours are all there; a coin
   that is not ready fails red with the reason (no prediction from stale or gappy data, and never
   a green run that forecast nothing);
3. train_if_needed: first retire the served model if it loses to persistence live (MASE over its
   latest scored hours above 1 + margin); retrain on the cadence or when the model is missing or
   stale; the new model is promoted only if it beats persistence beyond chance on its validation
   window (Diebold-Mariano) and is at least as good as the current one;
4. predict: the promoted model, or persistence labelled as such when no model earns its place,
   with a conformal 90 % interval from the served forecast's recent errors;
5. write: one row in forecast.predictions with the persistence forecast beside it (emits PREDICTIONS).
score_earlier fills the actual close of earlier predictions whose hour has closed.

Backfills (`cryptoflow airflow backfill create --dag-id forecast_hourly ...`) replay past hours.
The logic lives in cryptoflow.forecast (hourly, registry, train); `cryptoflow backtest` replays it.
"""

from datetime import datetime, timedelta, timezone

from airflow.sdk import Param, PokeReturnValue, dag, task, task_group
from airflow.timetables.interval import CronDataIntervalTimetable

from cryptoflow import settings
from cryptoflow.airflow import forecast_tasks
from cryptoflow.assets import PREDICTIONS

# How long the sensor waits for every coin before going on with those that are ready.
WAIT_FOR_CANDLES_MINUTES = 45


def _target(data_interval_end) -> datetime:
    """The hour this run predicts: the one opening at the end of its data interval."""
    return data_interval_end


@dag(
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    # Early enough for runs over imported history (backfills, dag.test on 2021 data); catchup stays off.
    start_date=datetime(2020, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2)},
    params={
        "wait_minutes": Param(
            WAIT_FOR_CANDLES_MINUTES,
            type="number",
            minimum=0,
            description="how long to wait for every coin's hour before going on without the late ones",
        )
    },
    tags=["forecast"],
    doc_md=__doc__,
)
def forecast_hourly():
    @task
    def symbols() -> list[str]:
        return list(settings.load().symbols)

    @task.sensor(poke_interval=30, timeout=2 * 3600, mode="reschedule")
    def wait_for_candles(data_interval_end=None, params=None) -> PokeReturnValue:
        """Every coin's previous hour complete, or the wait is over: go on with the coins that are ready.

        The wait counts from the hour's end or from when this run began waiting, whichever is later:
        a stack back from downtime runs its latest hour at once, and that hour's candles arrive
        with the healing a few minutes later.
        """
        from airflow.sdk import get_current_context

        context = get_current_context()
        now = datetime.now(timezone.utc)
        began = context["ti"].get_first_reschedule_date(context) or now
        waiting, over = forecast_tasks.coins_waited_for(
            _target(data_interval_end), began, float(params["wait_minutes"]), now
        )
        return PokeReturnValue(is_done=not waiting or over, xcom_value=waiting)

    @task
    def check_fresh(symbol: str, **context) -> dict:
        return forecast_tasks.check_fresh(
            symbol, _target(context["data_interval_end"]), context["run_id"]
        )

    @task
    def train_if_needed(symbol: str, ready: dict) -> dict:
        return forecast_tasks.train_if_needed(symbol, ready)

    @task
    def predict(symbol: str, ready: dict, model: dict) -> dict:
        return forecast_tasks.predict(symbol, ready)

    @task(outlets=[PREDICTIONS])
    def write(forecast: dict, **context) -> int:
        rows, extra = forecast_tasks.write(forecast, context["run_id"])
        context["outlet_events"][PREDICTIONS].extra = extra
        return rows

    @task_group
    def per_symbol(symbol: str):
        ready = check_fresh(symbol)
        model = train_if_needed(symbol, ready)
        write(predict(symbol, ready, model))

    @task
    def score_earlier(symbol: str, **context) -> dict:
        return forecast_tasks.score_earlier(symbol, context["run_id"])

    coins = symbols()
    waited = wait_for_candles()
    waited >> per_symbol.expand(symbol=coins)
    waited >> score_earlier.expand(symbol=coins)


forecast_hourly()
