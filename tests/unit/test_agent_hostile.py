"""A previous tree that was tampered with, and sources built to exhaust the agent."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from tests.agenttools import Agent
from tests.unit.test_agent_incremental import SETTLE, copy, ino, saved


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
