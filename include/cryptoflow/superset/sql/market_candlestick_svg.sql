WITH coin AS (
    {%- set picked = filter_values('symbol') %}
    {%- if picked %}
    SELECT {{ picked[:1] | where_in }}::text AS symbol
    {%- else %}
    SELECT symbol FROM (VALUES ('BTCUSDT')) v(symbol)
    WHERE EXISTS (SELECT 1 FROM market.candles WHERE symbol = 'BTCUSDT' AND interval = '1h')
    UNION ALL
    (SELECT min(symbol) FROM market.candles WHERE interval = '1h')
    LIMIT 1
    {%- endif %}
),
span AS (
    SELECT coin.symbol,
           {% if from_dttm %}'{{ from_dttm }}'::timestamp AT TIME ZONE 'UTC'{% else %}last.t - interval '7 days'{% endif %} AS t0,
           {% if to_dttm %}'{{ to_dttm }}'::timestamp AT TIME ZONE 'UTC'{% else %}last.t + interval '1 hour'{% endif %} AS t1
    FROM coin
    CROSS JOIN LATERAL (SELECT max(open_time) AS t FROM market.candles
                        WHERE symbol = coin.symbol AND interval = '1h') last
),
grid AS (
    SELECT symbol, t0, t1,
           greatest(1, ceil(extract(epoch FROM t1 - t0) / 3600 / 120))::int AS hours_per_candle,
           greatest(1, ceil(extract(epoch FROM t1 - t0) / 3600 / greatest(1, ceil(extract(epoch FROM t1 - t0) / 3600 / 120))))::int AS slots
    FROM span
),
buckets AS (
    SELECT c.symbol, g.slots,
           floor(extract(epoch FROM c.open_time - g.t0) / 3600 / g.hours_per_candle)::int AS slot,
           min(c.open_time) AS open_time,
           (array_agg(c.open ORDER BY c.open_time))[1]::float8 AS open,
           max(c.high)::float8 AS high,
           min(c.low)::float8 AS low,
           (array_agg(c.close ORDER BY c.open_time DESC))[1]::float8 AS close,
           sum(c.quote_volume)::float8 AS quote_volume,
           bool_and(c.is_complete) AS is_complete
    FROM market.candles c JOIN grid g ON c.symbol = g.symbol
    WHERE c.interval = '1h' AND c.open_time >= g.t0 AND c.open_time < g.t1
    GROUP BY c.symbol, g.slots, slot
),
scaled AS (
    SELECT b.*,
           max(high) OVER () AS top, min(low) OVER () AS bottom, max(quote_volume) OVER () AS max_volume,
           min(open_time) OVER () AS first_time, max(open_time) OVER () AS last_time,
           920.0 / slots AS slot_width
    FROM buckets b
)
SELECT symbol, open_time, open, high, low, close, quote_volume, is_complete,
       to_char(open_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS label,
       round((70 + slot * slot_width + slot_width * 0.15)::numeric, 2) AS x,
       round(greatest(slot_width * 0.7, 0.5)::numeric, 2) AS body_width,
       round((70 + slot * slot_width + slot_width / 2)::numeric, 2) AS wick_x,
       round((10 + (top - high) / nullif(top - bottom, 0) * 270)::numeric, 2) AS wick_top,
       round((10 + (top - low) / nullif(top - bottom, 0) * 270)::numeric, 2) AS wick_bottom,
       round((10 + (top - greatest(open, close)) / nullif(top - bottom, 0) * 270)::numeric, 2) AS body_top,
       round(greatest(abs(open - close) / nullif(top - bottom, 0) * 270, 1)::numeric, 2) AS body_height,
       round((390 - quote_volume / nullif(max_volume, 0) * 85)::numeric, 2) AS volume_top,
       round((quote_volume / nullif(max_volume, 0) * 85)::numeric, 2) AS volume_height,
       CASE WHEN close >= open THEN '$up_colour' ELSE '$down_colour' END AS colour,
       to_char(top, 'FM999999990.00999999') AS top_label,
       to_char(bottom, 'FM999999990.00999999') AS bottom_label,
       to_char(first_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS first_label,
       to_char(last_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS last_label,
       to_char(max_volume, 'FM999G999G999G990') AS volume_label
FROM scaled
ORDER BY open_time
