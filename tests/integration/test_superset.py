"""A real Superset, set up and started by the project against a throwaway warehouse.

One Superset serves the whole module (init + start take most of a minute on 2 cores); its metadata,
credentials and logs live in a temporary state directory, never in the developer's own stack.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import psycopg
import pytest
import requests

from cryptoflow import settings as cf_settings
from cryptoflow.local import passwords, postgres
from cryptoflow.local import superset as superset_svc
from tests.conftest import make_warehouse

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT_ROOT = Path(__file__).resolve().parents[2]

CANDLE = """
INSERT INTO market.candles (symbol, interval, open_time, close_time, open, high, low, close,
                            base_volume, quote_volume, source)
VALUES ('BTCUSDT', '1m', '2024-01-01T00:00:00Z', '2024-01-01T00:00:59.999Z', 100, 110, 90, 105, 1, 105, 'test')
"""


@pytest.fixture(scope="module")
def module_warehouse(pg_cluster):
    """Like the `warehouse` fixture, but shared by the module's tests (one Superset for all)."""
    wh = make_warehouse(pg_cluster)
    with psycopg.connect(wh.writer_dsn, autocommit=True) as conn:
        conn.execute(CANDLE)
    return wh


@pytest.fixture(scope="module")
def stack(module_warehouse, tmp_path_factory):
    """(settings, credentials, init log) of a Superset running on a free loopback port."""
    state = tmp_path_factory.mktemp("superset-state")
    settings = cf_settings.load({
        "CRYPTOFLOW_HOME": str(PROJECT_ROOT),
        "CRYPTOFLOW_STATE_DIR": str(state),
        "CRYPTOFLOW_SUPERSET_PORT": str(postgres.free_port()),
        "CRYPTOFLOW_WAREHOUSE_READER_DSN": module_warehouse.reader_dsn,
        "CRYPTOFLOW_WAREHOUSE_DSN": module_warehouse.writer_dsn,
    })
    creds, _ = passwords.ensure(settings.credentials_file)
    log: list[str] = []
    try:
        began = time.monotonic()
        superset_svc.init(settings, creds, log=log.append)
        log.append(f"init took {time.monotonic() - began:.0f} s")
        began = time.monotonic()
        superset_svc.start(settings, creds)
        log.append(f"start took {time.monotonic() - began:.0f} s")
        yield settings, creds, log
    finally:
        superset_svc.stop(settings)
    print("\n".join(log))


def login(base: str, username: str, password: str) -> requests.Response:
    return requests.post(f"{base}/api/v1/security/login", timeout=30,
                         json={"username": username, "password": password, "provider": "db", "refresh": False})


@pytest.fixture(scope="module")
def api(stack):
    """A requests session logged in as admin with the generated password, CSRF token attached."""
    settings, creds, _ = stack
    base = superset_svc.url(settings)
    res = login(base, "admin", creds["SUPERSET_ADMIN_PASSWORD"])
    assert res.status_code == 200, res.text
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {res.json()['access_token']}"
    # The CSRF token is tied to the session cookie set by this call: keep both.
    csrf = session.get(f"{base}/api/v1/security/csrf_token/", timeout=30)
    assert csrf.status_code == 200, csrf.text
    session.headers.update({"X-CSRFToken": csrf.json()["result"], "Referer": base})
    session.base = base
    return session


def warehouse_id(api) -> int:
    res = api.get(f"{api.base}/api/v1/database/", timeout=30)
    assert res.status_code == 200, res.text
    ids = {row["database_name"]: row["id"] for row in res.json()["result"]}
    assert superset_svc.WAREHOUSE_NAME in ids, ids
    return ids[superset_svc.WAREHOUSE_NAME]


def run_sql(api, sql: str) -> requests.Response:
    res = api.post(f"{api.base}/api/v1/sqllab/execute/", timeout=60, json={
        "database_id": warehouse_id(api), "sql": sql, "runAsync": False, "select_as_cta": False,
        "client_id": secrets.token_hex(5), "queryLimit": 100,
    })
    # Without a valid CSRF token Superset answers 200 with an HTML page: insist on JSON.
    assert res.headers.get("Content-Type", "").startswith("application/json"), res.text[:500]
    return res


def test_health_answers_on_loopback(stack):
    settings, _, _ = stack
    res = requests.get(f"{superset_svc.url(settings)}/health", timeout=10)
    assert res.status_code == 200 and res.text.strip() == "OK"
    assert superset_svc.url(settings).startswith("http://127.0.0.1:")


def test_default_password_is_refused(stack):
    settings, creds, _ = stack
    assert creds["SUPERSET_ADMIN_PASSWORD"] != "admin"
    assert login(superset_svc.url(settings), "admin", "admin").status_code == 401


def test_warehouse_database_is_registered_read_only(api):
    res = api.get(f"{api.base}/api/v1/database/{warehouse_id(api)}", timeout=30)
    assert res.status_code == 200, res.text
    db = res.json()["result"]
    assert db["backend"] == "postgresql"
    assert not db["allow_dml"]
    # Superset hides the URI and refuses current_user (a "disallowed function"): ask PostgreSQL
    # what the connection may do instead.
    res = run_sql(api, "SELECT has_table_privilege('market.candles', 'SELECT') AS can_select, "
                       "has_table_privilege('market.candles', 'INSERT') AS can_insert")
    assert res.status_code == 200, res.text
    assert res.json()["data"] == [{"can_select": True, "can_insert": False}]


def test_sqllab_select_counts_candles(api):
    res = run_sql(api, "SELECT count(*) AS n FROM market.candles")
    assert res.status_code == 200, res.text
    assert res.json()["data"] == [{"n": 1}]


def test_insert_is_refused_by_superset_and_by_the_role(api):
    insert = CANDLE.replace("2024-01-01T00:00", "2024-01-01T00:01")
    # First line of defence: the database is registered without DML.
    res = run_sql(api, insert)
    assert res.status_code >= 400 and "DML_NOT_ALLOWED" in res.text, res.text
    # Second: even with DML allowed in Superset, PostgreSQL refuses it for cf_reader (its sessions
    # are read-only, and it has no INSERT grant anyway).
    db_url = f"{api.base}/api/v1/database/{warehouse_id(api)}"
    assert api.put(db_url, json={"allow_dml": True}, timeout=30).status_code == 200
    try:
        res = run_sql(api, insert)
        assert res.status_code >= 400, res.text
        assert "read-only transaction" in res.text or "permission denied" in res.text, res.text
    finally:
        assert api.put(db_url, json={"allow_dml": False}, timeout=30).status_code == 200
    res = run_sql(api, "SELECT count(*) AS n FROM market.candles")
    assert res.json()["data"] == [{"n": 1}]


def test_second_init_is_fast_and_keeps_the_password(stack):
    settings, creds, _ = stack
    log: list[str] = []
    began = time.monotonic()
    superset_svc.init(settings, creds, log=log.append)
    assert time.monotonic() - began < 2, log
    assert any("up to date" in line for line in log), log
    assert login(superset_svc.url(settings), "admin", creds["SUPERSET_ADMIN_PASSWORD"]).status_code == 200
