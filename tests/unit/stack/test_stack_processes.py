"""The stack's processes are found without pid files, and `up` refuses a port another process holds.

Real processes and sockets: a service started by process.start forks a child (as gunicorn forks
workers), its pid file is lost, and the stack's environment variable still finds both.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cryptoflow import cli, settings
from cryptoflow_stack import process, stack
from cryptoflow_stack.postgres import free_port

pytestmark = pytest.mark.quick

# A parent that forks one child and both sleep: a server and its worker.
FORKING_SERVICE = (
    "import os, time\nif os.fork() == 0:\n    time.sleep(120)\nelse:\n    time.sleep(120)\n"
)
LISTENER = (
    "import socket, sys, time\ns = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
    "print('ready', flush=True)\ntime.sleep(120)\n"
)


@pytest.fixture
def state(isolated_state):
    yield isolated_state
    process.stop_processes(process.stack_processes(isolated_state), timeout=5)


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_service_and_its_children_are_found_and_stopped_without_their_pid_file(
    state, capsys, caplog
):
    pid = process.start(
        "forking",
        [sys.executable, "-c", FORKING_SERVICE],
        dict(os.environ),
        state / "run",
        state / "logs",
    )
    assert _wait_for(lambda: len(process.stack_processes(state)) == 2)
    found = process.stack_processes(state)
    assert {p.service for p in found} == {"forking"}
    assert {p.pgid for p in found} == {pid}  # its own session: the child is in its group
    assert os.getpid() not in {p.pid for p in found}

    process.pid_file(state / "run", "forking").unlink()  # lost, as after an interrupted `up`
    assert cli.main(["status"]) == 0
    assert "(no pid file)            2 process(es) of this stack" in capsys.readouterr().out
    with caplog.at_level(logging.INFO, logger=stack.__name__):
        stack.down(settings.load())
    assert "stopped 2 process(es) without a pid file: forking x2" in caplog.text
    assert process.stack_processes(state) == []
    assert not process._alive(pid)


def test_another_stack_s_processes_are_not_ours(state, tmp_path_factory):
    other = tmp_path_factory.mktemp("other-stack")
    process.start(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(120)"],
        dict(os.environ),
        other / "run",
        other / "logs",
    )
    try:
        assert _wait_for(lambda: len(process.stack_processes(other)) == 1)
        assert process.stack_processes(state) == []
    finally:
        process.stop_processes(process.stack_processes(other), timeout=5)


def _listen(port: int, env=None) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", LISTENER, str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).parent,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_up_names_a_foreign_listener_and_starts_nothing(state, capsys, monkeypatch):
    port = free_port()
    monkeypatch.setenv("CRYPTOFLOW_AIRFLOW_PORT", str(port))
    monkeypatch.setenv("CRYPTOFLOW_PG_PORT", str(free_port()))
    foreign = _listen(port)
    try:
        assert process.port_holder(port).pid == foreign.pid
        rc = cli.main(["up", "--no-superset"])
        err = capsys.readouterr().err.strip().splitlines()
    finally:
        foreign.kill()
        foreign.wait()
    assert rc == 2
    assert len(err) == 1, err
    line = err[0]
    assert f"port {port} (Airflow) is taken by pid {foreign.pid}" in line
    assert str(Path(__file__).parent) in line  # from which directory
    assert f"kill {foreign.pid}" in line and "CRYPTOFLOW_AIRFLOW_PORT" in line  # the two ways out
    assert not (state / "postgres" / "data").exists()  # nothing was started, not even initdb
    assert not (state / "credentials.env").exists()


def test_a_port_held_by_another_checkout_s_stack_says_which(state, tmp_path_factory):
    other = tmp_path_factory.mktemp("other-checkout") / ".state"
    port = free_port()
    process.start(
        "superset",
        [sys.executable, "-c", LISTENER, str(port)],
        dict(os.environ),
        other / "run",
        other / "logs",
    )
    assert _wait_for(lambda: process.port_in_use("127.0.0.1", port))
    try:
        cfg = settings.load(
            {
                "CRYPTOFLOW_STATE_DIR": str(state),
                "CRYPTOFLOW_SUPERSET_PORT": str(port),
                "CRYPTOFLOW_PG_PORT": str(free_port()),
                "CRYPTOFLOW_AIRFLOW_PORT": str(free_port()),
            }
        )
        with pytest.raises(stack.PortTaken) as err:
            stack.check_ports(cfg)
        assert f"port {port} (Superset)" in str(err.value)
        assert f"`make down` in {other.parent}" in str(err.value)
        assert "CRYPTOFLOW_SUPERSET_PORT" in str(err.value)
    finally:
        process.stop_processes(process.stack_processes(other), timeout=5)


def test_a_port_held_by_this_stack_is_fine(state):
    port = free_port()
    process.start(
        "superset",
        [sys.executable, "-c", LISTENER, str(port)],
        dict(os.environ),
        state / "run",
        state / "logs",
    )
    assert _wait_for(lambda: process.port_in_use("127.0.0.1", port))
    cfg = settings.load(
        {
            "CRYPTOFLOW_STATE_DIR": str(state),
            "CRYPTOFLOW_SUPERSET_PORT": str(port),
            "CRYPTOFLOW_PG_PORT": str(free_port()),
            "CRYPTOFLOW_AIRFLOW_PORT": str(free_port()),
        }
    )
    stack.check_ports(cfg)  # no PortTaken: a second `up` of a running stack goes on


def test_a_closed_socket_in_time_wait_is_not_a_taken_port():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first: its end lingers in TIME_WAIT
    client.close()
    server.close()
    assert not process.port_in_use("127.0.0.1", port)
