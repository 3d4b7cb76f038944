"""Airflow hooks of cryptoflow: Binance market data and the warehouse.

BinanceHook: the REST klines client and the stream settings. Base URLs, symbols and interval come
from cryptoflow.settings (CRYPTOFLOW_BINANCE_MODE=live|replay picks Binance or the local replay
server). An Airflow connection `binance_default` (or the id given), if it exists, overrides the
URLs, so an operator can point a deployment elsewhere without touching the environment:
- `host` (with `schema`/`port` if given), e.g. `https://api.binance.com`, or extra `rest_url`: REST base URL;
- extra `ws_url`: websocket base URL;
- extra `weight_budget`, `weight_margin`: REST weight budget (e.g. for an IP shared with other jobs).
A missing connection is the normal case and not an error.

WarehouseHook: the postgres provider's PostgresHook on `cryptoflow_warehouse`. Every DAG task
reaches PostgreSQL through it, so an operator who edits the connection (in the UI, a secrets
backend, or AIRFLOW_CONN_CRYPTOFLOW_WAREHOUSE) moves the tasks with it, the spark-submit ETL
included (its job is handed the connection's DSN). The local stack defines the connection from the
same settings the CLI reads outside Airflow (cryptoflow_stack.airflow), and docker-compose.yaml
defines it for the distributed stack; a missing one fails the task by name.
"""

from __future__ import annotations

import json

import psycopg
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk.bases.hook import BaseHook
from psycopg.conninfo import make_conninfo

from cryptoflow import settings as settings_mod


def market_history(settings=None, **client_options):
    """The configured source's history client inside Airflow: Binance's through BinanceHook (so the
    binance_default connection applies; `client_options` go to its REST client), any other
    source's (files) its own. Close it when done."""
    from cryptoflow import sources

    cfg = settings or settings_mod.load()
    source = sources.active(cfg)
    if source.name == "binance":
        return BinanceHook(settings=cfg, **client_options).get_conn()
    return source.history(cfg)


class BinanceHook(BaseHook):
    conn_name_attr = "binance_conn_id"
    default_conn_name = "binance_default"
    conn_type = "http"
    hook_name = "Binance market data"

    def __init__(self, binance_conn_id: str = default_conn_name, settings=None, **client_options):
        super().__init__()
        self.binance_conn_id = binance_conn_id
        self.settings = settings or settings_mod.load()
        self.client_options = client_options
        self._resolved: dict | None = None
        self._client = None

    def _overrides(self) -> dict:
        """URL and budget overrides from the Airflow connection, {} when there is none."""
        if self._resolved is not None:
            return self._resolved
        out: dict = {}
        try:
            conn = self.get_connection(self.binance_conn_id)
        except Exception as exc:  # not defined (the usual case), or no metadata DB outside a task
            self.log.debug(
                "no Airflow connection %r (%s): using cryptoflow settings",
                self.binance_conn_id,
                exc,
            )
            conn = None
        if conn is not None:
            extra = (
                conn.extra_dejson
                if hasattr(conn, "extra_dejson")
                else json.loads(conn.extra or "{}")
            )
            if conn.host:
                host = (
                    conn.host if "://" in conn.host else f"{conn.schema or 'https'}://{conn.host}"
                )
                out["rest_url"] = f"{host}:{conn.port}" if conn.port else host
            for key in ("rest_url", "ws_url"):
                if extra.get(key):
                    out[key] = str(extra[key])
            for key in ("weight_budget", "weight_margin"):
                if extra.get(key) is not None:
                    out[key] = int(extra[key])
        self._resolved = out
        return out

    @property
    def rest_url(self) -> str:
        return self._overrides().get("rest_url", self.settings.binance_rest_url).rstrip("/")

    @property
    def ws_url(self) -> str:
        return self._overrides().get("ws_url", self.settings.binance_ws_url).rstrip("/")

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.settings.symbols

    @property
    def interval(self) -> str:
        return self.settings.interval

    def get_conn(self):
        """The REST client (cryptoflow.sources.binance.rest.BinanceRestClient), created once per hook."""
        if self._client is None:
            from cryptoflow import sources

            options = {
                k: v
                for k, v in self._overrides().items()
                if k in ("weight_budget", "weight_margin")
            }
            options.update(self.client_options)
            self._client = sources.get("binance").history(
                self.settings, rest_url=self.rest_url, **options
            )
        return self._client

    def fetch_klines(
        self, symbol: str, start_ms: int, end_ms: int, interval: str | None = None, **kwargs
    ):
        """Closed candles of `symbol` with open time in [start_ms, end_ms] (see BinanceRestClient.fetch_klines)."""
        return self.get_conn().fetch_klines(
            symbol, interval or self.interval, start_ms, end_ms, **kwargs
        )

    def tick_sizes(self, symbols=None) -> dict:
        """{symbol: Decimal tickSize} from exchangeInfo, for `symbols` (default: the configured ones;
        see BinanceRestClient.tick_sizes)."""
        return self.get_conn().tick_sizes(self.symbols if symbols is None else symbols)

    def stream_config(self) -> dict:
        """What a collector needs to open the stream: ws_url, symbols, interval, the combined URL."""
        from cryptoflow.sources.binance.stream import combined_url, stream_names

        return {
            "ws_url": self.ws_url,
            "symbols": list(self.symbols),
            "interval": self.interval,
            "url": combined_url(self.ws_url, stream_names(self.symbols, self.interval)),
        }

    def test_connection(self) -> tuple[bool, str]:
        """Airflow UI's "Test": one cheap request (weight 1) to the REST endpoint."""
        try:
            t = self.get_conn().server_time()
            return True, f"{self.rest_url} answered, server time {t}"
        except Exception as exc:
            return False, f"{self.rest_url}: {exc}"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> BinanceHook:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WarehouseHook(PostgresHook):
    default_conn_name = "cryptoflow_warehouse"
    hook_name = "cryptoflow warehouse"

    def connect(self) -> psycopg.Connection:
        """A psycopg 3 connection (the driver cryptoflow.warehouse is written for); close it with `with`."""
        conn = self.get_conn()  # the provider's own path: IAM tokens, extras, options
        if not isinstance(conn, psycopg.Connection):  # psycopg2 would come with SQLAlchemy 1.x
            conn.close()
            raise RuntimeError(
                "the warehouse code needs psycopg 3: PostgresHook returned "
                f"{type(conn).__module__}.{type(conn).__name__} (is SQLAlchemy 2 installed?)"
            )
        return conn

    def dsn(self) -> str:
        """The connection as a libpq conninfo string: what a process outside Airflow (spark-submit) takes."""
        c = self.connection
        extra = {k: v for k, v in c.extra_dejson.items() if k not in self.ignored_extra_options}
        return make_conninfo(
            host=c.host,
            port=c.port,
            user=c.login,
            password=c.password,
            dbname=self.database or c.schema,
            **extra,
        )
