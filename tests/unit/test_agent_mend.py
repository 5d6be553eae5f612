"""The agent's `mend`: what a restic restore leaves out (sockets, holes, times past 2262),
put back from the manifest, and nothing else, never through a symlink."""

from __future__ import annotations

import io
import os
import socket
import stat
from pathlib import Path

from tests.unit.test_agent_changes import scan_in_process
from voltool.agent.entry import Entry
from voltool.agent.mend import mend
from voltool.agent.report import Reporter

_IGNORED = ("ino", "dev", "ctime_ns", "atime_ns", "nlink")
FAR_FUTURE_NS = 10485849600 * 10**9 + 7  # the year 2302


def comparable(entries: list[Entry]) -> list[dict[str, object]]:
    out = []
    for e in entries:
        d = {k: v for k, v in e.fields().items() if k not in _IGNORED and k != "alloc"}
        if e.type == "file":
            d["holes"] = e.alloc < e.size
        out.append(d)
    return out


def original(root: Path) -> None:
    (root / "d").mkdir(parents=True)
    (root / "plain").write_bytes(b"plain")
    with open(root / "sparse", "wb") as f:
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(b"x")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "d" / "sock"))
    os.chmod(root / "d" / "sock", 0o640)
    os.utime(root / "d" / "sock", ns=(1, 1_600_000_000_123_456_789))
    os.utime(root / "plain", ns=(1, FAR_FUTURE_NS))
    os.utime(root / "sparse", ns=(1, 1_500_000_000_000_000_001))
    os.utime(root / "d", ns=(1, 1_400_000_000_000_000_002))


def as_restic_restores(src: Path, dst: Path) -> None:
    """What restic 0.14 makes of `original`: no socket, files dense, the far time wrong."""
    (dst / "d").mkdir(parents=True)
    (dst / "plain").write_bytes(b"plain")
    (dst / "sparse").write_bytes((src / "sparse").read_bytes())  # every zero written
    os.utime(dst / "plain", ns=(1, -(2**31) * 10**9))
    for name in ("sparse", "d"):
        st = os.stat(src / name)
        os.utime(dst / name, ns=(st.st_atime_ns, st.st_mtime_ns))
    st = os.stat(src)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def run_mend(tree: Path, entries: list[Entry]) -> Reporter:
    lines = [e.line() for e in entries]
    reporter = Reporter(io.StringIO())
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        mend(reporter, fd, lambda: iter(lines))
    finally:
        os.close(fd)
    return reporter


def test_mend_puts_back_sockets_holes_and_times_and_the_tree_then_equals_the_original(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    original(src)
    want, _ = scan_in_process(src)
    as_restic_restores(src, dst)
    before, _ = scan_in_process(dst)
    assert comparable(before) != comparable(want)
    assert os.stat(dst / "sparse").st_blocks * 512 >= 8 << 20  # dense

    reporter = run_mend(dst, want)
    assert reporter.counts.errors == 0
    got, _ = scan_in_process(dst)
    assert comparable(got) == comparable(want)
    assert os.stat(dst / "sparse").st_blocks * 512 < 1 << 20
    assert (dst / "sparse").read_bytes() == (src / "sparse").read_bytes()
    assert stat.S_ISSOCK(os.lstat(dst / "d" / "sock").st_mode)


def test_mend_follows_no_symlink_and_makes_nothing_that_is_there(tmp_path: Path) -> None:
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    original(src)
    want, _ = scan_in_process(src)
    as_restic_restores(src, dst)
    outside.mkdir()
    os.rmdir(dst / "d")
    os.symlink(outside, dst / "d")  # a hostile tree: the socket's directory is a symlink
    (dst / "plain").unlink()
    with socket.socket(socket.AF_UNIX) as s:  # something else where a file should be
        s.bind(str(dst / "plain"))

    reporter = run_mend(dst, want)
    assert list(outside.iterdir()) == []  # nothing made through the symlink
    assert reporter.counts.errors >= 1  # said so
    assert stat.S_ISSOCK(os.lstat(dst / "plain").st_mode)  # left for the digest to find
