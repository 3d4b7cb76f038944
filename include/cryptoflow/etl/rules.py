"""The RULES of cryptoflow.candles evaluated on pyspark Columns: Spark's verdicts are validate()'s.

cryptoflow.candles writes each rule once, as a lambda of operators only; here the same lambdas get
an object whose attributes are Columns (`_SparkRow`) instead of a candle's values, so no rule is
restated for Spark. frames.validate applies it to every landing row the ETL reads.
"""

from __future__ import annotations

from itertools import chain
from typing import Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import NumericType

from cryptoflow.candles import (
    DECIMAL_FIELDS,
    INTERVAL_MS,
    INTERVAL_OFFSET_MS,
    LANDING_COLUMNS,
    REQUIRED_FIELDS,
    RULES,
    Rule,
)

# (reason, violated Column, detail Column) of one rule (or of the missing fields)
_Check = tuple[str, Column, Column]


class _SparkRow:
    """The Spark side of a rule's `c`: columns of the landing format plus derived lookups."""

    def __init__(self, df_columns, symbols):
        for name in LANDING_COLUMNS:
            setattr(self, name, F.col(name) if name in df_columns else F.lit(None))
        ms = F.create_map(
            *chain.from_iterable((F.lit(k), F.lit(v)) for k, v in INTERVAL_MS.items())
        )
        off = F.create_map(
            *chain.from_iterable((F.lit(k), F.lit(v)) for k, v in INTERVAL_OFFSET_MS.items())
        )
        self.interval_ms = ms[F.col("interval")].cast("bigint")
        self.interval_offset_ms = off[F.col("interval")].cast("bigint")
        self.interval_known = self.interval_ms.isNotNull()
        self.symbol_known = (
            F.lit(None).cast("boolean") if symbols is None else F.col("symbol").isin(list(symbols))
        )


def spark_violations(
    df: DataFrame,
    symbols: Iterable[str] | None = None,
    *,
    reason_col: str = "reason",
    detail_col: str = "detail",
    reasons_col: str = "reasons",
) -> DataFrame:
    """`df` (landing-format columns) with the same verdicts as `validate`, row by row.

    Adds `reason` (first violated rule, null when valid: the quarantine reason), `reasons` (all
    violated reasons, in RULES order) and `detail` (the rules' descriptions with the values).
    A null in a required column (a value that didn't parse) is `missing_field`, as the Python
    parsers would have raised for it.
    """
    _require_numeric(df)
    c = _SparkRow(set(df.columns), symbols)
    checks = _missing_field_checks(df) + [_rule_check(rule, c) for rule in RULES]
    return _with_verdicts(df, checks, reason_col, detail_col, reasons_col)


def _require_numeric(df: DataFrame) -> None:
    """Strings compare lexicographically ("9" > "10"): the rules are only meaningful on numbers."""
    types = {f.name: f.dataType for f in df.schema.fields}
    wrong = [
        n
        for n in DECIMAL_FIELDS + ("open_time", "close_time", "trades")
        if n in types and not isinstance(types[n], NumericType)
    ]
    if wrong:
        raise TypeError(
            f"spark_violations needs numeric columns (read with LANDING_SPARK_SCHEMA); not numeric: {wrong}"
        )


def _missing_field_checks(df: DataFrame) -> list[_Check]:
    """The missing_field check of the required columns `df` has (none if it has none of them)."""
    missing = [n for n in REQUIRED_FIELDS if n in df.columns]
    if not missing:
        return []
    cond = F.lit(False)
    for n in missing:
        cond = cond | F.col(n).isNull()
    detail = F.concat(
        F.lit("a required field is empty: "),
        F.concat_ws(",", *[F.when(F.col(n).isNull(), F.lit(n)) for n in missing]),
    )
    return [("missing_field", cond, detail)]


def _rule_check(rule: Rule, c: _SparkRow) -> _Check:
    """One rule's check: violated, and its description with the values it quotes."""
    # Null (a `needs` value absent, or a null input) means "does not apply", as in validate().
    violated = F.coalesce(~rule.ok(c), F.lit(False))
    values = F.concat_ws(
        ", ",
        *[
            F.concat(F.lit(f"{f}="), F.coalesce(getattr(c, f).cast("string"), F.lit("None")))
            for f in rule.fields
        ],
    )
    return (rule.reason, violated, F.concat(F.lit(f"{rule.description} ("), values, F.lit(")")))


def _with_verdicts(
    df: DataFrame, checks: list[_Check], reason_col: str, detail_col: str, reasons_col: str
) -> DataFrame:
    """`df` with the checks' verdicts: all violated reasons, the first of them, their details."""
    reasons = F.filter(
        F.array(*[F.when(v, F.lit(r)) for r, v, _ in checks]), lambda x: x.isNotNull()
    )
    details = F.concat_ws("; ", *[F.when(v, d) for _, v, d in checks])
    return (
        df.withColumn(reasons_col, reasons)
        .withColumn(reason_col, F.when(F.size(F.col(reasons_col)) > 0, F.col(reasons_col)[0]))
        .withColumn(detail_col, F.when(F.size(F.col(reasons_col)) > 0, details))
    )


__all__ = ["spark_violations"]
