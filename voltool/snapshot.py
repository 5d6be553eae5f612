"""Taking snapshots: a volume's tar streamed from the engine into a new snapshot volume.

Order, for one or several volumes (one point in time for the group):
1. check every volume, and that no interrupted operation is pending on one;
2. journal "begin"; take every volume's lock (in name order);
3. journal the containers to quiesce, then pause or stop them all at once;
4. stream each volume into its snapshot volume's data/, computing the manifest,
   and in the same stream manifest.jsonl, meta.json and snapshot.json last
   (the commit marker);
5. resume the containers, journal "resumed";
6. journal "done".
On any failure or Ctrl-C the containers are resumed, the snapshot volumes not
yet committed are removed, and the journal says "failed". If the process dies
instead, the journal lets `voltool recover` do the same.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from voltool import __version__, agentrun, catalog, journal, quiesce, store, store_copy
from voltool import labels as L
from voltool.catalog import Snapshot
from voltool.engine import Mount
from voltool.errors import (
    EngineError,
    IntegrityError,
    NotFound,
    UsageError,
    VoltoolError,
)
from voltool.ids import creation_time, new_id, snapshot_volume_name
from voltool.journal import Kind, Step
from voltool.keepers import protect, remove_snapshot_volume
from voltool.layout import DATA_DIR, FORMAT, MANIFEST, META, SNAPSHOT, Meta, SnapshotInfo
from voltool.locks import volume_lock
from voltool.manifest import Manifest
from voltool.quiesce import Mode
from voltool.runtime import Runtime
from voltool.tarstream import END_OF_ARCHIVE, file_member
from voltool.transfer import Transfer
from voltool.validate import EntryValidator, Limits
from voltool.words import quoted


@dataclass(frozen=True)
class SnapshotRequest:
    volumes: tuple[str, ...]
    name: str | None = None
    note: str | None = None
    quiesce: str = Mode.PAUSE
    kind: str = "manual"
    wait: float | None = None
    format: int = 1  # 2: into the volumes' stores, through the agent (voltool.store_copy)


@dataclass(frozen=True)
class Taken:
    """What a snapshot made, and what it did to the containers meanwhile."""

    snapshots: list[Snapshot]
    held: tuple[quiesce.Held, ...] = ()  # paused or stopped, in name order
    uses: dict[str, tuple[str, ...]] | None = None  # container name: the volumes it mounts
    copies: dict[str, agentrun.Summary] | None = None  # stored snapshots: what the agent did

    def held_for(self, volume: str) -> list[quiesce.Held]:
        """The containers held that mount `volume`."""
        return [h for h in self.held if volume in (self.uses or {}).get(h.name, ())]


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


def take(rt: Runtime, req: SnapshotRequest) -> Taken:
    """Snapshot every volume of the request at one point in time; returns the new snapshots
    and how long each container was paused or stopped."""
    volumes = sorted(dict.fromkeys(req.volumes))
    if not volumes:
        raise UsageError("name at least one volume")
    for v in volumes:
        catalog.user_volume(rt, v)
        rt.journal.refuse_pending(v)
    meta = Meta(req.name, req.note, False)
    meta.check_input()
    if req.format not in (1, 2):
        raise UsageError(f"format {req.format} is not a snapshot format: use 1 or 2")
    if req.name:
        check_name_free(rt, volumes, req.name)
    stores: dict[str, str] = {}  # format 2: source volume -> its store
    image = rt.image
    if req.format == 2:
        from voltool import agent_image

        image = agent_image.agent_image(rt)  # built on first use, before anything is locked
        stores = {v: store.store_name(v) for v in volumes}

    op = new_id()
    ids = {v: new_id() for v in volumes}
    commit = Commit(req.kind, req.quiesce, meta)
    staged: list[Received] = []
    copied: list[store_copy.Copied] = []
    committed: list[Snapshot] = []
    clock = quiesce.Clock()
    targets: list[quiesce.Quiesced] = []
    uses: dict[str, tuple[str, ...]] = {}
    with contextlib.ExitStack() as locks:
        # Locks first: a lock that cannot be had changes nothing, so it needs no
        # journal record (and must not leave a "begin" that looks interrupted).
        locked = sorted({*volumes, *stores.values()})
        for v in locked:
            locks.enter_context(volume_lock(rt, v, op, "snapshot", req.wait))
        rt.journal.append(
            op,
            Step.BEGIN,
            kind=Kind.SNAPSHOT,
            volumes=locked,
            snapshots=ids,
            quiesce=req.quiesce,
            **({"stores": stores} if stores else {}),
        )
        resumed = False
        try:
            for v in stores:
                store.ensure_store(rt, v, op)
            users = quiesce.running_users(rt.engine, volumes)
            uses = {c.name: c.volumes for c in users}
            targets = quiesce.plan(users, req.quiesce)
            rt.journal.append(
                op,
                Step.QUIESCE,
                containers=[q.as_record() for q in targets],
                stop_timeout=rt.config.stop_timeout,
            )
            try:
                for q in targets:
                    rt.reporter.note(f"{'pausing' if q.action == 'pause' else 'stopping'} {q.name}")
                quiesce.apply(
                    rt.engine,
                    targets,
                    rt.config.stop_timeout,
                    before_stop=lambda q: rt.journal.append(op, Step.STOPPING, container=q.id),
                    clock=clock,
                )
                for v in volumes:
                    if v in stores:
                        tree = Mount(v, "/src", read_only=True)
                        args = (req.kind, req.quiesce, meta)
                        copied.append(store_copy.copy(rt, image, op, ids[v], v, tree, *args))
                        continue
                    mount = Mount(v, "/data", read_only=True)
                    staged.append(stream_volume(rt, op, ids[v], v, mount, "/data", "data", commit))
            finally:
                # Every target, whether or not apply reached it: resume() skips
                # containers that are not in the state we would have put them in.
                failures = quiesce.resume(rt.engine, targets, clock)
                for f in failures:
                    rt.reporter.warn(f"could not resume {f}")
                resumed = not failures
                if resumed:
                    try:
                        rt.journal.append(op, Step.RESUMED)
                    except VoltoolError as e:
                        # Only on the way out of a failure may this go unrecorded
                        # (recover finds them running); on success it must not.
                        if sys.exc_info()[0] is None:
                            raise
                        resumed = False
                        rt.reporter.warn(f"could not record the resume ({e})")
            committed += [s.record(rt.owner.token(), meta) for s in staged]
            committed += [c.snapshot for c in copied]
        except BaseException as e:
            # Still under the locks. If anything stays (a container not resumed,
            # a helper not removed), the op stays pending for `voltool recover`.
            done = {c.id for c in committed}
            left = {ids[v]: stores.get(v) for v in volumes if ids[v] not in done}
            if abandon(rt, op, left) and resumed:
                # The engine may be gone too: its error must not hide the one that matters.
                with contextlib.suppress(VoltoolError):
                    rt.journal.append(op, Step.FAILED, error=str(e) or type(e).__name__)
            raise
        rt.journal.append(op, Step.DONE)
    copies = {c.snapshot.id: c.summary for c in copied}
    return Taken(committed, tuple(clock.held(targets)), uses, copies)


def abandon(rt: Runtime, op: str, sids: dict[str, str | None]) -> bool:
    """Best effort after a failure: remove the op's helpers and uncommitted snapshots
    (`sids`: id -> the store it is in, or None for a snapshot volume of its own).

    Never raises (the original error is what the user must see). Returns False
    if something stays, so that the operation stays pending for `voltool recover`.
    """
    try:
        failures = rt.engine.remove_helpers_of(op)
        for sid, in_store in sids.items():
            try:
                if in_store is None:
                    remove_snapshot_volume(rt, snapshot_volume_name(sid))
                elif _exists(rt, in_store):  # mounting a missing store would make one
                    store.delete_dir(rt, in_store, sid, op)
                    store.remove_if_empty(rt, in_store, op)
            except VoltoolError as e:
                failures.append(str(e))
    except VoltoolError as e:
        failures = [str(e)]
    for f in failures:
        rt.reporter.warn(f"could not clean up ({f}); `voltool recover` will")
    return not failures


def _exists(rt: Runtime, volume: str) -> bool:
    try:
        rt.engine.volume(volume)
    except NotFound:
        return False
    return True


def check_name_free(rt: Runtime, volumes: list[str], name: str) -> None:
    for s in catalog.list_snapshots(rt):
        if s.source in volumes and s.name == name:
            raise UsageError(
                f"volume {quoted(s.source)} already has a snapshot named {quoted(name)} ({s.id})"
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
) -> Received:
    """Extract `transfer` (a tree under data/, not closed) into snapshot `sid`'s volume, and
    commit it.

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
        if not needs_fixed_modes(m):
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


_CHMOD = 'while [ "$#" -gt 1 ]; do chmod "$1" "$2" || exit 1; shift 2; done'


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
    result = rt.engine.run(rt.image, [mount], rt.helper_labels(op), _CHMOD, args)
    if result.exit_code != 0:
        raise EngineError(
            f"could not restore modes: {result.stderr.decode(errors='replace')[:200]}"
        )
