"""Superset configuration of the compose stack (loaded through SUPERSET_CONFIG_PATH).

The project's own configuration, include/superset/superset_config.py (the one the local stack
uses: dashboards' feature flags, SVG sanitizer extensions for the candlestick chart, CSP, cookie
name), is loaded first so both stacks render the dashboards the same way. Only what differs in
compose is overridden here: the metadata database is the compose PostgreSQL (database `superset`)
instead of SQLite, since Superset's metadata must survive container re-creation and PostgreSQL is
already there.
"""

import importlib.util
import os

_SHARED = os.path.join(
    os.environ.get("CRYPTOFLOW_HOME", "/opt/cryptoflow"),
    "include",
    "superset",
    "superset_config.py",
)
_spec = importlib.util.spec_from_file_location("cryptoflow_superset_config", _SHARED)
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)
# Superset reads the uppercase names of this module: take every one the shared file defines.
globals().update({name: value for name, value in vars(_shared).items() if name.isupper()})

_uri = os.environ.get("SUPERSET_DATABASE_URI", "").strip()
if not _uri:
    raise RuntimeError("SUPERSET_DATABASE_URI is not set (docker-compose.yaml builds it from .env)")
SQLALCHEMY_DATABASE_URI = _uri
