"""Operation: how the running local stack keeps producing, watched for a wall-clock period.

`cryptoflow bench --only operate` attaches to the stack the settings describe (CRYPTOFLOW_STATE_DIR
names its state dir; its stack.env and credentials.env are read from there) and samples it every
CRYPTOFLOW_BENCH_OPERATE_SAMPLE_S seconds (default 60) for CRYPTOFLOW_BENCH_OPERATE_MINUTES
(default 120). When no stack runs (airflow-scheduler stopped) it starts one with
`cryptoflow up --demo` and leaves it running.

Every sample records, per configured coin, the newest stored 1m candle (freshness = now - its close,
i.e. now - (max(open_time) + 1 min)), and the RSS of every service of the stack: for each pid file in
<state>/run/ and for the PostgreSQL postmaster, the processes of its session or process group and
their descendants (an Airflow task and the Spark driver it starts count for airflow-scheduler: the
LocalExecutor runs them in the scheduler's session; PostgreSQL backends for postgres).

The figures, at the end:
- freshness_1m_*: percentiles over every (sample, coin) after the warm-up
  (CRYPTOFLOW_BENCH_OPERATE_WARMUP_MINUTES, default 15); the max has a target of 12 minutes;
- snapshot_lag_minutes_*: for each 10-minute window [T, T+10m) ending inside the observation, the
  time from T+10m to the first sample at which every coin's newest 1m candle opens at T+9m or later.
  It is only as fine as the sampling (snapshot_lag_resolution_minutes): the true lag lies within one
  sample interval below the figure;
- forecast hours: the hours H with start <= H and H + 1h <= end (every whole hour inside the
  observation; forecast_hourly runs for H at H), each counting the coins with a live prediction for
  target_open_time = H;
- scored forecasts (both kinds, actual_close filled), holes in the stored 1m series (between each
  coin's first candle and now - 12 min; explained when inside ops.explained_gaps or quarantined),
  quarantined rows, the DAG runs of the period (ended in it, or still running or queued at its end)
  by DAG and state, over Airflow's REST API, and RSS and PSS start/peak/end. The samples go to <state>/bench-operate-samples.jsonl.

The pure parts (percentiles, lags, the forecast tally, grouping a /proc snapshot into services)
are unit-tested in tests/unit/bench/test_operate.py. The figures computed from the samples are in
operate_figures.py, the /proc snapshot and its grouping into services in procmem.py (both
re-exported here); this module holds the live side: attaching to the stack, sampling it, querying
its warehouse and Airflow.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

# Re-exported: the figures are computed in operate_figures.py and the /proc helpers live in
# procmem.py; callers (the unit tests) use them from here.
from cryptoflow_bench.operate_figures import (  # noqa: F401
    FRESHNESS_MAX_TARGET_MIN,
    HOUR,
    MINUTE,
    WINDOW,
    Sample,
    ceil_to,
    dag_run_figures,
    floor_to,
    forecast_hours,
    freshness_figures,
    freshness_minutes,
    lag_figures,
    percentile,
    rss_figures,
    snapshot_lags,
    tally_forecasts,
)
from cryptoflow_bench.procmem import (  # noqa: F401
    Proc,
    group_processes,
    mem_available_kb,
    parse_stat,
    read_proc,
    rss_by_service,
    with_memory,
)

log = logging.getLogger(__name__)

# A minute is a hole once it is older than this: sealed 10 minutes after its window opens, loaded
# a minute or two later.
HOLE_GRACE = timedelta(minutes=12)
POSTGRES = "postgres"
SAMPLES_FILE = "bench-operate-samples.jsonl"


# --- the live stack ------------------------------------------------------------------------------


class Stack:
    """The running local stack as the settings describe it: warehouse, Airflow API, service roots."""

    def __init__(self, settings, creds: dict[str, str]):
        from cryptoflow_stack import stack

        self.settings, self.creds = settings, creds
        self.run_dir = settings.state_dir / "run"
        try:  # where the postmaster's pid file is (the cluster may live outside the state dir, see postgres.py)
            self.pg_data = (
                stack.cluster(settings, creds).data_dir if "CF_ADMIN_PASSWORD" in creds else None
            )
        except Exception:  # no PostgreSQL binaries here (a stack elsewhere): no postgres figures
            self.pg_data = None

    def roots(self) -> dict[str, int]:
        """{service: pid} of what runs now: every pid file of <state>/run, and the postmaster."""
        from cryptoflow_stack import process

        out: dict[str, int] = {}
        if self.pg_data is not None:
            try:
                pid = int((self.pg_data / "postmaster.pid").read_text().split()[0])
                os.kill(pid, 0)
                out[POSTGRES] = pid
            except (OSError, ValueError, IndexError):
                pass
        if self.run_dir.is_dir():
            for f in sorted(self.run_dir.glob("*.pid")):
                service_pid = process.read_pid(self.run_dir, f.stem)
                if service_pid:
                    out[f.stem] = service_pid
        return out

    def connect(self):
        import psycopg

        return psycopg.connect(
            self.settings.warehouse_reader_dsn, autocommit=True, connect_timeout=10
        )

    def api(self):
        from cryptoflow_stack.airflow import AirflowApi

        return AirflowApi(
            f"http://{self.settings.bind_host}:{self.settings.airflow_port}",
            self.creds["AIRFLOW_ADMIN_PASSWORD"],
        )


def attach() -> tuple[Stack, bool]:
    """The stack of the settings in force; started with `cryptoflow up --demo` when it is not running
    (and left running). Returns (stack, whether this call started it)."""
    from cryptoflow import settings as settings_mod
    from cryptoflow_stack import stack

    def load():
        s = settings_mod.load()
        creds = settings_mod.read_credentials(s.credentials_file)
        return settings_mod.with_local_credentials(s, creds), creds

    s, creds = load()
    running = "CF_ADMIN_PASSWORD" in creds and stack.status(s).get(
        "airflow-scheduler", ""
    ).startswith("running")
    started = False
    if not running:
        s.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = s.logs_dir / "bench-operate-up.log"
        log.info(
            "no stack runs in %s (airflow-scheduler stopped): starting `cryptoflow up --demo` "
            "(left running afterwards; output in %s)",
            s.state_dir,
            log_path,
        )
        with open(log_path, "ab") as out:
            res = subprocess.run(
                [str(Path(sys.executable).parent / "cryptoflow"), "up", "--demo"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=s.home,
            )
        if res.returncode != 0:
            raise RuntimeError(
                f"`cryptoflow up --demo` failed (exit {res.returncode}); see {log_path}"
            )
        started = True
        s, creds = load()
    return Stack(s, creds), started


def newest_1m(conn, symbols: Sequence[str]) -> dict[str, datetime | None]:
    """Each coin's newest stored 1m open time (one index probe per coin)."""
    rows = conn.execute(
        "SELECT s, (SELECT max(c.open_time) FROM market.candles c WHERE c.symbol = s AND c.interval = '1m')"
        " FROM unnest(%s::text[]) AS s",
        (list(symbols),),
    ).fetchall()
    return {s: t for s, t in rows}


def take_sample(stack: Stack, conn, symbols: Sequence[str]) -> Sample:
    at = datetime.now(timezone.utc)
    err = None
    try:
        newest = newest_1m(conn, symbols)
    except Exception as exc:  # a sample without the warehouse still has its memory figures
        newest, err = {}, f"{type(exc).__name__}: {exc}"
    roots = stack.roots()
    procs = read_proc()
    groups = group_processes(procs, roots)
    procs = with_memory(procs, {pid for pids in groups.values() for pid in pids})
    rss, pss = rss_by_service(procs, roots)
    return Sample(at, newest, rss, pss, mem_available_kb(), err)


HOLES_SQL = """
WITH c AS (
    SELECT symbol, open_time, lead(open_time) OVER (PARTITION BY symbol ORDER BY open_time) AS nxt
    FROM market.candles
    WHERE interval = '1m' AND symbol = ANY(%(symbols)s) AND open_time < %(cutoff)s
), h AS (
    SELECT symbol, open_time + interval '1 minute' AS lo, coalesce(nxt, %(cutoff)s) AS hi
    FROM c WHERE coalesce(nxt, %(cutoff)s) > open_time + interval '1 minute'
), m AS (
    SELECT h.symbol, t FROM h, generate_series(h.lo, h.hi - interval '1 minute', interval '1 minute') AS t
)
SELECT m.symbol, count(*) AS missing,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM ops.explained_gaps g
                                      WHERE g.symbol = m.symbol AND g.interval = '1m'
                                        AND g.gap_start <= m.t AND m.t < g.gap_end)
                           OR EXISTS (SELECT 1 FROM ops.quarantine q
                                      WHERE q.symbol = m.symbol AND q.interval = '1m' AND q.open_time = m.t)) AS explained
FROM m GROUP BY m.symbol
"""


def holes(conn, symbols: Sequence[str], now: datetime) -> dict:
    """Missing 1m minutes per coin between its first stored candle and now - 12 min."""
    cutoff = floor_to(now - HOLE_GRACE, MINUTE)
    rows = conn.execute(HOLES_SQL, {"symbols": list(symbols), "cutoff": cutoff}).fetchall()
    missing = {s: int(n) for s, n, _ in rows}
    explained = {s: int(e) for s, _, e in rows}
    unexplained = {s: missing[s] - explained[s] for s in missing if missing[s] > explained[s]}
    return {
        "holes_1m_until": cutoff.isoformat(),
        "holes_1m_total": sum(missing.values()),
        "holes_1m_explained": sum(explained.values()),
        "holes_1m_unexplained": sum(unexplained.values()),
        "holes_1m_unexplained_per_coin": unexplained,
    }


def warehouse_figures(conn, symbols: Sequence[str], start: datetime, end: datetime) -> dict:
    hours = forecast_hours(start, end)
    rows = []
    if hours:
        rows = conn.execute(
            "SELECT symbol, target_open_time FROM forecast.predictions"
            " WHERE kind = 'live' AND interval = '1h' AND target_open_time >= %s AND target_open_time <= %s",
            (hours[0], hours[-1]),
        ).fetchall()
    out = tally_forecasts(hours, rows, symbols)
    scored = dict(
        conn.execute(
            "SELECT symbol, count(*) FROM forecast.predictions WHERE actual_close IS NOT NULL AND symbol = ANY(%s)"
            " GROUP BY symbol",
            (list(symbols),),
        ).fetchall()
    )
    live = conn.execute(
        "SELECT count(*) FROM forecast.predictions WHERE kind = 'live' AND created_at >= %s",
        (start,),
    ).fetchone()[0]
    out["live_forecasts_written_in_period"] = live
    out["scored_forecasts_min_per_coin"] = min(scored.get(s, 0) for s in symbols)
    out["scored_forecasts_total"] = sum(scored.get(s, 0) for s in symbols)
    out.update(holes(conn, symbols, end))
    total, recent = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE quarantined_at >= %s) FROM ops.quarantine",
        (start,),
    ).fetchone()
    out["quarantined_rows_total"] = total
    out["quarantined_rows_in_period"] = recent
    return out


def dag_runs_since(api, since: datetime, page: int = 100) -> list[dict]:
    """Every DAG run that ended at or after `since` or has not ended (running, queued), over Airflow's
    REST API (`end_date_gte` also passes runs without an end date), all pages: the runs of the period,
    including one that started before it and failed within it."""
    runs: list[dict] = []
    while True:
        query = urlencode(
            {
                "end_date_gte": since.isoformat(),
                "limit": page,
                "offset": len(runs),
                "order_by": "id",
            }
        )
        body = api._request("GET", f"/api/v2/dags/~/dagRuns?{query}")
        runs += body["dag_runs"]
        if not body["dag_runs"] or len(runs) >= body.get("total_entries", 0):
            return runs


def _watch(stack: Stack, symbols: Sequence[str], path: Path, seconds: float, sample_s: float):
    """Sample every `sample_s` until `seconds` have passed (the last sample at the deadline), each
    sample a JSON line of `path`. Ctrl-C ends the watch early: the figures cover what was seen.
    Returns (samples, the open warehouse connection or None, whether it was interrupted)."""
    t0 = time.monotonic()
    deadline = t0 + seconds
    samples: list[Sample] = []
    conn = None
    k = 0
    with open(path, "w") as out:
        try:
            while True:
                if conn is None or conn.closed or conn.broken:
                    try:
                        conn = stack.connect()
                    except Exception as exc:
                        conn = None
                        log.info("operate: warehouse unreachable: %s", exc)
                if conn is None:
                    s = Sample(datetime.now(timezone.utc), {}, error="warehouse unreachable")
                else:
                    s = take_sample(stack, conn, symbols)
                    if s.error:
                        conn.close()
                samples.append(s)
                out.write(json.dumps(s.to_json()) + "\n")
                out.flush()
                if time.monotonic() >= deadline:
                    return samples, conn, False
                k += 1
                time.sleep(max(0.0, min(t0 + k * sample_s, deadline) - time.monotonic()))
        except KeyboardInterrupt:
            log.info("operate: interrupted after %d samples; reporting them", len(samples))
            return samples, conn, True


def bench_operate(
    minutes: float | None = None, sample_s: float | None = None, warmup_minutes: float | None = None
) -> dict:
    """The operation benchmark (see the module doc)."""
    from cryptoflow import settings as settings_mod

    switches = settings_mod.load()
    minutes = switches.bench_operate_minutes if minutes is None else minutes
    sample_s = switches.bench_operate_sample_s if sample_s is None else sample_s
    warmup = switches.bench_operate_warmup_minutes if warmup_minutes is None else warmup_minutes
    if sample_s <= 0 or minutes < 0:
        raise ValueError("CRYPTOFLOW_BENCH_OPERATE_SAMPLE_S must be > 0 and _MINUTES >= 0")

    stack, started = attach()
    symbols = tuple(stack.settings.symbols)
    samples_path = stack.settings.state_dir / SAMPLES_FILE
    log.info(
        f"operate: watching the stack of {stack.settings.state_dir} for {minutes:g} min, a sample every "
        f"{sample_s:g} s ({len(symbols)} coins); samples to {samples_path}"
    )
    start = datetime.now(timezone.utc)
    samples, conn, interrupted = _watch(stack, symbols, samples_path, minutes * 60, sample_s)
    end = samples[-1].at

    figures: dict = {
        "stack_started_by_bench": started,
        "minutes_observed": round((end - start).total_seconds() / 60, 2),
        "sample_interval_s": sample_s,
        "warmup_minutes": warmup,
        "coins": len(symbols),
        "samples": len(samples),
        "samples_failed": sum(1 for s in samples if s.error),
        **({"interrupted": True} if interrupted else {}),
    }
    figures.update(freshness_figures(samples, symbols, start + timedelta(minutes=warmup)))
    figures.update(lag_figures(samples, symbols, sample_s))
    try:
        if conn is None or conn.closed or conn.broken:
            conn = stack.connect()
        figures.update(warehouse_figures(conn, symbols, start, end))
    except Exception as exc:
        figures["warehouse_error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if conn is not None:
            conn.close()
    try:
        figures.update(dag_run_figures(dag_runs_since(stack.api(), start)))
    except Exception as exc:
        figures["airflow_error"] = f"{type(exc).__name__}: {exc}"
    figures.update(rss_figures(samples))
    figures["samples_file"] = str(samples_path)
    return figures


__all__ = [
    "bench_operate",
    "percentile",
    "freshness_minutes",
    "snapshot_lags",
    "forecast_hours",
    "tally_forecasts",
    "group_processes",
    "rss_by_service",
    "rss_figures",
    "dag_run_figures",
    "freshness_figures",
    "parse_stat",
]
