from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.tarbuild import M, chunked, d, f, hard, make_tar, sym
from voltool.errors import ArchiveRejected, IntegrityError
from voltool.tar.stream import (
    END_OF_ARCHIVE,
    EntryType,
    TarEntry,
    TarReader,
    _plain_ustar,
    _tarfile_header,
    header_bytes,
    padding,
)

LONG = "d" * 120 + "/" + "n" * 200


def read_all(data: bytes, chunk: int = 7) -> list[tuple[TarEntry, bytes]]:
    reader = TarReader(chunked(data, chunk))
    return [(e, b"".join(reader.content())) for e in reader]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_reads_what_tarfile_writes(fmt: int) -> None:
    members = [
        d("top"),
        f("top/a", b"hello"),
        sym("top/s", "/etc/passwd"),
        hard("top/h", "top/a"),
        f("top/empty", b""),
    ]
    if fmt != tarfile.USTAR_FORMAT:
        members.append(f(LONG, b"long name"))
        members.append(f("top/ünï", b"u"))
    got = read_all(make_tar(members, fmt))
    assert [(e.name, e.type) for e, _ in got] == [
        (
            m.name,
            {
                b"5": EntryType.DIR,
                b"0": EntryType.FILE,
                b"2": EntryType.SYMLINK,
                b"1": EntryType.HARDLINK,
            }[m.type],
        )
        for m in members
    ]
    assert got[1][1] == b"hello"
    assert got[2][0].linkname == "/etc/passwd"
    assert got[3][0].linkname == "top/a"


def test_big_numbers_and_modes_survive() -> None:
    data = make_tar([M("x", data=b"q", mode=0o4755, uid=70000, gid=2**21 + 5, mtime=978_307_200)])
    ((e, content),) = read_all(data)
    assert (e.mode, e.uid, e.gid, e.mtime, content) == (0o4755, 70000, 2**21 + 5, 978_307_200, b"q")


@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=6), st.integers(1, 1500))
@settings(max_examples=60, deadline=None)
def test_any_chunking_gives_the_same_contents(contents: list[bytes], chunk: int) -> None:
    data = make_tar([f(f"f{i}", c) for i, c in enumerate(contents)])
    assert [c for _, c in read_all(data, chunk)] == contents


def test_unread_content_is_skipped() -> None:
    data = make_tar([f("a", b"A" * 5000), f("b", b"B")])
    reader = TarReader(chunked(data, 100))
    names = []
    for e in reader:
        names.append(e.name)
        if e.name == "a":
            next(iter(reader.content()))  # read one piece only, abandon the rest
    assert names == ["a", "b"]


def test_truncated_inside_content() -> None:
    data = make_tar([f("a", b"A" * 5000)])
    with pytest.raises(IntegrityError, match="truncated"):
        read_all(data[:2000])


def test_stream_cut_at_an_entry_boundary_is_truncated_not_shorter() -> None:
    data = make_tar([f("a", b"A"), f("b", b"B")])
    cut = 512 * 2  # header and content block of "a", no end marker
    with pytest.raises(IntegrityError, match="truncated"):
        read_all(data[:cut])


def test_data_after_the_end_marker_is_corrupt() -> None:
    data = make_tar([f("a")]) + b"junk" * 10
    with pytest.raises(IntegrityError, match="after its end"):
        read_all(data)


def test_bad_checksum_is_corrupt() -> None:
    data = bytearray(make_tar([f("a")]))
    data[0] ^= 0xFF
    with pytest.raises(IntegrityError, match="bad header"):
        read_all(bytes(data))


def test_huge_pax_header_is_refused_before_it_is_buffered() -> None:
    info = tarfile.TarInfo("x")
    info.type = tarfile.XHDTYPE
    info.size = 50 * 1024 * 1024
    with pytest.raises(ArchiveRejected, match="bytes of headers for one entry"):
        read_all(info.tobuf(tarfile.USTAR_FORMAT))


def test_sparse_members_are_refused() -> None:
    info = tarfile.TarInfo("x")
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
    with pytest.raises(ArchiveRejected, match="sparse"):
        read_all(info.tobuf(tarfile.PAX_FORMAT) + END_OF_ARCHIVE)


def test_pax_size_overrides_header_size() -> None:
    info = tarfile.TarInfo("x")
    info.size = 3
    info.pax_headers = {"size": "5"}
    raw = info.tobuf(tarfile.PAX_FORMAT) + b"hello" + padding(5) + END_OF_ARCHIVE
    ((e, content),) = read_all(raw)
    assert (e.size, content) == (5, b"hello")


def test_link_entries_may_not_carry_content() -> None:
    info = tarfile.TarInfo("l")
    info.type = tarfile.SYMTYPE
    info.linkname = "t"
    info.pax_headers = {"size": "5"}
    raw = info.tobuf(tarfile.PAX_FORMAT) + b"hello" + padding(5) + END_OF_ARCHIVE
    with pytest.raises(ArchiveRejected, match="may not carry content"):
        read_all(raw)


def test_header_bytes_round_trip_through_tarfile() -> None:
    e = TarEntry("data/ü/" + "x" * 150, EntryType.FILE, 0o2750, 1234, 5678, 3, 981_173_106)
    raw = header_bytes(e) + b"abc" + padding(3) + END_OF_ARCHIVE
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        (m,) = tar.getmembers()
    assert (m.name, m.mode, m.uid, m.gid, m.size, m.mtime) == (
        e.name,
        e.mode,
        e.uid,
        e.gid,
        3,
        e.mtime,
    )
    ((back, content),) = read_all(raw)
    assert back == e and content == b"abc"


def test_names_that_are_not_utf8_round_trip() -> None:
    name = b"caf\xe9".decode("utf-8", "surrogateescape")
    raw = header_bytes(TarEntry(name, EntryType.FILE, 0o644, 0, 0, 0, 0)) + END_OF_ARCHIVE
    ((back, _),) = read_all(raw)
    assert back.name == name


def _with_field(info: tarfile.TarInfo, offset: int, raw: bytes) -> bytes:
    """A ustar header with one numeric field replaced by `raw`, checksum fixed."""
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT)[:512])
    block[offset : offset + len(raw)] = raw
    block[148:156] = b" " * 8
    block[148:155] = b"%06o\0" % sum(block) + b" "
    return bytes(block[:512])


def test_negative_base256_size_is_rejected_not_looped_on() -> None:
    info = tarfile.TarInfo("x")
    negative = b"\xff" * 12  # base-256 minus one
    raw = _with_field(info, 124, negative) + END_OF_ARCHIVE
    with pytest.raises((ArchiveRejected, IntegrityError)):
        read_all(raw)


def test_headers_cannot_pile_up_before_an_entry() -> None:
    blob = b""
    for i in range(40):
        info = tarfile.TarInfo(f"p{i}")
        info.type = tarfile.XHDTYPE
        record = b"x" * 60000
        data = b"%d comment=%s\n" % (len(record) + 16, record)
        data = b"%d comment=%s\n" % (len(data), record)
        info.size = len(data)
        blob += info.tobuf(tarfile.USTAR_FORMAT) + data + padding(len(data))
    with pytest.raises(ArchiveRejected, match=r"bytes of headers for one entry|two PAX headers"):
        read_all(blob + make_tar([f("x")]))


@pytest.mark.parametrize(
    ("key", "value"), [("uid", "²"), ("gid", "-1"), ("size", "1e3"), ("uid", "9" * 30)]
)
def test_pax_numbers_are_plain_ascii_digits(key: str, value: str) -> None:
    info = tarfile.TarInfo("x")
    info.pax_headers = {key: value}
    with pytest.raises(ArchiveRejected, match="not a whole number"):
        read_all(info.tobuf(tarfile.PAX_FORMAT) + END_OF_ARCHIVE)


def test_link_name_on_a_regular_file_is_dropped() -> None:
    info = tarfile.TarInfo("x")
    info.pax_headers = {"linkpath": "/etc/shadow"}
    ((e, _),) = read_all(info.tobuf(tarfile.PAX_FORMAT) + END_OF_ARCHIVE)
    assert e.type is EntryType.FILE and e.linkname == ""


def test_pre_1970_mtime_round_trips() -> None:
    e = TarEntry("old", EntryType.FILE, 0o644, 0, 0, 0, -315_619_200)
    ((back, _),) = read_all(header_bytes(e) + END_OF_ARCHIVE)
    assert back.mtime == -315_619_200


_NAMES = st.sampled_from(["a", "dir/x", "é", "x" * 99, "x" * 100, "y" * 101, "d/", "sp ace"])
_NUMS = st.sampled_from([0, 1, 0o7777777, 0o10000000, 2**33, 8**11 - 1, 8**11])


@settings(max_examples=400)
@given(
    st.sampled_from(list(EntryType)),
    _NAMES,
    st.sampled_from(["", "t", "x" * 100, "x" * 101, "ü"]),
    st.integers(0, 0o17777),
    _NUMS,
    _NUMS,
    _NUMS,
    _NUMS,
)
def test_fast_headers_are_what_tarfile_writes(
    kind: EntryType, name: str, link: str, mode: int, uid: int, gid: int, size: int, mtime: int
) -> None:
    """The hand-built ustar block equals tarfile's PAX output wherever it is used."""
    linked = kind in (EntryType.SYMLINK, EntryType.HARDLINK)
    e = TarEntry(
        name,
        kind,
        mode,
        uid,
        gid,
        size if kind is EntryType.FILE else 0,
        mtime,
        linkname=link if linked else "",
    )
    fast = _plain_ustar(e)
    if fast is not None:
        assert fast == _tarfile_header(e)
    assert header_bytes(e) == _tarfile_header(e)
