"""`cryptoflow bench` writes its figures to JSON and a readable table (small sizes here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cryptoflow_stack.postgres import CLUSTER_PREFIX, OWNER_FILE, SCRATCH_BASE, LocalPostgres

pytestmark = pytest.mark.integration


def test_bench_writes_json_and_table_and_reaps_a_killed_bench_s_cluster(tmp_path):
    # What a bench killed earlier leaves: its throwaway cluster, whose owner is dead (our pid with
    # another start time reads as a dead owner whose pid was reused).
    orphan = SCRATCH_BASE / f"{CLUSTER_PREFIX}bench-entry-{os.getpid()}"
    LocalPostgres(orphan, port=0)._prepare_dirs()
    (orphan / OWNER_FILE).write_text(f"{os.getpid()} 1\n")
    exe = str(Path(sys.executable).parent / "cryptoflow")
    env = {**os.environ, "CRYPTOFLOW_BENCH_ROWS": "5000"}
    res = subprocess.run(
        [exe, "bench", "--only", "warehouse_copy", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert (
        not orphan.exists()
        and f"reaped the PostgreSQL cluster of a killed run: {orphan}" in res.stdout
    )
    figures = json.loads((tmp_path / "bench.json").read_text())["benchmarks"]["warehouse_copy"]
    assert figures["rows"] == 5000 and figures["rows_per_second"] > 0
    table = (tmp_path / "bench.md").read_text()
    assert "| warehouse_copy | rows_per_second |" in table
