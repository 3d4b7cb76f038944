"""The bundle's charts: each one's form data and the query context the UI would send for it.

Every builder records its chart in CHARTS (in definition order, which fixes the placeholder ids of
bundle.py) and returns the chart's name, which is how dashboards place it.
"""

from __future__ import annotations

import json

from cryptoflow.superset.datasets import (
    CANDLES_1H,
    CANDLESTICK,
    CORRELATION,
    DATASETS,
    DQ_LATEST,
    FORECASTS,
    FRESHNESS,
    HEALED_GAPS,
    HOURLY_METRICS,
    MODEL_IN_USE,
    PIPELINE_RUNS,
    QUARANTINE,
)

# Superset's "Last week" ends at midnight, which would hide today's hours: the dashboards' default
# is the 7 days up to now.
LAST_7_DAYS = 'DATEADD(DATETIME("now"), -7, day) : now'

# --- charts --------------------------------------------------------------------------------------
# name -> (dataset, viz_type, params (form data), query (one query object of the query context))
CHARTS: dict[str, tuple[str, str, dict, dict]] = {}


def _temporal(col: str | None, time_range: str) -> list[dict]:
    if not col:
        return []
    return [
        {
            "clause": "WHERE",
            "comparator": time_range,
            "expressionType": "SIMPLE",
            "operator": "TEMPORAL_RANGE",
            "subject": col,
        }
    ]


def _query(
    columns,
    metrics,
    *,
    time_col=None,
    time_range="No filter",
    orderby=None,
    row_limit=10000,
    series=None,
    post_processing=None,
    filters=None,
) -> dict:
    filters = list(filters or [])
    if time_col:
        filters.append({"col": time_col, "op": "TEMPORAL_RANGE", "val": time_range})
    return {
        "filters": filters,
        "extras": {"having": "", "where": ""},
        "applied_time_extras": {},
        "columns": columns,
        "metrics": metrics,
        "orderby": orderby or [],
        "annotation_layers": [],
        "row_limit": row_limit,
        "series_columns": series or [],
        "series_limit": 0,
        "order_desc": True,
        "url_params": {},
        "custom_params": {},
        "custom_form_data": {},
        "time_range": time_range,
        "post_processing": post_processing or [],
    }


def _timeseries_params(
    viz: str, x: str, metrics: list[str], groupby: list, grain: str, time_range: str, extra
) -> dict:
    """The form data of a time-series chart: `metrics` over time axis `x`, one series per `groupby`."""
    return {
        "viz_type": viz,
        "x_axis": x,
        "time_grain_sqla": grain,
        "metrics": metrics,
        "groupby": groupby,
        "adhoc_filters": _temporal(x, time_range),
        "row_limit": 10000,
        "truncate_metric": True,
        "show_legend": True,
        "legendType": "scroll",
        "legendOrientation": "top",
        "rich_tooltip": True,
        "x_axis_time_format": "smart_date",
        "tooltipTimeFormat": "%Y-%m-%d %H:%M",
        "color_scheme": "supersetColors",
        "y_axis_format": "SMART_NUMBER",
        "truncateYAxis": viz != "echarts_timeseries_bar",
        "y_axis_bounds": [None, None],
        "only_total": True,
        "zoomable": True,
        **(extra or {}),
    }


def _timeseries_query(
    x: str, metrics: list[str], groupby: list, grain: str, time_range: str
) -> dict:
    """The query of a time-series chart: grouped by the time axis at `grain`, pivoted to one column
    per metric and series (the mean where several rows share a time)."""
    axis = {
        "timeGrain": grain,
        "columnType": "BASE_AXIS",
        "sqlExpression": x,
        "label": x,
        "expressionType": "SQL",
    }
    aggregates = {m: {"operator": "mean"} for m in metrics}
    return _query(
        [axis, *groupby],
        metrics,
        time_col=x,
        time_range=time_range,
        series=groupby,
        orderby=[[metrics[0], False]] if groupby else [],
        post_processing=[
            {
                "operation": "pivot",
                "options": {
                    "index": [x],
                    "columns": groupby,
                    "aggregates": aggregates,
                    "drop_missing_columns": False,
                },
            },
            {"operation": "flatten"},
        ],
    )


def timeseries(
    name: str,
    ds: str,
    viz: str,
    x: str,
    metrics: list[str],
    *,
    groupby=None,
    grain="PT1H",
    time_range="No filter",
    extra=None,
) -> str:
    groupby = groupby or []
    params = _timeseries_params(viz, x, metrics, groupby, grain, time_range, extra)
    query = _timeseries_query(x, metrics, groupby, grain, time_range)
    CHARTS[name] = (ds, viz, params, query)
    return name


def category_bar(name: str, ds: str, x: str, metric: str, *, groupby=None, time_col=None) -> str:
    """Bars over a non-time x axis (e.g. quarantine reasons), stacked by `groupby`."""
    groupby = groupby or []
    params = {
        "viz_type": "echarts_timeseries_bar",
        "x_axis": x,
        "metrics": [metric],
        "groupby": groupby,
        "adhoc_filters": _temporal(time_col, "No filter"),
        "row_limit": 1000,
        "stack": "Stack",
        "show_legend": True,
        "legendType": "scroll",
        "legendOrientation": "top",
        "orientation": "horizontal",
        "x_axis_sort_asc": True,
        "show_value": True,
        "color_scheme": "supersetColors",
        "y_axis_format": "SMART_NUMBER",
        "rich_tooltip": True,
        "only_total": True,
    }
    axis = {"columnType": "BASE_AXIS", "sqlExpression": x, "label": x, "expressionType": "SQL"}
    query = _query(
        [axis, *groupby],
        [metric],
        time_col=time_col,
        series=groupby,
        row_limit=1000,
        orderby=[[metric, False]],
        post_processing=[
            {
                "operation": "pivot",
                "options": {
                    "index": [x],
                    "columns": groupby,
                    "aggregates": {metric: {"operator": "mean"}},
                    "drop_missing_columns": False,
                },
            },
            {"operation": "flatten"},
        ],
    )
    CHARTS[name] = (ds, "echarts_timeseries_bar", params, query)
    return name


def table(
    name: str,
    ds: str,
    *,
    columns=None,
    groupby=None,
    metrics=None,
    order=None,
    time_col=None,
    row_limit=1000,
    extra=None,
) -> str:
    """A raw table (columns) or an aggregated one (groupby + metrics); order: [(column, ascending)]."""
    raw = columns is not None
    order = order or []
    params = {
        "viz_type": "table",
        "query_mode": "raw" if raw else "aggregate",
        "all_columns": columns or [],
        "groupby": groupby or [],
        "metrics": metrics or [],
        "percent_metrics": [],
        "order_by_cols": [json.dumps([c, asc]) for c, asc in order] if raw else [],
        "adhoc_filters": _temporal(time_col, "No filter"),
        "row_limit": row_limit,
        "server_page_length": 10,
        "table_timestamp_format": "%Y-%m-%d %H:%M",
        "show_cell_bars": False,
        "color_pn": True,
        "include_search": False,
        **(extra or {}),
    }
    if not raw and order:
        params["timeseries_limit_metric"] = order[0][0]
        params["order_desc"] = not order[0][1]
    query = _query(
        columns if raw else (groupby or []),
        [] if raw else metrics,
        time_col=time_col,
        orderby=[[c, asc] for c, asc in order],
        row_limit=row_limit,
    )
    CHARTS[name] = (ds, "table", params, query)
    return name


def pivot(name: str, ds: str, rows: list[str], cols: list[str], metric: str, time_col=None) -> str:
    params = {
        "viz_type": "pivot_table_v2",
        "groupbyRows": rows,
        "groupbyColumns": cols,
        "metrics": [metric],
        "aggregateFunction": "Sum",
        "valueFormat": ".2f",
        "metricsLayout": "COLUMNS",
        "rowOrder": "key_a_to_z",
        "colOrder": "key_a_to_z",
        "adhoc_filters": _temporal(time_col, "No filter"),
        "row_limit": 10000,
        "conditional_formatting": [
            {"colorScheme": "#ACE1C4", "column": metric, "operator": ">=", "targetValue": 0.5},
            {
                "colorScheme": "#FDE380",
                "column": metric,
                "operator": "between",
                "targetValueLeft": 0,
                "targetValueRight": 0.5,
            },
            {"colorScheme": "#EFA1AA", "column": metric, "operator": "<", "targetValue": 0},
        ],
    }
    query = _query(
        [*rows, *cols], [metric], time_col=time_col, row_limit=10000, orderby=[[metric, False]]
    )
    CHARTS[name] = (ds, "pivot_table_v2", params, query)
    return name


# Handlebars' template, on one line (a line break inside an SVG element breaks the sanitiser's parse).
# Superset sanitises the result with the schema extended in superset_config.py: only svg, g, rect,
# line, text and title survive, with the attributes listed there.
CANDLESTICK_TEMPLATE = (
    '<svg viewBox="0 0 1000 400" width="100%" xmlns="http://www.w3.org/2000/svg">'
    '<rect x="70" y="5" width="925" height="280" fill="#fafafa" stroke="#e0e0e0"></rect>'
    '<rect x="70" y="295" width="925" height="100" fill="#fafafa" stroke="#e0e0e0"></rect>'
    "{{#each data}}"
    '<line x1="{{wick_x}}" y1="{{wick_top}}" x2="{{wick_x}}" y2="{{wick_bottom}}" stroke="{{colour}}" strokeWidth="1"></line>'
    '<rect x="{{x}}" y="{{body_top}}" width="{{body_width}}" height="{{body_height}}" fill="{{colour}}">'
    "<title>{{symbol}} {{label}} UTC  open {{open}}  high {{high}}  low {{low}}  close {{close}}</title></rect>"
    '<rect x="{{x}}" y="{{volume_top}}" width="{{body_width}}" height="{{volume_height}}" fill="{{colour}}" opacity="0.45">'
    "<title>{{label}} UTC volume {{quote_volume}} USDT</title></rect>"
    "{{/each}}"
    "{{#with data.[0]}}"
    '<text x="64" y="16" textAnchor="end" fontSize="11" fill="#555">{{top_label}}</text>'
    '<text x="64" y="283" textAnchor="end" fontSize="11" fill="#555">{{bottom_label}}</text>'
    '<text x="64" y="305" textAnchor="end" fontSize="10" fill="#555">{{volume_label}}</text>'
    '<text x="64" y="392" textAnchor="end" fontSize="10" fill="#555">vol 0</text>'
    '<text x="74" y="22" fontSize="14" fontWeight="bold" fill="#333">{{symbol}}</text>'
    '<text x="72" y="293" fontSize="10" fill="#555">{{first_label}} UTC</text>'
    '<text x="992" y="293" textAnchor="end" fontSize="10" fill="#555">{{last_label}} UTC</text>'
    "{{/with}}"
    '{{#unless data.length}}<text x="500" y="150" textAnchor="middle" fontSize="14" fill="#777">'
    "No 1h candles for this coin in the chosen time range</text>{{/unless}}"
    "</svg>"
)


def candlestick(name: str) -> str:
    columns = [c for c, _ in DATASETS[CANDLESTICK][1]]
    params = {
        "viz_type": "handlebars",
        "query_mode": "raw",
        "all_columns": columns,
        "groupby": [],
        "metrics": [],
        "order_by_cols": [json.dumps(["open_time", True])],
        "adhoc_filters": _temporal("open_time", "No filter"),
        "row_limit": 1000,
        "handlebarsTemplate": CANDLESTICK_TEMPLATE,
        "styleTemplate": "",
    }
    query = _query(columns, [], time_col="open_time", orderby=[["open_time", True]], row_limit=1000)
    CHARTS[name] = (CANDLESTICK, "handlebars", params, query)
    return name


# Market
C_CANDLES = candlestick("Candlestick (1h candles, UTC)")
C_VOLUME = timeseries(
    "Hourly volume (USDT) per coin",
    CANDLES_1H,
    "echarts_timeseries_bar",
    "open_time",
    ["quote_volume"],
    groupby=["symbol"],
    time_range=LAST_7_DAYS,
    extra={"stack": "Stack"},
)
C_RETURNS = timeseries(
    "Hourly returns (%)",
    HOURLY_METRICS,
    "echarts_timeseries_line",
    "open_time",
    ["return_pct"],
    groupby=["symbol"],
    time_range=LAST_7_DAYS,
)
C_VOLATILITY = timeseries(
    "Rolling 24 h volatility (%)",
    HOURLY_METRICS,
    "echarts_timeseries_line",
    "open_time",
    ["volatility_24h_pct"],
    groupby=["symbol"],
    time_range=LAST_7_DAYS,
)
C_PERIOD_RETURN = table(
    "Return over the range per coin",
    HOURLY_METRICS,
    groupby=["symbol"],
    metrics=["period_return_pct", "volatility_24h_pct"],
    order=[("period_return_pct", False)],
    time_col="open_time",
)
C_CORRELATION = pivot(
    "Correlation of hourly returns (latest 30 days)",
    CORRELATION,
    ["symbol"],
    ["other"],
    "correlation",
    time_col="day",
)
# Forecasts: every chart of FORECASTS groups by forecast_kind, so live and backtest forecasts of the
# same hour are two series (two rows), never one average of both.
C_PRED_VS_ACTUAL = timeseries(
    "Predicted vs actual close",
    FORECASTS,
    "echarts_timeseries_line",
    "target_open_time",
    ["actual_close", "predicted_close", "persistence_close", "lower_close", "upper_close"],
    groupby=["forecast_kind"],
    time_range=LAST_7_DAYS,
)
C_ERRORS = timeseries(
    "Daily MAPE: model vs persistence (%)",
    FORECASTS,
    "echarts_timeseries_line",
    "target_open_time",
    ["model_mape", "persistence_mape"],
    groupby=["forecast_kind"],
    grain="P1D",
)
C_SCORES = table(
    "Model vs persistence per coin",
    FORECASTS,
    groupby=["symbol", "forecast_kind"],
    metrics=[
        "scored_hours",
        "model_mae",
        "persistence_mae",
        "mae_ratio",
        "model_rmse",
        "persistence_rmse",
        "model_mape",
        "persistence_mape",
        "interval_coverage",
    ],
    order=[("scored_hours", False)],
    time_col="target_open_time",
)
C_MODELS = table(
    "Model in use per coin",
    MODEL_IN_USE,
    columns=[
        "symbol",
        "model_version",
        "served_reason",
        "architecture",
        "status",
        "last_forecast_hour",
        "validation_rmse",
        "validation_persistence_rmse",
    ],
    order=[("symbol", True)],
)
# Pipeline health
C_FRESHNESS = table(
    "Freshness: newest candle per coin",
    FRESHNESS,
    columns=["symbol", "interval", "newest_candle", "minutes_behind"],
    order=[("minutes_behind", False)],
    extra={
        "conditional_formatting": [
            {
                "colorScheme": "#EFA1AA",
                "column": "minutes_behind",
                "operator": ">",
                "targetValue": 30,
            },
            {
                "colorScheme": "#ACE1C4",
                "column": "minutes_behind",
                "operator": "<=",
                "targetValue": 30,
            },
        ]
    },
)
C_HEALED = timeseries(
    "Candles healed over REST per day",
    HEALED_GAPS,
    "echarts_timeseries_bar",
    "open_time",
    ["healed"],
    groupby=["symbol"],
    grain="P1D",
    extra={"stack": "Stack"},
)
C_QUARANTINE = category_bar(
    "Quarantined rows by reason",
    QUARANTINE,
    "reason",
    "rows",
    groupby=["source"],
    time_col="quarantined_at",
)
C_RUNS = table(
    "Latest runs per pipeline",
    PIPELINE_RUNS,
    columns=[
        "pipeline",
        "task",
        "status",
        "started_at",
        "finished_at",
        "seconds",
        "rows_in",
        "rows_out",
        "rows_quarantined",
        "run_id",
    ],
    order=[("started_at", False)],
    time_col="started_at",
)
C_DQ = table(
    "Data-quality checks (latest result, last 2 days)",
    DQ_LATEST,
    columns=["check_name", "symbol", "passed", "observed", "expected", "checked_at"],
    order=[("passed", True), ("check_name", True)],
)
