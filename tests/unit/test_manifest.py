from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator

import pytest

from tests.tarbuild import M, chunked, d, f, hard, make_tar, sym
from voltool.errors import IntegrityError
from voltool.store.manifest import Manifest, ManifestEntry, diff
from voltool.tar.stream import TarReader
from voltool.tar.transfer import Transfer
from voltool.tar.validate import EntryValidator


def manifest_of(members: list[M]) -> Manifest:
    t = Transfer(chunked(make_tar(members), 1000), EntryValidator(None), "data")
    for _ in t:
        pass
    return t.manifest


TREE = [
    d("."),
    d("a", mode=0o750, uid=5),
    f("a/x", b"one"),
    f("b", b"two", mode=0o600),
    sym("s", "a/x"),
    hard("h", "a/x"),
]


def test_entries_describe_the_tree() -> None:
    m = manifest_of(TREE)
    x = m.get("a/x")
    assert x is not None and x.sha256 == hashlib.sha256(b"one").hexdigest() and x.size == 3
    assert m.get("s") == ManifestEntry("s", "symlink", 0o777, 0, 0, 0, 1_600_000_000, target="a/x")
    assert m.get("a") == ManifestEntry("a", "dir", 0o750, 5, 0, 0, 1_600_000_000)
    assert len(m) == 6 and m.content_bytes() == 6


def test_hard_link_groups_do_not_depend_on_which_member_came_first() -> None:
    first = manifest_of([d("."), f("z", b"same"), hard("a", "z")])
    second = manifest_of([d("."), f("a", b"same"), hard("z", "a")])
    assert first.digest() == second.digest()
    assert first.get("z") == second.get("z")
    assert {e.link for e in first} == {None, "a"}


def test_digest_ignores_stream_order_and_mtime() -> None:
    a = manifest_of([d("."), f("p", b"1"), f("q", b"2")])
    b = manifest_of([d("."), f("q", b"2", mtime=5), f("p", b"1", mtime=7)])
    assert a.digest() == b.digest()


@pytest.mark.parametrize(
    "changed",
    [
        [d("."), f("p", b"X"), f("q", b"2")],  # content
        [d("."), f("p", b"1", mode=0o600), f("q", b"2")],  # mode
        [d("."), f("p", b"1", uid=1), f("q", b"2")],  # owner
        [d("."), f("p", b"1"), f("q", b"2"), f("r", b"")],  # an entry more
        [d("."), f("p", b"1")],  # an entry less
        [d("."), f("p", b"1"), sym("q", "2")],  # a type
        [d("."), f("p", b"1"), f("q", b"2"), hard("r", "p")],  # a link
    ],
)
def test_any_real_change_changes_the_digest(changed: list[M]) -> None:
    assert (
        manifest_of([d("."), f("p", b"1"), f("q", b"2")]).digest() != manifest_of(changed).digest()
    )


def test_lines_round_trip_and_stay_sorted_by_bytes() -> None:
    m = manifest_of([d("."), f("b"), f("a-c"), d("a"), f("a/b"), f("ü")])
    back = Manifest.read(m.lines(), len(m))
    assert back.digest() == m.digest() and [e.path for e in back] == [
        ".",
        "a",
        "a-c",
        "a/b",
        "b",
        "ü",
    ]


@pytest.mark.parametrize(
    "line",
    [
        '{"path":"../x","type":"file","mode":420,"uid":0,"gid":0,"size":0,"mtime":0,"sha256":"'
        + "0" * 64
        + '"}',
        '{"path":"x","type":"file","mode":420,"uid":0,"gid":0,"size":0,"mtime":0}',
        '{"path":"x","type":"dir","mode":99999,"uid":0,"gid":0,"mtime":0}',
        '{"path":"x","type":"weird","mode":0,"uid":0,"gid":0,"mtime":0}',
        '{"path":"x","type":"dir","mode":0,"uid":-1,"gid":0,"mtime":0}',
        '{"path":"x","type":"dir","mode":0,"uid":0,"gid":0,"mtime":0,"extra":1}',
        '{"path":".","type":"file","mode":0,"uid":0,"gid":0,"mtime":0,"sha256":"' + "0" * 64 + '"}',
        "not json",
    ],
)
def test_malformed_lines_are_rejected(line: str) -> None:
    with pytest.raises(IntegrityError):
        Manifest.parse([line.encode()])


def test_broken_link_group_is_rejected() -> None:
    m = manifest_of([d("."), f("a", b"s"), hard("b", "a")])
    bad = [e if e.path != "b" else dataclasses.replace(e, link="zzz") for e in m]
    with pytest.raises(IntegrityError, match="hard-link"):
        Manifest.parse([e.line().encode() for e in bad])


def test_diff_reports_added_changed_removed() -> None:
    old = manifest_of([d("."), f("keep", b"k"), f("edit", b"1"), f("gone", b"g")])
    new = manifest_of([d("."), f("keep", b"k", mtime=1), f("edit", b"2"), f("new", b"n")])
    got = [(c.path, c.kind, c.what) for c in diff(old, new)]
    assert got == [("edit", "changed", ("sha256",)), ("gone", "removed", ()), ("new", "added", ())]


def test_transfer_renames_and_checks_against_an_expected_manifest() -> None:
    members = [d("data"), f("data/a", b"1"), hard("data/h", "data/a")]
    want = manifest_of([d("."), f("a", b"1"), hard("h", "a")])
    out = b"".join(
        Transfer(chunked(make_tar(members), 64), EntryValidator("data"), ".stage", expect=want)
    )
    names = [(e.name, e.linkname) for e in TarReader([out])]
    assert names == [(".stage", ""), (".stage/a", ""), (".stage/h", ".stage/a")]


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([d("data"), f("data/a", b"X"), hard("data/h", "data/a")], "content differs"),
        ([d("data"), f("data/a", b"1", mode=0o600), hard("data/h", "data/a")], "mode differs"),
        ([d("data"), f("data/a", b"1")], "lacks 1 entry"),
        (
            [d("data"), f("data/a", b"1"), hard("data/h", "data/a"), f("data/extra")],
            "does not list",
        ),
        ([d("data"), f("data/a", b"1"), f("data/h", b"1")], "hard-link group differs"),
    ],
)
def test_transfer_refuses_data_that_does_not_match(members: list[M], why: str) -> None:
    want = manifest_of([d("."), f("a", b"1"), hard("h", "a")])
    with pytest.raises(IntegrityError, match=why):
        b"".join(
            Transfer(chunked(make_tar(members), 64), EntryValidator("data"), ".stage", expect=want)
        )


def test_pre_1970_files_make_a_manifest_that_reads_back() -> None:
    m = manifest_of([d("."), f("old", b"x", mtime=-315_619_200)])
    assert Manifest.read(m.lines(), len(m)).digest() == m.digest()


@pytest.mark.parametrize(
    "raw",
    [
        "ü".encode() + b"\n",
        b"[" * 100000 + b"\n",
        b'{"path":"x","type":"file","mode":420,"uid":0,"gid":0,"size":0,"mtime":0,"sha256":"'
        + b"0" * 64
        + b'","link":5}\n',
        b'{"path":"x","type":"symlink","mode":511,"uid":0,"gid":0,"mtime":0,"target":7}\n',
        # Surrogates with no spelling of their own on disk: "\udcc3\udca9" is "\xc3\xa9".
        b'{"gid":0,"mode":493,"mtime":0,"path":"\\udcc3\\udca9","type":"dir","uid":0}\n',
        b'{"gid":0,"mode":493,"mtime":0,"path":"\\ud800","type":"dir","uid":0}\n',
        b'{"gid":0,"mode":511,"mtime":0,"path":"s","target":"\\ud800","type":"symlink","uid":0}\n',
    ],
)
def test_hostile_manifest_lines_are_integrity_errors(raw: bytes) -> None:
    with pytest.raises(IntegrityError):
        Manifest.parse(raw.splitlines())


def test_header_mismatch_is_caught_before_any_content_is_read() -> None:
    want = manifest_of([d("."), f("big", b"x" * 10)])
    members = [d("data"), f("data/big", b"y" * 200_000)]  # claims far more than the manifest
    raw = make_tar(members)
    pulled = []

    def source() -> Iterator[bytes]:
        for i in range(0, len(raw), 4096):
            pulled.append(i)
            yield raw[i : i + 4096]

    with pytest.raises(IntegrityError, match="size differs"):
        b"".join(Transfer(source(), EntryValidator("data"), ".stage", expect=want))
    assert len(pulled) <= 2  # the headers only, not the 200 kB of content


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\n" * 1000, "not JSON"),  # blank lines are not entries (nor free)
        (b'{"gid":0, "mode":493,"mtime":0,"path":".","type":"dir","uid":0}\n', "not canonical"),
        (b'{"gid":0,"mode":493,"mtime":0,"path":".","type":"dir","uid":0}', "end with a newline"),
        (b"x" * 70_000, "a line over 65536 bytes"),
    ],
)
def test_manifest_streams_are_strict(raw: bytes, why: str) -> None:
    with pytest.raises(IntegrityError, match=why):
        Manifest.read([raw[i : i + 4096] for i in range(0, len(raw), 4096)], 10)


def test_a_manifest_longer_than_announced_stops_at_the_count() -> None:
    m = manifest_of([d("."), f("a"), f("b")])
    with pytest.raises(IntegrityError, match="more than 2 entries"):
        Manifest.read(m.lines(), 2)
