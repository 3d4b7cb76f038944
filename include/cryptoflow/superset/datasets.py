"""The bundle's datasets: virtual (SQL) datasets on the read-only warehouse, their columns and metrics.

Each dataset's query is a file of sql/ (package data), named after the dataset; the few that take
values (colours, a table to skip-scan) mark them `$name`. bundle.py turns DATASETS into YAML.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

UP_COLOUR = "#26a69a"
DOWN_COLOUR = "#ef5350"

# --- column types --------------------------------------------------------------------------------
TEXT, TS, FLOAT, INT, BOOL, DATE = (
    "TEXT",
    "TIMESTAMP WITH TIME ZONE",
    "DOUBLE PRECISION",
    "BIGINT",
    "BOOLEAN",
    "DATE",
)


# --- datasets ------------------------------------------------------------------------------------
SQL_DIR = Path(__file__).with_name(
    "sql"
)  # each dataset's query, sql/<dataset name>.sql (package data)


def _sql(name: str, **values: str) -> str:
    """The text of sql/<name>.sql, its `$placeholders` filled from `values` when any are given.

    string.Template, not str.format: the queries hold Jinja (`{{ }}`, `{% %}`) that Superset renders.
    The values are table names and aliases written in this module: nothing from outside reaches
    the SQL (the dashboards' filters go through Superset's own parameters).
    """
    text = (SQL_DIR / f"{name}.sql").read_text()
    return Template(text).substitute(values) if values else text


# name -> (sql, [(column, type)], main time column, {metric: (expression, label)})
DATASETS: dict[str, tuple[str, list[tuple[str, str]], str | None, dict[str, tuple[str, str]]]] = {}


def dataset(
    name: str,
    sql: str,
    columns: list[tuple[str, str]],
    main_dttm: str | None = None,
    metrics: dict[str, tuple[str, str]] | None = None,
) -> str:
    DATASETS[name] = (sql.strip() + "\n", columns, main_dttm, metrics or {})
    return name


# The coin of the candlestick: the dashboard's coin filter (its first value), else BTCUSDT when
# present, else the first coin. Its range: the dashboard's time range, else the last 7 days of data.
# The range is cut into at most 120 buckets of whole hours, each one candle (first open, max high,
# min low, last close), so a year draws as well as a day. Coordinates are computed here for a
# 1000 x 400 SVG: prices in y 10..280, volume bars in y 300..390, x from 70 to 990.
CANDLESTICK = dataset(
    "market_candlestick_svg",
    _sql("market_candlestick_svg", up_colour=UP_COLOUR, down_colour=DOWN_COLOUR),
    [
        ("symbol", TEXT),
        ("open_time", TS),
        ("open", FLOAT),
        ("high", FLOAT),
        ("low", FLOAT),
        ("close", FLOAT),
        ("quote_volume", FLOAT),
        ("is_complete", BOOL),
        ("label", TEXT),
        ("x", FLOAT),
        ("body_width", FLOAT),
        ("wick_x", FLOAT),
        ("wick_top", FLOAT),
        ("wick_bottom", FLOAT),
        ("body_top", FLOAT),
        ("body_height", FLOAT),
        ("volume_top", FLOAT),
        ("volume_height", FLOAT),
        ("colour", TEXT),
        ("top_label", TEXT),
        ("bottom_label", TEXT),
        ("first_label", TEXT),
        ("last_label", TEXT),
        ("volume_label", TEXT),
    ],
    "open_time",
)

CANDLES_1H = dataset(
    "market_candles_1h",
    _sql("market_candles_1h"),
    [
        ("symbol", TEXT),
        ("open_time", TS),
        ("open", FLOAT),
        ("high", FLOAT),
        ("low", FLOAT),
        ("close", FLOAT),
        ("base_volume", FLOAT),
        ("quote_volume", FLOAT),
        ("trades", INT),
        ("minute_count", INT),
        ("is_complete", BOOL),
    ],
    "open_time",
    {"quote_volume": ("SUM(quote_volume)", "Volume (USDT)")},
)

HOURLY_METRICS = dataset(
    "market_hourly_metrics",
    _sql("market_hourly_metrics"),
    [
        ("symbol", TEXT),
        ("open_time", TS),
        ("close", FLOAT),
        ("return_pct", FLOAT),
        ("log_return", FLOAT),
        ("volatility_24h_pct", FLOAT),
        ("ma_24h", FLOAT),
        ("ma_168h", FLOAT),
        ("quote_volume", FLOAT),
        ("is_complete", BOOL),
    ],
    "open_time",
    {
        "return_pct": ("AVG(return_pct)", "Hourly return (%)"),
        "volatility_24h_pct": (
            "AVG(volatility_24h_pct)",
            "24 h volatility of hourly log returns (%)",
        ),
        # exp(sum of log returns) - 1 over the chosen range: the return of holding the coin.
        "period_return_pct": ("(EXP(SUM(log_return)) - 1) * 100", "Return over the range (%)"),
    },
)

# The latest 30-day correlation at or before the end of the chosen range, both ways round (and 1 on
# the diagonal) so a pivot of symbol x other is the full matrix; the coin filter keeps one row.
CORRELATION = dataset(
    "market_return_correlation",
    _sql("market_return_correlation"),
    [
        ("day", TS),
        ("symbol", TEXT),
        ("other", TEXT),
        ("correlation", FLOAT),
        ("hours", INT),
        ("window_days", INT),
    ],
    None,
    {"correlation": ("MAX(correlation)", "Correlation of hourly log returns")},
)

# Forecasts of both kinds beside what happened: 'live' (the hourly DAG) and 'backtest' (the
# walk-forward replay of the stored history, so the charts are full before the DAG has scored an
# hour). The kinds are never averaged together: `forecast_kind` labels every row and every chart of
# this dataset groups by it, so an hour forecast both ways is two series (two rows of the per-coin
# table), each scored on its own. Persistence is stored in the model's row, so both are scored on
# the same hours.
# Only complete hours are scored: the actual close is the close of the target hour's 1h candle when
# `c.is_complete` (true for Binance's own candles, false for a rollup missing minutes; never NULL:
# NOT NULL in migration 0001, written by warehouse/load.py and etl/frames.py), else NULL, so a
# half-built hour draws its forecast and scores nothing. The candle decides, not the stored
# actual_close, whoever wrote that: one rule for every row. The join is in FROM, once per row, and
# prices become float8 once, inside it: Superset inlines this SQL and repeats each column's
# expression in every metric using it (a join or subquery in those expressions would then run once
# per metric). Time and coin filters reach the predictions before the join.
FORECASTS = dataset(
    "forecast_vs_actual",
    _sql("forecast_vs_actual"),
    [
        ("symbol", TEXT),
        ("target_open_time", TS),
        ("kind", TEXT),
        ("forecast_kind", TEXT),
        ("model_version", TEXT),
        ("predicted_close", FLOAT),
        ("lower_close", FLOAT),
        ("upper_close", FLOAT),
        ("persistence_close", FLOAT),
        ("actual_close", FLOAT),
        ("model_abs_error", FLOAT),
        ("persistence_abs_error", FLOAT),
        ("model_abs_pct_error", FLOAT),
        ("persistence_abs_pct_error", FLOAT),
        ("model_sq_error", FLOAT),
        ("persistence_sq_error", FLOAT),
        ("in_interval", INT),
    ],
    "target_open_time",
    # "Served", not "model": where no model is promoted persistence is what serves, and the served and
    # persistence series then coincide (one visible line is the truth; the label says why).
    {
        "actual_close": ("MAX(actual_close)", "Actual close"),
        "predicted_close": ("MAX(predicted_close)", "Served forecast (model or persistence)"),
        "lower_close": ("MAX(lower_close)", "Interval low"),
        "upper_close": ("MAX(upper_close)", "Interval high"),
        "persistence_close": ("MAX(persistence_close)", "Persistence forecast"),
        "scored_hours": ("COUNT(actual_close)", "Scored hours"),
        "model_mae": ("AVG(model_abs_error)", "Served MAE"),
        "persistence_mae": ("AVG(persistence_abs_error)", "Persistence MAE"),
        "model_mape": ("AVG(model_abs_pct_error)", "Served MAPE (%)"),
        "persistence_mape": ("AVG(persistence_abs_pct_error)", "Persistence MAPE (%)"),
        "model_rmse": ("SQRT(AVG(model_sq_error))", "Served RMSE"),
        "persistence_rmse": ("SQRT(AVG(persistence_sq_error))", "Persistence RMSE"),
        # Below 1: the served forecast beat persistence on these hours.
        "mae_ratio": (
            "AVG(model_abs_error) / NULLIF(AVG(persistence_abs_error), 0)",
            "Served MAE / persistence MAE",
        ),
        # Over the scored hours that have an interval (served ones, persistence included, get one; rows
        # without, e.g. from before intervals existed, are left out),
        # as forecast.hourly.score counts it; near 90 when the interval (interval_level 0.9) is honest.
        "interval_coverage": ("AVG(in_interval) * 100", "Interval coverage (%, nominal 90)"),
    },
)


def coins_by_skip_scan(table: str, alias: str) -> str:
    """A recursive CTE `coins` listing the distinct symbols of `table` by one index probe per coin.

    DISTINCT (or GROUP BY) would read every row ever stored; walking the primary key's leading
    column from symbol to next symbol costs a probe per coin, whatever the history. The last row
    of the walk is NULL: the query filters it out.
    """
    return _sql("coins_by_skip_scan", table=table, alias=alias)


# The model behind each coin's latest live forecast, with the registry's record of it: one backward
# probe of the predictions' primary key per coin (coins by skip scan), not a sort of every forecast.
MODEL_IN_USE = dataset(
    "forecast_model_in_use",
    coins_by_skip_scan("forecast.predictions", "p") + _sql("forecast_model_in_use"),
    [
        ("symbol", TEXT),
        ("model_version", TEXT),
        ("served_reason", TEXT),
        ("last_forecast_hour", TS),
        ("architecture", TEXT),
        ("status", TEXT),
        ("trained_at", TS),
        ("promoted_at", TS),
        ("validation_rmse", FLOAT),
        ("validation_persistence_rmse", FLOAT),
        ("status_reason", TEXT),
    ],
    None,
)

# Newest candle per coin and interval, and how far behind now the data it holds ends: a rollup
# hour still filling (is_complete false) holds its minute_count minutes, not the whole hour (else
# the current hour would read as minutes *ahead*). The coins come from a skip scan of the primary
# key (one index probe per coin), because DISTINCT over market.candles would read every minute ever stored.
FRESHNESS = dataset(
    "ops_freshness",
    coins_by_skip_scan("market.candles", "c") + _sql("ops_freshness"),
    [("symbol", TEXT), ("interval", TEXT), ("newest_candle", TS), ("minutes_behind", FLOAT)],
    None,
)

HEALED_GAPS = dataset(
    "ops_healed_gaps",
    _sql("ops_healed_gaps"),
    [("symbol", TEXT), ("interval", TEXT), ("open_time", TS), ("run_id", TEXT), ("healed_at", TS)],
    "healed_at",
    {"healed": ("COUNT(*)", "Candles healed over REST")},
)

QUARANTINE = dataset(
    "ops_quarantine",
    _sql("ops_quarantine"),
    [
        ("id", INT),
        ("source", TEXT),
        ("reason", TEXT),
        ("detail", TEXT),
        ("symbol", TEXT),
        ("interval", TEXT),
        ("open_time", TS),
        ("run_id", TEXT),
        ("quarantined_at", TS),
    ],
    "quarantined_at",
    {"rows": ("COUNT(*)", "Quarantined rows")},
)

# The five latest runs of each pipeline (DAG or command), from the warehouse's own run log: one
# index probe per pipeline (skip scan), not a window over every run ever recorded.
PIPELINE_RUNS = dataset(
    "ops_pipeline_runs",
    _sql("ops_pipeline_runs"),
    [
        ("pipeline", TEXT),
        ("task", TEXT),
        ("run_id", TEXT),
        ("status", TEXT),
        ("started_at", TS),
        ("finished_at", TS),
        ("seconds", FLOAT),
        ("rows_in", INT),
        ("rows_out", INT),
        ("rows_quarantined", INT),
    ],
    "started_at",
)

# The latest result of every data-quality check (per coin where the check is per coin) of the last
# two days: every ETL run adds a few dozen rows, a year holds over a million.
DQ_LATEST = dataset(
    "ops_data_quality_latest",
    _sql("ops_data_quality_latest"),
    [
        ("check_name", TEXT),
        ("symbol", TEXT),
        ("passed", BOOL),
        ("observed", TEXT),
        ("expected", TEXT),
        ("pipeline", TEXT),
        ("run_id", TEXT),
        ("checked_at", TS),
    ],
    "checked_at",
)
