"""All configuration in one place: environment variables with documented defaults.

Every component (CLI, DAGs, Spark jobs, tests, docker-compose) reads its configuration through
`load()`. With nothing set, everything runs on one machine: a private PostgreSQL cluster on
loopback, `file://` landing zone, lake and model store under the state directory, Spark `local[*]`.
The distributed stack sets the same names to `hdfs://`, `s3://` and `spark://` values.

`cryptoflow config` prints the table below with the values in force.

`cryptoflow up` records the settings its services run with in <state>/stack.env (no passwords: those
are in credentials.env). `load()` of the process environment takes that file's values as defaults
beneath the environment, so every command run beside the stack (`cryptoflow config`, `backfill`,
`seal`, `airflow ...`) sees the mode, coins, ports and URIs the stack uses unless told otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# The ten coins of the original system, quoted in USDT. MATIC became POL on 2024-09-13
# (see cryptoflow.symbols): the configured name is the current one.
DEFAULT_SYMBOLS = (
    "BTCUSDT", "ETHUSDT", "XRPUSDT", "BNBUSDT", "DOGEUSDT",
    "ADAUSDT", "POLUSDT", "DOTUSDT", "SOLUSDT", "USDCUSDT",
)

LIVE_WS_URL = "wss://data-stream.binance.vision"
LIVE_REST_URL = "https://api.binance.com"

STACK_FILE_NAME = "stack.env"


def _project_home() -> Path:
    """The checkout this package lives in (include/cryptoflow/ -> project root), else the cwd."""
    here = Path(__file__).resolve().parent
    root = here.parent.parent
    if (root / "dags").is_dir() and (root / "include").is_dir():
        return root
    return Path.cwd()


class ConfigError(ValueError):
    """A configuration value that can't be used; the message names the variable."""


# --- parsing: (variable name, text) -> value, a ConfigError naming the variable when it can't be used

def _text(name: str, raw: str) -> str:
    return raw


def _integer(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def _port(name: str, raw: str) -> int:
    value = _integer(name, raw)
    if not 0 < value < 65536:
        raise ConfigError(f"{name}={value} is not a TCP port")
    return value


def _path(name: str, raw: str) -> Path:
    return Path(raw)


def _absolute_path(name: str, raw: str) -> Path:
    return Path(raw).resolve()


def _paths(name: str, raw: str) -> tuple[Path, ...]:
    return tuple(Path(p) for p in raw.split(os.pathsep) if p)


def _base_url(name: str, raw: str) -> str:
    return raw.rstrip("/")


def _mode(name: str, raw: str) -> str:
    mode = raw.strip().lower()
    if mode not in ("live", "replay"):
        raise ConfigError(f"{name}={mode!r}: expected live or replay")
    return mode


def _executor(name: str, raw: str) -> str:
    executor = raw.strip().lower()
    if executor not in ("local", "celery"):
        raise ConfigError(f"{name}={executor!r}: expected local or celery")
    return executor


def _symbols(name: str, raw: str) -> tuple[str, ...]:
    symbols = tuple(s.strip().upper() for s in raw.split(",") if s.strip())
    if not symbols:
        raise ConfigError(f"{name} is empty")
    bad = [s for s in symbols if not s.isalnum()]
    if bad:
        raise ConfigError(f"{name} has invalid symbols: {bad}")
    return symbols


def _joined(separator: str) -> Callable[[Any], str]:
    return lambda values: separator.join(str(v) for v in values)


# What a computed default is given: the value of any other setting, by field name.
Getter = Callable[[str], Any]


@dataclass(frozen=True)
class Setting:
    """One CRYPTOFLOW_* variable: its name, documented default and meaning, and how its text is read.

    `default` is what README's table shows; "{home}", "{state}" and "{pg_port}" in it stand for
    those settings' values. `derive`, when given, computes the default instead (from other settings).
    `record` says what the stack file keeps of it: "always", "changed" (only a value other than the
    default, so that it follows the settings it is derived from) or "never".
    """

    env: str
    default: str
    doc: str
    parse: Callable[[str, str], Any] = _text
    show: Callable[[Any], str] = str
    derive: Callable[[Getter], str] | None = None
    record: str = "always"
    field: str = ""  # the attribute of Settings it is declared on (filled in below)


def _setting(env: str, default: str, doc: str, **how: Any) -> Any:
    """The declaration of one setting: a Settings field carrying its Setting."""
    return field(metadata={"setting": Setting(env, default, doc, **how)})


def _credentials_of(get: Getter) -> dict[str, str]:
    return read_credentials(get("state_dir") / "credentials.env")


def _binance_urls(mode: str, replay_port: int) -> tuple[str, str]:
    """(websocket, REST) base URLs picked when CRYPTOFLOW_BINANCE_WS_URL / _REST_URL are empty."""
    if mode == "live":
        return LIVE_WS_URL, LIVE_REST_URL
    return f"ws://127.0.0.1:{replay_port}", f"http://127.0.0.1:{replay_port}"


@dataclass(frozen=True)
class Settings:
    """The configuration in force. Each field is declared once, with its variable: SETTINGS, load(),
    as_env(), the stack file and README's table (`cryptoflow config --markdown`) all follow from it.
    Never recorded in the stack file: where the file is found (home, state dir), and the DSNs, which
    carry passwords (the local cluster's are filled in from credentials.env when the DSNs are unset)."""

    home: Path = _setting(
        "CRYPTOFLOW_HOME", "<checkout>", "Project root: dags/, plugins/, spark_jobs/ are found here.",
        parse=_absolute_path, derive=lambda get: str(_project_home()), record="never")
    state_dir: Path = _setting(
        "CRYPTOFLOW_STATE_DIR", "{home}/.state", "Local state: PostgreSQL cluster, logs, credentials, file:// stores.",
        parse=_absolute_path, record="never")
    bind_host: str = _setting(
        "CRYPTOFLOW_BIND_HOST", "127.0.0.1", "Address every local service listens on (loopback by default).")
    pg_port: int = _setting("CRYPTOFLOW_PG_PORT", "5433", "Port of the private PostgreSQL cluster.", parse=_port)
    warehouse_dsn: str = _setting(
        "CRYPTOFLOW_WAREHOUSE_DSN", "postgresql://cf_writer:<generated>@127.0.0.1:{pg_port}/cryptoflow",
        "Warehouse DSN of the pipelines (writer role).", record="never",
        derive=lambda get: _local_dsn("cf_writer", _credentials_of(get).get("CF_WRITER_PASSWORD"), get("pg_port")))
    warehouse_reader_dsn: str = _setting(
        "CRYPTOFLOW_WAREHOUSE_READER_DSN", "postgresql://cf_reader:<generated>@127.0.0.1:{pg_port}/cryptoflow",
        "Warehouse DSN of the dashboards (read-only role).", record="never",
        derive=lambda get: _local_dsn("cf_reader", _credentials_of(get).get("CF_READER_PASSWORD"), get("pg_port")))
    landing_uri: str = _setting(
        "CRYPTOFLOW_LANDING_URI", "file://{state}/landing", "Where ingest seals its snapshots (file://, hdfs://, s3://).")
    lake_uri: str = _setting(
        "CRYPTOFLOW_LAKE_URI", "file://{state}/lake",
        "Parquet lake root (file:// locally, hdfs://namenode:8020/... in compose).")
    model_store_uri: str = _setting(
        "CRYPTOFLOW_MODEL_STORE_URI", "file://{state}/models", "Model registry root (file:// or s3://bucket/prefix).")
    s3_endpoint_url: str = _setting(
        "CRYPTOFLOW_S3_ENDPOINT_URL", "", "S3-compatible endpoint (MinIO, moto); empty means AWS.")
    models_dir: Path = _setting(
        "CRYPTOFLOW_MODELS_DIR", "{home}/models", "Directory of the Keras architectures (`<name>.py`, each with `build()`).",
        parse=_path, record="changed")
    forecast_tf_threads: int = _setting(
        "CRYPTOFLOW_FORECAST_TF_THREADS", "1", "TensorFlow intra- and inter-op threads of a training process.",
        parse=_integer)
    code_version: str = _setting(
        "CRYPTOFLOW_CODE_VERSION", "", "Code version recorded with each model; empty: the checkout's git commit.")
    spark_master: str = _setting("CRYPTOFLOW_SPARK_MASTER", "local[*]", "Spark master URL (local[*], spark://host:7077).")
    spark_driver_memory: str = _setting(
        "CRYPTOFLOW_SPARK_DRIVER_MEMORY", "2g",
        "Spark driver heap: spark-submit's --driver-memory in the DAG, spark.driver.memory elsewhere.")
    postgres_jdbc_jar: str = _setting(
        "CRYPTOFLOW_POSTGRES_JDBC_JAR", "/usr/share/java/postgresql.jar",
        "PostgreSQL JDBC driver handed to Spark (Debian's libpostgresql-jdbc-java; used if present).")
    symbols: tuple[str, ...] = _setting(
        "CRYPTOFLOW_SYMBOLS", ",".join(DEFAULT_SYMBOLS), "Comma-separated Binance symbols to collect and forecast.",
        parse=_symbols, show=_joined(","))
    interval: str = _setting("CRYPTOFLOW_INTERVAL", "1m", "Kline interval collected from Binance.")
    source: str = _setting(
        "CRYPTOFLOW_SOURCE", "binance", "Market-data source, a module of cryptoflow.sources: binance (live or "
        "replay), or files (the candle files of CRYPTOFLOW_REPLAY_DATA, no network, history only).")
    binance_mode: str = _setting(
        "CRYPTOFLOW_BINANCE_MODE", "live", "live: talk to Binance; replay: the local replay server.", parse=_mode)
    binance_ws_url: str = _setting(
        "CRYPTOFLOW_BINANCE_WS_URL", "", "Websocket base URL; empty picks Binance (live) or the replay server.",
        parse=_base_url, record="changed",
        derive=lambda get: _binance_urls(get("binance_mode"), get("replay_port"))[0])
    binance_rest_url: str = _setting(
        "CRYPTOFLOW_BINANCE_REST_URL", "", "REST base URL; empty picks Binance (live) or the replay server.",
        parse=_base_url, record="changed",
        derive=lambda get: _binance_urls(get("binance_mode"), get("replay_port"))[1])
    replay_port: int = _setting("CRYPTOFLOW_REPLAY_PORT", "9444", "Port of the local Binance replay server.", parse=_port)
    replay_data: tuple[Path, ...] = _setting(
        "CRYPTOFLOW_REPLAY_DATA", "",
        "Directories of candle files the replay server serves (os.pathsep-separated); empty: the shared data's.",
        parse=_paths, show=_joined(os.pathsep))
    shared_data: Path = _setting(
        "CRYPTOFLOW_SHARED_DATA", "<checkout>/../shared/data",
        "The shared data (replay history in its cryptodatadownload/, test fixtures).",
        parse=_path, record="changed", derive=lambda get: str(get("home").parent / "shared" / "data"))
    airflow_port: int = _setting("CRYPTOFLOW_AIRFLOW_PORT", "8080", "Airflow UI / API port.", parse=_port)
    superset_port: int = _setting("CRYPTOFLOW_SUPERSET_PORT", "8088", "Superset port.", parse=_port)
    airflow_executor: str = _setting(
        "CRYPTOFLOW_AIRFLOW_EXECUTOR", "local", "Executor of the local stack's Airflow: local (LocalExecutor), or "
        "celery (CeleryExecutor: a Celery worker, Redis on CRYPTOFLOW_REDIS_PORT as broker), as in docker-compose.",
        parse=_executor)
    redis_port: int = _setting(
        "CRYPTOFLOW_REDIS_PORT", "6380", "Port of the local stack's Redis (the Celery broker; celery executor only).",
        parse=_port)

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def credentials_file(self) -> Path:
        return self.state_dir / "credentials.env"

    @property
    def stack_file(self) -> Path:
        """The settings the stack's services run with, as `cryptoflow up` recorded them."""
        return self.state_dir / STACK_FILE_NAME

    def as_env(self) -> dict[str, str]:
        """The settings as CRYPTOFLOW_* variables, to hand to child processes (Airflow, Spark)."""
        return {s.env: s.show(getattr(self, s.field)) for s in SETTINGS}


# The single table of configuration, in declaration order: README's table is generated from it
# (`cryptoflow config --markdown`).
SETTINGS: tuple[Setting, ...] = tuple(replace(f.metadata["setting"], field=f.name) for f in fields(Settings))
_BY_FIELD = {s.field: s for s in SETTINGS}


def env_name(field_name: str) -> str:
    """The CRYPTOFLOW_* variable of a Settings field, e.g. env_name("warehouse_dsn")."""
    return _BY_FIELD[field_name].env

# What "{home}", "{state}" and "{pg_port}" in a documented default stand for.
_PLACEHOLDERS = {"{home}": "home", "{state}": "state_dir", "{pg_port}": "pg_port"}


def _default_text(setting: Setting, get: Getter) -> str:
    if setting.derive is not None:
        return setting.derive(get)
    text = setting.default
    for mark, name in _PLACEHOLDERS.items():
        if mark in text:
            text = text.replace(mark, str(get(name)))
    return text


def _resolve(env: Mapping[str, str], names: Iterable[str], known: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The values of the settings `names` (and of those their defaults depend on): the variable's
    text when set (non-empty), else the default, parsed."""
    values: dict[str, Any] = dict(known or {})

    def get(name: str) -> Any:
        if name not in values:
            setting = _BY_FIELD[name]
            values[name] = setting.parse(setting.env, env.get(setting.env) or _default_text(setting, get))
        return values[name]

    for name in names:
        get(name)
    return values


def _locate(env: Mapping[str, str]) -> tuple[Path, Path]:
    """(home, state dir) of an environment: the two settings the stack file can't supply."""
    values = _resolve(env, ("home", "state_dir"))
    return values["home"], values["state_dir"]


def load(environ: Mapping[str, str] | None = None, *, stack_file: bool | None = None) -> Settings:
    """Read the settings from `environ` (default os.environ), filling documented defaults.

    With `stack_file` (default: when reading os.environ, i.e. `environ` is None), the values
    `cryptoflow up` recorded in <state>/stack.env come beneath the environment: a variable set
    (non-empty) in the environment always wins, a missing file changes nothing. An explicit
    `environ` is read alone unless `stack_file=True`; `cryptoflow up` itself reads without it.

    Passwords of the local cluster come from the generated credentials file when the DSNs are
    not set explicitly; a DSN can't be built before `cryptoflow up` has written that file.
    """
    env = dict(os.environ if environ is None else environ)
    home, state = _locate(env)
    if (environ is None) if stack_file is None else stack_file:
        recorded = read_stack_file(state / STACK_FILE_NAME)
        if recorded:
            env = {**recorded, **{k: v for k, v in env.items() if v}}
    values = _resolve(env, _BY_FIELD, {"home": home, "state_dir": state})
    return Settings(**values)


def given(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings set explicitly (non-empty) in `environ` (default os.environ), by field name, as
    their text: what a command may treat differently from a default (no stack file beneath)."""
    env = os.environ if environ is None else environ
    return {s.field: env[s.env] for s in SETTINGS if env.get(s.env)}


def _local_dsn(role: str, password: str | None, port: int) -> str:
    if password is None:
        # Not set up yet: a DSN without password, which fails to authenticate with a clear message.
        return f"postgresql://{role}@127.0.0.1:{port}/cryptoflow"
    return f"postgresql://{role}:{password}@127.0.0.1:{port}/cryptoflow"


def local_admin_dsn(settings: Settings) -> str:
    """The local cluster's owner DSN (`cryptoflow db migrate`'s default), password from the
    credentials file the stack generated."""
    password = read_credentials(settings.credentials_file).get("CF_ADMIN_PASSWORD")
    return _local_dsn("cf_admin", password, settings.pg_port)


def superset_url(settings: Settings) -> str:
    """Base URL to reach Superset from this machine (a wildcard bind is reached over loopback)."""
    host = "127.0.0.1" if settings.bind_host in ("", "0.0.0.0") else settings.bind_host
    return f"http://{host}:{settings.superset_port}"


def with_local_credentials(settings: Settings, creds: dict[str, str]) -> Settings:
    """The settings with the local cluster's generated passwords in the DSNs that were left at their
    default (settings loaded before `cryptoflow up` generated the credentials have none)."""
    changes = {}
    if settings.warehouse_dsn == _local_dsn("cf_writer", None, settings.pg_port) and "CF_WRITER_PASSWORD" in creds:
        changes["warehouse_dsn"] = _local_dsn("cf_writer", creds["CF_WRITER_PASSWORD"], settings.pg_port)
    if settings.warehouse_reader_dsn == _local_dsn("cf_reader", None, settings.pg_port) and "CF_READER_PASSWORD" in creds:
        changes["warehouse_reader_dsn"] = _local_dsn("cf_reader", creds["CF_READER_PASSWORD"], settings.pg_port)
    return replace(settings, **changes) if changes else settings


def read_credentials(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of the generated credentials file (missing file: empty)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _has_password(value: str) -> bool:
    try:
        return urlsplit(value).password is not None
    except ValueError:
        return False


def stack_file_values(settings: Settings) -> dict[str, str]:
    """What the stack file records of `settings`: every setting but those recorded "never" (home,
    state dir, DSNs), and nothing that carries a password. Those recorded "changed" (the Binance
    URLs, the directories under the checkout) only when they differ from their default, so that
    overriding CRYPTOFLOW_BINANCE_MODE (or _HOME) later still picks the matching values."""
    def get(name: str) -> Any:
        return getattr(settings, name)

    out = {}
    for s in SETTINGS:
        value = s.show(get(s.field))
        if s.record == "never" or _has_password(value):
            continue
        if s.record == "changed" and value == s.show(s.parse(s.env, _default_text(s, get))):
            continue
        out[s.env] = value
    return out


def write_stack_file(settings: Settings) -> Path:
    """Record the settings the stack's services run with in <state>/stack.env (KEY=VALUE lines)."""
    path = settings.stack_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [f"# The settings the local stack's services run with, written by `cryptoflow up` at {now}.",
             "# Defaults beneath the environment for every `cryptoflow` command; no passwords (see credentials.env).",
             *(f"{key}={value}" for key, value in stack_file_values(settings).items())]
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def read_stack_file(path: Path) -> dict[str, str]:
    """The recorded settings of a stack file (missing file: empty); only keys it may carry."""
    known = {s.env for s in SETTINGS if s.record != "never"}
    return {k: v for k, v in read_credentials(path).items() if k in known}


def stack_defaults(environ: dict | None = None) -> tuple[Path, dict[str, str]]:
    """(path, values) of the stack file in the state dir of `environ` (default os.environ): what
    `load()` takes as defaults; values are empty when there is no such file."""
    _, state = _locate(dict(os.environ if environ is None else environ))
    path = state / STACK_FILE_NAME
    return path, read_stack_file(path)


def markdown_table() -> str:
    """README's configuration table: every setting with its documented default and meaning."""
    shown = {"{home}": "<checkout>", "{state}": "<state>", "{pg_port}": _BY_FIELD["pg_port"].default}
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = s.default
        for mark, text in shown.items():
            default = default.replace(mark, text)
        default = default.replace("|", "\\|")
        rows.append(f"| `{s.env}` | `{default}` | {s.doc} |" if default else f"| `{s.env}` | (empty) | {s.doc} |")
    return "\n".join(rows)


__all__ = ["Settings", "Setting", "SETTINGS", "load", "given", "ConfigError", "read_credentials", "with_local_credentials", "markdown_table",
           "DEFAULT_SYMBOLS", "write_stack_file", "read_stack_file", "stack_file_values", "stack_defaults"]
