"""A copy keeps everything the archive API loses; scan, copy and verify agree."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from tests.agenttools import ACL, CAPABILITY, Agent, by_path, comparable, xattr_support

NS = 123_456_789
PRE_1970 = -1_234_567_890_123_456_789  # 1930
AFTER_2262 = 10_000_000_000 * 10**9 + 7  # 2286, beyond a signed 64-bit count of ns
ODD_NAMES = [b"new\nline", b"back\\slash", b'quo"te', b"it's", b"\xff\xfenot-utf8", b"tab\there"]
MIB = 1 << 20


def b(p: Path) -> bytes:
    return os.fsencode(p)


def make_tree(root: Path) -> None:
    """The fidelity tree: one of everything voltool must keep."""
    root.mkdir()
    (root / "plain").write_bytes(b"hello\n" * 1000)
    (root / "empty").write_bytes(b"")
    (root / "ns").write_bytes(b"ns")
    os.utime(root / "ns", ns=(NS, 1_700_000_000 * 10**9 + NS))
    (root / "old").write_bytes(b"old")
    os.utime(root / "old", ns=(PRE_1970, PRE_1970))
    (root / "future").write_bytes(b"future")
    os.utime(root / "future", ns=(AFTER_2262, AFTER_2262))
    (root / "xdir").mkdir()
    os.setxattr(root / "xdir", "user.dir", b"on a dir")
    (root / "xdir" / "xfile").write_bytes(b"x")
    os.setxattr(root / "xdir" / "xfile", "user.file", b"\x00binary\xff")
    (root / "acl").write_bytes(b"acl")
    os.setxattr(root / "acl", "system.posix_acl_access", ACL)
    (root / "cap").write_bytes(b"\x7fELF")
    os.chmod(root / "cap", 0o755)
    os.setxattr(root / "cap", "security.capability", CAPABILITY)
    with open(root / "sparse", "wb") as f:
        f.truncate(100 * MIB)
        f.seek(50 * MIB)
        f.write(b"one block")
    os.mkfifo(root / "fifo", 0o640)
    os.mknod(root / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(root / "blk", 0o600 | stat.S_IFBLK, os.makedev(7, 200))
    sock_dir = root / "s"
    sock_dir.mkdir()
    _bind(sock_dir, b"sock")
    _bind(sock_dir, b"long-" + b"n" * 150)  # beyond AF_UNIX's 107 bytes
    (root / "a").mkdir()
    os.symlink("../..", root / "a" / "up")
    os.symlink("/nowhere/at/all", root / "dangling")
    (root / "suid").write_bytes(b"suid")
    os.chown(root / "suid", 1234, 5678)
    os.chmod(root / "suid", 0o6755)
    (root / "sticky").mkdir(mode=0o1777)
    os.chmod(root / "sticky", 0o1777)
    (root / "pair1").write_bytes(b"pair")
    os.link(root / "pair1", root / "pair2")
    (root / "g" / "h").mkdir(parents=True)
    (root / "g" / "one").write_bytes(b"group of three")
    os.link(root / "g" / "one", root / "g" / "h" / "two")
    os.link(root / "g" / "one", root / "three")
    for name in ODD_NAMES:
        with open(b(root) + b"/" + name, "wb") as f:
            f.write(name)
    (root / "locked" / "inner").mkdir(parents=True)
    (root / "locked" / "inner" / "f").write_bytes(b"behind 0000")
    os.chmod(root / "locked" / "inner", 0o000)
    os.chmod(root / "locked", 0o500)
    os.chown(root / "locked", 42, 43)


def _bind(directory: Path, name: bytes) -> None:
    import socket

    here = os.open(".", os.O_RDONLY)
    try:
        os.chdir(directory)
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(name[:100])
        if len(name) > 100:
            os.rename(name[:100], name)
    finally:
        os.fchdir(here)
        os.close(here)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    why = xattr_support(tmp_path)
    if why:
        pytest.skip(why)
    src = tmp_path / "src"
    make_tree(src)
    return src


def test_copy_keeps_everything(agent: Agent, tree: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    copied = agent("copy", tree, dst)
    assert copied.rc == 0, copied.events
    source, target = agent("scan", tree), agent("scan", dst)
    assert source.rc == target.rc == 0

    assert comparable(target.lines()) == comparable(source.lines())
    assert comparable(copied.lines()) == comparable(source.lines())
    assert copied.summary["digest"] == source.summary["digest"] == target.summary["digest"]

    entries = by_path(target.lines())
    assert entries['"old"']["mtime_ns"] == PRE_1970
    assert entries['"future"']["mtime_ns"] == AFTER_2262
    assert entries['"ns"']["mtime_ns"] % 10**9 == NS
    assert entries['"a/up"'] == {**entries['"a/up"'], "type": "symlink", "target": "../.."}
    assert entries['"dangling"']["target"] == "/nowhere/at/all"
    assert entries['"suid"']["mode"] == 0o6755 and entries['"suid"']["uid"] == 1234
    assert entries['"sticky"']["mode"] == 0o1777
    assert entries['"locked"']["mode"] == 0o500 and entries['"locked/inner"']["mode"] == 0
    assert entries['"locked/inner/f"']["size"] == len(b"behind 0000")
    assert entries['"null"']["rdev"] == [1, 3] and entries['"blk"']["rdev"] == [7, 200]
    assert entries['"fifo"']["type"] == "fifo" and entries['"s/sock"']["type"] == "socket"
    assert sum(d["type"] == "socket" for d in entries.values()) == 2
    assert entries['"pair2"']["link"] == "pair1" and "link" not in entries['"pair1"']
    # the group's first path in stream order ("g/h/two" comes before "g/one") heads it
    assert "link" not in entries['"g/h/two"']
    assert entries['"g/one"']["link"] == "g/h/two" and entries['"three"']["link"] == "g/h/two"
    assert {tuple(x) for x in entries['"xdir"']["xattrs"]} == {("user.dir", "b24gYSBkaXI=")}
    assert [x[0] for x in entries['"acl"']["xattrs"]] == ["system.posix_acl_access"]
    assert [x[0] for x in entries['"cap"']["xattrs"]] == ["security.capability"]
    # xattrs, modes, times and groups really are on disk, not only in the manifest
    assert os.getxattr(dst / "acl", "system.posix_acl_access") == ACL
    assert os.getxattr(dst / "cap", "security.capability") == CAPABILITY
    assert os.stat(dst / "suid").st_mode & 0o7777 == 0o6755
    assert os.stat(dst / "old").st_mtime_ns == PRE_1970
    assert os.stat(dst / "future").st_mtime_ns == AFTER_2262
    assert os.stat(dst / "pair1").st_ino == os.stat(dst / "pair2").st_ino
    assert os.stat(dst / "g/one").st_ino == os.stat(dst / "three").st_ino
    assert os.stat(dst / "g/one").st_nlink == 3
    assert os.stat(dst / "g/one").st_ino != os.stat(dst / "pair1").st_ino
    assert os.readlink(dst / "a" / "up") == "../.."
    for name in ODD_NAMES:
        with open(b(dst) + b"/" + name, "rb") as f:
            assert f.read() == name


def test_sparse_file_stays_sparse(agent: Agent, tree: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    run = agent("copy", tree, dst)
    assert run.rc == 0
    st = os.stat(dst / "sparse")
    assert st.st_size == 100 * MIB
    assert st.st_blocks * 512 < MIB, "the copy filled the holes"
    assert run.summary["bytes_copied"] < 10 * MIB
    with open(dst / "sparse", "rb") as f:
        f.seek(50 * MIB)
        assert f.read(9) == b"one block"


def test_names_are_bytes_in_the_manifest(agent: Agent, tree: Path) -> None:
    run = agent("scan", tree)
    assert all(line.isascii() for line in run.out.splitlines())
    paths = [d["path"] for d in run.lines()]
    assert {"b64": base64.b64encode(b"\xff\xfenot-utf8").decode()} in paths
    assert "new\nline" in paths and 'quo"te' in paths and "back\\slash" in paths
    # the order: depth-first, children by name bytes ("a/up" before "a-..." would be)
    keys = [
        b"" if p == "." else (base64.b64decode(p["b64"]) if isinstance(p, dict) else p.encode())
        for p in paths
    ]
    assert keys[1:] == sorted(keys[1:], key=lambda k: k.replace(b"/", b"\0"))
    assert paths.index("g") < paths.index("g/h") < paths.index("g/h/two") < paths.index("g/one")


def test_verify_of_a_faithful_copy_is_clean(agent: Agent, tree: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    copied = agent("copy", tree, dst)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_bytes(copied.out)
    checked = agent("verify", dst, manifest)
    assert checked.rc == 0, checked.out
    assert checked.out == b""
    assert checked.summary["digest"] == checked.summary["manifest_digest"]
    assert checked.summary["digest"] == copied.summary["digest"]
    from_stdin = agent("verify", dst, "-", stdin=copied.out)
    assert from_stdin.rc == 0


def test_digest_ignores_times_and_sees_content(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"same")
    first = agent("scan", src).summary["digest"]
    os.utime(src / "f", ns=(1, 2))
    assert agent("scan", src).summary["digest"] == first
    (src / "f").write_bytes(b"diff")
    changed = agent("scan", src).summary["digest"]
    assert changed != first
    os.chmod(src / "f", 0o600)
    assert agent("scan", src).summary["digest"] != changed
