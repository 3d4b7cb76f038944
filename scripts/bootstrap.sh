#!/usr/bin/env bash
# Installs everything the platform needs on a fresh Debian/Ubuntu machine with Python 3.11; idempotent.
#   system packages (apt-get, only those missing): Java 17, PostgreSQL server, its JDBC driver, Redis
#   (the broker of CRYPTOFLOW_AIRFLOW_EXECUTOR=celery), Chromium
#   .venv/airflow : Airflow 3.3 + providers, pyspark, TensorFlow, ... pinned by requirements.txt
#   .venv/superset: Superset 6.1, pinned by requirements-superset.txt (its pins conflict with Airflow's)
# Set CRYPTOFLOW_SKIP_APT=1 to skip the system packages, CRYPTOFLOW_NO_BROWSER=1 to skip Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- system packages ----------------------------------------------------------------------------
missing=()
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1 || true)
[ -n "$java_major" ] && [ "$java_major" -ge 17 ] || missing+=(openjdk-17-jre-headless)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
if [ -z "${CRYPTOFLOW_NO_BROWSER:-}" ]; then
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
fi
if [ ${#missing[@]} -gt 0 ] && [ -z "${CRYPTOFLOW_SKIP_APT:-}" ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "cryptoflow needs these system packages: ${missing[*]}" >&2
    echo "install them as root (apt-get install ${missing[*]}) and run this again" >&2
    exit 1
  fi
  say "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's postgresql and redis-server packages may start their own servers on 5432 and 6379; ours are
  # private (own directories, ports and passwords), so leave those alone but don't depend on them.
fi

# --- Python ------------------------------------------------------------------------------------
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
  echo "cryptoflow needs Python 3.11 (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }

mkdir -p .venv
if [ ! -x .venv/tools/bin/uv ]; then
  say "creating .venv/tools (uv installer)"
  "$PY" -m venv .venv/tools
  .venv/tools/bin/pip install -q "uv==0.13.9"
fi
UV=.venv/tools/bin/uv

sync_venv() {  # name, requirements file, extra install args...
  local name=$1 req=$2; shift 2
  local stamp=.venv/$name/.cryptoflow-stamp
  local want
  want=$(cat "$req" pyproject.toml | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  say "installing .venv/$name from $req"
  [ -x ".venv/$name/bin/python" ] || "$UV" venv -q --python "$PY" ".venv/$name"
  "$UV" pip sync -q --python ".venv/$name/bin/python" "$req"
  if [ $# -gt 0 ]; then "$UV" pip install -q --python ".venv/$name/bin/python" "$@"; fi
  echo "$want" > "$stamp"
}
sync_venv airflow requirements.txt --no-deps -e "$ROOT"
sync_venv superset requirements-superset.txt
say "environments ready: .venv/airflow, .venv/superset"
