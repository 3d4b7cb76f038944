"""`cryptoflow superset import`: load the bundle of include/superset/assets/ into a running Superset.

Through POST /api/v1/assets/import/, which overwrites every object that already has the bundle's
UUID (databases, datasets, charts, dashboards): importing again updates, never duplicates.
(`superset import-dashboards` would leave existing charts and datasets untouched.)

The database file in git holds a placeholder URI; here it gets the read-only DSN in force
(CRYPTOFLOW_WAREHOUSE_READER_DSN) with its password masked, and the password goes in the request's
`passwords` field. If Superset already has a database of the same name under another UUID
(registered by `superset set-database-uri` before the bundle existed), the bundle adopts that
UUID rather than failing on the unique name.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from cryptoflow.superset import bundle

log = logging.getLogger(__name__)

ROOT = "cryptoflow_assets"


class BundleImportError(RuntimeError):
    """The bundle could not be imported; the message says why."""


@dataclass
class Target:
    url: str
    username: str
    password: str


def superset_uri(dsn: str) -> tuple[str, str]:
    """(URI with the password masked the way Superset masks it, the password)."""
    for prefix in (
        "postgresql+psycopg2://",
        "postgresql+psycopg://",
        "postgresql://",
        "postgres://",
    ):
        if dsn.startswith(prefix):
            dsn = "postgresql+psycopg2://" + dsn[len(prefix) :]
            break
    else:
        raise BundleImportError(f"the reader DSN is not a PostgreSQL URI: {dsn.split('@')[-1]!r}")
    parts = urlsplit(dsn)
    if not parts.username:
        raise BundleImportError("the reader DSN names no user")
    password = unquote(parts.password or "")
    host = parts.hostname or ""
    netloc = f"{parts.username}:XXXXXXXXXX@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), password


def read_assets(directory: Path) -> dict[str, str]:
    files = {
        str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*.yaml"))
    }
    if "metadata.yaml" not in files or bundle.DATABASE_FILE not in files:
        raise BundleImportError(
            f"{directory} is not a bundle (no metadata.yaml or {bundle.DATABASE_FILE})"
        )
    return files


def prepare(files: dict[str, str], masked_uri: str, database_uuid: str) -> bytes:
    """The ZIP to upload: the files under one root folder, database URI and UUID filled in."""
    import yaml

    out = dict(files)
    db_doc = yaml.safe_load(out[bundle.DATABASE_FILE])
    db_doc["sqlalchemy_uri"] = masked_uri
    old_uuid, db_doc["uuid"] = db_doc["uuid"], database_uuid
    out[bundle.DATABASE_FILE] = yaml.safe_dump(db_doc, sort_keys=False)
    if old_uuid != database_uuid:
        for rel in out:
            if rel.startswith("datasets/"):
                doc = yaml.safe_load(out[rel])
                doc["database_uuid"] = database_uuid
                out[rel] = yaml.safe_dump(doc, sort_keys=False)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, text in out.items():
            zf.writestr(f"{ROOT}/{rel}", text)
    return buf.getvalue()


def session(target: Target) -> requests.Session:
    """Logged in (bearer token) with the CSRF token of its session cookie attached."""
    s = requests.Session()
    try:
        res = s.post(
            f"{target.url}/api/v1/security/login",
            timeout=60,
            json={
                "username": target.username,
                "password": target.password,
                "provider": "db",
                "refresh": False,
            },
        )
    except requests.ConnectionError as exc:
        raise BundleImportError(
            f"Superset does not answer at {target.url} (is it running?): {exc}"
        ) from exc
    if res.status_code != 200:
        raise BundleImportError(
            f"Superset login as {target.username} failed: HTTP {res.status_code} {res.text[:300]}"
        )
    s.headers["Authorization"] = f"Bearer {res.json()['access_token']}"
    csrf = s.get(f"{target.url}/api/v1/security/csrf_token/", timeout=60)
    if csrf.status_code != 200:
        raise BundleImportError(
            f"no CSRF token from Superset: HTTP {csrf.status_code} {csrf.text[:300]}"
        )
    s.headers.update({"X-CSRFToken": csrf.json()["result"], "Referer": target.url})
    return s


def existing_database_uuid(s: requests.Session, url: str) -> str | None:
    q = json.dumps(
        {"filters": [{"col": "database_name", "opr": "eq", "value": bundle.DATABASE_NAME}]}
    )
    res = s.get(f"{url}/api/v1/database/", params={"q": q}, timeout=60)
    if res.status_code != 200:
        raise BundleImportError(
            f"listing Superset databases failed: HTTP {res.status_code} {res.text[:300]}"
        )
    rows = res.json()["result"]
    if not rows:
        return None
    detail = s.get(f"{url}/api/v1/database/{rows[0]['id']}", timeout=60)
    return detail.json()["result"].get("uuid") if detail.status_code == 200 else None


def import_bundle(target: Target, reader_dsn: str, assets_dir: Path) -> dict[str, int]:
    """Import (create or overwrite) every object of the bundle; returns the count per kind."""
    files = read_assets(assets_dir)
    masked, password = superset_uri(reader_dsn)
    s = session(target)
    db_uuid = existing_database_uuid(s, target.url) or bundle.DATABASE_UUID
    payload = prepare(files, masked, db_uuid)
    res = s.post(
        f"{target.url}/api/v1/assets/import/",
        timeout=300,
        files={"bundle": ("cryptoflow_assets.zip", payload, "application/zip")},
        data={"passwords": json.dumps({bundle.DATABASE_FILE: password})},
    )
    # A missing CSRF token answers 200 with an HTML page: only JSON {"message": "OK"} is success.
    ok = (
        res.status_code == 200
        and res.headers.get("Content-Type", "").startswith("application/json")
        and res.json().get("message") == "OK"
    )
    if not ok:
        raise BundleImportError(
            f"Superset refused the bundle: HTTP {res.status_code} {res.text[:2000]}"
        )
    counts = {
        kind: sum(1 for rel in files if rel.startswith(kind + "/"))
        for kind in ("databases", "datasets", "charts", "dashboards")
    }
    log.info(
        "superset: imported %s from %s (database user %s)",
        ", ".join(f"{n} {kind}" for kind, n in counts.items()),
        assets_dir,
        urlsplit(masked).username,
    )
    return counts


def run(settings, default_url: str) -> dict[str, int]:
    """Import into the Superset at SUPERSET_URL, else `default_url` (the local stack's address:
    the caller knows it, this module knows no stack).

    docker-compose sets SUPERSET_URL and SUPERSET_ADMIN_PASSWORD; the local stack has neither and
    uses its own address and the generated credentials file.
    """
    import os

    url = os.environ.get("SUPERSET_URL", "").strip() or default_url
    password = os.environ.get("SUPERSET_ADMIN_PASSWORD", "").strip()
    if not password:
        from cryptoflow.settings import read_credentials

        password = read_credentials(settings.credentials_file).get("SUPERSET_ADMIN_PASSWORD", "")
        if not password:
            raise BundleImportError(
                f"no Superset admin password: set SUPERSET_ADMIN_PASSWORD or run `cryptoflow up` first "
                f"(it generates {settings.credentials_file})"
            )
    return import_bundle(
        Target(url.rstrip("/"), "admin", password),
        settings.warehouse_reader_dsn,
        settings.home / bundle.ASSETS_DIR,
    )
