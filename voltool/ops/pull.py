"""Pulling a snapshot back from a remote: a new local snapshot of kind `pulled`,
created now (its origin id and creation time kept, as for an import), in steps,
each held to what the repository claims:

1. restic's own count of what it would restore (bytes and files) must fit the
   free space and inodes, twice (restored, then copied), and the files must
   not outnumber the entries the tags claim;
2. restic restores the snapshot into a temporary snapshot volume that nothing
   else is mounted with (a hostile repository can write nowhere else), under
   r/; a volume that then holds anything beside r/ is refused, and such a
   volume never reads as a snapshot (its kind is `pulled`, which only a store
   holds); the agent's `mend` puts back what restic does not carry (sockets,
   holes, times past 2262) from the pushed manifest;
3. its snapshot.json must be the one the tags describe (id, volume, digest);
4. under the store's lock (taken only now: snapshots of the volume go on while
   restic restores), the agent copies r/data into the store, linking files
   unchanged since the store's latest snapshot by content, and the copy's tree
   digest must be the pushed snapshot's: any difference in content, type,
   mode, owner, link target, hard-link group, device number or xattr is
   IntegrityError (exit 6), and nothing is committed.
It is journaled as an import is, so `voltool recover` removes what a killed
pull left.
"""

from __future__ import annotations

import contextlib

from voltool import journal
from voltool.engine import agentrun, keepers, restic
from voltool.engine.client import Mount
from voltool.engine.locks import volume_lock
from voltool.errors import (
    EngineError,
    IntegrityError,
    NoSpace,
    RemoteError,
    VoltoolError,
)
from voltool.ids import check_volume_name, new_id, snapshot_volume_name
from voltool.journal import Kind, Step
from voltool.ops.remote import PUSHED, RemoteSnapshot, Session, complete, find
from voltool.remotes import Remote
from voltool.runtime import Runtime
from voltool.sh import program
from voltool.store import catalog, copy, format2
from voltool.store.catalog import Snapshot
from voltool.store.format1 import create_volume
from voltool.store.layout import (
    DATA_DIR,
    MANIFEST,
    MAX_METADATA_FILE,
    META,
    SNAPSHOT,
    Meta,
    SnapshotInfo,
)
from voltool.tar import live
from voltool.tar.validate import PER_ENTRY_COST
from voltool.words import quoted

KIND = "pulled"
PULLED_DIR = "r"  # where a pull restores, inside its temporary volume
_SLACK = 16 * 1024 * 1024  # room kept free beyond what a pull writes


def pull(
    rt: Runtime, remote: Remote, ref: str, volume: str | None = None, wait: float | None = 30
) -> Snapshot:
    """Bring snapshot `ref` of `remote` back as a new local snapshot of kind `pulled`, in the
    store of `volume` (default: the volume it was taken of); see the module for the checks.
    The store's lock is taken only once restic is done: snapshots go on meanwhile."""
    if volume is not None:
        check_volume_name(volume)
    session = Session.open(rt, remote)
    wanted = find(complete(session.listing()), ref, remote.name)
    source = volume or wanted.source
    check_volume_name(source)
    target = format2.store_name(source)
    rt.journal.refuse_pending(target)

    op, sid = session.op, new_id()
    temp = snapshot_volume_name(sid)
    with contextlib.ExitStack() as locks:
        locks.enter_context(volume_lock(rt, temp, op, KIND, wait))
        rt.journal.append(
            op,
            Step.BEGIN,
            kind=Kind.IMPORT,
            volumes=sorted({temp, target}),
            snapshots={source: sid},
            store=target,
        )
        in_store = False
        try:
            create_volume(rt, op, sid, source, KIND)
            _check_room(rt, temp, wanted, _restore_size(session, wanted))
            rt.journal.append(op, Step.STREAM, snapshot=sid, volume=source)
            info, meta = _restore(session, wanted, temp)
            journal.hold_for_tests("pull-restored")
            locks.enter_context(volume_lock(rt, target, op, KIND, wait))
            in_store = True
            format2.ensure_store(rt, source, op)
            copied = copy.copy(
                rt,
                session.image,
                op,
                sid,
                source,
                Mount(temp, "/src", read_only=True),
                KIND,
                info.quiesce,
                Meta(None, meta.note, False),
                f"/src/{PULLED_DIR}/{DATA_DIR}",
                origin=(info.id, info.created),
                by_content=True,
                commit=False,
            )
            got = copied.summary
            if got.digest != info.tree_digest or got.entries != info.entries:
                raise IntegrityError(
                    f"snapshot {info.id} from remote {quoted(remote.name)} does not match its "
                    f"manifest: {got.entries} entries with tree digest {got.digest[:16]}..., "
                    f"{info.entries} with {info.tree_digest[:16]}... expected; not pulled"
                )
            rt.journal.append(op, Step.CHECKED, snapshot=sid)
            keepers.remove_when_unused(rt, temp)
            done = copy.commit_copy(rt, op, copied.snapshot)
        except BaseException as e:
            gone = catalog.abandon(rt, op, {sid: None})
            if in_store:  # under the store's lock only
                gone = catalog.abandon(rt, op, {sid: target}) and gone
            if gone:
                with contextlib.suppress(VoltoolError):
                    rt.journal.append(op, Step.FAILED, error=str(e) or type(e).__name__)
            raise
        journal.hold_for_tests("committed")
        rt.journal.append(op, Step.DONE)
    return done


def _restore_size(s: Session, wanted: RemoteSnapshot) -> tuple[int, int]:
    """What restic would restore of `wanted`, by its own count (`stats --mode restore-size`):
    bytes and files, whatever the tags claim; the room a pull needs (restic restores sparse
    files whole).
    IntegrityError if it would make more entries than the snapshot has (an inode bomb)."""
    out = s.run(
        ["stats", "--json", "--mode", "restore-size", wanted.restic_id],
        f"measuring {wanted.id} on remote {s.remote.name}",
        read_only=True,
    )
    stats = restic.json_value(out, "stats")
    size = stats.get("total_size") if isinstance(stats, dict) else None
    count = stats.get("total_file_count") if isinstance(stats, dict) else None
    if not isinstance(size, int) or not isinstance(count, int):
        raise RemoteError(f"measuring {wanted.id}: restic's stats do not read")
    if count > wanted.entries + len(PUSHED) + 1:
        raise IntegrityError(
            f"snapshot {wanted.id} on remote {quoted(s.remote.name)} would restore {count} "
            f"entries, more than the {wanted.entries} it claims: not pulled"
        )
    return size, count


def _check_room(rt: Runtime, temp: str, wanted: RemoteSnapshot, size: tuple[int, int]) -> None:
    """NoSpace unless the temporary volume's filesystem has room, bytes and inodes, for the
    snapshot twice (restored, then copied into the store, on the same filesystem as a
    rule). `size`: restic's count of the bytes and files it would restore."""
    (space,) = live.spaces(rt, temp)
    entries = max(wanted.entries, size[1])
    need = 2 * (size[0] + entries * PER_ENTRY_COST) + _SLACK
    if space.available is not None and need > space.available:
        raise NoSpace(
            f"not enough space to pull {wanted.id}: {space.available // 2**20} MiB free, "
            f"{need // 2**20} MiB needed"
        )
    if space.inodes is not None and 2 * entries > space.inodes:
        raise NoSpace(
            f"not enough inodes to pull {wanted.id}: {space.inodes} free, {2 * entries} needed"
        )


def _restore(s: Session, wanted: RemoteSnapshot, temp: str) -> tuple[SnapshotInfo, Meta]:
    """restic's restore of `wanted` into `temp`'s r/, and its snapshot.json and meta.json,
    held to the tags it was found by."""
    rt = s.rt
    target = f"/pull/{PULLED_DIR}"
    args = ["restore", wanted.restic_id, "--target", target]
    rt.reporter.status(f"pulling {wanted.id} of {wanted.source} from {s.remote.name}")
    try:
        s.run(args, f"pulling {wanted.id}", mounts=[Mount(temp, "/pull")], read_only=True)
        # What restic does not restore (sockets, holes, far times), put back from the
        # manifest, once the volume is found to hold nothing but what restic was asked for.
        mended = agentrun.run(
            rt,
            s.image,
            s.op,
            [Mount(temp, "/pull")],
            [PULLED_DIR, f"{target}/{DATA_DIR}", f"{target}/{MANIFEST}"],
            script=program("pull-mend"),
        )
        try:
            agentrun.checked(mended, f"pulling {wanted.id}")
        except EngineError as e:  # what the repository gave cannot be mended: not pulled
            raise IntegrityError(str(e)) from None
    finally:
        rt.reporter.status(None)
    files = {}
    for name in (SNAPSHOT, META):
        raw = b"".join(catalog.read_file(rt, temp, f"{PULLED_DIR}/{name}", MAX_METADATA_FILE))
        files[name] = raw
    info = SnapshotInfo.parse(files[SNAPSHOT], wanted.id)
    if (
        info.format != format2.FORMAT
        or info.source != wanted.source
        or info.tree_digest != wanted.digest
    ):
        raise IntegrityError(
            f"snapshot {wanted.id} on remote {quoted(s.remote.name)}: its {SNAPSHOT} is not "
            "the one its tags describe"
        )
    return info, Meta.parse(files[META])
