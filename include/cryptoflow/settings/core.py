"""The core section: the platform's settings (where its state, stores and services are, what it
collects, how Spark runs), declared as the fields of CoreSettings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptoflow.settings.connections import _local_dsn, read_credentials
from cryptoflow.settings.machinery import (
    Getter,
    _absolute_path,
    _base_url,
    _executor,
    _joined,
    _mode,
    _path,
    _paths,
    _port,
    _setting,
    _symbols,
)

# The ten coins of the original system, quoted in USDT. MATIC became POL on 2024-09-13
# (see cryptoflow.symbols): the configured name is the current one.
DEFAULT_SYMBOLS = (
    "BTCUSDT",
    "ETHUSDT",
    "XRPUSDT",
    "BNBUSDT",
    "DOGEUSDT",
    "ADAUSDT",
    "POLUSDT",
    "DOTUSDT",
    "SOLUSDT",
    "USDCUSDT",
)

LIVE_WS_URL = "wss://data-stream.binance.vision"
LIVE_REST_URL = "https://api.binance.com"

STACK_FILE_NAME = "stack.env"


def _project_home() -> Path:
    """The checkout this package lives in (include/cryptoflow/settings/ -> project root), else the cwd."""
    here = Path(__file__).resolve().parent
    root = here.parent.parent.parent
    if (root / "dags").is_dir() and (root / "include").is_dir():
        return root
    return Path.cwd()


def _credentials_of(get: Getter) -> dict[str, str]:
    return read_credentials(get("state_dir") / "credentials.env")


def _binance_urls(mode: str, replay_port: int) -> tuple[str, str]:
    """(websocket, REST) base URLs picked when CRYPTOFLOW_BINANCE_WS_URL / _REST_URL are empty."""
    if mode == "live":
        return LIVE_WS_URL, LIVE_REST_URL
    return f"ws://127.0.0.1:{replay_port}", f"http://127.0.0.1:{replay_port}"


@dataclass(frozen=True)
class CoreSettings:
    """The core section of Settings (cryptoflow.settings.table), which adds the other sections."""

    home: Path = _setting(
        "CRYPTOFLOW_HOME",
        "<checkout>",
        "Project root: dags/, plugins/, spark_jobs/ are found here.",
        parse=_absolute_path,
        derive=lambda get: str(_project_home()),
        record="never",
    )
    state_dir: Path = _setting(
        "CRYPTOFLOW_STATE_DIR",
        "{home}/.state",
        "Local state: PostgreSQL cluster, logs, credentials, file:// stores.",
        parse=_absolute_path,
        record="never",
    )
    bind_host: str = _setting(
        "CRYPTOFLOW_BIND_HOST",
        "127.0.0.1",
        "Address every local service listens on (loopback by default).",
    )
    pg_port: int = _setting(
        "CRYPTOFLOW_PG_PORT", "5433", "Port of the private PostgreSQL cluster.", parse=_port
    )
    warehouse_dsn: str = _setting(
        "CRYPTOFLOW_WAREHOUSE_DSN",
        "postgresql://cf_writer:<generated>@127.0.0.1:{pg_port}/cryptoflow",
        "Warehouse DSN of the pipelines (writer role).",
        record="never",
        derive=lambda get: _local_dsn(
            "cf_writer", _credentials_of(get).get("CF_WRITER_PASSWORD"), get("pg_port")
        ),
    )
    warehouse_reader_dsn: str = _setting(
        "CRYPTOFLOW_WAREHOUSE_READER_DSN",
        "postgresql://cf_reader:<generated>@127.0.0.1:{pg_port}/cryptoflow",
        "Warehouse DSN of the dashboards (read-only role).",
        record="never",
        derive=lambda get: _local_dsn(
            "cf_reader", _credentials_of(get).get("CF_READER_PASSWORD"), get("pg_port")
        ),
    )
    landing_uri: str = _setting(
        "CRYPTOFLOW_LANDING_URI",
        "file://{state}/landing",
        "Where ingest seals its snapshots (file://, hdfs://, s3://).",
    )
    lake_uri: str = _setting(
        "CRYPTOFLOW_LAKE_URI",
        "file://{state}/lake",
        "Parquet lake root (file:// locally, hdfs://namenode:8020/... in compose).",
    )
    model_store_uri: str = _setting(
        "CRYPTOFLOW_MODEL_STORE_URI",
        "file://{state}/models",
        "Model registry root (file:// or s3://bucket/prefix).",
    )
    s3_endpoint_url: str = _setting(
        "CRYPTOFLOW_S3_ENDPOINT_URL", "", "S3-compatible endpoint (MinIO, moto); empty means AWS."
    )
    models_dir: Path = _setting(
        "CRYPTOFLOW_MODELS_DIR",
        "{home}/models",
        "Directory of the Keras architectures (`<name>.py`, each with `build()`).",
        parse=_path,
        record="changed",
    )
    code_version: str = _setting(
        "CRYPTOFLOW_CODE_VERSION",
        "",
        "Code version recorded with each model; empty: the checkout's git commit.",
    )
    spark_master: str = _setting(
        "CRYPTOFLOW_SPARK_MASTER", "local[*]", "Spark master URL (local[*], spark://host:7077)."
    )
    spark_driver_memory: str = _setting(
        "CRYPTOFLOW_SPARK_DRIVER_MEMORY",
        "2g",
        "Spark driver heap: spark-submit's --driver-memory in the DAG, spark.driver.memory elsewhere.",
    )
    postgres_jdbc_jar: str = _setting(
        "CRYPTOFLOW_POSTGRES_JDBC_JAR",
        "/usr/share/java/postgresql.jar",
        "PostgreSQL JDBC driver handed to Spark (Debian's libpostgresql-jdbc-java; used if present).",
    )
    symbols: tuple[str, ...] = _setting(
        "CRYPTOFLOW_SYMBOLS",
        ",".join(DEFAULT_SYMBOLS),
        "Comma-separated Binance symbols to collect and forecast.",
        parse=_symbols,
        show=_joined(","),
    )
    interval: str = _setting("CRYPTOFLOW_INTERVAL", "1m", "Kline interval collected from Binance.")
    source: str = _setting(
        "CRYPTOFLOW_SOURCE",
        "binance",
        "Market-data source, a module of cryptoflow.sources: binance (live or "
        "replay), or files (the candle files of CRYPTOFLOW_REPLAY_DATA, no network, history only).",
    )
    binance_mode: str = _setting(
        "CRYPTOFLOW_BINANCE_MODE",
        "live",
        "live: talk to Binance; replay: the local replay server.",
        parse=_mode,
    )
    binance_ws_url: str = _setting(
        "CRYPTOFLOW_BINANCE_WS_URL",
        "",
        "Websocket base URL; empty picks Binance (live) or the replay server.",
        parse=_base_url,
        record="changed",
        derive=lambda get: _binance_urls(get("binance_mode"), get("replay_port"))[0],
    )
    binance_rest_url: str = _setting(
        "CRYPTOFLOW_BINANCE_REST_URL",
        "",
        "REST base URL; empty picks Binance (live) or the replay server.",
        parse=_base_url,
        record="changed",
        derive=lambda get: _binance_urls(get("binance_mode"), get("replay_port"))[1],
    )
    replay_port: int = _setting(
        "CRYPTOFLOW_REPLAY_PORT", "9444", "Port of the local Binance replay server.", parse=_port
    )
    replay_data: tuple[Path, ...] = _setting(
        "CRYPTOFLOW_REPLAY_DATA",
        "",
        "Directories of candle files the replay server serves (os.pathsep-separated); empty: the shared data's.",
        parse=_paths,
        show=_joined(os.pathsep),
    )
    shared_data: Path = _setting(
        "CRYPTOFLOW_SHARED_DATA",
        "<checkout>/../shared/data",
        "The shared data (replay history in its cryptodatadownload/, test fixtures).",
        parse=_path,
        record="changed",
        derive=lambda get: str(get("home").parent / "shared" / "data"),
    )
    airflow_port: int = _setting(
        "CRYPTOFLOW_AIRFLOW_PORT", "8080", "Airflow UI / API port.", parse=_port
    )
    superset_port: int = _setting("CRYPTOFLOW_SUPERSET_PORT", "8088", "Superset port.", parse=_port)
    airflow_executor: str = _setting(
        "CRYPTOFLOW_AIRFLOW_EXECUTOR",
        "local",
        "Executor of the local stack's Airflow: local (LocalExecutor), or "
        "celery (CeleryExecutor: a Celery worker, Redis on CRYPTOFLOW_REDIS_PORT as broker), as in docker-compose.",
        parse=_executor,
    )
    redis_port: int = _setting(
        "CRYPTOFLOW_REDIS_PORT",
        "6380",
        "Port of the local stack's Redis (the Celery broker; celery executor only).",
        parse=_port,
    )

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
