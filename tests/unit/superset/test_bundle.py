"""The dashboards bundle: files in git match bundle.py, links resolve, no secret travels in a file."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import yaml

from cryptoflow.superset import bundle, importer

pytestmark = pytest.mark.quick

ASSETS = Path(__file__).resolve().parents[3] / bundle.ASSETS_DIR


def test_files_in_git_are_what_bundle_py_generates():
    docs = bundle.documents()
    on_disk = {str(p.relative_to(ASSETS)) for p in ASSETS.rglob("*.yaml")}
    assert on_disk == set(docs), "stale bundle: run python -m cryptoflow.superset.bundle"
    for rel, doc in docs.items():
        assert (ASSETS / rel).read_text() == bundle.render(doc), (
            f"{rel} is stale: run python -m cryptoflow.superset.bundle"
        )


def test_uuids_are_stable_unique_and_links_resolve():
    docs = bundle.documents()
    assert bundle.uid("chart", "x") == bundle.uid("chart", "x") != bundle.uid("dataset", "x")
    uuids = [d["uuid"] for rel, d in docs.items() if rel != "metadata.yaml"]
    assert len(uuids) == len(set(uuids))
    datasets = {d["uuid"] for rel, d in docs.items() if rel.startswith("datasets/")}
    charts = {d["uuid"] for rel, d in docs.items() if rel.startswith("charts/")}
    for rel, d in docs.items():
        if rel.startswith("datasets/"):
            assert d["database_uuid"] == bundle.DATABASE_UUID
        if rel.startswith("charts/"):
            assert d["dataset_uuid"] in datasets, rel
            context = json.loads(d["query_context"])  # embedded, so /api/v1/chart/<id>/data/ works
            assert context["queries"] and context["form_data"]["viz_type"] == d["viz_type"]
        if rel.startswith("dashboards/"):
            used = {
                v["meta"]["uuid"]
                for v in d["position"].values()
                if isinstance(v, dict) and v.get("type") == "CHART"
            }
            assert used <= charts
            for f in d["metadata"]["native_filter_configuration"]:
                assert all(
                    t.get("datasetUuid", next(iter(datasets))) in datasets for t in f["targets"]
                )
    placed = {
        v["meta"]["uuid"]
        for rel, d in docs.items()
        if rel.startswith("dashboards/")
        for v in d["position"].values()
        if isinstance(v, dict) and v.get("type") == "CHART"
    }
    assert placed == charts  # every chart is on a dashboard


def test_no_password_in_the_files_and_the_import_fills_the_reader_dsn():
    db = yaml.safe_load((ASSETS / bundle.DATABASE_FILE).read_text())
    assert (
        db["sqlalchemy_uri"] == bundle.PLACEHOLDER_URI
        and "password" not in db
        and not db["allow_dml"]
    )
    masked, password = importer.superset_uri(
        "postgresql://cf_reader:s%40cret@db.example:5432/cryptoflow"
    )
    assert (
        masked == "postgresql+psycopg2://cf_reader:XXXXXXXXXX@db.example:5432/cryptoflow"
        and password == "s@cret"
    )
    files = importer.read_assets(ASSETS)
    payload = importer.prepare(files, masked, "00000000-0000-0000-0000-000000000001")
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        names = zf.namelist()
        assert all(n.startswith(importer.ROOT + "/") for n in names)
        db = yaml.safe_load(zf.read(f"{importer.ROOT}/{bundle.DATABASE_FILE}"))
        assert (
            db["sqlalchemy_uri"] == masked and db["uuid"] == "00000000-0000-0000-0000-000000000001"
        )
        ds = [yaml.safe_load(zf.read(n)) for n in names if "/datasets/" in n]
        assert ds and all(d["database_uuid"] == db["uuid"] for d in ds)
        assert not any(b"s@cret" in zf.read(n) for n in names)


def test_candlestick_template_is_one_line_of_allowed_svg():
    import re

    assert "\n" not in bundle.CANDLESTICK_TEMPLATE
    tags = set(re.findall(r"<([a-z]+)", bundle.CANDLESTICK_TEMPLATE))
    assert tags <= {"svg", "g", "rect", "line", "text", "title"}


def test_forecast_charts_show_both_kinds_apart_and_score_only_complete_hours():
    sql, columns, _, metrics = bundle.DATASETS[bundle.FORECASTS]
    flat = " ".join(sql.split())
    # Both kinds, labelled; the actual comes from the target hour's candle only when it is complete.
    assert "kind = 'live'" not in flat and "'backtest (walk-forward)'" in flat
    assert (
        "LEFT JOIN market.candles c ON c.symbol = p.symbol AND c.interval = '1h'"
        " AND c.open_time = p.target_open_time AND c.is_complete"
    ) in flat
    assert "c.close::float8 AS actual_close" in flat and "p.actual_close" not in flat
    assert {"forecast_kind", "in_interval"} <= {
        c for c, _ in columns
    } and "interval_coverage" in metrics
    # Every chart of the dataset keeps the kinds apart (never one average of live and backtest).
    charts = [
        (name, params)
        for name, (ds, _, params, _) in bundle.CHARTS.items()
        if ds == bundle.FORECASTS
    ]
    assert {name for name, _ in charts} == {
        bundle.C_PRED_VS_ACTUAL,
        bundle.C_ERRORS,
        bundle.C_SCORES,
    }
    assert all("forecast_kind" in params["groupby"] for _, params in charts)
    assert "interval_coverage" in bundle.CHARTS[bundle.C_SCORES][2]["metrics"]
