"""The spark_etl job on a real Spark standalone cluster (spark://, two workers) gives what local[*] gives.

The distributed path of docker-compose, without Docker: a master and two workers from pyspark's
own distribution on loopback (cryptoflow_stack.spark_cluster), the job submitted the way the DAG
submits it (spark-submit with the DAG's conf, jars and application, the package zip as
--py-files). The same SYNTHETIC snapshots (minutes across midnight, an incomplete hour, bad rows, and
the second half of an hour whose first half is already stored, so the executors read stored rows
back over JDBC to complete it) go through the cluster into one warehouse and lake and through
local[*] into another, seeded alike; every table and the lake must be identical. The workers run in another time zone than the driver: nothing may depend on a JVM's
default zone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from cryptoflow_bench.etl import MINUTE_MS, START_MS, _copy_rows, minute_row, write_minutes
from cryptoflow.etl import plan
from cryptoflow_stack.spark_cluster import StandaloneCluster, java_home
from cryptoflow.spark import worker_python
from tests.conftest import PROJECT_ROOT, make_warehouse
from tests.integration.test_spark_etl import _bad_rows, _write

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOUR = 3_600_000
SYMS = ("BTCUSDT", "ETHUSDT")
RUN_ID = "dist-1"
# Stored before the run (an earlier run's minutes): 01:00-01:29 of both coins.
STORED = range(START_MS + 3_600_000, START_MS + 3_600_000 + 30 * MINUTE_MS, MINUTE_MS)

# Every column the ETL writes, in a stable order (ingested_at/quarantined_at/id say when, not what).
TABLES = {
    "market.candles": (
        "symbol, interval, open_time, close_time, open, high, low, close, base_volume, quote_volume,"
        " taker_buy_base_volume, taker_buy_quote_volume, trades, minute_count, is_complete, source"
    ),
    "ops.quarantine": "source, reason, detail, raw_record, symbol, interval, open_time, run_id",
    "market.hourly_metrics": "*",
    "market.return_correlation": "*",
    "market.volume_profile": "*",
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """The run's manifest (SYNTHETIC minutes, see module doc): 23:00-00:59 and 01:30-02:59, bad rows."""
    landing = tmp_path_factory.mktemp("landing")
    first_start = START_MS - HOUR  # 23:00 the day before: two lake dates, two days of analytics
    missing = START_MS + 7 * MINUTE_MS  # BTC 00:07 never arrives: hour 00 stays incomplete
    skip = lambda s, t: s == "BTCUSDT" and t == missing  # noqa: E731
    uris = write_minutes(landing, SYMS, first_start, START_MS + HOUR, 10 * MINUTE_MS, skip=skip)
    uris += write_minutes(
        landing, SYMS, START_MS + 90 * MINUTE_MS, START_MS + 3 * HOUR, 10 * MINUTE_MS
    )
    bad_t = START_MS + 5 * HOUR
    dup = minute_row("BTCUSDT", bad_t)
    uris.append(_write(landing, "1m", bad_t, [dup, dup] + [r for r, _ in _bad_rows(bad_t)]))
    return plan.write_manifest(f"file://{landing}", RUN_ID, uris)


def _seeded_warehouse(pg_cluster):
    wh = make_warehouse(pg_cluster)
    with psycopg.connect(wh.admin_dsn) as conn:
        _copy_rows(conn, [minute_row(s, t) for s in SYMS for t in STORED])
    return wh


@pytest.fixture(scope="module")
def etl_task():
    from airflow.dag_processing.dagbag import DagBag

    return (
        DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "spark_etl.py"))
        .dags["spark_etl"]
        .get_task("etl_candles")
    )


def _dag_command(op, master: str, py_files: str, manifest: str, run_id: str) -> list[str]:
    """The spark-submit command the etl_candles task runs, built by the provider's own hook from the
    task's conf, jars, name and application, with `spark_default` pointing at `master`."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    os.environ["AIRFLOW_CONN_SPARK_DEFAULT"] = json.dumps({"conn_type": "spark", "host": master})
    try:
        hook = SparkSubmitHook(
            conf=op.conf,
            conn_id=op._conn_id,
            jars=op.jars,
            py_files=py_files,
            name=op.name,
            application_args=["--manifest", manifest, "--run-id", run_id],
        )
        return hook._build_spark_submit_command(op.application)
    finally:
        del os.environ["AIRFLOW_CONN_SPARK_DEFAULT"]


def _submit(op, master: str, py_files, manifest, run_id, wh, lake) -> float:
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOFLOW_")}
    env.update(
        {
            # What CandleEtlSubmitOperator.submit_env adds, and the settings the job reads itself. No
            # CRYPTOFLOW_SPARK_MASTER: the master is the one spark-submit is given (the connection's).
            "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
            "PYSPARK_PYTHON": worker_python(),
            "CRYPTOFLOW_STATE_DIR": os.environ["CRYPTOFLOW_STATE_DIR"],
            "CRYPTOFLOW_WAREHOUSE_DSN": wh.writer_dsn,
            "CRYPTOFLOW_LAKE_URI": lake,
            "CRYPTOFLOW_SYMBOLS": ",".join(SYMS),
            "JAVA_HOME": java_home(),
            "SPARK_LOCAL_IP": "127.0.0.1",  # executors call the driver back on loopback
        }
    )
    cmd = _dag_command(op, master, py_files, manifest, run_id)
    assert cmd[0] == "spark-submit"
    cmd[0] = os.path.join(venv_bin, "spark-submit")  # as the operator's PATH finds it
    t0 = time.monotonic()
    res = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT
    )
    assert res.returncode == 0, f"{master}: {res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    took = time.monotonic() - t0
    result = [json.loads(line) for line in res.stdout.splitlines() if line.startswith('{"run_id"')]
    phases = result[-1]["seconds"] if result else {}  # the job's own timings
    print(f"\n{master} {run_id}: {took:.1f} s (job: {json.dumps(phases)})")
    return took


def _tables(dsn: str) -> dict[str, list[tuple]]:
    with psycopg.connect(dsn) as conn:
        return {
            t: conn.execute(f"SELECT {cols} FROM {t} ORDER BY 1, 2, 3, 4, 5, 6").fetchall()
            for t, cols in TABLES.items()
        }


def _lake(lake_dir: Path):
    """The lake's rows (sorted by key) and its partition directories."""
    import pyarrow.dataset as ds

    root = lake_dir / "candles_by_day"
    df = ds.dataset(str(root), format="parquet", partitioning="hive").to_table().to_pandas()
    for c in ("symbol", "interval", "date"):
        df[c] = df[c].astype(str)
    df = df.sort_values(["symbol", "interval", "open_time"]).reset_index(drop=True)
    parts = sorted(str(p.parent.relative_to(root)) for p in root.rglob("*.parquet"))
    return df, parts


def test_cluster_and_local_runs_write_the_same_warehouse_and_lake(
    pg_cluster, manifest, etl_task, tmp_path, scratch_dir
):
    import pandas as pd

    from cryptoflow.etl.plan import package_zip

    py_files = package_zip(scratch_dir)
    wh = {"cluster": _seeded_warehouse(pg_cluster), "local": _seeded_warehouse(pg_cluster)}
    lakes = {mode: tmp_path / f"lake-{mode}" for mode in wh}
    seconds = {}

    # The workers (and so the executors they fork) 5:30 off UTC; the driver is on this machine's zone.
    with StandaloneCluster(
        workers=2, cores_per_worker=1, memory="1g", env={"TZ": "Asia/Kolkata"}
    ) as cluster:
        seconds["cluster"] = _submit(
            etl_task,
            cluster.master_url,
            py_files,
            manifest,
            RUN_ID,
            wh["cluster"],
            f"file://{lakes['cluster']}",
        )
        apps = cluster.state().get("completedapps", [])
    # The run really ran on the cluster's two executors, not silently in the driver.
    assert [(a["state"], a["cores"]) for a in apps] == [("FINISHED", 2)], apps
    seconds["local"] = _submit(
        etl_task, "local[*]", py_files, manifest, RUN_ID, wh["local"], f"file://{lakes['local']}"
    )
    print(
        f"\nspark_etl run: cluster (2 workers x 1 core) {seconds['cluster']:.1f} s, local[*] {seconds['local']:.1f} s"
    )

    got = {mode: _tables(w.reader_dsn) for mode, w in wh.items()}
    for table in TABLES:
        assert got["cluster"][table] == got["local"][table], table
    # What was compared is what this data must produce (so equal is not equally empty).
    cands = got["local"]["market.candles"]
    hours = {(r[0], r[2]): (r[13], r[14]) for r in cands if r[1] == "1h"}
    # 4 hours of both coins (30 minutes stored before) less BTC 00:07, plus the valid (twice landed)
    # BTC 05:00 of the bad file.
    assert len([r for r in cands if r[1] == "1m"]) == 2 * 4 * 60 - 1 + 1 and len(hours) == 2 * 4 + 1
    assert hours[("BTCUSDT", datetime(2024, 1, 1, 0, tzinfo=timezone.utc))] == (59, False)
    assert hours[("BTCUSDT", datetime(2024, 1, 1, 1, tzinfo=timezone.utc))] == (
        60,
        True,
    )  # stored + new minutes
    reasons = sorted(r[1] for r in got["local"]["ops.quarantine"])
    assert reasons == sorted(reason for _, reason in _bad_rows(START_MS))
    assert all(got["local"][t] for t in TABLES)

    (lake_c, parts_c), (lake_l, parts_l) = _lake(lakes["cluster"]), _lake(lakes["local"])
    assert parts_c == parts_l and any("date=2023-12-31" in p for p in parts_l)
    pd.testing.assert_frame_equal(lake_c, lake_l)
    assert len(lake_l) == len(cands)


class _Recording(StandaloneCluster):
    """Remembers its daemons' pids (= their process groups) after stop() has forgotten them."""

    spawned: list[int]

    def _spawn(self, name, args):
        super()._spawn(name, args)
        self.spawned = [*getattr(self, "spawned", []), self.procs[-1].pid]


def _alive_in_groups(pgids) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError):
            continue
        if int(pgrp) in pgids and state != "Z":
            out.append(int(stat.parent.name))
    return out


def test_a_failed_cluster_leaves_no_process_and_no_directory():
    # A worker that can't start: the error says so, and the master already running is stopped.
    bad = _Recording(workers=1, memory="lots", start_timeout=60)
    with pytest.raises(RuntimeError, match="exited"):
        with bad:
            pass
    assert len(bad.spawned) == 2 and _alive_in_groups(set(bad.spawned)) == [] and bad.dir is None
    # A failure inside the block (a job that raised): every daemon's process group is gone.
    with pytest.raises(RuntimeError, match="the job failed"):
        with _Recording(workers=1) as cluster:
            work = cluster.dir
            assert len(_alive_in_groups(set(cluster.spawned))) >= 2 and cluster.alive_workers()
            raise RuntimeError("the job failed")
    assert _alive_in_groups(set(cluster.spawned)) == [] and not work.exists()
