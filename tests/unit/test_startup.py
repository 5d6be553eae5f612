"""`voltool --help` and `--version` start without the Docker SDK and requests."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

HEAVY = ("docker", "requests", "urllib3")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["snapshot", "--help"], ["-h"]])
def test_help_and_version_do_not_import_the_docker_sdk(args: list[str]) -> None:
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "voltool", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    imported = {
        m.group(1).split(".")[0]
        for m in re.finditer(r"^import time:\s*\d+ \|\s*\d+ \|\s*(\S+)$", r.stderr, re.M)
    }
    assert "voltool" in imported  # the pattern does read -X importtime's lines
    assert not imported & set(HEAVY), f"{args} imported {sorted(imported & set(HEAVY))}"
