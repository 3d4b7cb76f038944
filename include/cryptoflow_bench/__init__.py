"""Benchmarks: `cryptoflow bench` (or `make bench`) runs them and writes JSON plus a readable table.

Each benchmark is a function returning a flat dict of figures; a figure with a target also reports
`<name>_target` and whether it was met, so the table says plainly what passed. Speed and memory
targets are checked here, never by timed tests.
"""

from __future__ import annotations

import importlib
import json
import logging
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from cryptoflow_stack.postgres import reap_orphaned_clusters

log = logging.getLogger(__name__)

# name -> "module:function"; modules are imported only when their benchmark runs
# (TensorFlow and Spark are slow to import).
REGISTRY: dict[str, str] = {
    "warehouse_copy": "cryptoflow_bench.warehouse:bench_copy_ceiling",
    "ingest_parse": "cryptoflow_bench.ingest_parse:bench_parse_and_land",
    "etl_load": "cryptoflow_bench.etl:bench_etl_load",
    "etl_incremental": "cryptoflow_bench.etl:bench_etl_incremental",
    "forecast": "cryptoflow_bench.forecast:bench_forecast",
    "forecast_compare": "cryptoflow_bench.forecast:bench_forecast_compare",
    "soak": "cryptoflow_bench.soak:bench_soak",
    "superset_queries": "cryptoflow_bench.superset:bench_superset_queries",
    # Watches a running local stack (starts `cryptoflow up --demo` if none runs) for a wall-clock period.
    "operate": "cryptoflow_bench.operate:bench_operate",
}


# Run only when named (`--only operate`): it watches a running stack for two hours of wall-clock time.
OPT_IN = frozenset({"operate"})


def register(name: str, target: str) -> None:
    REGISTRY[name] = target


def _resolve(target: str) -> Callable[[], dict]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def run(names: list[str] | None, output_dir: Path) -> dict:
    names = names or [n for n in REGISTRY if n not in OPT_IN]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; known: {sorted(REGISTRY)}")
    # A bench killed earlier never destroyed its throwaway cluster, which would run beside these and
    # skew their figures (as the test session does, only clusters whose owning process is dead).
    for root in reap_orphaned_clusters():
        log.info("reaped the PostgreSQL cluster of a killed run: %s", root)
    results: dict = {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": _cpus(),
            "platform": platform.platform(),
        },
        "benchmarks": {},
    }
    for name in names:
        log.info("running benchmark %s ...", name)
        t0 = time.perf_counter()
        try:
            figures = _resolve(REGISTRY[name])()
            figures["wall_seconds"] = round(time.perf_counter() - t0, 2)
        except Exception as exc:  # a broken benchmark is reported, the others still run
            figures = {"error": f"{type(exc).__name__}: {exc}"}
        results["benchmarks"][name] = figures
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "bench.json").write_text(json.dumps(results, indent=2, default=str))
    table = format_table(results)
    (output_dir / "bench.md").write_text(table + "\n")
    print(table)  # the command's result
    return results


def format_table(results: dict) -> str:
    lines = ["| benchmark | figure | value |", "|---|---|---|"]
    for name, figures in results["benchmarks"].items():
        for key, value in figures.items():
            if isinstance(value, float):
                value = f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
            lines.append(f"| {name} | {key} | {value} |")
    return "\n".join(lines)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
