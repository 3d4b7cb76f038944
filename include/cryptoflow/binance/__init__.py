"""Both sides of the Binance market-data protocol, as far as cryptoflow uses it.

- `stream`: the kline websocket client (combined streams, pings, reconnects, rate limits).
- `rest`: the REST klines client (pagination, weight accounting, 429/418/5xx handling).
- `collector`: the collector process: raw messages appended durably to segment files, and the
  reader the 10-minute ingest DAG uses to read a window back.
- `replay`: a local server speaking the same protocol from real historical candles, with fault
  injection, so everything above runs (and is tested) without Binance.

Parsing and validation of what arrives is not done here: that is cryptoflow.candles, on the
consumer side, so a malformed message is still recorded exactly as received.
"""
