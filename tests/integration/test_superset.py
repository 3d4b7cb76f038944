"""A real Superset, set up and started by the project, with the dashboards as code imported.

One Superset serves the whole module (init + start take most of a minute on 2 cores); its metadata,
credentials and logs live in a temporary state directory, never in the developer's own stack.

Its warehouse is filled by the pipeline's own code: three weeks of real hourly candles (BTC, ETH,
SOL from ../shared/data, shifted to end now, as the replay does), the newest three hours as the
replay's minutes, all through the importer, landing snapshots and the Spark ETL (candles, rollups,
analytics, run log); the raw BTC file's rejected rows through the importer's quarantine; healed
gaps through ingest.record; DQ checks through etl.dq; live forecasts through
forecast.hourly.write_predictions (made-up numbers: no model is trained here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import secrets
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import requests

from cryptoflow import settings as cf_settings
from cryptoflow_stack import passwords, postgres
from cryptoflow_stack import superset as superset_svc
from cryptoflow.superset import bundle, importer
from tests.conftest import make_warehouse

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT_ROOT = Path(__file__).resolve().parents[2]

CANDLE = """
INSERT INTO market.candles (symbol, interval, open_time, close_time, open, high, low, close,
                            base_volume, quote_volume, source)
VALUES ('BTCUSDT', '1m', '2024-01-01T00:00:00Z', '2024-01-01T00:00:59.999Z', 100, 110, 90, 105, 1, 105, 'test')
"""


SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
HOUR = 3_600_000
DAY = 24 * HOUR
HOURS = 21 * 24
MINUTE_HOURS = 3  # the newest hours arrive as minutes, as from the collector


def _shifted(c, delta_ms: int):
    return dataclasses.replace(
        c, open_time=c.open_time + delta_ms, close_time=c.close_time + delta_ms
    )


@pytest.fixture(scope="module")
def pipeline_warehouse(pg_cluster, spark, shared_data, tmp_path_factory):
    from cryptoflow import ingest
    from binance_emulator import synthetic_minutes
    from cryptoflow.etl import dq, job
    from cryptoflow.forecast.hourly import write_predictions
    from cryptoflow.forecast.train import Forecast
    from cryptoflow.importers import import_cdd_csv
    from cryptoflow.landing import write_snapshot
    from cryptoflow.quarantine import write_rejections

    wh = make_warehouse(pg_cluster)
    tmp = tmp_path_factory.mktemp("dash-fill")
    landing = f"file://{tmp}/landing"
    now_hour = int(time.time() * 1000) // HOUR * HOUR
    hours, minutes = [], []
    for symbol in SYMBOLS:
        res = import_cdd_csv(
            shared_data / "cryptodatadownload" / f"Binance_{symbol}_1h.csv", symbols=set(SYMBOLS)
        )
        recent = sorted(res.candles, key=lambda c: c.open_time)[-HOURS:]
        delta = (
            now_hour - HOUR - recent[-1].open_time
        )  # the newest hour is the one that just closed
        recent = [_shifted(c, delta) for c in recent]
        hours += recent[:-MINUTE_HOURS]
        minutes += [m for c in recent[-MINUTE_HOURS:] for m in synthetic_minutes(c)]
    by_window: dict[tuple[str, int, int], list] = {}
    for c in hours:
        start = c.open_time - c.open_time % DAY
        by_window.setdefault(("1h", start, start + DAY), []).append(c)
    for c in minutes:
        start = c.open_time - c.open_time % HOUR
        by_window.setdefault(("1m", start, start + HOUR), []).append(c)
    uris = [
        write_snapshot(landing, interval, s, e, cs).uri
        for (interval, s, e), cs in sorted(by_window.items())
    ]
    raw = import_cdd_csv(
        shared_data / "raw" / "Binance_BTCUSDT_1h_2017-2021.csv", symbols=set(SYMBOLS)
    )
    with psycopg.connect(wh.writer_dsn) as conn:
        write_rejections(conn, raw.rejections, "import:raw-btc")
        conn.commit()
    run_id = "superset-dashboards-1"
    job.run(spark, uris, run_id, dsn=wh.writer_dsn, lake_uri=f"file://{tmp}/lake", symbols=SYMBOLS)
    with psycopg.connect(wh.writer_dsn) as conn:
        dq.freshness(conn, run_id, SYMBOLS, "1m")
        dq.gaps(conn, run_id, "1m")
        # Two minutes the stream "missed" and REST filled, recorded as the ingest DAG does.
        first_minute = minutes[0].open_time
        seal = ingest.SealResult(
            uri="",
            window_start_ms=first_minute,
            window_end_ms=first_minute + 600_000,
            rows=0,
            from_stream=0,
            healed=[("BTCUSDT", first_minute), ("ETHUSDT", first_minute + 60_000)],
        )
        ingest.record(conn, seal, ingest.window_run_id("1m", first_minute), "1m")
        conn.commit()
        # Live forecasts of the last 72 hours: persistence = the previous close; the "model" is off by a
        # deterministic wiggle, with an interval around it.
        rows = conn.execute(
            "SELECT symbol, open_time, close, lag(close) OVER (PARTITION BY symbol ORDER BY open_time)"
            " FROM market.candles WHERE interval = '1h' ORDER BY symbol, open_time"
        ).fetchall()
        forecasts = []
        for symbol, t, _close, prev in rows:
            if prev is None or t.timestamp() * 1000 < now_hour - 72 * HOUR:
                continue
            guess = float(prev) * (1 + 0.004 * math.sin(t.timestamp() / 7200))
            forecasts.append(
                Forecast(
                    symbol,
                    t,
                    guess,
                    guess * 0.99,
                    guess * 1.01,
                    float(prev),
                    f"lstm-{symbol.lower()}-test",
                )
            )
        write_predictions(conn, forecasts, kind="live")
        conn.execute(
            "INSERT INTO forecast.model_versions (version, symbol, architecture, artifact_uri, metrics, baseline_metrics,"
            " status, promoted_at) SELECT 'lstm-' || lower(s) || '-test', s, 'lstm', 'file:///models/' || s,"
            " '{\"rmse\": 12.5}', '{\"persistence\": {\"rmse\": 13.0}}', 'promoted', now()"
            " FROM unnest(%s::text[]) s",
            (list(SYMBOLS),),
        )
        conn.commit()
    return wh


@contextlib.contextmanager
def _lines_logged(lines: list[str]):
    """Appends to `lines` what the Superset service and the importer log meanwhile (a module-scoped
    fixture cannot use caplog)."""
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    loggers = [logging.getLogger(superset_svc.__name__), logging.getLogger(importer.__name__)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)


@pytest.fixture(scope="module")
def stack(pipeline_warehouse, tmp_path_factory):
    """(settings, credentials, init log) of a Superset running on a free loopback port."""
    state = tmp_path_factory.mktemp("superset-state")
    settings = cf_settings.load(
        {
            "CRYPTOFLOW_HOME": str(PROJECT_ROOT),
            "CRYPTOFLOW_STATE_DIR": str(state),
            "CRYPTOFLOW_SUPERSET_PORT": str(postgres.free_port()),
            "CRYPTOFLOW_WAREHOUSE_READER_DSN": pipeline_warehouse.reader_dsn,
            "CRYPTOFLOW_WAREHOUSE_DSN": pipeline_warehouse.writer_dsn,
        }
    )
    creds, _ = passwords.ensure(settings.credentials_file)
    log: list[str] = []
    try:
        began = time.monotonic()
        with _lines_logged(log):
            superset_svc.init(settings, creds)
        log.append(f"init took {time.monotonic() - began:.0f} s")
        began = time.monotonic()
        superset_svc.start(settings, creds)
        log.append(f"start took {time.monotonic() - began:.0f} s")
        began = time.monotonic()
        with _lines_logged(log):
            superset_svc.import_dashboards(settings, creds)
        log.append(f"import took {time.monotonic() - began:.0f} s")
        yield settings, creds, log
    finally:
        superset_svc.stop(settings)
    print("\n".join(log))


def login(base: str, username: str, password: str) -> requests.Response:
    return requests.post(
        f"{base}/api/v1/security/login",
        timeout=30,
        json={"username": username, "password": password, "provider": "db", "refresh": False},
    )


@pytest.fixture(scope="module")
def api(stack):
    """A requests session logged in as admin with the generated password, CSRF token attached."""
    settings, creds, _ = stack
    base = superset_svc.url(settings)
    # The importer's own session (bearer token, CSRF token of its cookie): what import uses is tested.
    session = importer.session(importer.Target(base, "admin", creds["SUPERSET_ADMIN_PASSWORD"]))
    session.base = base
    return session


def warehouse_id(api) -> int:
    res = api.get(f"{api.base}/api/v1/database/", timeout=30)
    assert res.status_code == 200, res.text
    ids = {row["database_name"]: row["id"] for row in res.json()["result"]}
    assert superset_svc.DATABASE_NAME in ids, ids
    return ids[superset_svc.DATABASE_NAME]


def run_sql(api, sql: str) -> requests.Response:
    res = api.post(
        f"{api.base}/api/v1/sqllab/execute/",
        timeout=60,
        json={
            "database_id": warehouse_id(api),
            "sql": sql,
            "runAsync": False,
            "select_as_cta": False,
            "client_id": secrets.token_hex(5),
            "queryLimit": 100,
        },
    )
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
    res = run_sql(
        api,
        "SELECT has_table_privilege('market.candles', 'SELECT') AS can_select, "
        "has_table_privilege('market.candles', 'INSERT') AS can_insert",
    )
    assert res.status_code == 200, res.text
    assert res.json()["data"] == [{"can_select": True, "can_insert": False}]


def stored_candles(wh) -> int:
    with psycopg.connect(wh.writer_dsn) as conn:
        return conn.execute("SELECT count(*) FROM market.candles").fetchone()[0]


def test_sqllab_select_counts_candles(api, pipeline_warehouse):
    res = run_sql(api, "SELECT count(*) AS n FROM market.candles")
    assert res.status_code == 200, res.text
    assert (
        res.json()["data"] == [{"n": stored_candles(pipeline_warehouse)}]
        and res.json()["data"][0]["n"] > 1000
    )


def test_insert_is_refused_by_superset_and_by_the_role(api, pipeline_warehouse):
    before = stored_candles(pipeline_warehouse)
    insert = CANDLE
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
    assert stored_candles(pipeline_warehouse) == before


def test_second_init_is_fast_and_keeps_the_password(stack):
    settings, creds, _ = stack
    log: list[str] = []
    began = time.monotonic()
    with _lines_logged(log):
        superset_svc.init(settings, creds)
    assert time.monotonic() - began < 2, log
    assert any("up to date" in line for line in log), log
    assert (
        login(superset_svc.url(settings), "admin", creds["SUPERSET_ADMIN_PASSWORD"]).status_code
        == 200
    )


# --- the dashboards as code -----------------------------------------------------------------------


def _list(api, kind: str) -> list[dict]:
    res = api.get(
        f"{api.base}/api/v1/{kind}/", params={"q": json.dumps({"page_size": 100})}, timeout=60
    )
    assert res.status_code == 200, res.text
    return res.json()["result"]


def _bundle_counts() -> dict[str, int]:
    root = PROJECT_ROOT / bundle.ASSETS_DIR
    return {
        kind: len(list((root / kind).rglob("*.yaml")))
        for kind in ("databases", "datasets", "charts", "dashboards")
    }


def test_second_import_updates_and_never_duplicates(api, stack):
    settings, creds, _ = stack
    before = {kind: len(_list(api, kind)) for kind in ("database", "dataset", "chart", "dashboard")}
    expected = _bundle_counts()
    assert before == {
        "database": expected["databases"],
        "dataset": expected["datasets"],
        "chart": expected["charts"],
        "dashboard": expected["dashboards"],
    }
    # Someone renamed a chart in the UI: the next import puts the file's name back.
    chart = next(c for c in _list(api, "chart") if c["slice_name"] == bundle.C_VOLUME)
    assert (
        api.put(
            f"{api.base}/api/v1/chart/{chart['id']}", json={"slice_name": "renamed"}, timeout=60
        ).status_code
        == 200
    )
    superset_svc.import_dashboards(settings, creds)
    after = {kind: len(_list(api, kind)) for kind in ("database", "dataset", "chart", "dashboard")}
    assert after == before
    assert (
        api.get(f"{api.base}/api/v1/chart/{chart['id']}", timeout=60).json()["result"]["slice_name"]
        == bundle.C_VOLUME
    )


def test_superset_reads_the_warehouse_as_cf_reader(api):
    (db,) = _list(api, "database")
    assert db["database_name"] == bundle.DATABASE_NAME
    detail = api.get(f"{api.base}/api/v1/database/{db['id']}/connection", timeout=60)
    assert detail.status_code == 200, detail.text
    uri = detail.json()["result"]["sqlalchemy_uri"]
    assert uri.startswith("postgresql+psycopg2://cf_reader:XXXXXXXXXX@"), uri
    assert not detail.json()["result"]["allow_dml"]


def chart_data(api, chart_id: int) -> dict:
    res = api.get(
        f"{api.base}/api/v1/chart/{chart_id}/data/", params={"force": "true"}, timeout=120
    )
    assert res.status_code == 200, res.text[:2000]
    return res.json()["result"][0]


def test_every_chart_query_returns_rows(api):
    charts = {c["slice_name"]: c["id"] for c in _list(api, "chart")}
    assert set(charts) == set(bundle.CHARTS)
    counts = {}
    for name, chart_id in charts.items():
        result = chart_data(api, chart_id)
        assert not result.get("error"), (name, result.get("error"))
        counts[name] = result["rowcount"]
    assert all(n > 0 for n in counts.values()), counts


def test_candlestick_draws_one_coin_in_bounds_and_follows_the_coin_filter(api):
    chart = next(c for c in _list(api, "chart") if c["slice_name"] == bundle.C_CANDLES)
    rows = chart_data(api, chart["id"])["data"]
    assert {r["symbol"] for r in rows} == {"BTCUSDT"}  # no filter: BTC
    assert 80 <= len(rows) <= 120  # 7 days of hours in <= 120 candles
    for r in rows:
        assert (
            10 - 1e-6
            <= r["wick_top"]
            <= r["body_top"]
            <= r["body_top"] + r["body_height"]
            <= r["wick_bottom"] + 1.01
        )
        assert (
            r["wick_bottom"] <= 280 + 1e-6
            and 305 - 1e-6 <= r["volume_top"] + r["volume_height"] <= 390 + 1e-6
        )
        assert r["colour"] == (bundle.UP_COLOUR if r["close"] >= r["open"] else bundle.DOWN_COLOUR)
    # The dashboard's coin filter reaches the SQL (filter_values) and the outer query alike.
    stored = json.loads(
        api.get(f"{api.base}/api/v1/chart/{chart['id']}", timeout=60).json()["result"][
            "query_context"
        ]
    )
    stored["force"] = True
    stored["form_data"]["extra_form_data"] = {
        "filters": [{"col": "symbol", "op": "IN", "val": ["SOLUSDT"]}]
    }
    stored["queries"][0]["filters"].append({"col": "symbol", "op": "IN", "val": ["SOLUSDT"]})
    stored["queries"][0]["time_range"] = "Last day"
    stored["queries"][0]["filters"][0]["val"] = "Last day"
    res = api.post(f"{api.base}/api/v1/chart/data", json=stored, timeout=120)
    assert res.status_code == 200, res.text[:2000]
    rows = res.json()["result"][0]["data"]
    assert rows and {r["symbol"] for r in rows} == {"SOLUSDT"}
    assert 20 <= len(rows) <= 25  # one day: one candle per hour


def test_headless_chromium_screenshots_every_dashboard(stack, tmp_path):
    settings, creds, _ = stack
    out = Path(os.environ.get("CRYPTOFLOW_SCREENSHOT_DIR") or tmp_path)
    script = PROJECT_ROOT / "include" / "cryptoflow" / "superset" / "screenshots.py"
    python = superset_svc.venv_bin(settings) / "python"
    res = subprocess.run(
        [str(python), str(script), superset_svc.url(settings), str(out), *bundle.DASHBOARDS],
        env={
            "PATH": os.environ["PATH"],
            "SUPERSET_PASSWORD": creds["SUPERSET_ADMIN_PASSWORD"],
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    shots = {s["slug"]: s for s in map(json.loads, res.stdout.splitlines())}
    print(json.dumps(shots, indent=1))
    assert set(shots) == set(bundle.DASHBOARDS)
    for slug, shot in shots.items():
        charts = sum(
            1
            for row in bundle.DASHBOARDS[slug][1]
            for item, _, _ in row
            if not item.startswith(bundle.MARKDOWN_PREFIX)
        )
        assert shot["charts"] == charts and shot["rendered"] == charts, shot
        assert not shot["errors"] and shot["empty"] == 0, shot
        assert Path(shot["png"]).stat().st_size > 50_000, shot
    # The candlestick's SVG survived Superset's sanitiser: bodies and volume bars are there.
    assert shots["cryptoflow-markets"]["candle_rects"] >= 2 * 80
