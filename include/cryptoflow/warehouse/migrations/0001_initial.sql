-- 0001: the warehouse as every later component expects it.
-- Schemas: market (candles and analytics), forecast (predictions, model registry index),
-- ops (quarantine, pipeline runs, data quality), staging (load tables of the pipelines).
-- Roles: cf_writer writes through the pipelines; cf_reader (dashboards) can only read.
-- Passwords are not set here: setup generates them and runs ALTER ROLE ... PASSWORD.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cf_writer') THEN
        CREATE ROLE cf_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cf_reader') THEN
        CREATE ROLE cf_reader NOLOGIN;
    END IF;
END
$$;

CREATE SCHEMA market;
CREATE SCHEMA forecast;
CREATE SCHEMA ops;
CREATE SCHEMA staging;

-- Candles of every interval. 1m candles come from Binance; 1h candles are either Binance's own
-- (imported history) or rolled up from minutes, in which case minute_count tells how many of the
-- 60 minutes were there and is_complete is false when any was missing.
CREATE TABLE market.candles (
    symbol                  text        NOT NULL,
    interval                text        NOT NULL,
    open_time               timestamptz NOT NULL,
    close_time              timestamptz NOT NULL,
    open                    numeric     NOT NULL,
    high                    numeric     NOT NULL,
    low                     numeric     NOT NULL,
    close                   numeric     NOT NULL,
    base_volume             numeric     NOT NULL,
    quote_volume            numeric     NOT NULL,
    taker_buy_base_volume   numeric,
    taker_buy_quote_volume  numeric,
    trades                  bigint,
    minute_count            smallint,
    is_complete             boolean     NOT NULL DEFAULT true,
    source                  text        NOT NULL,
    ingested_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, interval, open_time),
    CONSTRAINT candles_ohlc_valid CHECK (
        low <= high AND low <= open AND open <= high AND low <= close AND close <= high AND low >= 0
    ),
    CONSTRAINT candles_volumes_non_negative CHECK (
        base_volume >= 0 AND quote_volume >= 0
        AND coalesce(taker_buy_base_volume, 0) >= 0 AND coalesce(taker_buy_quote_volume, 0) >= 0
        AND coalesce(trades, 0) >= 0
    ),
    CONSTRAINT candles_time_order CHECK (close_time > open_time)
);
-- Dashboards and freshness checks read "latest candles of a symbol/interval".
CREATE INDEX candles_interval_time ON market.candles (interval, open_time);

-- Rows that failed validation, kept whole with the reason: nothing is dropped silently.
CREATE TABLE ops.quarantine (
    id              bigserial   PRIMARY KEY,
    source          text        NOT NULL,   -- e.g. websocket, rest, cryptodatadownload:<file>, spark_etl
    reason          text        NOT NULL,   -- a stable reason code, e.g. high_below_low
    detail          text,                   -- human-readable specifics
    raw_record      text        NOT NULL,   -- the record exactly as received
    symbol          text,
    interval        text,
    open_time       timestamptz,
    run_id          text,
    quarantined_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quarantine_reason ON ops.quarantine (reason, quarantined_at);

-- One row per pipeline run (ingest, etl, forecast...).
CREATE TABLE ops.pipeline_runs (
    run_id           text        NOT NULL,
    pipeline         text        NOT NULL,   -- DAG id or CLI command
    task             text        NOT NULL DEFAULT '',
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    status           text        NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'success', 'failed', 'skipped')),
    rows_in          bigint,
    rows_out         bigint,
    rows_quarantined bigint,
    details          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (pipeline, task, run_id)
);
CREATE INDEX pipeline_runs_recent ON ops.pipeline_runs (pipeline, started_at DESC);

CREATE TABLE ops.data_quality_results (
    id          bigserial   PRIMARY KEY,
    run_id      text        NOT NULL,
    pipeline    text        NOT NULL,
    check_name  text        NOT NULL,
    symbol      text,
    passed      boolean     NOT NULL,
    observed    text,
    expected    text,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    checked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dq_recent ON ops.data_quality_results (check_name, checked_at DESC);

-- Candles fetched from REST because the stream missed them.
CREATE TABLE ops.healed_gaps (
    symbol      text        NOT NULL,
    interval    text        NOT NULL,
    open_time   timestamptz NOT NULL,
    run_id      text        NOT NULL,
    healed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, interval, open_time)
);

-- The registry's index; the model files and full metadata live in the model store.
CREATE TABLE forecast.model_versions (
    version          text        PRIMARY KEY,
    symbol           text,                   -- NULL for one model across coins
    architecture     text        NOT NULL,
    artifact_uri     text        NOT NULL,
    trained_at       timestamptz NOT NULL DEFAULT now(),
    train_start      timestamptz,
    train_end        timestamptz,
    hyperparameters  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    metrics          jsonb       NOT NULL DEFAULT '{}'::jsonb,   -- the model on its validation window
    baseline_metrics jsonb       NOT NULL DEFAULT '{}'::jsonb,   -- persistence etc. on the same hours
    code_version     text,
    status           text        NOT NULL DEFAULT 'candidate'
                     CHECK (status IN ('candidate', 'promoted', 'rejected', 'retired')),
    status_reason    text,
    promoted_at      timestamptz
);
CREATE INDEX model_versions_symbol ON forecast.model_versions (symbol, trained_at DESC);

-- One-hour-ahead forecasts, live (from the hourly DAG) or backtest (walk-forward replay).
-- The persistence forecast of the same hour is stored beside every prediction.
CREATE TABLE forecast.predictions (
    symbol               text        NOT NULL,
    interval             text        NOT NULL DEFAULT '1h',
    target_open_time     timestamptz NOT NULL,    -- the hour whose close is predicted
    kind                 text        NOT NULL DEFAULT 'live' CHECK (kind IN ('live', 'backtest')),
    model_version        text        NOT NULL,
    predicted_close      numeric     NOT NULL,
    lower_close          numeric,
    upper_close          numeric,
    persistence_close    numeric,                 -- last close known when predicting
    created_at           timestamptz NOT NULL DEFAULT now(),
    actual_close         numeric,                 -- filled when the hour has closed
    scored_at            timestamptz,
    PRIMARY KEY (symbol, interval, target_open_time, kind, model_version)
);
CREATE INDEX predictions_recent ON forecast.predictions (kind, target_open_time DESC);

-- Privileges. Writer: read/write data, create staging tables. Reader: SELECT only, read-only sessions.
GRANT USAGE ON SCHEMA market, forecast, ops, staging TO cf_writer, cf_reader;
GRANT CREATE ON SCHEMA staging TO cf_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA market, forecast, ops TO cf_writer;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA market, forecast, ops TO cf_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA market, forecast, ops TO cf_reader;
ALTER ROLE cf_reader SET default_transaction_read_only = on;
-- Tables added by later migrations (run by this same migrating role) get the same grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA market, forecast, ops GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO cf_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA market, forecast, ops GRANT USAGE, SELECT ON SEQUENCES TO cf_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA market, forecast, ops GRANT SELECT ON TABLES TO cf_reader;
-- Only the writer may create temporary tables (the reader must not write anything at all).
DO $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO cf_writer, cf_reader', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO cf_writer', current_database());
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
-- Health checks compare the applied migrations with the code.
GRANT SELECT ON public.schema_migrations TO cf_writer, cf_reader;
