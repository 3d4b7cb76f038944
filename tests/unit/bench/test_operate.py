"""The pure parts of the operation benchmark (cryptoflow_bench.operate): no stack, no database."""

from datetime import datetime, timedelta, timezone

import pytest

import cryptoflow_bench as bench
from cryptoflow_bench import operate as op

pytestmark = pytest.mark.quick

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
M = timedelta(minutes=1)


def test_registered():
    assert bench.REGISTRY["operate"] == "cryptoflow_bench.operate:bench_operate"
    assert callable(bench._resolve(bench.REGISTRY["operate"]))


def test_percentile_interpolates_and_handles_edges():
    assert op.percentile([], 50) is None
    assert op.percentile([7], 95) == 7
    assert op.percentile([1, 2, 3, 4], 50) == 2.5
    assert op.percentile([4, 1, 3, 2], 0) == 1 and op.percentile([4, 1, 3, 2], 100) == 4
    assert op.percentile(range(101), 95) == pytest.approx(95)


def test_freshness_is_minutes_since_the_newest_candle_closed():
    assert op.freshness_minutes(T0 + 3 * M, T0) == pytest.approx(2.0)
    assert op.freshness_minutes(T0, None) is None


def _sample(at, newest, **kw):
    return op.Sample(at, dict(newest), **kw)


def test_freshness_figures_after_warmup_and_target():
    syms = ("A", "B")
    samples = [
        _sample(T0, {"A": T0 - 60 * M, "B": T0 - 60 * M}),  # in the warm-up: ignored
        _sample(T0 + 10 * M, {"A": T0 + 5 * M, "B": T0 + 8 * M}),  # 4 and 1 minutes
        _sample(T0 + 20 * M, {"A": T0 + 9 * M, "B": T0 + 6 * M}),  # 10 and 13 minutes
    ]
    f = op.freshness_figures(samples, syms, warmup_until=T0 + 5 * M)
    assert f["samples_after_warmup"] == 2
    assert f["freshness_1m_max_minutes"] == 13.0 and f["freshness_1m_stalest_coin"] == "B"
    assert f["freshness_1m_p50_minutes"] == pytest.approx(7.0)
    assert f["freshness_1m_max_minutes_target"] == 12 and f["freshness_1m_max_minutes_met"] is False
    # A coin without any candle misses the target (no max to report), the others still count.
    f = op.freshness_figures([_sample(T0, {"A": T0 - 2 * M, "B": None})], syms, warmup_until=T0)
    assert f["freshness_1m_no_data_samples"] == 1 and f["freshness_1m_max_minutes"] is None
    assert f["freshness_1m_max_minutes_met"] is False and f["freshness_1m_p50_minutes"] == 1.0
    f = op.freshness_figures(
        [_sample(T0, {"A": T0 - 2 * M, "B": T0 - 3 * M})], syms, warmup_until=T0
    )
    assert f["freshness_1m_max_minutes"] == 2.0 and f["freshness_1m_max_minutes_met"] is True


def test_snapshot_lag_is_first_sample_with_every_coin_at_the_windows_last_minute():
    syms = ("A", "B")
    w = T0  # window [10:00, 10:10): complete once both coins have 10:09
    samples = [
        (T0 + 7 * M, {"A": T0 - 1 * M, "B": T0 - 1 * M}),
        (T0 + 11 * M, {"A": T0 + 9 * M, "B": T0 + 8 * M}),  # B not there yet
        (T0 + 13 * M, {"A": T0 + 9 * M, "B": T0 + 9 * M}),  # complete: 3 minutes after 10:10
        (T0 + 22 * M, {"A": T0 + 19 * M, "B": T0 + 19 * M}),  # next window: 2 minutes
        (T0 + 31 * M, {"A": T0 + 19 * M, "B": None}),  # 10:20 window still missing at the end
    ]
    arrived, pending = op.snapshot_lags(samples, syms)
    assert arrived == {w: 3.0, w + 10 * M: 2.0}
    assert pending == {w + 20 * M: 1.0}


def test_snapshot_lag_ignores_windows_that_ended_before_the_first_sample():
    samples = [(T0 + 25 * M, {"A": T0 + 19 * M}), (T0 + 33 * M, {"A": T0 + 29 * M})]
    arrived, pending = op.snapshot_lags(samples, ("A",))
    assert arrived == {T0 + 20 * M: 3.0} and pending == {}
    assert op.snapshot_lags([], ("A",)) == ({}, {})


def test_lag_figures_name_their_resolution():
    samples = [_sample(T0 + 9 * M, {"A": T0}), _sample(T0 + 12 * M, {"A": T0 + 9 * M})]
    f = op.lag_figures(samples, ("A",), sample_s=30)
    assert f["snapshots_observed"] == 1 and f["snapshot_lag_minutes_max"] == 2.0
    assert f["snapshot_lag_resolution_minutes"] == 0.5 and f["snapshots_missing_at_end"] == 0


def test_forecast_hours_are_the_whole_hours_inside_the_period():
    start = T0 + 23 * M
    assert op.forecast_hours(start, start + 120 * M) == [T0 + 60 * M]
    assert op.forecast_hours(T0, T0 + 120 * M) == [T0, T0 + 60 * M]
    assert op.forecast_hours(start, start + 3 * M) == []


def test_tally_forecasts_counts_configured_coins_per_hour():
    hours = [T0, T0 + 60 * M, T0 + 120 * M]
    rows = [
        ("A", T0),
        ("B", T0),
        ("A", T0),
        ("Z", T0),  # duplicates and unknown coins don't count
        ("A", T0 + 60 * M),
        ("B", T0 + 120 * M),
        ("A", T0 + 120 * M),
        ("A", T0 - 60 * M),
    ]
    f = op.tally_forecasts(hours, rows, ("A", "B"))
    assert f["forecast_hours_observed"] == 3
    assert f["forecasts_per_hour_min"] == 1 and f["forecasts_per_hour_mean"] == pytest.approx(
        5 / 3, abs=0.01
    )
    assert f["hours_with_every_coin_forecast"] == 2
    assert f["forecast_hours_missing_coins"] == {"12-01T11:00Z": ["B"]}
    empty = op.tally_forecasts([], rows, ("A",))
    assert empty["forecasts_per_hour_min"] is None and empty["hours_with_every_coin_forecast"] == 0


def test_parse_stat_survives_odd_command_names():
    line = (
        "4242 (airflow worker -- (x) y) S 100 4200 4100 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0"
    )
    assert op.parse_stat(line) == (100, 4200, 4100)


def test_rss_groups_sessions_groups_and_descendants():
    P = op.Proc
    procs = {
        100: P(1, 100, 100, rss_kb=1000, pss_kb=800),  # scheduler (session leader)
        101: P(100, 100, 100, rss_kb=500, pss_kb=100),  # LocalExecutor worker
        150: P(
            100, 150, 100, rss_kb=300, pss_kb=300
        ),  # task process in its own group, same session
        151: P(150, 150, 100, rss_kb=2000, pss_kb=2000),  # Spark JVM of the task
        200: P(1, 200, 200, rss_kb=400, pss_kb=300),  # postmaster
        201: P(
            200, 201, 201, rss_kb=50, pss_kb=20
        ),  # backend: its own session, child of postmaster
        300: P(1, 300, 300, rss_kb=9999, pss_kb=9999),  # not a service
    }
    roots = {"postgres": 200, "airflow-scheduler": 100}
    groups = op.group_processes(procs, roots)
    assert groups == {"postgres": {200, 201}, "airflow-scheduler": {100, 101, 150, 151}}
    rss, pss = op.rss_by_service(procs, roots)
    assert rss == {"postgres": 450, "airflow-scheduler": 3800} and pss == 3520
    # A process is counted once, by the first service that claims it.
    assert op.group_processes(procs, {"a": 150, "b": 100}) == {"a": {150, 151}, "b": {100, 101}}
    assert op.rss_by_service(procs, {"gone": 999}) == ({"gone": 0}, 0)


def test_rss_figures_start_peak_end_per_service_and_total():
    samples = [
        _sample(
            T0,
            {},
            rss_kb={"postgres": 1024, "airflow-scheduler": 2048},
            pss_kb_total=2048,
            mem_available_kb=8192,
        ),
        _sample(
            T0 + M,
            {},
            rss_kb={"postgres": 3072, "airflow-scheduler": 2048},
            pss_kb_total=4096,
            mem_available_kb=4096,
        ),
        _sample(
            T0 + 2 * M, {}, rss_kb={"postgres": 2048, "airflow-scheduler": 1024, "superset": 1024}
        ),
    ]
    f = op.rss_figures(samples)
    assert (f["rss_mb_postgres_start"], f["rss_mb_postgres_peak"], f["rss_mb_postgres_end"]) == (
        1.0,
        3.0,
        2.0,
    )
    assert (f["rss_mb_total_start"], f["rss_mb_total_peak"], f["rss_mb_total_end"]) == (
        3.0,
        5.0,
        4.0,
    )
    assert f["rss_mb_airflow_scheduler_end"] == 1.0 and f["rss_mb_superset_start"] == 0.0
    assert f["pss_mb_total_peak"] == 4.0 and f["mem_available_mb_min"] == 4.0
    assert op.rss_figures([]) == {}


def test_dag_run_figures_count_by_dag_and_state():
    runs = [
        {"dag_id": "binance_ingest", "dag_run_id": "r1", "state": "success"},
        {"dag_id": "binance_ingest", "dag_run_id": "r2", "state": "success"},
        {"dag_id": "spark_etl", "dag_run_id": "r3", "state": "failed"},
        {"dag_id": "forecast_hourly", "dag_run_id": "r4", "state": "running"},
    ]
    f = op.dag_run_figures(runs)
    assert f["dag_runs_failed_in_period"] == 1 and f["dag_runs_failed_ids"] == ["spark_etl/r3"]
    assert f["dag_runs_binance_ingest_success"] == 2 and f["dag_runs_forecast_hourly_running"] == 1


def test_sample_json_line_is_plain_data():
    import json

    s = _sample(T0 + 5 * M, {"A": T0, "B": None}, rss_kb={"postgres": 2048}, pss_kb_total=1024)
    line = json.loads(json.dumps(s.to_json()))
    assert line["freshness_1m_minutes"] == {"A": 4.0, "B": None} and line["rss_mb_total"] == 2.0
