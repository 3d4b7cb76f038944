"""Superset of the local stack: its environment, idempotent init, start and stop.

Superset can't share a virtualenv with Airflow (SQLAlchemy 1.4 vs 2, and more pins), so it lives in
.venv/superset and this module, running in the Airflow venv, only drives it as subprocesses: the
`superset` CLI for setup and gunicorn for the web server. Configuration is
include/superset/superset_config.py, fed from the environment built by `superset_env`.

Every CLI call boots the whole Flask app (~10 s on 2 cores), so `init` records what it did in a
marker file and skips the work on the next `cryptoflow up` unless the Superset version or the
credentials changed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import subprocess
import time
from pathlib import Path

from cryptoflow_stack import process
from cryptoflow import settings as settings_mod
from cryptoflow.settings import Settings
from cryptoflow.superset.bundle import DATABASE_NAME

log = logging.getLogger(__name__)

SERVICE = "superset"
ADMIN_USER = "admin"
MARKER = "cryptoflow-init.json"


class SupersetError(RuntimeError):
    """Superset can't be set up or started; the message says what to do."""


# --- paths and environment ----------------------------------------------------------------------


def venv_bin(settings: Settings) -> Path:
    """bin/ of Superset's own virtualenv; a clear error when it was never created."""
    bin_dir = settings.home / ".venv" / "superset" / "bin"
    missing = [name for name in ("superset", "gunicorn") if not (bin_dir / name).exists()]
    if missing:
        raise SupersetError(
            f"Superset's virtualenv is missing or incomplete ({bin_dir} lacks {', '.join(missing)}): "
            "run `make setup` first."
        )
    return bin_dir


def superset_home(settings: Settings) -> Path:
    return settings.state_dir / "superset"


def config_path(settings: Settings) -> Path:
    return settings.home / "include" / "superset" / "superset_config.py"


def url(settings: Settings) -> str:
    return settings_mod.superset_url(settings)


def superset_env(settings: Settings, creds: dict[str, str]) -> dict[str, str]:
    """Environment of every Superset process: its venv first on PATH, config and secrets from us."""
    bin_dir = venv_bin(settings)
    home = superset_home(settings)
    # The caller runs in the Airflow venv: its interpreter settings must not leak into Superset's
    # Python. FLASK_* is dropped too, because Superset's CLI reads FLASK_<COMMAND>_<OPTION>
    # variables as option values (we use that below to keep secrets out of argv).
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
        and not k.startswith(("FLASK_", "SUPERSET_"))
    }
    env.update(
        {
            "PATH": f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
            "VIRTUAL_ENV": str(bin_dir.parent),
            "FLASK_APP": "superset",
            "SUPERSET_CONFIG_PATH": str(config_path(settings)),
            "SUPERSET_SECRET_KEY": creds["SUPERSET_SECRET_KEY"],
            "SUPERSET_HOME": str(home),  # Superset's own DATA_DIR default
            "CRYPTOFLOW_SUPERSET_HOME": str(home),  # read by superset_config.py
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def warehouse_uri(settings: Settings) -> str:
    """The read-only warehouse DSN in the form Superset's SQLAlchemy 1.4 wants (psycopg2 driver)."""
    dsn = settings.warehouse_reader_dsn
    for prefix in (
        "postgresql+psycopg2://",
        "postgresql+psycopg://",
        "postgresql://",
        "postgres://",
    ):
        if dsn.startswith(prefix):
            return "postgresql+psycopg2://" + dsn[len(prefix) :]
    raise SupersetError(
        f"CRYPTOFLOW_WAREHOUSE_READER_DSN is not a PostgreSQL URI: {dsn.split('@')[-1]!r}"
    )


# --- CLI ----------------------------------------------------------------------------------------


def run_cli(
    settings: Settings,
    env: dict[str, str],
    args: list[str],
    secret_env: dict[str, str] | None = None,
) -> str:
    """Run `superset <args>`; returns its output, raises with the output's tail on failure.

    `secret_env` passes option values as FLASK_<COMMAND>_<OPTION> variables: argv is readable by
    every local user through ps, a process's environment only by its owner.
    """
    res = subprocess.run(
        [str(venv_bin(settings) / "superset"), *args],
        env={**env, **(secret_env or {})},
        cwd=superset_home(settings),
        capture_output=True,
        text=True,
    )
    output = res.stdout + res.stderr
    if res.returncode != 0:
        raise SupersetError(
            f"superset {' '.join(args)} failed (exit {res.returncode}):\n{output[-3000:]}"
        )
    return output


def ensure_admin(
    settings: Settings, env: dict[str, str], password: str, probably_exists: bool = False
) -> None:
    """Create user `admin`, or reset its password so the credentials file is the truth.

    `probably_exists` (the marker says we created it) tries the reset first: one app boot, not two.
    """
    if probably_exists and reset_password(settings, env, password):
        return
    out = run_cli(
        settings,
        env,
        [
            "fab",
            "create-admin",
            "--username",
            ADMIN_USER,
            "--firstname",
            "Cryptoflow",
            "--lastname",
            "Admin",
            "--email",
            "admin@cryptoflow.invalid",
        ],
        {"FLASK_FAB_CREATE_ADMIN_PASSWORD": password},
    )
    if "already exists" in out:
        if not reset_password(settings, env, password):
            raise SupersetError(
                f"Superset says user {ADMIN_USER} exists and is not found:\n{out[-2000:]}"
            )
    elif "created" in out:
        log.info("superset: created user %s", ADMIN_USER)
    else:
        # create-admin exits 0 on errors such as a missing Admin role: read what it said.
        raise SupersetError(f"could not create Superset user {ADMIN_USER}:\n{out[-2000:]}")


def reset_password(settings: Settings, env: dict[str, str], password: str) -> bool:
    """Set the admin's password; False if the user does not exist."""
    out = run_cli(
        settings,
        env,
        ["fab", "reset-password", "--username", ADMIN_USER],
        {"FLASK_FAB_RESET_PASSWORD_PASSWORD": password},
    )
    if "not found" in out:
        return False
    if "reseted" not in out:  # sic: FAB's spelling; it exits 0 whatever happened
        raise SupersetError(
            f"could not reset the password of Superset user {ADMIN_USER}:\n{out[-2000:]}"
        )
    log.info("superset: reset the password of user %s", ADMIN_USER)
    return True


def ensure_warehouse(settings: Settings, env: dict[str, str]) -> None:
    """Register the warehouse (read-only role) as a Superset database, or repoint it."""
    run_cli(
        settings,
        env,
        ["set-database-uri", "--database_name", DATABASE_NAME],
        {"FLASK_SET_DATABASE_URI_URI": warehouse_uri(settings)},
    )
    log.info("superset: database %r -> %s", DATABASE_NAME, warehouse_uri(settings).split("@")[-1])


# --- init marker ----------------------------------------------------------------------------------


def installed_version(settings: Settings) -> str:
    """apache-superset's version in its venv, read from the dist-info name (no interpreter start)."""
    venv = venv_bin(settings).parent
    found = sorted(venv.glob("lib/python*/site-packages/apache_superset-*.dist-info"))
    if not found:
        raise SupersetError(f"apache-superset is not installed in {venv}: run `make setup`.")
    return found[-1].name[len("apache_superset-") : -len(".dist-info")]


def fingerprints(settings: Settings, creds: dict[str, str]) -> dict[str, str]:
    """Keyed hashes of what the user and database steps depend on (the marker holds no secret).

    The secret key is the HMAC key: the stored warehouse password is encrypted with it, so a new
    key also means re-registering the warehouse.
    """
    key = creds["SUPERSET_SECRET_KEY"].encode()
    digest = lambda value: hmac.new(key, value.encode(), hashlib.sha256).hexdigest()  # noqa: E731
    return {
        "admin": digest(creds["SUPERSET_ADMIN_PASSWORD"]),
        "warehouse": digest(warehouse_uri(settings)),
    }


def read_marker(settings: Settings) -> dict:
    home = superset_home(settings)
    if not (home / "superset.db").exists():  # metadata deleted: the marker means nothing
        return {}
    try:
        return json.loads((home / MARKER).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def write_marker(settings: Settings, data: dict) -> None:
    path = superset_home(settings) / MARKER
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


# --- lifecycle ----------------------------------------------------------------------------------


def init(settings: Settings, creds: dict[str, str], force: bool = False) -> None:
    """Metadata schema, roles, admin user and warehouse connection; idempotent.

    The schema migration and `superset init` run once per Superset version; the admin password
    and the warehouse URI are re-applied only when they changed, as each CLI call costs ~10 s.
    Each step is recorded in the marker as soon as it is done, so an interrupted `up` redoes only
    what it had not finished. `force` redoes everything (e.g. after someone changed the admin
    password in the UI).
    """
    home = superset_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    env = superset_env(settings, creds)
    version = installed_version(settings)
    done = {} if force else read_marker(settings)
    if "superset_version" in done:  # a marker written in one go, after every step
        legacy = done.pop("superset_version")
        done.setdefault("schema", legacy)
        done.setdefault("roles", legacy)
    wanted = {"schema": version, "roles": version, **fingerprints(settings, creds)}
    if all(done.get(step) == value for step, value in wanted.items()):
        log.info("superset: metadata up to date (%s)", version)
        return

    def did(step: str) -> None:
        done[step] = wanted[step]
        write_marker(settings, done)

    if done.get("schema") != version:
        _timed("db upgrade", lambda: run_cli(settings, env, ["db", "upgrade"]))
        did("schema")
    if done.get("admin") != wanted["admin"]:
        ensure_admin(
            settings, env, creds["SUPERSET_ADMIN_PASSWORD"], probably_exists="admin" in done
        )
        did("admin")
    if done.get("roles") != version:
        # Roles and permissions: after create-admin, as Superset's own bring-up does.
        _timed("init", lambda: run_cli(settings, env, ["init"]))
        did("roles")
    if done.get("warehouse") != wanted["warehouse"]:
        ensure_warehouse(settings, env)
        did("warehouse")


def _timed(name: str, step) -> None:
    began = time.monotonic()
    step()
    log.info("superset: %s done in %.0f s", name, time.monotonic() - began)


def start(settings: Settings, creds: dict[str, str], timeout: float = 120.0) -> int:
    """gunicorn on bind_host:superset_port (loopback by default); returns once /health answers."""
    run_dir = settings.state_dir / "run"
    superset_home(settings).mkdir(parents=True, exist_ok=True)
    argv = [
        str(venv_bin(settings) / "gunicorn"),
        # One thread per worker: Superset's time-range parser runs pyparsing with its packrat cache
        # enabled, and that cache is global, so two chart requests parsed at once in one process can
        # corrupt each other ("Expected int_operand, found 'day'" on a dashboard, intermittently).
        # Concurrency comes from processes instead (~300 MB each).
        "-w",
        "4",
        "-k",
        "gthread",
        "--threads",
        "1",
        "-b",
        f"{settings.bind_host}:{settings.superset_port}",
        # Superset's queries may run up to SQLLAB_TIMEOUT (60 s); gunicorn's default kills at 30 s.
        "--timeout",
        "120",
        # Explore URLs carry the whole form data: don't cap request-line/header sizes.
        "--limit-request-line",
        "0",
        "--limit-request-field_size",
        "0",
        "superset.app:create_app()",
    ]
    pid = process.start(
        SERVICE,
        argv,
        superset_env(settings, creds),
        run_dir,
        settings.logs_dir,
        cwd=superset_home(settings),
    )
    process.wait_http(
        f"{url(settings)}/health",
        timeout,
        "Superset",
        settings.logs_dir / f"{SERVICE}.log",
        pid_alive=lambda: process.read_pid(run_dir, SERVICE) is not None,
    )
    return pid


def import_dashboards(settings: Settings, creds: dict[str, str]) -> dict[str, int]:
    """Import the dashboards as code (include/superset/assets/) into the running Superset.

    Every `cryptoflow up` does it: the import overwrites by UUID, so it is idempotent, and edits
    made in the UI to these dashboards are replaced by the files (save a copy to keep them).
    """
    from cryptoflow.superset import bundle, importer

    target = importer.Target(url(settings), ADMIN_USER, creds["SUPERSET_ADMIN_PASSWORD"])
    return importer.import_bundle(
        target, settings.warehouse_reader_dsn, settings.home / bundle.ASSETS_DIR
    )


def stop(settings: Settings) -> bool:
    """Stop gunicorn and its workers; True if it was running."""
    return process.stop(SERVICE, settings.state_dir / "run")
