"""`cryptoflow up` / `down` / `status` / `airflow ...`: the whole one-machine platform on loopback."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptoflow.local import airflow as airflow_svc
from cryptoflow.local import passwords, process
from cryptoflow.local.postgres import LocalPostgres
from cryptoflow.settings import Settings, read_credentials, with_local_credentials, write_stack_file
from cryptoflow.warehouse.migrate import migrate

# The feed of the demo (cryptoflow.local.demo.start_feed): background services beside Airflow and
# Superset, tracked by pid files like them. `status` always lists them, `down` always stops them.
FEED_SERVICES = ("replay-server", "collector")
AIRFLOW_SERVICES = tuple(f"airflow-{s}" for s in airflow_svc.SERVICES)
SUPERSET_SERVICE = "superset"
# Every service the stack can run, in start order (as `cryptoflow status` lists them).
SERVICES = ("postgres", *AIRFLOW_SERVICES, SUPERSET_SERVICE, *FEED_SERVICES)
# The credentials an Airflow process of the stack needs (see airflow_svc.airflow_env).
_AIRFLOW_CREDENTIALS = ("AIRFLOW_DB_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_SECRET_KEY", "AIRFLOW_JWT_SECRET")


class NotSetUp(RuntimeError):
    """The local stack was never set up (no generated credentials)."""


def cluster(settings: Settings, creds: dict[str, str]) -> LocalPostgres:
    return LocalPostgres(settings.state_dir / "postgres", settings.pg_port,
                         superuser="cf_admin", superuser_password=creds["CF_ADMIN_PASSWORD"])


def start_warehouse(settings: Settings, creds: dict[str, str], log=print) -> LocalPostgres:
    """Private cluster up, databases and login roles in place, warehouse migrated."""
    pg = cluster(settings, creds)
    if pg.init():
        log(f"initialised PostgreSQL cluster in {pg.root}")
    pg.start()
    pg.ensure_database("cryptoflow")
    applied = migrate(pg.dsn("cryptoflow"))
    for m in applied:
        log(f"applied migration {m.path.name}")
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
        missing = [key for key in _AIRFLOW_CREDENTIALS if key not in creds]
        if missing:
            raise NotSetUp(f"the local stack is not set up ({settings.credentials_file} "
                           f"{'is missing' if not creds else 'lacks ' + ', '.join(missing)})")
    return airflow_svc.airflow_env(with_local_credentials(settings, creds), creds)


def up(settings: Settings, with_superset: bool = True, log=print,
       before_airflow: Callable[[Settings], None] | None = None) -> Endpoints:
    """Start the stack with `settings` (recorded in <state>/stack.env for the commands run beside it).

    `before_airflow(settings)` runs once the warehouse is up and before any Airflow service starts
    (the demo starts its feed there, so the first ingest runs find it); its settings carry the
    generated passwords.
    """
    stack_file = write_stack_file(settings)
    creds, new = passwords.ensure(settings.credentials_file)
    # On the first run the settings were read before the passwords existed: every process started
    # below (Airflow tasks, Superset) must get DSNs that carry them.
    settings = with_local_credentials(settings, creds)
    if new:
        log(f"generated credentials in {settings.credentials_file} (mode 600); shown once:")
        for key in ("AIRFLOW_ADMIN_PASSWORD", "SUPERSET_ADMIN_PASSWORD", "CF_WRITER_PASSWORD", "CF_READER_PASSWORD"):
            if key in new:
                log(f"  {key}={creds[key]}")
    settings.logs_dir.mkdir(parents=True, exist_ok=True)

    start_warehouse(settings, creds, log)
    log(f"PostgreSQL   postgresql://127.0.0.1:{settings.pg_port}/cryptoflow")

    if before_airflow is not None:
        before_airflow(settings)

    env = stack_airflow_env(settings, creds)
    airflow_svc.init(settings, creds, env)
    airflow_svc.start(settings, env)
    airflow_url = f"http://{settings.bind_host}:{settings.airflow_port}"
    log(f"Airflow      {airflow_url}  (user admin)")

    superset_url = None
    if with_superset:
        from cryptoflow.local import superset as superset_svc

        superset_svc.init(settings, creds, log=log)
        superset_svc.start(settings, creds)
        superset_svc.import_dashboards(settings, creds, log=log)
        superset_url = f"http://{settings.bind_host}:{settings.superset_port}"
        log(f"Superset     {superset_url}  (user admin)")
    log(f"credentials  {settings.credentials_file}")
    log(f"settings     {stack_file}  (`cryptoflow config` shows them, `cryptoflow airflow ...` runs Airflow's CLI)")
    return Endpoints(settings, f"postgresql://127.0.0.1:{settings.pg_port}/cryptoflow", airflow_url, superset_url,
                     settings.credentials_file)


def down(settings: Settings, log=print) -> None:
    from cryptoflow.local import superset as superset_svc

    superset_svc.stop(settings)
    airflow_svc.stop(settings)
    for name in list(extra_services(settings)):
        process.stop(name, settings.state_dir / "run")
    creds, _ = passwords.ensure(settings.credentials_file)
    cluster(settings, creds).stop()
    log("stopped")


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
    """Every service the stack can run, and any other with a pid file: "running (pid N)" or "stopped"."""
    run_dir = settings.state_dir / "run"
    creds = read_credentials(settings.credentials_file)
    if "CF_ADMIN_PASSWORD" in creds:
        out = {"postgres": _state(_postgres_pid(cluster(settings, creds)))}
    else:
        out = {"postgres": "stopped (not set up)"}
    for name in [*AIRFLOW_SERVICES, SUPERSET_SERVICE, *extra_services(settings)]:
        out[name] = _state(process.read_pid(run_dir, name))
    return out
