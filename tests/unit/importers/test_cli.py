"""`cryptoflow import` in-process: one line per bad file, the others still imported, --dry-run
writes nothing, binance-vision ZIPs checked against their published CHECKSUM, progress on stderr.

No database: --dry-run and --no-quarantine never connect (no warehouse DSN is configured here).
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from datetime import datetime, timezone

import pytest

from cryptoflow import cli, landing
from cryptoflow.importers.progress import StderrProgress
from tests.unit.importers.test_shapes import clean_rows, mangle, sci, write_file

pytestmark = pytest.mark.quick


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A state dir of its own as the process environment's, with no other CRYPTOFLOW_* set."""
    for key in list(os.environ):
        if key.startswith("CRYPTOFLOW_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CRYPTOFLOW_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def files(tmp_path):
    """A renamed good file and an ambiguous one (one day, all fields <= 12, coarse unix)."""
    header, rows = clean_rows()
    good = write_file(tmp_path / "ada_export.csv", header, rows[:500])
    lo = int(datetime(2021, 3, 5, tzinfo=timezone.utc).timestamp() * 1000)
    day = [r for r in rows if lo <= int(r[0]) < lo + 86_400_000]
    bad = mangle(tmp_path / "j_ADA.csv", day, header, fmt="dmy_dash", unix=lambda ms: sci(ms, 6))
    return good, bad


def run(capsys, *argv) -> tuple[int, list[str], str]:
    rc = cli.main(["import", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out.splitlines(), out.err


def test_dry_run_writes_nothing_and_needs_no_database(state, files, capsys):
    good, bad = files
    rc, out, _ = run(capsys, "cdd", "--dry-run", good)
    assert rc == 0
    assert (
        f"{good}: ADAUSDT 1h: read 500 = loaded 500 + quarantined 0 + duplicates 0 "
        f"(dry run, nothing written: would land 1 snapshots); quarantined by reason: {{}}" in out
    )
    assert not (state / "landing").exists()


def test_bad_file_one_line_others_still_import(state, files, capsys):
    good, bad = files
    rc, out, err = run(capsys, "cdd", "--no-quarantine", bad, good)
    assert rc == 1
    refused = [ln for ln in out if ln.startswith(str(bad))]
    assert refused == [f"{bad}: refused: " + refused[0].split(": refused: ", 1)[1]]
    assert "refused: date order ambiguous (no field above 12" in refused[0]
    assert "Traceback" not in err
    assert any(ln.startswith(f"{good}: ADAUSDT 1h: read 500 = loaded 500") for ln in out)
    assert out[-1].endswith("; 1 file(s) refused")
    snaps = landing.list_snapshots(f"file://{state}/landing/import=ada_export", "1h")
    assert sum(len(landing.read_snapshot(u)) for u in snaps) == 500


def test_dry_run_counts_by_reason_and_symbol_option(state, files, tmp_path, capsys):
    good, _ = files
    header, rows = clean_rows()
    broken = [
        [r[0], "31.08.2021 18h" if i % 5 == 0 else r[1], *r[2:]] for i, r in enumerate(rows[:100])
    ]
    path = write_file(tmp_path / "broken.csv", header, broken)
    rc, out, _ = run(capsys, "cdd", "--dry-run", "--symbol", "ADAUSDT", path)
    assert (
        rc == 0
        and "loaded 80 + quarantined 20" in out[-2]
        and "{'unparseable_date': 20}" in out[-2]
    )
    rc, out, _ = run(capsys, "cdd", "--dry-run", "--symbol", "BTCUSDT", good)
    assert rc == 1
    assert (
        out[0] == f"{good}: refused: --symbol BTCUSDT but the symbol column says ADAUSDT (500 rows)"
    )


def _vision_zip(tmp_path, name="BTCUSDT-1m-2024-01.zip"):
    t0 = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
    rows = [
        f"{t},100.5,101.0,100.0,100.7,12.5,{t + 59_999},1258.75,42,6.1,614.3,0"
        for t in range(t0, t0 + 10 * 60_000, 60_000)
    ]
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name.replace(".zip", ".csv"), "\n".join(rows) + "\n")
    return path


def test_binance_vision_checksum(state, tmp_path, capsys):
    path = _vision_zip(tmp_path)
    rc, out, _ = run(capsys, "binance-vision", "--dry-run", path)
    assert (
        rc == 0
        and out[0] == f"{path}: note: no {path.name}.CHECKSUM beside it: integrity not verified"
    )
    checksum = tmp_path / f"{path.name}.CHECKSUM"
    checksum.write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
    rc, out, _ = run(capsys, "binance-vision", "--dry-run", path)
    assert rc == 0 and out[0].startswith(f"{path}: BTCUSDT 1m: read 10 = loaded 10")
    checksum.write_text(f"{'0' * 64}  {path.name}\n")
    good = _vision_zip(tmp_path, "ETHUSDT-1m-2024-01.zip")
    rc, out, _ = run(capsys, "binance-vision", "--no-quarantine", path, good)
    assert rc == 1
    assert out[0] == (
        f"{path}: refused: checksum mismatch: the file's sha256 is "
        f"{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}..., {checksum.name} says "
        f"0000000000000000..."
    )
    assert any(ln.startswith(f"{good}: ETHUSDT 1m: read 10 = loaded 10") for ln in out)
    assert not (state / "landing" / "import=BTCUSDT-1m-2024-01").exists()


def test_binance_vision_renamed_needs_symbol(state, tmp_path, capsys):
    path = _vision_zip(tmp_path)
    renamed = path.rename(tmp_path / "january.zip")
    rc, out, _ = run(capsys, "binance-vision", "--dry-run", renamed)
    assert rc == 1 and "give --symbol" in out[0]
    rc, out, _ = run(capsys, "binance-vision", "--dry-run", "--symbol", "BTCUSDT", renamed)
    assert rc == 0 and any(
        ln.startswith(f"{renamed}: BTCUSDT 1m: read 10 = loaded 10") for ln in out
    )


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_on_stderr():
    log = _Stream(tty=False)
    p = StderrProgress("big.csv", log)
    for done in range(10_000, 200_001, 10_000):
        p("reading", done, 200_000)
    p("checking", 10_000, 200_000)
    p.done()
    assert log.getvalue().splitlines() == [
        f"big.csv: reading {n}/200000 rows" for n in (50_000, 100_000, 150_000, 200_000)
    ]
    bar = _Stream(tty=True)
    p = StderrProgress("big.csv", bar)
    p("reading", 100, 200)
    p.done()
    assert bar.getvalue() == "\rbig.csv: reading  [###############...............] 100/200 rows\n"
