"""Shared fixtures: a real throwaway PostgreSQL, a local SparkSession, an Airflow home for dag.test().

Markers: `quick` tests need no service and run in seconds (`pytest -m quick`); `integration` tests
start real services; `slow` ones take more than ~30 s.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from cryptoflow_stack.postgres import (
    CLUSTER_PREFIX,
    SCRATCH_BASE,
    LocalPostgres,
    free_port,
    reap_moved_clusters,
    reap_orphaned_clusters,
)
from cryptoflow.settings import shared_data_dir
from cryptoflow.warehouse.migrate import migrate

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The process environment alone: a developer's stack file must not move the tests' fixtures.
SHARED_DATA = shared_data_dir(os.environ)

# Airflow reads its configuration when first imported, so the test Airflow home is set before any
# test module can import it: metadata in SQLite under a throwaway directory, the project's DAGs.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="cryptoflow-airflow-test-"))
TEST_AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
    "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    # The test run must never touch a developer's own local stack.
    "CRYPTOFLOW_STATE_DIR": str(_AIRFLOW_HOME / "state"),
}
os.environ.update(TEST_AIRFLOW_ENV)


@dataclass(frozen=True)
class Warehouse:
    """A migrated warehouse database in a throwaway cluster, with DSNs for each role."""

    cluster: LocalPostgres
    dbname: str
    admin_dsn: str
    writer_dsn: str
    reader_dsn: str


@pytest.fixture(scope="session")
def pg_cluster() -> LocalPostgres:
    """One private PostgreSQL cluster for the whole test session (initdb + start take ~1 s).

    It lives where pytest_sessionstart reaps (a fresh name each run, never a killed run's cluster).
    """
    root = tempfile.mkdtemp(prefix=CLUSTER_PREFIX, dir=SCRATCH_BASE)
    cluster = LocalPostgres(root, free_port(), superuser_password="test-admin", throwaway=True)
    cluster.init()
    cluster.start(fsync=False)
    cluster.ensure_login_role("cf_writer", "test-writer")
    cluster.ensure_login_role("cf_reader", "test-reader")
    yield cluster
    cluster.destroy()


_db_counter = iter(range(1, 10_000))


def make_warehouse(cluster: LocalPostgres) -> Warehouse:
    name = f"wh_{os.getpid()}_{next(_db_counter)}"
    cluster.ensure_database(name)
    admin = cluster.dsn(name)
    migrate(admin)
    return Warehouse(
        cluster=cluster,
        dbname=name,
        admin_dsn=admin,
        writer_dsn=cluster.dsn(name, "cf_writer", "test-writer"),
        reader_dsn=cluster.dsn(name, "cf_reader", "test-reader"),
    )


@pytest.fixture
def warehouse(pg_cluster) -> Warehouse:
    """A fresh, migrated warehouse database for one test."""
    return make_warehouse(pg_cluster)


@pytest.fixture(scope="session")
def session_warehouse(pg_cluster) -> Warehouse:
    """A migrated warehouse shared by a whole session (for expensive fills; tests must not depend on order)."""
    return make_warehouse(pg_cluster)


@pytest.fixture(scope="session")
def spark():
    """A local SparkSession on 2 cores (the honest setting for CI's machine)."""
    from cryptoflow.spark import local_session

    session = local_session("cryptoflow-tests", master="local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def airflow_db():
    """Airflow's metadata DB migrated once per session (dag.test() needs it)."""
    import subprocess
    import sys

    airflow = Path(sys.executable).parent / "airflow"
    res = subprocess.run(
        [str(airflow), "db", "migrate"], env=dict(os.environ), capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    yield _AIRFLOW_HOME


@pytest.fixture
def use_warehouse(warehouse, monkeypatch):
    """Point the settings, and the `cryptoflow_warehouse` connection DAG tasks run by dag.test() go
    through, at a fresh throwaway warehouse (as the local stack derives the one from the other)."""
    monkeypatch.setenv("CRYPTOFLOW_WAREHOUSE_DSN", warehouse.writer_dsn)
    monkeypatch.setenv("AIRFLOW_CONN_CRYPTOFLOW_WAREHOUSE", warehouse.writer_dsn)
    monkeypatch.setenv("CRYPTOFLOW_WAREHOUSE_READER_DSN", warehouse.reader_dsn)
    return warehouse


@pytest.fixture
def scratch_dir():
    d = Path(tempfile.mkdtemp(prefix="cryptoflow-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def isolated_state(tmp_path, monkeypatch) -> Path:
    """A state dir of its own as the process environment's, with no other CRYPTOFLOW_* set."""
    for key in list(os.environ):
        if key.startswith("CRYPTOFLOW_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CRYPTOFLOW_STATE_DIR", str(tmp_path))
    return tmp_path


def stack_env(state: Path, ports=("PG", "AIRFLOW", "SUPERSET"), **settings: str) -> dict[str, str]:
    """The environment of a test's own `cryptoflow up`: none of the caller's AIRFLOW_*/CRYPTOFLOW_*,
    this checkout, `state`, a free port for each of `ports`, then `settings` (CRYPTOFLOW_* names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CRYPTOFLOW"))}
    env.update({"CRYPTOFLOW_HOME": str(PROJECT_ROOT), "CRYPTOFLOW_STATE_DIR": str(state)})
    env.update({f"CRYPTOFLOW_{name}_PORT": str(free_port()) for name in ports})
    env.update(settings)
    return env


def pytest_sessionstart(session):
    # A SIGKILLed run never ran its finalizers: its clusters still hold memory, a port and disk.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for root in reap_orphaned_clusters(SCRATCH_BASE):
        if reporter:
            reporter.write_line(f"reaped the PostgreSQL cluster of a killed run: {root}")
    # The stacks of earlier runs' tmp dirs (root-only, so their clusters moved) once pytest deleted them.
    for moved in reap_moved_clusters(SCRATCH_BASE):
        if reporter:
            reporter.write_line(
                f"reaped the PostgreSQL cluster of a deleted test stack: {moved.describe()}"
            )


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


def forget_object_stores() -> None:
    """Drop Airflow's per-process cache of object stores (airflow.sdk.io.store): it keeps the first
    filesystem built for a connection id, so a test serving `cryptoflow_models` from another
    endpoint than an earlier test would reach the earlier one's (stopped) server."""
    from airflow.sdk.io import store

    store._STORE_CACHE.clear()
