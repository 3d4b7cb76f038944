-- 0003: indexes the Superset dashboards need to answer in well under a second on a year of data
-- (`cryptoflow bench --only superset_queries` times every chart's query; the 1m candles are never
-- scanned: the dashboards read 1h candles and the ETL's analytics).

-- "Latest result of every check of the last two days": every ETL run records a few dozen checks,
-- a year holds over a million rows; the existing index leads with check_name.
CREATE INDEX data_quality_results_checked_at ON ops.data_quality_results (checked_at);
