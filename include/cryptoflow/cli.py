"""`cryptoflow`: the one command-line entry point. Every command has --help.

Commands are registered in COMMANDS below; each is a small function taking the parsed arguments.
Heavy imports (Airflow, Spark, TensorFlow) happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptoflow import settings as settings_mod


def cmd_config(args) -> int:
    """Print the configuration in force (or the documented table with --markdown)."""
    if args.markdown:
        print(settings_mod.markdown_table())
        return 0
    values = settings_mod.load().as_env()
    for key, value in values.items():
        if "DSN" in key and "@" in value:  # never print passwords
            scheme, rest = value.split("://", 1)
            user = rest.split("@", 1)[0].split(":", 1)[0]
            value = f"{scheme}://{user}:***@{rest.split('@', 1)[1]}"
        print(f"{key}={value}")
    return 0


def cmd_up(args) -> int:
    """Start PostgreSQL, Airflow and Superset on loopback (set-up on first run)."""
    from cryptoflow.local import stack

    stack.up(settings_mod.load(), with_superset=not args.no_superset)
    return 0


def cmd_down(args) -> int:
    """Stop every service of the local stack."""
    from cryptoflow.local import stack

    stack.down(settings_mod.load())
    return 0


def cmd_status(args) -> int:
    """Show which local services are running."""
    from cryptoflow.local import stack

    for name, state in stack.status(settings_mod.load()).items():
        print(f"{name:24} {state}")
    return 0


def cmd_db_migrate(args) -> int:
    """Apply pending warehouse migrations (as the database owner)."""
    from cryptoflow.warehouse.migrate import migrate

    dsn = args.dsn
    if not dsn:
        from cryptoflow.local import credentials, stack

        s = settings_mod.load()
        creds, _ = credentials.ensure(s.credentials_file)
        dsn = stack.cluster(s, creds).dsn("cryptoflow")
    applied = migrate(dsn)
    print(f"applied {len(applied)} migration(s)" + "".join(f"\n  {m.path.name}" for m in applied))
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
    add("down", cmd_down)
    add("status", cmd_status)

    db = sub.add_parser("db", help="warehouse database commands", description="Warehouse database commands.")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    p = dbsub.add_parser("migrate", help=cmd_db_migrate.__doc__, description=cmd_db_migrate.__doc__)
    p.add_argument("--dsn", help="owner DSN (default: the local cluster's admin)")
    p.set_defaults(func=cmd_db_migrate)

    p = add("bench", cmd_bench)
    p.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)")
    p.add_argument("--list", action="store_true", help="list the benchmarks")
    p.add_argument("--output", default="bench-results", help="directory for bench.json and bench.md")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except settings_mod.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

