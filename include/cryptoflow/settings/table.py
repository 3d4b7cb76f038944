"""Settings, the configuration in force (every section's fields in one frozen dataclass), and the
single table of configuration derived from its declarations: SETTINGS, by section."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from cryptoflow.settings.core import CoreSettings
from cryptoflow.settings.machinery import Setting
from cryptoflow.settings.sections import BenchSettings, BootstrapSettings, ForecastSettings

# What each section is, under its heading in docs/configuration.md.
SECTION_DOCS = {
    "core": "The platform: where its state, stores and services are, what it collects, how Spark runs.",
    "forecast": "The forecasting knobs (cryptoflow.forecast.config.ForecastConfig, one field each; `cryptoflow "
    "backtest --set FIELD=VALUE` overrides them). Those that shape a model are stored with it: "
    "changing one makes the current model stale.",
    "bench": "Switches of the benchmarks (`cryptoflow bench`); each benchmark's module says what it measures.",
    "bootstrap": "Read by scripts/bootstrap.sh, which runs before the Python environment exists.",
}


# The fields come in the order of the bases from the last: core, forecast, bench, bootstrap.
@dataclass(frozen=True)
class Settings(BootstrapSettings, BenchSettings, ForecastSettings, CoreSettings):
    """The configuration in force. Each field is declared once, with its variable: SETTINGS, load(),
    as_env(), the stack file and docs/configuration.md (`cryptoflow config --markdown`) all follow from it.
    Never recorded in the stack file: where the file is found (home, state dir), and the DSNs, which
    carry passwords (the local cluster's are filled in from credentials.env when the DSNs are unset)."""

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
