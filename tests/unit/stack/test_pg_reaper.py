"""The reaper of throwaway PostgreSQL clusters: a real cluster whose owner is SIGKILLed is stopped and
removed; one whose owner runs, or without an owner file, is left alone."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cryptoflow_stack.postgres import (
    CLUSTER_PREFIX,
    OWNER_FILE,
    SCRATCH_BASE,
    LocalPostgres,
    free_port,
    reap_orphaned_clusters,
)

pytestmark = pytest.mark.integration

# The owner: starts a throwaway cluster, says so, then waits to be killed (its finalizers never run).
OWNER_SCRIPT = """
import sys, time
from cryptoflow_stack.postgres import LocalPostgres
pg = LocalPostgres(sys.argv[1], int(sys.argv[2]), superuser_password="test-admin", throwaway=True)
pg.init()
pg.start(fsync=False)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def base_dir():
    # A base of our own (not /var/tmp itself): the reaper under test must not race other runs' clusters.
    # It sits in SCRATCH_BASE because, as root, the `postgres` user cannot enter pytest's tmp_path.
    base = Path(tempfile.mkdtemp(prefix="cf-reaper-test-", dir=SCRATCH_BASE))
    os.chmod(base, 0o755)
    yield base
    for root in base.glob(f"{CLUSTER_PREFIX}*"):  # whatever a failed assertion left running
        LocalPostgres(root, port=0).destroy()
    shutil.rmtree(base, ignore_errors=True)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _process_running(pid: int, wait: float = 5.0) -> bool:
    """Whether pid still runs (a zombie does not) after up to `wait` seconds for it to end."""
    deadline = time.monotonic() + wait
    while True:
        try:
            running = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            running = False
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


def _start_owner(root: Path, port: int) -> subprocess.Popen:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, str(root), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = owner.stdout.readline()  # initdb + start: a few seconds
    assert line.strip() == "ready", f"owner did not start its cluster (exit {owner.poll()})"
    return owner


def test_cluster_of_killed_owner_is_stopped_and_removed_live_one_is_kept(base_dir):
    root, port = base_dir / f"{CLUSTER_PREFIX}owned", free_port()
    owner = _start_owner(root, port)
    try:
        postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
        assert _port_open(port)

        # Owner alive: nothing to reap.
        assert reap_orphaned_clusters(base_dir) == []
        assert _port_open(port) and root.is_dir()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()

    # pg_ctl daemonised the server: it outlives its killed owner.
    assert _port_open(port) and _process_running(postmaster, wait=0)

    assert reap_orphaned_clusters(base_dir) == [root]
    assert not root.exists()
    assert not _port_open(port)
    assert not _process_running(postmaster)


def test_owner_file_decides(base_dir):
    """No server needed: which directories the reaper takes, by their owner file alone."""
    user_cluster = base_dir / f"{CLUSTER_PREFIX}no-owner"  # e.g. the stack's own: never touched
    live = base_dir / f"{CLUSTER_PREFIX}live"
    reused_pid = base_dir / f"{CLUSTER_PREFIX}reused-pid"
    for d in (user_cluster, live, reused_pid):
        LocalPostgres(
            d, port=0
        )._prepare_dirs()  # as the cluster would have them (owned by the server's user)
    LocalPostgres(live, port=0, throwaway=True)._claim()
    # Our own pid with another start time: the pid was reused, the owner is dead.
    (reused_pid / OWNER_FILE).write_text(f"{os.getpid()} 1\n")

    assert reap_orphaned_clusters(base_dir) == [reused_pid]
    assert user_cluster.is_dir() and live.is_dir() and not reused_pid.exists()
