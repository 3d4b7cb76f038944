"""binance_ingest: every 10 minutes, seal the collector's messages of the interval into one landing snapshot.

    wait_for_collector ─► seal_snapshot ─► verify_snapshot ──(Asset: landing_snapshots)──► spark_etl

Closed candles missing from the stream are fetched from Binance REST and recorded as healed
(ops.healed_gaps); so are closed candles missing from the warehouse before the window (the demo's
seed edge, a laptop asleep, the stack down for hours): the platform heals itself within one run
of coming back. What REST lacks too is kept as a hole with its reason (ops.explained_gaps).
Invalid messages go to ops.quarantine with their reason. The sensor waits for the window's
closing messages and a live collector (its heartbeat); a window sealed late is sealed from REST. `airflow backfill
create --dag-id binance_ingest --from-date ... --to-date ...` builds the same snapshots for past
windows from REST alone, idempotently (a window's snapshot is replaced, never duplicated).
With CRYPTOFLOW_SOURCE=files (cryptoflow.sources) there is no stream and no network: every window,
backfilled or not, is sealed from the candle files.
"""

from datetime import datetime, timedelta, timezone

from airflow.sdk import Metadata, dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from cryptoflow.airflow import ingest_tasks
from cryptoflow.assets import LANDING_SNAPSHOTS


@dag(
    # A data-interval timetable: each run covers the 10 minutes that just ended.
    schedule=CronDataIntervalTimetable("*/10 * * * *", timezone="UTC"),
    # Early enough for `airflow backfill create` over any Binance history (catchup stays off).
    start_date=datetime(2017, 7, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=4,
    default_args={
        "retries": 3,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
    },
    tags=["ingest", "binance"],
    doc_md=__doc__,
)
def binance_ingest():
    # Poke mode: the wait is the 30 s grace period, and a worker process (whose start alone parses the
    # DAG file for ~4 s here) is cheaper held than restarted every poke; the seal starts on time.
    @task.sensor(poke_interval=5, timeout=300, mode="poke")
    def wait_for_collector(data_interval_end=None) -> bool:
        """The window's closing messages arrive just after it ends, from a live collector (its heartbeat)."""
        context = get_current_context()
        ti = context["ti"]  # when this sensor began waiting (either sensor mode):
        first_poke = ti.get_first_reschedule_date(context) or getattr(ti, "start_date", None)
        return ingest_tasks.collector_ready(data_interval_end, first_poke)

    @task(outlets=[LANDING_SNAPSHOTS])
    def seal_snapshot(data_interval_start=None, data_interval_end=None, dag_run=None):
        sealed, summary = ingest_tasks.seal_snapshot(
            ingest_tasks.ms(data_interval_start),
            ingest_tasks.ms(data_interval_end),
            backfill=dag_run.run_type == "backfill",
        )
        yield Metadata(LANDING_SNAPSHOTS, sealed.as_extra())
        # Airflow's way to attach metadata to an outlet: yield Metadata, then return the XCom value.
        return summary  # noqa: B901

    @task
    def verify_snapshot(summary: dict) -> dict:
        """Every expected candle is in the snapshot, or is a hole REST could not fill either (logged)."""
        return ingest_tasks.verify_snapshot(summary)

    sealed = seal_snapshot()
    wait_for_collector() >> sealed  # the seal waits for the grace period and a live collector
    verify_snapshot(sealed)


binance_ingest()
