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

# restic (which the agent image carries, for copies off the machine) and rclone (whose
# `serve restic` is the tests' REST repository server): Debian's, installed if missing;
# in CI a missing one fails the run (tests/integration/test_remote.py).
bash scripts/packages.sh restic rclone

# The helper images, built offline where no registry answers: busybox from the host's static
# busybox; the agent's from the host's own Python (this venv's), its libraries, busybox and,
# where the host has it, restic.
if docker version >/dev/null 2>&1; then
  .venv/bin/voltool helper --build
fi

# Shell programs (these scripts, and those helpers run: voltool/sh): Debian's shellcheck,
# installed if it can be; in CI a missing shellcheck fails the run.
bash scripts/packages.sh shellcheck
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck scripts/*.sh voltool/sh/*.sh
elif [ "${CI:-}" = true ]; then
  echo "test.sh: no shellcheck, and CI=true: failing" >&2
  exit 1
fi

.venv/bin/ruff check voltool tests scripts
.venv/bin/ruff format --check voltool tests scripts
.venv/bin/mypy
# In parallel: worker 0 on the machine's engine, every other on a private dockerd of its own
# (tests/integration/conftest.py, engine_client). VOLTOOL_TEST_WORKERS=0: one process.
.venv/bin/pytest -n "${VOLTOOL_TEST_WORKERS:-3}" "$@"
