"""Hourly forecasts of the next close, evaluated honestly against naive forecasts.

The pieces, each importable without Airflow (the DAG `forecast_hourly` only wires them):

- `config`: every knob (lookback, horizon, cadence, architecture...) with defaults, from the environment.
- `data`: complete 1h candles of a symbol from the warehouse, strictly before a given hour.
- `windows`: log returns -> (lookback window, next return) samples; the scaler fitted on training data only.
- `baselines` / `metrics`: persistence, drift, EWMA; RMSE, MAE, MAPE, MASE vs persistence, direction, coverage.
- `architectures`: Keras model definitions loaded by name from `<CRYPTOFLOW_HOME>/models/<name>.py`.
- `train`: fit with fixed seeds and early stopping on the latest part of the window; intervals from
  validation residuals.
- `registry`: model files + metadata through ObjectStoragePath (file://, s3://), `current.json` pointer,
  promotion rule, index rows in forecast.model_versions.
- `evidence`: when a model may serve instead of persistence (promotion on evidence) and how its
  output is served (shrinkage toward persistence, the coin's tick grid).
- `intervals`: prediction intervals from the served forecast's own recent errors (split conformal).
- `serving`: the served forecasts of a plan of hours, one path for the hourly DAG and the backtest.
- `hourly`: what one run of the DAG does for one coin (check, train if needed, predict, write, score).
- `backtest`: the same steps replayed hour by hour over a date range (kind='backtest').
- `commands`: the plain functions behind `cryptoflow backtest` and `cryptoflow train`.

TensorFlow is imported lazily (only `train`, `registry` loading and `architectures` need it): it takes
seconds to import, and the DAG file must parse fast.
"""
