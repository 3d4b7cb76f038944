SELECT DISTINCT ON (check_name, coalesce(symbol, ''))
       check_name, symbol, passed, observed, expected, pipeline, run_id, checked_at
FROM ops.data_quality_results
WHERE checked_at > now() - interval '2 days'
ORDER BY check_name, coalesce(symbol, ''), checked_at DESC
