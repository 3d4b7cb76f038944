"""Generated credentials of the local stack: created on first run, kept outside git with mode 600.

Nothing here has a default password: every secret is drawn from `secrets` the first time and then
read back from <state>/credentials.env.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptoflow.settings import read_credentials

# name -> generator; passwords avoid characters that need quoting in URIs.
_GENERATORS = {
    "CF_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(
        18
    ),  # PostgreSQL superuser of the private cluster
    "CF_WRITER_PASSWORD": lambda: secrets.token_urlsafe(18),  # pipelines
    "CF_READER_PASSWORD": lambda: secrets.token_urlsafe(18),  # dashboards (read-only)
    "AIRFLOW_DB_PASSWORD": lambda: secrets.token_urlsafe(18),
    "AIRFLOW_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(12),
    "AIRFLOW_FERNET_KEY": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
    "AIRFLOW_SECRET_KEY": lambda: secrets.token_urlsafe(32),
    "AIRFLOW_JWT_SECRET": lambda: secrets.token_urlsafe(32),
    "SUPERSET_SECRET_KEY": lambda: secrets.token_urlsafe(42),
    "SUPERSET_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(12),
    "REDIS_PASSWORD": lambda: secrets.token_urlsafe(18),  # the Celery broker (celery executor only)
}


def ensure(path: Path) -> tuple[dict[str, str], list[str]]:
    """Read the credentials file, generating missing entries; returns (credentials, newly generated keys)."""
    path = Path(path)
    creds = read_credentials(path)
    new = [k for k in _GENERATORS if k not in creds]
    if new:
        for key in new:
            creds[key] = _GENERATORS[key]()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# cryptoflow local stack credentials: generated, never commit. Mode 600.\n")
            for key, value in creds.items():
                fh.write(f"{key}={value}\n")
        os.replace(tmp, path)
    os.chmod(path, 0o600)
    return creds, new
