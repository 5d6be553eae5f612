"""verify finds what changed in a stored tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.agenttools import Agent, xattr_support


@pytest.fixture
def stored(agent: Agent, tmp_path: Path) -> tuple[Path, Path]:
    why = xattr_support(tmp_path)
    if why:
        pytest.skip(why)
    src = tmp_path / "src"
    src.mkdir()
    (src / "data").write_bytes(b"0123456789" * 100)
    (src / "mode").write_bytes(b"m")
    (src / "x").write_bytes(b"x")
    os.setxattr(src / "x", "user.keep", b"me")
    (src / "p").write_bytes(b"pair")
    os.link(src / "p", src / "q")
    run = agent("copy", src, tmp_path / "tree")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_bytes(run.out)
    assert agent("verify", tmp_path / "tree", manifest).rc == 0
    return tmp_path / "tree", manifest


def changes(agent: Agent, tree: Path, manifest: Path) -> list[tuple[str, str, str | None]]:
    run = agent("verify", tree, manifest)
    assert run.rc == 1
    assert run.summary["mismatches"] == len(run.lines()) > 0
    return [(d["mismatch"], d["path"], d.get("field")) for d in run.lines()]


def test_flipped_byte(agent: Agent, stored: tuple[Path, Path]) -> None:
    tree, manifest = stored
    with open(tree / "data", "r+b") as f:
        f.seek(500)
        f.write(b"X")
    assert changes(agent, tree, manifest) == [("changed", "data", "sha256")]


def test_changed_mode(agent: Agent, stored: tuple[Path, Path]) -> None:
    tree, manifest = stored
    os.chmod(tree / "mode", 0o604)
    assert changes(agent, tree, manifest) == [("changed", "mode", "mode")]


def test_missing_xattr(agent: Agent, stored: tuple[Path, Path]) -> None:
    tree, manifest = stored
    os.removexattr(tree / "x", "user.keep")
    assert changes(agent, tree, manifest) == [("changed", "x", "xattrs")]


def test_missing_extra_and_split_group(agent: Agent, stored: tuple[Path, Path]) -> None:
    tree, manifest = stored
    (tree / "mode").unlink()
    (tree / "new").write_bytes(b"")
    (tree / "q").unlink()
    (tree / "q").write_bytes(b"pair")  # same content, no longer one inode with p
    assert changes(agent, tree, manifest) == [
        ("missing", "mode", None),
        ("extra", "new", None),
        ("changed", "q", "link"),
    ]


def test_corrupt_manifest_is_fatal(agent: Agent, stored: tuple[Path, Path], tmp_path: Path) -> None:
    tree, manifest = stored
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(manifest.read_bytes().replace(b'"type":"file"', b'"type":"door"', 1))
    run = agent("verify", tree, bad)
    assert run.rc == 3 and run.events[-1]["event"] == "fatal"
