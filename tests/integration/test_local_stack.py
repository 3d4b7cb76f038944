"""The README's run command for real: `cryptoflow up` starts PostgreSQL, Airflow and Superset on loopback.

One test, because the stack takes ~1-2 minutes to start on 2 cores; it checks what a user sees
first: the DAGs listed with no import errors, Superset answering, generated credentials (mode 600,
no admin/admin), nothing listening beyond loopback, and `cryptoflow down` stopping it all.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest

from cryptoflow_stack.postgres import free_port
from cryptoflow.settings import read_credentials
from tests.conftest import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "cryptoflow")


def _post_json(url, body, headers=None):
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def _get_json(url, token):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def _listening_ports_of_pids(pids: set[int]) -> list[str]:
    """Local addresses of TCP listeners owned by the given processes (from ss)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        if any(f"pid={p}," in line for p in pids):
            found.append(line.split()[3])
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    state = tmp_path_factory.mktemp("stack-state")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CRYPTOFLOW"))}
    env.update(
        {
            "CRYPTOFLOW_HOME": str(PROJECT_ROOT),
            "CRYPTOFLOW_STATE_DIR": str(state),
            "CRYPTOFLOW_PG_PORT": str(free_port()),
            "CRYPTOFLOW_AIRFLOW_PORT": str(free_port()),
            "CRYPTOFLOW_SUPERSET_PORT": str(free_port()),
        }
    )
    up = subprocess.run([CLI, "up"], env=env, capture_output=True, text=True, timeout=900)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield env, state, up.stdout
    finally:
        down = subprocess.run([CLI, "down"], env=env, capture_output=True, text=True, timeout=300)
        assert down.returncode == 0, down.stderr[-2000:]


def test_up_serves_airflow_and_superset_on_loopback(stack):
    env, state, output = stack
    creds_file = state / "credentials.env"
    assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600
    creds = read_credentials(creds_file)
    assert (
        creds["AIRFLOW_ADMIN_PASSWORD"] != "admin" and creds["SUPERSET_ADMIN_PASSWORD"] != "admin"
    )
    # Printed once, on first run.
    assert creds["AIRFLOW_ADMIN_PASSWORD"] in output

    airflow = f"http://127.0.0.1:{env['CRYPTOFLOW_AIRFLOW_PORT']}"
    with pytest.raises(urllib.error.HTTPError):
        _post_json(f"{airflow}/auth/token", {"username": "admin", "password": "admin"})
    token = _post_json(
        f"{airflow}/auth/token", {"username": "admin", "password": creds["AIRFLOW_ADMIN_PASSWORD"]}
    )["access_token"]

    expected = {p.stem for p in (PROJECT_ROOT / "dags").glob("*.py") if not p.name.startswith("_")}
    deadline = time.monotonic() + 180  # the dag-processor parses the folder shortly after start
    listed: set[str] = set()
    while time.monotonic() < deadline:
        listed = {d["dag_id"] for d in _get_json(f"{airflow}/api/v2/dags?limit=100", token)["dags"]}
        if expected <= listed:
            break
        time.sleep(3)
    assert expected <= listed
    assert _get_json(f"{airflow}/api/v2/importErrors", token)["total_entries"] == 0

    superset = f"http://127.0.0.1:{env['CRYPTOFLOW_SUPERSET_PORT']}"
    with urllib.request.urlopen(f"{superset}/health", timeout=10) as resp:
        assert resp.status == 200

    # Every service of the stack listens on loopback only.
    run_dir = state / "run"
    pids = {int(p.read_text()) for p in run_dir.glob("*.pid")}
    children = subprocess.run(
        ["pgrep", "-g", ",".join(map(str, pids))], capture_output=True, text=True
    ).stdout
    pids |= {int(x) for x in children.split()}
    listeners = _listening_ports_of_pids(pids)
    assert listeners, "no listener found for the stack's processes"
    assert all(addr.startswith("127.0.0.1:") for addr in listeners), listeners


def test_dashboard_role_cannot_write_in_the_running_stack(stack):
    env, state, _ = stack
    creds = read_credentials(state / "credentials.env")
    dsn = f"postgresql://cf_reader:{creds['CF_READER_PASSWORD']}@127.0.0.1:{env['CRYPTOFLOW_PG_PORT']}/cryptoflow"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM market.candles").fetchone()[0] == 0
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute(
                "INSERT INTO ops.quarantine (source, reason, raw_record) VALUES ('t', 't', 't')"
            )
