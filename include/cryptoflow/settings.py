"""All configuration in one place: environment variables with documented defaults.

Every component (CLI, DAGs, Spark jobs, tests, docker-compose) reads its configuration through
`load()`. With nothing set, everything runs on one machine: a private PostgreSQL cluster on
loopback, `file://` landing zone, lake and model store under the state directory, Spark `local[*]`.
The distributed stack sets the same names to `hdfs://`, `s3://` and `spark://` values.

The settings come in sections: core (the platform's), forecast (the forecasting knobs that
cryptoflow.forecast.config gathers), bench (the benchmarks' switches) and bootstrap (read by
scripts/bootstrap.sh before Python exists, declared for the table). `cryptoflow config` prints them
with the values in force, by section; docs/configuration.md is `cryptoflow config --markdown`.

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
        raise ConfigError(f"{name}={raw!r} is not a valid int") from None


def _real(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid float") from None


def _stripped(name: str, raw: str) -> str:
    return raw.strip()


def _words(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list, possibly empty."""
    return tuple(word.strip() for word in raw.split(",") if word.strip())


def _flag(name: str, raw: str) -> bool:
    """On when set to anything (non-empty), as the switches have always been read."""
    return bool(raw)


def _shown_flag(on: Any) -> str:
    return "1" if on else ""


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

    `default` is what docs/configuration.md shows; "{home}", "{state}" and "{pg_port}" in it stand for
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
    section: str = "core"
    field: str = ""  # the attribute of Settings it is declared on (filled in below)

    @property
    def key(self) -> str:
        """Its name within its section (forecast_lookback -> lookback): the field of the section's users."""
        return self.field.removeprefix(self.section + "_")


def _setting(env: str, default: str, doc: str, **how: Any) -> Any:
    """The declaration of one setting: a Settings field carrying its Setting."""
    return field(metadata={"setting": Setting(env, default, doc, **how)})


def _in_section(section: str) -> Callable[..., Any]:
    """The declaration of a setting outside core, its variable named after its field (filled in with
    it). Never recorded in the stack file: these reach the stack's services through the environment."""

    def declare(default: str, doc: str, parse: Callable[[str, str], Any] = _text) -> Any:
        shows: dict[Callable[[str, str], Any], Callable[[Any], str]] = {
            _words: _joined(","),
            _flag: _shown_flag,
        }
        return _setting(
            "",
            default,
            doc,
            parse=parse,
            show=shows.get(parse, str),
            section=section,
            record="never",
        )

    return declare


_forecast, _bench, _bootstrap = (
    _in_section("forecast"),
    _in_section("bench"),
    _in_section("bootstrap"),
)

# What each section is, under its heading in docs/configuration.md.
SECTION_DOCS = {
    "core": "The platform: where its state, stores and services are, what it collects, how Spark runs.",
    "forecast": "The forecasting knobs (cryptoflow.forecast.config.ForecastConfig, one field each; `cryptoflow "
    "backtest --set FIELD=VALUE` overrides them). Those that shape a model are stored with it: "
    "changing one makes the current model stale.",
    "bench": "Switches of the benchmarks (`cryptoflow bench`); each benchmark's module says what it measures.",
    "bootstrap": "Read by scripts/bootstrap.sh, which runs before the Python environment exists.",
}


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
    as_env(), the stack file and docs/configuration.md (`cryptoflow config --markdown`) all follow from it.
    Never recorded in the stack file: where the file is found (home, state dir), and the DSNs, which
    carry passwords (the local cluster's are filled in from credentials.env when the DSNs are unset)."""

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

    forecast_tf_threads: int = _setting(
        "CRYPTOFLOW_FORECAST_TF_THREADS",
        "1",
        "TensorFlow intra- and inter-op threads of a training process.",
        parse=_integer,
        section="forecast",
    )
    # The other sections' variables are named after their fields: forecast_lookback is CRYPTOFLOW_FORECAST_LOOKBACK.
    forecast_architecture: str = _forecast(
        "lstm", "Model architecture: a file name in models/ (models/lstm.py).", _stripped
    )
    forecast_features: tuple[str, ...] = _forecast(
        "log_return",
        "Comma-separated model inputs (forecast.windows.FEATURES), e.g. log_return,log_volume_change.",
        _words,
    )
    forecast_pool: tuple[str, ...] = _forecast(
        "",
        "Comma-separated coins trained as one model (pooled); empty: one model per coin.",
        _words,
    )
    forecast_lookback: int = _forecast("24", "Hours of returns the model sees.", _integer)
    forecast_horizon: int = _forecast(
        "1", "Returns the model outputs; the first one is served (the next hour).", _integer
    )
    forecast_train_hours: int = _forecast(
        "2160", "Hours of history per training, the most recent before the cut.", _integer
    )
    forecast_validation_fraction: float = _forecast(
        "0.2", "Latest part of the training window: early stopping, promotion, intervals.", _real
    )
    forecast_epochs: int = _forecast("30", "Training epochs at most.", _integer)
    forecast_batch_size: int = _forecast("64", "Training batch size.", _integer)
    forecast_patience: int = _forecast(
        "3", "Epochs without validation improvement before training stops.", _integer
    )
    forecast_learning_rate: float = _forecast("0.001", "Learning rate of the optimiser.", _real)
    forecast_seed: int = _forecast("42", "Random seed of a training.", _integer)
    forecast_interval_level: float = _forecast(
        "0.9", "Central prediction interval (conformal, see forecast.intervals).", _real
    )
    forecast_interval_window_hours: int = _forecast(
        "336",
        "Interval calibration: the served forecast's errors on this many hours before.",
        _integer,
    )
    forecast_volatility_span_hours: int = _forecast(
        "24", "EWMA span of the volatility that scales those errors.", _integer
    )
    forecast_interval_min_scores: int = _forecast(
        "48", "Fewer calibration errors than this: no interval.", _integer
    )
    forecast_promotion_p_value: float = _forecast(
        "0.05",
        "A new model serves only if it beats persistence at this level (Diebold-Mariano test).",
        _real,
    )
    forecast_retire_window_hours: int = _forecast(
        "72", "Live retirement: the served model's latest scored hours ...", _integer
    )
    forecast_retire_min_hours: int = _forecast(
        "24", "... judged once it has this many ...", _integer
    )
    forecast_retire_margin: float = _forecast(
        "0.01", "... retired when its live MASE exceeds 1 + margin ...", _real
    )
    forecast_retire_p_value: float = _forecast(
        "0.1", "... and a Diebold-Mariano test says it is worse at this level.", _real
    )
    forecast_probation_hours: int = _forecast(
        "0",
        "A promoted model serves only once it has this many hours scored since its cut ...",
        _integer,
    )
    forecast_probation_margin: float = _forecast(
        "0.0",
        "... and while its MASE over its latest retire_window_hours is at most 1 + margin.",
        _real,
    )
    forecast_retrain_every_hours: int = _forecast("24", "Cadence of retraining (hours).", _integer)
    forecast_max_model_age_hours: int = _forecast(
        "168", "An older model is stale: it is retrained and not served.", _integer
    )
    forecast_retry_hours: int = _forecast(
        "6", "After a rejected or failed attempt, wait this long before retrying (hours).", _integer
    )
    forecast_freshness_tolerance_hours: int = _forecast(
        "0", "How many hours the latest complete candle may lag.", _integer
    )
    forecast_ewma_span: int = _forecast("12", "EWMA baseline on returns (hours).", _integer)
    forecast_drift_hours: int = _forecast(
        "24", "Drift baseline: mean return over this many hours.", _integer
    )

    bench_rows: int = _bench("1000000", "Candles of warehouse_copy and etl_load.", _integer)
    bench_runs: int = _bench("3", "Timed runs per history length of etl_incremental.", _integer)
    bench_spark_master: str = _bench("local[2]", "Spark master of the ETL benchmarks.")
    bench_messages: int = _bench(
        "200000", "Messages of ingest_parse when its module runs as a script.", _integer
    )
    bench_repeats: int = _bench("5", "Repeats of each chart's query in superset_queries.", _integer)
    bench_forecast_days: int = _bench(
        "30", "Days of the forecast benchmark's walk-forward backtest per coin.", _integer
    )
    bench_forecast_retrain_hours: int = _bench(
        "168", "Retraining cadence of the forecast benchmarks' backtests.", _integer
    )
    bench_forecast_symbols: tuple[str, ...] = _bench(
        "", "Coins of the forecast benchmark; empty: CRYPTOFLOW_SYMBOLS.", _words
    )
    bench_forecast_end_offset_days: int = _bench(
        "0",
        "Ends the forecast benchmark's backtest window this many days before the data does.",
        _integer,
    )
    bench_forecast_mase_only: bool = _bench(
        "", "Set (non-empty): the forecast benchmark skips its speed figures.", _flag
    )
    bench_verbose: bool = _bench(
        "", "Set (non-empty): the forecast benchmark logs every backtest step.", _flag
    )
    bench_compare_symbols: tuple[str, ...] = _bench(
        "BTCUSDT,ETHUSDT,SOLUSDT", "Coins of forecast_compare.", _words
    )
    bench_compare_days: int = _bench(
        "14", "Days of forecast_compare's walk-forward backtest.", _integer
    )
    bench_compare_variants: tuple[str, ...] = _bench(
        "",
        "Variants forecast_compare runs (cryptoflow_bench.forecast.VARIANTS); empty: all.",
        _words,
    )
    bench_operate_minutes: float = _bench(
        "120", "How long the operate benchmark watches the stack (minutes).", _real
    )
    bench_operate_sample_s: float = _bench(
        "60", "Seconds between two samples of the operate benchmark.", _real
    )
    bench_operate_warmup_minutes: float = _bench(
        "15", "Minutes of the operate benchmark's start left out of its freshness figures.", _real
    )

    skip_apt: bool = _bootstrap("", "Set (non-empty): no system packages are installed.", _flag)
    no_browser: bool = _bootstrap(
        "", "Set (non-empty): Chromium (the dashboards' screenshots) is not installed.", _flag
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

    def as_env(self) -> dict[str, str]:
        """The settings as CRYPTOFLOW_* variables, to hand to child processes (Airflow, Spark)."""
        return {s.env: s.show(getattr(self, s.field)) for s in SETTINGS}


# The single table of configuration, in declaration order: docs/configuration.md is generated from it
# (`cryptoflow config --markdown`).
SETTINGS: tuple[Setting, ...] = tuple(
    replace(
        f.metadata["setting"],
        field=f.name,
        env=f.metadata["setting"].env or f"CRYPTOFLOW_{f.name.upper()}",
    )
    for f in fields(Settings)
)
_BY_FIELD = {s.field: s for s in SETTINGS}
SECTIONS: tuple[str, ...] = tuple(SECTION_DOCS)


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


def _resolve(
    env: Mapping[str, str], names: Iterable[str], known: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The values of the settings `names` (and of those their defaults depend on): the variable's
    text when set (non-empty), else the default, parsed."""
    values: dict[str, Any] = dict(known or {})

    def get(name: str) -> Any:
        if name not in values:
            setting = _BY_FIELD[name]
            values[name] = setting.parse(
                setting.env, env.get(setting.env) or _default_text(setting, get)
            )
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
    return Settings(**_resolve(_environment(environ, stack_file), _BY_FIELD))


def _environment(environ: Mapping[str, str] | None, stack_file: bool | None) -> dict[str, str]:
    """The variables `load()` reads: `environ` (default os.environ), over the stack file when asked."""
    env = dict(os.environ if environ is None else environ)
    if (environ is None) if stack_file is None else stack_file:
        recorded = read_stack_file(_locate(env)[1] / STACK_FILE_NAME)
        if recorded:
            env = {**recorded, **{k: v for k, v in env.items() if v}}
    return env


def section_values(
    section: str, environ: Mapping[str, str] | None = None, texts: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """One section's values by key (forecast_lookback -> "lookback"), read as `load()` reads them;
    `texts` (by key) come over the environment, parsed as the variable would be."""
    env = _environment(environ, None)
    declared = {s.key: s for s in SETTINGS if s.section == section}
    env.update({declared[key].env: text for key, text in (texts or {}).items()})
    values = _resolve(env, [s.field for s in declared.values()])
    return {key: values[s.field] for key, s in declared.items()}


def shared_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The shared data (replay history, test fixtures): the `shared_data` setting, for code that
    needs no other setting (benchmarks, test fixtures)."""
    path: Path = _resolve(_environment(environ, None), ("shared_data",))["shared_data"]
    return path


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
    changes: dict[str, Any] = {}
    if (
        settings.warehouse_dsn == _local_dsn("cf_writer", None, settings.pg_port)
        and "CF_WRITER_PASSWORD" in creds
    ):
        changes["warehouse_dsn"] = _local_dsn(
            "cf_writer", creds["CF_WRITER_PASSWORD"], settings.pg_port
        )
    if (
        settings.warehouse_reader_dsn == _local_dsn("cf_reader", None, settings.pg_port)
        and "CF_READER_PASSWORD" in creds
    ):
        changes["warehouse_reader_dsn"] = _local_dsn(
            "cf_reader", creds["CF_READER_PASSWORD"], settings.pg_port
        )
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
    lines = [
        f"# The settings the local stack's services run with, written by `cryptoflow up` at {now}.",
        "# Defaults beneath the environment for every `cryptoflow` command; no passwords (see credentials.env).",
        *(f"{key}={value}" for key, value in stack_file_values(settings).items()),
    ]
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
    """docs/configuration.md: every setting with its documented default and meaning, by section."""
    shown = {
        "{home}": "<checkout>",
        "{state}": "<state>",
        "{pg_port}": _BY_FIELD["pg_port"].default,
    }
    rows = [
        "# Configuration",
        "",
        "Generated from `include/cryptoflow/settings.py` by `cryptoflow config --markdown`: edit the settings, not",
        "this file. Every variable is optional; `cryptoflow config` prints the values in force.",
    ]
    for section in SECTIONS:
        rows += [
            "",
            f"## {section}",
            "",
            SECTION_DOCS[section],
            "",
            "| variable | default | meaning |",
            "|---|---|---|",
        ]
        for s in (s for s in SETTINGS if s.section == section):
            default = s.default
            for mark, text in shown.items():
                default = default.replace(mark, text)
            default = default.replace("|", "\\|")
            rows.append(
                f"| `{s.env}` | `{default}` | {s.doc} |"
                if default
                else f"| `{s.env}` | (empty) | {s.doc} |"
            )
    return "\n".join(rows)


__all__ = [
    "Settings",
    "Setting",
    "SETTINGS",
    "load",
    "given",
    "ConfigError",
    "read_credentials",
    "with_local_credentials",
    "markdown_table",
    "DEFAULT_SYMBOLS",
    "write_stack_file",
    "read_stack_file",
    "stack_file_values",
    "stack_defaults",
    "SECTIONS",
    "SECTION_DOCS",
    "section_values",
    "shared_data_dir",
]
