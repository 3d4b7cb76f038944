"""The local cluster's generated credentials (<state>/credentials.env) and what is built from them:
the DSNs of its roles, and the address of Superset on this machine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptoflow.settings.table import Settings


def read_credentials(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of the generated credentials file (missing file: empty)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _local_dsn(role: str, password: str | None, port: int) -> str:
    if password is None:
        # Not set up yet: a DSN without password, which fails to authenticate with a clear message.
        return f"postgresql://{role}@127.0.0.1:{port}/cryptoflow"
    return f"postgresql://{role}:{password}@127.0.0.1:{port}/cryptoflow"


def local_admin_dsn(settings: Settings) -> str:
    """The local cluster's owner DSN (`cryptoflow db migrate`'s default), password from the
    credentials file the stack generated."""
    password = read_credentials(settings.credentials_file).get("CF_ADMIN_PASSWORD")
    return _local_dsn("cf_admin", password, settings.pg_port)


def superset_url(settings: Settings) -> str:
    """Base URL to reach Superset from this machine (a wildcard bind is reached over loopback)."""
    host = "127.0.0.1" if settings.bind_host in ("", "0.0.0.0") else settings.bind_host
    return f"http://{host}:{settings.superset_port}"


def with_local_credentials(settings: Settings, creds: dict[str, str]) -> Settings:
    """The settings with the local cluster's generated passwords in the DSNs that were left at their
    default (settings loaded before `cryptoflow up` generated the credentials have none)."""
    changes: dict[str, Any] = {}
    if (
        settings.warehouse_dsn == _local_dsn("cf_writer", None, settings.pg_port)
        and "CF_WRITER_PASSWORD" in creds
    ):
        changes["warehouse_dsn"] = _local_dsn(
            "cf_writer", creds["CF_WRITER_PASSWORD"], settings.pg_port
        )
    if (
        settings.warehouse_reader_dsn == _local_dsn("cf_reader", None, settings.pg_port)
        and "CF_READER_PASSWORD" in creds
    ):
        changes["warehouse_reader_dsn"] = _local_dsn(
            "cf_reader", creds["CF_READER_PASSWORD"], settings.pg_port
        )
    return replace(settings, **changes) if changes else settings
