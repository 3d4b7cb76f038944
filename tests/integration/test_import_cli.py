"""`cryptoflow import`: the published raw file lands what is clean and quarantines the rest, with reasons."""

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from cryptoflow import landing

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "cryptoflow")


def run_import(tmp_path, warehouse, *files, status=0):
    env = {
        **os.environ,
        "CRYPTOFLOW_STATE_DIR": str(tmp_path),
        "CRYPTOFLOW_WAREHOUSE_DSN": warehouse.writer_dsn,
    }
    res = subprocess.run(
        [CLI, "import", "cdd", *map(str, files)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == status, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    return res.stdout


def test_raw_file_every_row_accounted_for(tmp_path, warehouse, shared_data):
    raw = shared_data / "raw" / "Binance_BTCUSDT_1h_2017-2021.csv"
    out = run_import(tmp_path, warehouse, raw)
    assert (
        f"{raw}: BTCUSDT 1h: read 36062 = loaded 4829 + quarantined 31233 + duplicates 0 -> 8 snapshots"
        in out
    )
    assert "'read': 36062, 'loaded': 4829, 'quarantined': 31233, 'duplicates_collapsed': 0" in out
    with psycopg.connect(warehouse.reader_dsn) as conn:
        by_reason = dict(
            conn.execute("SELECT reason, count(*) FROM ops.quarantine GROUP BY 1").fetchall()
        )
    assert by_reason == {
        "conflicting_duplicate": 5298,
        "missing_trade_count": 25844,
        "date_unix_mismatch": 91,
    }
    landed = [
        c
        for uri in landing.list_snapshots(
            f"file://{tmp_path}/landing/import=Binance_BTCUSDT_1h_2017-2021", "1h"
        )
        for c in landing.read_snapshot(uri)
    ]
    assert len(landed) == 4829 and len({c.key for c in landed}) == 4829

    run_import(tmp_path, warehouse, raw)  # importing again replaces, never duplicates
    with psycopg.connect(warehouse.reader_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM ops.quarantine").fetchone()[0] == 31233


def test_a_refused_file_does_not_stop_the_others(tmp_path, warehouse, shared_data):
    """One line for the file that can't be read safely; the next one still lands and is quarantined."""
    lines = (shared_data / "cryptodatadownload" / "Binance_ADAUSDT_1h.csv").read_text().splitlines()
    # One day whose day and month are both <= 12, dates day-first, unix rounded by a spreadsheet.
    day = [ln.split(",") for ln in lines[2:] if ln.split(",")[1].startswith("2021-03-05")]
    rows = [",".join([f"{int(r[0]):.5E}", f"05-03-2021 {r[1][11:16]}", *r[2:]]) for r in day]
    bad = tmp_path / "j_ADA.csv"
    bad.write_text("\n".join(lines[:2] + rows) + "\n")
    raw = shared_data / "raw" / "Binance_BTCUSDT_1h_2017-2021.csv"
    out = run_import(tmp_path, warehouse, bad, raw, status=1)
    assert [ln for ln in out.splitlines() if ln.startswith(str(bad))] == [
        f"{bad}: refused: " + out.split(f"{bad}: refused: ", 1)[1].splitlines()[0]
    ]
    assert f"{bad}: refused: date order ambiguous (no field above 12" in out
    assert "read 36062 = loaded 4829 + quarantined 31233" in out
    with psycopg.connect(warehouse.reader_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM ops.quarantine").fetchone()[0] == 31233
