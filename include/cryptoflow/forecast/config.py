"""Forecasting knobs: one frozen dataclass, defaults sized for 2 cores, overridable from the environment.

Each field can be set as CRYPTOFLOW_FORECAST_<FIELD> (e.g. CRYPTOFLOW_FORECAST_LOOKBACK=48). The
hyperparameters that shape a model are stored in its metadata, so a change of configuration makes
the current model "stale" and triggers a retrain (see `model_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields, replace

ENV_PREFIX = "CRYPTOFLOW_FORECAST_"


@dataclass(frozen=True)
class ForecastConfig:
    architecture: str = "lstm"        # file name in models/ (models/lstm.py)
    features: tuple[str, ...] = ("log_return",)   # see windows.FEATURES; e.g. ("log_return", "log_volume_change")
    pool: tuple[str, ...] = ()        # one model across these coins (pooled training); empty: one per coin
    lookback: int = 24                # hours of returns the model sees
    horizon: int = 1                  # returns the model outputs; the first one is served (next hour)
    train_hours: int = 2160           # hours of history per training (90 days), most recent before the cut
    validation_fraction: float = 0.2  # latest part of the window: early stopping, promotion, intervals
    epochs: int = 30
    batch_size: int = 64
    patience: int = 3
    learning_rate: float = 1e-3
    seed: int = 42
    interval_level: float = 0.9       # central prediction interval (conformal, see intervals.py)
    interval_window_hours: int = 336  # calibration: the served forecast's errors on this many hours before
    volatility_span_hours: int = 24   # EWMA span of the volatility that scales those errors
    interval_min_scores: int = 48     # fewer calibration errors than this: no interval
    promotion_p_value: float = 0.05   # a new model serves only if it beats persistence at this level (DM test)
    retire_window_hours: int = 72     # live retirement: the served model's latest scored hours ...
    retire_min_hours: int = 24        # ... judged once it has this many ...
    retire_margin: float = 0.01       # ... retired when its live MASE exceeds 1 + margin ...
    retire_p_value: float = 0.1       # ... and a DM test says it is worse at this level
    probation_hours: int = 0          # a promoted model serves only once it has this many hours scored since its cut ...
    probation_margin: float = 0.0     # ... and while its MASE over its latest retire_window_hours is at most 1 + margin
    retrain_every_hours: int = 24     # cadence of retraining
    max_model_age_hours: int = 168    # an older model is stale: it is retrained and not served
    retry_hours: int = 6              # after a rejected/failed attempt, wait this long before retrying
    freshness_tolerance_hours: int = 0  # how many hours the latest complete candle may lag
    ewma_span: int = 12               # EWMA baseline on returns (hours)
    drift_hours: int = 24             # drift baseline: mean return over this many hours

    def hyperparameters(self) -> dict:
        """What shapes a trained model (stored with it; differences make a model stale)."""
        keys = ("architecture", "features", "pool", "lookback", "horizon", "train_hours", "validation_fraction",
                "epochs", "batch_size", "patience", "learning_rate", "seed", "interval_level")
        d = asdict(self)
        # An empty pool (one model per coin) is left out: fingerprints of per-coin models stay as they were.
        return {k: list(d[k]) if isinstance(d[k], tuple) else d[k] for k in keys if k != "pool" or d[k]}

    def model_fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.hyperparameters(), sort_keys=True).encode()).hexdigest()[:12]

    def with_(self, **changes) -> "ForecastConfig":
        return replace(self, **changes)


def with_settings(pairs, environ: dict | None = None) -> ForecastConfig:
    """The configuration with FIELD=VALUE pairs (CLI `--set lookback=48`) applied over the environment,
    parsed exactly as CRYPTOFLOW_FORECAST_<FIELD> would be."""
    env = dict(os.environ if environ is None else environ)
    names = {f.name for f in fields(ForecastConfig)}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not sep or key not in names:
            raise ValueError(f"--set {pair!r}: expected FIELD=VALUE with FIELD one of {sorted(names)}")
        env[ENV_PREFIX + key.upper()] = value
    return load(env)


def load(environ: dict | None = None, **overrides) -> ForecastConfig:
    """Defaults, then CRYPTOFLOW_FORECAST_* from `environ` (default os.environ), then `overrides`."""
    env = os.environ if environ is None else environ
    values = {}
    for f in fields(ForecastConfig):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is None or raw == "":
            continue
        default = f.default
        try:
            if isinstance(default, tuple):
                values[f.name] = tuple(x.strip() for x in raw.split(",") if x.strip())
            elif isinstance(default, float):
                values[f.name] = float(raw)
            elif isinstance(default, int):
                values[f.name] = int(raw)
            else:
                values[f.name] = raw.strip()
        except ValueError:
            raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a valid {type(default).__name__}") from None
    values.update(overrides)
    cfg = ForecastConfig(**values)
    if cfg.lookback < 1 or cfg.horizon < 1 or not 0 < cfg.validation_fraction < 1:
        raise ValueError(f"invalid forecast configuration: {cfg}")
    return cfg
