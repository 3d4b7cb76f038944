SELECT symbol, open_time, close::float8 AS close, return_pct, log_return, volatility_24h * 100 AS volatility_24h_pct,
       ma_24h, ma_168h, quote_volume::float8 AS quote_volume, is_complete
FROM market.hourly_metrics
