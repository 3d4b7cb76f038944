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

from contextlib import closing
from datetime import datetime, timedelta, timezone

from airflow.sdk import Metadata, dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from cryptoflow import ingest, settings, sources
from cryptoflow.assets import LANDING_SNAPSHOTS, SnapshotsSealed
from cryptoflow.warehouse import db
from warehouse_hook import WarehouseHook  # plugins/, on sys.path in every Airflow process


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


@dag(
    # A data-interval timetable: each run covers the 10 minutes that just ended.
    schedule=CronDataIntervalTimetable("*/10 * * * *", timezone="UTC"),
    # Early enough for `airflow backfill create` over any Binance history (catchup stays off).
    start_date=datetime(2017, 7, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=4,
    default_args={"retries": 3, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True},
    tags=["ingest", "binance"],
    doc_md=__doc__,
)
def binance_ingest():
    # Poke mode: the wait is the 30 s grace period, and a worker process (whose start alone parses the
    # DAG file for ~4 s here) is cheaper held than restarted every poke; the seal starts on time.
    @task.sensor(poke_interval=5, timeout=300, mode="poke")
    def wait_for_collector(data_interval_end=None) -> bool:
        """The window's closing messages arrive just after it ends, from a live collector (its heartbeat)."""
        from cryptoflow.collector import read_heartbeat

        cfg = settings.load()
        now = datetime.now(timezone.utc)
        context = get_current_context()
        ti = context["ti"]  # when this sensor began waiting (either sensor mode):
        first_poke = ti.get_first_reschedule_date(context) or getattr(ti, "start_date", None) or now
        ready, why = ingest.collector_ready(read_heartbeat(cfg.state_dir / "collector"), _ms(data_interval_end),
                                            _ms(now), _ms(first_poke), has_stream=sources.active(cfg).has_stream)
        print(why)
        return ready

    @task(outlets=[LANDING_SNAPSHOTS])
    def seal_snapshot(data_interval_start=None, data_interval_end=None, dag_run=None):
        from binance_hook import market_history  # plugins/, on sys.path in every Airflow process

        cfg = settings.load()
        start, end = _ms(data_interval_start), _ms(data_interval_end)
        run_id = ingest.window_run_id(cfg.interval, start)
        # Binance's REST through the binance_default connection when there is one (an operator's
        # edit in the UI or a secrets backend takes effect here), else the settings' URL. Another
        # source (files) has no connection: its own history client.
        rest = market_history(cfg)
        with closing(rest), WarehouseHook().connect() as conn, db.pipeline_run(conn, "binance_ingest", run_id, "seal_snapshot") as run:
            result = ingest.seal_window(cfg, start, end, rest_client=rest)
            ingest.record(conn, result, run_id, cfg.interval)
            # Closed candles missing from the warehouse before this window (a seed's edge, downtime,
            # a run that never happened) are fetched too. A backfill's windows are their own healing.
            healing = (ingest.heal_history(conn, cfg, before_ms=start, rest_client=rest)
                       if dag_run.run_type != "backfill" else ingest.HealResult(uris=[], wanted=0))
            ingest.record_heal(conn, healing, run_id, cfg.interval)
            run.update(rows_in=result.from_stream + len(result.healed) + len(healing.healed),
                       rows_out=result.rows + len(healing.healed),
                       rows_quarantined=sum(result.rejected.values()) + len(healing.rejections))
            run["details"].update(result.summary())
            run["details"]["history_healing"] = healing.summary()
        if healing.wanted:
            print(f"healed {len(healing.healed)} of {healing.wanted} candles missing from the warehouse "
                  f"({len(healing.holes)} holes kept, {healing.deferred} left for the next run)")
        sealed = SnapshotsSealed((result.uri, *healing.uris), cfg.interval, start, end)
        yield Metadata(LANDING_SNAPSHOTS, sealed.as_extra())
        # Airflow's way to attach metadata to an outlet: yield Metadata, then return the XCom value.
        return result.summary()  # noqa: B901

    @task
    def verify_snapshot(summary: dict) -> dict:
        """Every expected candle is in the snapshot, or is a hole REST could not fill either (logged)."""
        from cryptoflow import landing

        cfg = settings.load()
        rows = landing.read_snapshot(summary["uri"])
        if len(rows) != summary["rows"]:
            raise ValueError(f"snapshot {summary['uri']} holds {len(rows)} rows, sealed {summary['rows']}")
        if summary["stream"]["corrupt"]:
            raise ValueError(f"{summary['stream']['corrupt']} corrupt collector lines: inspect the segments")
        return {"rows": len(rows), "holes": summary["holes"], "interval": cfg.interval}

    sealed = seal_snapshot()
    wait_for_collector() >> sealed  # the seal waits for the grace period and a live collector
    verify_snapshot(sealed)


binance_ingest()
