#!/usr/bin/env bash
# Install Persona Studio into ./.venv: the CPU build of torch first (no multi-GB CUDA wheels),
# then the project with its engine and dev extras, at the versions in constraints.txt.
# Installs redis-server from Debian's packages when it is missing (the tests start their own).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing redis-server (Debian package) for the tests"
        apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    else
        echo "note: redis-server not found; the redis tests will be skipped" >&2
    fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# On a CUDA machine install the matching CUDA torch build instead of this line's CPU one.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[engine,dev]"
echo "installed: $(.venv/bin/persona-studio --help | head -1)"
