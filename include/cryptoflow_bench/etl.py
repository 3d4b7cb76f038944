"""Spark ETL benchmarks (functions returning flat dicts of figures; the lead registers them).

- `bench_etl_load`: end-to-end rows/s of the ETL for 1M one-minute candles (landing files ->
  validated -> staged -> merged into market.candles, 1h rollups, analytics, lake), beside a plain
  psycopg COPY of the same rows into the same table (the ceiling; target: at least a third).
- `bench_etl_incremental`: the cost of one 10-minute run (10 symbols x 10 minutes) as the
  warehouse's history grows from 1 to 12 months (target: flat).

The candles are SYNTHETIC (a deterministic random walk, valid by construction): the shared data
is hourly, and these figures are about one-minute volumes.
"""

from __future__ import annotations

import csv
import os
import tempfile
import time
from pathlib import Path
from typing import cast

from cryptoflow.candles import LANDING_COLUMNS
from cryptoflow.landing import snapshot_relpath
from cryptoflow import settings
from cryptoflow.settings import DEFAULT_SYMBOLS
from cryptoflow.times import datetime_from_ms, utc_ms

MINUTE_MS = 60_000
DAY_MS = 86_400_000
START_MS = utc_ms(2024, 1, 1)


def minute_row(symbol: str, t: int, source: str = "synthetic") -> list[str]:
    """One valid synthetic 1m candle in landing-column order (deterministic in symbol and time)."""
    i = t // MINUTE_MS
    base = 100 + 37 * (sum(map(ord, symbol)) % 50)
    # A bounded wiggle from integer hashing: deterministic and cheap, not a market model.
    wiggle = ((i * 2654435761 + len(symbol) * 97) % 2000 - 1000) / 10_000
    o = base * (1 + wiggle / 10)
    c = o * (1 + ((i * 40503) % 200 - 100) / 100_000)
    h, lo = max(o, c) * 1.0005, min(o, c) * 0.9995
    v = 10 + (i * 7) % 90
    return [
        symbol,
        "1m",
        str(t),
        str(t + MINUTE_MS - 1),
        f"{o:.8f}",
        f"{h:.8f}",
        f"{lo:.8f}",
        f"{c:.8f}",
        f"{v:.8f}",
        f"{v * o:.8f}",
        f"{v / 2:.8f}",
        f"{v * o / 2:.8f}",
        str(100 + i % 900),
        source,
    ]


def write_minutes(
    landing_dir: Path,
    symbols,
    start_ms: int,
    end_ms: int,
    window_ms: int,
    skip=lambda symbol, t: False,
) -> list[str]:
    """Land synthetic minutes of [start_ms, end_ms) as snapshot files of `window_ms`; returns their URIs."""
    uris = []
    for w in range(start_ms, end_ms, window_ms):
        rows = [
            minute_row(s, t)
            for s in sorted(symbols)
            for t in range(w, min(w + window_ms, end_ms), MINUTE_MS)
            if not skip(s, t)
        ]
        path = landing_dir / snapshot_relpath("1m", w, w + window_ms)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            out = csv.writer(f, lineterminator="\n")
            out.writerow(LANDING_COLUMNS)
            out.writerows(rows)
        uris.append(f"file://{path}")
    return uris


def _copy_rows(conn, rows) -> None:
    with conn.cursor().copy(
        "COPY market.candles (symbol, interval, open_time, close_time, open, high, low, close, base_volume,"
        " quote_volume, taker_buy_base_volume, taker_buy_quote_volume, trades, source) FROM STDIN"
    ) as copy:
        for r in rows:
            copy.write_row(
                (
                    r[0],
                    r[1],
                    datetime_from_ms(int(r[2])),
                    datetime_from_ms(int(r[3])),
                    *r[4:12],
                    int(r[12]),
                    r[13],
                )
            )


class _Env:
    """A throwaway PostgreSQL (migrated, writer role) + landing/lake dirs + a local[2] SparkSession."""

    def __enter__(self):
        from cryptoflow_stack.postgres import LocalPostgres, free_port
        from cryptoflow.warehouse.migrate import migrate

        self.tmp = tempfile.TemporaryDirectory(prefix="cf-bench-etl-")
        root = Path(self.tmp.name)
        self.pg = LocalPostgres(
            root / "pg", free_port(), superuser_password="bench", throwaway=True
        )
        self.pg.init()
        self.pg.start()
        self.pg.ensure_login_role("cf_writer", "bench-writer")
        self.pg.ensure_login_role("cf_reader", "bench-reader")
        self.pg.ensure_database("bench")
        migrate(self.pg.dsn("bench"))
        self.dsn = self.pg.dsn("bench", "cf_writer", "bench-writer")
        self.landing = root / "landing"
        self.lake_uri = f"file://{root}/lake"
        from cryptoflow.spark import local_session

        t0 = time.perf_counter()
        self.spark = local_session(
            "cryptoflow-bench-etl", master=settings.load().bench_spark_master
        )
        self.spark_start_seconds = time.perf_counter() - t0
        return self

    def __exit__(self, *exc):
        try:
            self.spark.stop()
        finally:
            self.pg.destroy()
            self.tmp.cleanup()


def bench_etl_load(n: int | None = None) -> dict:
    """ETL rows/s for n one-minute candles vs the COPY ceiling on the same machine and table."""
    n = settings.load().bench_rows if n is None else n
    from cryptoflow.etl import job

    load_before = round(
        os.getloadavg()[0], 1
    )  # 2 cores shared with other work: say how busy they were
    symbols = DEFAULT_SYMBOLS
    minutes = -(-n // len(symbols))
    end = START_MS + minutes * MINUTE_MS
    with _Env() as env:
        # A backfill lands day files (the live path's 10-minute files are the incremental bench).
        uris = write_minutes(env.landing, symbols, START_MS, end, DAY_MS)
        ceiling_s = _copy_ceiling_seconds(env, symbols, end)
        t0 = time.perf_counter()
        result = job.run(
            env.spark, uris, "bench-load", dsn=env.dsn, lake_uri=env.lake_uri, symbols=symbols
        )
        etl_s = time.perf_counter() - t0
        stored = _stored_minutes(env.dsn)
        ceiling = len(symbols) * minutes / ceiling_s
        return _load_figures(env, result, stored, len(uris), etl_s, ceiling_s, ceiling, load_before)


def _copy_ceiling_seconds(env: _Env, symbols, end: int) -> float:
    """Seconds of a plain COPY of the same minutes (the ceiling), in its own database so both start
    from an empty table; the rows are built and the database made before the clock starts."""
    import psycopg

    from cryptoflow.warehouse.migrate import migrate

    rows = [minute_row(s, t) for s in symbols for t in range(START_MS, end, MINUTE_MS)]
    env.pg.ensure_database("ceiling")
    migrate(env.pg.dsn("ceiling"))
    with psycopg.connect(env.pg.dsn("ceiling")) as conn:
        t0 = time.perf_counter()
        _copy_rows(conn, rows)
        conn.commit()
        return time.perf_counter() - t0


def _stored_minutes(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return cast(
            tuple,
            conn.execute("SELECT count(*) FROM market.candles WHERE interval = '1m'").fetchone(),
        )[0]


def _load_figures(
    env: _Env,
    result,
    stored: int,
    snapshots: int,
    etl_s: float,
    ceiling_s: float,
    ceiling: float,
    load_before: float,
) -> dict:
    """bench_etl_load's figures: the ETL's rows/s against the COPY ceiling's (`ceiling`)."""
    loaded = result.counts["merge"]["inserted"]
    etl = loaded / etl_s
    return {
        "rows": loaded,
        "rows_stored": stored,
        "snapshots": snapshots,
        "etl_seconds": round(etl_s, 2),
        "etl_rows_per_second": round(etl),
        "copy_ceiling_seconds": round(ceiling_s, 2),
        "copy_ceiling_rows_per_second": round(ceiling),
        "etl_vs_ceiling": round(etl / ceiling, 3),
        "etl_vs_ceiling_target": 0.333,
        "etl_vs_ceiling_met": etl / ceiling >= 1 / 3,
        "etl_with_spark_start_rows_per_second": round(loaded / (etl_s + env.spark_start_seconds)),
        "spark_start_seconds": round(env.spark_start_seconds, 2),
        "rollup_hours": result.counts["rollup_hours"],
        "lake_partitions": result.counts["lake_partitions"],
        "spark_jobs": result.counts["spark_jobs"],
        "phases_seconds": result.seconds,
        "load_average_1m_before": load_before,
        "load_average_1m_after": round(os.getloadavg()[0], 1),
    }


# History seeded in SQL (the brief allows seeding without Spark: only the incremental run is
# timed): valid synthetic minutes, their complete hourly rollups and hourly metrics rows, so the
# tables and indexes a run touches have the size that 1..12 months of history gives them.
_SEED_MINUTES = """
INSERT INTO market.candles (symbol, interval, open_time, close_time, open, high, low, close, base_volume,
                            quote_volume, taker_buy_base_volume, taker_buy_quote_volume, trades, source)
SELECT s, '1m', t, t + interval '59.999 seconds', o, o * 1.001, o * 0.999, o * 1.0002, 10, 10 * o, 5, 5 * o, 100,
       'synthetic'
FROM unnest(%(symbols)s::text[]) s,
     generate_series(%(lo)s::timestamptz, %(hi)s::timestamptz - interval '1 minute', interval '1 minute') t,
     LATERAL (SELECT (100 + (extract(epoch FROM t)::bigint / 60 * 7919 %% 1000) / 100.0)::numeric AS o) v
"""
_SEED_HOURS = """
INSERT INTO market.candles (symbol, interval, open_time, close_time, open, high, low, close, base_volume,
                            quote_volume, taker_buy_base_volume, taker_buy_quote_volume, trades, minute_count,
                            is_complete, source)
SELECT symbol, '1h', date_trunc('hour', open_time), date_trunc('hour', open_time) + interval '59 minutes 59.999 seconds',
       (array_agg(open ORDER BY open_time))[1], max(high), min(low), (array_agg(close ORDER BY open_time DESC))[1],
       sum(base_volume), sum(quote_volume), sum(taker_buy_base_volume), sum(taker_buy_quote_volume), sum(trades),
       count(*), count(*) = 60, 'rollup:1m'
FROM market.candles WHERE interval = '1m' AND open_time >= %(lo)s AND open_time < %(hi)s
GROUP BY symbol, date_trunc('hour', open_time)
"""
_SEED_METRICS = """
INSERT INTO market.hourly_metrics (symbol, open_time, close, quote_volume, is_complete)
SELECT symbol, open_time, close, quote_volume, is_complete FROM market.candles
WHERE interval = '1h' AND open_time >= %(lo)s AND open_time < %(hi)s
"""


def seed_history(dsn: str, symbols, lo_ms: int, hi_ms: int) -> None:
    """Synthetic 1m history of [lo_ms, hi_ms) with its rollups and metrics rows, a day per statement."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        for day in range(lo_ms, hi_ms, DAY_MS):
            args = {
                "symbols": list(symbols),
                "lo": datetime_from_ms(day),
                "hi": datetime_from_ms(min(day + DAY_MS, hi_ms)),
            }
            for statement in (_SEED_MINUTES, _SEED_HOURS, _SEED_METRICS):
                conn.execute(statement, args)
            conn.commit()
        conn.execute("ANALYZE market.candles")
        conn.execute("ANALYZE market.hourly_metrics")
        conn.commit()


def bench_etl_incremental(
    months=(1, 3, 6, 12), symbols=DEFAULT_SYMBOLS, runs: int | None = None
) -> dict:
    """Median seconds of one 10-minute ETL run after 1..12 months of 1m history (target: flat).

    The history is written into the warehouse directly in SQL (seed_history), not through the
    ETL: only the incremental run is timed, through the real job. (The lake holds only what the
    timed runs wrote; its partitions are rewritten by name, never listed, so its history does not
    enter a run's cost.) A warm-up run first, so the JVM's first compilations are not billed to
    the 1-month figure.
    """
    from cryptoflow.etl import job

    runs = settings.load().bench_runs if runs is None else runs
    figures: dict = {"load_average_1m_before": round(os.getloadavg()[0], 1)}
    with _Env() as env:
        filled_to = START_MS
        warm = True
        for m in months:
            hist_end = START_MS + m * 30 * DAY_MS
            t0 = time.perf_counter()
            seed_history(env.dsn, symbols, filled_to, hist_end)
            figures[f"seed_seconds_{m}m"] = round(time.perf_counter() - t0, 1)
            times, jobs = [], []
            for k in range(runs + (1 if warm else 0)):
                w = hist_end + k * 10 * MINUTE_MS
                uris = write_minutes(env.landing, symbols, w, w + 10 * MINUTE_MS, 10 * MINUTE_MS)
                t0 = time.perf_counter()
                r = job.run(
                    env.spark,
                    uris,
                    f"bench-inc-{m}-{k}",
                    dsn=env.dsn,
                    lake_uri=env.lake_uri,
                    symbols=symbols,
                )
                if warm and k == 0:
                    continue
                times.append(time.perf_counter() - t0)
                jobs.append(r.counts["spark_jobs"])
            warm = False
            # The next seed starts at the next whole hour after the timed windows (a rollup is per hour).
            filled_to = hist_end + (runs + 1) * 10 * MINUTE_MS
            filled_to += -filled_to % (60 * MINUTE_MS)
            times.sort()
            figures[f"run_seconds_{m}m_history"] = round(times[len(times) // 2], 2)
            figures[f"run_seconds_all_{m}m"] = [round(t, 2) for t in times]
            figures[f"history_1m_rows_{m}m"] = len(symbols) * (hist_end - START_MS) // MINUTE_MS
            figures[f"spark_jobs_{m}m"] = max(jobs)
        first, last = (
            figures[f"run_seconds_{months[0]}m_history"],
            figures[f"run_seconds_{months[-1]}m_history"],
        )
        figures["growth_12m_vs_1m"] = round(last / first, 2)
        figures["growth_target"] = "<= 1.5 (flat)"
        figures["growth_met"] = last / first <= 1.5
        figures["load_average_1m_after"] = round(os.getloadavg()[0], 1)
    return figures


__all__ = ["bench_etl_load", "bench_etl_incremental", "seed_history", "minute_row", "write_minutes"]
