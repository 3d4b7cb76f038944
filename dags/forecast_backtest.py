"""forecast_backtest: the walk-forward backtest of [start, end) as a DAG run, one mapped task per coin.

    wait_for_history ─► backtest (mapped over the coins) ─► forecast.predictions (kind = 'backtest')

For every hour of the range, the very functions of forecast_hourly decide from the candles before
that hour (readiness, training on the cadence, the promotion rule, which model serves); then the
served forecasts are stored labelled 'backtest' with persistence beside them and scored at once.
The demo triggers it on the last hours of its seeded history, so the Forecasts dashboard has
scored forecasts from its first minutes, not after a day of live hours. A rerun replaces its range.
"""

import logging
from datetime import datetime, timedelta, timezone

from airflow.sdk import Param, PokeReturnValue, dag, task

from cryptoflow import settings
from cryptoflow.airflow.hooks import WarehouseHook

log = logging.getLogger(__name__)


def _range(params) -> tuple[datetime, datetime]:
    from cryptoflow.times import parse_utc_ms

    start, end = parse_utc_ms(params.get("start")), parse_utc_ms(params.get("end"))
    if start is None or end is None or end <= start:
        raise ValueError(
            f"params start and end (ISO times, start < end) are required, got {params}"
        )
    return (
        datetime.fromtimestamp(start / 1000, timezone.utc),
        datetime.fromtimestamp(end / 1000, timezone.utc),
    )


@dag(
    schedule=None,
    start_date=datetime(2020, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    params={
        "start": Param(
            None, type=["null", "string"], description="first hour to backtest (ISO, UTC)"
        ),
        "end": Param(
            None, type=["null", "string"], description="end of the range (ISO, UTC), exclusive"
        ),
    },
    tags=["forecast", "backtest"],
    doc_md=__doc__,
)
def forecast_backtest():
    @task.sensor(poke_interval=30, timeout=3 * 3600, mode="reschedule")
    def wait_for_history(params=None) -> PokeReturnValue:
        """Every coin's complete candles reach the range's last hour (a seed may still be loading)."""
        from cryptoflow.forecast import data

        _, end = _range(params)
        with WarehouseHook().connect() as conn:
            latest = {s: data.latest_complete_hour(conn, s) for s in settings.load().symbols}
        behind = {s: t for s, t in latest.items() if t is None or t < end - timedelta(hours=1)}
        for s, t in behind.items():
            log.info("%s: latest complete hour %s, waiting for %s", s, t, end - timedelta(hours=1))
        return PokeReturnValue(is_done=not behind, xcom_value=sorted(latest))

    # One coin at a time: each trains LSTMs, and the platform keeps running beside it on 2 cores.
    @task(max_active_tis_per_dag=1)
    def backtest(symbol: str, params=None) -> dict:
        from cryptoflow.forecast import commands

        start, end = _range(params)
        report = commands.backtest([symbol], start, end)[0]
        m = report.get("metrics") or {}
        return {
            "symbol": symbol,
            "hours_scored": report["hours_scored"],
            "served_by_model": report["served_by_model"],
            "mase_served": (m.get("served") or {}).get("mase"),
            "skipped_hours": report.get("skipped_hours"),
        }

    backtest.expand(symbol=wait_for_history())


forecast_backtest()
