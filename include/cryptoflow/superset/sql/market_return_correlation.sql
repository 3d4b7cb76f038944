WITH latest AS (
    SELECT max(day) AS day FROM market.return_correlation
    {%- if to_dttm %} WHERE day < '{{ to_dttm }}'::timestamp AT TIME ZONE 'UTC'{% endif %}
),
pairs AS (
    SELECT r.day, r.symbol_a AS symbol, r.symbol_b AS other, r.correlation, r.hours, r.window_days
    FROM market.return_correlation r JOIN latest USING (day)
    UNION ALL
    SELECT r.day, r.symbol_b, r.symbol_a, r.correlation, r.hours, r.window_days
    FROM market.return_correlation r JOIN latest USING (day)
)
SELECT day::timestamp AT TIME ZONE 'UTC' AS day, symbol, other, correlation, hours, window_days FROM pairs
UNION ALL
SELECT DISTINCT day::timestamp AT TIME ZONE 'UTC', symbol, symbol, 1.0, NULL::int, window_days FROM pairs
