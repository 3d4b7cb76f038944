"""The Airflow Assets that chain the DAGs: ingest -> ETL -> forecast, visible in the Airflow UI.

binance_ingest emits LANDING_SNAPSHOTS (event extra: the snapshot URIs it sealed); spark_etl is
scheduled on it and emits WAREHOUSE_CANDLES (extra: symbols and the time range loaded);
forecast_hourly runs hourly and waits for the hour in the warehouse (the Asset shows what each load brought).
"""

from airflow.sdk import Asset

LANDING_SNAPSHOTS = Asset(name="landing_snapshots", uri="cryptoflow://landing/candles")
# A postgres asset URI names database, schema and table.
WAREHOUSE_CANDLES = Asset(name="warehouse_candles", uri="postgres://warehouse:5432/cryptoflow/market/candles")
PREDICTIONS = Asset(name="predictions", uri="postgres://warehouse:5432/cryptoflow/forecast/predictions")
