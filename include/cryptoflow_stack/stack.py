"""`cryptoflow up` / `down` / `status` / `airflow ...`: the whole one-machine platform on loopback.

`up` checks every port it will bind before it starts anything; interrupted (Ctrl-C, SIGTERM,
SIGHUP), it stops what it had started and raises Interrupted. `down` stops the services by their
pid files, then every other process that carries the stack in its environment (process.STACK_VAR).
"""

from __future__ import annotations

import logging
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptoflow_stack import airflow as airflow_svc
from cryptoflow_stack import passwords, process
from cryptoflow_stack.postgres import LocalPostgres, moved_clusters
from cryptoflow.settings import Settings, read_credentials, with_local_credentials, write_stack_file
from cryptoflow.warehouse.migrate import migrate

log = logging.getLogger(__name__)

# The feed of the demo (cryptoflow_stack.demo.start_feed): background services beside Airflow and
# Superset, tracked by pid files like them. `status` always lists them, `down` always stops them.
FEED_SERVICES = ("replay-server", "collector")
AIRFLOW_SERVICES = tuple(f"airflow-{s}" for s in airflow_svc.SERVICES)
SUPERSET_SERVICE = "superset"
# Every service the stack can run, in start order (as `cryptoflow status` lists them). With the
# celery executor, `redis` and `airflow-celery-worker` run too: `status` and `down` find them by
# their pid files, as every service beyond these (extra_services).
SERVICES = ("postgres", *AIRFLOW_SERVICES, SUPERSET_SERVICE, *FEED_SERVICES)
# The credentials an Airflow process of the stack needs (see airflow_svc.airflow_env).
_AIRFLOW_CREDENTIALS = (
    "AIRFLOW_DB_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_SECRET_KEY",
    "AIRFLOW_JWT_SECRET",
)


class NotSetUp(RuntimeError):
    """The local stack was never set up (no generated credentials)."""


class PortTaken(RuntimeError):
    """A port the stack needs is held by a process that is not the stack's own."""


class Interrupted(RuntimeError):
    """`up` was interrupted; what it had started is stopped again."""


def cluster(settings: Settings, creds: dict[str, str]) -> LocalPostgres:
    return LocalPostgres(
        settings.state_dir / "postgres",
        settings.pg_port,
        superuser="cf_admin",
        superuser_password=creds["CF_ADMIN_PASSWORD"],
    )


def start_warehouse(settings: Settings, creds: dict[str, str]) -> LocalPostgres:
    """Private cluster up, databases and login roles in place, warehouse migrated."""
    pg = cluster(settings, creds)
    if pg.init():
        log.info("initialised PostgreSQL cluster in %s", pg.root)
    pg.start()
    pg.ensure_database("cryptoflow")
    applied = migrate(pg.dsn("cryptoflow"))
    for m in applied:
        log.info("applied migration %s", m.path.name)
    pg.ensure_login_role("cf_writer", creds["CF_WRITER_PASSWORD"])
    pg.ensure_login_role("cf_reader", creds["CF_READER_PASSWORD"])
    pg.ensure_login_role("airflow", creds["AIRFLOW_DB_PASSWORD"])
    pg.ensure_database("airflow", owner="airflow")
    return pg


@dataclass
class Endpoints:
    settings: Settings  # as the services got them (with the generated passwords)
    postgres: str
    airflow: str
    superset: str | None
    credentials: Path


def stack_airflow_env(settings: Settings, creds: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the stack's Airflow processes: the services get it from `up`, and
    `cryptoflow airflow ...` runs the Airflow CLI with it (AIRFLOW_HOME under the state dir, the
    metadata DB in the private cluster, the generated keys, the DAGs and connections of the settings).

    Without `creds`, they are read from the credentials file; NotSetUp if the stack has none.
    """
    if creds is None:
        creds = read_credentials(settings.credentials_file)
        needed = (
            (*_AIRFLOW_CREDENTIALS, "REDIS_PASSWORD")
            if settings.airflow_executor == "celery"
            else _AIRFLOW_CREDENTIALS
        )
        missing = [key for key in needed if key not in creds]
        if missing:
            raise NotSetUp(
                f"the local stack is not set up ({settings.credentials_file} "
                f"{'is missing' if not creds else 'lacks ' + ', '.join(missing)})"
            )
    return airflow_svc.airflow_env(with_local_credentials(settings, creds), creds)


def up(
    settings: Settings,
    with_superset: bool = True,
    before_airflow: Callable[[Settings], None] | None = None,
) -> Endpoints:
    """Start the stack with `settings` (recorded in <state>/stack.env for the commands run beside it).

    `before_airflow(settings)` runs once the warehouse is up and before any Airflow service starts
    (the demo starts its feed there, so the first ingest runs find it); its settings carry the
    generated passwords.
    """
    check_ports(settings, with_superset=with_superset, with_feed=before_airflow is not None)
    stack_file = write_stack_file(settings)
    settings, creds = _with_credentials(settings)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)

    start_warehouse(settings, creds)
    log.info(f"PostgreSQL   postgresql://127.0.0.1:{settings.pg_port}/cryptoflow")

    if before_airflow is not None:
        before_airflow(settings)

    airflow_url = _start_airflow(settings, creds)
    superset_url = _start_superset(settings, creds) if with_superset else None
    log.info(f"credentials  {settings.credentials_file}")
    log.info(
        f"settings     {stack_file}  (`cryptoflow config` shows them, `cryptoflow airflow ...` runs Airflow's CLI)"
    )
    return Endpoints(
        settings,
        f"postgresql://127.0.0.1:{settings.pg_port}/cryptoflow",
        airflow_url,
        superset_url,
        settings.credentials_file,
    )


def _with_credentials(settings: Settings) -> tuple[Settings, dict[str, str]]:
    """The stack's credentials, generated on the first run (the new ones printed once), and the
    settings carrying them."""
    creds, new = passwords.ensure(settings.credentials_file)
    # On the first run the settings were read before the passwords existed: every process started
    # by `up` (Airflow tasks, Superset) must get DSNs that carry them.
    settings = with_local_credentials(settings, creds)
    if new:
        # Printed to the user's terminal, never logged: a log handler may write them to a file.
        print(f"generated credentials in {settings.credentials_file} (mode 600); shown once:")
        for key in (
            "AIRFLOW_ADMIN_PASSWORD",
            "SUPERSET_ADMIN_PASSWORD",
            "CF_WRITER_PASSWORD",
            "CF_READER_PASSWORD",
        ):
            if key in new:
                print(f"  {key}={creds[key]}")
    return settings, creds


def _start_airflow(settings: Settings, creds: dict[str, str]) -> str:
    """Redis first with the celery executor, then Airflow's metadata DB and services: its URL."""
    if settings.airflow_executor == "celery":
        from cryptoflow_stack import redis

        redis.start(settings, creds["REDIS_PASSWORD"])
        log.info(f"Redis        127.0.0.1:{settings.redis_port}  (Celery broker)")
    env = stack_airflow_env(settings, creds)
    airflow_svc.init(settings, creds, env)
    airflow_svc.start(settings, env)
    airflow_url = f"http://{settings.bind_host}:{settings.airflow_port}"
    executor = (
        "CeleryExecutor, one worker" if settings.airflow_executor == "celery" else "LocalExecutor"
    )
    log.info(f"Airflow      {airflow_url}  (user admin; {executor})")
    return airflow_url


def _start_superset(settings: Settings, creds: dict[str, str]) -> str:
    """Superset initialised, started and its dashboards imported: its URL."""
    from cryptoflow_stack import superset as superset_svc

    superset_svc.init(settings, creds)
    log.info(f"superset: starting on port {settings.superset_port}")
    superset_svc.start(settings, creds)
    superset_svc.import_dashboards(settings, creds)
    superset_url = f"http://{settings.bind_host}:{settings.superset_port}"
    log.info(f"Superset     {superset_url}  (user admin)")
    return superset_url


# --- ports ----------------------------------------------------------------------------------------


def stack_ports(
    settings: Settings, with_superset: bool = True, with_feed: bool = False
) -> dict[str, tuple[int, str]]:
    """What `up` binds: service -> (port, the setting that moves it)."""
    ports = {
        "PostgreSQL": (settings.pg_port, "CRYPTOFLOW_PG_PORT"),
        "Airflow": (settings.airflow_port, "CRYPTOFLOW_AIRFLOW_PORT"),
    }
    if with_superset:
        ports["Superset"] = (settings.superset_port, "CRYPTOFLOW_SUPERSET_PORT")
    if settings.airflow_executor == "celery":
        ports["Redis"] = (settings.redis_port, "CRYPTOFLOW_REDIS_PORT")
    if with_feed and settings.binance_mode == "replay":
        ports["the replay server"] = (settings.replay_port, "CRYPTOFLOW_REPLAY_PORT")
    return ports


def _ours(settings: Settings, holder: process.ProcessInfo | None) -> bool:
    if holder is None:
        return False
    if holder.stack == process.stack_id(settings.state_dir):
        return True
    creds = read_credentials(settings.credentials_file)  # our postmaster has no stack variable
    return "CF_ADMIN_PASSWORD" in creds and holder.pid == _postgres_pid(cluster(settings, creds))


def check_ports(settings: Settings, with_superset: bool = True, with_feed: bool = False) -> None:
    """PortTaken, naming the holder and the ways out, when a port `up` binds is held by anyone but
    this stack (a Superset of another checkout would otherwise answer our login with a 401)."""
    problems = []
    for service, (port, setting) in stack_ports(settings, with_superset, with_feed).items():
        if not process.port_in_use(settings.bind_host, port):
            continue
        holder = process.port_holder(port)
        if _ours(settings, holder):
            continue
        if holder is None:
            who, way_out = "a process this user cannot see", "stop it"
        else:
            home = Path(holder.stack).parent if holder.stack else holder.cwd
            who = f"{holder.describe()} from {home}"
            way_out = (
                f"stop it (`make down` in {home})"
                if holder.stack
                else f"stop it (`kill {holder.pid}`)"
            )
        problems.append(
            f"port {port} ({service}) is taken by {who}: {way_out}, or set {setting} to a free port"
        )
    if problems:
        raise PortTaken("; ".join(problems))


# --- interrupts -------------------------------------------------------------------------------------


def running_services(settings: Settings) -> list[str]:
    """The services of this stack that run now, in start order."""
    return [name for name, state in status(settings).items() if state.startswith("running")]


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def stopped_if_interrupted(settings: Settings) -> Iterator[None]:
    """Around `up` (and the demo after it): on Ctrl-C, SIGTERM or SIGHUP, stop every service that
    was not running before, and every stray of the stack if none was; then raise Interrupted.

    The services run in sessions of their own, so the terminal's Ctrl-C reaches only `up` and its
    foreground commands: what they started would otherwise run on without a word."""
    before = set(running_services(settings))
    previous = {
        sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    except KeyboardInterrupt as exc:
        for sig in previous:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        started = [name for name in running_services(settings) if name not in before]
        stop_services(settings, started)
        strays = (
            [] if before else process.stop_processes(process.stack_processes(settings.state_dir))
        )
        what = ", ".join(started) if started else "nothing was running yet"
        if strays:
            what += f"; {len(strays)} other process(es) of the stack"
        raise Interrupted(
            f"interrupted ({exc.args[0] if exc.args else 'SIGINT'}): stopped {what}"
        ) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)


# --- down and status --------------------------------------------------------------------------------


def stop_services(settings: Settings, names: list[str] | None = None) -> None:
    """Stop the named services (all when None) in reverse start order."""
    from cryptoflow_stack import superset as superset_svc

    run_dir = settings.state_dir / "run"
    every = [*SERVICES, *(n for n in extra_services(settings) if n not in SERVICES)]
    wanted = every if names is None else [n for n in every if n in names]
    # Superset and Airflow first, the feed next, PostgreSQL last: the others write to it.
    order = [
        SUPERSET_SERVICE,
        *reversed(AIRFLOW_SERVICES),
        *(n for n in wanted if n not in SERVICES),
        *FEED_SERVICES,
        "postgres",
    ]
    for name in order:
        if name not in wanted:
            continue
        if name == SUPERSET_SERVICE:
            superset_svc.stop(settings)
        elif name == "postgres":
            creds = read_credentials(settings.credentials_file)
            if "CF_ADMIN_PASSWORD" in creds:
                cluster(settings, creds).stop()
        else:
            process.stop(name, run_dir)


def down(settings: Settings) -> None:
    """Stop every service, then whatever else carries the stack (strays without a pid file)."""
    stop_services(settings)
    strays = process.stop_processes(process.stack_processes(settings.state_dir))
    if strays:
        by_service: dict[str, int] = {}
        for p in strays:
            by_service[p.service or "?"] = by_service.get(p.service or "?", 0) + 1
        log.info(
            "stopped %d process(es) without a pid file: %s",
            len(strays),
            ", ".join(f"{name} x{n}" for name, n in sorted(by_service.items())),
        )
    creds = read_credentials(settings.credentials_file)
    if "CF_ADMIN_PASSWORD" in creds:
        pg = cluster(settings, creds)
        if pg.moved:
            log.info(
                "PostgreSQL cluster kept in %s (%s is not accessible to the postgres user)",
                pg.root,
                pg.requested_root,
            )
    abandoned = [m for m in moved_clusters() if m.checkout_gone]
    if abandoned:
        log.info(
            "%d PostgreSQL cluster(s) of deleted checkouts remain: %s (`cryptoflow db reap` removes them)",
            len(abandoned),
            "; ".join(m.describe() for m in abandoned),
        )
    log.info("stopped")


def extra_services(settings: Settings) -> list[str]:
    """Services beside PostgreSQL, Airflow and Superset: the feed (always), then any other service
    with a pid file under the state dir."""
    run_dir = settings.state_dir / "run"
    others = sorted(p.stem for p in run_dir.glob("*.pid")) if run_dir.is_dir() else []
    return [*FEED_SERVICES, *(name for name in others if name not in SERVICES)]


def _postgres_pid(pg: LocalPostgres) -> int | None:
    """The postmaster's pid if the cluster runs (from `pg_ctl status`)."""
    if not pg.initialized:
        return None
    res = pg._cmd([str(pg.bin / "pg_ctl"), "-D", str(pg.data_dir), "status"])
    if res.returncode != 0:
        return None
    found = re.search(r"PID:\s*(\d+)", res.stdout)
    return int(found.group(1)) if found else None


def _state(pid: int | None) -> str:
    return f"running (pid {pid})" if pid else "stopped"


def status(settings: Settings) -> dict[str, str]:
    """Every service the stack can run, and any other with a pid file: "running (pid N)" or "stopped"
    (PostgreSQL's with the directory it lives in when it was moved out of the checkout)."""
    run_dir = settings.state_dir / "run"
    creds = read_credentials(settings.credentials_file)
    if "CF_ADMIN_PASSWORD" in creds:
        pg = cluster(settings, creds)
        out = {
            "postgres": _state(_postgres_pid(pg)) + (f", cluster in {pg.root}" if pg.moved else "")
        }
    else:
        out = {"postgres": "stopped (not set up)"}
    for name in [*AIRFLOW_SERVICES, SUPERSET_SERVICE, *extra_services(settings)]:
        out[name] = _state(process.read_pid(run_dir, name))
    return out
