"""The agent's memory does not grow with the number of entries (peak RSS: VmHWM).

20,000 files by default, so the unit suite stays quick; the figure asked of
the agent is for 200,000: `VOLTOOL_AGENT_RSS_FILES=200000 pytest -s` on this
file (about two minutes). This is a measure, not a benchmark: no times are
asserted, they are printed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.agenttools import Agent

FILES = int(os.environ.get("VOLTOOL_AGENT_RSS_FILES", "20000"))
LIMIT_KIB = 64 * 1024


def test_peak_rss_of_scan_and_copy(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    per_dir = 1000
    for i in range(FILES):
        d = src / f"d{i // per_dir:04}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        fd = os.open(d / f"file-{i:07}", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"%d\n" % i)
        os.close(fd)
    # one large directory too: its sorted name list is what a directory costs
    big = src / "big"
    big.mkdir()
    for i in range(min(FILES // 4, 50_000)):
        os.close(os.open(big / f"entry-with-a-longish-name-{i:07}", os.O_WRONLY | os.O_CREAT))
    manifest = tmp_path / "dst.jsonl"
    incremental = ["--prev", tmp_path / "dst", manifest, "--prev-started", "0"]
    results = {}
    for label, args in (
        ("scan", ["scan", src]),
        ("copy", ["copy", src, tmp_path / "dst", "--no-sync"]),
        ("incremental copy", ["copy", src, tmp_path / "dst2", "--no-sync", *incremental]),
    ):
        t0 = time.monotonic()
        run = agent(*args)
        took = time.monotonic() - t0
        assert run.rc == 0, run.errors()
        assert run.summary["files"] >= FILES
        if label == "copy":
            manifest.write_bytes(run.out)
        results[label] = run.maxrss_kib
        print(f"{label}: {run.summary['entries']} entries, peak RSS {run.maxrss_kib} KiB, "
              f"{took:.1f} s")  # fmt: skip
        assert run.maxrss_kib < LIMIT_KIB, f"{label} peaked at {run.maxrss_kib} KiB"
