"""One configuration definition: production code reads CRYPTOFLOW_* only through cryptoflow.settings.

`include/cryptoflow/settings.py` declares every variable (name, default, parsing, README row) and
`forecast/config.py` the CRYPTOFLOW_FORECAST_* knobs; benchmarks document their own switches. Any
other module gets its configuration from `settings.load()`. Setting a variable for a child process
(`env["CRYPTOFLOW_X"] = ...`, `{"CRYPTOFLOW_X": ...}`) is not reading it and stays allowed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cryptoflow import settings

pytestmark = pytest.mark.quick

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_DIRS = ("include", "plugins", "dags", "spark_jobs", "models")
ALLOWED = {
    Path("include/cryptoflow/settings.py"): "the definition itself",
    Path("include/cryptoflow/forecast/config.py"): "the forecasting knobs (CRYPTOFLOW_FORECAST_<FIELD>)",
}
ALLOWED_DIRS = {Path("include/cryptoflow_bench"): "benchmark switches, documented per benchmark"}

_NAME = r"""["'](CRYPTOFLOW_\w+)["']"""
# A read from an environment mapping (os.environ, an `environ` parameter, a copy called env):
# .get/.pop/.setdefault/getenv calls, subscripts that are not assigned to, and membership tests.
ENV_READS = (
    re.compile(rf"""\b\w*env\w*\.(?:get|pop|setdefault)\(\s*{_NAME}"""),
    re.compile(rf"""\bgetenv\(\s*{_NAME}"""),
    re.compile(rf"""\b\w*env\w*\[\s*{_NAME}\s*\](?!\s*=[^=])"""),
    re.compile(rf"""{_NAME}\s+(?:not\s+)?in\s+(?:os\.)?\w*environ\b"""),
)


def env_reads(text: str) -> list[str]:
    return sorted({m.group(1) for pattern in ENV_READS for m in pattern.finditer(text)})


def _production_files():
    for folder in PRODUCTION_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel in ALLOWED or any(rel.is_relative_to(d) for d in ALLOWED_DIRS):
                continue
            yield rel, path


@pytest.mark.parametrize("line, names", [
    ('x = os.environ.get("CRYPTOFLOW_A", "1")', ["CRYPTOFLOW_A"]),
    ("x = os.environ['CRYPTOFLOW_A']", ["CRYPTOFLOW_A"]),
    ('x = os.getenv("CRYPTOFLOW_A")', ["CRYPTOFLOW_A"]),
    ('if environ.get("CRYPTOFLOW_A"):', ["CRYPTOFLOW_A"]),
    ('if env["CRYPTOFLOW_A"] != "replay":', ["CRYPTOFLOW_A"]),
    ('if env["CRYPTOFLOW_A"] == "replay":', ["CRYPTOFLOW_A"]),
    ('if "CRYPTOFLOW_A" in os.environ:', ["CRYPTOFLOW_A"]),
    # Writes for child processes, and mere mentions, are not reads.
    ('env["CRYPTOFLOW_A"] = "1"', []),
    ('os.environ["CRYPTOFLOW_A"] = str(x)', []),
    ('env = {**os.environ, "CRYPTOFLOW_A": "1"}', []),
    ('"""Set CRYPTOFLOW_A to choose."""', []),
])
def test_the_scan_tells_reads_from_writes(line, names):
    assert env_reads(line) == names


def test_no_production_module_reads_cryptoflow_variables_itself():
    offenders = {str(rel): names for rel, path in _production_files() if (names := env_reads(path.read_text()))}
    assert not offenders, (
        f"CRYPTOFLOW_* read outside cryptoflow.settings: {offenders}; declare the variable in settings.Settings "
        "and read it through settings.load()")


def test_the_allowed_files_exist():
    # An exemption for a file that moved would silently exempt nothing (or the wrong thing).
    for rel in (*ALLOWED, *ALLOWED_DIRS):
        assert (ROOT / rel).exists(), rel


def test_every_setting_is_declared_once_with_its_own_name():
    names = [s.env for s in settings.SETTINGS]
    assert len(names) == len(set(names))
    assert all(name.startswith("CRYPTOFLOW_") for name in names)
    assert [s.field for s in settings.SETTINGS] == list(settings.Settings.__dataclass_fields__)


def test_the_moved_variables_keep_their_defaults(tmp_path):
    s = settings.load({"CRYPTOFLOW_STATE_DIR": str(tmp_path), "CRYPTOFLOW_HOME": str(tmp_path / "checkout")})
    home = (tmp_path / "checkout").resolve()
    assert s.s3_endpoint_url == ""
    assert s.postgres_jdbc_jar == "/usr/share/java/postgresql.jar"
    assert s.spark_driver_memory == "2g"
    assert s.models_dir == home / "models"
    assert s.forecast_tf_threads == 1
    assert s.code_version == ""
    assert s.replay_data == ()
    assert s.shared_data == home.parent / "shared" / "data"


def test_the_moved_variables_are_read(tmp_path):
    import os

    s = settings.load({
        "CRYPTOFLOW_STATE_DIR": str(tmp_path), "CRYPTOFLOW_S3_ENDPOINT_URL": "http://minio:9000",
        "CRYPTOFLOW_POSTGRES_JDBC_JAR": "/opt/pg.jar", "CRYPTOFLOW_SPARK_DRIVER_MEMORY": "1g",
        "CRYPTOFLOW_MODELS_DIR": str(tmp_path / "m"), "CRYPTOFLOW_FORECAST_TF_THREADS": "3",
        "CRYPTOFLOW_CODE_VERSION": "abc123", "CRYPTOFLOW_REPLAY_DATA": os.pathsep.join(["/a", "/b"]),
        "CRYPTOFLOW_SHARED_DATA": "/data/shared"})
    assert (s.s3_endpoint_url, s.postgres_jdbc_jar, s.spark_driver_memory) == ("http://minio:9000", "/opt/pg.jar", "1g")
    assert (s.models_dir, s.forecast_tf_threads, s.code_version) == (tmp_path / "m", 3, "abc123")
    assert s.replay_data == (Path("/a"), Path("/b")) and s.shared_data == Path("/data/shared")
    # ...and handed to child processes as they were given.
    env = s.as_env()
    assert env["CRYPTOFLOW_REPLAY_DATA"] == os.pathsep.join(["/a", "/b"]) and env["CRYPTOFLOW_FORECAST_TF_THREADS"] == "3"
    with pytest.raises(settings.ConfigError, match="CRYPTOFLOW_FORECAST_TF_THREADS"):
        settings.load({"CRYPTOFLOW_STATE_DIR": str(tmp_path), "CRYPTOFLOW_FORECAST_TF_THREADS": "many"})


def test_directories_under_the_checkout_follow_it_in_the_stack_file(tmp_path):
    # Derived from CRYPTOFLOW_HOME, they are recorded only when set otherwise (like the Binance URLs).
    s = settings.load({"CRYPTOFLOW_STATE_DIR": str(tmp_path)})
    recorded = settings.stack_file_values(s)
    assert "CRYPTOFLOW_MODELS_DIR" not in recorded and "CRYPTOFLOW_SHARED_DATA" not in recorded
    moved = settings.load({"CRYPTOFLOW_STATE_DIR": str(tmp_path), "CRYPTOFLOW_MODELS_DIR": "/elsewhere"})
    assert settings.stack_file_values(moved)["CRYPTOFLOW_MODELS_DIR"] == "/elsewhere"


def test_given_names_only_what_is_set():
    assert settings.given({"CRYPTOFLOW_BINANCE_MODE": "replay", "CRYPTOFLOW_SYMBOLS": "", "OTHER": "x"}) == \
        {"binance_mode": "replay"}
