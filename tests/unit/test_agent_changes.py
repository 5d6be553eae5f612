"""A source that changes while the agent reads it; bad command lines and destinations."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agenttools import Agent
from voltool.agent import copy as agent_copy
from voltool.agent import scan as agent_scan
from voltool.agent.entry import Entry
from voltool.agent.report import Reporter
from voltool.agent.walk import Changed, open_regular

PASSWD = Path("/etc/passwd")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    s = tmp_path / "src"
    s.mkdir()
    (s / "victim").write_bytes(b"harmless")
    (s / "other").write_bytes(b"other")
    return s


def test_open_refuses_a_file_swapped_for_a_symlink(src: Path) -> None:
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        st = os.stat(b"victim", dir_fd=fd, follow_symlinks=False)
        # Its inode stays taken (a link elsewhere), so that no new file below gets its number.
        os.link(src / "victim", src / "kept")
        (src / "victim").unlink()
        os.symlink(PASSWD, src / "victim")
        with pytest.raises(Changed):
            open_regular(fd, b"victim", st)
        # and one swapped for another file (another inode)
        (src / "victim.new").write_bytes(b"harmless")
        os.replace(src / "victim.new", src / "victim")
        assert os.stat(src / "victim").st_ino != st.st_ino
        with pytest.raises(Changed):
            open_regular(fd, b"victim", st)
    finally:
        os.close(fd)


def swapping(module: object, monkeypatch: pytest.MonkeyPatch, action: str) -> None:
    """Make `module`'s open_regular see "victim" change just before it opens it."""
    real = open_regular

    def swap_then_open(dir_fd: int, name: bytes, st: os.stat_result) -> tuple[int, os.stat_result]:
        if name == b"victim" and os.path.lexists(f"/proc/self/fd/{dir_fd}/victim"):
            os.unlink(b"victim", dir_fd=dir_fd)
            if action == "symlink":
                os.symlink(PASSWD, b"victim", dir_fd=dir_fd)
        return real(dir_fd, name, st)

    monkeypatch.setattr(module, "open_regular", swap_then_open)


def scan_in_process(root: Path) -> tuple[list[Entry], Reporter]:
    reporter = Reporter(io.StringIO())
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return list(agent_scan.Scanner(reporter).entries(fd)), reporter
    finally:
        os.close(fd)


def copy_in_process(src: Path, dst: Path) -> tuple[list[Entry], Reporter]:
    reporter = Reporter(io.StringIO())
    dst.mkdir(mode=0o700)
    s, d = os.open(src, os.O_RDONLY | os.O_DIRECTORY), os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    out: list[Entry] = []
    try:
        agent_copy.Copier(reporter, s, d, time.time_ns(), out.append).run()
    finally:
        os.close(s)
        os.close(d)
    return out, reporter


def passwd_hash() -> str:
    return hashlib.sha256(PASSWD.read_bytes()).hexdigest()


def test_scan_never_reads_through_a_swapped_in_symlink(
    src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    swapping(agent_scan, monkeypatch, "symlink")
    entries, reporter = scan_in_process(src)
    victim = next(e for e in entries if e.path == b"victim")
    assert victim.type == "symlink" and victim.target == os.fsencode(PASSWD)
    assert all(e.sha256 != passwd_hash() for e in entries)
    assert reporter.counts.errors == 0


def test_copy_never_reads_through_a_swapped_in_symlink(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    swapping(agent_copy, monkeypatch, "symlink")
    entries, reporter = copy_in_process(src, tmp_path / "dst")
    assert (tmp_path / "dst" / "victim").is_symlink()
    assert os.readlink(tmp_path / "dst" / "victim") == str(PASSWD)
    assert all(e.sha256 != passwd_hash() for e in entries)
    assert (tmp_path / "dst" / "other").read_bytes() == b"other"
    assert reporter.counts.errors == 0


def test_vanished_entries_are_counted_not_errors(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    swapping(agent_copy, monkeypatch, "delete")
    entries, reporter = copy_in_process(src, tmp_path / "dst")
    assert [e.path for e in entries] == [b".", b"other"]
    assert reporter.counts.vanished == 1 and reporter.counts.errors == 0
    assert not (tmp_path / "dst" / "victim").exists()


def test_a_file_growing_during_the_copy_is_copied_again(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = agent_copy.Copier._copy_data
    grown = []

    def grow_once(self: agent_copy.Copier, s: int, d: int, size: int) -> None:
        real(self, s, d, size)
        if not grown and os.fstat(s).st_size == len(b"harmless"):
            grown.append(1)
            with open(src / "victim", "ab") as f:
                f.write(b" and more")

    monkeypatch.setattr(agent_copy.Copier, "_copy_data", grow_once)
    entries, reporter = copy_in_process(src, tmp_path / "dst")
    victim = next(e for e in entries if e.path == b"victim")
    assert grown
    assert (tmp_path / "dst" / "victim").read_bytes() == b"harmless and more"
    assert victim.size == len(b"harmless and more")
    assert victim.sha256 == hashlib.sha256(b"harmless and more").hexdigest()
    assert reporter.counts.unstable == 0


def test_a_file_that_never_settles_keeps_a_consistent_last_copy(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = agent_copy.Copier._copy_data

    def grow_always(self: agent_copy.Copier, s: int, d: int, size: int) -> None:
        real(self, s, d, size)
        with open(src / "victim", "ab") as f:
            f.write(b"+")

    monkeypatch.setattr(agent_copy.Copier, "_copy_data", grow_always)
    entries, reporter = copy_in_process(src, tmp_path / "dst")
    victim = next(e for e in entries if e.path == b"victim")
    held = (tmp_path / "dst" / "victim").read_bytes()
    assert victim.sha256 == hashlib.sha256(held).hexdigest() and victim.size == len(held)
    assert held.startswith(b"harmless") and reporter.counts.unstable >= 1
    # the entry's ctime predates the last change, so a later comparison sees it changed
    assert victim.ctime_ns < os.stat(src / "victim").st_ctime_ns or victim.size != len(
        (src / "victim").read_bytes()
    )


def lines_of(run_events: list[dict[str, object]]) -> Iterator[str]:
    return (str(e["event"]) for e in run_events)


def test_usage_and_fatal_exit_codes(agent: Agent, src: Path, tmp_path: Path) -> None:
    usage = agent("copy", src)
    assert usage.rc == 2 and list(lines_of(usage.events)) == ["fatal"]
    assert agent("copy", src, tmp_path / "d", "--prev", src, src).rc == 2  # no --prev-started
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_bytes(b"")
    not_empty = agent("copy", src, full)
    assert not_empty.rc == 3 and "not empty" in str(not_empty.events[-1]["message"])
    missing = agent("scan", tmp_path / "nope")
    assert missing.rc == 3 and missing.out == b""
    ok = agent("scan", src)
    assert ok.rc == 0 and list(lines_of(ok.events)) == ["summary"]
