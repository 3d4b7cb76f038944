"""Spark applies the very same RULES: spark_violations gives validate()'s reasons, row by row."""

from __future__ import annotations

import dataclasses
import random
from decimal import Decimal

import pytest

from cryptoflow.candles import validate
from cryptoflow.etl.rules import spark_violations
from cryptoflow.importers import import_cdd_csv
from cryptoflow.landing import LANDING_SPARK_SCHEMA, render

pytestmark = pytest.mark.integration

SYMBOLS = {"BTCUSDT", "ETHUSDT"}


def _perturb(c, rng: random.Random):
    """One real candle, broken in zero, one or several ways."""
    changes = {}
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        kind = rng.randrange(13)
        if kind == 0:
            changes.update(high=c.low - Decimal("0.01"))
        elif kind == 1:
            changes.update(open=c.high + Decimal("1"))
        elif kind == 2:
            changes.update(close=c.low - Decimal("1"))
        elif kind == 3:
            changes.update(low=-c.low)
        elif kind == 4:
            changes.update(base_volume=-c.base_volume)
        elif kind == 5:
            changes.update(taker_buy_base_volume=Decimal("-1.5"))
        elif kind == 6:
            changes.update(trades=-3)
        elif kind == 7:
            changes.update(
                open_time=c.open_time + 60_000, close_time=c.close_time + 60_000
            )  # misaligned for 1h
        elif kind == 8:
            changes.update(close_time=c.close_time + 1)
        elif kind == 9:
            changes.update(symbol=rng.choice(["SHIBUSDT", "ETHUSDT"]))
        elif kind == 10:
            changes.update(interval=rng.choice(["1M", "7m", "1m", "1w", "1d"]))
        elif kind == 11:
            changes.update(
                open_time=c.open_time // 1000, close_time=c.open_time // 1000 + 3_599_999
            )
        else:
            changes.update(taker_buy_base_volume=None, taker_buy_quote_volume=None, trades=None)
    return dataclasses.replace(c, **changes)


def test_spark_and_python_agree(spark, shared_data, tmp_path):
    real = import_cdd_csv(shared_data / "cryptodatadownload" / "Binance_BTCUSDT_1h.csv").candles
    rng = random.Random(20240913)
    candles = []
    for i, c in enumerate(rng.sample(real, 400)):
        # Taker volumes as the websocket has them, so the nullable rules are exercised both ways.
        c = dataclasses.replace(
            c, taker_buy_base_volume=c.base_volume / 2, taker_buy_quote_volume=c.quote_volume / 2
        )
        candles.append(dataclasses.replace(_perturb(c, rng), source=f"row-{i}"))
    path = tmp_path / "snapshot.csv"
    path.write_bytes(render(candles))  # the landing format, read as the ETL reads it

    df = spark.read.csv(str(path), header=True, schema=LANDING_SPARK_SCHEMA)
    for symbols in (SYMBOLS, None):
        got = {
            r["source"]: (list(r["reasons"]), r["reason"], r["detail"])
            for r in spark_violations(df, symbols)
            .select("source", "reasons", "reason", "detail")
            .collect()
        }
        assert len(got) == len(candles)
        for c in candles:
            expected = [reason for reason, _ in validate(c, symbols)]
            reasons, first, detail = got[c.source]
            assert reasons == expected, (c, detail)
            assert first == (expected[0] if expected else None)
            assert (detail is None) == (not expected)
        seen = {r for v in got.values() for r in v[0]}
    # The sample really exercised the rules, valid rows included.
    assert {
        "high_below_low",
        "open_outside_range",
        "close_outside_range",
        "negative_price",
        "negative_volume",
        "negative_trades",
        "misaligned_open_time",
        "bad_close_time",
        "unknown_interval",
        "implausible_open_time",
    } <= seen
    assert sum(not validate(c, SYMBOLS) for c in candles) > 50


def test_unparseable_values_are_missing_field_in_spark(spark, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        "symbol,interval,open_time,close_time,open,high,low,close,base_volume,quote_volume,"
        "taker_buy_base_volume,taker_buy_quote_volume,trades,source\n"
        "BTCUSDT,1m,1726221600000,1726221659999,abc,2,1,1,1,1,,,,x\n"
        "BTCUSDT,1m,1726221600000,1726221659999,1,2,1,1,1,1,,,,y\n"
    )
    df = spark.read.csv(str(path), header=True, schema=LANDING_SPARK_SCHEMA)
    rows = {r["source"]: r for r in spark_violations(df, SYMBOLS).collect()}
    assert rows["x"]["reason"] == "missing_field" and "open" in rows["x"]["detail"]
    assert rows["y"]["reason"] is None
