"""The bundle's three dashboards (markets, forecasts, pipeline health): grid rows and native filters."""

from __future__ import annotations

from cryptoflow.superset.charts import (
    C_CANDLES,
    C_CORRELATION,
    C_DQ,
    C_ERRORS,
    C_FRESHNESS,
    C_HEALED,
    C_MODELS,
    C_PERIOD_RETURN,
    C_PRED_VS_ACTUAL,
    C_QUARANTINE,
    C_RETURNS,
    C_RUNS,
    C_SCORES,
    C_VOLATILITY,
    C_VOLUME,
    LAST_7_DAYS,
)
from cryptoflow.superset.datasets import CANDLES_1H, FORECASTS, FRESHNESS

# slug -> (title, rows of (chart or markdown, width of 12, height in grid units of 8 px), filters)
DASHBOARDS: dict[str, tuple[str, list[list[tuple[str, int, int]]], list[dict]]] = {}

MARKDOWN_PREFIX = "markdown:"


def coin_filter(
    ds: str, *, default: str | None = None, multi: bool = True, exclude: tuple[str, ...] = ()
) -> dict:
    """The coin filter; with a `default`, a value is required (charts that can't mix coins).

    `exclude`: charts that compare coins and so ignore it.
    """
    return {
        "name": "Coin",
        "filterType": "filter_select",
        "column": "symbol",
        "dataset": ds,
        "default": default,
        "exclude": exclude,
        "controlValues": {
            "enableEmptyFilter": default is not None,
            "defaultToFirstItem": False,
            "multiSelect": multi,
            "searchAllOptions": False,
            "inverseSelection": False,
        },
    }


def time_filter(default: str) -> dict:
    return {"name": "Time range", "filterType": "filter_time", "default": default}


MARKET_NOTE = MARKDOWN_PREFIX + (
    "**Candles** are hourly (Binance's own or rolled up from minutes), UTC. The candlestick shows the first "
    "coin of the *Coin* filter (BTCUSDT when none) over the *Time range*, in at most 120 candles: a longer range "
    "merges hours (first open, highest high, lowest low, last close). Green: close >= open."
)
FORECAST_NOTE = MARKDOWN_PREFIX + (
    "One-hour-ahead forecasts of the close, beside the **persistence** forecast (next close = last close) "
    "on the same hours: *live* (the hourly DAG) and *backtest (walk-forward)* (the same steps replayed over the "
    "stored history), always as separate series and rows. Only complete hours are scored (an hour still missing "
    "minutes shows the forecast, no actual). MAE ratio below 1 means the model beat persistence. Every forecast, "
    "persistence included, carries a 90 % interval calibrated on its own errors over the two weeks before "
    "(conformal, scaled by recent volatility); the table counts its coverage per coin (share of scored hours "
    "inside it, target 88-92 %). The two tables show every coin, whatever the *Coin* filter."
)
HEALTH_NOTE = MARKDOWN_PREFIX + (
    "From the warehouse's own records: `ops.pipeline_runs`, `ops.quarantine`, `ops.healed_gaps`, "
    "`ops.data_quality_results`. Freshness is `now()` minus the close of the newest candle (red above 30 min)."
)

DASHBOARDS["cryptoflow-markets"] = (
    "Markets",
    [
        [(C_CANDLES, 9, 62), (MARKET_NOTE, 3, 62)],
        [(C_VOLUME, 12, 50)],
        [(C_RETURNS, 6, 50), (C_VOLATILITY, 6, 50)],
        [(C_PERIOD_RETURN, 4, 60), (C_CORRELATION, 8, 60)],
    ],
    [coin_filter(CANDLES_1H), time_filter(LAST_7_DAYS)],
)
DASHBOARDS["cryptoflow-forecasts"] = (
    "Forecasts",
    [
        [(C_PRED_VS_ACTUAL, 9, 60), (FORECAST_NOTE, 3, 60)],
        [(C_ERRORS, 12, 45)],
        [(C_SCORES, 12, 36)],
        [(C_MODELS, 12, 36)],
    ],
    [
        coin_filter(FORECASTS, default="BTCUSDT", multi=False, exclude=(C_SCORES, C_MODELS)),
        time_filter(LAST_7_DAYS),
    ],
)
DASHBOARDS["cryptoflow-pipeline-health"] = (
    "Pipeline health",
    [
        [(C_FRESHNESS, 6, 60), (C_QUARANTINE, 6, 60)],
        [(C_HEALED, 6, 50), (HEALTH_NOTE, 6, 50)],
        [(C_RUNS, 12, 50)],
        [(C_DQ, 12, 50)],
    ],
    [coin_filter(FRESHNESS)],
)
