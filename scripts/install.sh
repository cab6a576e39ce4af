#!/usr/bin/env bash
# Install Persona Studio into ./.venv: the CPU build of torch first (no multi-GB CUDA wheels),
# then the project with its engine and dev extras, at the versions in constraints.txt.
# Installs redis-server, chromium and ffmpeg from Debian's packages when they are missing (the tests
# start their own redis; the web tests drive Debian's chromium through Playwright: no browser
# download; ffprobe checks the clips /video makes).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]} (Debian packages) for the tests"
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "note: ${missing[*]} not found; the tests that need them will be skipped" >&2
    fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# On a CUDA machine install the matching CUDA torch build instead of this line's CPU one.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[engine,dev]"
echo "installed: $(.venv/bin/persona-studio --help | head -1)"
