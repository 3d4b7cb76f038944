"""`cryptoflow bench`: added to the cryptoflow command line by the `cryptoflow.cli` entry point."""

from __future__ import annotations

from pathlib import Path


def cmd_bench(args) -> int:
    """Run benchmarks; figures go to <output>/bench.json and bench.md."""
    import cryptoflow_bench as bench

    if args.list:
        for name, target in bench.REGISTRY.items():
            print(f"{name:28} {target}")
        return 0
    results = bench.run(args.only or None, Path(args.output))
    failed = [n for n, f in results["benchmarks"].items() if "error" in f]
    return 1 if failed else 0


def register(commands) -> None:
    p = commands.add("bench", cmd_bench)
    p.add_argument(
        "--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)"
    )
    p.add_argument("--list", action="store_true", help="list the benchmarks")
    p.add_argument(
        "--output", default="bench-results", help="directory for bench.json and bench.md"
    )
