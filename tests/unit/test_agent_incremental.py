"""Incremental copies: what did not change is hard-linked from the previous tree."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from tests.agenttools import Agent, Run, by_path

SETTLE = 1.2  # seconds: ctimes older than this before a copy starts may be trusted


def make_files(src: Path, n: int = 200) -> list[Path]:
    files = []
    for i in range(n):
        d = src / f"d{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"f{i:03}"
        f.write_bytes(b"content %d\n" % i * (i % 5 + 1))
        files.append(f)
    return files


def copy(agent: Agent, src: Path, dst: Path, prev: tuple[Path, Path, Run] | None = None) -> Run:
    args: list[str | os.PathLike[str]] = ["copy", src, dst]
    if prev is not None:
        tree, manifest, run = prev
        args += ["--prev", tree, manifest, "--prev-started", str(run.summary["started_ns"])]
    run = agent(*args)
    assert run.rc == 0, run.events
    return run


def saved(run: Run, path: Path) -> Path:
    path.write_bytes(run.out)
    return path


def ino(p: Path) -> int:
    return os.stat(p, follow_symlinks=False).st_ino


def test_unchanged_files_are_linked_changed_ones_copied(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_files(src)
    time.sleep(SETTLE)
    one = copy(agent, src, tmp_path / "one")
    m1 = saved(one, tmp_path / "one.jsonl")
    assert one.summary["files_linked"] == 0

    edited, same_size = files[3], files[150]
    edited.write_bytes(b"new content")
    st = os.stat(same_size)
    same_size.write_bytes(b"X" + same_size.read_bytes()[1:])
    os.utime(same_size, ns=(st.st_atime_ns, st.st_mtime_ns))  # only ctime tells
    assert os.stat(same_size).st_mtime_ns == st.st_mtime_ns
    (src / "d0" / "added").write_bytes(b"added")
    files[10].unlink()

    two = copy(agent, src, tmp_path / "two", (tmp_path / "one", m1, one))
    changed = {edited, same_size}
    for f in files:
        if f == files[10]:
            continue
        rel = f.relative_to(src)
        shares = ino(tmp_path / "one" / rel) == ino(tmp_path / "two" / rel)
        assert shares == (f not in changed), rel
    assert two.summary["files_linked"] == len(files) - 1 - len(changed)
    assert (tmp_path / "two" / same_size.relative_to(src)).read_bytes()[:1] == b"X"

    fresh = agent("scan", src)
    assert two.out == fresh.out  # the incremental manifest is the full scan's
    assert two.summary["digest"] == fresh.summary["digest"]

    # The new tree stands alone: the previous one can go.
    shutil.rmtree(tmp_path / "one")
    check = agent("verify", tmp_path / "two", saved(two, tmp_path / "two.jsonl"))
    assert check.rc == 0 and check.out == b""


def test_racily_clean_files_are_copied(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_files(src, 20)  # ctimes within a second of the copies below
    one = copy(agent, src, tmp_path / "one")
    m1 = saved(one, tmp_path / "one.jsonl")
    two = copy(agent, src, tmp_path / "two", (tmp_path / "one", m1, one))
    assert two.summary["files_linked"] == 0
    assert ino(tmp_path / "one/d0/f000") != ino(tmp_path / "two/d0/f000")
    time.sleep(SETTLE)
    # Unchanged since, but they were racy when "one" read them: still not trusted.
    three = copy(agent, src, tmp_path / "three", (tmp_path / "one", m1, one))
    assert three.summary["files_linked"] == 0
    # A copy made once they had settled can be linked from.
    m2 = saved(two, tmp_path / "two.jsonl")
    four = copy(agent, src, tmp_path / "four", (tmp_path / "two", m2, two))
    assert four.summary["files_linked"] == 0  # "two" started within a second of them too
    five_prev = copy(agent, src, tmp_path / "five")
    m5 = saved(five_prev, tmp_path / "five.jsonl")
    six = copy(agent, src, tmp_path / "six", (tmp_path / "five", m5, five_prev))
    assert six.summary["files_linked"] == 20


def test_hard_link_groups_stay_groups(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "x").write_bytes(b"pair")
    os.link(src / "x", src / "y")
    (src / "g1").write_bytes(b"three")
    os.link(src / "g1", src / "g2")
    os.link(src / "g1", src / "g3")
    time.sleep(SETTLE)
    one = copy(agent, src, tmp_path / "one")
    m1 = saved(one, tmp_path / "one.jsonl")

    # Split the pair: y becomes a file of its own with the same content.
    shutil.copyfile(src / "y", src / "y.new")
    os.replace(src / "y.new", src / "y")
    assert os.stat(src / "x").st_nlink == 1

    two = copy(agent, src, tmp_path / "two", (tmp_path / "one", m1, one))
    t = tmp_path / "two"
    assert ino(t / "x") != ino(t / "y")
    assert (t / "x").read_bytes() == (t / "y").read_bytes() == b"pair"
    assert ino(t / "g1") == ino(t / "g2") == ino(t / "g3") == ino(tmp_path / "one" / "g1")
    assert ino(t / "x") != ino(tmp_path / "one" / "x")  # its nlink changed: copied
    entries = by_path(two.lines())
    assert "link" not in entries['"y"'] and entries['"g3"']["link"] == "g1"
    assert two.out == agent("scan", src).out


def test_hostile_previous_tree_is_not_linked(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b", "c"):
        (src / name).write_bytes(b"secret-free %s" % name.encode())
    time.sleep(SETTLE)
    one = copy(agent, src, tmp_path / "one")
    m1 = saved(one, tmp_path / "one.jsonl")
    prev = tmp_path / "one"
    outside = tmp_path / "outside"
    outside.write_bytes(b"outside of it")  # same size as the files
    (prev / "a").unlink()
    os.symlink(outside, prev / "a")
    (prev / "b").unlink()
    (prev / "b").write_bytes(b"longer than it was")

    two = copy(agent, src, tmp_path / "two", (prev, m1, one))
    t = tmp_path / "two"
    assert two.summary["files_linked"] == 1  # c only
    assert (t / "a").read_bytes() == b"secret-free a" and not (t / "a").is_symlink()
    assert (t / "b").read_bytes() == b"secret-free b"
    assert ino(t / "c") == ino(prev / "c")
    assert outside.read_bytes() == b"outside of it"
    assert two.out == agent("scan", src).out


def test_out_of_order_previous_manifest_is_not_linked_from(agent: Agent, tmp_path: Path) -> None:
    """Lines out of order were not written by the agent: nothing after them is trusted."""
    src = tmp_path / "src"
    make_files(src, 5)
    one = copy(agent, src, tmp_path / "one")
    lines = one.out.splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join([lines[0], lines[2], lines[1], *lines[3:]]))
    run = agent(
        "copy", src, tmp_path / "two", "--prev", tmp_path / "one", bad,
        "--prev-started", str(one.summary["started_ns"]),
    )  # fmt: skip
    assert run.rc == 0, run.events
    [warning] = [e for e in run.events if e["event"] == "warning"]
    assert "damaged" in warning["what"] and "out of order" in warning["what"]
    assert run.summary["digest"] == one.summary["digest"]
