"""The Spark ETL with a real SparkSession and a real PostgreSQL.

- the full shared data set (every CryptoDataDownload file + the raw BTC file) through the importers
  into landing snapshots, then the job: every input row is loaded, collapsed or quarantined; a rerun
  changes nothing (tables and lake identical);
- SYNTHETIC one-minute candles (the shared data is hourly) for the incremental path: rollups
  complete only with 60 minutes, bad rows quarantined with their reasons, late updates refused;
- a job killed inside its load transaction leaves nothing, and the rerun succeeds.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from cryptoflow_bench.etl import MINUTE_MS, START_MS, minute_row, write_minutes
from cryptoflow.candles import LANDING_COLUMNS
from cryptoflow.etl import dq, io, job
from cryptoflow.etl.stored import ts as ts_text
from cryptoflow.landing import snapshot_relpath

pytestmark = pytest.mark.integration

HOUR = 3_600_000
DAY = 86_400_000
CDD = ["ADA", "BNB", "BTC", "DOGE", "DOT", "ETH", "SOL", "USDC", "XRP"]
SYMBOLS = tuple(f"{c}USDT" for c in CDD)


def _fingerprint(dsn: str) -> dict:
    """A content hash of every table the ETL writes (ingested_at aside: it records when, not what)."""
    out = {}
    with psycopg.connect(dsn) as conn:
        for table, cols, order in (
            (
                "market.candles",
                "symbol, interval, open_time, close_time, open, high, low, close, base_volume,"
                " quote_volume, taker_buy_base_volume, taker_buy_quote_volume, trades, minute_count, is_complete, source",
                "symbol, interval, open_time",
            ),
            ("market.hourly_metrics", "*", "symbol, open_time"),
            ("market.volume_profile", "*", "symbol, interval, day, bucket"),
            ("market.return_correlation", "*", "day, symbol_a, symbol_b"),
        ):
            out[table] = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY {order}), ''))"
                f" FROM (SELECT {cols} FROM {table}) t"
            ).fetchone()
    return out


def _lake(spark, lake_uri):
    df = spark.read.parquet(lake_uri + "/candles_by_day")
    return df.count(), df.select("symbol", "interval", "open_time").distinct().count()


@pytest.fixture(scope="module")
def shared_landed(shared_data, tmp_path_factory):
    """All shared files through the importers, landed as day snapshots (interval 1h)."""
    from cryptoflow.importers import import_cdd_csv
    from cryptoflow.landing import write_snapshot

    landing = tmp_path_factory.mktemp("landing")
    files = sorted((shared_data / "cryptodatadownload").glob("*.csv")) + sorted(
        (shared_data / "raw").glob("*.csv")
    )
    imports = [import_cdd_csv(f, symbols=set(SYMBOLS)) for f in files]
    by_day = {}
    for r in imports:
        for c in r.candles:
            by_day.setdefault(c.open_time - c.open_time % DAY, []).append(c)
    snaps = [
        write_snapshot(f"file://{landing}", "1h", d, d + DAY, cs)
        for d, cs in sorted(by_day.items())
    ]
    return {
        "uris": [s.uri for s in snaps],
        "read": sum(r.counts["read"] for r in imports),
        "import_quarantined": sum(r.counts["quarantined"] for r in imports),
        "import_collapsed": sum(r.counts["duplicates_collapsed"] for r in imports),
        "import_rejections": [x for r in imports for x in r.rejections],
        "landing_collapsed": sum(s.duplicates_collapsed for s in snaps),
        "landing_rejections": [x for s in snaps for x in s.rejections],
        "landed": sum(s.rows for s in snaps),
    }


def test_full_shared_data_set_end_to_end(spark, pg_cluster, shared_landed, tmp_path):
    from tests.conftest import make_warehouse
    from cryptoflow.quarantine import write_rejections

    wh = make_warehouse(pg_cluster)
    lake = f"file://{tmp_path}/lake"
    d = shared_landed
    with psycopg.connect(
        wh.writer_dsn
    ) as conn:  # what the import step quarantined, as the CLI does
        write_rejections(conn, d["import_rejections"] + d["landing_rejections"], "import")
    first = job.run(spark, d["uris"], "shared-1", dsn=wh.writer_dsn, lake_uri=lake, symbols=SYMBOLS)
    c = first.counts
    assert c["rows_in"] == d["landed"]
    assert c["rows_in"] == c["kept"] + c["collapsed_duplicates"] + c["quarantined"]
    with psycopg.connect(wh.reader_dsn) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM market.candles WHERE interval = '1h'"
        ).fetchone()[0]
        quarantined = conn.execute("SELECT count(*) FROM ops.quarantine").fetchone()[0]
        per_symbol = dict(
            conn.execute("SELECT symbol, count(*) FROM market.candles GROUP BY 1").fetchall()
        )
        metrics = conn.execute(
            "SELECT count(*), count(volatility_24h), count(ma_168h) FROM market.hourly_metrics"
        ).fetchone()
        corr = conn.execute(
            "SELECT count(*), count(correlation), min(correlation), max(correlation)"
            " FROM market.return_correlation"
        ).fetchone()
    # Every row of every file: loaded, collapsed as an equal duplicate, or quarantined with a reason.
    assert (
        d["read"]
        == stored
        + quarantined
        + d["import_collapsed"]
        + d["landing_collapsed"]
        + c["collapsed_duplicates"]
    )
    assert stored == c["merge"]["inserted"] and c["merge"]["conflicts"] == 0
    # BTC has fewer: the raw file contradicts the clean one on many hours (both copies quarantined).
    assert set(per_symbol) == set(SYMBOLS) and per_symbol["ETHUSDT"] > 9000
    assert metrics[0] == stored and metrics[1] > 0.9 * stored and metrics[2] > 0.9 * stored
    assert corr[0] > 0 and -1 <= corr[2] <= corr[3] <= 1
    assert _lake(spark, lake) == (stored, stored)  # one row per key in the lake as well


def _write(landing, interval, start, rows, name_end=None):
    path = landing / snapshot_relpath(interval, start, name_end or start + 10 * MINUTE_MS)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(LANDING_COLUMNS)
        w.writerows(rows)
    return f"file://{path}"


def _bad_rows(t):
    """One SYNTHETIC landing file's worth of broken rows, each with the reason it must get."""

    def row(**over):
        r = dict(zip(LANDING_COLUMNS, minute_row("ETHUSDT", t)))
        r.update(over)
        return [r[c] for c in LANDING_COLUMNS]

    base = dict(zip(LANDING_COLUMNS, minute_row("ETHUSDT", t)))
    return [
        (
            row(open_time=str(t + 60_000), close_time=str(t + 119_999), high="1", low="2"),
            "high_below_low",
        ),
        (row(open_time=str(t + 120_005), close_time=str(t + 180_004)), "misaligned_open_time"),
        (
            row(open_time=str(t + 180_000), close_time=str(t + 239_999), base_volume="-1"),
            "negative_volume",
        ),
        (row(open_time=str(t + 240_000), close_time=str(t + 299_999), open="abc"), "bad_number"),
        (row(symbol="SHIBUSDT"), "unknown_symbol"),
        # the same key twice with different closes: both quarantined
        (
            row(open_time=str(t + 300_000), close_time=str(t + 359_999), close=base["open"]),
            "conflicting_duplicate",
        ),
        (
            row(open_time=str(t + 300_000), close_time=str(t + 359_999), close=base["low"]),
            "conflicting_duplicate",
        ),
    ]


def test_synthetic_minutes_incremental_rollups_quarantine_and_late_updates(
    spark, pg_cluster, tmp_path
):
    from tests.conftest import make_warehouse

    wh = make_warehouse(pg_cluster)
    landing, lake = tmp_path / "landing", f"file://{tmp_path}/lake"
    syms = ("BTCUSDT", "ETHUSDT")
    missing = START_MS + HOUR + 7 * MINUTE_MS  # BTC's minute 01:07 never arrives
    uris = write_minutes(
        landing,
        syms,
        START_MS,
        START_MS + 3 * HOUR,
        10 * MINUTE_MS,
        skip=lambda s, t: s == "BTCUSDT" and t == missing,
    )
    # First run: the first 90 minutes (hour 01 is half there); second run: the rest, incremental.
    r1 = job.run(spark, uris[:9], "syn-1", dsn=wh.writer_dsn, lake_uri=lake, symbols=syms)
    assert r1.counts["rollup_hours"] == 4 and r1.counts["rollup_incomplete_hours"] == 2
    # An empty warehouse: the first run takes the no-join path for both intervals, the next one
    # (same day, rollups stored) resolves against what is stored; the results below hold for both.
    assert r1.counts["intervals_with_nothing_stored"] == ["1h", "1m"]
    bad_t = START_MS + 5 * HOUR
    bad = _bad_rows(bad_t)
    equal_dup = minute_row("BTCUSDT", bad_t)
    bad_uri = _write(landing, "1m", bad_t, [equal_dup, equal_dup] + [r for r, _ in bad])
    r2 = job.run(
        spark, uris[9:] + [bad_uri], "syn-2", dsn=wh.writer_dsn, lake_uri=lake, symbols=syms
    )
    assert r2.counts["collapsed_duplicates"] == 1
    assert r2.counts["intervals_with_nothing_stored"] == []
    assert r2.counts["quarantined_by_reason"] == dict(Counter(reason for _, reason in bad))

    with psycopg.connect(wh.reader_dsn) as conn:
        hours = conn.execute(
            "SELECT symbol, extract(hour from open_time)::int, minute_count, is_complete, source"
            " FROM market.candles WHERE interval = '1h' AND open_time < %s::timestamptz + interval '3 hours'"
            " ORDER BY 1, 2",
            (ts_text(START_MS),),
        ).fetchall()
        btc1 = conn.execute(
            "SELECT open, high, low, close, base_volume, trades FROM market.candles"
            " WHERE symbol = 'BTCUSDT' AND interval = '1h' AND open_time = %s",
            (ts_text(START_MS),),
        ).fetchone()
        mins = conn.execute(
            "SELECT min(low), max(high), sum(base_volume), sum(trades) FROM market.candles"
            " WHERE symbol = 'BTCUSDT' AND interval = '1m' AND open_time >= %s AND open_time < %s",
            (ts_text(START_MS), ts_text(START_MS + HOUR)),
        ).fetchone()
        reasons = dict(
            conn.execute(
                "SELECT reason, count(*) FROM ops.quarantine WHERE run_id = 'syn-2' GROUP BY 1"
            ).fetchall()
        )
    # The hour missing a minute is marked incomplete (59), never passed off as complete; the others
    # were completed by the second run (derived rows replaced).
    assert hours == [
        ("BTCUSDT", 0, 60, True, "rollup:1m"),
        ("BTCUSDT", 1, 59, False, "rollup:1m"),
        ("BTCUSDT", 2, 60, True, "rollup:1m"),
        ("ETHUSDT", 0, 60, True, "rollup:1m"),
        ("ETHUSDT", 1, 60, True, "rollup:1m"),
        ("ETHUSDT", 2, 60, True, "rollup:1m"),
    ]
    first_min = minute_row("BTCUSDT", START_MS)
    assert (btc1[2], btc1[1], btc1[4], btc1[5]) == mins and str(btc1[0]) == first_min[4].rstrip(
        "0"
    ).rstrip(".")
    assert reasons == r2.counts["quarantined_by_reason"]
    # The run's record spans the whole job, validation to lake, not only its commit (Pipeline health's seconds).
    with psycopg.connect(wh.reader_dsn) as conn:
        took, steps, published = conn.execute(
            "SELECT extract(epoch FROM finished_at - started_at)::float8, details->'seconds',"
            " details->'lake_partitions_published' FROM ops.pipeline_runs WHERE run_id = 'syn-2'"
        ).fetchone()
    assert took >= steps["lake_written"] - 0.05 and steps["lake_written"] > steps["validated"] > 0
    # Every partition the run wrote aside was published (none left behind in its own directory).
    assert published == r2.counts["lake_partitions_published"] == r2.counts["lake_partitions"] > 0
    assert not any((tmp_path / "lake" / "_pending").iterdir())

    # Data-quality checks on run 1 (range 00:00-01:29): BTC's 01:07 is a gap nobody explained.
    with psycopg.connect(wh.writer_dsn) as conn:
        assert dq.row_counts(conn, "syn-2") == []
        assert dq.duplicate_keys(conn, "syn-1") == []
        failed = dq.gaps(conn, "syn-1", "1m")
        assert [(f.symbol, f.observed) for f in failed] == [("BTCUSDT", 1)]
        conn.execute(
            "INSERT INTO ops.explained_gaps VALUES ('BTCUSDT', '1m', %s, %s, 'test outage')",
            (ts_text(missing), ts_text(missing + MINUTE_MS)),
        )
        conn.commit()
        assert dq.gaps(conn, "syn-1", "1m") == []
        assert dq.freshness(conn, "syn-1", syms, "1m") == []

    # Run 3: a late update of a closed candle (the stored one stays, the newcomer is quarantined),
    # and Binance's own 1h candles against rollups: ETH 02:00 replaces the stored rollup; BTC
    # 03:00 arrives with some of its minutes, whose rollup is refused (a source candle wins).
    changed = minute_row("ETHUSDT", START_MS)
    changed[7] = changed[4]  # close := open (still a valid candle, but not the one stored)
    late = _write(landing, "1m", START_MS, [changed], START_MS + MINUTE_MS)
    hours_1h = _write(
        landing,
        "1h",
        START_MS,
        [_hour_row("ETHUSDT", START_MS + 2 * HOUR), _hour_row("BTCUSDT", START_MS + 3 * HOUR)],
        START_MS + 4 * HOUR,
    )
    btc3 = write_minutes(
        landing,
        ("BTCUSDT",),
        START_MS + 3 * HOUR,
        START_MS + 3 * HOUR + 10 * MINUTE_MS,
        10 * MINUTE_MS,
    )
    eth_first = "SELECT close FROM market.candles WHERE symbol = 'ETHUSDT' AND interval = '1m' AND open_time = %s"
    with psycopg.connect(wh.reader_dsn) as conn:
        before = conn.execute(eth_first, (ts_text(START_MS),)).fetchone()
    r3 = job.run(
        spark, [late, hours_1h] + btc3, "syn-3", dsn=wh.writer_dsn, lake_uri=lake, symbols=syms
    )
    assert r3.counts["merge"] == {
        "staged": 13,
        "inserted": 11,
        "updated": 1,
        "unchanged": 0,
        "conflicts": 1,
        "kept_source": 0,
    }
    assert r3.counts["merge_rollups"] == {
        "staged": 2,
        "inserted": 0,
        "updated": 0,
        "unchanged": 1,
        "conflicts": 0,
        "kept_source": 1,
    }
    with psycopg.connect(wh.reader_dsn) as conn:
        assert conn.execute(eth_first, (ts_text(START_MS),)).fetchone() == before
        assert conn.execute(
            "SELECT reason FROM ops.quarantine WHERE run_id = 'syn-3'"
        ).fetchall() == [("late_update_conflict",)]
        got = conn.execute(
            "SELECT symbol, minute_count, source, close FROM market.candles WHERE interval = '1h'"
            " AND (symbol, open_time) IN (('BTCUSDT', %s), ('ETHUSDT', %s)) ORDER BY 1",
            (ts_text(START_MS + 3 * HOUR), ts_text(START_MS + 2 * HOUR)),
        ).fetchall()
        metric = conn.execute(
            "SELECT close, is_complete FROM market.hourly_metrics WHERE symbol = 'BTCUSDT'"
            " AND open_time = %s",
            (ts_text(START_MS + 3 * HOUR),),
        ).fetchone()
    assert [(g[0], g[1], g[2]) for g in got] == [
        ("BTCUSDT", None, "synthetic"),
        ("ETHUSDT", None, "synthetic"),
    ]
    # The analytics and the lake follow what the merge kept: Binance's hour, not the rollup.
    assert metric == (got[0][3], True)
    lake_btc3 = (
        spark.read.parquet(lake + "/candles_by_day")
        .where(
            "symbol = 'BTCUSDT' AND interval = '1h' AND open_time = timestamp'2024-01-01 03:00:00'"
        )
        .collect()
    )
    assert [(r["minute_count"], r["source"]) for r in lake_btc3] == [(None, "synthetic")]

    # Run 4 brings one BTC minute only. The lake's partition is the whole (interval, day), every
    # coin in one file sorted by symbol and time: ETH's rows of the day must survive the rewrite,
    # and the lake must equal the warehouse.
    r4 = job.run(
        spark,
        write_minutes(
            landing,
            ("BTCUSDT",),
            START_MS + 3 * HOUR + 10 * MINUTE_MS,
            START_MS + 3 * HOUR + 11 * MINUTE_MS,
            MINUTE_MS,
        ),
        "syn-4",
        dsn=wh.writer_dsn,
        lake_uri=lake,
        symbols=syms,
    )
    assert r4.counts["kept"] == 1 and r4.counts["lake_partitions"] == 2  # (1m, day) and (1h, day)
    with psycopg.connect(wh.reader_dsn) as conn:
        stored = conn.execute(
            "SELECT symbol, interval, (extract(epoch FROM open_time) * 1000)::bigint, close, source"
            " FROM market.candles ORDER BY 1, 2, 3"
        ).fetchall()
    from pyspark.sql import functions as F

    lake_df = spark.read.parquet(lake + "/candles_by_day")
    in_lake = sorted(
        tuple(r)
        for r in lake_df.select(
            "symbol", "interval", F.unix_millis("open_time"), "close", "source"
        ).collect()
    )
    assert in_lake == [tuple(r) for r in stored]
    root = tmp_path / "lake" / "candles_by_day"
    files = sorted(str(f.relative_to(root)) for f in root.rglob("*.parquet"))
    assert [f.rsplit("/", 1)[0] for f in files] == [
        "interval=1h/date=2024-01-01",
        "interval=1m/date=2024-01-01",
    ]
    one_file = spark.read.parquet(str(root / files[1])).collect()
    assert [(r["symbol"], r["open_time"]) for r in one_file] == sorted(
        (r["symbol"], r["open_time"]) for r in one_file
    )
    assert {r["symbol"] for r in one_file} == set(syms)


def _hour_row(symbol, t):
    """A valid SYNTHETIC 1h candle as Binance would deliver it (no minute_count: a source candle)."""
    r = minute_row(symbol, t)
    r[1], r[3] = "1h", str(t + HOUR - 1)
    r[4] = r[7]  # open := close (high/low still hold it): values no rollup of the minutes has
    return r


def test_killed_load_leaves_nothing_and_the_rerun_succeeds(spark, pg_cluster, tmp_path):
    from tests.conftest import make_warehouse
    from cryptoflow.etl import plan

    wh = make_warehouse(pg_cluster)
    landing, lake = tmp_path / "landing", f"file://{tmp_path}/lake"
    syms = ("BTCUSDT", "ETHUSDT")
    uris = write_minutes(landing, syms, START_MS, START_MS + HOUR, 10 * MINUTE_MS)
    bad = _write(
        landing, "1m", START_MS + 2 * HOUR, [r for r, _ in _bad_rows(START_MS + 2 * HOUR)][:3]
    )
    manifest = plan.write_manifest(f"file://{landing}", "kill-1", uris + [bad])
    env = {
        **os.environ,
        "CRYPTOFLOW_WAREHOUSE_DSN": wh.writer_dsn,
        "CRYPTOFLOW_LAKE_URI": lake,
        "CRYPTOFLOW_SYMBOLS": ",".join(syms),
        "CRYPTOFLOW_SPARK_MASTER": "local[1]",
        "CRYPTOFLOW_SPARK_DRIVER_MEMORY": "1g",
    }
    # Killed (SIGKILL, no cleanup) after the quarantine and the 1m merge ran inside the transaction.
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent / "etl_killed_after_first_merge.py"),
            "--manifest",
            manifest,
            "--run-id",
            "kill-1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        start_new_session=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    with psycopg.connect(wh.reader_dsn) as conn:
        for table in (
            "market.candles",
            "ops.quarantine",
            "market.hourly_metrics",
            "market.volume_profile",
        ):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
        assert conn.execute(
            "SELECT status FROM ops.pipeline_runs WHERE run_id = 'kill-1'"
        ).fetchone() == ("running",)
    staging = "SELECT tablename FROM pg_tables WHERE schemaname = 'staging' AND tablename LIKE %s"
    with psycopg.connect(wh.reader_dsn) as conn:
        left = conn.execute(staging, (io.staging_name("kill-1", "") + "%",)).fetchall()
    assert len(left) == 6  # candles, rollups, quarantine, and the three analytics tables
    # Its lake partitions were written aside and never published: the lake holds nothing of it.
    pending = tmp_path / "lake" / "_pending" / io.staging_key("kill-1")
    assert any(pending.glob("candles_by_day/interval=1m/date=*/*.parquet"))
    assert not (tmp_path / "lake" / "candles_by_day").exists()
    # Another run (say the next 10 minutes) finds them orphaned (nobody holds their lock) and drops them.
    other = job.run(spark, uris[:1], "other-1", dsn=wh.writer_dsn, lake_uri=lake, symbols=syms)
    assert other.counts["orphaned_staging_dropped"] == len(left)
    assert other.counts["orphaned_lake_dropped"] == 1 and not pending.exists()
    assert not (
        tmp_path / "lake" / "_pending" / io.staging_key("other-1")
    ).exists()  # published, then removed
    # The rerun (same run id) loads everything once.
    r = job.run(
        spark,
        plan.read_manifest(manifest),
        "kill-1",
        dsn=wh.writer_dsn,
        lake_uri=lake,
        symbols=syms,
    )
    assert r.counts["merge"]["inserted"] == 2 * 50 and r.counts["merge"]["unchanged"] == 2 * 10
    assert r.counts["quarantined"] == 3
    with psycopg.connect(wh.reader_dsn) as conn:
        assert (
            conn.execute("SELECT count(*) FROM market.candles WHERE interval = '1m'").fetchone()[0]
            == 120
        )
        assert conn.execute("SELECT count(*) FROM ops.quarantine").fetchone()[0] == 3
        assert conn.execute(
            "SELECT status FROM ops.pipeline_runs WHERE run_id = 'kill-1'"
        ).fetchone() == ("success",)
        assert (
            conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'").fetchone()[
                0
            ]
            == 0
        )
    lake_1m = spark.read.parquet(f"{lake}/candles_by_day").where("interval = '1m'")
    assert lake_1m.count() == lake_1m.select("symbol", "open_time").distinct().count() == 120
