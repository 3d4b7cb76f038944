"""One configuration definition: production code reads CRYPTOFLOW_* only through cryptoflow.settings.

`include/cryptoflow/settings/` declares every variable (section, name, default, parsing, row of
docs/configuration.md), the forecasting knobs and the benchmarks' switches included. Any other module
gets its configuration from `settings.load()` (or a section of it: `settings.section_values()`).
Setting a variable for a child process (`env["CRYPTOFLOW_X"] = ...`, `{"CRYPTOFLOW_X": ...}`) is not
reading it and stays allowed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from cryptoflow import settings

pytestmark = pytest.mark.quick

ROOT = Path(__file__).resolve().parents[2]
# All of include/ (its packages are listed to prove they are there), and every other folder of code.
PACKAGES = (
    "include/cryptoflow",
    "include/cryptoflow_stack",
    "include/cryptoflow_bench",
    "include/binance_emulator",
)
PRODUCTION_DIRS = ("include", "plugins", "dags", "spark_jobs", "models", "scripts")
ALLOWED = {
    Path("include/cryptoflow/settings"): "the definition itself (a package: every file in it)",
    # Loaded by Superset itself (SUPERSET_CONFIG_PATH) to find the project's configuration; its owner
    # may route it through cryptoflow.settings, which the Superset image installs.
    Path(
        "include/docker/superset/superset_config.py"
    ): "Superset's configuration in the compose image",
}

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
            if not any(rel.is_relative_to(allowed) for allowed in ALLOWED):
                yield rel, path


@pytest.mark.parametrize(
    "line, names",
    [
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
    ],
)
def test_the_scan_tells_reads_from_writes(line, names):
    assert env_reads(line) == names


def test_no_production_module_reads_cryptoflow_variables_itself():
    offenders = {
        str(rel): names
        for rel, path in _production_files()
        if (names := env_reads(path.read_text()))
    }
    assert not offenders, (
        f"CRYPTOFLOW_* read outside cryptoflow.settings: {offenders}; declare the variable in settings.Settings "
        "and read it through settings.load()"
    )


def test_no_production_module_builds_variable_names_from_a_prefix():
    # Reading CRYPTOFLOW_<SECTION>_<FIELD> by prefix is how undeclared variables crept in.
    prefix = re.compile(r"""["']CRYPTOFLOW_(?:\w*_)?["']""")
    offenders = [str(rel) for rel, path in _production_files() if prefix.search(path.read_text())]
    assert not offenders


def test_the_allowed_files_exist():
    # An exemption for a file that moved would silently exempt nothing (or the wrong thing).
    for rel in ALLOWED:
        assert (ROOT / rel).exists(), rel


def test_every_package_of_code_is_scanned():
    scanned = {rel for rel, _ in _production_files()}
    for package in PACKAGES:
        assert any(rel.is_relative_to(package) for rel in scanned), package
    for folder in PRODUCTION_DIRS:
        assert (ROOT / folder).is_dir(), folder


def test_the_benchmarks_and_the_forecast_knobs_are_scanned():
    # Once exempt; a read there must now fail the scan like anywhere else.
    scanned = {rel for rel, _ in _production_files()}
    assert Path("include/cryptoflow/forecast/config.py") in scanned
    assert Path("include/cryptoflow_bench/forecast.py") in scanned


def default_reads(source: str) -> list[str]:
    """Functions whose default arguments read the environment or the settings: evaluated once, at
    import, so a later setting is ignored. (The live mapping itself, `environ=os.environ`, is no read.)"""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for default in (*node.args.defaults, *node.args.kw_defaults):
                calls = (
                    [ast.unparse(n.func) for n in ast.walk(default) if isinstance(n, ast.Call)]
                    if default
                    else []
                )
                if any(re.search(r"environ|getenv|settings|\bload$", call) for call in calls):
                    out.append(node.name)
    return out


@pytest.mark.parametrize(
    "source, read",
    [
        (
            'def bench(n: int = int(os.environ.get("CRYPTOFLOW_BENCH_ROWS", "1"))) -> dict: ...',
            True,
        ),
        (
            'def bench(months=(1, 3),\n          runs: int = int(os.environ.get("CRYPTOFLOW_BENCH_RUNS", "3"))): ...',
            True,
        ),
        ("def bench(*, master: str = settings.load().bench_spark_master): ...", True),
        ("def choose_mode(environ=os.environ) -> str: ...", False),
        ("def bench(n: int | None = None, symbols=tuple(DEFAULT_SYMBOLS)) -> dict: ...", False),
    ],
)
def test_the_scan_finds_switches_read_in_default_arguments(source, read):
    assert bool(default_reads(source)) is read


def test_no_switch_is_read_when_a_module_is_imported():
    offenders = {
        str(rel): names
        for rel, path in _production_files()
        if (names := default_reads(path.read_text()))
    }
    assert not offenders


def test_the_forecast_knobs_and_the_bench_switches_are_declared_in_sections():
    from cryptoflow.forecast.config import ForecastConfig

    by_env = {s.env: s for s in settings.SETTINGS}
    for name in ForecastConfig.__dataclass_fields__:
        assert by_env[f"CRYPTOFLOW_FORECAST_{name.upper()}"].section == "forecast", name
    bench = [s.env for s in settings.SETTINGS if s.section == "bench"]
    assert "CRYPTOFLOW_BENCH_ROWS" in bench and all(
        name.startswith("CRYPTOFLOW_BENCH_") for name in bench
    )
    assert set(settings.SECTIONS) == {s.section for s in settings.SETTINGS}
    assert all(s.doc and "\n" not in s.doc for s in settings.SETTINGS)


def test_the_shared_data_is_derived_in_one_place(tmp_path):
    home = tmp_path / "checkout"
    assert (
        settings.shared_data_dir({"CRYPTOFLOW_HOME": str(home)})
        == home.resolve().parent / "shared" / "data"
    )
    assert settings.shared_data_dir({"CRYPTOFLOW_SHARED_DATA": "/data/shared"}) == Path(
        "/data/shared"
    )
    derivations = {
        str(rel) for rel, path in _production_files() if '"shared" / "data"' in path.read_text()
    }
    assert not derivations, (
        f"the shared data's path derived outside cryptoflow.settings: {derivations}"
    )


def test_every_setting_is_declared_once_with_its_own_name():
    names = [s.env for s in settings.SETTINGS]
    assert len(names) == len(set(names))
    assert all(name.startswith("CRYPTOFLOW_") for name in names)
    assert [s.field for s in settings.SETTINGS] == list(settings.Settings.__dataclass_fields__)


def test_the_moved_variables_keep_their_defaults(tmp_path):
    s = settings.load(
        {"CRYPTOFLOW_STATE_DIR": str(tmp_path), "CRYPTOFLOW_HOME": str(tmp_path / "checkout")}
    )
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

    s = settings.load(
        {
            "CRYPTOFLOW_STATE_DIR": str(tmp_path),
            "CRYPTOFLOW_S3_ENDPOINT_URL": "http://minio:9000",
            "CRYPTOFLOW_POSTGRES_JDBC_JAR": "/opt/pg.jar",
            "CRYPTOFLOW_SPARK_DRIVER_MEMORY": "1g",
            "CRYPTOFLOW_MODELS_DIR": str(tmp_path / "m"),
            "CRYPTOFLOW_FORECAST_TF_THREADS": "3",
            "CRYPTOFLOW_CODE_VERSION": "abc123",
            "CRYPTOFLOW_REPLAY_DATA": os.pathsep.join(["/a", "/b"]),
            "CRYPTOFLOW_SHARED_DATA": "/data/shared",
        }
    )
    assert (s.s3_endpoint_url, s.postgres_jdbc_jar, s.spark_driver_memory) == (
        "http://minio:9000",
        "/opt/pg.jar",
        "1g",
    )
    assert (s.models_dir, s.forecast_tf_threads, s.code_version) == (tmp_path / "m", 3, "abc123")
    assert s.replay_data == (Path("/a"), Path("/b")) and s.shared_data == Path("/data/shared")
    # ...and handed to child processes as they were given.
    env = s.as_env()
    assert (
        env["CRYPTOFLOW_REPLAY_DATA"] == os.pathsep.join(["/a", "/b"])
        and env["CRYPTOFLOW_FORECAST_TF_THREADS"] == "3"
    )
    with pytest.raises(settings.ConfigError, match="CRYPTOFLOW_FORECAST_TF_THREADS"):
        settings.load(
            {"CRYPTOFLOW_STATE_DIR": str(tmp_path), "CRYPTOFLOW_FORECAST_TF_THREADS": "many"}
        )


def test_directories_under_the_checkout_follow_it_in_the_stack_file(tmp_path):
    # Derived from CRYPTOFLOW_HOME, they are recorded only when set otherwise (like the Binance URLs).
    s = settings.load({"CRYPTOFLOW_STATE_DIR": str(tmp_path)})
    recorded = settings.stack_file_values(s)
    assert "CRYPTOFLOW_MODELS_DIR" not in recorded and "CRYPTOFLOW_SHARED_DATA" not in recorded
    moved = settings.load(
        {"CRYPTOFLOW_STATE_DIR": str(tmp_path), "CRYPTOFLOW_MODELS_DIR": "/elsewhere"}
    )
    assert settings.stack_file_values(moved)["CRYPTOFLOW_MODELS_DIR"] == "/elsewhere"


def test_given_names_only_what_is_set():
    assert settings.given(
        {"CRYPTOFLOW_BINANCE_MODE": "replay", "CRYPTOFLOW_SYMBOLS": "", "OTHER": "x"}
    ) == {"binance_mode": "replay"}
