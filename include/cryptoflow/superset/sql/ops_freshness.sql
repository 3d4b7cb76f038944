SELECT coins.symbol, i.interval, latest.open_time AS newest_candle,
       round((extract(epoch FROM now() - CASE WHEN latest.is_complete IS FALSE
                                              THEN latest.open_time + latest.minute_count * interval '1 minute'
                                              ELSE latest.close_time END) / 60)::numeric, 1)::float8 AS minutes_behind
FROM coins
CROSS JOIN (VALUES ('1m'), ('1h')) i(interval)
CROSS JOIN LATERAL (SELECT c.open_time, c.close_time, c.is_complete, c.minute_count FROM market.candles c
                    WHERE c.symbol = coins.symbol AND c.interval = i.interval
                    ORDER BY c.open_time DESC LIMIT 1) latest
WHERE coins.symbol IS NOT NULL
