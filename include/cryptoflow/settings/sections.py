"""The sections beside core, each declared as a dataclass whose fields Settings inherits: forecast
(the forecasting knobs cryptoflow.forecast.config gathers), bench (the benchmarks' switches) and
bootstrap (read by scripts/bootstrap.sh before Python exists, declared for the table)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptoflow.settings.machinery import (
    _flag,
    _in_section,
    _integer,
    _real,
    _setting,
    _stripped,
    _words,
)

_forecast, _bench, _bootstrap = (
    _in_section("forecast"),
    _in_section("bench"),
    _in_section("bootstrap"),
)


@dataclass(frozen=True)
class ForecastSettings:
    """The forecast section (cryptoflow.forecast.config.ForecastConfig, one field each)."""

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


@dataclass(frozen=True)
class BenchSettings:
    """The bench section: switches of the benchmarks (`cryptoflow bench`)."""

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


@dataclass(frozen=True)
class BootstrapSettings:
    """The bootstrap section: read by scripts/bootstrap.sh, declared here for the table."""

    skip_apt: bool = _bootstrap("", "Set (non-empty): no system packages are installed.", _flag)
    no_browser: bool = _bootstrap(
        "", "Set (non-empty): Chromium (the dashboards' screenshots) is not installed.", _flag
    )
