"""Soak: a day of ten coins replayed fast through collector -> ingest -> Spark ETL -> forecast.

What it proves, per run: no candle is lost or doubled (the warehouse holds exactly the replay's
source candles of every sealed window, coin by coin) and memory stays flat (RSS of the collector
process and of this process, sampled through the run: start, peak, end).

The pieces are the real ones: the replay server (Binance's protocol over loopback), the collector
as its own process (`python -m cryptoflow.collector`), `ingest.seal_window` for every
10-minute window (gaps healed over REST), the Spark job (`etl.job.run`) into a throwaway
PostgreSQL, and the hourly forecast step (`forecast.hourly.readiness` + `predict`) for every coin.

Replay time runs `speed` times faster than the wall clock while the collector stamps messages with
the wall clock, so each window is read back by the receive-time range the replay clock maps it to
(`Timeline.wall_time`). The helpers here are also what tests/integration/test_faults_ingest.py uses.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cryptoflow.settings import DEFAULT_SYMBOLS

WINDOW_MS = 600_000
MINUTE_MS = 60_000
SOAK_SYMBOLS = DEFAULT_SYMBOLS  # the platform's ten coins


def rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB (Linux /proc), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class CollectorProcess:
    """`python -m cryptoflow.collector` as a child process (killable for real)."""

    def __init__(
        self,
        root: Path,
        ws_url: str,
        symbols,
        interval: str = "1m",
        log_path: Path | None = None,
        **options,
    ):
        self.root, self.ws_url, self.symbols, self.interval = (
            Path(root),
            ws_url,
            tuple(symbols),
            interval,
        )
        self.options = options
        self.log_path = log_path or self.root.parent / "collector.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "CollectorProcess":
        args = [
            sys.executable,
            "-m",
            "cryptoflow.collector",
            "--root",
            str(self.root),
            "--ws-url",
            self.ws_url,
            "--symbols",
            ",".join(self.symbols),
            "--interval",
            self.interval,
        ]
        for key, value in self.options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        with open(self.log_path, "ab") as logfile:
            self.proc = subprocess.Popen(
                args, env=dict(os.environ), stdout=logfile, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int:
        """SIGKILL: no cleanup, no sealing, whatever was in flight is gone."""
        assert self.proc is not None, "not started"
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""


class RssSampler:
    """Samples the RSS of some pids every `every_s` in a thread; start/peak/end per pid, in MiB."""

    def __init__(self, pids: dict[str, Callable[[], int]], every_s: float = 0.5):
        self.pids, self.every_s = pids, every_s
        self.samples: dict[str, list[int]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def sample(self):
        for name, pid in self.pids.items():
            kb = rss_kb(pid())
            if kb:
                self.samples[name].append(kb)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.sample()

    def figures(self) -> dict:
        out = {}
        for name, s in self.samples.items():
            if not s:
                continue
            n = len(s)
            q = max(1, n // 4)
            out[f"{name}_rss_mb_start"] = round(s[0] / 1024, 1)
            out[f"{name}_rss_mb_peak"] = round(max(s) / 1024, 1)
            out[f"{name}_rss_mb_end"] = round(s[-1] / 1024, 1)
            # Flatness: the last quarter's mean against the second quarter's (after warm-up).
            second = s[q : 2 * q] or s[:q]
            out[f"{name}_rss_growth_pct"] = round(
                100.0 * (sum(s[-q:]) / q - sum(second) / len(second)) / (sum(second) / len(second)),
                1,
            )
            out[f"{name}_rss_samples"] = n
        return out


def wait_for(condition, timeout: float = 10.0, what="condition", poll_s: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what() if callable(what) else what}"
            )
        time.sleep(poll_s)


def received_range(timeline, start_ms: int, end_ms: int, slack_s: float = 2.0) -> tuple[int, int]:
    """The receive-time (wall ms) range in which the messages of replay window [start, end) arrive.

    The closing update of the window's last candle is sent after the replay clock passes `end`;
    `slack_s` of wall time either side covers the server's tick and the collector's hand-over.
    """
    return (
        int((timeline.wall_time(start_ms) - slack_s) * 1000),
        int((timeline.wall_time(end_ms) + slack_s) * 1000),
    )


def windows_between(first_ms: int, last_ms: int) -> list[tuple[int, int]]:
    """The 10-minute windows wholly inside [first_ms, last_ms)."""
    start = -(-first_ms // WINDOW_MS) * WINDOW_MS
    return [(s, s + WINDOW_MS) for s in range(start, last_ms - WINDOW_MS + 1, WINDOW_MS)]


@dataclass
class SealTotals:
    snapshots: list = field(default_factory=list)
    rows: int = 0
    from_stream: int = 0
    healed: int = 0
    holes: int = 0
    rejected: dict = field(default_factory=dict)
    torn: int = 0
    seconds: float = 0.0

    def add(self, result) -> None:
        self.snapshots.append(result.uri)
        self.rows += result.rows
        self.from_stream += result.from_stream
        self.healed += len(result.healed)
        self.holes += len(result.holes)
        self.torn += result.stream.get("torn", 0)
        for k, v in result.rejected.items():
            self.rejected[k] = self.rejected.get(k, 0) + v


def warehouse_counts(
    dsn: str, interval: str, start_ms: int, end_ms: int
) -> dict[str, tuple[int, int]]:
    """{symbol: (rows, distinct open times)} of market.candles in [start, end)."""
    import psycopg

    from cryptoflow.times import datetime_from_ms

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT symbol, count(*), count(DISTINCT open_time) FROM market.candles"
            " WHERE interval = %s AND open_time >= %s AND open_time < %s GROUP BY symbol",
            (interval, datetime_from_ms(start_ms), datetime_from_ms(end_ms)),
        ).fetchall()
    return {s: (n, d) for s, n, d in rows}


def bench_soak(
    hours: float = 24.0,
    speed: float = 1440.0,
    symbols=SOAK_SYMBOLS,
    etl_runs: int = 3,
    seed_hours: int = 48,
) -> dict:
    """The soak benchmark (see module doc). Figures: candles in/out per coin, RSS, durations."""
    from cryptoflow_stack.postgres import LocalPostgres, free_port

    tmp = Path(tempfile.mkdtemp(prefix="cryptoflow-soak-"))
    figures: dict = {"hours": hours, "speed": speed, "symbols": len(symbols)}
    t_all = time.perf_counter()
    cluster = LocalPostgres(
        tmp / "pg", free_port(), superuser_password=secrets.token_urlsafe(16), throwaway=True
    )
    started = _Started()
    try:
        _soak(started, cluster, tmp, symbols, hours, speed, etl_runs, seed_hours, figures)
    finally:
        _tear_down(started.spark, started.collector, started.srv, cluster)
        figures["total_seconds"] = round(time.perf_counter() - t_all, 1)
        shutil.rmtree(tmp, ignore_errors=True)
    return figures


@dataclass
class _Started:
    """What a soak run has started so far: _tear_down stops it, whatever happened."""

    srv: Any = None  # the replay server
    collector: CollectorProcess | None = None
    spark: Any = None  # the SparkSession


def _soak(
    started: _Started,
    cluster,
    tmp: Path,
    symbols,
    hours: float,
    speed: float,
    etl_runs: int,
    seed_hours: int,
    figures: dict,
) -> None:
    """The run on the started `cluster`: replay, collect and seal, then ETL and forecast; its
    figures added to `figures`, what it starts recorded in `started`."""
    from cryptoflow import settings as settings_mod

    dsn = _start_warehouse(cluster)
    env = _soak_env(tmp, symbols, dsn)
    started.srv = srv = _start_replay(settings_mod.load(env), symbols, hours, speed)
    cfg = settings_mod.load({**env, "CRYPTOFLOW_BINANCE_REST_URL": srv.rest_url})
    root = tmp / "state" / "collector"
    started.collector = collector = _start_collector(
        root, srv.ws_url, symbols, tmp / "collector.log"
    )
    tl = srv.timeline
    first_ms = tl.now_ms()
    window_lo = -(-first_ms // WINDOW_MS) * WINDOW_MS
    seed_uris = _seed_history(cfg, srv.rest_url, window_lo, seed_hours, figures)
    me = os.getpid()
    with RssSampler({"collector": lambda: collector.pid, "driver": lambda: me}, every_s=1.0) as rss:
        totals, sealed_until = _seal_windows(cfg, srv.rest_url, tl, root, first_ms, figures)
        figures["collector_alive_at_end"] = collector.alive()
        collector.stop()
        figures.update(
            _etl_and_forecast(started, cfg, dsn, symbols, totals, seed_uris, etl_runs, sealed_until)
        )
    figures.update(rss.figures())
    stored = warehouse_counts(dsn, "1m", window_lo, sealed_until)
    figures.update(candle_figures(tl, stored, symbols, window_lo, sealed_until))
    figures.update(seal_figures(totals))
    figures["stream_messages_received"] = _count_messages(root)


def _etl_and_forecast(
    started: _Started,
    cfg,
    dsn: str,
    symbols,
    totals: SealTotals,
    seed_uris: list[str],
    etl_runs: int,
    sealed_until: int,
) -> dict:
    """The sealed windows and the seeded history through `etl_runs` Spark ETL runs (timed with the
    session's start), then the forecast step at `sealed_until`: their figures."""
    from pyspark.sql import SparkSession  # noqa: F401  (imported here: Spark is slow to import)

    from cryptoflow.etl import job
    from cryptoflow.spark import local_session

    figures: dict = {}
    t2 = time.perf_counter()
    started.spark = spark = local_session("cryptoflow-soak", master="local[2]")
    for i, uris in enumerate(etl_chunks(totals.snapshots, seed_uris, etl_runs)):
        job.run(
            spark,
            sorted(uris),
            f"soak-{i}",
            dsn=dsn,
            lake_uri=cfg.lake_uri,
            symbols=symbols,
        )
    figures["etl_seconds"] = round(time.perf_counter() - t2, 1)
    figures["etl_runs"] = etl_runs
    figures.update(_timed_forecast(dsn, symbols, sealed_until))
    return figures


def _start_warehouse(cluster) -> str:
    """The throwaway cluster started, its roles and migrated database made: the writer's DSN."""
    from cryptoflow.warehouse.migrate import migrate

    cluster.init()
    cluster.start(fsync=False)
    cluster.ensure_login_role("cf_writer", writer_pw := secrets.token_urlsafe(16))
    cluster.ensure_login_role("cf_reader", secrets.token_urlsafe(16))
    cluster.ensure_database("cryptoflow")
    migrate(cluster.dsn("cryptoflow"))
    return cluster.dsn("cryptoflow", "cf_writer", writer_pw)


def _start_replay(base, symbols, hours: float, speed: float):
    """The replay server over the shared history, started: `hours` of it, `speed` times the wall clock."""
    from binance_emulator import ReplayServer, default_data_dirs, load_history

    history = load_history(default_data_dirs(base), symbols)
    return ReplayServer(
        history,
        speed=speed,
        shift_to_present=True,
        play_hours=hours,
        symbols=symbols,
        host="127.0.0.1",
        port=0,
    ).start()


def _start_collector(root: Path, ws_url: str, symbols, log_path: Path) -> CollectorProcess:
    root.mkdir(parents=True)
    # Short segments (5 s of wall clock = 2 replay hours at 1440x): each window's read stays small.
    return CollectorProcess(
        root,
        ws_url,
        symbols,
        log_path=log_path,
        window_s=5,
        backoff_initial_s=0.2,
        backoff_max_s=2.0,
    ).start()


def _soak_env(tmp: Path, symbols, dsn: str) -> dict[str, str]:
    """The settings' environment of a soak run: its state, lake and landing under `tmp`."""
    return {
        "CRYPTOFLOW_STATE_DIR": str(tmp / "state"),
        "CRYPTOFLOW_SYMBOLS": ",".join(symbols),
        "CRYPTOFLOW_BINANCE_MODE": "replay",
        "CRYPTOFLOW_WAREHOUSE_DSN": dsn,
        "CRYPTOFLOW_LAKE_URI": f"file://{tmp}/lake",
        "CRYPTOFLOW_LANDING_URI": f"file://{tmp}/landing",
    }


def _seed_history(cfg, rest_url: str, window_lo: int, seed_hours: int, figures: dict) -> list[str]:
    """History before the stream (as `cryptoflow up --demo` seeds it), so the forecast has its
    lookback: landed, its landing URIs returned."""
    from cryptoflow import ingest
    from cryptoflow.importers.land import land
    from cryptoflow.sources.binance.rest import BinanceRestClient

    t_seed = time.perf_counter()
    seed = ingest.backfill_from_rest(
        cfg, window_lo - seed_hours * 3_600_000, window_lo, rest_client=BinanceRestClient(rest_url)
    )
    seed_uris = land(seed, cfg.landing_uri, "soak-seed")
    figures["seed_candles"] = seed.counts["loaded"]
    figures["seed_seconds"] = round(time.perf_counter() - t_seed, 1)
    return seed_uris


def _seal_windows(
    cfg, rest_url: str, tl, root: Path, first_ms: int, figures: dict
) -> tuple[SealTotals, int]:
    """Seal each window as soon as the replay clock is a minute past its end (as the DAG would),
    until the replay ends: (the totals, where sealing stopped)."""
    from cryptoflow import ingest
    from cryptoflow.sources.binance.rest import BinanceRestClient

    t0 = time.perf_counter()
    rest = BinanceRestClient(rest_url)
    totals = SealTotals()
    sealed_until = -(-first_ms // WINDOW_MS) * WINDOW_MS
    seal_s = 0.0
    while sealed_until + WINDOW_MS <= tl.end_ms:
        end = sealed_until + WINDOW_MS
        wait_for(
            lambda end=end, lo=sealed_until: tl.now_ms() >= end + MINUTE_MS
            and time.time() * 1000 > received_range(tl, lo, end)[1],
            timeout=600,
            what="replay clock",
            poll_s=0.05,
        )
        t1 = time.perf_counter()
        res = ingest.seal_window(
            cfg,
            sealed_until,
            end,
            rest_client=rest,
            collector_root=root,
            received_ms=received_range(tl, sealed_until, end),
            clock_slack_ms=5_000,
        )
        seal_s += time.perf_counter() - t1
        totals.add(res)
        sealed_until = end
    figures["replay_wall_s"] = round(time.perf_counter() - t0, 1)
    figures["seal_seconds_total"] = round(seal_s, 1)
    return totals, sealed_until


def etl_chunks(snapshots: list[str], seed_uris: list[str], etl_runs: int) -> list[list[str]]:
    """The landing URIs of each ETL run: out of arrival order on purpose, run i takes every
    etl_runs-th window; the first run also takes the seeded history."""
    chunks = [snapshots[i::etl_runs] for i in range(etl_runs)]
    chunks[0] = seed_uris + chunks[0]
    return chunks


def _timed_forecast(dsn: str, symbols, at_ms: int) -> dict:
    """_forecast_once's figures and its duration; a failure is reported beside the other figures."""
    figures: dict = {}
    t3 = time.perf_counter()
    try:
        figures.update(_forecast_once(dsn, symbols, at_ms))
    except Exception as exc:  # the figures above still count; the failure is reported with them
        figures["forecast_error"] = f"{type(exc).__name__}: {exc}"
    figures["forecast_seconds"] = round(time.perf_counter() - t3, 1)
    return figures


def candle_figures(
    tl, stored: dict[str, tuple[int, int]], symbols, window_lo: int, sealed_until: int
) -> dict:
    """Candles of the replay's source against the warehouse's (`stored`: warehouse_counts) in the
    sealed windows: totals, lost (source candles missing), doubled (rows beyond one per open time)."""
    lost = doubled = 0
    per_coin = {}
    for sym in symbols:
        source = len(tl.candles(sym, "1m", window_lo, sealed_until - 1)) if sym in tl.symbols else 0
        rows, distinct = stored.get(sym, (0, 0))
        per_coin[sym] = f"{source}/{rows}"
        lost += max(0, source - distinct)
        doubled += rows - distinct
    return {
        "candles_source_total": sum(
            len(tl.candles(s, "1m", window_lo, sealed_until - 1))
            for s in symbols
            if s in tl.symbols
        ),
        "candles_warehouse_total": sum(r for r, _ in stored.values()),
        "candles_lost": lost,
        "candles_doubled": doubled,
        "per_coin_source_vs_warehouse": per_coin,
    }


def seal_figures(totals: SealTotals) -> dict:
    return {
        "windows_sealed": len(totals.snapshots),
        "from_stream": totals.from_stream,
        "healed_from_rest": totals.healed,
        "holes": totals.holes,
        "rejected": totals.rejected,
    }


def _tear_down(spark, collector: CollectorProcess | None, srv, cluster) -> None:
    """Stops whatever of the run started (Spark, the collector, the replay server), then destroys the cluster."""
    if spark is not None:
        spark.stop()
    if collector is not None:
        collector.stop()
    if srv is not None:
        srv.stop()
    cluster.destroy()


def _count_messages(root: Path) -> int:
    from cryptoflow.collector import ReadStats, read_window

    stats = ReadStats()
    for _ in read_window(root, 0, 2**62, stats):
        pass
    return stats.messages


def _forecast_once(dsn: str, symbols, at_ms: int) -> dict:
    """The hourly forecast step per coin at `at_ms`: a served forecast, or the reason it was skipped.

    The registry is empty (training needs weeks of history; this is about the pipeline holding up),
    so a coin with fresh data gets the persistence forecast, labelled as such.
    """
    import psycopg

    from cryptoflow.forecast import data, hourly
    from cryptoflow.times import datetime_from_ms
    from cryptoflow.forecast.config import ForecastConfig
    from cryptoflow.forecast.registry import ObjectRegistry

    cfg = ForecastConfig()
    now = datetime_from_ms(at_ms)
    registry = ObjectRegistry(f"file://{tempfile.mkdtemp(prefix='soak-models-')}", conn_id=None)
    outcomes = {}
    with psycopg.connect(dsn) as conn:
        for sym in symbols:
            frame = data.load_hourly(
                conn,
                sym,
                before=data.floor_hour(now),
                hours=cfg.lookback + 2 + cfg.freshness_tolerance_hours,
            )
            ready = hourly.readiness(frame, now, cfg)
            if not ready.ok:
                outcomes[sym] = f"skipped: {ready.reason}"
                continue
            assert ready.target_time is not None  # set when ready.ok
            f, why = hourly.predict(sym, frame, ready.target_time, registry, cfg)
            outcomes[sym] = (
                why if f.model_version == hourly.PERSISTENCE else f"{f.model_version}: {why}"
            )
    return {"forecast": outcomes}
