"""Per-entry state off the heap: tables, manifests and validators of many entries."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import tarfile
import textwrap

import pytest

from tests.tarbuild import chunked, d, f, hard, make_tar, sym
from voltool.errors import ArchiveRejected, IntegrityError, NoSpace
from voltool.store.manifest import Manifest, ManifestEntry, diff, summarize
from voltool.store.spill import _BATCH, Duplicate, Table
from voltool.tar.stream import EntryType, TarEntry
from voltool.tar.transfer import Transfer
from voltool.tar.validate import EntryValidator

MANY = 3 * _BATCH + 7  # enough to cross several batch flushes


def test_table_reads_its_writes_before_and_after_a_flush() -> None:
    t = Table()
    for i in range(MANY):
        t[b"%06d" % i] = str(i)
    t[b"000001"] = "replaced"
    assert t.get(b"000001") == "replaced" and t.get(b"%06d" % (MANY - 1)) == str(MANY - 1)
    assert b"nope" not in t and len(t) == MANY
    keys = [k for k, _ in t.items()]
    assert keys == sorted(keys) and len(keys) == MANY


def test_table_orders_keys_by_bytes() -> None:
    t = Table()
    for k in (b"a/b", b"a-c", b"a", b"\xc3\xa9", b"Z"):
        t[k] = ""
    assert [k for k, _ in t.items()] == sorted([b"a/b", b"a-c", b"a", b"\xc3\xa9", b"Z"])


@pytest.mark.parametrize("gap", [0, 1, _BATCH + 1])  # same batch, next entry, a flush between
def test_table_add_refuses_a_key_it_holds(gap: int) -> None:
    t = Table()
    t.add(b"dup", "1")
    for i in range(gap):
        t.add(b"k%d" % i, "")
    with pytest.raises(Duplicate) as raised:
        t.add(b"dup", "2")
        t.flush()
    assert raised.value.args[0] == b"dup"


def test_a_manifest_with_a_duplicate_far_apart_is_refused() -> None:
    entries = [ManifestEntry(".", "dir", 0o755, 0, 0)]
    entries += [ManifestEntry(f"f{i:05d}", "dir", 0o755, 0, 0) for i in range(MANY)]
    entries.append(ManifestEntry("f00003", "dir", 0o700, 0, 0))
    with pytest.raises(IntegrityError, match="'f00003' twice"):
        Manifest(entries)


def _wide_tree(n: int) -> list:  # type: ignore[type-arg]
    members = [d("."), d("dir")]
    members += [f(f"dir/f{i:05d}", b"%d" % (i % 7)) for i in range(n)]
    # Hard links to files stored batches earlier, and a link to a link.
    members += [hard("dir/link-a", "dir/f00003"), hard("a-first", "dir/f00003")]
    members += [hard("zz", "dir/link-a"), sym("s", "dir/f00001")]
    return members


def _manifest_of(members: list) -> Manifest:  # type: ignore[type-arg]
    t = Transfer(chunked(make_tar(members), 1 << 16), EntryValidator(None), "data")
    for _ in t:
        pass
    return t.manifest


def test_link_groups_resolve_across_batches() -> None:
    m = _manifest_of(_wide_tree(MANY))
    group = ["a-first", "dir/f00003", "dir/link-a", "zz"]
    assert [m.get(p).link for p in group] == ["a-first"] * 4  # type: ignore[union-attr]
    assert m.get("dir/f00004").link is None  # type: ignore[union-attr]
    assert len(m) == MANY + 6
    # Content is counted once per group; the digest is the canonical lines' hash.
    assert m.content_bytes() == sum(len(b"%d" % (i % 7)) for i in range(MANY))
    h = hashlib.sha256()
    for e in m:
        h.update(e.digest_line().encode() + b"\n")
    assert m.digest() == h.hexdigest()
    back = Manifest.read(m.chunks(1000), len(m))
    assert back.digest() == m.digest() and b"".join(back.lines()) == b"".join(m.chunks())
    assert m.summary.size == len(b"".join(m.lines()))


def test_digest_lines_drop_only_the_mtime_key() -> None:
    tricky = [
        ManifestEntry(".", "dir", 0o755, 0, 0, mtime=-5),
        ManifestEntry('p,"mtime":1', "file", 0o644, 0, 0, 1, 9, sha256="0" * 64),
        ManifestEntry('q\\",\\"mtime\\":2', "symlink", 0o777, 0, 0, 0, 3, target=',"mtime":4'),
    ]
    m = Manifest(tricky)
    h = hashlib.sha256()
    for e in sorted(tricky, key=lambda e: e.path.encode()):
        h.update(e.digest_line().encode() + b"\n")
    assert m.digest() == h.hexdigest()


def test_diff_and_summary_merge_by_path() -> None:
    old = _manifest_of([d("."), f("a", b"1"), f("b", b"2"), f("c", b"3")])
    new = _manifest_of([d("."), f("b", b"2"), f("c", b"X"), f("d", b"4")])
    changes = list(diff(old, new))
    assert [(c.path, c.kind) for c in changes] == [
        ("a", "removed"),
        ("c", "changed"),
        ("d", "added"),
    ]
    s = summarize(iter(changes), keep=2)
    assert s.counts() == {"added": 1, "changed": 1, "removed": 1} and s.total == 3
    assert [c.path for c in s.first] == ["a", "c"]


def test_validator_remembers_every_path_across_batches() -> None:
    v = EntryValidator(None)
    v.check(TarEntry(".", EntryType.DIR, 0o755, 0, 0, 0, 0))
    v.check(TarEntry("link", EntryType.SYMLINK, 0o777, 0, 0, 0, 0, linkname="/etc"))
    for i in range(MANY):
        v.check(TarEntry(f"d/f{i}", EntryType.FILE, 0o644, 0, 0, 1, 0))
    with pytest.raises(ArchiveRejected, match="duplicate"):
        v.check(TarEntry("d/f0", EntryType.FILE, 0o644, 0, 0, 1, 0))
    with pytest.raises(ArchiveRejected, match="through the symlink"):
        v.check(TarEntry("link/passwd", EntryType.FILE, 0o644, 0, 0, 1, 0))
    with pytest.raises(ArchiveRejected, match="replaces a directory"):
        v.check(TarEntry("d", EntryType.FILE, 0o644, 0, 0, 1, 0))
    with pytest.raises(ArchiveRejected, match="not a directory"):
        v.check(TarEntry("d/f1/x", EntryType.FILE, 0o644, 0, 0, 1, 0))
    v.check(TarEntry("d", EntryType.DIR, 0o755, 0, 0, 0, 0))  # an implied dir may be listed


def test_memory_stays_flat_with_the_number_of_entries(tmp_path: pytest.TempPathFactory) -> None:
    """A transfer of 60,000 entries must not hold them on the heap (in a clean process,
    so that peak RSS is this transfer's alone)."""
    tar = tmp_path / "many.tar"  # type: ignore[operator]
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as t:
        root = tarfile.TarInfo(".")
        root.type = tarfile.DIRTYPE
        t.addfile(root)
        for i in range(600):
            info = tarfile.TarInfo(f"dir{i:03d}")
            info.type = tarfile.DIRTYPE
            t.addfile(info)
            for j in range(100):
                t.addfile(tarfile.TarInfo(f"dir{i:03d}/file-with-a-longish-name-{j:03d}"))
    script = textwrap.dedent(
        f"""
        from voltool.tar.transfer import Transfer
        from voltool.tar.validate import EntryValidator

        def hwm():
            status = open("/proc/self/status").read()
            return int(status.split("VmHWM:")[1].split()[0])

        def chunks():
            with open({str(tar)!r}, "rb") as f:
                while b := f.read(1 << 16):
                    yield b

        before = hwm()
        t = Transfer(chunks(), EntryValidator(None), "data")
        for _ in t:
            pass
        assert len(t.manifest) == 60601, len(t.manifest)
        t.manifest.digest()
        print(hwm() - before)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    grown_kib = int(out.stdout)
    # On the heap, 60,601 entries took about 35 MiB; spilled, a few MiB of page cache.
    assert grown_kib < 16 * 1024, f"peak RSS grew by {grown_kib} KiB"


class _FullDisk:
    def execute(self, *args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    executemany = execute

    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def test_a_full_temporary_directory_is_no_space_not_a_bug() -> None:
    t = Table()
    t._db = _FullDisk()  # type: ignore[assignment]
    with pytest.raises(NoSpace, match="temporary directory"):
        t.get(b"x")
    t[b"a"] = "1"
    with pytest.raises(NoSpace, match="is full"):
        t.flush()


def test_verify_lists_the_first_differences_and_counts_them_all() -> None:
    from voltool.ops.verify import compare

    want = _manifest_of([d("."), *(f(f"w{i}", b"1") for i in range(5)), f("same", b"s")])
    got = _manifest_of([d("."), *(f(f"g{i}", b"1") for i in range(4)), f("same", b"S")])
    diff_ = compare(want, got, listed=2)
    assert diff_.counts == (5, 4, 1)
    assert diff_.missing == ("w0", "w1") and diff_.extra == ("g0", "g1")
    assert diff_.altered == (("same", ("sha256",)),)
