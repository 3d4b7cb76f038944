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

The package, by concern: machinery (the Setting record, parsers, declaration helpers), core and
sections (the declarations, one dataclass per section), table (Settings and the table SETTINGS
derived from it), resolve and loading (reading values from an environment: `load()`), credentials
(the local cluster's generated passwords, its DSNs, Superset's address), stack_env (the stack file)
and markdown (docs/configuration.md). Import the names from `cryptoflow.settings` itself.
"""

from __future__ import annotations

from cryptoflow.settings.core import (
    DEFAULT_SYMBOLS,
    LIVE_REST_URL,
    LIVE_WS_URL,
    STACK_FILE_NAME,
)
from cryptoflow.settings.connections import (
    local_admin_dsn,
    read_credentials,
    superset_url,
    with_local_credentials,
)
from cryptoflow.settings.loading import given, load, section_values, shared_data_dir
from cryptoflow.settings.machinery import ConfigError, Getter, Setting
from cryptoflow.settings.markdown import markdown_table
from cryptoflow.settings.stack_env import (
    read_stack_file,
    stack_defaults,
    stack_file_values,
    write_stack_file,
)
from cryptoflow.settings.table import SECTION_DOCS, SECTIONS, SETTINGS, Settings, env_name

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
    "env_name",
    "local_admin_dsn",
    "superset_url",
    "Getter",
    "LIVE_WS_URL",
    "LIVE_REST_URL",
    "STACK_FILE_NAME",
]
