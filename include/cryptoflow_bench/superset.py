"""Every dashboard chart's query on a year of one-minute candles for ten coins (target: under 1 s).

A throwaway cluster is filled in SQL with what a year of the pipeline leaves behind: 5.26M 1m
candles (a deterministic synthetic walk, not real prices) ending now, their 1h rollups, the hourly
metrics and 30-day return correlations computed from them (the ETL's definitions, written in SQL),
a live forecast per coin and hour with weekly model versions, and the ops tables at the rate the
DAGs write them (a run every 10 minutes with its DQ checks, quarantine, healed gaps).

Then a real Superset (the local stack's own init/start) imports the bundle and every chart's stored
query context is run through GET /api/v1/chart/<id>/data/?force=true (no cache), `repeats` times:
that is the time a dashboard waits for the chart's data. The SQL Superset generates for it is also
timed alone, straight on PostgreSQL as cf_reader.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import cast

from cryptoflow.settings import DEFAULT_SYMBOLS

log = logging.getLogger(__name__)

TARGET_MS = 1000
SYMBOLS = DEFAULT_SYMBOLS  # the platform's ten coins

FILL = [
    # 1m candles: one year per coin up to the current minute.
    """
INSERT INTO market.candles (symbol, interval, open_time, close_time, open, high, low, close, base_volume,
                            quote_volume, taker_buy_base_volume, taker_buy_quote_volume, trades, source)
SELECT %(symbol)s, '1m', t, t + interval '59.999 seconds', o, greatest(o, c) * (1.0002 + 0.0002 * sin(m * 1.3)),
       least(o, c) * (0.9998 - 0.0002 * cos(m * 1.7)), c, v, v * o, v / 2, v * o / 2, 100, 'bench'
FROM generate_series(0, %(minutes)s - 1) AS m
CROSS JOIN LATERAL (SELECT date_trunc('minute', now()) - %(minutes)s * interval '1 minute' + m * interval '1 minute' AS t) tt
CROSS JOIN LATERAL (SELECT (%(base)s * (1 + 0.2 * sin(m / 20000.0 + %(k)s) + 0.01 * sin(m / 97.0 + %(k)s * 3)))::numeric(20, 8) AS o,
                           (%(base)s * (1 + 0.2 * sin((m + 1) / 20000.0 + %(k)s) + 0.01 * sin((m + 1) / 97.0 + %(k)s * 3)))::numeric(20, 8) AS c,
                           (1 + abs(sin(m / 300.0 + %(k)s)) * 10)::numeric(20, 8) AS v) p
""",
]

ROLLUP = """
INSERT INTO market.candles (symbol, interval, open_time, close_time, open, high, low, close, base_volume,
                            quote_volume, taker_buy_base_volume, taker_buy_quote_volume, trades, minute_count,
                            is_complete, source)
SELECT symbol, '1h', h, h + interval '59 minutes 59.999 seconds', (array_agg(open ORDER BY open_time))[1], max(high),
       min(low), (array_agg(close ORDER BY open_time DESC))[1], sum(base_volume), sum(quote_volume),
       sum(taker_buy_base_volume), sum(taker_buy_quote_volume), sum(trades), count(*), count(*) = 60, 'rollup'
FROM (SELECT *, date_trunc('hour', open_time) AS h FROM market.candles WHERE interval = '1m' AND symbol = %(symbol)s) m
GROUP BY symbol, h
"""

METRICS = """
INSERT INTO market.hourly_metrics
SELECT symbol, open_time, close, return_pct, log_return,
       stddev_samp(log_return) OVER (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN interval '23 hours' PRECEDING AND CURRENT ROW),
       avg(close) OVER (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN interval '23 hours' PRECEDING AND CURRENT ROW),
       avg(close) OVER (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN interval '167 hours' PRECEDING AND CURRENT ROW),
       quote_volume, is_complete
FROM (SELECT symbol, open_time, close, quote_volume, is_complete,
             (close / lag(close) OVER w - 1) * 100 AS return_pct, ln(close / lag(close) OVER w) AS log_return
      FROM market.candles WHERE interval = '1h' WINDOW w AS (PARTITION BY symbol ORDER BY open_time)) r
"""

# Pearson correlation over the 30 days ending each day, from daily sums (as the ETL does).
CORRELATION = """
WITH r AS (SELECT symbol, open_time, log_return FROM market.hourly_metrics WHERE log_return IS NOT NULL),
daily AS (
    SELECT a.symbol AS sa, b.symbol AS sb, (a.open_time AT TIME ZONE 'UTC')::date AS day, count(*) AS n,
           sum(a.log_return) AS sx, sum(b.log_return) AS sy, sum(a.log_return * b.log_return) AS sxy,
           sum(a.log_return ^ 2) AS sxx, sum(b.log_return ^ 2) AS syy
    FROM r a JOIN r b ON a.open_time = b.open_time AND a.symbol < b.symbol
    GROUP BY 1, 2, 3
),
win AS (
    SELECT sa, sb, day, sum(n) OVER w AS n, sum(sx) OVER w AS sx, sum(sy) OVER w AS sy, sum(sxy) OVER w AS sxy,
           sum(sxx) OVER w AS sxx, sum(syy) OVER w AS syy
    FROM daily WINDOW w AS (PARTITION BY sa, sb ORDER BY day ROWS 29 PRECEDING)
)
INSERT INTO market.return_correlation
SELECT day, sa, sb, 30,
       (n * sxy - sx * sy) / nullif(sqrt(greatest(n * sxx - sx ^ 2, 0)) * sqrt(greatest(n * syy - sy ^ 2, 0)), 0), n
FROM win
"""

FORECASTS = [
    """
INSERT INTO forecast.model_versions (version, symbol, architecture, artifact_uri, trained_at, metrics,
                                     baseline_metrics, status, promoted_at)
SELECT 'lstm-' || lower(symbol) || '-' || to_char(w, 'YYYYMMDD'), symbol, 'lstm', 'file:///bench/' || symbol, w,
       '{"rmse": 1.0}', '{"persistence": {"rmse": 1.1}}', 'promoted', w
FROM unnest(%(symbols)s::text[]) symbol
CROSS JOIN generate_series(date_trunc('week', now() - interval '366 days'), now(), interval '1 week') w
""",
    """
INSERT INTO forecast.predictions (symbol, interval, target_open_time, kind, model_version, predicted_close,
                                  lower_close, upper_close, persistence_close, actual_close, scored_at)
SELECT symbol, '1h', open_time, 'live', 'lstm-' || lower(symbol) || '-' || to_char(date_trunc('week', open_time), 'YYYYMMDD'),
       prev * (1 + 0.002 * sin(extract(epoch FROM open_time) / 7200)), prev * 0.99, prev * 1.01, prev, close, open_time
FROM (SELECT symbol, open_time, close, lag(close) OVER (PARTITION BY symbol ORDER BY open_time) AS prev
      FROM market.candles WHERE interval = '1h') c
WHERE prev IS NOT NULL
""",
]

OPS = [
    # A binance_ingest and a spark_etl run every 10 minutes, forecast_hourly per coin every hour.
    """
INSERT INTO ops.pipeline_runs (run_id, pipeline, task, started_at, finished_at, status, rows_in, rows_out, rows_quarantined)
SELECT to_char(t, 'YYYY-MM-DD"T"HH24:MI'), p.pipeline, p.task, t + interval '20 seconds', t + interval '80 seconds',
       CASE WHEN extract(minute FROM t) = 0 AND extract(hour FROM t) = 3 THEN 'failed' ELSE 'success' END, 100, 100, 0
FROM generate_series(now() - interval '365 days', now(), interval '10 minutes') t
CROSS JOIN (VALUES ('binance_ingest', 'seal'), ('spark_etl', 'load')) p(pipeline, task)
""",
    """
INSERT INTO ops.pipeline_runs (run_id, pipeline, task, started_at, finished_at, status, rows_in, rows_out)
SELECT to_char(t, 'YYYY-MM-DD"T"HH24'), 'forecast_hourly', symbol, t, t + interval '30 seconds', 'success', 1, 1
FROM generate_series(now() - interval '365 days', now(), interval '1 hour') t, unnest(%(symbols)s::text[]) symbol
""",
    """
INSERT INTO ops.data_quality_results (run_id, pipeline, check_name, symbol, passed, observed, expected, checked_at)
SELECT to_char(t, 'YYYY-MM-DD"T"HH24:MI'), 'spark_etl', c.check_name, s.symbol, true, '0', '0', t
FROM generate_series(now() - interval '365 days', now(), interval '10 minutes') t
CROSS JOIN (VALUES ('freshness_1m'), ('gaps_1m')) c(check_name)
CROSS JOIN unnest(%(symbols)s::text[]) s(symbol)
""",
    """
INSERT INTO ops.quarantine (source, reason, detail, raw_record, symbol, interval, open_time, run_id, quarantined_at)
SELECT (ARRAY['websocket', 'rest', 'spark_etl'])[1 + i %% 3],
       (ARRAY['high_below_low', 'negative_volume', 'not_closed', 'conflicting_duplicate', 'unknown_symbol'])[1 + i %% 5],
       'bench', '{"raw": ' || i || '}', (%(symbols)s::text[])[1 + i %% 10], '1m', now() - i * interval '2 minutes', 'bench',
       now() - i * interval '2 minutes'
FROM generate_series(1, 200000) i
""",
    """
INSERT INTO ops.healed_gaps (symbol, interval, open_time, run_id, healed_at)
SELECT (%(symbols)s::text[])[1 + i %% 10], '1m', date_trunc('minute', now()) - i * interval '23 minutes', 'bench',
       now() - i * interval '23 minutes'
FROM generate_series(1, 20000) i
""",
]


def fill(admin_dsn: str, minutes: int = 525_600) -> dict:
    import psycopg

    seconds: dict[str, float] = {}
    with psycopg.connect(admin_dsn, autocommit=True) as conn:

        def step(name, sql, params=None):
            t0 = time.perf_counter()
            conn.execute(sql, params or {})
            seconds[name] = seconds.get(name, 0) + time.perf_counter() - t0

        for k, symbol in enumerate(SYMBOLS):
            step(
                "minutes",
                FILL[0],
                {"symbol": symbol, "base": 10.0 ** (k % 5), "k": k, "minutes": minutes},
            )
            step("rollup", ROLLUP, {"symbol": symbol})
            log.info("  %s: a year of 1m candles and their 1h rollups", symbol)
        step("metrics", METRICS)
        step("correlation", CORRELATION)
        for sql in FORECASTS:
            step("forecasts", sql, {"symbols": list(SYMBOLS)})
        for sql in OPS:
            step("ops", sql, {"symbols": list(SYMBOLS)})
        step("analyze", "VACUUM ANALYZE")
        counts = {
            t: cast(tuple, conn.execute(f"SELECT count(*) FROM {t}").fetchone())[0]
            for t in (
                "market.candles",
                "market.hourly_metrics",
                "market.return_correlation",
                "forecast.predictions",
                "ops.pipeline_runs",
                "ops.data_quality_results",
                "ops.quarantine",
                "ops.healed_gaps",
            )
        }
        minutes = cast(
            tuple,
            conn.execute("SELECT count(*) FROM market.candles WHERE interval = '1m'").fetchone(),
        )[0]
    return {
        "minute_candles": minutes,
        **{f"rows_{t.split('.')[1]}": n for t, n in counts.items()},
        **{f"fill_{k}_s": round(v, 1) for k, v in seconds.items()},
    }


def _ms(samples: list[float]) -> tuple[float, float]:
    return round(max(samples) * 1000, 1), round(statistics.median(samples) * 1000, 1)


def time_charts(api, base: str, reader_dsn: str, repeats: int) -> dict:
    import json

    import psycopg

    charts = api.get(
        f"{base}/api/v1/chart/", params={"q": json.dumps({"page_size": 100})}, timeout=60
    ).json()["result"]
    figures: dict = {}
    worst_api = worst_sql = 0.0
    with psycopg.connect(reader_dsn) as conn:
        for chart in sorted(charts, key=lambda c: c["slice_name"]):
            cid, name = chart["id"], chart["slice_name"]
            key = "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")
            while "__" in key:
                key = key.replace("__", "_")
            api_s, rows = [], None
            for _ in range(repeats):
                t0 = time.perf_counter()
                res = api.get(
                    f"{base}/api/v1/chart/{cid}/data/", params={"force": "true"}, timeout=300
                )
                api_s.append(time.perf_counter() - t0)
                if res.status_code != 200:
                    raise RuntimeError(f"chart {name!r}: HTTP {res.status_code} {res.text[:500]}")
                rows = res.json()["result"][0]["rowcount"]
            # The SQL Superset generates for the stored query context, timed alone as cf_reader.
            context = json.loads(
                api.get(f"{base}/api/v1/chart/{cid}", timeout=60).json()["result"]["query_context"]
            )
            context["result_type"] = "query"
            sql = api.post(f"{base}/api/v1/chart/data", json=context, timeout=60).json()["result"][
                0
            ]["query"]
            sql_s = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                conn.execute(sql).fetchall()
                sql_s.append(time.perf_counter() - t0)
            conn.rollback()
            a_max, a_p50 = _ms(api_s)
            s_max, s_p50 = _ms(sql_s)
            figures[f"{key}_rows"] = rows
            figures[f"{key}_api_ms_max"], figures[f"{key}_api_ms_p50"] = a_max, a_p50
            figures[f"{key}_sql_ms_max"], figures[f"{key}_sql_ms_p50"] = s_max, s_p50
            worst_api, worst_sql = max(worst_api, a_max), max(worst_sql, s_max)
    return {
        "charts": len(charts),
        "worst_api_ms": worst_api,
        "worst_api_ms_target": f"< {TARGET_MS}",
        "worst_api_ms_met": worst_api < TARGET_MS,
        "worst_sql_ms": worst_sql,
        **figures,
    }


def bench_superset_queries(repeats: int | None = None) -> dict:
    from cryptoflow import settings as cf_settings
    from cryptoflow_stack import passwords
    from cryptoflow_stack import superset as superset_svc
    from cryptoflow_stack.postgres import LocalPostgres, free_port
    from cryptoflow.superset import importer
    from cryptoflow.warehouse.migrate import migrate

    repeats = cf_settings.load().bench_repeats if repeats is None else repeats
    home = cf_settings.load().home
    with tempfile.TemporaryDirectory(prefix="cf-bench-superset-") as tmp:
        root = Path(tmp)
        pg = LocalPostgres(
            root / "pg", free_port(), superuser_password="bench-admin", throwaway=True
        )
        pg.init()
        pg.start(fsync=False)
        settings = None
        try:
            pg.ensure_login_role("cf_writer", "bench-writer")
            pg.ensure_login_role("cf_reader", "bench-reader")
            pg.ensure_database("cryptoflow")
            migrate(pg.dsn("cryptoflow"))
            t0 = time.perf_counter()
            figures = fill(pg.dsn("cryptoflow"))
            figures["fill_s"] = round(time.perf_counter() - t0, 1)
            log.info("  filled in %s s", figures["fill_s"])
            reader = pg.dsn("cryptoflow", "cf_reader", "bench-reader")
            settings = cf_settings.load(
                {
                    "CRYPTOFLOW_HOME": str(home),
                    "CRYPTOFLOW_STATE_DIR": str(root / "state"),
                    "CRYPTOFLOW_SUPERSET_PORT": str(free_port()),
                    "CRYPTOFLOW_WAREHOUSE_READER_DSN": reader,
                    "CRYPTOFLOW_WAREHOUSE_DSN": pg.dsn("cryptoflow", "cf_writer", "bench-writer"),
                }
            )
            creds, _ = passwords.ensure(settings.credentials_file)
            superset_svc.init(settings, creds)
            superset_svc.start(settings, creds)
            superset_svc.import_dashboards(settings, creds)
            base = superset_svc.url(settings)
            api = importer.session(importer.Target(base, "admin", creds["SUPERSET_ADMIN_PASSWORD"]))
            figures.update(time_charts(api, base, reader, repeats))
            figures["repeats"] = repeats
        finally:
            if settings is not None:
                superset_svc.stop(settings)
            pg.destroy()
    return figures
