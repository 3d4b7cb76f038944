"""Security properties that need no running stack (the running stack's are in test_local_stack.py:
Airflow and Superset listening on 127.0.0.1 only, generated admin passwords, admin/admin refused,
cf_reader unable to write; test_warehouse_roles.py proves cf_reader read-only on a bare warehouse).

- no secret in any git-tracked file; no credentials file tracked; compose takes secrets from the
  environment;
- generated credentials: random, mode 600, kept on re-run;
- every service defaults to loopback, the replay server included (checked on a real socket);
- SQL is built with parameters and quoted identifiers: an AST scan of the code finds no SQL string
  with interpolated values outside a short, justified list; hostile symbol names are refused
  before they reach a URL, a file name or a query.
"""

from __future__ import annotations

import ast
import re
import stat
import subprocess
from pathlib import Path

import pytest

from cryptoflow import settings as settings_mod
from cryptoflow.candles import CandleFormatError
from cryptoflow.sources.binance.wire import from_kline_payload

pytestmark = pytest.mark.quick

ROOT = Path(__file__).resolve().parents[2]

# name = "literal" where the name says secret (JSON, YAML, Python keyword or assignment forms).
SECRET_ASSIGNMENT = re.compile(
    r"""(?i)\b(\w*(?:password|passwd|secret|api_?key|token|access_?key)\w*)["']?\s*[:=]\s*["']([^"'\s]{4,})["']"""
)
KEY_MATERIAL = re.compile(
    r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|ghp_[A-Za-z0-9]{36}|xox[baprs]-[0-9A-Za-z-]{10,}"
)
# Literal passwords of throwaway clusters created and destroyed by a test or benchmark run (they
# guard nothing that outlives the run), moto's documented dummy keys, and the admin/admin the
# stack test proves is refused; "s3cret" / "s%40cret" are dummies masking tests look for.
THROWAWAY = {
    "test-admin",
    "test-writer",
    "test-reader",
    "bench",
    "bench-admin",
    "testing",
    "admin",
    "s3cret",
    "s%40cret",
}
DSN_PASSWORD = re.compile(r"\b[a-z][a-z0-9+]*://[^:/@\s\"']+:([^@/\s\"']{4,})@")
SECRET_FILES = re.compile(r"(^|/)(\.env|credentials\.env|.*\.pem|id_rsa.*|.*\.key|\.htpasswd)$")


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [f for f in out.splitlines() if f]


def test_no_secret_in_tracked_files():
    files = tracked_files()
    assert files, "not a git checkout"
    assert not [f for f in files if SECRET_FILES.search(f)]
    found = []
    for name in files:
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        found += [f"{name}: key material {m.group(0)[:12]}..." for m in KEY_MATERIAL.finditer(text)]
        for m in SECRET_ASSIGNMENT.finditer(text):
            value = m.group(2)
            if value.startswith(("${", "$$", "{{", "<")) or value in THROWAWAY or value.isupper():
                continue  # an environment reference, a template, a placeholder, or a variable's name
            found.append(f"{name}: {m.group(0)[:60]}")
        for m in DSN_PASSWORD.finditer(text):
            value = m.group(1)
            if value.startswith(("${", "{", "<", "%")) or value in THROWAWAY or set(value) == {"X"}:
                continue  # a reference, a template, a throwaway, or Superset's mask (XXXXXXXX)
            found.append(f"{name}: password in a URL {m.group(0)[:40]}...")
    assert not found, "literal secrets in git-tracked files:\n" + "\n".join(found)


def test_compose_takes_every_secret_from_the_environment():
    text = (ROOT / "docker-compose.yaml").read_text()
    for line in text.splitlines():
        # a key whose name ends in PASSWORD / SECRET(_KEY) / ACCESS_KEY(_ID), whatever the case
        if re.search(
            r"(?i)(password|secret|secret_key|access_key|access_key_id)[\"']?\s*[:=]", line
        ) and not line.strip().startswith("#"):
            value = re.split(r"[:=]", line, maxsplit=1)[1].strip().strip("'\"")
            assert value == "" or "$" in value or value.isupper(), line


def test_generated_credentials_are_random_private_and_kept(tmp_path):
    from cryptoflow_stack import passwords

    path = tmp_path / "state" / "credentials.env"
    creds, new = passwords.ensure(path)
    assert new and set(new) == set(creds)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert all(len(v) >= 12 and v not in ("admin", "password") for v in creds.values())
    other, _ = passwords.ensure(tmp_path / "other" / "credentials.env")
    assert not set(creds.values()) & set(other.values())  # generated, not a default
    path.chmod(0o644)
    again, new_again = passwords.ensure(path)
    assert again == creds and new_again == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a loosened file is tightened again


def test_every_service_defaults_to_loopback():
    s = settings_mod.load({})
    assert s.bind_host == "127.0.0.1"
    assert "@127.0.0.1:" in s.warehouse_dsn and "@127.0.0.1:" in s.warehouse_reader_dsn
    # The local stack passes bind_host to Airflow's api-server and to Superset's gunicorn.
    assert (
        '"AIRFLOW__API__HOST": settings.bind_host'
        in (ROOT / "include/cryptoflow_stack/airflow.py").read_text()
    )
    superset_src = " ".join((ROOT / "include/cryptoflow_stack/superset.py").read_text().split())
    assert '"-b", f"{settings.bind_host}:{settings.superset_port}"' in superset_src


def _outward_address() -> str | None:
    """This machine's non-loopback address (a UDP "connect" sends nothing), None if it has none."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_replay_server_binds_loopback_unless_told_otherwise():
    import inspect
    import socket
    from decimal import Decimal

    import binance_emulator as replay
    from binance_emulator import ReplayServer
    from cryptoflow.candles import Candle

    assert inspect.signature(ReplayServer).parameters["host"].default == "127.0.0.1"
    # `cryptoflow replay-server` without --host: settings.bind_host, loopback by default.
    assert "host=host or settings.bind_host" in inspect.getsource(replay.serve)
    one = Candle(
        "BTCUSDT",
        "1h",
        0,
        3_599_999,
        *([Decimal(1)] * 4),
        Decimal(1),
        Decimal(1),
        None,
        None,
        1,
        True,
        "t",
    )
    srv = ReplayServer(
        {("BTCUSDT", "1h"): [one]}, port=0, shift_to_present=False, start_ms=0
    ).start()
    try:
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
        outward = _outward_address()
        if outward:
            with pytest.raises(OSError):
                socket.create_connection((outward, srv.port), timeout=2).close()
    finally:
        srv.stop()


# --- SQL: parameters and quoted identifiers ---------------------------------------------------------

SQL_WORDS = re.compile(
    r"(?i)\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|TRUNCATE|COPY|GRANT)\b[\s\S]*"
    r"\b(FROM|INTO|SET|TABLE|WHERE|ROLE|DATABASE|ON|STDIN)\b"
)
CODE_DIRS = ("include/cryptoflow", "dags", "spark_jobs", "plugins", "models")
# (file, enclosing function): SQL text with interpolation that is reviewed and why it is safe.
REVIEWED = {
    # Spark JDBC: partition predicates and the pushed-down query are plain SQL text (JDBC takes no
    # parameters there). The interpolated values are column lists and table names from module
    # constants, intervals that passed the candle rules, timestamps formatted from ints, and
    # symbols quoted with '' doubling (and alphanumeric by the rules before).
    ("include/cryptoflow/etl/stored.py", "read_stored"),
    # Benchmark bookkeeping: row counts of a literal tuple of table names in the function itself.
    ("include/cryptoflow_bench/superset.py", "fill"),
}


def _sql_fstrings(path: Path):
    """(function name, f-string source) of every f-string or %-format that reads like SQL."""
    tree = ast.parse(path.read_text())
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node

    def enclosing(node):
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node.name
        return "<module>"

    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and any(
            isinstance(v, ast.FormattedValue) for v in node.values
        ):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
        elif (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Mod)
            and isinstance(node.left, ast.Constant)
            and isinstance(node.left.value, str)
        ):
            text = node.left.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
            and isinstance(node.func.value, ast.Constant)
            and isinstance(node.func.value.value, str)
        ):
            text = node.func.value.value
        else:
            continue
        if SQL_WORDS.search(text):
            yield enclosing(node), ast.unparse(node)[:100]


def test_sql_is_built_with_parameters_and_quoted_identifiers():
    offenders = []
    for d in CODE_DIRS:
        for path in sorted((ROOT / d).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for func, src in _sql_fstrings(path):
                if (rel, func) not in REVIEWED:
                    offenders.append(f"{rel}:{func}: {src}")
    assert not offenders, (
        "SQL built by string interpolation (use parameters, psycopg.sql.Identifier/Literal, "
        "or add a reviewed entry with the reason):\n" + "\n".join(offenders)
    )


@pytest.mark.parametrize(
    "symbol", ["BTC'USDT", "BTCUSDT;DROP TABLE x", "btc usdt", "../etc", "BTC/USDT", 'BTC"x']
)
def test_hostile_symbol_names_are_refused(symbol):
    with pytest.raises(settings_mod.ConfigError):
        settings_mod.load({"CRYPTOFLOW_SYMBOLS": f"ETHUSDT,{symbol}"})
    k = {
        "t": 1627776000000,
        "T": 1627776059999,
        "s": symbol,
        "i": "1m",
        "o": "1",
        "c": "1",
        "h": "1",
        "l": "1",
        "v": "1",
        "n": 1,
        "x": True,
        "q": "1",
        "V": "0",
        "Q": "0",
    }
    with pytest.raises(CandleFormatError):
        from_kline_payload(k, "ws")
