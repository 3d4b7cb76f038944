"""The Spark ETL: landing snapshots -> validated candles (PostgreSQL + Parquet lake) -> analytics.

- `frames`: pure DataFrame transformations of candles (typing, duplicates, validation with the one
  set of RULES from cryptoflow.candles, stored-vs-new resolution, the 1h rollup).
- `rules`: those RULES evaluated on Columns (`spark_violations`): Spark's verdicts are Python's.
- `analytics`: hourly returns, rolling volatility, moving averages, volume profile, correlation.
- `io`: the edges: reading landing files, JDBC context reads, COPY into staging, the lake (the
  last two in `staging_copy`, `staging` and `lake`, re-exported by `io`).
- `job`: one run end to end (used by spark_jobs/etl_candles.py and by the tests in-process), with
  `run_plan` (what a run touches), `stored` (the stored rows it reads) and `commit` (its one
  transaction's work on the staging tables).
- `dq`: the data-quality checks the DAG runs after a load.
- `plan`: which snapshots a run processes (Asset events or a time range) and the run manifest.
"""
