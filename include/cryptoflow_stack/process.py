"""Background services of the local stack: started detached, tracked by pid files, stopped by group.

Each service runs in its own session (setsid) so that stopping it signals the whole process group:
Airflow and gunicorn fork workers that must go down with their parent.

Each service also carries its stack in two marks that every process it forks inherits: its
environment (STACK_VAR = the state dir, SERVICE_VAR = its name) and an open descriptor of
<run dir>/marks/<name>, which survives where the environment does not (Airflow's services
overwrite theirs with setproctitle).
`stack_processes` finds them all from /proc even when a pid file is lost (an interrupted `up`, a
deleted state dir), and `down` stops those strays too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# Inherited by every process a service forks (gunicorn workers, Airflow task runners, spark-submit).
STACK_VAR = "CRYPTOFLOW_STACK"
SERVICE_VAR = "CRYPTOFLOW_SERVICE"
MARK_DIR = "marks"


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
    if _is_zombie(
        pid
    ):  # exited, but its parent (a `cryptoflow up` still waiting) has not reaped it
        return None
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def start(
    name: str,
    argv: list[str],
    env: dict[str, str],
    run_dir: Path,
    log_dir: Path,
    cwd: Path | None = None,
) -> int:
    """Start `argv` detached unless already running; output goes to <log_dir>/<name>.log."""
    existing = read_pid(run_dir, name)
    if existing:
        return existing
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    log = open(Path(log_dir) / f"{name}.log", "ab")
    env = {**env, STACK_VAR: stack_id(Path(run_dir).parent), SERVICE_VAR: name}
    mark = Path(run_dir) / MARK_DIR / name
    mark.parent.mkdir(exist_ok=True)
    mark.touch()
    mark_fd = os.open(mark, os.O_RDONLY)
    try:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(mark_fd,),
        )
    finally:
        os.close(mark_fd)
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


def wait_http(
    url: str, timeout: float, name: str, log_file: Path | None = None, pid_alive=None
) -> None:
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


# --- the stack's processes, found without pid files ----------------------------------------------


def stack_id(state_dir: Path) -> str:
    """What STACK_VAR holds for the stack of `state_dir` (its absolute path)."""
    return str(Path(state_dir).absolute())


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    pgid: int
    service: str | None  # SERVICE_VAR of the service it belongs to (None: not one of a stack's)
    stack: str | None  # STACK_VAR: the state dir of the stack it belongs to
    cwd: str | None
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} `{self.command[:80]}`"


def _environ_bytes(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _environ(pid: int) -> dict[str, str]:
    raw = _environ_bytes(pid)
    return dict(
        item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
    )


def _open_files(pid: int) -> list[str]:
    """What the process's descriptors point at (paths, `socket:[inode]`, ...); [] if not visible."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    targets = []
    for fd in fds:
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return targets


def _marks(pid: int) -> list[Path]:
    """The mark files (…/run/marks/<service>) the process holds open (also once deleted)."""
    return [
        Path(t.removesuffix(" (deleted)")) for t in _open_files(pid) if f"/run/{MARK_DIR}/" in t
    ]


def process_info(pid: int) -> ProcessInfo | None:
    try:
        command = " ".join(
            Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split()
        )
        pgid = os.getpgid(pid)
    except (OSError, ProcessLookupError):
        return None
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = None
    env = _environ(pid)
    service, stack = env.get(SERVICE_VAR), env.get(STACK_VAR)
    if stack is None:
        for mark in _marks(pid):
            service, stack = mark.name, str(mark.parent.parent.parent)
    return ProcessInfo(pid, pgid, service, stack, cwd, command)


def _ancestors() -> set[int]:
    """This process and its parents: a `down` run from inside a service's shell must not stop itself."""
    seen, pid = set(), os.getpid()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return seen


def stack_processes(state_dir: Path) -> list[ProcessInfo]:
    """Every live process (zombies aside) that carries the stack of `state_dir`: in its environment,
    or by holding one of its mark files open."""
    wanted, mine = stack_id(state_dir), _ancestors()
    marks = Path(wanted) / "run" / MARK_DIR
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine or _is_zombie(int(entry.name)):
            continue
        pid = int(entry.name)
        if f"{STACK_VAR}={wanted}".encode() not in _environ_bytes(pid) and not any(
            m.parent == marks for m in _marks(pid)
        ):
            continue
        info = process_info(pid)
        if info is not None and info.stack == wanted:
            found.append(info)
    return sorted(found, key=lambda p: p.pid)


def stop_processes(procs: list[ProcessInfo], timeout: float = 30.0) -> list[ProcessInfo]:
    """SIGTERM each process group (each pid where it leads none of them), SIGKILL what is left after
    `timeout`; returns the processes that were signalled."""
    if not procs:
        return []
    groups = {p.pgid for p in procs if p.pgid not in _own_groups()}
    singles = [p.pid for p in procs if p.pgid not in groups]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            _signal(lambda s, g=pgid: os.killpg(g, s), sig)
        for pid in singles:
            _signal(lambda s, p=pid: os.kill(p, s), sig)
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and any(_alive(p.pid) for p in procs):
            time.sleep(0.2)
        if not any(_alive(p.pid) for p in procs):
            break
    return procs


def _own_groups() -> set[int]:
    groups = set()
    for pid in _ancestors():
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    return groups


def _signal(send, sig) -> None:
    try:
        send(sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


# --- who holds a port ------------------------------------------------------------------------------


def port_in_use(host: str, port: int) -> bool:
    """Whether a listener holds host:port (binding with SO_REUSEADDR fails only then, not on TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(inode)
    return inodes


def port_holder(port: int) -> ProcessInfo | None:
    """The process listening on TCP `port`, if this user can see it."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return None
    holders = [
        int(e.name)
        for e in Path("/proc").iterdir()
        if e.name.isdigit() and not inodes.isdisjoint(_open_files(int(e.name)))
    ]
    # Forked servers (gunicorn, the postmaster's children) share the socket: name the lowest pid,
    # usually the parent.
    for pid in sorted(holders):
        info = process_info(pid)
        if info is not None:
            return info
    return None
