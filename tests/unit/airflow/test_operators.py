"""The ETL submit operator hands the job the warehouse DSN through spark-submit's own environment."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.quick

PASSWORD = "s3cret"


@pytest.fixture
def operator(monkeypatch):
    from cryptoflow.airflow.operators import CandleEtlSubmitOperator

    monkeypatch.setenv(
        "AIRFLOW_CONN_CRYPTOFLOW_WAREHOUSE",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": "db.test",
                "port": 5432,
                "login": "cf_writer",
                "password": PASSWORD,
                "schema": "cryptoflow",
            }
        ),
    )
    monkeypatch.delenv("CRYPTOFLOW_WAREHOUSE_DSN", raising=False)
    return CandleEtlSubmitOperator(
        task_id="etl_candles",
        application="job.py",
        conn_id="spark_default",
        env_vars={"TZ": "UTC"},
        application_args=["--run-id", "r1"],
    )


def _spark(monkeypatch, host: str, **extra):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_DEFAULT",
        json.dumps({"conn_type": "spark", "host": host, "extra": extra}),
    )


def test_dsn_reaches_spark_submit_alone(operator, monkeypatch):
    _spark(monkeypatch, "local[*]")
    hook = operator._get_hook()
    assert "db.test" in hook._env_vars["CRYPTOFLOW_WAREHOUSE_DSN"] and hook._env_vars["TZ"] == "UTC"
    cmd = " ".join(hook._build_spark_submit_command("job.py"))
    assert PASSWORD not in cmd and "db.test" not in cmd
    # Neither the task process's environment nor the templated field the UI shows holds it.
    assert "CRYPTOFLOW_WAREHOUSE_DSN" not in os.environ
    assert operator.env_vars == {"TZ": "UTC"}


# k8s:// too, but the provider's hook needs the kubernetes client installed to be built for it.
@pytest.mark.parametrize(
    "host, extra", [("yarn", {}), ("spark://spark.test:7077", {"deploy-mode": "cluster"})]
)
def test_modes_that_would_put_the_dsn_on_the_command_line_are_refused(
    operator, monkeypatch, host, extra
):
    from airflow.sdk.exceptions import AirflowFailException

    _spark(monkeypatch, host, **extra)
    with pytest.raises(AirflowFailException, match="client mode"):
        operator._get_hook()
    assert operator.env_vars == {"TZ": "UTC"}
