"""Forecasting knobs: one frozen dataclass, defaults sized for 2 cores, overridable from the environment.

Each field is the setting of the same key in the forecast section of cryptoflow.settings, which
declares its variable (CRYPTOFLOW_FORECAST_<FIELD>, e.g. CRYPTOFLOW_FORECAST_LOOKBACK=48), default,
parsing and meaning. The hyperparameters that shape a model are stored in its metadata, so a change
of configuration makes the current model "stale" and triggers a retrain (see `model_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from cryptoflow import settings

SECTION = "forecast"
# The declared defaults, parsed: the dataclass's defaults, so that ForecastConfig() is the default configuration.
_DEFAULTS = settings.section_values(SECTION, {})


@dataclass(frozen=True)
class ForecastConfig:
    """The forecast section's settings (docs/configuration.md says what each one means)."""

    architecture: str = _DEFAULTS["architecture"]
    features: tuple[str, ...] = _DEFAULTS["features"]
    pool: tuple[str, ...] = _DEFAULTS["pool"]
    lookback: int = _DEFAULTS["lookback"]
    horizon: int = _DEFAULTS["horizon"]
    train_hours: int = _DEFAULTS["train_hours"]
    validation_fraction: float = _DEFAULTS["validation_fraction"]
    epochs: int = _DEFAULTS["epochs"]
    batch_size: int = _DEFAULTS["batch_size"]
    patience: int = _DEFAULTS["patience"]
    learning_rate: float = _DEFAULTS["learning_rate"]
    seed: int = _DEFAULTS["seed"]
    interval_level: float = _DEFAULTS["interval_level"]
    interval_window_hours: int = _DEFAULTS["interval_window_hours"]
    volatility_span_hours: int = _DEFAULTS["volatility_span_hours"]
    interval_min_scores: int = _DEFAULTS["interval_min_scores"]
    promotion_p_value: float = _DEFAULTS["promotion_p_value"]
    retire_window_hours: int = _DEFAULTS["retire_window_hours"]
    retire_min_hours: int = _DEFAULTS["retire_min_hours"]
    retire_margin: float = _DEFAULTS["retire_margin"]
    retire_p_value: float = _DEFAULTS["retire_p_value"]
    probation_hours: int = _DEFAULTS["probation_hours"]
    probation_margin: float = _DEFAULTS["probation_margin"]
    retrain_every_hours: int = _DEFAULTS["retrain_every_hours"]
    max_model_age_hours: int = _DEFAULTS["max_model_age_hours"]
    retry_hours: int = _DEFAULTS["retry_hours"]
    freshness_tolerance_hours: int = _DEFAULTS["freshness_tolerance_hours"]
    ewma_span: int = _DEFAULTS["ewma_span"]
    drift_hours: int = _DEFAULTS["drift_hours"]

    def hyperparameters(self) -> dict[str, Any]:
        """What shapes a trained model (stored with it; differences make a model stale)."""
        keys = (
            "architecture",
            "features",
            "pool",
            "lookback",
            "horizon",
            "train_hours",
            "validation_fraction",
            "epochs",
            "batch_size",
            "patience",
            "learning_rate",
            "seed",
            "interval_level",
        )
        d = asdict(self)
        # An empty pool (one model per coin) is left out: fingerprints of per-coin models stay as they were.
        return {
            k: list(d[k]) if isinstance(d[k], tuple) else d[k] for k in keys if k != "pool" or d[k]
        }

    def model_fingerprint(self) -> str:
        return hashlib.sha256(
            json.dumps(self.hyperparameters(), sort_keys=True).encode()
        ).hexdigest()[:12]

    def with_(self, **changes: Any) -> ForecastConfig:
        return replace(self, **changes)


FIELDS = frozenset(f.name for f in fields(ForecastConfig))


def with_settings(
    pairs: Iterable[str] | None, environ: Mapping[str, str] | None = None
) -> ForecastConfig:
    """The configuration with FIELD=VALUE pairs (CLI `--set lookback=48`) applied over the environment,
    parsed exactly as CRYPTOFLOW_FORECAST_<FIELD> would be."""
    texts = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not sep or key not in FIELDS:
            raise ValueError(
                f"--set {pair!r}: expected FIELD=VALUE with FIELD one of {sorted(FIELDS)}"
            )
        texts[key] = value
    return _config(settings.section_values(SECTION, environ, texts))


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> ForecastConfig:
    """The forecast settings of `environ` (default: the process's, as cryptoflow.settings reads
    them), then `overrides`."""
    return _config({**settings.section_values(SECTION, environ), **overrides})


def _config(values: Mapping[str, Any]) -> ForecastConfig:
    # The section also holds settings read elsewhere (tf_threads: the training process's threads).
    cfg = ForecastConfig(**{key: value for key, value in values.items() if key in FIELDS})
    if cfg.lookback < 1 or cfg.horizon < 1 or not 0 < cfg.validation_fraction < 1:
        raise ValueError(f"invalid forecast configuration: {cfg}")
    return cfg
