"""spark-submit entry of the candle ETL: the snapshots listed in a manifest -> warehouse and lake.

    spark-submit --py-files cryptoflow.zip --jars /usr/share/java/postgresql.jar \
        spark_jobs/etl_candles.py --manifest <uri> --run-id <id>

The DAG spark_etl submits it through SparkSubmitOperator. Everything else (warehouse DSN, lake URI,
Spark master, symbols) comes from the CRYPTOFLOW_* settings in the environment, so the command line
carries no password. The work itself is cryptoflow.etl.job.run (also what the tests call in-process).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--manifest", required=True, help="URI of the file listing the snapshot URIs, one a line"
    )
    parser.add_argument(
        "--run-id", required=True, help="Airflow run id (bookkeeping, staging names, quarantine)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    from cryptoflow.etl import job, plan
    from cryptoflow.spark import local_session

    uris = plan.read_manifest(args.manifest)
    spark = local_session("cryptoflow-spark-etl")
    try:
        result = job.run(spark, uris, args.run_id)
    finally:
        spark.stop()
    print(json.dumps(result.as_dict(), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
