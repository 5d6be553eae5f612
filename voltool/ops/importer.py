"""Importing an archive: an export, or a plain tar of a tree, into a new snapshot.

Everything in the archive is untrusted. In order:
1. the compression is found from the first bytes, and the stream decompressed
   in bounded chunks (a bomb costs nothing until a cap stops it);
2. an export's metadata is read and checked against itself, and against the
   caps, before anything is created (archive.read_head);
3. the volume's lock is taken, "begin" journaled, the snapshot volume created
   and the free space measured;
4. every entry is validated (validate.py) and, for an export, held to the
   manifest, and streamed into the snapshot's data/; a plain tar's manifest is
   computed on the way;
5. the snapshot is committed (snapshot.json last), kind `import`.
Any failure or Ctrl-C removes the snapshot volume and its helpers; a process
that dies leaves a journal record that `voltool recover` rolls back. The
source volume an archive names is recorded, never used as a restore target:
restoring an imported snapshot needs `--to`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import BinaryIO, cast

from voltool.engine.locks import volume_lock
from voltool.errors import ArchiveRejected, IntegrityError, NoSpace, UsageError
from voltool.ids import check_volume_name, new_id, snapshot_volume_name
from voltool.journal import Kind, Step
from voltool.runtime import Runtime
from voltool.store.catalog import Snapshot, abandon, check_name_free
from voltool.store.format1 import Commit, create_volume, receive
from voltool.store.layout import DATA_DIR, SNAPSHOT, Meta, SnapshotInfo
from voltool.store.manifest import Manifest
from voltool.tar import archive, compression, live
from voltool.tar.stream import TarEntry, TarReader
from voltool.tar.transfer import Transfer
from voltool.tar.validate import PER_ENTRY_COST, EntryValidator, Limits
from voltool.words import quoted

KIND = "import"
DEFAULT_SOURCE = "imported"  # what a plain tar is filed under without --volume
# Room kept free beyond the archive's content and entries: voltool's metadata.
_FIXED_SLACK = 16 * 1024 * 1024


@dataclass(frozen=True)
class ImportRequest:
    source: str | None = None  # the volume name to file it under (--volume)
    name: str | None = None
    limits: Limits = field(default_factory=Limits)
    label: str = "import"  # for progress: the file's name
    total: int | None = None  # bytes of input, when known (a file's size)


@dataclass(frozen=True)
class Incoming:
    """An archive being read: what its start said, and how to read the rest."""

    source: str  # the volume name the snapshot is filed under
    meta: Meta
    origin: SnapshotInfo | None  # an export's snapshot.json
    expect: Manifest | None  # an export's manifest: the data must match it
    reader: TarReader  # at the first data entry
    top: str | None
    default_root: TarEntry | None
    limits: Limits
    fill_parents: int | None = None  # plain tars: list implied directories (this mtime)

    def transfer(
        self, free: int | None = None, inodes: int | None = None, close: bool = True
    ) -> Transfer:
        """The data, validated (and held to the manifest), as a tar for data/."""
        limits = replace(self.limits, free_bytes=free, free_inodes=inodes)
        return Transfer(
            self.reader,
            EntryValidator(self.top, limits),
            DATA_DIR,
            expect=self.expect,
            default_root=self.default_root,
            fill_parents=self.fill_parents,
            close=close,
        )


def read_archive(stream: BinaryIO, req: ImportRequest) -> Incoming:
    """Detect the compression and the kind of archive, and read and check an export's metadata.

    Touches no engine: whatever fails here fails before anything is created.
    """
    meta = Meta(req.name, None, False)
    why = meta.problem()
    if why:
        raise UsageError(why.replace("invalid name", "invalid snapshot name", 1))
    if req.source is not None:
        check_volume_name(req.source)
    _, chunks = compression.reader(stream)
    reader = TarReader(chunks)
    first = reader.peek()
    if first is None:
        raise IntegrityError("archive has no entries")
    limits = req.limits
    if not archive.is_export(reader):
        now = int(dt.datetime.now(dt.UTC).timestamp())
        shape = archive.plain_shape(first, now)
        source = req.source or DEFAULT_SOURCE
        return Incoming(
            source, meta, None, None, reader, shape.top, shape.default_root, limits, now
        )
    head = archive.read_head(reader, limits.max_entries)
    if head.info.bytes > limits.max_bytes:
        raise ArchiveRejected(
            SNAPSHOT, f"it claims {head.info.bytes} bytes of content, over {limits.max_bytes}"
        )
    # One entry or byte more than the manifest lists is caught at that entry's
    # header by the manifest check, before its content is read.
    return Incoming(
        req.source or _recorded_source(head.info),
        Meta(req.name, head.meta.note, False),
        head.info,
        head.manifest,
        reader,
        DATA_DIR,
        None,
        limits,
    )


def import_archive(rt: Runtime, stream: BinaryIO, req: ImportRequest) -> Snapshot:
    """Read one archive from `stream` into a new snapshot of kind `import`; return it."""
    rt.reporter.begin(req.label, req.total)
    try:
        return _import(rt, read_archive(cast(BinaryIO, _Progress(stream, rt)), req))
    finally:
        rt.reporter.end()


def _import(rt: Runtime, incoming: Incoming) -> Snapshot:
    source, meta = incoming.source, incoming.meta
    if meta.name:
        check_name_free(rt, [source], meta.name)

    op, sid = new_id(), new_id()
    volume = snapshot_volume_name(sid)
    with volume_lock(rt, volume, op, KIND):
        rt.journal.append(
            op, Step.BEGIN, kind=Kind.IMPORT, volumes=[volume], snapshots={source: sid}
        )
        try:
            created = create_volume(rt, op, sid, source, KIND)
            room = _room(rt, volume, incoming.expect)
            rt.journal.append(op, Step.STREAM, snapshot=sid, volume=source)
            transfer = incoming.transfer(room.available, room.inodes, close=False)
            commit = Commit(KIND, "none", meta, incoming.origin)
            done = receive(rt, op, sid, source, created, transfer, commit)
        except BaseException as e:
            if abandon(rt, op, {sid: None}):
                rt.journal.append(op, Step.FAILED, error=str(e) or type(e).__name__)
            raise
        rt.journal.append(op, Step.DONE)
    return done.record(rt.owner.token(), meta)


def _recorded_source(info: SnapshotInfo) -> str:
    try:
        return check_volume_name(info.source)
    except UsageError:
        raise IntegrityError(
            f"{SNAPSHOT}: source {quoted(info.source)} is not a volume name"
        ) from None


def _room(rt: Runtime, volume: str, expect: Manifest | None) -> live.Space:
    """Room on the new snapshot volume's filesystem; NoSpace if an export cannot fit."""
    room = live.space(rt, volume)
    if room.available is None:
        return room
    available = room.available - _FIXED_SLACK
    if expect is not None:
        needed = expect.content_bytes() + len(expect) * PER_ENTRY_COST
        if needed > available:
            raise NoSpace(
                f"not enough space to import: {room.available // 2**20} MiB free, "
                f"{(needed + _FIXED_SLACK) // 2**20} MiB needed"
            )
        if room.inodes is not None and len(expect) > room.inodes:
            raise NoSpace(f"not enough inodes to import: {room.inodes} free, {len(expect)} needed")
    return live.Space(max(available, 0), room.used, room.root_mtime, room.inodes)


class _Progress:
    """A readable file that reports the bytes read from `source` as progress."""

    def __init__(self, source: BinaryIO, rt: Runtime) -> None:
        self._source = source
        self._rt = rt

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n)
        self._rt.reporter.advance(len(data))
        return data
