"""The import pipeline up to the engine: compression, export metadata, plain tars, the corpus."""

from __future__ import annotations

import io
import tarfile

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
from tests.tarbuild import d, f, make_tar, sym
from voltool import compression
from voltool.compression import Compression
from voltool.errors import ExitCode, IntegrityError, NoSpace, UsageError, VoltoolError
from voltool.importer import ImportRequest, Incoming, read_archive
from voltool.manifest import Manifest
from voltool.validate import Limits


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
