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

Format 2 (into the store of the volume the import is filed under) goes through
the same steps 1-4, into a temporary snapshot volume that never gets its
snapshot.json, so it is never listed as complete; then, under the locks of
that volume and of the store:
5. the agent copies its data/ into the store as snapshot `<id>`, linking files
   unchanged since the store's latest snapshot by content; the copy is hashed
   again and held to its own manifest, and that manifest, read as format 1,
   to the one the archive was checked against (voltool.store.copy: copy_checked);
6. journal "checked"; the temporary volume is removed (with its keeper);
7. the stored snapshot is committed (snapshot.json by rename, last of all).
Whatever fails before 7 is rolled back: the temporary volume and the copy go,
and the store if that leaves it empty. A SIGKILL leaves the journal's "begin"
(which names both volumes and the id), and `voltool recover` removes what was
not committed, and the store if this import made it and it holds nothing.
Nothing needs finishing: once the stored snapshot is committed, the import is
done.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field, replace
from typing import BinaryIO, cast

from voltool import journal
from voltool.engine import agent_image, keepers
from voltool.engine.locks import volume_lock
from voltool.errors import ArchiveRejected, IntegrityError, NoSpace, UsageError, VoltoolError
from voltool.ids import check_volume_name, new_id, snapshot_volume_name
from voltool.journal import Kind, Step
from voltool.runtime import Runtime
from voltool.store import copy, format2
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
    format: int = 1  # 2: into the store of the volume it is filed under (store/format2.py)
    wait: float | None = 30  # format 2: seconds to wait for the store's lock


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
            on_bytes=journal.held_after(lambda n: None, "importing-data"),
            default_root=self.default_root,
            fill_parents=self.fill_parents,
            close=close,
        )


def read_archive(stream: BinaryIO, req: ImportRequest) -> Incoming:
    """Detect the compression and the kind of archive, and read and check an export's metadata.

    Touches no engine: whatever fails here fails before anything is created.
    """
    if req.format not in (1, 2):
        raise UsageError(f"format {req.format} is not a snapshot format: use 1 or 2")
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
        incoming = read_archive(cast(BinaryIO, _Progress(stream, rt)), req)
        if req.format == 2:
            return _into_store(rt, incoming, req.wait)
        return _import(rt, incoming)
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


def _into_store(rt: Runtime, incoming: Incoming, wait: float | None) -> Snapshot:
    """Format 2: staged and checked as format 1 in a temporary snapshot volume, then copied
    into the store, checked again, and committed there last (see the module)."""
    source, meta = incoming.source, incoming.meta
    if meta.name:
        check_name_free(rt, [source], meta.name)
    target = format2.store_name(source)
    rt.journal.refuse_pending(target)
    image = agent_image.agent_image(rt)  # built on first use, before anything is locked

    op, sid = new_id(), new_id()
    volume = snapshot_volume_name(sid)
    locked = sorted({volume, target})
    with contextlib.ExitStack() as locks:
        for v in locked:
            locks.enter_context(volume_lock(rt, v, op, KIND, wait))
        rt.journal.append(
            op,
            Step.BEGIN,
            kind=Kind.IMPORT,
            volumes=locked,
            snapshots={source: sid},
            store=target,
        )
        try:
            format2.ensure_store(rt, source, op)
            created = create_volume(rt, op, sid, source, KIND)
            staged_room, store_room = live.spaces(rt, volume, target)
            room = room_for(incoming.expect, staged_room, store_room)
            rt.journal.append(op, Step.STREAM, snapshot=sid, volume=source)
            transfer = incoming.transfer(room.available, room.inodes, close=False)
            commit = Commit(KIND, "none", meta, incoming.origin)
            staged = receive(rt, op, sid, source, created, transfer, commit, mark=False)
            rt.reporter.end()  # the archive is read: the rest happens next to the data
            copied = copy.copy_checked(
                rt,
                image,
                op,
                staged.record(rt.owner.token(), meta),
                what="the copy of the archive in the store",
                refused="not imported",
            )
            rt.journal.append(op, Step.CHECKED, snapshot=sid)
            keepers.remove_when_unused(rt, volume)
            done = copy.commit_copy(rt, op, copied)
        except BaseException as e:
            # Both are snapshot `sid`: the temporary volume, and its copy in the store.
            gone = abandon(rt, op, {sid: None})
            gone = abandon(rt, op, {sid: target}) and gone
            if gone:
                with contextlib.suppress(VoltoolError):
                    rt.journal.append(op, Step.FAILED, error=str(e) or type(e).__name__)
            raise
        journal.hold_for_tests("committed")
        rt.journal.append(op, Step.DONE)
    return done


def _recorded_source(info: SnapshotInfo) -> str:
    try:
        return check_volume_name(info.source)
    except UsageError:
        raise IntegrityError(
            f"{SNAPSHOT}: source {quoted(info.source)} is not a volume name"
        ) from None


def _room(rt: Runtime, volume: str, expect: Manifest | None) -> live.Space:
    """Room on the new snapshot volume's filesystem; NoSpace if an export cannot fit."""
    return room_for(expect, live.space(rt, volume))


def room_for(
    expect: Manifest | None, staged: live.Space, kept: live.Space | None = None
) -> live.Space:
    """The room an import may fill as it streams, from the free space where it is `staged`
    and (format 2) where the store `kept` copies it; NoSpace if an export cannot fit.

    Format 2 holds the data twice until the staged copy goes: where both are on one
    filesystem (or that cannot be told), their needs add up, and the stream gets half."""
    copies = 1
    if kept is not None:
        if staged.shares_filesystem_with(kept):
            copies = 2
        elif kept.available is not None and staged.available is not None:
            staged = replace(
                staged,
                available=min(staged.available, kept.available),
                inodes=_least(staged.inodes, kept.inodes),
            )
    if staged.available is None:
        return staged
    available = staged.available - _FIXED_SLACK
    if expect is not None:
        needed = copies * (expect.content_bytes() + len(expect) * PER_ENTRY_COST)
        if needed > available:
            raise NoSpace(
                f"not enough space to import: {staged.available // 2**20} MiB free, "
                f"{(needed + _FIXED_SLACK) // 2**20} MiB needed"
            )
        if staged.inodes is not None and copies * len(expect) > staged.inodes:
            raise NoSpace(
                f"not enough inodes to import: {staged.inodes} free, {copies * len(expect)} needed"
            )
    inodes = staged.inodes // copies if staged.inodes is not None else None
    return live.Space(max(available, 0) // copies, staged.used, staged.root_mtime, inodes)


def _least(a: int | None, b: int | None) -> int | None:
    """The smaller of two counts, either of which may be unknown (None)."""
    known = [n for n in (a, b) if n is not None]
    return min(known) if known else None


class _Progress:
    """A readable file that reports the bytes read from `source` as progress."""

    def __init__(self, source: BinaryIO, rt: Runtime) -> None:
        self._source = source
        self._rt = rt

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n)
        self._rt.reporter.advance(len(data))
        return data
