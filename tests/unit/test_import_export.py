"""The import pipeline up to the engine: compression, export metadata, plain tars, the corpus."""

from __future__ import annotations

import io
import tarfile
import threading
from collections.abc import Iterator

import pytest

from tests.hostile import (
    COMPRESSIONS,
    CORPUS,
    TREE,
    Case,
    compress,
    gzip_bomb,
    make_export,
    root_header,
    tree_data,
)
from tests.tarbuild import M, d, f, hard, make_tar, sym
from voltool.engine.readahead import read_ahead
from voltool.errors import ExitCode, IntegrityError, NoSpace, UsageError, VoltoolError
from voltool.ops.importer import ImportRequest, Incoming, read_archive, room_for
from voltool.store.manifest import Manifest
from voltool.tar import compression
from voltool.tar.compression import Compression
from voltool.tar.live import Space
from voltool.tar.validate import Limits


def _read(raw: bytes, req: ImportRequest | None = None, free: int | None = None) -> Incoming:
    return read_archive(io.BytesIO(raw), req or ImportRequest())


def _all(incoming: Incoming, free: int | None = None) -> Manifest:
    t = incoming.transfer(free)
    for _ in t:
        pass
    return t.manifest


@pytest.mark.parametrize("kind", COMPRESSIONS, ids=lambda k: k.value)
@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_every_hostile_archive_is_rejected_with_its_rule(case: Case, kind: Compression) -> None:
    raw = compress(case.build(), kind)
    with pytest.raises(VoltoolError) as caught:
        _all(_read(raw, ImportRequest(limits=case.limits)))
    assert case.message in str(caught.value)
    assert caught.value.exit_code == case.code
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("kind", COMPRESSIONS, ids=lambda k: k.value)
def test_an_export_reads_back_as_it_was_written(kind: Compression) -> None:
    want, _ = tree_data(TREE)
    incoming = _read(compress(make_export(), kind))
    assert incoming.origin is not None and incoming.origin.id == "0123456789abcdef"
    assert incoming.source == "pgdata"
    assert incoming.meta.note == "from elsewhere" and incoming.meta.name is None
    assert incoming.expect is not None and incoming.expect.digest() == want.digest()
    got = _all(incoming)
    assert list(got) == list(want)


def test_volume_and_name_given_override_the_export() -> None:
    incoming = _read(make_export(), ImportRequest(source="restored", name="nightly"))
    assert incoming.source == "restored"
    assert incoming.meta.name == "nightly"


def test_bad_volume_or_name_is_a_usage_error_before_reading() -> None:
    with pytest.raises(UsageError):
        _read(make_export(), ImportRequest(source="../x"))
    with pytest.raises(UsageError):
        _read(make_export(), ImportRequest(name="no spaces allowed"))


def test_plain_tar_with_a_root_entry_keeps_the_root() -> None:
    # What `tar -C dir -c .` writes.
    m = _all(_read(make_tar([d("./", mode=0o700, uid=5), f("./a", b"1"), d("./s")])))
    root = m.root
    assert root is not None and (root.mode, root.uid) == (0o700, 5)
    assert sorted(e.path for e in m) == [".", "a", "s"]


def test_plain_tar_with_one_top_directory_takes_it_as_the_tree() -> None:
    # What `docker cp CONTAINER:/data -` writes.
    m = _all(_read(make_tar([d("data/", mode=0o711), f("data/a", b"1"), sym("data/l", "a")])))
    root = m.root
    assert root is not None and root.mode == 0o711
    assert sorted(e.path for e in m) == [".", "a", "l"]


def test_plain_tar_with_one_top_directory_rejects_entries_beside_it() -> None:
    with pytest.raises(IntegrityError, match="outside the archive's data/ directory"):
        _all(_read(make_tar([d("data/"), f("data/a"), f("other")])))


def test_plain_tar_without_a_root_gets_one() -> None:
    m = _all(_read(make_tar([f("a", b"1"), d("s"), f("s/b", b"2")])))
    root = m.root
    assert root is not None and (root.type, root.mode, root.uid, root.gid) == ("dir", 0o755, 0, 0)
    assert sorted(e.path for e in m) == [".", "a", "s", "s/b"]


def test_an_archive_of_only_an_end_marker_has_no_entries() -> None:
    with pytest.raises(IntegrityError, match="no entries"):
        _read(make_tar([]))


def test_content_over_the_free_space_is_no_space() -> None:
    incoming = _read(make_tar([d("./"), f("./a", b"x" * 4096)]))
    with pytest.raises(NoSpace) as caught:
        _all(incoming, free=1024)
    assert caught.value.exit_code == ExitCode.NO_SPACE


@pytest.mark.parametrize("kind", [Compression.GZIP, Compression.ZSTD], ids=lambda k: k.value)
def test_a_bomb_is_stopped_at_its_header_without_decompressing_the_rest(kind: Compression) -> None:
    size = 256 << 20
    raw = gzip_bomb(size) if kind is Compression.GZIP else _zstd_bomb(size)
    assert len(raw) < size // 100  # it is a bomb
    source = io.BytesIO(raw)
    incoming = read_archive(source, ImportRequest(limits=Limits(max_bytes=1 << 20)))
    with pytest.raises(IntegrityError, match="more than 1048576 bytes"):
        _all(incoming)
    # Stopped at the file's header: of its 256 MiB, not one chunk was inflated.
    assert incoming.reader.bytes_read < 2 * compression.CHUNK
    assert source.tell() < len(raw)


def _zstd_bomb(size: int) -> bytes:
    buf = io.BytesIO()
    header = tarfile.TarInfo("./zeros")
    header.size = size
    with compression.writer(buf, Compression.ZSTD) as w:
        w.write(root_header() + header.tobuf(tarfile.PAX_FORMAT))
        chunk = b"\0" * (1 << 20)
        for _ in range(size // len(chunk)):
            w.write(chunk)
        w.write(b"\0" * 1024)
    return buf.getvalue()


def test_decompressed_chunks_are_bounded() -> None:
    raw = compress(b"\0" * (8 << 20), Compression.ZSTD)
    kind, chunks = compression.reader(io.BytesIO(raw))
    sizes = [len(c) for c in chunks]
    assert kind is Compression.ZSTD
    assert sum(sizes) == 8 << 20 and max(sizes) <= compression.CHUNK


@pytest.mark.parametrize("kind", [Compression.GZIP, Compression.ZSTD], ids=lambda k: k.value)
def test_truncated_and_corrupt_compressed_streams_are_integrity_errors(kind: Compression) -> None:
    raw = compress(make_export(), kind)
    for broken, why in ((raw[:-3], "truncated"), (_flip(raw, len(raw) // 2), "corrupt")):
        with pytest.raises(IntegrityError) as caught:
            _all(_read(broken))
        assert why in str(caught.value) or "does not match" in str(caught.value)


def _flip(raw: bytes, at: int) -> bytes:
    b = bytearray(raw)
    b[at] ^= 0xFF
    return bytes(b)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x28\xb5\x2f\xfd\x00", Compression.ZSTD),
        (b"\x1f\x8b\x08", Compression.GZIP),
        (b"./\x00\x00", Compression.NONE),
        (b"", Compression.NONE),
    ],
)
def test_compression_is_detected_from_the_bytes(head: bytes, kind: Compression) -> None:
    assert compression.detect(head) is kind


@pytest.mark.parametrize(
    ("requested", "name", "kind"),
    [
        (None, "a.tar.zst", Compression.ZSTD),
        (None, "a.TGZ", Compression.GZIP),
        (None, "a.tar", Compression.NONE),
        (None, "a.backup", Compression.ZSTD),
        (None, None, Compression.ZSTD),
        ("gzip", None, Compression.GZIP),
        ("none", "x.bin", Compression.NONE),
    ],
)
def test_compression_is_chosen_from_the_option_then_the_name(
    requested: str | None, name: str | None, kind: Compression
) -> None:
    assert compression.choose(requested, name) is kind


def test_a_name_that_contradicts_the_option_is_refused() -> None:
    with pytest.raises(UsageError, match="names zstd compression but --compress says gzip"):
        compression.choose("gzip", "out.tar.zst")
    with pytest.raises(UsageError, match="unknown compression"):
        compression.choose("lz4", None)


# -- what an adversarial review of the pipeline found ----------------------


def _emitted(incoming: Incoming) -> list[tarfile.TarInfo]:
    """The headers the engine would be sent."""
    data = b"".join(incoming.transfer())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def test_directories_a_plain_tar_only_implies_are_listed() -> None:
    # What `find . -type f | tar -T - -c` writes: no directory entries at all.
    incoming = _read(make_tar([f("a/b/f", b"hi"), f("a/g", b"yo")]))
    names = [m.name for m in _emitted(incoming)]
    assert names == ["data", "data/a", "data/a/b", "data/a/b/f", "data/a/g"]
    m = _all(_read(make_tar([f("a/b/f", b"hi"), f("a/g", b"yo")])))
    a = m.get("a")
    assert a is not None and (a.type, a.mode, a.uid) == ("dir", 0o755, 0)
    assert sorted(e.path for e in m) == [".", "a", "a/b", "a/b/f", "a/g"]


def test_implied_directories_count_against_the_name_budget() -> None:
    deep = "/".join(["d" * 200] * 19)  # 19 implied directories of up to ~4 KB each
    members = [d("./"), *[f(f"./{i}/{deep}/f") for i in range(50)]]
    incoming = _read(make_tar(members), ImportRequest(limits=Limits(max_names=1 << 20)))
    with pytest.raises(IntegrityError, match="names and link targets take more than"):
        _all(incoming)


def test_a_hard_link_carries_its_targets_owner_and_mode_to_the_engine() -> None:
    link = M("./h", tarfile.LNKTYPE, linkname="./a", mode=0o4755, uid=0)
    raw = make_tar([d("./"), f("./a", b"x", mode=0o644, uid=1000), link])
    headers = {m.name: m for m in _emitted(_read(raw))}
    assert (headers["data/h"].mode, headers["data/h"].uid) == (0o644, 1000)
    h = _all(_read(raw)).get("h")
    assert h is not None and (h.mode, h.uid) == (0o644, 1000)


def test_a_run_of_hard_links_goes_out_in_bounded_chunks() -> None:
    members = [d("./"), f("./a", b"x"), *[hard(f"./{'h' * 200}{i}", "./a") for i in range(3000)]]
    sizes = [len(c) for c in _read(make_tar(members)).transfer()]
    assert max(sizes) < 1024 * 1024  # about one flush (512 KiB), never the whole run


def test_a_hard_link_chain_is_one_group() -> None:
    members = [d("./"), f("./z", b"x"), hard("./y", "./z"), hard("./x", "./y"), hard("./w", "./x")]
    m = _all(_read(make_tar(members)))
    assert {e.path: e.link for e in m if e.type == "file"} == {p: "w" for p in "wxyz"}


def test_content_and_entries_are_charged_against_the_free_space_and_inodes() -> None:
    many_dirs = make_tar([d("./"), *[d(f"./d{i}") for i in range(20)]])
    with pytest.raises(NoSpace, match="MiB free"):
        _all(_read(many_dirs), free=10 * 4096)
    incoming = _read(many_dirs)
    with pytest.raises(NoSpace, match="5 free inodes"):
        for _ in incoming.transfer(None, inodes=5):
            pass


MIB = 2**20


def _space(free_mib: int, inodes: int | None = 1000, device: str | None = "64768") -> Space:
    return Space(free_mib * MIB, 0, 0, inodes, device)


def test_a_format_2_import_is_charged_twice_where_its_store_shares_the_filesystem() -> None:
    want, _ = tree_data([d("./"), f("./big", b"x" * (20 * MIB))])
    # Format 1: 20 MiB and the slack fit in 40 MiB.
    assert room_for(want, _space(40)).available == (40 - 16) * MIB
    # Format 2, one filesystem: staged and copied, 40 MiB and the slack do not.
    with pytest.raises(NoSpace, match="40 MiB free, 56 MiB needed"):
        room_for(want, _space(40), _space(40))
    # Nor where the filesystems cannot be told apart.
    with pytest.raises(NoSpace):
        room_for(want, _space(40, device=None), _space(40, device=None))
    # Two filesystems: each holds one copy, and the smaller decides.
    assert room_for(want, _space(40), _space(100, device="2049")).available == (40 - 16) * MIB
    with pytest.raises(NoSpace, match="30 MiB free"):
        room_for(want, _space(100), _space(30, device="2049"))


def test_a_plain_tar_into_a_store_may_stream_half_the_room_and_inodes() -> None:
    room = room_for(None, _space(116, inodes=1001), _space(116, inodes=1001))
    assert (room.available, room.inodes) == (50 * MIB, 500)


def test_an_export_into_a_store_needs_its_entries_twice_in_inodes() -> None:
    want, _ = tree_data([d("./"), *[f(f"./f{i}") for i in range(9)]])
    assert room_for(want, _space(100, inodes=10)).inodes == 10
    with pytest.raises(NoSpace, match="10 free, 20 needed"):
        room_for(want, _space(100, inodes=10), _space(100, inodes=10))


def test_a_gnu_header_has_no_name_prefix() -> None:
    # GNU tar and Go read bytes 345-500 of a GNU header as times, not a prefix.
    block = bytearray(tarfile.TarInfo("harmless.txt").tobuf(tarfile.GNU_FORMAT))
    block[345:356] = b"etc/cron.d\0"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    m = _all(_read(root_header() + bytes(block) + b"\0" * 1024))
    assert sorted(e.path for e in m) == [".", "harmless.txt"]


def test_symlinks_may_climb_one_level_above_the_root_and_no_more() -> None:
    ok = make_tar([d("./"), d("./lib"), sym("./lib/l", "../../x"), sym("./top", "../y")])
    assert _all(_read(ok)).get("lib/l") is not None
    absolute = make_tar([d("./"), sym("./etc", "/etc")])
    assert _all(_read(absolute)).get("etc") is not None


def test_a_zstd_stream_that_starts_with_a_skippable_frame_is_zstd() -> None:
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"pzst"
    raw = skippable + compress(make_tar([d("./"), f("./a", b"1")]), Compression.ZSTD)
    assert compression.detect(raw[:4]) is Compression.ZSTD
    assert sorted(e.path for e in _all(_read(raw))) == [".", "a"]


def test_control_characters_are_escaped_before_they_reach_a_terminal() -> None:
    from voltool.cli.render import printable

    assert printable("note\x1b]0;pwned\x07 \x9b2J") == "note\\x1b]0;pwned\\x07 \\x9b2J"
    assert printable("two\nlines", lines=True) == "two\nlines"
    assert printable("two\nlines") == "two\\x0alines"


def test_read_ahead_passes_errors_on() -> None:
    def source() -> Iterator[bytes]:
        yield b"one"
        yield b"two"
        raise IntegrityError("cut")

    got = []
    with pytest.raises(IntegrityError, match="cut"):
        for chunk in read_ahead(source(), 1, lambda: None):
            got.append(chunk)
    assert got == [b"one", b"two"]


def test_closing_read_ahead_wakes_a_stalled_read_and_stops_its_thread() -> None:
    stalled = threading.Event()
    woken = threading.Event()

    def source() -> Iterator[bytes]:
        yield b"first"
        stalled.set()
        woken.wait(30)  # a read that returns only when the socket is shut down
        yield b"late"

    reader = read_ahead(source(), 4, woken.set)
    assert next(reader) == b"first"
    stalled.wait(30)
    reader.close()
    assert woken.is_set()
    assert not [t for t in threading.enumerate() if t.name == "voltool-read-ahead"]


def test_filesystems_without_inode_counts_have_unknown_inodes() -> None:
    from voltool.tar.live import parse_space

    df = "fs 1000 10 990 1% /v\n8\n1700000000\n"
    assert parse_space(df + "fs 0 0 0 - /v\n").inodes is None  # btrfs
    assert parse_space(df + "fs 100 40 60 40% /v\n").inodes == 60
    assert parse_space(df + "fs 100 40 60 40% /v\n").available == 990 * 1024


def test_a_ustar_prefix_counts_whatever_the_version() -> None:
    # GNU tar, Go and busybox check the "ustar\0" magic only.
    info = tarfile.TarInfo("x" * 10)
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    block[263:265] = b"\0\0"
    block[345:352] = b"prefix\0"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    m = _all(_read(root_header() + bytes(block) + b"\0" * 1024))
    assert sorted(e.path for e in m) == [".", "prefix", "prefix/" + "x" * 10]


@pytest.mark.parametrize(
    "created",
    [
        "2026-01-01",
        "2026-W01-1",
        "2026-01-01\nT00:00:00+00:00",
        "2026-01-01x00:00:00+00:00",
        "0001-01-01T00:00:00+14:00",
        "2026-13-45T00:00:00+00:00",
    ],
)
def test_snapshot_json_times_are_exactly_as_voltool_writes_them(created: str) -> None:
    with pytest.raises(IntegrityError, match="kind, source or created is malformed"):
        _read(make_export(info={"created": created}))


def test_non_ascii_names_are_charged_what_they_cost_in_memory() -> None:
    name = "\U0001f600" + "x" * 200  # one emoji: the string is stored at 4 bytes a character
    members = [d("./"), *[f(f"./{name}{i}") for i in range(20)]]
    plain = [d("./"), *[f(f"./{'y' * 201}{i}") for i in range(20)]]
    budget = Limits(max_names=20 * 210 * 2)
    _all(_read(make_tar(plain), ImportRequest(limits=budget)))  # fits
    with pytest.raises(IntegrityError, match="names and link targets take more than"):
        _all(_read(make_tar(members), ImportRequest(limits=budget)))


def test_space_of_two_filesystems_in_one_helper_run() -> None:
    from voltool.tar.live import parse_space

    target, store = (
        "fs 1000 10 990 1% /v0\n40\n1700000000\nfs 100 40 60 40% /v0\n2049\n",
        "fs 5000 10 4990 1% /v1\n0\n1700000001\nfs 100 40 60 40% /v1\n2050\n",
    )
    a, b = parse_space(target), parse_space(store)
    assert (a.available, a.used, a.device) == (990 * 1024, 40 * 1024, "2049")
    assert (b.available, b.device) == (4990 * 1024, "2050")
    assert not a.shares_filesystem_with(b)
    assert a.shares_filesystem_with(parse_space(target.replace("2049", "")))  # unknown: assume one


def test_restore_charges_each_filesystem_with_what_is_written_on_it() -> None:
    from voltool.ops.restore import charge
    from voltool.tar.live import Space

    mib = 2**20
    target = Space(100 * mib, 60 * mib, None, None, "1")
    elsewhere = Space(1000 * mib, 0, None, None, "2")
    same = Space(100 * mib, 0, None, None, "1")
    # Staged 50 MiB, pre-restore snapshot 60 MiB: only the staged copy is on the target's.
    assert charge("pg", 50 * mib, 60 * mib, target, elsewhere) == 50 * mib
    with pytest.raises(NoSpace, match="a staged copy and the pre-restore snapshot"):
        charge("pg", 50 * mib, 60 * mib, target, same)
    with pytest.raises(NoSpace, match="where snapshots are kept"):
        charge("pg", 50 * mib, 2000 * mib, target, elsewhere)
    assert charge("pg", 50 * mib, 0, target, same) == 50 * mib
