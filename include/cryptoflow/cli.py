"""`cryptoflow`: the one command-line entry point. Every command has --help.

Commands are registered in COMMANDS below; each is a small function taking the parsed arguments.
Heavy imports (Airflow, Spark, TensorFlow) happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from cryptoflow import settings as settings_mod


def cmd_config(args) -> int:
    """Print the configuration in force (or the documented table with --markdown)."""
    if args.markdown:
        print(settings_mod.markdown_table())
        return 0
    values = settings_mod.load().as_env()
    stack_file, recorded = settings_mod.stack_defaults()
    if recorded:
        print(f"# the stack's settings from {stack_file} (recorded by `cryptoflow up`); the environment overrides them")
    for key, value in values.items():
        if "DSN" in key and "@" in value:  # never print passwords
            scheme, rest = value.split("://", 1)
            user = rest.split("@", 1)[0].split(":", 1)[0]
            value = f"{scheme}://{user}:***@{rest.split('@', 1)[1]}"
        print(f"{key}={value}")
    return 0


def cmd_up(args) -> int:
    """Start PostgreSQL, Airflow and Superset on loopback (set-up on first run)."""
    import os

    from cryptoflow.local import stack

    # The environment alone decides what this stack runs with: not the last stack's stack.env.
    cfg = settings_mod.load(stack_file=False)
    before_airflow = None
    if args.demo:
        from cryptoflow.local import demo

        cfg = demo.demo_settings(os.environ)
        # The feed first: the scheduler's first ingest runs would otherwise meet "connection refused".
        before_airflow = lambda s: demo.start_feed(s)  # noqa: E731
    try:
        with stack.stopped_if_interrupted(cfg):
            endpoints = stack.up(cfg, with_superset=not args.no_superset, before_airflow=before_airflow)
            cfg = endpoints.settings
            if args.demo:
                from cryptoflow.local.airflow import AirflowApi

                api = AirflowApi(endpoints.airflow,
                                 settings_mod.read_credentials(cfg.credentials_file)["AIRFLOW_ADMIN_PASSWORD"])
                api.wait_for_dags({"binance_ingest"})
                demo.run(cfg, api, hours=args.history_hours)
    except stack.PortTaken as exc:
        print(f"cryptoflow up: nothing started: {exc}", file=sys.stderr)
        return 2
    except stack.Interrupted as exc:
        print(f"cryptoflow up: {exc}", file=sys.stderr)
        return 130
    return 0


def cmd_airflow(args) -> int:
    """Run Airflow's CLI with the local stack's environment (e.g. `cryptoflow airflow dags list`)."""
    import os

    from cryptoflow.local import stack

    argv = list(args.airflow_args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    try:
        env = stack.stack_airflow_env(settings_mod.load())
    except stack.NotSetUp as exc:
        print(f"cryptoflow airflow: {exc}: run `make run` or `cryptoflow up` first", file=sys.stderr)
        return 2
    airflow = Path(sys.executable).parent / "airflow"
    if not airflow.exists():
        print(f"cryptoflow airflow: {airflow} not found (is this Airflow's virtualenv?)", file=sys.stderr)
        return 2
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(str(airflow), [str(airflow), *argv], env)  # airflow's exit status is ours
    return 0  # not reached (except where execve is replaced, as in tests)


def cmd_down(args) -> int:
    """Stop every service of the local stack."""
    from cryptoflow.local import stack

    stack.down(settings_mod.load())
    return 0


def cmd_status(args) -> int:
    """Show which local services are running."""
    from cryptoflow.local import stack

    from cryptoflow.local import process
    from cryptoflow.local.postgres import moved_clusters

    cfg = settings_mod.load()
    states = stack.status(cfg)
    for name, state in states.items():
        print(f"{name:24} {state}")
    tracked = {int(m) for state in states.values() for m in re.findall(r"pid (\d+)", state)}
    strays = [p for p in process.stack_processes(cfg.state_dir) if p.pgid not in tracked and p.pid not in tracked]
    if strays:
        print(f"{'(no pid file)':24} {len(strays)} process(es) of this stack: "
              + ", ".join(p.describe() for p in strays[:5]) + " (`cryptoflow down` stops them)")
    for moved in moved_clusters():
        if moved.checkout_gone:
            print(f"{'(deleted checkout)':24} PostgreSQL cluster {moved.describe()} (`cryptoflow db reap` removes it)")
    return 0


def cmd_db_migrate(args) -> int:
    """Apply pending warehouse migrations (as the database owner)."""
    from cryptoflow.warehouse.migrate import migrate

    dsn = args.dsn
    if not dsn:
        from cryptoflow.local import passwords, stack

        s = settings_mod.load()
        creds, _ = passwords.ensure(s.credentials_file)
        dsn = stack.cluster(s, creds).dsn("cryptoflow")
    applied = migrate(dsn)
    print(f"applied {len(applied)} migration(s)" + "".join(f"\n  {m.path.name}" for m in applied))
    return 0


def cmd_db_reap(args) -> int:
    """Stop and remove the PostgreSQL clusters nobody owns any more: throwaway ones whose owner (e.g.
    a killed test run) is dead, and stack clusters moved out of a checkout that was deleted."""
    from cryptoflow.local import postgres

    base = Path(args.base_dir) if args.base_dir else postgres.SCRATCH_BASE
    moved_clusters, reap_moved_clusters, reap_orphaned_clusters = (
        postgres.moved_clusters, postgres.reap_moved_clusters, postgres.reap_orphaned_clusters)
    reaped = reap_orphaned_clusters(base)
    moved = reap_moved_clusters(base)
    print(f"reaped {len(reaped) + len(moved)} cluster(s)" + "".join(f"\n  {root}" for root in reaped)
          + "".join(f"\n  {m.describe()}" for m in moved))
    unknown = [m for m in moved_clusters(base) if m.origin is None]
    if unknown:
        print(f"left {len(unknown)} cluster(s) whose checkout was never recorded (remove by hand if unused): "
              + "; ".join(m.describe() for m in unknown))
    return 0


def cmd_bench(args) -> int:
    """Run benchmarks; figures go to <output>/bench.json and bench.md."""
    from cryptoflow import bench

    if args.list:
        for name, target in bench.REGISTRY.items():
            print(f"{name:28} {target}")
        return 0
    results = bench.run(args.only or None, Path(args.output))
    failed = [n for n, f in results["benchmarks"].items() if "error" in f]
    return 1 if failed else 0


def cmd_replay_server(args) -> int:
    """Serve real historical candles over Binance's websocket and REST protocol on loopback."""
    import logging

    from cryptoflow.binance import replay

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    replay.serve(settings_mod.load(), data_dirs=args.data or None, speed=args.speed,
                 shift_to_present=not args.original_times, play_hours=args.play_hours, port=args.port,
                 host=args.host, anchor_file=Path(args.anchor_file) if args.anchor_file else None)
    return 0


def cmd_collect(args) -> int:
    """Hold the kline stream and append every message durably to collector segments (until SIGTERM)."""
    import logging

    from cryptoflow.binance.collector import run_collector

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_collector(settings_mod.load(), root=args.root)
    return 0


def cmd_seal(args) -> int:
    """Seal one window of collected messages into a landing snapshot, healing gaps over REST."""
    from cryptoflow import ingest
    from cryptoflow.warehouse import db

    cfg = settings_mod.load()
    start = _utc_ms(args.start)
    end = _utc_ms(args.end) if args.end else start + 10 * 60_000
    result = ingest.seal_window(cfg, start, end)
    if not args.no_quarantine:
        with db.connect() as conn:
            ingest.record(conn, result, ingest.window_run_id(cfg.interval, start), cfg.interval)
    print(json.dumps(result.summary(), indent=2))
    return 0


def _utc(text: str):
    """An ISO time given on the command line, read as UTC."""
    from datetime import datetime, timezone

    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _utc_ms(text: str) -> int:
    return int(_utc(text).timestamp() * 1000)


def cmd_backfill(args) -> int:
    """Fetch history for every configured symbol from Binance REST into the landing zone."""
    import time as _time

    from cryptoflow import ingest, quarantine
    from cryptoflow.warehouse import db

    cfg = settings_mod.load()
    step = 60_000
    if args.start:
        start, end = _utc_ms(args.start), _utc_ms(args.end) if args.end else int(_time.time() * 1000)
    else:
        end = int(_time.time() * 1000)
        start = end - int(args.hours * 3_600_000)
    start, end = start - start % step, end - end % step
    result = ingest.backfill_from_rest(cfg, start, end)
    name = f"rest_{cfg.interval}_{start}_{end}"
    uris = ingest.land_span(cfg, result.candles, start, end)
    if result.rejections and not args.no_quarantine:
        with db.connect() as conn, conn.transaction():
            quarantine.write_rejections(conn, result.rejections, f"backfill:{name}")
    print(json.dumps({"counts": result.counts, "by_reason": result.by_reason, "snapshots": uris}, indent=2))
    return 0


def cmd_import(args) -> int:
    """Import history files into the landing zone; rejected rows go to quarantine with reasons."""
    import zipfile

    from cryptoflow import symbols
    from cryptoflow.importers import import_binance_vision, import_cdd_csv
    from cryptoflow.importers.land import import_name, land, month_window
    from cryptoflow.importers.progress import StderrProgress

    cfg = settings_mod.load()
    accepted = symbols.exchange_symbols(cfg.symbols) if args.configured_only else None
    total = {"read": 0, "loaded": 0, "quarantined": 0, "duplicates_collapsed": 0, "snapshots": 0}
    refused = 0
    for path in args.files:
        # Progress goes to stderr, so stdout stays one parseable line per file.
        progress = StderrProgress(Path(path).name)
        try:
            if args.format == "cdd":
                result = import_cdd_csv(path, symbols=accepted, allow_missing_trades=args.allow_missing_trades,
                                        symbol=args.symbol, progress=progress)
            else:
                result = import_binance_vision(path, symbols=accepted, symbol=args.symbol, progress=progress)
        except (ValueError, OSError, zipfile.BadZipFile) as exc:  # ImportRefused is a ValueError
            progress.done()
            print(f"{path}: refused: {' '.join(str(exc).split())}")
            refused += 1
            continue
        progress.done()
        for note in result.notes:
            print(f"{path}: note: {note}")
        c = result.counts
        if args.dry_run:
            # Nothing written: no snapshot, no quarantine row, no database needed.
            snapshots = len({(k.interval, month_window(k.open_time)) for k in result.candles})
            where = f"(dry run, nothing written: would land {snapshots} snapshots)"
        else:
            uris = land(result, cfg.landing_uri, import_name(path))
            if not args.no_quarantine:
                from cryptoflow import quarantine
                from cryptoflow.warehouse import db

                run_id = f"import:{import_name(path)}"
                with db.connect() as conn, conn.transaction():  # re-importing replaces, never duplicates
                    conn.execute("DELETE FROM ops.quarantine WHERE run_id = %s", (run_id,))
                    quarantine.write_rejections(conn, result.rejections, run_id)
            snapshots, where = len(uris), f"-> {len(uris)} snapshots"
        for key in ("read", "loaded", "quarantined", "duplicates_collapsed"):
            total[key] += c[key]
        total["snapshots"] += snapshots
        print(f"{path}: {result.symbol} {result.interval}: read {c['read']} = loaded {c['loaded']} + quarantined "
              f"{c['quarantined']} + duplicates {c['duplicates_collapsed']} {where}; "
              f"quarantined by reason: {result.by_reason}")
    print(f"total: {total}" + (f"; {refused} file(s) refused" if refused else "") + ("; dry run" if args.dry_run else ""))
    return 1 if refused else 0


def cmd_backtest(args) -> int:
    """Walk-forward backtest: the hourly forecasts the DAG would have made, scored against persistence."""
    from cryptoflow.forecast import commands, config

    symbols = args.symbol or list(settings_mod.load().symbols)
    sets = list(args.set or []) + ([f"architecture={args.architecture}"] if args.architecture else [])
    commands.backtest(symbols, _utc(args.start), _utc(args.end), args.retrain_every_hours, store=not args.no_store,
                      cfg=config.with_settings(sets))
    return 0


def cmd_train(args) -> int:
    """Train now (whatever the cadence), apply the promotion rule and register the model."""
    from cryptoflow.forecast import commands

    commands.train(args.symbol or None, at=_utc(args.at) if args.at else None)
    return 0


def cmd_superset_import(args) -> int:
    """Import the dashboards of include/superset/assets/ into Superset (again: updates, never duplicates)."""
    from cryptoflow.local import superset as superset_svc
    from cryptoflow.superset import importer

    cfg = settings_mod.load()
    try:
        importer.run(cfg, default_url=superset_svc.url(cfg))
    except importer.BundleImportError as exc:
        print(f"superset import failed: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryptoflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help_text=None):
        p = sub.add_parser(name, help=help_text or func.__doc__, description=help_text or func.__doc__)
        p.set_defaults(func=func)
        return p

    p = add("config", cmd_config)
    p.add_argument("--markdown", action="store_true", help="print the documented table of variables")

    p = add("up", cmd_up)
    p.add_argument("--no-superset", action="store_true", help="start PostgreSQL and Airflow only")
    p.add_argument("--demo", action="store_true",
                   help="also run the main job: Binance feed (replay where Binance is out of reach), "
                        "collector, seeded history and the DAG chain")
    p.add_argument("--history-hours", type=float, default=480.0, help="hours of history the demo seeds (default 480)")
    add("down", cmd_down)
    add("status", cmd_status)
    p = add("airflow", cmd_airflow)
    p.usage = "cryptoflow airflow [-h] AIRFLOW_ARGS..."
    p.add_argument("airflow_args", nargs=argparse.REMAINDER, metavar="AIRFLOW_ARGS",
                   help="passed verbatim to `airflow` (e.g. backfill create --dag-id binance_ingest "
                        "--from-date 2026-11-20T00:00 --to-date 2026-11-20T06:00)")

    db = sub.add_parser("db", help="warehouse database commands", description="Warehouse database commands.")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    p = dbsub.add_parser("migrate", help=cmd_db_migrate.__doc__, description=cmd_db_migrate.__doc__)
    p.add_argument("--dsn", help="owner DSN (default: the local cluster's admin)")
    p.set_defaults(func=cmd_db_migrate)
    p = dbsub.add_parser("reap", help=cmd_db_reap.__doc__, description=cmd_db_reap.__doc__)
    p.add_argument("--base-dir", help="where throwaway clusters live (default /var/tmp)")
    p.set_defaults(func=cmd_db_reap)

    ss = sub.add_parser("superset", help="Superset dashboards", description="Superset dashboards.")
    sssub = ss.add_subparsers(dest="superset_command", required=True, metavar="SUPERSET_COMMAND")
    p = sssub.add_parser("import", help=cmd_superset_import.__doc__, description=cmd_superset_import.__doc__)
    p.set_defaults(func=cmd_superset_import)

    p = add("replay-server", cmd_replay_server)
    p.add_argument("--data", action="append", metavar="DIR",
                   help="directory of candle files (default: CRYPTOFLOW_REPLAY_DATA or ../shared/data/cryptodatadownload)")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed factor (1 = real time)")
    p.add_argument("--play-hours", type=float, default=24.0, help="hours of history played before reaching now")
    p.add_argument("--original-times", action="store_true", help="serve the original timestamps (no shift to now)")
    p.add_argument("--anchor-file", metavar="PATH",
                   help="keep the timeline across restarts (real time only): recorded on the first start, reused after")
    p.add_argument("--port", type=int, help="port (default CRYPTOFLOW_REPLAY_PORT)")
    p.add_argument("--host", help="bind address (default CRYPTOFLOW_BIND_HOST, loopback)")

    p = add("collect", cmd_collect)
    p.add_argument("--root", help="segment directory (default <state>/collector)")

    p = add("seal", cmd_seal)
    p.add_argument("--start", required=True, help="window start, UTC ISO time (e.g. 2021-08-01T00:00)")
    p.add_argument("--end", help="window end (default start + 10 minutes)")
    p.add_argument("--no-quarantine", action="store_true", help="don't write rejections to the warehouse")

    p = add("backfill", cmd_backfill)
    p.add_argument("--hours", type=float, default=24.0, help="hours of history up to now (default 24)")
    p.add_argument("--start", help="UTC ISO start instead of --hours")
    p.add_argument("--end", help="UTC ISO end (default now)")
    p.add_argument("--no-quarantine", action="store_true", help="don't write rejections to the warehouse")

    p = add("import", cmd_import)
    p.add_argument("format", choices=["cdd", "binance-vision"],
                   help="cdd: CryptoDataDownload CSV; binance-vision: data.binance.vision kline CSV/ZIP")
    p.add_argument("files", nargs="+", help="files to import")
    p.add_argument("--allow-missing-trades", action="store_true",
                   help="load CDD rows whose trade count is NULL (else quarantined as missing_trade_count)")
    p.add_argument("--configured-only", action="store_true", help="quarantine symbols not in CRYPTOFLOW_SYMBOLS")
    p.add_argument("--no-quarantine", action="store_true", help="don't write rejections to the warehouse")
    p.add_argument("--symbol", metavar="S",
                   help="the files' symbol (e.g. ADAUSDT) instead of their names'; a CDD file whose symbol "
                        "column disagrees is refused")
    p.add_argument("--dry-run", action="store_true",
                   help="report what would load and why the rest would not; write nothing (no database needed)")

    p = add("backtest", cmd_backtest)
    p.add_argument("--start", required=True, help="first predicted hour, UTC ISO (e.g. 2021-08-01T00:00)")
    p.add_argument("--end", required=True, help="end of the range (exclusive), UTC ISO")
    p.add_argument("--symbol", action="append", help="coin to backtest (repeatable; default all configured)")
    p.add_argument("--retrain-every-hours", type=int, help="retraining cadence (default: the DAG's)")
    p.add_argument("--no-store", action="store_true", help="report only; don't store backtest predictions")
    p.add_argument("--architecture", help="model file in models/ to replay instead of the configured one (e.g. gru)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="forecast setting for this replay, as CRYPTOFLOW_FORECAST_<FIELD> (e.g. lookback=48, "
                        "features=log_return,log_volume_change, pool=BTCUSDT,ETHUSDT,SOLUSDT)")

    p = add("train", cmd_train)
    p.add_argument("--symbol", action="append", help="coin to train (repeatable; default all configured)")
    p.add_argument("--at", help="train on the hours before this UTC ISO time (default: now)")

    p = add("bench", cmd_bench)
    p.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)")
    p.add_argument("--list", action="store_true", help="list the benchmarks")
    p.add_argument("--output", default="bench-results", help="directory for bench.json and bench.md")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["airflow"] and argv[1:2] not in ([], ["-h"], ["--help"]):
        # Verbatim, options first included (`cryptoflow airflow --help` is ours, `... dags --help` Airflow's).
        args = parser.parse_args(["airflow"])
        args.airflow_args = argv[1:]
    else:
        args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except settings_mod.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
