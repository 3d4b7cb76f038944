"""io.copy_text: Spark formats COPY text the way PostgreSQL reads it back, value for value."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cryptoflow.etl import io

pytestmark = pytest.mark.integration


def test_decimals_lose_only_fraction_zeros_and_text_is_escaped(spark):
    df = spark.createDataFrame(
        [
            ("0", "100", "a\tb\\c\nd"),
            ("100.000", "7", None),
            ("-1.50", "0", "plain"),
            ("0.000000000000000001", "120", ""),
            ("12345678901234567890.123456789012345678", "-30", "x"),
        ],
        "v string, n string, t string",
    ).selectExpr("cast(v as decimal(38,18)) v", "cast(n as decimal(10,0)) n", "t")
    lines = [r.line for r in io.copy_text(df).collect()]
    assert lines == [
        "0\t100\ta\\tb\\\\c\\nd\n",
        "100\t7\t\\N\n",  # scale 0: the trailing zeros are digits, never trimmed
        "-1.5\t0\tplain\n",
        "0.000000000000000001\t120\t\n",
        "12345678901234567890.123456789012345678\t-30\tx\n",
    ]
    # And every decimal reads back as the value it was.
    assert [Decimal(line.split("\t")[0]) for line in lines] == [
        Decimal("0"),
        Decimal("100"),
        Decimal("-1.5"),
        Decimal("1E-18"),
        Decimal("12345678901234567890.123456789012345678"),
    ]


def test_timestamps_are_utc_with_the_fraction_they_have_and_carriage_returns_are_escaped(spark):
    df = spark.createDataFrame(
        [(1_704_067_200_000, "a\rb"), (1_704_067_259_999, "no escape: / | ,")], "ms long, t string"
    ).selectExpr("timestamp_millis(ms) ts", "t")
    assert [r.line for r in io.copy_text(df).collect()] == [
        "2024-01-01 00:00:00+00\ta\\rb\n",
        "2024-01-01 00:00:59.999+00\tno escape: / | ,\n",
    ]
