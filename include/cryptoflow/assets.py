"""The Airflow Assets that chain the DAGs (ingest -> ETL -> forecast, visible in the Airflow UI), and
the typed extras of their events, shared by the DAG that emits each and the DAG that reads it.

- binance_ingest emits LANDING_SNAPSHOTS with a SnapshotsSealed extra (the snapshot URIs it sealed
  and healed for one window); spark_etl is scheduled on it and reads them with
  SnapshotsSealed.from_extra.
- spark_etl emits WAREHOUSE_CANDLES with a CandlesLoaded extra (symbols, time range per
  symbol/interval, rows); forecast_hourly runs hourly and waits for the hour in the warehouse, so
  this event shows what each load brought.
- forecast_hourly emits PREDICTIONS, one event per coin and hour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from airflow.sdk import Asset

LANDING_SNAPSHOTS = Asset(name="landing_snapshots", uri="cryptoflow://landing/candles")
# A postgres asset URI names database, schema and table.
WAREHOUSE_CANDLES = Asset(
    name="warehouse_candles", uri="postgres://warehouse:5432/cryptoflow/market/candles"
)
PREDICTIONS = Asset(
    name="predictions", uri="postgres://warehouse:5432/cryptoflow/forecast/predictions"
)


class MalformedEvent(ValueError):
    """An Asset event whose extra is not the shape its Asset's events have (e.g. one made by hand)."""


@dataclass(frozen=True)
class SnapshotsSealed:
    """Extra of a LANDING_SNAPSHOTS event: the landing snapshots one binance_ingest run wrote."""

    uris: tuple[str, ...]
    interval: str
    window_start_ms: int | None = None
    window_end_ms: int | None = None

    def as_extra(self) -> dict:
        return {
            "uris": list(self.uris),
            "interval": self.interval,
            "window_start_ms": self.window_start_ms,
            "window_end_ms": self.window_end_ms,
        }

    @classmethod
    def from_extra(cls, extra) -> SnapshotsSealed:
        extra = extra if isinstance(extra, dict) else {}
        uris = extra.get("uris")
        if (
            not isinstance(uris, list)
            or not uris
            or not all(isinstance(u, str) and u for u in uris)
        ):
            raise MalformedEvent(
                f"a {LANDING_SNAPSHOTS.name} event names its snapshots in `uris` (a list of URIs);"
                f" this one's extra is {extra!r}"
            )
        if not isinstance(extra.get("interval"), str):
            raise MalformedEvent(
                f"a {LANDING_SNAPSHOTS.name} event names its `interval`; this one's extra is {extra!r}"
            )
        return cls(
            tuple(uris), extra["interval"], extra.get("window_start_ms"), extra.get("window_end_ms")
        )


@dataclass(frozen=True)
class CandlesLoaded:
    """Extra of a WAREHOUSE_CANDLES event: what one spark_etl load merged into market.candles."""

    run_id: str
    rows: int
    # "SYMBOL/interval" -> (first, last) open time loaded, ISO 8601 UTC
    ranges: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def symbols(self) -> list[str]:
        return sorted({key.split("/")[0] for key in self.ranges})

    def as_extra(self) -> dict:
        return {
            "run_id": self.run_id,
            "symbols": self.symbols,
            "rows": self.rows,
            "ranges": {key: list(span) for key, span in sorted(self.ranges.items())},
        }
