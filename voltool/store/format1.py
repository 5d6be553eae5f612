"""Format 1: a snapshot volume each (`voltool-snap-<id>`), written through the archive API.

A tar stream of the tree is validated and hashed on the way (voltool.tar.transfer)
and extracted into the new volume's data/, followed in the same stream by
manifest.jsonl, meta.json and, last, snapshot.json: the commit marker.
New snapshots take format 2 unless configured otherwise; this module writes format 1
for `format = 1` and for what still uses it (voltool.store.layout has the layout).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from voltool import __version__, journal
from voltool.engine import labels as L
from voltool.engine.client import Mount
from voltool.engine.keepers import protect
from voltool.errors import EngineError, IntegrityError, NotFound
from voltool.ids import creation_time, snapshot_volume_name
from voltool.journal import Step
from voltool.runtime import Runtime
from voltool.sh import program
from voltool.store.catalog import Snapshot
from voltool.store.layout import DATA_DIR, FORMAT, MANIFEST, META, SNAPSHOT, Meta, SnapshotInfo
from voltool.store.manifest import Manifest
from voltool.tar.stream import END_OF_ARCHIVE, file_member
from voltool.tar.transfer import Transfer
from voltool.tar.validate import EntryValidator, Limits


@dataclass(frozen=True)
class Commit:
    """What a new snapshot's snapshot.json and meta.json say beyond what its data gives."""

    kind: str
    quiesce: str
    meta: Meta
    origin: SnapshotInfo | None = None  # an import: the snapshot.json it came with


@dataclass(frozen=True)
class Received:
    """A snapshot volume with its data, manifest and (unless `fix_modes` was left) commit marker."""

    id: str
    volume: str
    source: str
    created: dt.datetime
    manifest: Manifest
    info: SnapshotInfo

    def record(self, owner: str, meta: Meta) -> Snapshot:
        """The record a listing would read back, without reading it back."""
        kind = self.info.kind
        return Snapshot(
            self.id, self.volume, self.source, self.created, kind, owner, True, self.info, meta
        )


def stream_volume(
    rt: Runtime,
    op: str,
    sid: str,
    source: str,
    mount: Mount,
    path: str,
    top: str,
    commit: Commit,
    label: str | None = None,
) -> Received:
    """Create snapshot volume `sid`, stream the tree at `path` (top dir `top`) into its data/,
    and commit it. `label` names the transfer in progress reports."""
    created = create_volume(rt, op, sid, source, commit.kind)
    rt.journal.append(op, Step.STREAM, snapshot=sid, volume=source)
    with (
        rt.engine.helper(rt.image, [mount], rt.helper_labels(op)) as src,
        # Closed before the helper is removed (see Engine.get_archive).
        contextlib.closing(rt.engine.get_archive(src, path)) as stream,
    ):
        # The live tree is the user's own data: device nodes and FIFOs are kept.
        transfer = Transfer(
            stream,
            EntryValidator(top, Limits(allow_special=True)),
            DATA_DIR,
            on_bytes=journal.held_after(rt.reporter.advance, "streaming-data"),
            close=False,
        )
        rt.reporter.begin(label or f"snapshot of {source}", None)
        try:
            return receive(rt, op, sid, source, created, transfer, commit)
        finally:
            rt.reporter.end()


def create_volume(rt: Runtime, op: str, sid: str, source: str, kind: str) -> dt.datetime:
    """Create the (empty, uncommitted) snapshot volume for `sid`, and its keeper (so that
    `docker volume prune` never removes it); returns its creation time."""
    created = creation_time()
    volume = snapshot_volume_name(sid)
    rt.engine.create_volume(
        volume,
        {
            **L.managed(L.ROLE_SNAPSHOT, op, rt.owner.token()),
            L.FORMAT: str(FORMAT),
            L.SNAPSHOT_ID: sid,
            L.SOURCE: source,
            L.CREATED: created.isoformat(),
            L.KIND: kind,
        },
    )
    protect(rt, volume, op)
    return created


def receive(
    rt: Runtime,
    op: str,
    sid: str,
    source: str,
    created: dt.datetime,
    transfer: Transfer,
    commit: Commit,
    *,
    mark: bool = True,
) -> Received:
    """Extract `transfer` (a tree under data/, not closed) into snapshot `sid`'s volume, and
    commit it (with `mark=False`, everything but snapshot.json: a volume that stays
    incomplete, to be copied into a store and removed).

    manifest.jsonl, meta.json and then snapshot.json follow the data in the
    same stream: the engine writes members in order, so the commit marker
    lands last, only once everything before it is in. When the engine will
    have dropped setuid/setgid bits (fix_modes), the marker waits for a PUT of
    its own after they are put back.
    """
    volume = snapshot_volume_name(sid)
    mount = Mount(volume, "/snap")
    received: list[Received] = []

    def stream() -> Iterator[bytes]:
        yield from transfer
        m = transfer.manifest
        info = describe(sid, source, created, m, commit)
        received.append(Received(sid, volume, source, created, m, info))
        members: list[Member] = [
            (MANIFEST, m.chunks(), m.summary.size),
            (META, [commit.meta.to_json()], None),
        ]
        if mark and not needs_fixed_modes(m):
            members.append((SNAPSHOT, [info.to_json()], None))
        yield from small_tar(members)

    with rt.engine.helper(rt.image, [mount], rt.helper_labels(op)) as dst:
        # Mounted by the helper, the volume cannot be removed until it is gone;
        # but if it was removed before, mounting it made the engine create an
        # empty, unlabelled one of that name: never commit into that.
        try:
            found = rt.engine.volume(volume).labels.get(L.SNAPSHOT_ID)
        except NotFound:
            found = None
        if found != sid:
            raise IntegrityError(
                f"snapshot volume {volume} was removed or replaced during the snapshot"
            )
        rt.engine.put_archive(dst, "/snap", stream())
        done = received[0]
        if needs_fixed_modes(done.manifest):
            fix_modes(rt, op, mount, f"/snap/{DATA_DIR}", done.manifest)
            if mark:
                rt.engine.put_archive(
                    dst, "/snap", small_tar([(SNAPSHOT, [done.info.to_json()], None)])
                )
    return done


def describe(
    sid: str, source: str, created: dt.datetime, manifest: Manifest, commit: Commit
) -> SnapshotInfo:
    """The snapshot.json of a snapshot with this manifest."""
    return SnapshotInfo(
        format=FORMAT,
        id=sid,
        source=source,
        created=created.isoformat(),
        kind=commit.kind,
        entries=len(manifest),
        bytes=manifest.content_bytes(),
        tree_digest=manifest.digest(),
        quiesce=commit.quiesce,
        voltool=__version__,
        origin_id=commit.origin.id if commit.origin else None,
        origin_created=commit.origin.created if commit.origin else None,
    )


# A member of small_tar: name, content in chunks, and its size if the chunks are
# to be streamed (else they are counted first).
Member = tuple[str, Iterable[bytes], int | None]


def small_tar(files: Iterable[Member]) -> Iterator[bytes]:
    """A tar of regular files (mode 0644, root)."""
    now = int(dt.datetime.now(dt.UTC).timestamp())
    for name, chunks, size in files:
        yield from file_member(name, chunks, now, size)
    yield END_OF_ARCHIVE


def needs_fixed_modes(manifest: Manifest) -> bool:
    """True if the tree has hard-linked setuid/setgid files (see fix_modes)."""
    if not manifest.summary.linked:
        return False  # no need to read every entry back
    return any(e.link is not None and e.mode & 0o6000 for e in manifest)


def fix_modes(rt: Runtime, op: str, mount: Mount, base: str, manifest: Manifest) -> None:
    """Re-apply setuid/setgid bits the engine drops on hard-linked files.

    dockerd chowns each hard link after the chmod of its first name, and the
    kernel clears those bits on chown. Rare, so it costs a helper only when needed.
    """
    todo = [e for e in manifest if e.link is not None and e.mode & 0o6000]
    if not todo:
        return
    args: list[str] = []
    for e in todo:
        args += [format(e.mode, "o"), f"{base}/{e.path}"]
    result = rt.engine.run(rt.image, [mount], rt.helper_labels(op), program("format1-chmod"), args)
    if result.exit_code != 0:
        raise EngineError(
            f"could not restore modes: {result.stderr.decode(errors='replace')[:200]}"
        )
