#!/usr/bin/env bash
# Runs the test suite; sets up .venv with the project and its test extra first if needed.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/pytest ] || ! .venv/bin/python -c 'import daycare_cli' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
fi
exec .venv/bin/pytest -q "$@"
