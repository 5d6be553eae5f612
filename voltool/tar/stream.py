"""Read and write tar streams one entry at a time, in bounded memory.

`TarReader` turns an iterable of byte chunks (an engine archive stream, a file)
into `TarEntry` values, resolving PAX and GNU long-name headers, and hands out
each entry's content as chunks without ever holding a whole file. Writing goes
through `header_bytes`: voltool re-emits every header it forwards in one
canonical PAX form, so the engine only ever extracts headers that voltool
itself parsed and checked (no parser differential between us and dockerd).
"""

from __future__ import annotations

import enum
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from voltool.errors import ArchiveRejected, IntegrityError
from voltool.words import quoted

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
_ZERO_BLOCK = b"\0" * BLOCK

# Bounds on the metadata a header may carry, so a hostile header cannot make us
# buffer without limit.
MAX_PAX_HEADER = 64 * 1024  # a path and a link target of 4 KiB, escaped, and the rest
MAX_GNU_LONGNAME = 64 * 1024
# What may follow the end-of-archive marker before the stream is called corrupt.
MAX_TRAILING = 1024 * 1024


class EntryType(enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"


_FROM_TAR = {
    tarfile.REGTYPE: EntryType.FILE,
    tarfile.AREGTYPE: EntryType.FILE,
    tarfile.CONTTYPE: EntryType.FILE,
    tarfile.DIRTYPE: EntryType.DIR,
    tarfile.SYMTYPE: EntryType.SYMLINK,
    tarfile.LNKTYPE: EntryType.HARDLINK,
    tarfile.CHRTYPE: EntryType.CHAR,
    tarfile.BLKTYPE: EntryType.BLOCK,
    tarfile.FIFOTYPE: EntryType.FIFO,
}
_TO_TAR = {
    EntryType.FILE: tarfile.REGTYPE,
    EntryType.DIR: tarfile.DIRTYPE,
    EntryType.SYMLINK: tarfile.SYMTYPE,
    EntryType.HARDLINK: tarfile.LNKTYPE,
    EntryType.CHAR: tarfile.CHRTYPE,
    EntryType.BLOCK: tarfile.BLKTYPE,
    EntryType.FIFO: tarfile.FIFOTYPE,
}


@dataclass(frozen=True)
class TarEntry:
    """One member of a tar stream, as its headers describe it (names not yet checked)."""

    name: str
    type: EntryType
    mode: int  # permission bits only, 0o7777
    uid: int
    gid: int
    size: int  # bytes of content that follow (0 for all but files)
    mtime: int  # whole seconds
    linkname: str = ""
    uname: str = ""
    gname: str = ""
    devmajor: int = 0
    devminor: int = 0

    def renamed(self, name: str, linkname: str | None = None) -> TarEntry:
        return replace(self, name=name, linkname=self.linkname if linkname is None else linkname)


def header_bytes(entry: TarEntry) -> bytes:
    """The canonical PAX header block(s) for `entry` (content and padding not included).

    What tarfile writes in PAX format, byte for byte; the common case (ASCII
    names that fit, numbers that fit) is built here directly, for tarfile's
    generic path costs more than everything else voltool does per entry.
    """
    return _plain_ustar(entry) or _tarfile_header(entry)


_UST_TYPES = {
    EntryType.FILE: b"0",
    EntryType.HARDLINK: b"1",
    EntryType.SYMLINK: b"2",
    EntryType.DIR: b"5",
}
_UST_TAIL = b"ustar\x0000" + b"\0" * (32 + 32 + 8 + 8 + 155 + 12)  # magic to the block's end


def _plain_ustar(entry: TarEntry) -> bytes | None:
    """A single ustar block, when no PAX record is needed (else None)."""
    kind = _UST_TYPES.get(entry.type)
    name, link = entry.name, entry.linkname
    if entry.type is EntryType.DIR and not name.endswith("/"):
        name += "/"
    size = entry.size if entry.type is EntryType.FILE else 0
    if (
        kind is None
        or len(name) > 100
        or len(link) > 100
        or not (name.isascii() and link.isascii())
        or not (0 <= entry.uid < 8**7 and 0 <= entry.gid < 8**7)
        or not (0 <= size < 8**11 and 0 <= entry.mtime < 8**11)
    ):
        return None
    block = b"".join(
        (
            name.encode().ljust(100, b"\0"),
            b"%07o\0%07o\0%07o\0%011o\0%011o\0        "
            % (entry.mode & 0o7777, entry.uid, entry.gid, size, entry.mtime),
            kind,
            link.encode().ljust(100, b"\0"),
            _UST_TAIL,
        )
    )
    # The checksum counts its own field as spaces, as it is now.
    return block[:148] + b"%06o\0" % sum(block) + block[155:]


def _tarfile_header(entry: TarEntry) -> bytes:
    info = tarfile.TarInfo(entry.name)
    info.type = _TO_TAR[entry.type]
    info.mode = entry.mode
    info.uid = entry.uid
    info.gid = entry.gid
    info.size = entry.size if entry.type is EntryType.FILE else 0
    info.mtime = entry.mtime
    info.linkname = entry.linkname
    # No user or group names: the engine extracts by number, and a hostile name
    # (a NUL, a megabyte) must not reach it.
    info.devmajor = entry.devmajor
    info.devminor = entry.devminor
    try:
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    except ValueError as e:  # a field tarfile cannot encode
        raise ArchiveRejected(entry.name, f"cannot be re-encoded ({e})") from None


def padding(size: int) -> bytes:
    """The zero bytes that round a member's content up to a whole block."""
    return b"\0" * (-size % BLOCK)


def file_member(
    name: str, chunks: Iterable[bytes], mtime: int, size: int | None = None
) -> Iterator[bytes]:
    """A whole regular-file member (mode 0644, owned by root) holding `chunks`.

    With `size`, the chunks are streamed, and must add up to it; without, they are
    gathered first to count them.
    """
    if size is None:
        chunks = list(chunks)
        size = sum(len(c) for c in chunks)
    yield header_bytes(TarEntry(name, EntryType.FILE, 0o644, 0, 0, size, mtime))
    sent = 0
    for chunk in chunks:
        sent += len(chunk)
        yield chunk
    if sent != size:
        raise RuntimeError(f"{name}: {sent} bytes sent for a member of {size}")
    yield padding(size)


class _Source:
    """A cursor over an iterable of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = b""
        self._pos = 0
        self.offset = 0  # bytes handed out so far

    def _fill(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._buf = bytes(chunk)
                self._pos = 0
                return True
        return False

    def read_exact(self, n: int, what: str) -> bytes:
        parts: list[bytes] = []
        need = n
        while need:
            if self._pos >= len(self._buf) and not self._fill():
                if self.offset == 0 and need == n:
                    raise IntegrityError("archive is empty")
                raise IntegrityError(f"archive is truncated: it ends inside {what}")
            take = self._buf[self._pos : self._pos + need]
            self._pos += len(take)
            need -= len(take)
            parts.append(take)
        self.offset += n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def pieces(self, n: int, what: str) -> Iterator[bytes]:
        """Yield exactly `n` bytes, as the chunks they arrived in (no copying when aligned)."""
        need = n
        while need:
            if self._pos >= len(self._buf) and not self._fill():
                raise IntegrityError(f"archive is truncated: it ends inside {what}")
            if self._pos == 0 and len(self._buf) <= need:
                piece = self._buf
            else:
                piece = self._buf[self._pos : self._pos + need]
            self._pos += len(piece)
            need -= len(piece)
            self.offset += len(piece)
            yield piece

    def drain(self, limit: int) -> None:
        """Consume the rest; more than `limit` bytes, or anything not zero, is corruption."""
        seen = len(self._buf) - self._pos
        clean = not self._buf[self._pos :].strip(b"\0")
        for chunk in self._chunks:
            seen += len(chunk)
            clean = clean and not bytes(chunk).strip(b"\0")
            if seen > limit:
                break
        if not clean or seen > limit:
            raise IntegrityError("archive has data after its end-of-archive marker")


class TarReader:
    """Iterate over a tar stream's entries; read each one's content with `content()`.

    Content left unread is skipped when the next entry is asked for. The stream
    must end with an end-of-archive block: a stream cut at an entry boundary is
    reported as truncated, never taken for a shorter archive.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._src = _Source(chunks)
        self._remaining = 0  # unread content of the current entry
        self._pad = 0
        self._current = "the first header"
        self._entries = self._read_entries()
        self._peeked: list[TarEntry] = []
        self.ended = False

    @property
    def bytes_read(self) -> int:
        return self._src.offset

    def __iter__(self) -> Iterator[TarEntry]:
        """The reader is its own iterator: iterating again continues where the last loop stopped."""
        return self

    def __next__(self) -> TarEntry:
        if self._peeked:
            return self._peeked.pop()
        return next(self._entries)

    def peek(self) -> TarEntry | None:
        """The next entry, left to be handed out again by iteration (None at the end)."""
        if not self._peeked:
            entry = next(self._entries, None)
            if entry is None:
                return None
            self._peeked.append(entry)
        return self._peeked[-1]

    def _read_entries(self) -> Iterator[TarEntry]:
        pax: dict[str, str] = {}
        global_pax: dict[str, str] = {}
        longname: str | None = None
        longlink: str | None = None
        meta_bytes = 0  # metadata members since the last entry, and global ones ever
        while True:
            self._skip_rest()
            block = self._src.read_exact(BLOCK, f"the header after {quoted(self._current)}")
            if block == _ZERO_BLOCK:
                self.ended = True
                self._src.drain(MAX_TRAILING)
                return
            info = _parse_header(block, self._current)
            kind = info.type
            if kind in (
                tarfile.XHDTYPE,
                tarfile.XGLTYPE,
                tarfile.SOLARIS_XHDTYPE,
                tarfile.GNUTYPE_LONGNAME,
                tarfile.GNUTYPE_LONGLINK,
            ):
                # Bounded in total, not one by one: a run of metadata members
                # must not pile up without limit before an entry arrives.
                meta_bytes += max(info.size, 0)
                if meta_bytes > MAX_PAX_HEADER:
                    raise ArchiveRejected(
                        self._current, f"over {MAX_PAX_HEADER} bytes of headers for one entry"
                    )
            if kind in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
                data = self._meta_member(info.size, MAX_PAX_HEADER, "PAX header")
                records = _parse_pax(data, self._current)
                if kind == tarfile.XGLTYPE:
                    global_pax.update(records)
                elif pax:
                    # GNU tar and Go keep only the last one: refuse to pick a side.
                    raise ArchiveRejected(self._current, "two PAX headers for one entry")
                else:
                    pax = records
                continue
            if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                data = self._meta_member(info.size, MAX_GNU_LONGNAME, "GNU long name")
                value = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if kind == tarfile.GNUTYPE_LONGNAME:
                    longname = value
                else:
                    longlink = value
                continue
            entry = _entry(info, {**global_pax, **pax}, longname, longlink)
            pax, longname, longlink = {}, None, None
            meta_bytes = sum(len(k) + len(v) for k, v in global_pax.items())
            self._current = entry.name
            # Only regular files carry content; for every other type the size
            # is metadata at most, and no content blocks follow in any tar we read.
            self._remaining = entry.size if entry.type is EntryType.FILE else 0
            if entry.type is not EntryType.FILE and entry.size:
                raise ArchiveRejected(
                    entry.name, f"a {entry.type.value} entry may not carry content"
                )
            self._pad = -self._remaining % BLOCK
            yield entry

    def content(self) -> Iterator[bytes]:
        """The current entry's content, in chunks; may be called once per entry."""
        # Count down as pieces go out, so content abandoned half-way is skipped correctly.
        for piece in self._src.pieces(self._remaining, f"the content of {quoted(self._current)}"):
            self._remaining -= len(piece)
            yield piece
        if self._pad:
            self._src.read_exact(self._pad, f"the padding of {quoted(self._current)}")
            self._pad = 0

    def _skip_rest(self) -> None:
        if self._remaining or self._pad:
            for _ in self.content():
                pass

    def _meta_member(self, size: int, limit: int, what: str) -> bytes:
        if size < 0 or size > limit:
            raise ArchiveRejected(
                self._current, f"{what} of {size} bytes is over the {limit}-byte bound"
            )
        data = self._src.read_exact(size, what)
        self._src.read_exact(-size % BLOCK, what)
        return data


def _parse_header(block: bytes, after: str) -> tarfile.TarInfo:
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError as e:
        raise IntegrityError(
            f"archive is corrupt: bad header after {quoted(after)} ({e})"
        ) from None
    if block[257:263] != b"ustar\x00" and info.type not in tarfile.GNU_TYPES:
        # Only POSIX ustar ("ustar\0" magic, whatever the version) has a name
        # prefix (GNU keeps times there, v7 nothing);
        # GNU tar and Go ignore those bytes, and so must we, or we import another name.
        name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        info.name = name.rstrip("/") if info.isdir() else name
    return info


_PAX_RECORD = re.compile(rb"(\d{1,8}) ")
# The PAX keys voltool reads (and GNU.sparse.*, to refuse sparse members); the
# rest are dropped as they are parsed, so that a header of thousands of
# records costs nothing per entry after it.
_PAX_KEYS = frozenset({"path", "linkpath", "size", "uid", "gid", "mtime"})
MAX_PAX_RECORDS = 64  # GNU tar --posix writes 5-8, and one per extended attribute


def _parse_pax(data: bytes, after: str) -> dict[str, str]:
    records: dict[str, str] = {}
    count = 0
    pos = 0
    end_of_records = len(data.rstrip(b"\0"))  # once: a per-record check is quadratic
    while pos < end_of_records:
        m = _PAX_RECORD.match(data, pos)
        if not m:
            raise IntegrityError(f"archive is corrupt: malformed PAX header after {quoted(after)}")
        length = int(m.group(1))
        end = pos + length
        if length <= len(m.group(0)) or end > len(data) or data[end - 1 : end] != b"\n":
            raise IntegrityError(f"archive is corrupt: malformed PAX record after {quoted(after)}")
        key, eq, value = data[m.end() : end - 1].partition(b"=")
        if not eq:
            raise IntegrityError(f"archive is corrupt: malformed PAX record after {quoted(after)}")
        count += 1
        if count > MAX_PAX_RECORDS:
            raise ArchiveRejected(after, f"a PAX header of more than {MAX_PAX_RECORDS} records")
        name = key.decode("utf-8", "surrogateescape")
        if name in _PAX_KEYS or name.startswith("GNU.sparse."):
            records[name] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


_DIGITS = re.compile(r"[0-9]{1,20}")
_MTIME = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,9})?")  # ASCII digits only: str.isdigit() takes "²"


def _pax_int(records: dict[str, str], key: str, default: int, name: str) -> int:
    raw = records.get(key)
    if raw is None:
        value = default
    elif _DIGITS.fullmatch(raw):
        value = int(raw)
    else:
        raise ArchiveRejected(name, f"PAX {key} is not a whole number: {quoted(raw)}")
    if value < 0:
        raise ArchiveRejected(name, f"negative {key}")
    if key in ("uid", "gid") and value > _MAX_ID:
        # The kernel takes 32 bits (2**32 would be root) and -1 means "unchanged".
        raise ArchiveRejected(name, f"{key} {value} is over {_MAX_ID}")
    return value


_MAX_ID = 2**32 - 2


def _pax_mtime(records: dict[str, str], default: float, name: str) -> int:
    raw = records.get("mtime")
    if raw is None:
        return int(default)
    if not _MTIME.fullmatch(raw):
        raise ArchiveRejected(name, f"PAX mtime is not a number: {quoted(raw)}")
    return int(float(raw) // 1)


_MAX_DEV = 0o7777777  # what a ustar device field holds


def _entry(
    info: tarfile.TarInfo, pax: dict[str, str], longname: str | None, longlink: str | None
) -> TarEntry:
    name = pax.get("path", longname if longname is not None else info.name)
    if any(k.startswith("GNU.sparse.") for k in pax) or info.type == tarfile.GNUTYPE_SPARSE:
        raise ArchiveRejected(name, "sparse members are not supported")
    kind = _FROM_TAR.get(info.type)
    if kind is None:
        raise ArchiveRejected(name, f"unsupported tar member type {quoted(info.type)}")
    if kind is EntryType.FILE and name.endswith("/") and info.type == tarfile.AREGTYPE:
        kind = EntryType.DIR
    if not (0 <= info.devmajor <= _MAX_DEV and 0 <= info.devminor <= _MAX_DEV):
        raise ArchiveRejected(name, "device numbers out of range")
    is_link = kind in (EntryType.SYMLINK, EntryType.HARDLINK)
    linkname = pax.get("linkpath", longlink if longlink is not None else info.linkname)
    return TarEntry(
        name=name,
        type=kind,
        mode=info.mode & 0o7777,
        uid=_pax_int(pax, "uid", info.uid, name),
        gid=_pax_int(pax, "gid", info.gid, name),
        size=_pax_int(pax, "size", info.size, name),
        mtime=_pax_mtime(pax, info.mtime, name),
        linkname=linkname if is_link else "",  # a link name on anything else is noise
        uname=info.uname,
        gname=info.gname,
        devmajor=info.devmajor,
        devminor=info.devminor,
    )
