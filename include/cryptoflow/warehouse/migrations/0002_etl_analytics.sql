-- 0002: what the Spark ETL writes beside market.candles (issue 4).
-- Analytics are recomputed by the ETL for the hours/days its data touched and replaced in the same
-- transaction as the candles, so a dashboard never mixes the analytics of two different loads.

-- Per symbol and hour (from 1h candles, Binance's own or rolled up from minutes).
CREATE TABLE market.hourly_metrics (
    symbol          text        NOT NULL,
    open_time       timestamptz NOT NULL,
    close           numeric     NOT NULL,
    return_pct      double precision,          -- vs the previous hour; NULL across a gap
    log_return      double precision,
    volatility_24h  double precision,          -- stddev of hourly log returns, trailing 24 h
    ma_24h          double precision,          -- mean close, trailing 24 h
    ma_168h         double precision,          -- mean close, trailing 7 days
    quote_volume    numeric     NOT NULL,
    is_complete     boolean     NOT NULL,      -- false when the hour was rolled up from missing minutes
    PRIMARY KEY (symbol, open_time)
);
CREATE INDEX hourly_metrics_time ON market.hourly_metrics (open_time);

-- Volume by price level: 20 equal buckets between the day's low and high, per candle interval.
CREATE TABLE market.volume_profile (
    symbol          text        NOT NULL,
    interval        text        NOT NULL,
    day             date        NOT NULL,
    bucket          smallint    NOT NULL CHECK (bucket BETWEEN 0 AND 19),
    price_low       double precision NOT NULL,
    price_high      double precision NOT NULL,
    base_volume     numeric     NOT NULL,
    quote_volume    numeric     NOT NULL,
    candles         integer     NOT NULL,
    PRIMARY KEY (symbol, interval, day, bucket)
);

-- Pearson correlation of hourly log returns between two coins over the days ending on `day`.
CREATE TABLE market.return_correlation (
    day             date        NOT NULL,
    symbol_a        text        NOT NULL,
    symbol_b        text        NOT NULL,
    window_days     smallint    NOT NULL,
    correlation     double precision,          -- NULL when too few common hours or no variance
    hours           integer     NOT NULL,      -- common hours with a return for both coins
    PRIMARY KEY (day, symbol_a, symbol_b, window_days),
    CHECK (symbol_a < symbol_b)
);

-- Gaps somebody has explained (an exchange outage, a delisting): the ETL's gap check accepts
-- missing candles inside these ranges. [gap_start, gap_end) on open_time.
CREATE TABLE ops.explained_gaps (
    symbol      text        NOT NULL,
    interval    text        NOT NULL,
    gap_start   timestamptz NOT NULL,
    gap_end     timestamptz NOT NULL,
    reason      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, interval, gap_start),
    CHECK (gap_end > gap_start)
);
