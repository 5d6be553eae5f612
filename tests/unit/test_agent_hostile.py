"""A previous tree that was tampered with, and sources built to exhaust the agent."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.agenttools import PACKAGE, Agent
from tests.unit.test_agent_incremental import SETTLE, copy, ino, saved
from voltool.agent.report import Reporter
from voltool.agent.scan import Scanner


def _same_times(*paths: Path) -> None:
    st = os.stat(paths[0])
    for p in paths:
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_previous_tree_cannot_join_two_source_files(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"aaaa")
    (src / "b").write_bytes(b"bbbb")
    _same_times(src / "a", src / "b")  # same size, mode, owner and mtime
    time.sleep(SETTLE)
    one = copy(agent, src, tmp_path / "one")
    m1 = saved(one, tmp_path / "one.jsonl")
    prev = tmp_path / "one"
    (prev / "b").unlink()
    os.link(prev / "a", prev / "b")  # the store makes them one inode

    two = copy(agent, src, tmp_path / "two", (prev, m1, one))
    t = tmp_path / "two"
    assert ino(t / "a") != ino(t / "b")
    assert (t / "b").read_bytes() == b"bbbb"
    assert two.out == agent("scan", src).out


def test_a_store_file_that_is_the_source_inode_is_not_linked(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"aaaa")
    time.sleep(SETTLE)
    one = copy(agent, src, tmp_path / "one")
    prev = tmp_path / "one"
    (prev / "a").unlink()
    os.link(src / "a", prev / "a")  # by someone who mounts both volumes' parent
    # ... with a manifest that agrees with the source inode as it is now.
    lines = [json.loads(line) for line in one.out.splitlines()]
    st = os.stat(src / "a")
    for e in lines:
        if e["path"] == "a":
            e.update(ino=st.st_ino, ctime_ns=st.st_ctime_ns, nlink=st.st_nlink)
    m1 = tmp_path / "one.jsonl"
    m1.write_bytes(
        b"".join(
            json.dumps(e, sort_keys=True, separators=(",", ":")).encode() + b"\n" for e in lines
        )
    )
    time.sleep(SETTLE)
    # ... and a previous snapshot that says it started after that (not racily clean).
    later = copy(agent, tmp_path / "one", tmp_path / "scratch")
    two = copy(agent, src, tmp_path / "two", (prev, m1, later))
    assert two.summary["files_linked"] == 0
    assert ino(tmp_path / "two" / "a") != ino(src / "a")
    (src / "a").write_bytes(b"AAAA")  # the source changes: the snapshot must not
    assert (tmp_path / "two" / "a").read_bytes() == b"aaaa"


def test_previous_setuid_file_with_other_content_is_not_linked(
    agent: Agent, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    tool = src / "tool"
    tool.write_bytes(b"#!/bin/sh\necho good\n")
    os.chmod(tool, 0o4755)
    time.sleep(SETTLE)
    one = copy(agent, src, tmp_path / "one")
    m1 = saved(one, tmp_path / "one.jsonl")
    prev = tmp_path / "one" / "tool"
    st = os.stat(prev)
    with open(prev, "r+b") as f:  # same size, same mtime, other content
        f.write(b"#!/bin/sh\necho evil\n")
    os.utime(prev, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(prev).st_mode == st.st_mode

    copy(agent, src, tmp_path / "two", (tmp_path / "one", m1, one))
    assert (tmp_path / "two" / "tool").read_bytes() == b"#!/bin/sh\necho good\n"


def test_previous_tree_fifo_is_never_opened(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    time.sleep(SETTLE)
    one = copy(agent, src, tmp_path / "one")
    m1 = saved(one, tmp_path / "one.jsonl")
    fifo = tmp_path / "one" / "f"
    fifo.unlink()
    os.mkfifo(fifo)
    opened = threading.Event()

    def writer() -> None:
        fd = os.open(fifo, os.O_WRONLY)  # returns once someone opens it for reading
        opened.set()
        os.close(fd)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        two = copy(agent, src, tmp_path / "two", (tmp_path / "one", m1, one))
        time.sleep(0.2)
        assert not opened.is_set(), "the agent opened the previous tree's FIFO"
        assert (tmp_path / "two" / "f").read_bytes() == b"data"
        assert two.summary["files_linked"] == 0
    finally:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # let the writer go
        t.join(5)


def test_a_symlink_in_place_of_the_tree_to_copy_is_not_followed(
    agent: Agent, tmp_path: Path
) -> None:
    # A restore's old data (.voltool-old-<op>) lives in a volume its containers write:
    # one may put a symlink there, to the store the copy goes into, or anywhere.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret").write_bytes(b"not the old data")
    (tmp_path / "vol").mkdir()
    (tmp_path / "vol" / ".old").symlink_to(tmp_path / "elsewhere")
    for command in (
        ["copy", tmp_path / "vol" / ".old", tmp_path / "dst"],
        ["scan", tmp_path / "vol" / ".old"],
    ):
        run = agent(*command)
        assert run.rc == 3 and [e["event"] for e in run.events] == ["fatal"], run.events
        assert not (tmp_path / "dst" / "secret").exists()
    # The caller's own path may still pass through symlinks above its last component.
    (tmp_path / "link").symlink_to(tmp_path / "vol")
    (tmp_path / "vol" / "data").mkdir()
    (tmp_path / "vol" / "data" / "f").write_bytes(b"f")
    run = agent("copy", tmp_path / "link" / "data", tmp_path / "dst2")
    assert run.rc == 0 and (tmp_path / "dst2" / "f").read_bytes() == b"f", run.events


def _deep(root: Path, depth: int, name: bytes = b"d") -> bytes:
    """A chain of `depth` directories under `root`; returns its path relative to root."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        os.close(os.open(b"leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
        os.link(b"leaf", b"twin", src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)
    return b"/".join([name] * depth)


def _remove_deep(root: Path) -> None:
    """rm -r without recursion (shutil.rmtree, pytest's cleanup among them, recurses)."""
    stack = [(os.open(root, os.O_RDONLY | os.O_DIRECTORY), "")]
    while stack:
        fd = stack[-1][0]
        sub = next((e.name for e in os.scandir(fd) if e.is_dir(follow_symlinks=False)), None)
        if sub is not None:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
            stack.append((os.open(sub, flags, dir_fd=fd), sub))
            continue
        for name in os.listdir(fd):
            os.unlink(name, dir_fd=fd)
        os.close(fd)
        name = stack.pop()[1]
        if stack:
            os.rmdir(name, dir_fd=stack[-1][0])
    os.rmdir(root)


def _inodes_at(root: Path, rel: bytes, *names: bytes) -> list[int]:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in rel.split(b"/"):
            sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = sub
        return [os.stat(n, dir_fd=fd, follow_symlinks=False).st_ino for n in names]
    finally:
        os.close(fd)


def test_a_very_deep_tree_is_copied_whole(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    try:
        rel = _deep(src, 10_000)
        one = agent("copy", src, tmp_path / "one", "--no-sync")
        assert one.rc == 0, one.errors()[:3]
        # One path for the whole depth, not one per level (145 MiB when it was).
        assert one.maxrss_kib < 64 * 1024, one.maxrss_kib
        prev = ["--prev", tmp_path / "one", tmp_path / "one.jsonl", "--prev-started", "0"]
        saved(one, tmp_path / "one.jsonl")
        two = agent("copy", src, tmp_path / "two", "--no-sync", *prev)
        assert two.rc == 0, two.errors()[:3]
        assert two.maxrss_kib < 64 * 1024, two.maxrss_kib
        a, b = _inodes_at(tmp_path / "two", rel, b"leaf", b"twin")
        assert a == b
    finally:
        for tree in ("src", "one", "two"):
            if (tmp_path / tree).exists():
                _remove_deep(tmp_path / tree)


def test_hard_links_deeper_than_path_max_stay_linked(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    rel = _deep(src, 40, b"n" * 200)  # 8 KiB of path: more than PATH_MAX
    run = agent("copy", src, tmp_path / "dst", "--no-sync")
    assert run.rc == 0, run.errors()[:3]
    a, b = _inodes_at(tmp_path / "dst", rel, b"leaf", b"twin")
    assert a == b


def test_a_file_that_keeps_growing_is_read_in_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    grows = src / "grows"
    grows.write_bytes(b"x" * 4096)
    real_readv = os.readv
    read = [0]

    def readv_then_grow(fd: int, buffers: list[bytearray]) -> int:
        n = real_readv(fd, buffers)
        read[0] += n
        size = os.fstat(fd).st_size
        if n and size < 1 << 30:  # a writer always ahead of the reader (holes: no disk)
            with open(grows, "r+b") as f:
                f.truncate(size + 2 * len(buffers[0]))
        return n

    monkeypatch.setattr(os, "readv", readv_then_grow)
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        reporter = Reporter(io.StringIO())
        entries = list(Scanner(reporter).entries(fd))
    finally:
        os.close(fd)
    assert read[0] < 64 << 20, f"read {read[0]} bytes of a file that kept growing"
    (entry,) = [e for e in entries if e.path == b"grows"]
    assert reporter.counts.unstable == 1 and entry.size <= 1 << 30


def test_a_closed_stdout_ends_in_a_fatal_line_and_exit_3(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3000):
        (src / f"f{i:05}").write_bytes(b"%d" % i)
    boot = (
        f"import runpy, sys; sys.path.insert(0, {str(agent.parent)!r}); sys.argv[0] = {PACKAGE!r}; "
        f"runpy.run_module({PACKAGE!r}, run_name='__main__', alter_sys=True)"
    )
    r, w = os.pipe()
    os.close(r)  # nobody reads the manifest
    try:
        p = subprocess.run(
            [sys.executable, "-I", "-S", "-c", boot, "scan", str(src)],
            stdout=w, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, check=False, timeout=60,
        )  # fmt: skip
    finally:
        os.close(w)
    events = [json.loads(line) for line in p.stderr.decode().splitlines()]  # JSON only
    assert p.returncode == 3 and events[-1]["event"] == "fatal", events


def test_an_inode_number_given_to_a_new_file_does_not_join_the_old_group(tmp_path: Path) -> None:
    from voltool.agent.entry import Entry
    from voltool.agent.links import LinkGroups

    # The walk met a/f, one of two names of an inode; before it reaches the other name,
    # both go, and a new file gets the same inode number (ext4 reuses them at once).
    old = tmp_path / "old"
    old.write_bytes(b"OLD SECRET")
    os.link(old, tmp_path / "old2")
    st = os.stat(old)
    groups = LinkGroups()
    groups.first(Entry.of(b"a/f", st, sha256="0" * 64, size=st.st_size), st)
    time.sleep(0.01)
    old.write_bytes(b"new file")  # the same inode, changed: as a reused number looks
    again = os.stat(old)
    assert (again.st_dev, again.st_ino) == (st.st_dev, st.st_ino)
    assert groups.member(b"z/h", again) is None
    # An unchanged inode is still a member of its group.
    groups.first(Entry.of(b"a/f", again, sha256="0" * 64, size=again.st_size), again)
    member = groups.member(b"z/g", os.stat(tmp_path / "old2"))
    assert member is not None and member.link == b"a/f"


@pytest.mark.parametrize("seal", [True, False], ids=["sealed", "unsealed"])
def test_a_copy_written_into_while_it_is_made_is_caught_when_sealed(
    agent: Agent, tmp_path: Path, seal: bool
) -> None:
    """A restore's staging directory is in the target volume, whose containers run while
    it is staged. A file the copy has finished (mode and times set) and someone then
    rewrites before the copy ends keeps a ctime older than the copy's end, so only
    reading the copy back (--seal) catches it; without it the copy says nothing."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "first").write_bytes(b"the snapshot's bytes\n")
    for i in range(50):
        (src / "b" / f"{i:02}").parent.mkdir(exist_ok=True)
        (src / "b" / f"{i:02}").write_bytes(b"%d\n" % i)
    dst = tmp_path / "stage"
    proc = _held_copy(agent, src, dst, seal)
    try:
        assert proc.stderr is not None
        target = dst / "a" / "first"
        st = target.stat()
        with open(target, "r+b") as f:  # same size, times put back: as an attacker would
            f.write(b"THE ATTACKER'S BYTES\n"[: st.st_size])
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        proc.send_signal(signal.SIGUSR1)
        rest = proc.stderr.read()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [json.loads(line) for line in rest.decode().splitlines()]
    errors = [e for e in events if e["event"] == "error"]
    if seal:
        assert proc.returncode == 1, events
        assert [(e["path"], e["op"]) for e in errors] == [(".", "seal")]
    else:
        assert proc.returncode == 0 and errors == [], events


def test_an_entry_whose_manifest_line_no_reader_takes_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    """Many large xattrs (where the filesystem allows them) can make one manifest line
    longer than any reader takes: such an entry is an error, never a manifest that
    would poison every later snapshot of the volume. The bound is lowered here to meet
    with a long name what would take megabytes of xattrs."""
    from voltool.agent import main as agent_main

    src = tmp_path / "src"
    src.mkdir()
    (src / ("n" * 250)).write_bytes(b"x")
    (src / "short").write_bytes(b"y")
    monkeypatch.setattr(agent_main, "MAX_LINE", 400)
    for command in (["scan", str(src)], ["copy", "--no-sync", str(src), str(tmp_path / "d")]):
        assert agent_main.main(command) == 1
        out, err = capfdbinary.readouterr()
        paths = [json.loads(line)["path"] for line in out.splitlines()]
        assert paths == [".", "short"]
        errors = [e for e in map(json.loads, err.splitlines()) if e["event"] == "error"]
        assert [(e["path"], e["op"]) for e in errors] == [("n" * 250, "manifest")]


@pytest.mark.parametrize("where", ["first line", "part-way"])
def test_a_damaged_previous_manifest_makes_a_full_copy_not_a_failure(
    agent: Agent, tmp_path: Path, where: str
) -> None:
    """A previous snapshot whose manifest no longer reads (altered, or a line over the
    bound) must not stop every later snapshot of the volume: what read well is linked
    from, the rest copied, with a warning."""
    src = tmp_path / "src"
    for name in ("a", "b", "c", "d"):
        (src / name).mkdir(parents=True)
        (src / name / "f").write_bytes(name.encode() * 100)
    time.sleep(SETTLE)
    one = copy(agent, src, tmp_path / "one")
    lines = one.out.splitlines(keepends=True)
    at = 0 if where == "first line" else 4  # ".", "a", "a/f", "b", then "b/f"
    lines[at] = b"not a manifest line\n"
    manifest = tmp_path / "one.jsonl"
    manifest.write_bytes(b"".join(lines))
    two = copy(agent, src, tmp_path / "two", (tmp_path / "one", manifest, one))
    warnings = [e for e in two.events if e["event"] == "warning"]
    assert len(warnings) == 1 and "previous manifest is damaged" in warnings[0]["what"]
    assert two.summary["digest"] == one.summary["digest"]
    linked = {
        p
        for p in ("a", "b", "c", "d")
        if ino(tmp_path / "two" / p / "f") == ino(src.parent / "one" / p / "f")
    }
    assert linked == (set() if where == "first line" else {"a"})


def _held_copy(agent: Agent, src: Path, dst: Path, seal: bool = True) -> subprocess.Popen[bytes]:
    """A staging copy (`--seal` if `seal`) of `src` into `dst`, held after its first file
    (SIGUSR1 resumes it)."""
    boot = (
        f"import runpy, sys; sys.path.insert(0, {str(agent.parent)!r}); sys.argv[0] = {PACKAGE!r}; "
        f"runpy.run_module({PACKAGE!r}, run_name='__main__', alter_sys=True)"
    )
    args = ["copy", "--no-sync", "--private-root", *(["--seal"] if seal else []), src, dst]
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", boot, *map(str, args)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env={**os.environ, "VOLTOOL_TEST_HOLD_AT": "agent-copied-a-file"},
    )  # fmt: skip
    assert proc.stderr is not None
    assert json.loads(proc.stderr.readline()) == {"event": "held", "step": "agent-copied-a-file"}
    return proc


def test_a_staging_directory_put_in_place_of_the_copy_is_refused(
    agent: Agent, tmp_path: Path
) -> None:
    """A container moves the directory being filled away and puts a tree of its own, made
    earlier (old ctimes, the same number of entries), in its place: the copy and its seal
    see their own directory, so `settled` must hold the path to that directory."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i:02}").write_bytes(b"%d\n" % i)
    fake = tmp_path / "fake"
    shutil.copytree(src, fake)
    (fake / "f00").write_bytes(b"EVIL\n")
    dst = tmp_path / "stage"
    proc = _held_copy(agent, src, dst)
    try:
        dst.rename(tmp_path / "moved")
        fake.rename(dst)
        proc.send_signal(signal.SIGUSR1)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    summary = json.loads(err.splitlines()[-1])
    since = str(summary["settled_ns"])
    assert agent("settled", dst, since).rc == 0  # by its ctimes alone, the fake passes
    held = agent("settled", dst, since, "--root", summary["root"], "--seal", summary["seal"])
    assert held.rc == 1
    assert [(e["path"], e["op"]) for e in held.errors()] == [(".", "settled")]


def test_on_a_filesystem_that_never_writes_back_settled_reads_the_data_again(
    agent: Agent, tmp_path: Path
) -> None:
    """On tmpfs a page mapped writable before the seal stays writable after a sync, and
    writes through it move no ctime: there `settled` holds the content to the seal too."""
    for base, rescanned in ((Path(tempfile.mkdtemp(dir="/dev/shm")), True), (tmp_path, False)):
        try:
            src = base / "src"
            src.mkdir()
            (src / "f").write_bytes(b"the snapshot's bytes\n")
            made = agent("copy", "--no-sync", "--private-root", "--seal", src, base / "stage")
            assert made.rc == 0, made.errors()
            since, root = str(made.summary["settled_ns"]), made.summary["root"]
            # Content changed with no ctime moved: what a write through such a mapping does.
            wrong_seal = "0" * 64
            run = agent("settled", base / "stage", since, "--root", root, "--seal", wrong_seal)
            assert run.rc == (1 if rescanned else 0), run.events
            right = agent(
                "settled", base / "stage", since, "--root", root, "--seal", made.summary["seal"]
            )
            assert right.rc == 0, right.events
        finally:
            if base != tmp_path:
                shutil.rmtree(base)


def test_on_a_filesystem_that_never_writes_back_files_are_linked_by_content(
    agent: Agent, tmp_path: Path
) -> None:
    """On tmpfs a write through a shared mapping moves no ctime after its first, so an
    unchanged identity proves nothing: a file is linked only if its content, read now, is
    the previous one's. Seen here in a file replaced by another inode with the same bytes
    and times, which by identity would be copied and by content is linked."""
    for base, by_content in ((Path(tempfile.mkdtemp(dir="/dev/shm")), True), (tmp_path, False)):
        try:
            src = base / "src"
            src.mkdir()
            (src / "f").write_bytes(b"the same bytes\n")
            (src / "g").write_bytes(b"other bytes\n")
            time.sleep(SETTLE)
            one = copy(agent, src, base / "one")
            manifest = saved(one, base / "one.jsonl")
            shutil.copy2(src / "f", src / "f.new")  # another inode, same bytes and mtime
            (src / "f.new").rename(src / "f")
            two = copy(agent, src, base / "two", (base / "one", manifest, one))
            linked = ino(base / "two" / "f") == ino(base / "one" / "f")
            assert linked is by_content
            assert two.summary["files_linked"] == (2 if by_content else 1)
            assert ino(base / "two" / "g") == ino(base / "one" / "g")
        finally:
            if base != tmp_path:
                shutil.rmtree(base)
