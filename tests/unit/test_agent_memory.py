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


def test_a_stored_trees_groups_are_its_manifests(agent: Agent, tmp_path: Path) -> None:
    """A stored tree's files are linked from other snapshots too, so every link count is
    above 1: read as a source would be, every file would be held as the first member of
    a group that never completes. Read as stored (`verify --stored`, `copy --groups`),
    only the manifest's groups are, and each group comes out as the manifest has it."""
    from voltool.agent.links import LinkGroups, expected_groups
    from voltool.agent.report import Reporter
    from voltool.agent.scan import Scanner

    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(500):
        (src / "d" / f"f{i:03}").write_text(f"{i}\n")
    os.link(src / "d" / "f000", src / "d" / "g000")  # one group of the source's own
    snap = tmp_path / "snap"
    made = agent("copy", src, snap, "--no-sync")
    assert made.rc == 0, made.errors()
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_bytes(made.out)
    # Another snapshot sharing every file, as in a store.
    other = tmp_path / "other"
    (other / "d").mkdir(parents=True)
    for f in (snap / "d").iterdir():
        os.link(f, other / "d" / f.name)
    assert os.stat(snap / "d" / "f001").st_nlink == 2

    def held(groups: LinkGroups) -> tuple[int, dict[bytes, bytes | None]]:
        most = 0
        links = {}
        fd = os.open(snap, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for entry in Scanner(Reporter(), groups).entries(fd):
                most = max(most, len(groups._open))
                links[entry.path] = entry.link
        finally:
            os.close(fd)
        return most, links

    as_source, source_links = held(LinkGroups())
    lines = manifest.read_bytes().splitlines(keepends=True)
    as_stored, stored_links = held(LinkGroups(expected_groups(lines)))
    assert as_source >= 500  # every shared file held: what --stored is for
    assert as_stored == 1  # the one group, until its other member is met
    assert stored_links[b"d/g000"] == b"d/f000"
    assert [p for p, link in stored_links.items() if link] == [b"d/g000"]
    assert source_links == stored_links  # the same groups, whichever way they are found

    checked = agent("verify", "--stored", snap, manifest)
    assert checked.rc == 0 and checked.out == b"", checked.out[:500]
    staged = agent("copy", snap, tmp_path / "stage", "--no-sync", "--groups", manifest)
    assert staged.rc == 0, staged.errors()
    assert staged.summary["digest"] == made.summary["digest"]
    assert (
        os.stat(tmp_path / "stage" / "d" / "g000").st_ino
        == os.stat(tmp_path / "stage" / "d" / "f000").st_ino
    )
    # A store that split the group (same bytes, another inode) is caught.
    (snap / "d" / "g000").unlink()
    (snap / "d" / "g000").write_text("0\n")
    split = agent("verify", "--stored", snap, manifest)
    assert split.rc == 1
    assert [(m["path"], m["field"]) for m in split.lines()] == [("d/g000", "link")]
