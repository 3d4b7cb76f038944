"""What runs beside the stack sees the stack's settings: stack.env, `cryptoflow airflow ...`, status, start order."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cryptoflow import cli, settings
from cryptoflow_stack import airflow as airflow_svc
from cryptoflow_stack import passwords, stack
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.quick

DEMO_SYMBOLS = "BTCUSDT,ETHUSDT,XRPUSDT,BNBUSDT,DOGEUSDT,ADAUSDT,DOTUSDT,SOLUSDT,USDCUSDT"


@pytest.fixture
def state(isolated_state):
    return isolated_state


def _demo_stack_settings(state: Path) -> settings.Settings:
    """Settings as `cryptoflow up --demo` hands them to stack.up in replay mode, passwords filled in."""
    cfg = settings.load(
        {
            "CRYPTOFLOW_STATE_DIR": str(state),
            "CRYPTOFLOW_BINANCE_MODE": "replay",
            "CRYPTOFLOW_SYMBOLS": DEMO_SYMBOLS,
            "CRYPTOFLOW_REPLAY_PORT": "9555",
        }
    )
    creds, _ = passwords.ensure(cfg.credentials_file)
    return settings.with_local_credentials(cfg, creds)


def test_stack_file_round_trip_without_passwords(state, monkeypatch):
    running = _demo_stack_settings(state)
    path = settings.write_stack_file(running)
    assert path == state / "stack.env"
    text = path.read_text()
    creds = settings.read_credentials(running.credentials_file)
    assert not [key for key, value in creds.items() if value in text]
    assert (
        "DSN" not in text and "CRYPTOFLOW_STATE_DIR" not in text and "CRYPTOFLOW_HOME" not in text
    )
    assert f"CRYPTOFLOW_SYMBOLS={DEMO_SYMBOLS}\n" in text

    # load() of the process environment sees the stack's settings...
    seen = settings.load()
    assert seen.binance_mode == "replay" and seen.symbols == tuple(DEMO_SYMBOLS.split(","))
    assert seen.binance_rest_url == "http://127.0.0.1:9555" and seen.replay_port == 9555
    assert (
        seen.warehouse_dsn == running.warehouse_dsn
    )  # the password still comes from credentials.env
    assert seen.as_env() == running.as_env()

    # ...the environment wins, and the URLs follow an overridden mode (they were derived, not recorded)...
    monkeypatch.setenv("CRYPTOFLOW_BINANCE_MODE", "live")
    monkeypatch.setenv("CRYPTOFLOW_SYMBOLS", "BTCUSDT")
    live = settings.load()
    assert live.binance_mode == "live" and live.binance_rest_url == settings.LIVE_REST_URL
    assert live.symbols == ("BTCUSDT",) and live.replay_port == 9555

    # ...and an explicit environment (demo_settings, benches) or `cryptoflow up` reads it alone.
    alone = settings.load({"CRYPTOFLOW_STATE_DIR": str(state)})
    assert alone.binance_mode == "live" and len(alone.symbols) == 10
    assert (
        settings.load({"CRYPTOFLOW_STATE_DIR": str(state)}, stack_file=True).binance_mode
        == "replay"
    )
    monkeypatch.delenv("CRYPTOFLOW_BINANCE_MODE")
    assert settings.load(stack_file=False).binance_mode == "live"


def test_explicit_urls_are_recorded_and_missing_file_changes_nothing(state):
    assert settings.load().as_env() == settings.load({"CRYPTOFLOW_STATE_DIR": str(state)}).as_env()
    # Built here, not written out: the security scan rightly refuses a password in a URL in tracked files.
    url_with_userinfo = "http://" + ":".join(("key", "not-a-real-one")) + "@minio:9000"
    cfg = settings.load(
        {
            "CRYPTOFLOW_STATE_DIR": str(state),
            "CRYPTOFLOW_BINANCE_REST_URL": "http://10.0.0.5:9000",
            "CRYPTOFLOW_S3_ENDPOINT_URL": url_with_userinfo,
        }
    )
    settings.write_stack_file(cfg)
    recorded = settings.read_stack_file(state / "stack.env")
    assert recorded["CRYPTOFLOW_BINANCE_REST_URL"] == "http://10.0.0.5:9000"
    assert "CRYPTOFLOW_BINANCE_WS_URL" not in recorded
    assert (
        "CRYPTOFLOW_S3_ENDPOINT_URL" not in recorded
    )  # a value carrying a password is never written
    assert settings.load().binance_rest_url == "http://10.0.0.5:9000"


def test_config_says_where_the_values_come_from(state, capsys):
    assert cli.main(["config"]) == 0
    assert "#" not in capsys.readouterr().out
    settings.write_stack_file(_demo_stack_settings(state))
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0].startswith("# ")
        and str(state / "stack.env") in out[0]
        and "environment overrides" in out[0]
    )
    assert "CRYPTOFLOW_BINANCE_MODE=replay" in out and f"CRYPTOFLOW_SYMBOLS={DEMO_SYMBOLS}" in out
    assert not [line for line in out if "DSN" in line and "***" not in line]


def test_passthrough_environment_is_the_stack_services(state):
    with pytest.raises(stack.NotSetUp, match="credentials.env"):
        stack.stack_airflow_env(settings.load())
    running = _demo_stack_settings(state)
    settings.write_stack_file(running)
    creds = settings.read_credentials(running.credentials_file)

    env = stack.stack_airflow_env(settings.load())
    assert env["AIRFLOW_HOME"] == str(state / "airflow")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        f"postgresql+psycopg2://airflow:{creds['AIRFLOW_DB_PASSWORD']}@127.0.0.1:{running.pg_port}/airflow"
    )
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(PROJECT_ROOT / "dags")
    assert env["AIRFLOW__CORE__FERNET_KEY"] == creds["AIRFLOW_FERNET_KEY"]
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    # The same environment `up` gives the services, stack settings included.
    assert env == stack.stack_airflow_env(running, creds)
    assert env["CRYPTOFLOW_BINANCE_MODE"] == "replay" and env["CRYPTOFLOW_SYMBOLS"] == DEMO_SYMBOLS
    assert creds["CF_WRITER_PASSWORD"] in env["AIRFLOW_CONN_CRYPTOFLOW_WAREHOUSE"]


def test_celery_executor_takes_the_stacks_redis_and_metadata_database(state):
    with pytest.raises(settings.ConfigError, match="expected local or celery"):
        settings.load({"CRYPTOFLOW_AIRFLOW_EXECUTOR": "kubernetes"})
    running = settings.load(
        {
            "CRYPTOFLOW_STATE_DIR": str(state),
            "CRYPTOFLOW_AIRFLOW_EXECUTOR": "Celery",
            "CRYPTOFLOW_REDIS_PORT": "6499",
        }
    )
    creds, _ = passwords.ensure(running.credentials_file)
    env = stack.stack_airflow_env(running, creds)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert (
        env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:{creds['REDIS_PASSWORD']}@127.0.0.1:6499/0"
    )
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == (
        f"db+postgresql://airflow:{creds['AIRFLOW_DB_PASSWORD']}@127.0.0.1:{running.pg_port}/airflow"
    )
    assert airflow_svc.services(running)[-1] == "celery-worker"
    # The default stays the LocalExecutor, with no broker.
    local = stack.stack_airflow_env(settings.load({"CRYPTOFLOW_STATE_DIR": str(state)}), creds)
    assert (
        local["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        and "AIRFLOW__CELERY__BROKER_URL" not in local
    )


@pytest.mark.parametrize(
    "args",
    [
        [
            "backfill",
            "create",
            "--dag-id",
            "binance_ingest",
            "--from-date",
            "2026-11-20T00:00",
            "--to-date",
            "2026-11-20T06:00",
        ],
        ["dags", "list"],
        ["dags", "list", "--help"],
        ["--verbose", "dags", "list", "-o", "json"],
    ],
)
def test_cryptoflow_airflow_runs_the_venv_airflow_verbatim(state, monkeypatch, args):
    _demo_stack_settings(state)
    calls = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    cli.main(["airflow", *args])
    ((path, argv, env),) = calls
    assert path == str(Path(sys.executable).parent / "airflow")
    assert argv == [path, *args]
    assert env["AIRFLOW_HOME"] == str(state / "airflow")


def test_cryptoflow_airflow_before_setup_says_what_to_do(state, monkeypatch, capsys):
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("airflow must not run"))
    assert cli.main(["airflow", "dags", "list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "make run" in err[0] and "cryptoflow up" in err[0]


def test_status_lists_every_service_when_nothing_runs(state, monkeypatch):
    cfg = settings.load()
    expected = [
        "postgres",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-api-server",
        "superset",
        "replay-server",
        "collector",
    ]
    assert list(stack.SERVICES) == expected and stack.FEED_SERVICES == (
        "replay-server",
        "collector",
    )
    out = stack.status(cfg)
    assert list(out) == expected and all(v.startswith("stopped") for v in out.values())

    # Set up, still nothing running; a stray pid file is listed too, a live one as running.
    passwords.ensure(cfg.credentials_file)

    class Stopped:
        initialized = False
        moved = False

    monkeypatch.setattr(stack, "cluster", lambda s, c: Stopped())
    run = state / "run"
    run.mkdir()
    (run / "other-service.pid").write_text("999999999")
    (run / "collector.pid").write_text(str(os.getpid()))
    out = stack.status(cfg)
    assert list(out) == [*expected, "other-service"]
    assert out["postgres"] == "stopped" and out["other-service"] == "stopped"
    assert out["collector"] == f"running (pid {os.getpid()})"


def test_up_starts_the_feed_before_airflow_and_records_its_settings(state, monkeypatch):
    from cryptoflow_stack import airflow as airflow_svc

    events = []
    monkeypatch.setattr(stack, "start_warehouse", lambda s, c: events.append("warehouse"))
    monkeypatch.setattr(airflow_svc, "init", lambda s, c, env: events.append("airflow init"))
    monkeypatch.setattr(airflow_svc, "start", lambda s, env: events.append("airflow start"))
    monkeypatch.setattr(stack, "check_ports", lambda s, **kw: events.append("ports"))
    cfg = settings.load(
        {
            "CRYPTOFLOW_STATE_DIR": str(state),
            "CRYPTOFLOW_BINANCE_MODE": "replay",
            "CRYPTOFLOW_SYMBOLS": DEMO_SYMBOLS,
        }
    )
    fed = []

    def feed(s):
        events.append("feed")
        fed.append(s)
        assert (state / "stack.env").exists()

    endpoints = stack.up(cfg, with_superset=False, before_airflow=feed)
    assert events == ["ports", "warehouse", "feed", "airflow init", "airflow start"]
    creds = settings.read_credentials(cfg.credentials_file)
    assert fed == [endpoints.settings] and creds["CF_WRITER_PASSWORD"] in fed[0].warehouse_dsn
    assert settings.load().symbols == tuple(DEMO_SYMBOLS.split(","))


def test_up_demo_hands_the_feed_to_stack_up(state, monkeypatch):
    from cryptoflow_stack import airflow as airflow_svc
    from cryptoflow_stack import demo

    cfg = _demo_stack_settings(state)
    events = []
    monkeypatch.setattr(demo, "demo_settings", lambda environ: cfg)
    monkeypatch.setattr(demo, "start_feed", lambda s: events.append(("feed", s)))
    monkeypatch.setattr(demo, "run", lambda s, api, hours: events.append(("demo.run", s)))

    def fake_up(s, with_superset, before_airflow):
        events.append(("up", s))
        before_airflow(s)
        return stack.Endpoints(s, "pg", "http://airflow", None, s.credentials_file)

    class Api:
        def __init__(self, url, password):
            pass

        def wait_for_dags(self, ids):
            events.append(("dags", ids))

    monkeypatch.setattr(stack, "up", fake_up)
    monkeypatch.setattr(airflow_svc, "AirflowApi", Api)
    assert cli.main(["up", "--demo", "--no-superset"]) == 0
    assert [e[0] for e in events] == ["up", "feed", "dags", "demo.run"]


def test_readme_links_the_generated_configuration_page():
    # The whole table lives in docs/configuration.md (held equal to the settings by test_settings_cli).
    assert "docs/configuration.md" in (PROJECT_ROOT / "README.md").read_text()
