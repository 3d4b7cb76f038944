"""exchangeInfo of the replay, without sockets: the price tick read off a history, the symbol entry,
and the REST client's and the Airflow hook's tick_sizes over a stubbed answer."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from binance_emulator import price_tick, symbol_info
from binance_emulator.exchange_info import exchange_info, max_price, split_symbol
from cryptoflow.sources.binance.rest import BinanceError, BinanceRestClient

pytestmark = pytest.mark.quick

D = Decimal


@pytest.mark.parametrize(
    "prices, tick",
    [
        (["43250.50", "43200.01"], "0.01"),
        (["43250.50", "43200"], "0.1"),  # trailing zeros say nothing: 43250.50 is 43250.5
        (["0.2971", "0.3"], "0.0001"),
        (["43200", "100"], "1"),  # coarser than 1 is capped to 1
        (["1.123456789"], "0.00000001"),  # finer than Binance's 8 decimals is capped to 1e-8
        (["0", "12.5"], "0.1"),  # zero is a multiple of any tick
        ([], "0.00000001"),  # nothing to infer from: the finest tick
        (["0", "0.000"], "0.00000001"),
    ],
)
def test_price_tick(prices, tick):
    assert price_tick(D(p) for p in prices) == D(tick)


def test_price_tick_refuses_what_is_not_a_price():
    with pytest.raises(ValueError):
        price_tick([D("1.5"), D("NaN")])


@given(st.lists(st.tuples(st.integers(0, 10**9), st.integers(-8, 3)), min_size=1, max_size=30))
def test_price_tick_is_the_coarsest_power_of_ten_all_prices_are_multiples_of(parts):
    prices = [D(n).scaleb(e) for n, e in parts]
    tick = price_tick(prices)
    assert D("0.00000001") <= tick <= 1 and tick == D(1).scaleb(tick.adjusted())
    assert all(p % tick == 0 for p in prices)
    if tick < 1 and any(prices):
        assert any(p % (tick * 10) != 0 for p in prices)


def test_symbol_entry_has_binance_shape_and_8_decimal_strings():
    entry = symbol_info("BTCUSDT", price_tick([D("64854.00"), D("29000.01")]), D("64854.00"))
    assert entry["symbol"] == "BTCUSDT" and entry["status"] == "TRADING"
    assert (entry["baseAsset"], entry["quoteAsset"]) == ("BTC", "USDT")
    assert entry["filters"] == [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": "0.01000000",
            "maxPrice": "1000000.00000000",
            "tickSize": "0.01000000",
        }
    ]
    assert max_price(D("250000")) == D("10000000") and max_price(None) == D("1000000")
    assert split_symbol("ETHBTC") == ("ETH", "BTC") and split_symbol("BTCFDUSD") == ("BTC", "FDUSD")
    info = exchange_info([entry], 123, 6000, 60.0)
    assert info["timezone"] == "UTC" and info["serverTime"] == 123 and info["symbols"] == [entry]
    assert info["rateLimits"] == [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}
    ]


class _Answer:
    status_code = 200
    headers: dict = {}

    def __init__(self, body):
        self.body = body

    def json(self):
        return self.body


class _Session:
    """requests.Session stand-in: records the requests, answers `body`."""

    def __init__(self, body):
        self.body, self.calls = body, []

    def get(self, url, params=None, timeout=None):
        self.calls.append((url, params))
        return _Answer(self.body)

    def close(self):
        pass


def _entry(symbol, tick):
    return {
        "symbol": symbol,
        "filters": [
            {"filterType": "LOT_SIZE", "stepSize": "0.00001000"},
            {"filterType": "PRICE_FILTER", "tickSize": tick},
        ],
    }


def test_client_tick_sizes_asks_once_for_all_symbols():
    session = _Session(
        {"symbols": [_entry("BTCUSDT", "0.01000000"), _entry("ADAUSDT", "0.00010000")]}
    )
    client = BinanceRestClient("http://binance.test", session=session)
    assert client.tick_sizes(["btcusdt", "ADAUSDT"]) == {
        "BTCUSDT": D("0.01"),
        "ADAUSDT": D("0.0001"),
    }
    assert session.calls == [
        ("http://binance.test/api/v3/exchangeInfo", {"symbols": '["BTCUSDT","ADAUSDT"]'})
    ]
    client.tick_sizes()
    assert session.calls[-1] == ("http://binance.test/api/v3/exchangeInfo", None)


@pytest.mark.parametrize(
    "body",
    [
        {"symbols": [_entry("BTCUSDT", "0.01000000")]},  # ADAUSDT left out
        {
            "symbols": [_entry("BTCUSDT", "0.01"), {"symbol": "ADAUSDT", "filters": []}]
        },  # no PRICE_FILTER
        {"symbols": [_entry("BTCUSDT", "0.01"), _entry("ADAUSDT", "zero")]},
        {"code": 0},
    ],
)
def test_client_tick_sizes_refuses_incomplete_answers(body):
    client = BinanceRestClient("http://binance.test", session=_Session(body))
    with pytest.raises(BinanceError):
        client.tick_sizes(["BTCUSDT", "ADAUSDT"])


def test_hook_tick_sizes_default_to_the_configured_symbols(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_BINANCE_DEFAULT", raising=False)
    monkeypatch.setenv("CRYPTOFLOW_SYMBOLS", "BTCUSDT,ADAUSDT")
    from cryptoflow.airflow.hooks import BinanceHook

    session = _Session(
        {"symbols": [_entry("BTCUSDT", "0.01000000"), _entry("ADAUSDT", "0.00010000")]}
    )
    hook = BinanceHook(session=session)
    assert hook.tick_sizes() == {"BTCUSDT": D("0.01"), "ADAUSDT": D("0.0001")}
    assert session.calls[-1][1] == {"symbols": '["BTCUSDT","ADAUSDT"]'}
