SELECT symbol, target_open_time, kind, forecast_kind, model_version, predicted_close, lower_close, upper_close,
       persistence_close, actual_close,
       abs(predicted_close - actual_close) AS model_abs_error,
       abs(persistence_close - actual_close) AS persistence_abs_error,
       abs(predicted_close - actual_close) / nullif(actual_close, 0) * 100 AS model_abs_pct_error,
       abs(persistence_close - actual_close) / nullif(actual_close, 0) * 100 AS persistence_abs_pct_error,
       (predicted_close - actual_close) ^ 2 AS model_sq_error,
       (persistence_close - actual_close) ^ 2 AS persistence_sq_error,
       CASE WHEN lower_close IS NOT NULL AND upper_close IS NOT NULL
            THEN (actual_close BETWEEN lower_close AND upper_close)::int END AS in_interval
FROM (
    SELECT p.symbol, p.target_open_time, p.kind,
           CASE p.kind WHEN 'backtest' THEN 'backtest (walk-forward)' ELSE p.kind END AS forecast_kind,
           p.model_version, p.predicted_close::float8 AS predicted_close,
           p.lower_close::float8 AS lower_close, p.upper_close::float8 AS upper_close,
           p.persistence_close::float8 AS persistence_close, c.close::float8 AS actual_close
    FROM forecast.predictions p
    LEFT JOIN market.candles c
           ON c.symbol = p.symbol AND c.interval = '1h' AND c.open_time = p.target_open_time AND c.is_complete
    WHERE p.interval = '1h'
) forecasts
