#!/usr/bin/env bash
# Create .venv in the repo root with xdlm installed editable (CPU torch pinned by constraints-cpu.txt).
# Idempotent: a second run only re-checks the install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# Headless Chromium and its driver from Debian's packages, for the dashboard's browser tests
# (tests/dashboard); skipped when present, and when not root (those tests then skip, but fail
# under CI=true, where this runs as root).
if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } ||
      echo "setup: apt-get could not install chromium + chromium-driver (browser tests need them)" >&2
  else
    echo "setup: /usr/bin/chromium or /usr/bin/chromedriver missing; as root: apt-get install -y chromium chromium-driver" >&2
  fi
fi
# PostgreSQL from Debian's packages: the production-like MLflow backend store of tests/cluster
# (started by the tests themselves as the postgres user in a temp dir; the service stays off).
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; } ||
      echo "setup: apt-get could not install postgresql (tests/cluster need it)" >&2
  else
    echo "setup: PostgreSQL missing (no /usr/lib/postgresql/*/bin/initdb); as root: apt-get install -y postgresql" >&2
  fi
fi
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
stamp=.venv/.xdlm-installed
want="$(cat pyproject.toml constraints-cpu.txt | sha1sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import xdlm" 2>/dev/null; then
  exit 0
fi
[ -x .venv/bin/python ] || "$py" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
# torch first, so nothing else can pull a CUDA build
.venv/bin/python -m pip install -q -c constraints-cpu.txt torch
.venv/bin/python -m pip install -q -c constraints-cpu.txt -e ".[dev]"
echo "$want" > "$stamp"
