WITH RECURSIVE coins AS (
    (SELECT symbol FROM $table ORDER BY symbol LIMIT 1)
    UNION ALL
    SELECT (SELECT $alias.symbol FROM $table $alias WHERE $alias.symbol > coins.symbol ORDER BY $alias.symbol LIMIT 1)
    FROM coins WHERE coins.symbol IS NOT NULL
)
