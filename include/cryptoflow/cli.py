"""`cryptoflow`: the one command-line entry point. Every command has --help.

The runtime's commands are the `cmd_*` functions below, wired in `build_parser`. Tooling installed
beside the runtime adds its own through the `cryptoflow.cli` entry-point group (the local stack:
up, down, status, airflow, db reap; the benchmarks: bench; the Binance emulator: replay-server),
so this package never imports it. Heavy imports (Airflow, Spark, TensorFlow) happen inside the
commands that need them.
"""

from __future__ import annotations

import argparse
import logging
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

from cryptoflow import settings as settings_mod
from cryptoflow.times import ms_from_datetime, now_ms, parse_utc


def cmd_config(args) -> int:
    """Print the configuration in force by section (or docs/configuration.md with --markdown)."""
    if args.markdown:
        print(settings_mod.markdown_table())
        return 0
    values = settings_mod.load().as_env()
    stack_file, recorded = settings_mod.stack_defaults()
    if recorded:
        print(
            f"# the stack's settings from {stack_file} (recorded by `cryptoflow up`); the environment overrides them"
        )
    for number, section in enumerate(settings_mod.SECTIONS):
        print(("\n" if number else "") + f"[{section}]")
        for key in (s.env for s in settings_mod.SETTINGS if s.section == section):
            value = values[key]
            if "DSN" in key and "@" in value:  # never print passwords
                scheme, rest = value.split("://", 1)
                user = rest.split("@", 1)[0].split(":", 1)[0]
                value = f"{scheme}://{user}:***@{rest.split('@', 1)[1]}"
            print(f"{key}={value}")
    return 0


def cmd_db_migrate(args) -> int:
    """Apply pending warehouse migrations (as the database owner)."""
    from cryptoflow.warehouse.migrate import migrate

    dsn = args.dsn or settings_mod.local_admin_dsn(settings_mod.load())
    applied = migrate(dsn)
    print(f"applied {len(applied)} migration(s)" + "".join(f"\n  {m.path.name}" for m in applied))
    return 0


def cmd_collect(args) -> int:
    """Hold the kline stream and append every message durably to collector segments (until SIGTERM)."""
    import logging

    from cryptoflow.collector import run_collector

    # A service's log file wants times and sources: replaces the plain console format `main` set.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    run_collector(settings_mod.load(), root=args.root)
    return 0


def cmd_seal(args) -> int:
    """Seal one window of collected messages into a landing snapshot, healing gaps over REST."""
    from cryptoflow import ingest
    from cryptoflow.warehouse import db

    cfg = settings_mod.load()
    start = ms_from_datetime(parse_utc(args.start))
    end = ms_from_datetime(parse_utc(args.end)) if args.end else start + 10 * 60_000
    result = ingest.seal_window(cfg, start, end)
    if not args.no_quarantine:
        with db.connect() as conn:
            ingest.record(conn, result, ingest.window_run_id(cfg.interval, start), cfg.interval)
    print(json.dumps(result.summary(), indent=2))
    return 0


def cmd_backfill(args) -> int:
    """Fetch history for every configured symbol from Binance REST into the landing zone."""
    from cryptoflow import ingest

    cfg = settings_mod.load()
    step = 60_000
    if args.start:
        start = ms_from_datetime(parse_utc(args.start))
        end = ms_from_datetime(parse_utc(args.end)) if args.end else now_ms()
    else:
        end = now_ms()
        start = end - int(args.hours * 3_600_000)
    start, end = start - start % step, end - end % step
    run_id = f"backfill:rest_{cfg.interval}_{start}_{end}"
    result, uris = ingest.backfill_and_land(
        cfg, start, end, run_id, quarantine_rejections=not args.no_quarantine
    )
    print(
        json.dumps(
            {"counts": result.counts, "by_reason": result.by_reason, "snapshots": uris}, indent=2
        )
    )
    return 0


def cmd_import(args) -> int:
    """Import history files into the landing zone; rejected rows go to quarantine with reasons."""
    from cryptoflow import symbols

    cfg = settings_mod.load()
    accepted = symbols.exchange_symbols(cfg.symbols) if args.configured_only else None
    total = {"read": 0, "loaded": 0, "quarantined": 0, "duplicates_collapsed": 0, "snapshots": 0}
    refused = 0
    for path in args.files:
        result = _read_import(args, path, accepted)
        if result is None:
            refused += 1
            continue
        for note in result.notes:
            print(f"{path}: note: {note}")
        snapshots, where = _land_import(args, cfg, path, result)
        for key in ("read", "loaded", "quarantined", "duplicates_collapsed"):
            total[key] += result.counts[key]
        total["snapshots"] += snapshots
        print(_import_summary(path, result, where))
    print(
        f"total: {total}"
        + (f"; {refused} file(s) refused" if refused else "")
        + ("; dry run" if args.dry_run else "")
    )
    return 1 if refused else 0


def _read_import(args, path, accepted):
    """One file through the importer of `args.format`: its ImportResult, or None (said on stdout)
    when the whole file is refused."""
    import zipfile

    from cryptoflow.importers import import_cdd_csv
    from cryptoflow.importers.progress import StderrProgress
    from cryptoflow.sources.binance.archive import import_binance_vision

    # Progress goes to stderr, so stdout stays one parseable line per file.
    progress = StderrProgress(Path(path).name)
    try:
        if args.format == "cdd":
            result = import_cdd_csv(
                path,
                symbols=accepted,
                allow_missing_trades=args.allow_missing_trades,
                symbol=args.symbol,
                progress=progress,
            )
        else:
            result = import_binance_vision(
                path, symbols=accepted, symbol=args.symbol, progress=progress
            )
    except (ValueError, OSError, zipfile.BadZipFile) as exc:  # ImportRefused is a ValueError
        progress.done()
        print(f"{path}: refused: {' '.join(str(exc).split())}")
        return None
    progress.done()
    return result


def _land_import(args, cfg, path, result) -> tuple[int, str]:
    """Land one file's candles and quarantine its rejected rows (unless --no-quarantine); a dry run
    writes nothing. (snapshots landed or that would be, the words saying where they went)."""
    from cryptoflow.importers.land import import_name, land, month_window

    if args.dry_run:
        # Nothing written: no snapshot, no quarantine row, no database needed.
        snapshots = len({(k.interval, month_window(k.open_time)) for k in result.candles})
        return snapshots, f"(dry run, nothing written: would land {snapshots} snapshots)"
    uris = land(result, cfg.landing_uri, import_name(path))
    if not args.no_quarantine:
        from cryptoflow import quarantine
        from cryptoflow.warehouse import db

        with db.connect() as conn:  # re-importing replaces, never duplicates
            quarantine.replace_run(conn, f"import:{import_name(path)}", result.rejections)
    return len(uris), f"-> {len(uris)} snapshots"


def _import_summary(path, result, where: str) -> str:
    """The one stdout line of an imported file: every row read accounted for."""
    c = result.counts
    return (
        f"{path}: {result.symbol} {result.interval}: read {c['read']} = loaded {c['loaded']} + quarantined "
        f"{c['quarantined']} + duplicates {c['duplicates_collapsed']} {where}; "
        f"quarantined by reason: {result.by_reason}"
    )


def cmd_backtest(args) -> int:
    """Walk-forward backtest: the hourly forecasts the DAG would have made, scored against persistence."""
    from cryptoflow.forecast import commands, config

    symbols = args.symbol or list(settings_mod.load().symbols)
    sets = list(args.set or []) + (
        [f"architecture={args.architecture}"] if args.architecture else []
    )
    commands.backtest(
        symbols,
        parse_utc(args.start),
        parse_utc(args.end),
        args.retrain_every_hours,
        store=not args.no_store,
        cfg=config.with_settings(sets),
    )
    return 0


def cmd_train(args) -> int:
    """Train now (whatever the cadence), apply the promotion rule and register the model."""
    from cryptoflow.forecast import commands

    commands.train(args.symbol or None, at=parse_utc(args.at) if args.at else None)
    return 0


def cmd_superset_import(args) -> int:
    """Import the dashboards of include/superset/assets/ into Superset (again: updates, never duplicates)."""
    from cryptoflow.superset import importer

    cfg = settings_mod.load()
    try:
        importer.run(cfg, default_url=settings_mod.superset_url(cfg))
    except importer.BundleImportError as exc:
        print(f"superset import failed: {exc}", file=sys.stderr)
        return 1
    return 0


class Commands:
    """Where commands are added: the runtime's, then each installed tool's (`register(commands)`)."""

    def __init__(self, sub):
        self.sub = sub
        self.groups: dict[str, argparse._SubParsersAction] = {}
        self.verbatim: dict[
            str, str
        ] = {}  # command -> the argument that takes the rest of argv as is

    def add(
        self, name, func, help_text=None, *, group: str | None = None
    ) -> argparse.ArgumentParser:
        where = self.groups[group] if group else self.sub
        p = where.add_parser(
            name, help=help_text or func.__doc__, description=help_text or func.__doc__
        )
        p.set_defaults(func=func)
        return p

    def group(self, name: str, help_text: str) -> None:
        g = self.sub.add_parser(name, help=help_text, description=help_text)
        self.groups[name] = g.add_subparsers(
            dest=f"{name}_command", required=True, metavar=f"{name.upper()}_COMMAND"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryptoflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = Commands(sub)
    _add_admin_commands(commands)
    _add_ingest_commands(commands)
    _add_import_command(commands)
    _add_forecast_commands(commands)
    for tool in sorted(entry_points(group="cryptoflow.cli"), key=lambda ep: ep.name):
        tool.load()(commands)
    parser.set_defaults(verbatim=commands.verbatim)
    return parser


def _add_admin_commands(commands: Commands) -> None:
    """config, db migrate, superset import."""
    p = commands.add("config", cmd_config)
    p.add_argument(
        "--markdown",
        action="store_true",
        help="print the documented table of variables by section (docs/configuration.md)",
    )

    commands.group("db", "Warehouse database commands.")
    p = commands.add("migrate", cmd_db_migrate, group="db")
    p.add_argument("--dsn", help="owner DSN (default: the local cluster's admin)")
    commands.group("superset", "Superset dashboards.")
    commands.add("import", cmd_superset_import, group="superset")


def _add_ingest_commands(commands: Commands) -> None:
    """collect, seal, backfill: the live feed and its gaps."""
    p = commands.add("collect", cmd_collect)
    p.add_argument("--root", help="segment directory (default <state>/collector)")

    p = commands.add("seal", cmd_seal)
    p.add_argument(
        "--start", required=True, help="window start, UTC ISO time (e.g. 2021-08-01T00:00)"
    )
    p.add_argument("--end", help="window end (default start + 10 minutes)")
    p.add_argument(
        "--no-quarantine", action="store_true", help="don't write rejections to the warehouse"
    )

    p = commands.add("backfill", cmd_backfill)
    p.add_argument(
        "--hours", type=float, default=24.0, help="hours of history up to now (default 24)"
    )
    p.add_argument("--start", help="UTC ISO start instead of --hours")
    p.add_argument("--end", help="UTC ISO end (default now)")
    p.add_argument(
        "--no-quarantine", action="store_true", help="don't write rejections to the warehouse"
    )


def _add_import_command(commands: Commands) -> None:
    """import: history files (CryptoDataDownload, data.binance.vision)."""
    p = commands.add("import", cmd_import)
    p.add_argument(
        "format",
        choices=["cdd", "binance-vision"],
        help="cdd: CryptoDataDownload CSV; binance-vision: data.binance.vision kline CSV/ZIP",
    )
    p.add_argument("files", nargs="+", help="files to import")
    p.add_argument(
        "--allow-missing-trades",
        action="store_true",
        help="load CDD rows whose trade count is NULL (else quarantined as missing_trade_count)",
    )
    p.add_argument(
        "--configured-only",
        action="store_true",
        help="quarantine symbols not in CRYPTOFLOW_SYMBOLS",
    )
    p.add_argument(
        "--no-quarantine", action="store_true", help="don't write rejections to the warehouse"
    )
    p.add_argument(
        "--symbol",
        metavar="S",
        help="the files' symbol (e.g. ADAUSDT) instead of their names'; a CDD file whose symbol "
        "column disagrees is refused",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="report what would load and why the rest would not; write nothing (no database needed)",
    )


def _add_forecast_commands(commands: Commands) -> None:
    """backtest, train."""
    p = commands.add("backtest", cmd_backtest)
    p.add_argument(
        "--start", required=True, help="first predicted hour, UTC ISO (e.g. 2021-08-01T00:00)"
    )
    p.add_argument("--end", required=True, help="end of the range (exclusive), UTC ISO")
    p.add_argument(
        "--symbol", action="append", help="coin to backtest (repeatable; default all configured)"
    )
    p.add_argument(
        "--retrain-every-hours", type=int, help="retraining cadence (default: the DAG's)"
    )
    p.add_argument(
        "--no-store", action="store_true", help="report only; don't store backtest predictions"
    )
    p.add_argument(
        "--architecture",
        help="model file in models/ to replay instead of the configured one (e.g. gru)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="forecast setting for this replay, as CRYPTOFLOW_FORECAST_<FIELD> (e.g. lookback=48, "
        "features=log_return,log_volume_change, pool=BTCUSDT,ETHUSDT,SOLUSDT)",
    )

    p = commands.add("train", cmd_train)
    p.add_argument(
        "--symbol", action="append", help="coin to train (repeatable; default all configured)"
    )
    p.add_argument("--at", help="train on the hours before this UTC ISO time (default: now)")


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is when a line is logged (a caller may have replaced it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


_PROGRESS = _StdoutHandler()
_PROGRESS.setFormatter(logging.Formatter("%(message)s"))
_PROGRESS.addFilter(lambda record: record.levelno < logging.WARNING)

# The loggers whose INFO lines are a command's progress: shown on stdout as plain lines, as these
# commands always printed them. Warnings and errors of every logger go to stderr.
PROGRESS_LOGGERS = (
    "cryptoflow_stack",
    "cryptoflow_bench",
    "cryptoflow.etl.plan",
    "cryptoflow.forecast.backtest",
    "cryptoflow.forecast.commands",
    "cryptoflow.superset.importer",
)


def configure_console_logging() -> None:
    """Progress on stdout, problems on stderr; other libraries' INFO chatter stays out."""
    root = logging.getLogger()
    if not root.handlers:  # a host that configured logging (a test runner, Airflow) keeps it
        problems = logging.StreamHandler(sys.stderr)
        problems.setLevel(logging.WARNING)
        problems.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(problems)
    for name in PROGRESS_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if _PROGRESS not in logger.handlers:
            logger.addHandler(_PROGRESS)


def main(argv: list[str] | None = None) -> int:
    configure_console_logging()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    verbatim = parser.get_default("verbatim")
    if argv[:1] and argv[0] in verbatim and argv[1:2] not in ([], ["-h"], ["--help"]):
        # Verbatim, options first included (`cryptoflow airflow --help` is ours, `... dags --help` Airflow's).
        args = parser.parse_args(argv[:1])
        setattr(args, verbatim[argv[0]], argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except settings_mod.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
