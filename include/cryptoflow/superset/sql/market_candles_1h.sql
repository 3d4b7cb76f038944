SELECT symbol, open_time, open::float8 AS open, high::float8 AS high, low::float8 AS low,
       close::float8 AS close, base_volume::float8 AS base_volume, quote_volume::float8 AS quote_volume,
       trades, minute_count, is_complete
FROM market.candles
WHERE interval = '1h'
