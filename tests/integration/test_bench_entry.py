"""`cryptoflow bench` writes its figures to JSON and a readable table (small sizes here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_bench_writes_json_and_table(tmp_path):
    exe = str(Path(sys.executable).parent / "cryptoflow")
    env = {**os.environ, "CRYPTOFLOW_BENCH_ROWS": "5000"}
    res = subprocess.run([exe, "bench", "--only", "warehouse_copy", "--output", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    figures = json.loads((tmp_path / "bench.json").read_text())["benchmarks"]["warehouse_copy"]
    assert figures["rows"] == 5000 and figures["rows_per_second"] > 0
    table = (tmp_path / "bench.md").read_text()
    assert "| warehouse_copy | rows_per_second |" in table
