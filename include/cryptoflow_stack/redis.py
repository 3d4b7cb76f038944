"""Redis of the local stack: the Celery broker when CRYPTOFLOW_AIRFLOW_EXECUTOR=celery.

Debian's redis-server binary, run as a service of the stack like the others (pid file, own session,
log under <state>/logs), with its own configuration: loopback only, a generated password, its
directory under the state dir and no snapshots (the broker holds only queued task messages; a task
lost with them is rescheduled by Airflow, which keeps the truth in its metadata database).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

from cryptoflow_stack import process
from cryptoflow.settings import Settings

SERVICE = "redis"


def server_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise RuntimeError(
            "CRYPTOFLOW_AIRFLOW_EXECUTOR=celery needs Redis as its broker: "
            "`make setup` installs it (apt-get install redis-server)"
        )
    return found


def broker_url(settings: Settings, password: str) -> str:
    return f"redis://:{password}@127.0.0.1:{settings.redis_port}/0"


def write_config(settings: Settings, password: str) -> Path:
    """<state>/redis/redis.conf (mode 600: it holds the password)."""
    root = settings.state_dir / "redis"
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "redis.conf"
    lines = [
        "bind 127.0.0.1",
        "protected-mode yes",
        f"port {settings.redis_port}",
        f"requirepass {password}",
        f"dir {root}",
        'save ""',
        "appendonly no",
        "daemonize no",
        "databases 1",
    ]
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.chmod(conf, 0o600)
    return conf


def ping(port: int, password: str, timeout: float = 2.0) -> bool:
    """AUTH + PING over the wire protocol (no client library needed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            data = b""
            while data.count(b"\r\n") < 2:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    return data.startswith(b"+OK\r\n+PONG")


def start(settings: Settings, password: str, timeout: float = 30.0) -> None:
    run_dir = settings.state_dir / "run"
    conf = write_config(settings, password)
    process.start(
        SERVICE, [server_binary(), str(conf)], dict(os.environ), run_dir, settings.logs_dir
    )
    deadline = time.monotonic() + timeout
    while not ping(settings.redis_port, password):
        if process.read_pid(run_dir, SERVICE) is None or time.monotonic() > deadline:
            log = settings.logs_dir / f"{SERVICE}.log"
            tail = (
                "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                if log.exists()
                else ""
            )
            raise RuntimeError(
                f"Redis did not come up on 127.0.0.1:{settings.redis_port}. Log tail:\n{tail}"
            )
        time.sleep(0.2)
