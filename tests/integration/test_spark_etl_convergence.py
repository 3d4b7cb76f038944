"""Snapshots processed out of order, and the same snapshot twice, converge to the same tables and lake."""

from __future__ import annotations

import pytest

from cryptoflow_bench.etl import MINUTE_MS, START_MS, write_minutes
from cryptoflow.etl import job
from tests.integration.test_spark_etl import HOUR, _fingerprint

pytestmark = pytest.mark.integration


def test_out_of_order_and_repeated_snapshots_converge(spark, pg_cluster, tmp_path):
    """The same snapshots in another order, some twice (in one run and across runs): the same tables and lake."""
    from tests.conftest import make_warehouse

    landing = tmp_path / "landing"
    syms = ("BTCUSDT", "ETHUSDT")
    uris = write_minutes(
        landing, syms, START_MS + 30 * MINUTE_MS, START_MS + 2 * HOUR, 10 * MINUTE_MS
    )
    in_order, shuffled = make_warehouse(pg_cluster), make_warehouse(pg_cluster)
    job.run(
        spark,
        uris,
        "in-order",
        dsn=in_order.writer_dsn,
        lake_uri=f"file://{tmp_path}/lake-a",
        symbols=syms,
    )
    for i, batch in enumerate(
        [[uris[7], uris[2]], [uris[0], uris[1], uris[1]], uris[3:][::-1] + [uris[4]], [uris[2]]]
    ):
        job.run(
            spark,
            batch,
            f"shuffled-{i}",
            dsn=shuffled.writer_dsn,
            lake_uri=f"file://{tmp_path}/lake-b",
            symbols=syms,
        )
    a, b = _fingerprint(in_order.writer_dsn), _fingerprint(shuffled.writer_dsn)
    assert (
        a == b
        and a["market.candles"][0] == 2 * 90 + 2 * 2
        and a["market.hourly_metrics"][0] == 2 * 2
    )

    def lake(path):
        rows = spark.read.parquet(f"file://{tmp_path}/{path}/candles_by_day").collect()
        return sorted(
            (r.asDict() for r in rows), key=lambda r: (r["symbol"], r["interval"], r["open_time"])
        )

    assert lake("lake-a") == lake("lake-b")
