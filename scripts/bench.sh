#!/usr/bin/env bash
# The benchmarks, from a fresh machine: engine, virtualenv, helper image, then scripts/bench.py.
# Arguments go to bench.py (for example: bash scripts/bench.sh --quick --rounds 1).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/engine.sh
bash scripts/packages.sh restic  # carried by the agent image; the baseline runs it directly
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/voltool helper --build
exec .venv/bin/python scripts/bench.py "$@"
