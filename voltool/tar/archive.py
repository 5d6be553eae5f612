"""The export file format, and how an archive to import is told apart and read.

An export is one tar stream (then compressed, or not):

    snapshot.json    first, so a reader knows what follows before any data
    manifest.jsonl
    meta.json
    data/...         the tree, every header voltool's own canonical PAX

Everything in it is data to validate: the metadata members are bounded in size
and parsed strictly, and must agree with each other before one data byte is
read; the data must then match the manifest entry by entry (transfer.py).

Any other tar is a plain tar of a directory tree. Its first entry decides its
shape: a root entry ("." or "./", as `tar -C dir -c .` makes) means the
archive's root is the tree; a lone top directory ("data/", as
`docker cp CONTAINER:/data -` makes) means that directory is the tree and
every other entry must lie in it; anything else means the archive's root is
the tree and has no entry of its own (it gets mode 0755, owned by root).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from voltool.errors import ArchiveRejected, IntegrityError
from voltool.store.layout import (
    FORMAT,
    MANIFEST,
    MAX_METADATA_FILE,
    META,
    SNAPSHOT,
    Meta,
    SnapshotInfo,
    check_manifest,
    manifest_bound,
)
from voltool.store.manifest import Manifest
from voltool.tar.stream import EntryType, TarEntry, TarReader, file_member

HEAD = (SNAPSHOT, MANIFEST, META)


def head_members(info: SnapshotInfo, manifest: Manifest, meta: Meta) -> Iterator[bytes]:
    """The export's metadata members, in order (the data follows; no end-of-archive)."""
    mtime = _timestamp(info.created)
    yield from file_member(SNAPSHOT, [info.to_json()], mtime)
    yield from file_member(MANIFEST, manifest.chunks(), mtime, manifest.summary.size)
    yield from file_member(META, [meta.to_json()], mtime)


def _timestamp(created: str) -> int:
    return int(dt.datetime.fromisoformat(created).timestamp())


@dataclass(frozen=True)
class ExportHead:
    """An export's metadata, read and checked against itself."""

    info: SnapshotInfo
    manifest: Manifest
    meta: Meta


def is_export(reader: TarReader) -> bool:
    """True if the archive starts as an export does (its first member is snapshot.json)."""
    first = reader.peek()
    return first is not None and first.name == SNAPSHOT


def read_head(reader: TarReader, max_entries: int) -> ExportHead:
    """Read an export's metadata members; the reader is then at the first data entry.

    Raises IntegrityError when a member is missing, out of order, not a regular
    file, over its size bound, or when the three disagree; ArchiveRejected when
    snapshot.json announces more entries than `max_entries` (the manifest is
    then not even read).
    """
    raw_info = _member(reader, SNAPSHOT, MAX_METADATA_FILE)
    info = SnapshotInfo.parse(raw_info)
    if info.format != FORMAT:
        # Exports carry format 1 only, so far: what says otherwise is from a newer voltool.
        raise IntegrityError(
            f"{SNAPSHOT}: unknown format {info.format} (written by a newer voltool?)"
        )
    if info.entries > max_entries:
        raise ArchiveRejected(SNAPSHOT, f"it lists {info.entries} entries, over {max_entries}")
    _next_member(reader, MANIFEST, manifest_bound(info.entries))
    manifest = Manifest.read(reader.content(), info.entries)
    check_manifest(manifest, info)
    meta = Meta.parse(_member(reader, META, MAX_METADATA_FILE))
    return ExportHead(info, manifest, meta)


def _member(reader: TarReader, name: str, limit: int) -> bytes:
    _next_member(reader, name, limit)
    return b"".join(reader.content())


def _next_member(reader: TarReader, name: str, limit: int) -> None:
    """Move to the next member, which must be the regular file `name` of at most `limit` bytes."""
    entry = next(reader, None)
    if entry is None or entry.name != name:
        found = "the end" if entry is None else repr(entry.name)
        raise IntegrityError(f"export is malformed: expected {name} next, found {found}")
    if entry.type is not EntryType.FILE or entry.size > limit:
        raise ArchiveRejected(name, f"not a regular file of at most {limit} bytes")


@dataclass(frozen=True)
class PlainShape:
    """Where the tree lies in a plain tar (see the module's docstring)."""

    top: str | None  # the lone top directory, or None: the archive's root
    default_root: TarEntry | None  # the root entry to supply when the archive has none


def plain_shape(first: TarEntry, now: int) -> PlainShape:
    """The shape of a plain tar whose first entry is `first`."""
    name = first.name.rstrip("/")
    parts = [p for p in name.split("/") if p != "."]
    if not parts:
        return PlainShape(None, None)
    if first.type is EntryType.DIR and "/" not in name:
        return PlainShape(parts[0], None)
    return PlainShape(None, TarEntry(".", EntryType.DIR, 0o755, 0, 0, 0, now))
