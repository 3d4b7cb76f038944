"""Configuration defaults and validation, and the CLI's --help on every command."""

import subprocess
import sys
from pathlib import Path

import pytest

from cryptoflow import cli, settings
from cryptoflow_stack import passwords

pytestmark = pytest.mark.quick


def test_defaults_run_everything_on_one_machine(tmp_path):
    s = settings.load({"CRYPTOFLOW_STATE_DIR": str(tmp_path)})
    assert s.lake_uri == f"file://{tmp_path}/lake"
    assert s.model_store_uri.startswith("file://")
    assert s.spark_master == "local[*]"
    assert s.bind_host == "127.0.0.1"
    assert len(s.symbols) == 10 and "POLUSDT" in s.symbols
    assert s.binance_rest_url == "https://api.binance.com"


def test_replay_mode_points_clients_at_the_local_server(tmp_path):
    s = settings.load(
        {
            "CRYPTOFLOW_STATE_DIR": str(tmp_path),
            "CRYPTOFLOW_BINANCE_MODE": "replay",
            "CRYPTOFLOW_REPLAY_PORT": "9555",
        }
    )
    assert s.binance_ws_url == "ws://127.0.0.1:9555"
    assert s.binance_rest_url == "http://127.0.0.1:9555"


def test_distributed_values_pass_through(tmp_path):
    s = settings.load(
        {
            "CRYPTOFLOW_STATE_DIR": str(tmp_path),
            "CRYPTOFLOW_LAKE_URI": "hdfs://namenode:8020/lake",
            "CRYPTOFLOW_MODEL_STORE_URI": "s3://models/cryptoflow",
            "CRYPTOFLOW_SPARK_MASTER": "spark://spark-master:7077",
        }
    )
    assert (s.lake_uri, s.model_store_uri, s.spark_master) == (
        "hdfs://namenode:8020/lake",
        "s3://models/cryptoflow",
        "spark://spark-master:7077",
    )


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CRYPTOFLOW_BINANCE_MODE": "paper"}, "CRYPTOFLOW_BINANCE_MODE"),
        ({"CRYPTOFLOW_PG_PORT": "abc"}, "CRYPTOFLOW_PG_PORT"),
        ({"CRYPTOFLOW_AIRFLOW_PORT": "70000"}, "CRYPTOFLOW_AIRFLOW_PORT"),
        ({"CRYPTOFLOW_SYMBOLS": "BTC/USDT"}, "CRYPTOFLOW_SYMBOLS"),
    ],
)
def test_bad_configuration_names_the_variable(tmp_path, env, message):
    with pytest.raises(settings.ConfigError, match=message):
        settings.load({"CRYPTOFLOW_STATE_DIR": str(tmp_path), **env})


def test_every_setting_is_documented_and_read(tmp_path):
    documented = {s.env for s in settings.SETTINGS}
    exported = set(settings.load({"CRYPTOFLOW_STATE_DIR": str(tmp_path)}).as_env())
    assert documented == exported


def test_the_configuration_document_is_generated_from_the_settings(capsys):
    # Regenerate with `cryptoflow config --markdown > docs/configuration.md`.
    assert cli.main(["config", "--markdown"]) == 0
    document = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert document == capsys.readouterr().out == settings.markdown_table() + "\n"
    assert all(f"\n## {section}\n" in document for section in settings.SECTIONS)
    assert all(f"`{s.env}`" in document for s in settings.SETTINGS)


def test_config_shows_every_setting_by_section(tmp_path, monkeypatch, capsys):
    for key in [k for k in __import__("os").environ if k.startswith("CRYPTOFLOW_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CRYPTOFLOW_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("CRYPTOFLOW_FORECAST_LOOKBACK", "48")
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out.splitlines()
    headers = [line for line in out if line.startswith("[")]
    assert headers == [f"[{section}]" for section in settings.SECTIONS]
    assert {line.split("=", 1)[0] for line in out if "=" in line} == {
        s.env for s in settings.SETTINGS
    }
    assert (
        out.index("CRYPTOFLOW_FORECAST_LOOKBACK=48")
        > out.index("[forecast]")
        > out.index("CRYPTOFLOW_SYMBOLS=" + ",".join(settings.DEFAULT_SYMBOLS))
    )
    assert out.index("CRYPTOFLOW_BENCH_ROWS=1000000") > out.index("[bench]")


def test_sections_are_read_alone_and_parsed_like_the_rest(tmp_path):
    assert settings.section_values(
        "bench",
        {
            "CRYPTOFLOW_BENCH_FORECAST_SYMBOLS": "BTCUSDT, ETHUSDT",
            "CRYPTOFLOW_BENCH_VERBOSE": "yes",
        },
    )["forecast_symbols"] == ("BTCUSDT", "ETHUSDT")
    s = settings.load({"CRYPTOFLOW_STATE_DIR": str(tmp_path), "CRYPTOFLOW_BENCH_VERBOSE": "yes"})
    assert (
        s.bench_verbose is True
        and s.as_env()["CRYPTOFLOW_BENCH_VERBOSE"] == "1"
        and s.bench_rows == 1000000
    )
    assert (
        settings.section_values(
            "forecast", {"CRYPTOFLOW_FORECAST_LOOKBACK": "48"}, {"lookback": "12"}
        )["lookback"]
        == 12
    )
    with pytest.raises(settings.ConfigError, match="CRYPTOFLOW_BENCH_OPERATE_MINUTES"):
        settings.load(
            {"CRYPTOFLOW_STATE_DIR": str(tmp_path), "CRYPTOFLOW_BENCH_OPERATE_MINUTES": "long"}
        )
    # Sections other than core stay out of the stack file, as they always have.
    recorded = settings.stack_file_values(
        settings.load({"CRYPTOFLOW_STATE_DIR": str(tmp_path), "CRYPTOFLOW_FORECAST_LOOKBACK": "48"})
    )
    assert not [
        key for key in recorded if key.startswith(("CRYPTOFLOW_FORECAST_L", "CRYPTOFLOW_BENCH_"))
    ]


def test_credentials_are_generated_once_with_mode_600(tmp_path):
    path = tmp_path / "credentials.env"
    first, new = passwords.ensure(path)
    assert new and oct(path.stat().st_mode & 0o777) == "0o600"
    again, new_again = passwords.ensure(path)
    assert again == first and new_again == []
    assert "admin" not in first.values()
    s = settings.load({"CRYPTOFLOW_STATE_DIR": str(tmp_path)})
    assert first["CF_WRITER_PASSWORD"] in s.warehouse_dsn


def test_first_run_services_get_the_generated_passwords(tmp_path):
    """Settings read before `up` generated the credentials must not reach Airflow without passwords."""
    from cryptoflow_stack.airflow import airflow_env

    before = settings.load({"CRYPTOFLOW_STATE_DIR": str(tmp_path)})
    assert (
        "@" in before.warehouse_dsn and ":" not in before.warehouse_dsn.split("//")[1].split("@")[0]
    )
    creds, _ = passwords.ensure(before.credentials_file)
    after = settings.with_local_credentials(before, creds)
    env = airflow_env(after, creds)
    assert creds["CF_WRITER_PASSWORD"] in env["CRYPTOFLOW_WAREHOUSE_DSN"]
    assert creds["CF_WRITER_PASSWORD"] in env["AIRFLOW_CONN_CRYPTOFLOW_WAREHOUSE"]
    assert creds["CF_READER_PASSWORD"] in env["CRYPTOFLOW_WAREHOUSE_READER_DSN"]
    # An explicit DSN is never touched.
    explicit = settings.load(
        {"CRYPTOFLOW_STATE_DIR": str(tmp_path), "CRYPTOFLOW_WAREHOUSE_DSN": "postgresql://u:p@h/db"}
    )
    assert settings.with_local_credentials(explicit, creds).warehouse_dsn == "postgresql://u:p@h/db"


def _commands(parser, prefix=()):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _commands(sub, (*prefix, name))


def test_every_command_has_help():
    commands = list(_commands(cli.build_parser()))
    assert ("up",) in commands and ("db", "migrate") in commands and ("bench",) in commands
    exe = str(Path(sys.executable).parent / "cryptoflow")
    for command in commands:
        res = subprocess.run([exe, *command, "--help"], capture_output=True, text=True)
        assert res.returncode == 0 and "usage: cryptoflow" in res.stdout, command
