"""Airflow hook for the cryptoflow warehouse: the postgres provider's PostgresHook on `cryptoflow_warehouse`.

Every DAG task reaches PostgreSQL through this hook, so an operator who edits the connection (in
the UI, a secrets backend, or AIRFLOW_CONN_CRYPTOFLOW_WAREHOUSE) moves the tasks with it, the
spark-submit ETL included (its job is handed the connection's DSN). The local stack defines the
connection from the same settings the CLI reads outside Airflow (cryptoflow_stack.airflow), and
docker-compose.yaml defines it for the distributed stack; a missing one fails the task by name.
"""

from __future__ import annotations

import psycopg
from airflow.providers.postgres.hooks.postgres import PostgresHook
from psycopg.conninfo import make_conninfo


class WarehouseHook(PostgresHook):
    default_conn_name = "cryptoflow_warehouse"
    hook_name = "cryptoflow warehouse"

    def connect(self) -> psycopg.Connection:
        """A psycopg 3 connection (the driver cryptoflow.warehouse is written for); close it with `with`."""
        conn = self.get_conn()  # the provider's own path: IAM tokens, extras, options
        if not isinstance(conn, psycopg.Connection):  # psycopg2 would come with SQLAlchemy 1.x
            conn.close()
            raise RuntimeError("the warehouse code needs psycopg 3: PostgresHook returned "
                               f"{type(conn).__module__}.{type(conn).__name__} (is SQLAlchemy 2 installed?)")
        return conn

    def dsn(self) -> str:
        """The connection as a libpq conninfo string: what a process outside Airflow (spark-submit) takes."""
        c = self.connection
        extra = {k: v for k, v in c.extra_dejson.items() if k not in self.ignored_extra_options}
        return make_conninfo(host=c.host, port=c.port, user=c.login, password=c.password,
                             dbname=self.database or c.schema, **extra)
