#!/usr/bin/env bash
# The whole test suite, from a fresh machine: engine, virtualenv, helper image, lint, types, tests.
# Extra arguments go to pytest (for example: bash scripts/test.sh tests/unit -x).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! bash scripts/engine.sh; then
  if [ "${CI:-}" = true ]; then
    echo "test.sh: no Docker Engine, and CI=true: failing" >&2
    exit 1
  fi
  echo "test.sh: no Docker Engine: integration tests will be skipped" >&2
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# The helper image, built offline from the host's static busybox (no registry needed).
if docker version >/dev/null 2>&1; then
  .venv/bin/voltool helper --build
fi

.venv/bin/ruff check voltool tests scripts
.venv/bin/ruff format --check voltool tests scripts
.venv/bin/mypy
.venv/bin/pytest "$@"
