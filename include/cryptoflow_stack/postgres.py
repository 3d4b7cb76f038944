"""A private PostgreSQL cluster under a project directory, on loopback and its own port.

PostgreSQL refuses to run as root; when we are root the server runs as the `postgres` system user
(created by the Debian package) and its data directory is owned by that user.

A throwaway cluster (tests) records its owning process in `owner.pid`: a killed owner never stops
its server, and `reap_orphaned_clusters` cleans up after it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import psycopg.sql

log = logging.getLogger(__name__)

# Where clusters of a root-only directory move to (see LocalPostgres), and where tests put theirs.
SCRATCH_BASE = Path("/var/tmp")
CLUSTER_PREFIX = "cryptoflow-pg-"
OWNER_FILE = "owner.pid"
# In a moved cluster: the directory it was asked for (<state dir>/postgres), to tell when its
# checkout is gone (`moved_clusters`, `cryptoflow db reap`).
ORIGIN_FILE = "origin"


class PostgresError(RuntimeError):
    pass


def find_pg_bin() -> Path:
    """Directory holding initdb/pg_ctl/postgres: $PG_BIN, else the newest /usr/lib/postgresql/N/bin."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if candidates:
        return candidates[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise PostgresError(
        "PostgreSQL server binaries not found (initdb, pg_ctl). Install them with "
        "`apt-get install postgresql` (scripts/bootstrap.sh does this) or set PG_BIN."
    )


def _run_as() -> str | None:
    """The user the server must run as: None for ourselves, 'postgres' when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresError(
            "running as root needs the 'postgres' system user (apt-get install postgresql)"
        ) from None
    return "postgres"


def _accessible_by(user: str, path: Path) -> bool:
    return (
        subprocess.run(
            ["runuser", "-u", user, "--", "test", "-w", str(path)], capture_output=True
        ).returncode
        == 0
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalPostgres:
    """initdb/start/stop of one cluster. `superuser_password` protects the superuser over TCP."""

    root: Path  # directory for this cluster (data/, socket/, log)
    port: int
    superuser: str = "cf_admin"
    superuser_password: str = "cf_admin"
    host: str = "127.0.0.1"
    # Record this process as the owner, so the cluster is reaped once it dies. Never for a cluster
    # that outlives its starter (the stack's: `cryptoflow up` exits while the server runs on).
    throwaway: bool = False

    def __post_init__(self):
        self.root = self.requested_root = Path(self.root)
        self.user = _run_as()
        if self.user and not self._dir_usable():
            # A root-only parent (e.g. a mktemp -d checkout) hides our state dir from the postgres user:
            # keep the cluster in a directory of its own, named after the requested one.
            tag = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
            self.root = SCRATCH_BASE / f"{CLUSTER_PREFIX}{tag}"
        self.bin = find_pg_bin()

    @property
    def moved(self) -> bool:
        """Whether the cluster lives in SCRATCH_BASE instead of the directory it was asked for."""
        return self.requested_root != self.root

    def _dir_usable(self) -> bool:
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root
        os.chown(probe, pwd.getpwnam(self.user).pw_uid, pwd.getpwnam(self.user).pw_gid)
        return _accessible_by(self.user, probe)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def dsn(
        self, dbname: str = "postgres", user: str | None = None, password: str | None = None
    ) -> str:
        user = user or self.superuser
        password = (
            self.superuser_password if password is None and user == self.superuser else password
        )
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def _cmd(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if self.user:
            args = ["runuser", "-u", self.user, "--", *args]
        return subprocess.run(args, capture_output=True, text=True, **kw)

    def _prepare_dirs(self):
        for d in (self.root, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
            if self.user:
                info = pwd.getpwnam(self.user)
                os.chown(d, info.pw_uid, info.pw_gid)

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> bool:
        """initdb unless already done; returns True when a new cluster was created."""
        if self.initialized:
            return False
        self._prepare_dirs()
        self._claim()
        pwfile = self.root / ".pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        os.chmod(pwfile, 0o600)
        if self.user:
            info = pwd.getpwnam(self.user)
            os.chown(pwfile, info.pw_uid, info.pw_gid)
        try:
            res = self._cmd(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.superuser,
                    f"--pwfile={pwfile}",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            raise PostgresError(f"initdb failed:\n{res.stdout}\n{res.stderr}")
        return True

    def _claim(self):
        """Record who the cluster belongs to: a throwaway one its owning process, a moved one the
        directory it stands in for (so that `cryptoflow db reap` knows when that is gone)."""
        if self.moved and not self.throwaway:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / ORIGIN_FILE).write_text(f"{self.requested_root.absolute()}\n")
        if self.throwaway:
            (self.root / OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")

    def is_running(self) -> bool:
        if not self.initialized:
            return False
        res = self._cmd([str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "status"])
        return res.returncode == 0

    def start(self, timeout: float = 30.0, fsync: bool = True):
        if self.is_running():
            return
        self._claim()  # before the server exists: a kill from here on leaves an owner file behind
        opts = (
            f"-c listen_addresses={self.host} -c port={self.port} "
            f"-c unix_socket_directories={self.socket_dir} -c max_connections=200 "
            "-c shared_buffers=256MB -c work_mem=32MB -c maintenance_work_mem=256MB "
            "-c max_wal_size=2GB -c log_min_messages=warning"
        )
        if not fsync:  # throwaway test clusters only
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        res = self._cmd(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                opts,
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ]
        )
        if res.returncode != 0:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise PostgresError(
                f"PostgreSQL did not start on {self.host}:{self.port}:\n{res.stdout}{res.stderr}\n{log}"
            )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.2)
        raise PostgresError(f"PostgreSQL on port {self.port} not ready: {last}")

    def stop(self, mode: str = "fast"):
        if not self.is_running():
            return
        res = self._cmd(
            [str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]
        )
        if res.returncode != 0:
            raise PostgresError(f"pg_ctl stop failed: {res.stderr}")

    def restart(self, **kw):
        self.stop()
        self.start(**kw)

    def destroy(self):
        self.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # --- roles and databases -------------------------------------------------------------------

    def ensure_database(self, name: str, owner: str | None = None):
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(
                    psycopg.sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        psycopg.sql.Identifier(name),
                        psycopg.sql.Identifier(owner or self.superuser),
                    )
                )

    def ensure_login_role(self, name: str, password: str):
        """Create the role if needed and (re)set its password; roles from migrations are NOLOGIN."""
        ident = psycopg.sql.Identifier(name)
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
                conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(ident))
            conn.execute(
                psycopg.sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                    ident, psycopg.sql.Literal(password)
                )
            )


# --- reaping throwaway clusters of dead owners ---------------------------------------------------


def _start_time(pid: int) -> str | None:
    """When the process started (field 22 of /proc/<pid>/stat): with the pid it names one process,
    so a reused pid is not mistaken for the owner. None once it is gone or a zombie (a SIGKILLed
    child not yet waited for can clean up nothing either)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command name) may hold spaces and parentheses: count fields after its last ')'.
    state, *rest = stat[stat.rindex(")") + 2 :].split()
    return None if state == "Z" else rest[18]


def _owner_alive(root: Path) -> bool | None:
    """Whether the process in root's owner file still runs; None without a readable owner file."""
    try:
        pid_text, started = (root / OWNER_FILE).read_text().split()
        pid = int(pid_text)
    except (
        OSError,
        ValueError,
    ):  # no file (not a throwaway cluster), someone else's, or half written
        return None
    return _start_time(pid) == started


def _ours(root: Path) -> bool:
    """Owned by the user our servers run as: another user's cluster is theirs to reap."""
    user = _run_as()
    uid = pwd.getpwnam(user).pw_uid if user else os.geteuid()
    try:
        return root.stat().st_uid == uid
    except FileNotFoundError:  # another run reaped it first
        return False


def _destroy_orphan(root: Path):
    cluster = LocalPostgres(root, port=0)
    if (
        cluster.root != root
    ):  # unusable by the server's user: LocalPostgres moved to another directory
        raise PostgresError(f"{root} is not accessible to the server's user")
    cluster.destroy()
    if root.exists():
        raise PostgresError(f"{root} could not be removed")


def reap_orphaned_clusters(base_dir: Path = SCRATCH_BASE) -> list[Path]:
    """Stop (immediate) and remove the throwaway clusters in base_dir whose owner is dead; returns them.

    A cluster without an owner file (the stack's own, anything not made `throwaway`) is never touched,
    nor one whose owner still runs.
    """
    reaped = []
    for root in sorted(Path(base_dir).glob(f"{CLUSTER_PREFIX}*")):
        if not root.is_dir() or _owner_alive(root) is not False or not _ours(root):
            continue
        try:
            _destroy_orphan(root)
        except PostgresError as exc:
            log.warning("could not reap orphaned PostgreSQL cluster %s: %s", root, exc)
            continue
        log.info("reaped orphaned PostgreSQL cluster %s", root)
        reaped.append(root)
    return reaped


# --- clusters moved out of root-only checkouts ------------------------------------------------------


@dataclass(frozen=True)
class MovedCluster:
    root: Path
    origin: Path | None  # the <state dir>/postgres it stands in for; None if not recorded
    running: bool

    @property
    def checkout_gone(self) -> bool:
        """The state dir it belongs to no longer exists (the checkout was deleted)."""
        return self.origin is not None and not self.origin.parent.exists()

    def describe(self) -> str:
        state = "running" if self.running else "stopped"
        if self.origin is None:
            return f"{self.root} ({state}; origin not recorded)"
        return f"{self.root} ({state}) for {self.origin}" + (
            " (deleted)" if self.checkout_gone else ""
        )


def _postmaster_alive(root: Path) -> bool:
    try:
        pid = int((root / "data" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return _start_time(pid) is not None


def moved_clusters(base_dir: Path | None = None) -> list[MovedCluster]:
    """The stack clusters kept in base_dir (SCRATCH_BASE) for checkouts the server's user cannot
    enter (throwaway clusters, which have an owner file, are reap_orphaned_clusters' business)."""
    found = []
    for root in sorted(Path(base_dir or SCRATCH_BASE).glob(f"{CLUSTER_PREFIX}*")):
        if not root.is_dir() or (root / OWNER_FILE).exists():
            continue
        try:
            origin = Path((root / ORIGIN_FILE).read_text().strip())
        except OSError:
            origin = None
        found.append(MovedCluster(root, origin, _postmaster_alive(root)))
    return found


def reap_moved_clusters(base_dir: Path | None = None) -> list[MovedCluster]:
    """Stop (immediate) and remove the moved clusters whose checkout is gone; returns them.
    One whose origin was never recorded is left alone: nothing says it is abandoned."""
    reaped = []
    for moved in moved_clusters(base_dir):
        if not moved.checkout_gone or not _ours(moved.root):
            continue
        try:
            _destroy_orphan(moved.root)
        except PostgresError as exc:
            log.warning(
                "could not remove the cluster %s of a deleted checkout: %s", moved.root, exc
            )
            continue
        reaped.append(moved)
    return reaped
