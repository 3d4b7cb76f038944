"""`cryptoflow up` / `down` / `status`: the whole one-machine platform on loopback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptoflow.local import airflow as airflow_svc
from cryptoflow.local import passwords, process
from cryptoflow.local.postgres import LocalPostgres
from cryptoflow.settings import Settings, read_credentials, with_local_credentials
from cryptoflow.warehouse.migrate import migrate


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


def up(settings: Settings, with_superset: bool = True, log=print) -> Endpoints:
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

    env = airflow_svc.airflow_env(settings, creds)
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


def extra_services(settings: Settings):
    """Other services started under the state dir (collector, replay server...)."""
    run_dir = settings.state_dir / "run"
    if not run_dir.is_dir():
        return []
    return sorted(p.stem for p in run_dir.glob("*.pid")
                  if not p.stem.startswith("airflow-") and p.stem != "superset")


def status(settings: Settings) -> dict[str, str]:
    run_dir = settings.state_dir / "run"
    out = {}
    creds = read_credentials(settings.credentials_file)
    if creds:
        out["postgres"] = "running" if cluster(settings, creds).is_running() else "stopped"
    else:
        out["postgres"] = "not set up"
    for name in [f"airflow-{s}" for s in airflow_svc.SERVICES] + ["superset"] + extra_services(settings):
        pid = process.read_pid(run_dir, name)
        out[name] = f"running (pid {pid})" if pid else "stopped"
    return out
