"""spark_etl planning: which snapshots a run reads, the manifest, the shipped package, the DAG's shape."""

import logging
import zipfile

import pytest

from cryptoflow import times
from cryptoflow.etl import plan

pytestmark = pytest.mark.quick


class _Event:
    def __init__(self, extra):
        self.extra = extra


def test_snapshots_come_from_the_events_only():
    from cryptoflow.assets import SnapshotsSealed

    sealed = SnapshotsSealed(("file:///l/a.csv", "file:///l/b.csv"), "1m", 0, 600_000)
    events = [
        _Event({"uris": ["file:///l/b.csv"], "interval": "1m"}),
        _Event(sealed.as_extra()),
        sealed.as_extra(),
    ]
    assert plan.snapshots_from_events(events) == ["file:///l/a.csv", "file:///l/b.csv"]
    assert (
        SnapshotsSealed.from_extra(sealed.as_extra()) == sealed
    )  # what binance_ingest emits, spark_etl reads


def test_an_event_of_another_shape_is_reported_and_holds_nothing_back(caplog):
    events = [
        _Event({}),
        _Event(None),
        _Event({"snapshots": "file:///l/c.csv"}),
        _Event({"uris": "file:///l/c.csv"}),
        _Event({"uris": ["file:///l/a.csv"], "interval": "1m"}),
    ]
    with caplog.at_level(logging.WARNING, logger="cryptoflow.etl.plan"):
        assert plan.snapshots_from_events(events) == ["file:///l/a.csv"]
    warned = [r.getMessage() for r in caplog.records if r.name == "cryptoflow.etl.plan"]
    assert len(warned) == 4 and all("names no snapshot" in w and "`uris`" in w for w in warned)


def test_manifest_round_trip(tmp_path):
    uri = plan.write_manifest(
        f"file://{tmp_path}",
        "manual__2024-01-01T00:00:00+00:00",
        ["file:///x/1.csv", "file:///x/2.csv"],
    )
    assert "/_manifests/" in uri
    assert plan.read_manifest(uri) == ["file:///x/1.csv", "file:///x/2.csv"]
    assert plan.read_manifest(plan.write_manifest(f"file://{tmp_path}", "empty", [])) == []


def test_range_planning_lists_only_the_window(tmp_path):
    from cryptoflow_bench.etl import MINUTE_MS, START_MS, write_minutes

    write_minutes(tmp_path, ["BTCUSDT"], START_MS, START_MS + 60 * MINUTE_MS, 10 * MINUTE_MS)
    got = plan.snapshots_for_range(
        f"file://{tmp_path}", ["1m"], START_MS + 20 * MINUTE_MS, START_MS + 40 * MINUTE_MS
    )
    assert len(got) == 2 and got[0].endswith("20240101T002000Z_20240101T003000Z.csv")
    assert times.parse_utc_ms("2024-01-01T00:20:00Z") == START_MS + 20 * MINUTE_MS


def test_package_zip_is_deterministic_and_complete(tmp_path):
    a = plan.package_zip(tmp_path)
    assert plan.package_zip(tmp_path) == a
    names = zipfile.ZipFile(a).namelist()
    assert "cryptoflow/candles.py" in names and "cryptoflow/etl/job.py" in names
    assert any(n.endswith("0002_etl_analytics.sql") for n in names)


def test_jdbc_options_carry_no_password_in_the_url():
    from cryptoflow.etl.io import jdbc_options

    o = jdbc_options("postgresql://cf_writer:s3cret@127.0.0.1:5433/cryptoflow")
    assert o["url"] == "jdbc:postgresql://127.0.0.1:5433/cryptoflow"
    assert (o["user"], o["password"]) == ("cf_writer", "s3cret")


def test_dag_is_scheduled_on_landing_and_emits_candles():
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    from cryptoflow.assets import LANDING_SNAPSHOTS, WAREHOUSE_CANDLES
    from tests.conftest import PROJECT_ROOT

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "spark_etl.py"))
    assert bag.import_errors == {}
    dag = bag.dags["spark_etl"]
    assert LANDING_SNAPSHOTS.uri in str(dag.timetable.asset_condition)
    job = dag.get_task("etl_candles")
    assert isinstance(job, SparkSubmitOperator) and job.application.endswith(
        "spark_jobs/etl_candles.py"
    )
    assert job.jars == "/usr/share/java/postgresql.jar"
    # spark-submit names the project's interpreter for the driver and every executor's workers.
    import sys

    assert (
        job.conf["spark.pyspark.python"]
        == job.conf["spark.pyspark.driver.python"]
        == sys.executable
    )
    # The driver's heap goes on the command line (a submitted job's session can't set it any more).
    from cryptoflow import settings

    assert job._driver_memory == settings.load().spark_driver_memory
    assert [o.uri for o in dag.get_task("publish").outlets] == [WAREHOUSE_CANDLES.uri]
    # The checks: one mapped task over dq.CHECKS, each instance named by its check in the UI.
    from cryptoflow.etl.dq import CHECKS

    checks = dag.get_task("data_quality")
    assert checks.op_kwargs_expand_input.value == {"check": list(CHECKS)}
    assert checks.map_index_template == "{{ dq_check }}"
    assert checks.upstream_task_ids == {"etl_candles"}
    assert dag.get_task("publish").upstream_task_ids == {
        "etl_candles"
    }  # beside the checks, not after
