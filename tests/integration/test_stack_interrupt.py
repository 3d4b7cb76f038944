"""Ctrl-C during `cryptoflow up`, at each of its stages, then `cryptoflow down`: no process is left.

For real: `up` runs in a session of its own, as under a terminal, and gets SIGINT on its whole
process group (what Ctrl-C sends) the moment its output reaches a stage, or some seconds after it.
One state dir throughout, so each `up` goes further than the last (the first one initialises the
cluster and starts the feed; the Superset stages come with Superset's first set-up). Then `up` is
SIGKILLed while Superset starts and its pid files are deleted: nothing can clean up after that
but `down`, which must find the strays from the stack variable in their environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cryptoflow_stack import process
from cryptoflow_stack.postgres import LocalPostgres
from cryptoflow.settings import read_credentials
from tests.conftest import stack_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "cryptoflow")

# (arguments of `up`, the output line that marks the stage, seconds after it to wait, what runs then)
STAGES = [
    (["up", "--demo"], "Collector", 0, "PostgreSQL and the feed up, Airflow not started"),
    (["up"], "PostgreSQL   ", 0, "Airflow being initialised and started"),
    (["up"], "superset: db upgrade done", 0, "Airflow up, Superset's admin being created"),
    (["up"], "superset: starting", 2, "Superset's gunicorn starting"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory, shared_data):
    # `up --demo` replays the shared data: without it the demo refuses to start (and these skip).
    env = stack_env(
        tmp_path_factory.mktemp("interrupt-state"),
        ports=("PG", "AIRFLOW", "SUPERSET", "REPLAY"),
        CRYPTOFLOW_SHARED_DATA=str(shared_data),
        CRYPTOFLOW_BINANCE_MODE="replay",
        CRYPTOFLOW_SYMBOLS="BTCUSDT",
    )
    yield env
    subprocess.run([CLI, "down"], env=env, capture_output=True, text=True, timeout=300)


def _up_until(args, env, marker, after, sig, timeout=600):
    """Run `cryptoflow <args>` in its own session; send `sig` to its group `after` s past `marker`."""
    proc = subprocess.Popen(
        [CLI, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line.rstrip())
        if line.startswith(marker):
            time.sleep(after)
            os.killpg(proc.pid, sig)
            break
        assert time.monotonic() < deadline, f"no {marker!r} in time:\n" + "\n".join(seen)
    else:
        proc.wait()
        pytest.fail(
            f"`cryptoflow {' '.join(args)}` ended (rc {proc.returncode}) before {marker!r}:\n"
            + "\n".join(seen)
            + proc.stderr.read()[-3000:]
        )
    out, err = proc.communicate(timeout=300)
    return proc.returncode, seen + out.splitlines(), err.strip().splitlines()


def _cluster(env) -> LocalPostgres:
    state = Path(env["CRYPTOFLOW_STATE_DIR"])
    creds = read_credentials(state / "credentials.env")
    return LocalPostgres(
        state / "postgres",
        int(env["CRYPTOFLOW_PG_PORT"]),
        superuser_password=creds["CF_ADMIN_PASSWORD"],
    )


def _assert_nothing_runs(env, when):
    state = Path(env["CRYPTOFLOW_STATE_DIR"])
    left = process.stack_processes(state)
    assert left == [], f"{when}: still running: " + "; ".join(
        f"{p.service}: {p.describe()}" for p in left
    )
    assert not _cluster(env).is_running(), f"{when}: PostgreSQL still runs"
    for name in (
        "CRYPTOFLOW_PG_PORT",
        "CRYPTOFLOW_AIRFLOW_PORT",
        "CRYPTOFLOW_SUPERSET_PORT",
        "CRYPTOFLOW_REPLAY_PORT",
    ):
        assert not process.port_in_use("127.0.0.1", int(env[name])), f"{when}: {name} still taken"


def _down(env):
    res = subprocess.run([CLI, "down"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.mark.parametrize("args,marker,after,stage", STAGES, ids=[s[3] for s in STAGES])
def test_ctrl_c_during_up_stops_what_it_started(env, args, marker, after, stage):
    rc, out, err = _up_until(args, env, marker, after, signal.SIGINT)
    assert rc == 130, (out, err)
    assert err and err[-1].startswith("cryptoflow up: interrupted (SIGINT): stopped "), err
    _assert_nothing_runs(env, f"after Ctrl-C ({stage})")
    _down(env)
    _assert_nothing_runs(env, f"after down ({stage})")


def test_down_stops_a_killed_up_s_services_without_their_pid_files(env):
    rc, out, err = _up_until(["up"], env, "superset: starting", 3, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    state = Path(env["CRYPTOFLOW_STATE_DIR"])
    running = process.stack_processes(state)
    assert {p.service for p in running} >= {
        "airflow-scheduler",
        "airflow-api-server",
        "superset",
    }, running
    for pid_file in (state / "run").glob("*.pid"):
        pid_file.unlink()  # as if `up` had died between a spawn and its pid file
    said = _down(env)
    assert "without a pid file" in said and "superset" in said, said
    _assert_nothing_runs(env, "after down of a killed up")
