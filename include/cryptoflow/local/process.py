"""Background services of the local stack: started detached, tracked by pid files, stopped by group.

Each service runs in its own session (setsid) so that stopping it signals the whole process group:
Airflow and gunicorn fork workers that must go down with their parent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def pid_file(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / f"{name}.pid"


def read_pid(run_dir: Path, name: str) -> int | None:
    try:
        pid = int(pid_file(run_dir, name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    if _is_zombie(pid):  # exited, but its parent (a `cryptoflow up` still waiting) has not reaped it
        return None
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def start(name: str, argv: list[str], env: dict[str, str], run_dir: Path, log_dir: Path, cwd: Path | None = None) -> int:
    """Start `argv` detached unless already running; output goes to <log_dir>/<name>.log."""
    existing = read_pid(run_dir, name)
    if existing:
        return existing
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    log = open(Path(log_dir) / f"{name}.log", "ab")
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    pid_file(run_dir, name).write_text(str(proc.pid))
    return proc.pid


def stop(name: str, run_dir: Path, timeout: float = 30.0) -> bool:
    """SIGTERM the service's process group, SIGKILL after `timeout`; True if something was stopped."""
    pid = read_pid(run_dir, name)
    pid_file(run_dir, name).unlink(missing_ok=True)
    if not pid:
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def wait_http(url: str, timeout: float, name: str, log_file: Path | None = None, pid_alive=None) -> None:
    """Poll `url` until it answers below 500; raise with the log's tail if it does not in time."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                if resp.status < 500:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        if pid_alive is not None and not pid_alive():
            break
        time.sleep(1)
    tail = ""
    if log_file and Path(log_file).exists():
        tail = "\n".join(Path(log_file).read_text(errors="replace").splitlines()[-40:])
    raise RuntimeError(f"{name} did not come up at {url} ({last}). Log tail:\n{tail}")
