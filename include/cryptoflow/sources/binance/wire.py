"""Binance's wire formats read into neutral candles: the websocket kline message and the REST row.

Everything Binance-specific about what arrives lives here; the rest of cryptoflow sees `Candle`s
and `CandleFormatError`s (cryptoflow.candles), whatever the source.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

from cryptoflow.candles import (
    Candle,
    CandleFormatError,
    epoch_to_ms,
    parse_decimal,
    parse_int,
    parse_symbol,
)

try:  # msgspec (pinned with Airflow) decodes a kline message about twice as fast as json
    from msgspec.json import decode as _json_decode
except ImportError:  # pragma: no cover - same results, slower
    _json_decode = json.loads  # type: ignore[assignment]


def from_kline_payload(k: dict, source: str) -> Candle:
    """A Candle from the websocket kline object `k` (fields t,T,s,i,o,c,h,l,v,n,x,q,V,Q).

    Every websocket message goes through here, so well-formed payloads take a fast path with the
    checks batched; anything the fast path isn't sure of is re-read by the strict field-by-field
    parser, which accepts a superset and raises the precise CandleFormatError. (The fuzz tests
    check that both paths agree.)
    """
    try:
        o, h, l, c, v, q, tb, tq = k["o"], k["h"], k["l"], k["c"], k["v"], k["q"], k["V"], k["Q"]
        t, T, n, x, sym, iv = k["t"], k["T"], k["n"], k["x"], k["s"], k["i"]
        joined = o + h + l + c + v + q + tb + tq  # TypeError unless all are str
        # A plain (no exponent) number of at most 19 characters always fits decimal(38,18).
        if (
            type(t) is int
            and type(T) is int
            and type(n) is int
            and type(x) is bool
            and joined.isascii()
            and joined.isprintable()
            and " " not in joined
            and "_" not in joined
            and "e" not in joined
            and "E" not in joined
            and type(sym) is str
            and type(iv) is str
            and sym.isascii()
            and sym.isalnum()
            and iv.isascii()
            and iv.isalnum()
            and len(o) < 20
            and len(h) < 20
            and len(l) < 20
            and len(c) < 20
            and len(v) < 20
            and len(q) < 20
            and len(tb) < 20
            and len(tq) < 20
        ):
            do, dh, dl, dc = Decimal(o), Decimal(h), Decimal(l), Decimal(c)
            dv, dq, dtb, dtq = Decimal(v), Decimal(q), Decimal(tb), Decimal(tq)
            if (
                do.is_finite()
                and dh.is_finite()
                and dl.is_finite()
                and dc.is_finite()
                and dv.is_finite()
                and dq.is_finite()
                and dtb.is_finite()
                and dtq.is_finite()
            ):
                return Candle(sym, iv, t, T, do, dh, dl, dc, dv, dq, dtb, dtq, n, x, source)
    except (KeyError, TypeError, InvalidOperation):
        pass
    return _from_kline_payload_strict(k, source)


def from_stream_message(message: str | bytes, source: str) -> Candle:
    """A Candle from one websocket message: raw (`{"e":"kline",...,"k":{...}}`) or combined
    (`{"stream":"btcusdt@kline_1m","data":{...}}`). Non-kline events (e.g. serverShutdown,
    subscription replies) raise CandleFormatError("not_kline"): the caller decides what they mean.
    """
    try:
        msg = _json_decode(message)
    # Decode errors of json and msgspec are ValueErrors (so are Unicode errors); deep nesting recurses.
    except (ValueError, RecursionError) as exc:
        raise CandleFormatError("bad_json", f"{type(exc).__name__}: {str(exc)[:80]}") from None
    if isinstance(msg, dict) and "data" in msg and "stream" in msg:
        msg = msg["data"]
    if not isinstance(msg, dict) or msg.get("e") != "kline" or "k" not in msg:
        kind = msg.get("e") if isinstance(msg, dict) else type(msg).__name__
        raise CandleFormatError("not_kline", f"event {str(kind)[:40]!r} is not a kline")
    return from_kline_payload(msg["k"], source)


def _from_kline_payload_strict(k: dict, source: str) -> Candle:
    if not isinstance(k, dict):
        raise CandleFormatError(
            "bad_type", f"kline payload must be an object, got {type(k).__name__}"
        )
    try:
        closed = k["x"]
        if not isinstance(closed, bool):
            raise CandleFormatError("bad_type", f"x must be a boolean, got {type(closed).__name__}")
        n = k["n"]
        trades = None if n is None else parse_int(n, "n")
        return Candle(
            symbol=parse_symbol(k["s"], "s"),
            interval=parse_symbol(k["i"], "i"),
            open_time=parse_int(k["t"], "t"),
            close_time=parse_int(k["T"], "T"),
            open=parse_decimal(k["o"], "o"),
            high=parse_decimal(k["h"], "h"),
            low=parse_decimal(k["l"], "l"),
            close=parse_decimal(k["c"], "c"),
            base_volume=parse_decimal(k["v"], "v"),
            quote_volume=parse_decimal(k["q"], "q"),
            taker_buy_base_volume=parse_decimal(k["V"], "V"),
            taker_buy_quote_volume=parse_decimal(k["Q"], "Q"),
            trades=trades,
            closed=closed,
            source=source,
        )
    except KeyError as exc:
        raise CandleFormatError(
            "missing_field", f"kline field {exc.args[0]!r} is missing"
        ) from None


def from_rest_row(
    symbol: str, interval: str, row: list, source: str, *, time_unit: str = "ms"
) -> Candle:
    """A Candle from a 12-column REST/dump row.

    `time_unit`: "ms" for REST (always ms), "auto" for the public dumps (ms before 2025, µs after:
    told apart by magnitude). A REST row is a closed candle unless the caller knows otherwise
    (the last row of a REST page may still be open: callers drop it by close_time vs now).
    """
    if not isinstance(row, (list, tuple)):
        raise CandleFormatError("bad_type", f"row must be a list, got {type(row).__name__}")
    if len(row) < 11:
        raise CandleFormatError("malformed_row", f"expected 12 columns, got {len(row)}")
    if len(row) > 12:
        raise CandleFormatError("malformed_row", f"expected 12 columns, got {len(row)}")
    open_time = parse_int(row[0], "open_time")
    close_time = parse_int(row[6], "close_time")
    if time_unit == "auto":
        open_time = epoch_to_ms(open_time, "open_time")
        close_time = epoch_to_ms(close_time, "close_time", floor=True)
    elif time_unit != "ms":
        raise ValueError(f"time_unit must be 'ms' or 'auto', not {time_unit!r}")
    return Candle(
        symbol=parse_symbol(symbol, "symbol"),
        interval=parse_symbol(interval, "interval"),
        open_time=open_time,
        close_time=close_time,
        open=parse_decimal(row[1], "open"),
        high=parse_decimal(row[2], "high"),
        low=parse_decimal(row[3], "low"),
        close=parse_decimal(row[4], "close"),
        base_volume=parse_decimal(row[5], "volume"),
        quote_volume=parse_decimal(row[7], "quote_volume"),
        trades=parse_int(row[8], "trades"),
        taker_buy_base_volume=parse_decimal(row[9], "taker_buy_base_volume"),
        taker_buy_quote_volume=parse_decimal(row[10], "taker_buy_quote_volume"),
        closed=True,
        source=source,
    )


def control_kind(raw: str) -> str | None:
    """What a well-formed non-data message is ("event:<e>" or "reply"), None if it is not one.

    Binance sends server events (`{"e": "serverShutdown", ...}`, bare or wrapped) and replies to
    SUBSCRIBE & co (`{"result": ..., "id": ...}`, `{"error": ..., "id": ...}`): not data, nothing to
    quarantine. Any other message that isn't a kline (a kline event without its `k`, a JSON array,
    a bare number) is a broken record and is rejected like one.
    """
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if isinstance(msg, dict) and "data" in msg and "stream" in msg:
        msg = msg["data"]
    if not isinstance(msg, dict):
        return None
    for obj in (msg, msg.get("event")):
        if isinstance(obj, dict) and isinstance(obj.get("e"), str) and obj["e"] != "kline":
            return f"event:{obj['e'][:40]}"
    if "id" in msg and ("result" in msg or "error" in msg):
        return "reply"
    return None


__all__ = ["from_kline_payload", "from_stream_message", "from_rest_row", "control_kind"]
