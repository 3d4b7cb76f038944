SELECT coins.symbol, latest.model_version, latest.served_reason, latest.target_open_time AS last_forecast_hour,
       coalesce(m.architecture, 'persistence fallback') AS architecture, m.status, m.trained_at, m.promoted_at,
       (m.metrics ->> 'rmse')::float8 AS validation_rmse,
       (m.baseline_metrics -> 'persistence' ->> 'rmse')::float8 AS validation_persistence_rmse,
       m.status_reason
FROM coins
CROSS JOIN LATERAL (SELECT p.model_version, p.served_reason, p.target_open_time FROM forecast.predictions p
                    WHERE p.symbol = coins.symbol AND p.interval = '1h' AND p.kind = 'live'
                    ORDER BY p.target_open_time DESC, p.created_at DESC LIMIT 1) latest
LEFT JOIN forecast.model_versions m ON m.version = latest.model_version
WHERE coins.symbol IS NOT NULL
