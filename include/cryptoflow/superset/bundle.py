"""The three dashboards (markets, forecasts, pipeline health) as one Superset asset bundle.

This module is the source; include/superset/assets/ holds its output, the bundle YAML that Superset
imports (`python -m cryptoflow.superset.bundle` rewrites it; a unit test fails when they differ).
Objects link by UUID, and every UUID is a uuid5 of the object's kind and name, so an import finds
what an earlier import created and overwrites it instead of adding a copy.

Datasets are virtual (SQL) on the read-only warehouse and read the 1h candles and the ETL's
analytics tables, never a scan of the 1m candles: a year of minutes for ten coins is ~5.3M rows
(`cryptoflow bench --only superset_queries` times every chart's query on that much data).

Each chart carries its query context (what the UI would send to /api/v1/chart/data), so its data
can be fetched by id through the API: the tests and the benchmark do exactly that.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from string import Template

NAMESPACE = uuid.UUID("6f2b9f4e-6b8c-5d0e-9a4f-2c1d7e3b5a90")  # cryptoflow's Superset objects
DATABASE_NAME = "cryptoflow warehouse"  # also what local/superset.py registers at init
DATABASE_FILE = "databases/cryptoflow_warehouse.yaml"
# Placeholder written to git; the importer replaces it with CRYPTOFLOW_WAREHOUSE_READER_DSN (the
# password travels in the API call's `passwords` field, never in a file).
PLACEHOLDER_URI = "postgresql+psycopg2://cf_reader:XXXXXXXXXX@127.0.0.1:5433/cryptoflow"
VERSION = "1.0.0"
ASSETS_DIR = Path("include") / "superset" / "assets"  # relative to CRYPTOFLOW_HOME

UP_COLOUR = "#26a69a"
DOWN_COLOUR = "#ef5350"


def uid(kind: str, name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind}/{name}"))


DATABASE_UUID = uid("database", "warehouse")

# --- column types --------------------------------------------------------------------------------
TEXT, TS, FLOAT, INT, BOOL, DATE = "TEXT", "TIMESTAMP WITH TIME ZONE", "DOUBLE PRECISION", "BIGINT", "BOOLEAN", "DATE"


# --- datasets ------------------------------------------------------------------------------------
SQL_DIR = Path(__file__).with_name("sql")  # each dataset's query, sql/<dataset name>.sql (package data)


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


def dataset(name: str, sql: str, columns: list[tuple[str, str]], main_dttm: str | None = None,
            metrics: dict[str, tuple[str, str]] | None = None) -> str:
    DATASETS[name] = (sql.strip() + "\n", columns, main_dttm, metrics or {})
    return name


# The coin of the candlestick: the dashboard's coin filter (its first value), else BTCUSDT when
# present, else the first coin. Its range: the dashboard's time range, else the last 7 days of data.
# The range is cut into at most 120 buckets of whole hours, each one candle (first open, max high,
# min low, last close), so a year draws as well as a day. Coordinates are computed here for a
# 1000 x 400 SVG: prices in y 10..280, volume bars in y 300..390, x from 70 to 990.
CANDLESTICK = dataset(
    "market_candlestick_svg", _sql("market_candlestick_svg", up_colour=UP_COLOUR, down_colour=DOWN_COLOUR),
    [("symbol", TEXT), ("open_time", TS), ("open", FLOAT), ("high", FLOAT), ("low", FLOAT), ("close", FLOAT),
     ("quote_volume", FLOAT), ("is_complete", BOOL), ("label", TEXT), ("x", FLOAT), ("body_width", FLOAT),
     ("wick_x", FLOAT), ("wick_top", FLOAT), ("wick_bottom", FLOAT), ("body_top", FLOAT),
     ("body_height", FLOAT), ("volume_top", FLOAT), ("volume_height", FLOAT), ("colour", TEXT),
     ("top_label", TEXT), ("bottom_label", TEXT), ("first_label", TEXT), ("last_label", TEXT),
     ("volume_label", TEXT)],
    "open_time")

CANDLES_1H = dataset(
    "market_candles_1h",
    _sql("market_candles_1h"),
    [("symbol", TEXT), ("open_time", TS), ("open", FLOAT), ("high", FLOAT), ("low", FLOAT), ("close", FLOAT),
     ("base_volume", FLOAT), ("quote_volume", FLOAT), ("trades", INT), ("minute_count", INT), ("is_complete", BOOL)],
    "open_time",
    {"quote_volume": ("SUM(quote_volume)", "Volume (USDT)")})

HOURLY_METRICS = dataset(
    "market_hourly_metrics",
    _sql("market_hourly_metrics"),
    [("symbol", TEXT), ("open_time", TS), ("close", FLOAT), ("return_pct", FLOAT), ("log_return", FLOAT),
     ("volatility_24h_pct", FLOAT), ("ma_24h", FLOAT), ("ma_168h", FLOAT), ("quote_volume", FLOAT),
     ("is_complete", BOOL)],
    "open_time",
    {"return_pct": ("AVG(return_pct)", "Hourly return (%)"),
     "volatility_24h_pct": ("AVG(volatility_24h_pct)", "24 h volatility of hourly log returns (%)"),
     # exp(sum of log returns) - 1 over the chosen range: the return of holding the coin.
     "period_return_pct": ("(EXP(SUM(log_return)) - 1) * 100", "Return over the range (%)")})

# The latest 30-day correlation at or before the end of the chosen range, both ways round (and 1 on
# the diagonal) so a pivot of symbol x other is the full matrix; the coin filter keeps one row.
CORRELATION = dataset(
    "market_return_correlation",
    _sql("market_return_correlation"),
    [("day", TS), ("symbol", TEXT), ("other", TEXT), ("correlation", FLOAT), ("hours", INT), ("window_days", INT)],
    None,
    {"correlation": ("MAX(correlation)", "Correlation of hourly log returns")})

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
# expression in every metric using it (with a join or subquery in those expressions, a year took
# seconds). A year of both kinds for ten coins (175k forecasts) aggregates in ~0.3 s; time and coin
# filters reach the predictions before the join.
FORECASTS = dataset(
    "forecast_vs_actual",
    _sql("forecast_vs_actual"),
    [("symbol", TEXT), ("target_open_time", TS), ("kind", TEXT), ("forecast_kind", TEXT), ("model_version", TEXT),
     ("predicted_close", FLOAT), ("lower_close", FLOAT), ("upper_close", FLOAT), ("persistence_close", FLOAT),
     ("actual_close", FLOAT), ("model_abs_error", FLOAT), ("persistence_abs_error", FLOAT),
     ("model_abs_pct_error", FLOAT), ("persistence_abs_pct_error", FLOAT), ("model_sq_error", FLOAT),
     ("persistence_sq_error", FLOAT), ("in_interval", INT)],
    "target_open_time",
    {"actual_close": ("MAX(actual_close)", "Actual close"),
     "predicted_close": ("MAX(predicted_close)", "Model forecast"),
     "lower_close": ("MAX(lower_close)", "Interval low"),
     "upper_close": ("MAX(upper_close)", "Interval high"),
     "persistence_close": ("MAX(persistence_close)", "Persistence forecast"),
     "scored_hours": ("COUNT(actual_close)", "Scored hours"),
     "model_mae": ("AVG(model_abs_error)", "Model MAE"),
     "persistence_mae": ("AVG(persistence_abs_error)", "Persistence MAE"),
     "model_mape": ("AVG(model_abs_pct_error)", "Model MAPE (%)"),
     "persistence_mape": ("AVG(persistence_abs_pct_error)", "Persistence MAPE (%)"),
     "model_rmse": ("SQRT(AVG(model_sq_error))", "Model RMSE"),
     "persistence_rmse": ("SQRT(AVG(persistence_sq_error))", "Persistence RMSE"),
     # Below 1: the model beat persistence on these hours.
     "mae_ratio": ("AVG(model_abs_error) / NULLIF(AVG(persistence_abs_error), 0)", "Model MAE / persistence MAE"),
     # Over the scored hours that have an interval (persistence, served when no model is, has none),
     # as forecast.hourly.score counts it; near 90 when the interval (interval_level 0.9) is honest.
     "interval_coverage": ("AVG(in_interval) * 100", "Interval coverage (%, nominal 90)")})

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
    [("symbol", TEXT), ("model_version", TEXT), ("served_reason", TEXT), ("last_forecast_hour", TS), ("architecture", TEXT),
     ("status", TEXT), ("trained_at", TS), ("promoted_at", TS), ("validation_rmse", FLOAT),
     ("validation_persistence_rmse", FLOAT), ("status_reason", TEXT)],
    None)

# Newest candle per coin and interval, and how far behind now the data it holds ends: a rollup
# hour still filling (is_complete false) holds its minute_count minutes, not the whole hour (else
# the current hour would read as minutes *ahead*). The coins come from a skip scan of the primary
# key (one index probe per coin), because DISTINCT over market.candles would read every minute ever stored.
FRESHNESS = dataset(
    "ops_freshness",
    coins_by_skip_scan("market.candles", "c") + _sql("ops_freshness"),
    [("symbol", TEXT), ("interval", TEXT), ("newest_candle", TS), ("minutes_behind", FLOAT)],
    None)

HEALED_GAPS = dataset(
    "ops_healed_gaps",
    _sql("ops_healed_gaps"),
    [("symbol", TEXT), ("interval", TEXT), ("open_time", TS), ("run_id", TEXT), ("healed_at", TS)],
    "healed_at",
    {"healed": ("COUNT(*)", "Candles healed over REST")})

QUARANTINE = dataset(
    "ops_quarantine",
    _sql("ops_quarantine"),
    [("id", INT), ("source", TEXT), ("reason", TEXT), ("detail", TEXT), ("symbol", TEXT), ("interval", TEXT),
     ("open_time", TS), ("run_id", TEXT), ("quarantined_at", TS)],
    "quarantined_at",
    {"rows": ("COUNT(*)", "Quarantined rows")})

# The five latest runs of each pipeline (DAG or command), from the warehouse's own run log: one
# index probe per pipeline (skip scan), not a window over every run ever recorded.
PIPELINE_RUNS = dataset(
    "ops_pipeline_runs",
    _sql("ops_pipeline_runs"),
    [("pipeline", TEXT), ("task", TEXT), ("run_id", TEXT), ("status", TEXT), ("started_at", TS),
     ("finished_at", TS), ("seconds", FLOAT), ("rows_in", INT), ("rows_out", INT), ("rows_quarantined", INT)],
    "started_at")

# The latest result of every data-quality check (per coin where the check is per coin) of the last
# two days: every ETL run adds a few dozen rows, a year holds over a million.
DQ_LATEST = dataset(
    "ops_data_quality_latest",
    _sql("ops_data_quality_latest"),
    [("check_name", TEXT), ("symbol", TEXT), ("passed", BOOL), ("observed", TEXT), ("expected", TEXT),
     ("pipeline", TEXT), ("run_id", TEXT), ("checked_at", TS)],
    "checked_at")


# Superset's "Last week" ends at midnight, which would hide today's hours: the dashboards' default
# is the 7 days up to now.
LAST_7_DAYS = 'DATEADD(DATETIME("now"), -7, day) : now'

# --- charts --------------------------------------------------------------------------------------
# name -> (dataset, viz_type, params (form data), query (one query object of the query context))
CHARTS: dict[str, tuple[str, str, dict, dict]] = {}


def _temporal(col: str | None, time_range: str) -> list[dict]:
    if not col:
        return []
    return [{"clause": "WHERE", "comparator": time_range, "expressionType": "SIMPLE",
             "operator": "TEMPORAL_RANGE", "subject": col}]


def _query(columns, metrics, *, time_col=None, time_range="No filter", orderby=None, row_limit=10000,
           series=None, post_processing=None, filters=None) -> dict:
    filters = list(filters or [])
    if time_col:
        filters.append({"col": time_col, "op": "TEMPORAL_RANGE", "val": time_range})
    return {
        "filters": filters, "extras": {"having": "", "where": ""}, "applied_time_extras": {},
        "columns": columns, "metrics": metrics, "orderby": orderby or [], "annotation_layers": [],
        "row_limit": row_limit, "series_columns": series or [], "series_limit": 0, "order_desc": True,
        "url_params": {}, "custom_params": {}, "custom_form_data": {}, "time_range": time_range,
        "post_processing": post_processing or [],
    }


def timeseries(name: str, ds: str, viz: str, x: str, metrics: list[str], *, groupby=None, grain="PT1H",
               time_range="No filter", extra=None) -> str:
    groupby = groupby or []
    params = {
        "viz_type": viz, "x_axis": x, "time_grain_sqla": grain, "metrics": metrics, "groupby": groupby,
        "adhoc_filters": _temporal(x, time_range), "row_limit": 10000, "truncate_metric": True,
        "show_legend": True, "legendType": "scroll", "legendOrientation": "top", "rich_tooltip": True,
        "x_axis_time_format": "smart_date", "tooltipTimeFormat": "%Y-%m-%d %H:%M", "color_scheme": "supersetColors",
        "y_axis_format": "SMART_NUMBER", "truncateYAxis": viz != "echarts_timeseries_bar", "y_axis_bounds": [None, None],
        "only_total": True, "zoomable": True, **(extra or {}),
    }
    axis = {"timeGrain": grain, "columnType": "BASE_AXIS", "sqlExpression": x, "label": x, "expressionType": "SQL"}
    aggregates = {m: {"operator": "mean"} for m in metrics}
    query = _query([axis, *groupby], metrics, time_col=x, time_range=time_range, series=groupby,
                   orderby=[[metrics[0], False]] if groupby else [],
                   post_processing=[{"operation": "pivot", "options": {
                       "index": [x], "columns": groupby, "aggregates": aggregates, "drop_missing_columns": False}},
                       {"operation": "flatten"}])
    CHARTS[name] = (ds, viz, params, query)
    return name


def category_bar(name: str, ds: str, x: str, metric: str, *, groupby=None, time_col=None) -> str:
    """Bars over a non-time x axis (e.g. quarantine reasons), stacked by `groupby`."""
    groupby = groupby or []
    params = {
        "viz_type": "echarts_timeseries_bar", "x_axis": x, "metrics": [metric], "groupby": groupby,
        "adhoc_filters": _temporal(time_col, "No filter"), "row_limit": 1000, "stack": "Stack",
        "show_legend": True, "legendType": "scroll", "legendOrientation": "top", "orientation": "horizontal",
        "x_axis_sort_asc": True, "show_value": True, "color_scheme": "supersetColors", "y_axis_format": "SMART_NUMBER",
        "rich_tooltip": True, "only_total": True,
    }
    axis = {"columnType": "BASE_AXIS", "sqlExpression": x, "label": x, "expressionType": "SQL"}
    query = _query([axis, *groupby], [metric], time_col=time_col, series=groupby, row_limit=1000,
                   orderby=[[metric, False]],
                   post_processing=[{"operation": "pivot", "options": {
                       "index": [x], "columns": groupby, "aggregates": {metric: {"operator": "mean"}},
                       "drop_missing_columns": False}}, {"operation": "flatten"}])
    CHARTS[name] = (ds, "echarts_timeseries_bar", params, query)
    return name


def table(name: str, ds: str, *, columns=None, groupby=None, metrics=None, order=None, time_col=None,
          row_limit=1000, extra=None) -> str:
    """A raw table (columns) or an aggregated one (groupby + metrics); order: [(column, ascending)]."""
    raw = columns is not None
    order = order or []
    params = {
        "viz_type": "table", "query_mode": "raw" if raw else "aggregate", "all_columns": columns or [],
        "groupby": groupby or [], "metrics": metrics or [], "percent_metrics": [],
        "order_by_cols": [json.dumps([c, asc]) for c, asc in order] if raw else [],
        "adhoc_filters": _temporal(time_col, "No filter"), "row_limit": row_limit, "server_page_length": 10,
        "table_timestamp_format": "%Y-%m-%d %H:%M", "show_cell_bars": False, "color_pn": True,
        "include_search": False, **(extra or {}),
    }
    if not raw and order:
        params["timeseries_limit_metric"] = order[0][0]
        params["order_desc"] = not order[0][1]
    query = _query(columns if raw else (groupby or []), [] if raw else metrics, time_col=time_col,
                   orderby=[[c, asc] for c, asc in order], row_limit=row_limit)
    CHARTS[name] = (ds, "table", params, query)
    return name


def pivot(name: str, ds: str, rows: list[str], cols: list[str], metric: str, time_col=None) -> str:
    params = {
        "viz_type": "pivot_table_v2", "groupbyRows": rows, "groupbyColumns": cols, "metrics": [metric],
        "aggregateFunction": "Sum", "valueFormat": ".2f", "metricsLayout": "COLUMNS", "rowOrder": "key_a_to_z",
        "colOrder": "key_a_to_z", "adhoc_filters": _temporal(time_col, "No filter"), "row_limit": 10000,
        "conditional_formatting": [
            {"colorScheme": "#ACE1C4", "column": metric, "operator": ">=", "targetValue": 0.5},
            {"colorScheme": "#FDE380", "column": metric, "operator": "between", "targetValueLeft": 0,
             "targetValueRight": 0.5},
            {"colorScheme": "#EFA1AA", "column": metric, "operator": "<", "targetValue": 0}],
    }
    query = _query([*rows, *cols], [metric], time_col=time_col, row_limit=10000, orderby=[[metric, False]])
    CHARTS[name] = (ds, "pivot_table_v2", params, query)
    return name


# Handlebars' template, on one line (a line break inside an SVG element breaks the sanitiser's parse).
# Superset sanitises the result with the schema extended in superset_config.py: only svg, g, rect,
# line, text and title survive, with the attributes listed there.
CANDLESTICK_TEMPLATE = (
    '<svg viewBox="0 0 1000 400" width="100%" xmlns="http://www.w3.org/2000/svg">'
    '<rect x="70" y="5" width="925" height="280" fill="#fafafa" stroke="#e0e0e0"></rect>'
    '<rect x="70" y="295" width="925" height="100" fill="#fafafa" stroke="#e0e0e0"></rect>'
    '{{#each data}}'
    '<line x1="{{wick_x}}" y1="{{wick_top}}" x2="{{wick_x}}" y2="{{wick_bottom}}" stroke="{{colour}}" strokeWidth="1"></line>'
    '<rect x="{{x}}" y="{{body_top}}" width="{{body_width}}" height="{{body_height}}" fill="{{colour}}">'
    '<title>{{symbol}} {{label}} UTC  open {{open}}  high {{high}}  low {{low}}  close {{close}}</title></rect>'
    '<rect x="{{x}}" y="{{volume_top}}" width="{{body_width}}" height="{{volume_height}}" fill="{{colour}}" opacity="0.45">'
    '<title>{{label}} UTC volume {{quote_volume}} USDT</title></rect>'
    '{{/each}}'
    '{{#with data.[0]}}'
    '<text x="64" y="16" textAnchor="end" fontSize="11" fill="#555">{{top_label}}</text>'
    '<text x="64" y="283" textAnchor="end" fontSize="11" fill="#555">{{bottom_label}}</text>'
    '<text x="64" y="305" textAnchor="end" fontSize="10" fill="#555">{{volume_label}}</text>'
    '<text x="64" y="392" textAnchor="end" fontSize="10" fill="#555">vol 0</text>'
    '<text x="74" y="22" fontSize="14" fontWeight="bold" fill="#333">{{symbol}}</text>'
    '<text x="72" y="293" fontSize="10" fill="#555">{{first_label}} UTC</text>'
    '<text x="992" y="293" textAnchor="end" fontSize="10" fill="#555">{{last_label}} UTC</text>'
    '{{/with}}'
    '{{#unless data.length}}<text x="500" y="150" textAnchor="middle" fontSize="14" fill="#777">'
    'No 1h candles for this coin in the chosen time range</text>{{/unless}}'
    '</svg>'
)


def candlestick(name: str) -> str:
    columns = [c for c, _ in DATASETS[CANDLESTICK][1]]
    params = {
        "viz_type": "handlebars", "query_mode": "raw", "all_columns": columns, "groupby": [], "metrics": [],
        "order_by_cols": [json.dumps(["open_time", True])], "adhoc_filters": _temporal("open_time", "No filter"),
        "row_limit": 1000, "handlebarsTemplate": CANDLESTICK_TEMPLATE, "styleTemplate": "",
    }
    query = _query(columns, [], time_col="open_time", orderby=[["open_time", True]], row_limit=1000)
    CHARTS[name] = (CANDLESTICK, "handlebars", params, query)
    return name


# Market
C_CANDLES = candlestick("Candlestick (1h candles, UTC)")
C_VOLUME = timeseries("Hourly volume (USDT) per coin", CANDLES_1H, "echarts_timeseries_bar", "open_time",
                      ["quote_volume"], groupby=["symbol"], time_range=LAST_7_DAYS, extra={"stack": "Stack"})
C_RETURNS = timeseries("Hourly returns (%)", HOURLY_METRICS, "echarts_timeseries_line", "open_time",
                       ["return_pct"], groupby=["symbol"], time_range=LAST_7_DAYS)
C_VOLATILITY = timeseries("Rolling 24 h volatility (%)", HOURLY_METRICS, "echarts_timeseries_line", "open_time",
                          ["volatility_24h_pct"], groupby=["symbol"], time_range=LAST_7_DAYS)
C_PERIOD_RETURN = table("Return over the range per coin", HOURLY_METRICS, groupby=["symbol"],
                        metrics=["period_return_pct", "volatility_24h_pct"], order=[("period_return_pct", False)],
                        time_col="open_time")
C_CORRELATION = pivot("Correlation of hourly returns (latest 30 days)", CORRELATION, ["symbol"], ["other"],
                      "correlation", time_col="day")
# Forecasts: every chart of FORECASTS groups by forecast_kind, so live and backtest forecasts of the
# same hour are two series (two rows), never one average of both.
C_PRED_VS_ACTUAL = timeseries("Predicted vs actual close", FORECASTS, "echarts_timeseries_line",
                              "target_open_time",
                              ["actual_close", "predicted_close", "persistence_close", "lower_close", "upper_close"],
                              groupby=["forecast_kind"], time_range=LAST_7_DAYS)
C_ERRORS = timeseries("Daily MAPE: model vs persistence (%)", FORECASTS, "echarts_timeseries_line",
                      "target_open_time", ["model_mape", "persistence_mape"], groupby=["forecast_kind"], grain="P1D")
C_SCORES = table("Model vs persistence per coin", FORECASTS, groupby=["symbol", "forecast_kind"],
                 metrics=["scored_hours", "model_mae", "persistence_mae", "mae_ratio", "model_rmse",
                          "persistence_rmse", "model_mape", "persistence_mape", "interval_coverage"],
                 order=[("scored_hours", False)], time_col="target_open_time")
C_MODELS = table("Model in use per coin", MODEL_IN_USE,
                 columns=["symbol", "model_version", "served_reason", "architecture", "status", "last_forecast_hour",
                          "validation_rmse", "validation_persistence_rmse"],
                 order=[("symbol", True)])
# Pipeline health
C_FRESHNESS = table("Freshness: newest candle per coin", FRESHNESS,
                    columns=["symbol", "interval", "newest_candle", "minutes_behind"],
                    order=[("minutes_behind", False)],
                    extra={"conditional_formatting": [
                        {"colorScheme": "#EFA1AA", "column": "minutes_behind", "operator": ">", "targetValue": 30},
                        {"colorScheme": "#ACE1C4", "column": "minutes_behind", "operator": "<=", "targetValue": 30}]})
C_HEALED = timeseries("Candles healed over REST per day", HEALED_GAPS, "echarts_timeseries_bar", "open_time",
                      ["healed"], groupby=["symbol"], grain="P1D", extra={"stack": "Stack"})
C_QUARANTINE = category_bar("Quarantined rows by reason", QUARANTINE, "reason", "rows", groupby=["source"],
                            time_col="quarantined_at")
C_RUNS = table("Latest runs per pipeline", PIPELINE_RUNS,
               columns=["pipeline", "task", "status", "started_at", "finished_at", "seconds", "rows_in", "rows_out",
                        "rows_quarantined", "run_id"],
               order=[("started_at", False)], time_col="started_at")
C_DQ = table("Data-quality checks (latest result, last 2 days)", DQ_LATEST,
             columns=["check_name", "symbol", "passed", "observed", "expected", "checked_at"],
             order=[("passed", True), ("check_name", True)])


# --- dashboards ----------------------------------------------------------------------------------
# slug -> (title, rows of (chart or markdown, width of 12, height in grid units of 8 px), filters)
DASHBOARDS: dict[str, tuple[str, list[list[tuple[str, int, int]]], list[dict]]] = {}

MARKDOWN_PREFIX = "markdown:"


def coin_filter(ds: str, *, default: str | None = None, multi: bool = True, exclude: tuple[str, ...] = ()) -> dict:
    """The coin filter; with a `default`, a value is required (charts that can't mix coins).

    `exclude`: charts that compare coins and so ignore it.
    """
    return {"name": "Coin", "filterType": "filter_select", "column": "symbol", "dataset": ds, "default": default,
            "exclude": exclude,
            "controlValues": {"enableEmptyFilter": default is not None, "defaultToFirstItem": False,
                              "multiSelect": multi, "searchAllOptions": False, "inverseSelection": False}}


def time_filter(default: str) -> dict:
    return {"name": "Time range", "filterType": "filter_time", "default": default}


MARKET_NOTE = MARKDOWN_PREFIX + (
    "**Candles** are hourly (Binance's own or rolled up from minutes), UTC. The candlestick shows the first "
    "coin of the *Coin* filter (BTCUSDT when none) over the *Time range*, in at most 120 candles: a longer range "
    "merges hours (first open, highest high, lowest low, last close). Green: close >= open.")
FORECAST_NOTE = MARKDOWN_PREFIX + (
    "One-hour-ahead forecasts of the close, beside the **persistence** forecast (next close = last close) "
    "on the same hours: *live* (the hourly DAG) and *backtest (walk-forward)* (the same steps replayed over the "
    "stored history), always as separate series and rows. Only complete hours are scored (an hour still missing "
    "minutes shows the forecast, no actual). MAE ratio below 1 means the model beat persistence. Every forecast, "
    "persistence included, carries a 90 % interval calibrated on its own errors over the two weeks before "
    "(conformal, scaled by recent volatility); the table counts its coverage per coin (share of scored hours "
    "inside it, target 88-92 %). The two tables show every coin, whatever the *Coin* filter.")
HEALTH_NOTE = MARKDOWN_PREFIX + (
    "From the warehouse's own records: `ops.pipeline_runs`, `ops.quarantine`, `ops.healed_gaps`, "
    "`ops.data_quality_results`. Freshness is `now()` minus the close of the newest candle (red above 30 min).")

DASHBOARDS["cryptoflow-markets"] = (
    "Markets",
    [[(C_CANDLES, 9, 62), (MARKET_NOTE, 3, 62)],
     [(C_VOLUME, 12, 50)],
     [(C_RETURNS, 6, 50), (C_VOLATILITY, 6, 50)],
     [(C_PERIOD_RETURN, 4, 60), (C_CORRELATION, 8, 60)]],
    [coin_filter(CANDLES_1H), time_filter(LAST_7_DAYS)])
DASHBOARDS["cryptoflow-forecasts"] = (
    "Forecasts",
    [[(C_PRED_VS_ACTUAL, 9, 60), (FORECAST_NOTE, 3, 60)],
     [(C_ERRORS, 12, 45)],
     [(C_SCORES, 12, 36)],
     [(C_MODELS, 12, 36)]],
    [coin_filter(FORECASTS, default="BTCUSDT", multi=False, exclude=(C_SCORES, C_MODELS)),
     time_filter(LAST_7_DAYS)])
DASHBOARDS["cryptoflow-pipeline-health"] = (
    "Pipeline health",
    [[(C_FRESHNESS, 6, 60), (C_QUARANTINE, 6, 60)],
     [(C_HEALED, 6, 50), (HEALTH_NOTE, 6, 50)],
     [(C_RUNS, 12, 50)],
     [(C_DQ, 12, 50)]],
    [coin_filter(FRESHNESS)])


# --- YAML documents ------------------------------------------------------------------------------

def database_doc() -> dict:
    return {
        "database_name": DATABASE_NAME, "sqlalchemy_uri": PLACEHOLDER_URI, "cache_timeout": None,
        "expose_in_sqllab": True, "allow_run_async": False, "allow_ctas": False, "allow_cvas": False,
        "allow_dml": False, "allow_csv_upload": False, "impersonate_user": False,
        "extra": {"allows_virtual_table_explore": True, "metadata_params": {}, "engine_params": {},
                  "schemas_allowed_for_file_upload": []},
        "uuid": DATABASE_UUID, "version": VERSION,
    }


def dataset_doc(name: str) -> dict:
    sql, columns, main_dttm, metrics = DATASETS[name]
    return {
        "table_name": name, "main_dttm_col": main_dttm, "description": None, "default_endpoint": None,
        "offset": 0, "cache_timeout": None, "schema": None, "catalog": None, "sql": sql, "params": None,
        "template_params": None, "filter_select_enabled": True, "fetch_values_predicate": None, "extra": None,
        "normalize_columns": False, "always_filter_main_dttm": False,
        "uuid": uid("dataset", name),
        "metrics": [{"metric_name": m, "verbose_name": label, "metric_type": None, "expression": expr,
                     "description": None, "d3format": None, "extra": None, "warning_text": None}
                    for m, (expr, label) in metrics.items()],
        "columns": [{"column_name": c, "verbose_name": None, "is_dttm": t == TS, "is_active": True, "type": t,
                     "advanced_data_type": None, "groupby": True, "filterable": True, "expression": None,
                     "description": None, "python_date_format": None, "extra": None}
                    for c, t in columns],
        "version": VERSION, "database_uuid": DATABASE_UUID,
    }


def chart_doc(name: str) -> dict:
    ds, viz, params, query = CHARTS[name]
    form_data = {**params, "datasource": "0__table"}
    context = {"datasource": {"id": 0, "type": "table"}, "force": False, "queries": [query],
               "form_data": form_data, "result_format": "json", "result_type": "full"}
    return {
        "slice_name": name, "description": None, "certified_by": None, "certification_details": None,
        "viz_type": viz, "params": form_data, "query_context": json.dumps(context, indent=1),
        "cache_timeout": None, "uuid": uid("chart", name), "version": VERSION, "dataset_uuid": uid("dataset", ds),
    }


def placeholder_id(chart: str) -> int:
    """The chart id written in the bundle; the importer maps it to the real one through the uuid."""
    return 1 + list(CHARTS).index(chart)


def dashboard_doc(slug: str) -> dict:
    title, rows, filters = DASHBOARDS[slug]
    position: dict = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
        "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": title}},
    }
    for r, row in enumerate(rows):
        row_id = f"ROW-{r}"
        position["GRID_ID"]["children"].append(row_id)
        position[row_id] = {"type": "ROW", "id": row_id, "children": [], "parents": ["ROOT_ID", "GRID_ID"],
                            "meta": {"background": "BACKGROUND_TRANSPARENT"}}
        for c, (item, width, height) in enumerate(row):
            parents = ["ROOT_ID", "GRID_ID", row_id]
            if item.startswith(MARKDOWN_PREFIX):
                item_id = f"MARKDOWN-{r}-{c}"
                position[item_id] = {"type": "MARKDOWN", "id": item_id, "children": [], "parents": parents,
                                     "meta": {"code": item[len(MARKDOWN_PREFIX):], "width": width, "height": height}}
            else:
                item_id = f"CHART-{r}-{c}"
                # chartId is a placeholder the importer maps to the real id through the uuid.
                position[item_id] = {"type": "CHART", "id": item_id, "children": [], "parents": parents,
                                     "meta": {"chartId": placeholder_id(item), "uuid": uid("chart", item),
                                              "sliceName": item, "width": width, "height": height}}
            position[row_id]["children"].append(item_id)
    native = []
    for f in filters:
        fid = "NATIVE_FILTER-" + uid("filter", f"{slug}/{f['name']}")[:13]
        if f["filterType"] == "filter_time":
            default = {"extraFormData": {"time_range": f["default"]}, "filterState": {"value": f["default"]},
                       "ownState": {}}
            targets = [{}]
            control = {}
        else:
            default = {"extraFormData": {}, "filterState": {}, "ownState": {}}
            if f["default"]:
                default = {"extraFormData": {"filters": [{"col": f["column"], "op": "IN", "val": [f["default"]]}]},
                           "filterState": {"value": [f["default"]]}, "ownState": {}}
            targets = [{"column": {"name": f["column"]}, "datasetUuid": uid("dataset", f["dataset"])}]
            control = f["controlValues"]
        native.append({
            "id": fid, "name": f["name"], "filterType": f["filterType"], "type": "NATIVE_FILTER",
            "targets": targets, "controlValues": control, "defaultDataMask": default, "cascadeParentIds": [],
            "scope": {"rootPath": ["ROOT_ID"], "excluded": [placeholder_id(c) for c in f.get("exclude", ())]},
            "description": "",
        })
    return {
        "dashboard_title": title, "description": None, "css": "", "slug": slug, "certified_by": None,
        "certification_details": None, "published": True, "uuid": uid("dashboard", slug), "position": position,
        "metadata": {"native_filter_configuration": native, "color_scheme": "supersetColors",
                     "refresh_frequency": 0, "expanded_slices": {}, "label_colors": {}, "shared_label_colors": [],
                     "timed_refresh_immune_slices": [], "cross_filters_enabled": False, "default_filters": "{}",
                     "chart_configuration": {},
                     "global_chart_configuration": {"scope": {"rootPath": ["ROOT_ID"], "excluded": []},
                                                    "chartsInScope": []}},
        "version": VERSION,
    }


def file_name(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_") + ".yaml"


def documents() -> dict[str, dict]:
    """Bundle path (under the root folder) -> YAML document."""
    docs = {"metadata.yaml": {"version": VERSION, "type": "assets", "timestamp": "2026-11-21T00:00:00+00:00"},
            DATABASE_FILE: database_doc()}
    for name in DATASETS:
        docs[f"datasets/cryptoflow_warehouse/{file_name(name)}"] = dataset_doc(name)
    for name in CHARTS:
        docs[f"charts/{file_name(name)}"] = chart_doc(name)
    for slug in DASHBOARDS:
        docs[f"dashboards/{file_name(slug)}"] = dashboard_doc(slug)
    return docs


def render(doc: dict) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value: str):
        # SQL as readable blocks in the files under review, not one escaped line.
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(doc, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=120)


def write(directory: Path) -> list[Path]:
    """Write the bundle's files under `directory`, removing stale ones; returns the files written."""
    import shutil

    for sub in ("databases", "datasets", "charts", "dashboards"):
        shutil.rmtree(directory / sub, ignore_errors=True)
    written = []
    for rel, doc in documents().items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(doc))
        written.append(path)
    return written


if __name__ == "__main__":
    from cryptoflow import settings

    out = settings.load().home / ASSETS_DIR
    for p in write(out):
        print(p)
