"""The three dashboards (markets, forecasts, pipeline health) as one Superset asset bundle.

This module and the three it assembles are the source: datasets.py (each dataset's query is a file
of sql/), charts.py and dashboards.py define the objects, this module turns them into the YAML
documents of include/superset/assets/, the bundle that Superset imports (`python -m
cryptoflow.superset.bundle` rewrites it; a unit test fails when they differ). Every name of those
modules that other code uses is importable from here too.
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

# Re-exported: the definitions live in these modules, and callers import them from here.
from cryptoflow.superset.charts import (  # noqa: F401
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
    CANDLESTICK_TEMPLATE,
    CHARTS,
    LAST_7_DAYS,
    candlestick,
    category_bar,
    pivot,
    table,
    timeseries,
)
from cryptoflow.superset.dashboards import (  # noqa: F401
    DASHBOARDS,
    FORECAST_NOTE,
    HEALTH_NOTE,
    MARKDOWN_PREFIX,
    MARKET_NOTE,
    coin_filter,
    time_filter,
)
from cryptoflow.superset.datasets import (  # noqa: F401
    BOOL,
    CANDLES_1H,
    CANDLESTICK,
    CORRELATION,
    DATASETS,
    DATE,
    DOWN_COLOUR,
    DQ_LATEST,
    FLOAT,
    FORECASTS,
    FRESHNESS,
    HEALED_GAPS,
    HOURLY_METRICS,
    INT,
    MODEL_IN_USE,
    PIPELINE_RUNS,
    QUARANTINE,
    SQL_DIR,
    TEXT,
    TS,
    UP_COLOUR,
    coins_by_skip_scan,
    dataset,
)

NAMESPACE = uuid.UUID("6f2b9f4e-6b8c-5d0e-9a4f-2c1d7e3b5a90")  # cryptoflow's Superset objects
DATABASE_NAME = "cryptoflow warehouse"  # local/superset.py registers the warehouse under this name
DATABASE_FILE = "databases/cryptoflow_warehouse.yaml"
# Placeholder written to git; the importer replaces it with CRYPTOFLOW_WAREHOUSE_READER_DSN (the
# password travels in the API call's `passwords` field, never in a file).
PLACEHOLDER_URI = "postgresql+psycopg2://cf_reader:XXXXXXXXXX@127.0.0.1:5433/cryptoflow"
VERSION = "1.0.0"
ASSETS_DIR = Path("include") / "superset" / "assets"  # relative to CRYPTOFLOW_HOME


def uid(kind: str, name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind}/{name}"))


DATABASE_UUID = uid("database", "warehouse")


# --- YAML documents ------------------------------------------------------------------------------


def database_doc() -> dict:
    return {
        "database_name": DATABASE_NAME,
        "sqlalchemy_uri": PLACEHOLDER_URI,
        "cache_timeout": None,
        "expose_in_sqllab": True,
        "allow_run_async": False,
        "allow_ctas": False,
        "allow_cvas": False,
        "allow_dml": False,
        "allow_csv_upload": False,
        "impersonate_user": False,
        "extra": {
            "allows_virtual_table_explore": True,
            "metadata_params": {},
            "engine_params": {},
            "schemas_allowed_for_file_upload": [],
        },
        "uuid": DATABASE_UUID,
        "version": VERSION,
    }


def dataset_doc(name: str) -> dict:
    sql, columns, main_dttm, metrics = DATASETS[name]
    return {
        "table_name": name,
        "main_dttm_col": main_dttm,
        "description": None,
        "default_endpoint": None,
        "offset": 0,
        "cache_timeout": None,
        "schema": None,
        "catalog": None,
        "sql": sql,
        "params": None,
        "template_params": None,
        "filter_select_enabled": True,
        "fetch_values_predicate": None,
        "extra": None,
        "normalize_columns": False,
        "always_filter_main_dttm": False,
        "uuid": uid("dataset", name),
        "metrics": [
            {
                "metric_name": m,
                "verbose_name": label,
                "metric_type": None,
                "expression": expr,
                "description": None,
                "d3format": None,
                "extra": None,
                "warning_text": None,
            }
            for m, (expr, label) in metrics.items()
        ],
        "columns": [
            {
                "column_name": c,
                "verbose_name": None,
                "is_dttm": t == TS,
                "is_active": True,
                "type": t,
                "advanced_data_type": None,
                "groupby": True,
                "filterable": True,
                "expression": None,
                "description": None,
                "python_date_format": None,
                "extra": None,
            }
            for c, t in columns
        ],
        "version": VERSION,
        "database_uuid": DATABASE_UUID,
    }


def chart_doc(name: str) -> dict:
    ds, viz, params, query = CHARTS[name]
    form_data = {**params, "datasource": "0__table"}
    context = {
        "datasource": {"id": 0, "type": "table"},
        "force": False,
        "queries": [query],
        "form_data": form_data,
        "result_format": "json",
        "result_type": "full",
    }
    return {
        "slice_name": name,
        "description": None,
        "certified_by": None,
        "certification_details": None,
        "viz_type": viz,
        "params": form_data,
        "query_context": json.dumps(context, indent=1),
        "cache_timeout": None,
        "uuid": uid("chart", name),
        "version": VERSION,
        "dataset_uuid": uid("dataset", ds),
    }


def placeholder_id(chart: str) -> int:
    """The chart id written in the bundle; the importer maps it to the real one through the uuid."""
    return 1 + list(CHARTS).index(chart)


def dashboard_doc(slug: str) -> dict:
    title, rows, filters = DASHBOARDS[slug]
    return {
        "dashboard_title": title,
        "description": None,
        "css": "",
        "slug": slug,
        "certified_by": None,
        "certification_details": None,
        "published": True,
        "uuid": uid("dashboard", slug),
        "position": _dashboard_position(title, rows),
        "metadata": {
            "native_filter_configuration": _native_filters(slug, filters),
            "color_scheme": "supersetColors",
            "refresh_frequency": 0,
            "expanded_slices": {},
            "label_colors": {},
            "shared_label_colors": [],
            "timed_refresh_immune_slices": [],
            "cross_filters_enabled": False,
            "default_filters": "{}",
            "chart_configuration": {},
            "global_chart_configuration": {
                "scope": {"rootPath": ["ROOT_ID"], "excluded": []},
                "chartsInScope": [],
            },
        },
        "version": VERSION,
    }


def _dashboard_position(title: str, rows) -> dict:
    """The dashboard's layout: a header, then each row's charts and markdown blocks in order."""
    position: dict = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
        "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": title}},
    }
    for r, row in enumerate(rows):
        row_id = f"ROW-{r}"
        position["GRID_ID"]["children"].append(row_id)
        position[row_id] = {
            "type": "ROW",
            "id": row_id,
            "children": [],
            "parents": ["ROOT_ID", "GRID_ID"],
            "meta": {"background": "BACKGROUND_TRANSPARENT"},
        }
        for c, (item, width, height) in enumerate(row):
            parents = ["ROOT_ID", "GRID_ID", row_id]
            if item.startswith(MARKDOWN_PREFIX):
                item_id = f"MARKDOWN-{r}-{c}"
                position[item_id] = {
                    "type": "MARKDOWN",
                    "id": item_id,
                    "children": [],
                    "parents": parents,
                    "meta": {
                        "code": item[len(MARKDOWN_PREFIX) :],
                        "width": width,
                        "height": height,
                    },
                }
            else:
                item_id = f"CHART-{r}-{c}"
                # chartId is a placeholder the importer maps to the real id through the uuid.
                position[item_id] = {
                    "type": "CHART",
                    "id": item_id,
                    "children": [],
                    "parents": parents,
                    "meta": {
                        "chartId": placeholder_id(item),
                        "uuid": uid("chart", item),
                        "sliceName": item,
                        "width": width,
                        "height": height,
                    },
                }
            position[row_id]["children"].append(item_id)
    return position


def _native_filters(slug: str, filters) -> list[dict]:
    """The dashboard's native filters (time range, or a column's values with its default)."""
    native = []
    for f in filters:
        fid = "NATIVE_FILTER-" + uid("filter", f"{slug}/{f['name']}")[:13]
        if f["filterType"] == "filter_time":
            default = {
                "extraFormData": {"time_range": f["default"]},
                "filterState": {"value": f["default"]},
                "ownState": {},
            }
            targets: list[dict] = [{}]
            control = {}
        else:
            default = {"extraFormData": {}, "filterState": {}, "ownState": {}}
            if f["default"]:
                default = {
                    "extraFormData": {
                        "filters": [{"col": f["column"], "op": "IN", "val": [f["default"]]}]
                    },
                    "filterState": {"value": [f["default"]]},
                    "ownState": {},
                }
            targets = [
                {"column": {"name": f["column"]}, "datasetUuid": uid("dataset", f["dataset"])}
            ]
            control = f["controlValues"]
        native.append(
            {
                "id": fid,
                "name": f["name"],
                "filterType": f["filterType"],
                "type": "NATIVE_FILTER",
                "targets": targets,
                "controlValues": control,
                "defaultDataMask": default,
                "cascadeParentIds": [],
                "scope": {
                    "rootPath": ["ROOT_ID"],
                    "excluded": [placeholder_id(c) for c in f.get("exclude", ())],
                },
                "description": "",
            }
        )
    return native


def file_name(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_") + ".yaml"


def documents() -> dict[str, dict]:
    """Bundle path (under the root folder) -> YAML document."""
    docs = {
        "metadata.yaml": {
            "version": VERSION,
            "type": "assets",
            "timestamp": "2026-11-21T00:00:00+00:00",
        },
        DATABASE_FILE: database_doc(),
    }
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
