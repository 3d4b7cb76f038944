"""Superset configuration of the cryptoflow stack, read entirely from the environment.

Superset loads this file through SUPERSET_CONFIG_PATH (set by cryptoflow_stack.superset); every
uppercase name here overrides superset/config.py. Nothing secret lives in this file: the secret
key comes from the generated credentials file via the environment, the metadata database sits
under the state directory, and the web server's address is chosen by the start command
(gunicorn -b <CRYPTOFLOW_BIND_HOST>:<CRYPTOFLOW_SUPERSET_PORT>, loopback by default).

One machine, no Celery and no Redis: queries run synchronously in the web workers and caches
live in each worker's memory.
"""

import os
from datetime import timedelta


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        # Superset would otherwise fall back to its public placeholder key (or a per-process
        # random one): sessions, CSRF tokens and the encrypted database passwords depend on it.
        raise RuntimeError(
            f"{name} is not set: start Superset through `cryptoflow up` (which reads it from the "
            "generated credentials file) or export it yourself."
        )
    return value


SECRET_KEY = _required("SUPERSET_SECRET_KEY")

# --- metadata database -------------------------------------------------------------------------
# SQLite under the state directory is enough for one machine (dashboards, charts, users); the
# warehouse itself is the PostgreSQL database registered as "cryptoflow warehouse".
SUPERSET_HOME = _required("CRYPTOFLOW_SUPERSET_HOME")
DATA_DIR = SUPERSET_HOME
UPLOAD_FOLDER = os.path.join(SUPERSET_HOME, "uploads")
SQLALCHEMY_DATABASE_URI = (
    f"sqlite:///{os.path.join(SUPERSET_HOME, 'superset.db')}?check_same_thread=false"
)

# --- caching ------------------------------------------------------------------------------------
# In-process caches: no Redis on this machine. Each gunicorn worker has its own copy, which only
# costs a few repeated queries. Data is cached briefly because candles arrive every minute.
CACHE_CONFIG = {
    "CACHE_TYPE": "SimpleCache",
    "CACHE_DEFAULT_TIMEOUT": int(timedelta(hours=1).total_seconds()),
}
DATA_CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 60}
# Filter state and explore form data keep Superset's default (its metastore, i.e. the SQLite
# file): they must be shared between workers, which an in-process cache would not do.

# No Celery: SQL Lab runs queries synchronously, and nothing may offer the async path.
RESULTS_BACKEND = None
SQLLAB_TIMEOUT = int(timedelta(seconds=60).total_seconds())

# --- features the dashboards need ---------------------------------------------------------------
FEATURE_FLAGS = {
    # Virtual datasets use Jinja ({{ from_dttm }}, {{ to_dttm }}) so the candlestick SQL follows
    # the dashboard's time filter.
    "ENABLE_TEMPLATE_PROCESSING": True,
    # THUMBNAILS and ALERT_REPORTS stay off (the default): they need Celery workers.
}

# The candlestick chart is a Handlebars chart emitting SVG. Superset sanitizes chart HTML with the
# GitHub schema, which silently strips every SVG element: allow the few the template draws, with
# their attributes spelled as HAST properties (camelCase: strokeWidth, not stroke-width).
_SVG_PRESENTATION = [
    "fill",
    "fillOpacity",
    "stroke",
    "strokeWidth",
    "strokeOpacity",
    "opacity",
    "transform",
    "className",
    "style",
]
HTML_SANITIZATION_SCHEMA_EXTENSIONS = {
    "tagNames": ["svg", "g", "rect", "line", "text", "title"],
    "attributes": {
        "svg": ["width", "height", "viewBox", "preserveAspectRatio", "xmlns", *_SVG_PRESENTATION],
        "g": _SVG_PRESENTATION,
        "rect": ["x", "y", "width", "height", "rx", "ry", *_SVG_PRESENTATION],
        "line": ["x1", "y1", "x2", "y2", "strokeDasharray", *_SVG_PRESENTATION],
        "text": [
            "x",
            "y",
            "dx",
            "dy",
            "textAnchor",
            "dominantBaseline",
            "fontSize",
            "fontFamily",
            "fontWeight",
            *_SVG_PRESENTATION,
        ],
        "title": [],
    },
}

# Content Security Policy: Superset's default minus the third-party hosts (Scarf telemetry pixel,
# map tiles: this machine has no route to them), plus 'unsafe-eval' because Handlebars compiles templates
# with new Function(). Everything else stays 'self'.
TALISMAN_ENABLED = True
TALISMAN_CONFIG = {
    "content_security_policy": {
        "base-uri": ["'self'"],
        "default-src": ["'self'"],
        "img-src": ["'self'", "blob:", "data:"],
        "worker-src": ["'self'", "blob:"],
        "connect-src": ["'self'"],
        "object-src": "'none'",
        "style-src": ["'self'", "'unsafe-inline'"],
        "font-src": ["'self'", "data:"],
        "script-src": ["'self'", "'strict-dynamic'", "'unsafe-eval'"],
    },
    "content_security_policy_nonce_in": ["script-src"],
    "force_https": False,  # plain HTTP on loopback
    "session_cookie_secure": False,
}

# --- web ----------------------------------------------------------------------------------------
# CSRF protection stays as Superset ships it (WTF_CSRF_ENABLED = True): API clients fetch a token
# from /api/v1/security/csrf_token/ like the UI does.

# Cookies are scoped by host, not by port: Airflow's UI on the same 127.0.0.1 would otherwise
# overwrite Superset's "session" cookie and log the user out of one when logging into the other.
SESSION_COOKIE_NAME = "cryptoflow_superset_session"
