"""forecast_hourly run for real with dag.test(): a fresh coin gets a model and a prediction, a stale
coin fails red with its reason (the other coin carries on), and the next run scores the earlier prediction."""

from datetime import datetime, timezone

import psycopg
import pytest

from tests.integration.test_forecast_training import load_into_warehouse, shared_candles

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_forecast_hourly_predicts_fails_stale_loudly_and_scores(
    airflow_db, use_warehouse, shared_data, tmp_path, monkeypatch
):
    btc = shared_candles(shared_data, "BTCUSDT")[-700:]  # ends 2021-08-31 23:00
    eth = shared_candles(shared_data, "ETHUSDT")[-700:-3]  # ends 20:00: stale for a run at 23:05
    load_into_warehouse(use_warehouse.writer_dsn, btc[:-1] + eth)  # BTC's last hour arrives later
    monkeypatch.setenv("CRYPTOFLOW_SYMBOLS", "BTCUSDT,ETHUSDT")
    monkeypatch.setenv("CRYPTOFLOW_MODEL_STORE_URI", f"file://{tmp_path}/models")
    monkeypatch.setenv("CRYPTOFLOW_FORECAST_TRAIN_HOURS", "500")
    monkeypatch.setenv("CRYPTOFLOW_FORECAST_EPOCHS", "2")

    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import PROJECT_ROOT

    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "forecast_hourly.py")).dags[
        "forecast_hourly"
    ]
    for t in dag.tasks:
        t.retries = 0
    # The run of the hour 22:00-23:00 (a manual run at 23:00 gets that data interval) predicts the
    # hour that opens at 23:00.
    run = dag.test(
        logical_date=datetime(2021, 8, 31, 23, tzinfo=timezone.utc), run_conf={"wait_minutes": 0}
    )
    assert run.data_interval_end == datetime(2021, 8, 31, 23, tzinfo=timezone.utc)
    assert run.state == "failed"  # ETH could not be forecast: red, never green and empty
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert (
        states[("wait_for_candles", -1)] == "success"
    )  # no wait asked for: it went on without ETH
    assert states[("per_symbol.write", 0)] == "success"
    assert states[("per_symbol.check_fresh", 1)] == "failed"
    assert states[("per_symbol.write", 1)] == "upstream_failed"

    with psycopg.connect(use_warehouse.writer_dsn) as conn:
        preds = conn.execute(
            "SELECT symbol, target_open_time, kind, model_version, predicted_close::float8,"
            " persistence_close::float8, lower_close IS NOT NULL, actual_close, served_reason"
            " FROM forecast.predictions"
        ).fetchall()
        versions = conn.execute(
            "SELECT symbol, status, metrics ? 'mase', baseline_metrics ? 'persistence'"
            " FROM forecast.model_versions"
        ).fetchall()
        checks = dict(
            conn.execute(
                "SELECT symbol, observed FROM ops.data_quality_results"
                " WHERE check_name = 'forecast_input_ready' AND NOT passed"
            ).fetchall()
        )
    assert len(preds) == 1
    symbol, target, kind, version, predicted, persistence, has_interval, actual, served_reason = (
        preds[0]
    )
    assert (symbol, target, kind, actual) == (
        "BTCUSDT",
        datetime(2021, 8, 31, 23, tzinfo=timezone.utc),
        "live",
        None,
    )
    assert persistence == float(btc[-2].close)
    assert abs(predicted / persistence - 1) < 0.05
    # promoted and served, or rejected and persistence served in the open: never a silent worse model
    assert len(versions) == 1 and versions[0][2:] == (True, True)
    assert has_interval  # conformal, from the served forecast's own recent errors, whichever serves
    if versions[0][1] == "promoted":
        assert version.startswith("BTCUSDT-lstm-") and served_reason == f"promoted model {version}"
    else:
        assert version == "persistence" and predicted == persistence
        # the label carries the rejection's reason: the evidence test it failed
        assert served_reason.startswith("persistence: no promoted model (last: BTCUSDT-lstm-")
        assert "beyond chance" in served_reason
    assert set(checks) == {"ETHUSDT"} and checks["ETHUSDT"].startswith("stale")

    # The last hour arrives; the next run scores the 23:00 prediction and predicts 00:00 (no retraining).
    load_into_warehouse(use_warehouse.writer_dsn, btc[-1:])
    monkeypatch.setenv("CRYPTOFLOW_SYMBOLS", "BTCUSDT")
    run = dag.test(
        logical_date=datetime(2021, 9, 1, 0, tzinfo=timezone.utc), run_conf={"wait_minutes": 0}
    )
    assert run.state == "success"
    with psycopg.connect(use_warehouse.writer_dsn) as conn:
        scored = conn.execute(
            "SELECT target_open_time, actual_close::float8 FROM forecast.predictions"
            " WHERE actual_close IS NOT NULL"
        ).fetchall()
        n_preds = conn.execute("SELECT count(*) FROM forecast.predictions").fetchone()[0]
        n_versions = conn.execute("SELECT count(*) FROM forecast.model_versions").fetchone()[0]
    assert scored == [(datetime(2021, 8, 31, 23, tzinfo=timezone.utc), float(btc[-1].close))]
    assert n_preds == 2 and n_versions == 1
