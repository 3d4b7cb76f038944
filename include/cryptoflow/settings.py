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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
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
# Never recorded in the stack file: where the file is found (home, state dir), and the DSNs, which
# carry passwords (the local cluster's are filled in from credentials.env when the DSNs are unset).
_NOT_IN_STACK_FILE = frozenset({
    "CRYPTOFLOW_HOME", "CRYPTOFLOW_STATE_DIR", "CRYPTOFLOW_WAREHOUSE_DSN", "CRYPTOFLOW_WAREHOUSE_READER_DSN",
})


def _project_home() -> Path:
    """The checkout this package lives in (include/cryptoflow/ -> project root), else the cwd."""
    here = Path(__file__).resolve().parent
    root = here.parent.parent
    if (root / "dags").is_dir() and (root / "include").is_dir():
        return root
    return Path.cwd()


@dataclass(frozen=True)
class Setting:
    env: str
    default: str  # textual default; "{state}" and "{home}" are expanded
    doc: str


# The single table of configuration: README's table is generated from it (`cryptoflow config --markdown`).
SETTINGS: tuple[Setting, ...] = (
    Setting("CRYPTOFLOW_HOME", "<checkout>", "Project root: dags/, plugins/, spark_jobs/ are found here."),
    Setting("CRYPTOFLOW_STATE_DIR", "{home}/.state", "Local state: PostgreSQL cluster, logs, credentials, file:// stores."),
    Setting("CRYPTOFLOW_BIND_HOST", "127.0.0.1", "Address every local service listens on (loopback by default)."),
    Setting("CRYPTOFLOW_PG_PORT", "5433", "Port of the private PostgreSQL cluster."),
    Setting("CRYPTOFLOW_WAREHOUSE_DSN", "postgresql://cf_writer:<generated>@127.0.0.1:{pg_port}/cryptoflow",
            "Warehouse DSN of the pipelines (writer role)."),
    Setting("CRYPTOFLOW_WAREHOUSE_READER_DSN", "postgresql://cf_reader:<generated>@127.0.0.1:{pg_port}/cryptoflow",
            "Warehouse DSN of the dashboards (read-only role)."),
    Setting("CRYPTOFLOW_LANDING_URI", "file://{state}/landing", "Where ingest seals its snapshots (file://, hdfs://, s3://)."),
    Setting("CRYPTOFLOW_LAKE_URI", "file://{state}/lake", "Parquet lake root (file:// locally, hdfs://namenode:8020/... in compose)."),
    Setting("CRYPTOFLOW_MODEL_STORE_URI", "file://{state}/models", "Model registry root (file:// or s3://bucket/prefix)."),
    Setting("CRYPTOFLOW_S3_ENDPOINT_URL", "", "S3-compatible endpoint (MinIO, moto); empty means AWS."),
    Setting("CRYPTOFLOW_SPARK_MASTER", "local[*]", "Spark master URL (local[*], spark://host:7077)."),
    Setting("CRYPTOFLOW_SYMBOLS", ",".join(DEFAULT_SYMBOLS), "Comma-separated Binance symbols to collect and forecast."),
    Setting("CRYPTOFLOW_INTERVAL", "1m", "Kline interval collected from Binance."),
    Setting("CRYPTOFLOW_BINANCE_MODE", "live", "live: talk to Binance; replay: the local replay server."),
    Setting("CRYPTOFLOW_BINANCE_WS_URL", "", "Websocket base URL; empty picks Binance (live) or the replay server."),
    Setting("CRYPTOFLOW_BINANCE_REST_URL", "", "REST base URL; empty picks Binance (live) or the replay server."),
    Setting("CRYPTOFLOW_REPLAY_PORT", "9444", "Port of the local Binance replay server."),
    Setting("CRYPTOFLOW_AIRFLOW_PORT", "8080", "Airflow UI / API port."),
    Setting("CRYPTOFLOW_SUPERSET_PORT", "8088", "Superset port."),
)


@dataclass(frozen=True)
class Settings:
    home: Path
    state_dir: Path
    bind_host: str
    pg_port: int
    warehouse_dsn: str
    warehouse_reader_dsn: str
    landing_uri: str
    lake_uri: str
    model_store_uri: str
    s3_endpoint_url: str
    spark_master: str
    symbols: tuple[str, ...]
    interval: str
    binance_mode: str
    binance_ws_url: str
    binance_rest_url: str
    replay_port: int
    airflow_port: int
    superset_port: int

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
        values = {
            "CRYPTOFLOW_HOME": str(self.home),
            "CRYPTOFLOW_STATE_DIR": str(self.state_dir),
            "CRYPTOFLOW_BIND_HOST": self.bind_host,
            "CRYPTOFLOW_PG_PORT": str(self.pg_port),
            "CRYPTOFLOW_WAREHOUSE_DSN": self.warehouse_dsn,
            "CRYPTOFLOW_WAREHOUSE_READER_DSN": self.warehouse_reader_dsn,
            "CRYPTOFLOW_LANDING_URI": self.landing_uri,
            "CRYPTOFLOW_LAKE_URI": self.lake_uri,
            "CRYPTOFLOW_MODEL_STORE_URI": self.model_store_uri,
            "CRYPTOFLOW_S3_ENDPOINT_URL": self.s3_endpoint_url,
            "CRYPTOFLOW_SPARK_MASTER": self.spark_master,
            "CRYPTOFLOW_SYMBOLS": ",".join(self.symbols),
            "CRYPTOFLOW_INTERVAL": self.interval,
            "CRYPTOFLOW_BINANCE_MODE": self.binance_mode,
            "CRYPTOFLOW_BINANCE_WS_URL": self.binance_ws_url,
            "CRYPTOFLOW_BINANCE_REST_URL": self.binance_rest_url,
            "CRYPTOFLOW_REPLAY_PORT": str(self.replay_port),
            "CRYPTOFLOW_AIRFLOW_PORT": str(self.airflow_port),
            "CRYPTOFLOW_SUPERSET_PORT": str(self.superset_port),
        }
        return values


class ConfigError(ValueError):
    """A configuration value that can't be used; the message names the variable."""


def _int(env: dict, name: str, default: str) -> int:
    raw = env.get(name) or default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if not 0 < value < 65536:
        raise ConfigError(f"{name}={value} is not a TCP port")
    return value


def _locate(env: dict) -> tuple[Path, Path]:
    """(home, state dir) of an environment: the two settings the stack file can't supply."""
    home = Path(env.get("CRYPTOFLOW_HOME") or _project_home()).resolve()
    state = Path(env.get("CRYPTOFLOW_STATE_DIR") or home / ".state").resolve()
    return home, state


def _binance_urls(mode: str, replay_port: int) -> tuple[str, str]:
    """(websocket, REST) base URLs picked when CRYPTOFLOW_BINANCE_WS_URL / _REST_URL are empty."""
    if mode == "live":
        return LIVE_WS_URL, LIVE_REST_URL
    return f"ws://127.0.0.1:{replay_port}", f"http://127.0.0.1:{replay_port}"


def load(environ: dict | None = None, *, stack_file: bool | None = None) -> Settings:
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
    bind = env.get("CRYPTOFLOW_BIND_HOST") or "127.0.0.1"
    pg_port = _int(env, "CRYPTOFLOW_PG_PORT", "5433")

    mode = (env.get("CRYPTOFLOW_BINANCE_MODE") or "live").strip().lower()
    if mode not in ("live", "replay"):
        raise ConfigError(f"CRYPTOFLOW_BINANCE_MODE={mode!r}: expected live or replay")
    replay_port = _int(env, "CRYPTOFLOW_REPLAY_PORT", "9444")
    default_ws, default_rest = _binance_urls(mode, replay_port)
    ws_url = env.get("CRYPTOFLOW_BINANCE_WS_URL") or default_ws
    rest_url = env.get("CRYPTOFLOW_BINANCE_REST_URL") or default_rest

    symbols = tuple(s.strip().upper() for s in (env.get("CRYPTOFLOW_SYMBOLS") or ",".join(DEFAULT_SYMBOLS)).split(",") if s.strip())
    if not symbols:
        raise ConfigError("CRYPTOFLOW_SYMBOLS is empty")
    bad = [s for s in symbols if not s.isalnum()]
    if bad:
        raise ConfigError(f"CRYPTOFLOW_SYMBOLS has invalid symbols: {bad}")

    creds = read_credentials(state / "credentials.env")
    writer_dsn = env.get("CRYPTOFLOW_WAREHOUSE_DSN") or _local_dsn("cf_writer", creds.get("CF_WRITER_PASSWORD"), pg_port)
    reader_dsn = env.get("CRYPTOFLOW_WAREHOUSE_READER_DSN") or _local_dsn("cf_reader", creds.get("CF_READER_PASSWORD"), pg_port)

    return Settings(
        home=home,
        state_dir=state,
        bind_host=bind,
        pg_port=pg_port,
        warehouse_dsn=writer_dsn,
        warehouse_reader_dsn=reader_dsn,
        landing_uri=env.get("CRYPTOFLOW_LANDING_URI") or f"file://{state}/landing",
        lake_uri=env.get("CRYPTOFLOW_LAKE_URI") or f"file://{state}/lake",
        model_store_uri=env.get("CRYPTOFLOW_MODEL_STORE_URI") or f"file://{state}/models",
        s3_endpoint_url=env.get("CRYPTOFLOW_S3_ENDPOINT_URL") or "",
        spark_master=env.get("CRYPTOFLOW_SPARK_MASTER") or "local[*]",
        symbols=symbols,
        interval=env.get("CRYPTOFLOW_INTERVAL") or "1m",
        binance_mode=mode,
        binance_ws_url=ws_url.rstrip("/"),
        binance_rest_url=rest_url.rstrip("/"),
        replay_port=replay_port,
        airflow_port=_int(env, "CRYPTOFLOW_AIRFLOW_PORT", "8080"),
        superset_port=_int(env, "CRYPTOFLOW_SUPERSET_PORT", "8088"),
    )


def _local_dsn(role: str, password: str | None, port: int) -> str:
    if password is None:
        # Not set up yet: a DSN without password, which fails to authenticate with a clear message.
        return f"postgresql://{role}@127.0.0.1:{port}/cryptoflow"
    return f"postgresql://{role}:{password}@127.0.0.1:{port}/cryptoflow"


def with_local_credentials(settings: Settings, creds: dict[str, str]) -> Settings:
    """The settings with the local cluster's generated passwords in the DSNs that were left at their
    default (settings loaded before `cryptoflow up` generated the credentials have none)."""
    from dataclasses import replace

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
    """What the stack file records of `settings`: every setting but home, state dir and DSNs, and
    nothing that carries a password. The Binance URLs only when they were set explicitly, so that
    overriding CRYPTOFLOW_BINANCE_MODE later still picks the matching URLs."""
    derived = dict(zip(("CRYPTOFLOW_BINANCE_WS_URL", "CRYPTOFLOW_BINANCE_REST_URL"),
                       _binance_urls(settings.binance_mode, settings.replay_port)))
    return {key: value for key, value in settings.as_env().items()
            if key not in _NOT_IN_STACK_FILE and derived.get(key) != value and not _has_password(value)}


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
    known = {s.env for s in SETTINGS} - _NOT_IN_STACK_FILE
    return {k: v for k, v in read_credentials(path).items() if k in known}


def stack_defaults(environ: dict | None = None) -> tuple[Path, dict[str, str]]:
    """(path, values) of the stack file in the state dir of `environ` (default os.environ): what
    `load()` takes as defaults; values are empty when there is no such file."""
    _, state = _locate(dict(os.environ if environ is None else environ))
    path = state / STACK_FILE_NAME
    return path, read_stack_file(path)


def markdown_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = s.default.replace("{home}", "<checkout>").replace("{state}", "<state>").replace("{pg_port}", "5433")
        default = default.replace("|", "\\|")
        rows.append(f"| `{s.env}` | `{default}` | {s.doc} |" if default else f"| `{s.env}` | (empty) | {s.doc} |")
    return "\n".join(rows)


__all__ = ["Settings", "SETTINGS", "load", "ConfigError", "read_credentials", "with_local_credentials", "markdown_table",
           "DEFAULT_SYMBOLS", "write_stack_file", "read_stack_file", "stack_file_values", "stack_defaults"]
