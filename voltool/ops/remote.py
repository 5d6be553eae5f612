"""Copies off the machine: snapshots pushed to and pulled from restic repositories.

A pushed snapshot is one restic snapshot of its directory in the store:

    data/            the tree, as stored (restic keeps modes, owners, times,
                     xattrs, hard links, devices and FIFOs)
    manifest.jsonl   the agent's manifest
    meta.json        name, note, pin
    snapshot.json    what the snapshot is, with its tree digest

tagged `voltool` and `voltool.id=<id>`, `voltool.volume=`, `voltool.kind=`,
`voltool.created=`, `voltool.digest=` (the tree digest), `voltool.bytes=`,
`voltool.entries=`, `voltool.engine=` (the id of the engine it came from), and
`voltool.name=` and `voltool.pinned` where they apply, with restic's time set
to the snapshot's creation. restic runs next to the data, in a helper that
mounts the store read-only (voltool.engine.restic): nothing crosses voltool.

Push is idempotent: a snapshot whose id the repository holds whole is skipped
(one held with another tree digest is an error). The previous snapshot of the
same volume this engine pushed is restic's parent, and a stored file is never
rewritten in place, so restic reads again only what changed (`--ignore-ctime`:
a stored file's ctime moves whenever a later snapshot links to it). No lock is
held while restic reads: restic's snapshot is tagged `voltool.pending` until
its backup succeeded (voltool/sh/restic-run.sh), and a pending one is never
listed, skipped or pulled, so one that a deletion under restic, a kill or a
read error cut short is never taken for a copy (`prune --remote` removes such
leftovers). Once pushed, the repository is read back: each pushed snapshot
must be listed whole, with its tree digest.

Pull brings one back as a new local snapshot of kind `pulled` (created now; its
origin id and creation time kept, as for an import), in steps, each held to
what the repository claims:
1. restic's own count of what it would restore must fit the tags' claim and the
   free space (twice: restored, then copied);
2. restic restores the snapshot into a temporary snapshot volume that nothing
   else is mounted with (a hostile repository can write nowhere else), under
   r/ so that it is never taken for a complete format-1 snapshot; a volume
   that then holds anything beside r/ is refused, and `recover` removes such a
   volume whatever it holds; the agent's `mend` puts back what restic does
   not carry, from the pushed manifest;
3. its snapshot.json must be the one the tags describe (id, volume, digest);
4. under the store's lock (taken only now), the agent copies r/data into the
   store, linking files unchanged since the store's latest snapshot by content,
   and the copy's tree digest must be the pushed snapshot's: any difference in
   content, type, mode, owner, link target, hard-link group, device number or
   xattr is IntegrityError (exit 6), and nothing is committed.
It is journaled as an import is, so `voltool recover` removes what a killed
pull left.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from voltool import journal
from voltool.engine import agent_image, agentrun, keepers, restic
from voltool.engine.client import Mount
from voltool.engine.locks import volume_lock
from voltool.errors import (
    AmbiguousReference,
    Busy,
    EngineError,
    IntegrityError,
    NoSpace,
    NotFound,
    PreconditionFailed,
    RemoteError,
    UsageError,
    VoltoolError,
)
from voltool.ids import check_volume_name, is_valid_id, new_id, snapshot_volume_name
from voltool.journal import Kind, Step
from voltool.remotes import Remote, redact, secrets
from voltool.runtime import Runtime
from voltool.sh import program
from voltool.store import catalog, copy, format2
from voltool.store.catalog import MIN_PREFIX, Snapshot
from voltool.store.format1 import create_volume
from voltool.store.layout import (
    DATA_DIR,
    KINDS,
    MANIFEST,
    MAX_METADATA_FILE,
    META,
    NAME_PATTERN,
    SNAPSHOT,
    Meta,
    SnapshotInfo,
    is_time,
)
from voltool.tar import live
from voltool.tar.validate import PER_ENTRY_COST
from voltool.words import quoted

KIND = "pulled"
TAG = "voltool"
PENDING = "voltool.pending"  # until restic's snapshot is whole (voltool/sh/restic-run.sh)
HOST = "voltool"  # restic's hostname for every pushed snapshot
PULLED_DIR = "r"  # where a pull restores, inside its temporary volume
_PUSHED = (DATA_DIR, MANIFEST, META, SNAPSHOT)
_SLACK = 16 * 1024 * 1024  # room kept free beyond what a pull writes
_GONE = 66  # restic-run.sh: the snapshot's directory is not there
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RemoteSnapshot:
    """A voltool snapshot in a restic repository, as its tags describe it."""

    restic_id: str
    id: str
    source: str
    created: dt.datetime
    kind: str
    digest: str
    bytes: int
    entries: int
    engine: str
    name: str | None
    pinned: bool
    pending: bool = False  # tagged voltool.pending: a push that did not finish; never used
    pushed: dt.datetime | None = None  # when its push began (voltool.pushed)

    def as_snapshot(self, remote: str) -> Snapshot:
        """As a local snapshot record: what prune plans with and renders."""
        info = SnapshotInfo(
            format=format2.FORMAT,
            id=self.id,
            source=self.source,
            created=self.created.isoformat(),
            kind=self.kind,
            entries=self.entries,
            bytes=self.bytes,
            tree_digest=self.digest,
        )
        meta = Meta(self.name, None, self.pinned)
        return Snapshot(
            self.id, f"remote:{remote}", self.source, self.created, self.kind, "", True, info, meta
        )


def tags(info: SnapshotInfo, meta: Meta, engine_id: str) -> list[str]:
    """The restic tags of a pushed snapshot (none holds a comma: restic splits on them)."""
    found = [
        TAG,
        f"voltool.id={info.id}",
        f"voltool.volume={info.source}",
        f"voltool.kind={info.kind}",
        f"voltool.created={info.created}",
        f"voltool.digest={info.tree_digest}",
        f"voltool.bytes={info.bytes}",
        f"voltool.entries={info.entries}",
    ]
    if engine_id and "," not in engine_id:
        found.append(f"voltool.engine={engine_id}")
    if meta.name:
        found.append(f"voltool.name={meta.name}")
    if meta.pinned:
        found.append("voltool.pinned")
    return found


def parse(raw: object) -> RemoteSnapshot | None:
    """One entry of `restic snapshots --json`, if it is a well-formed voltool snapshot."""
    if not isinstance(raw, dict):
        return None
    rid, tag_list = raw.get("id"), raw.get("tags")
    if not isinstance(rid, str) or not isinstance(tag_list, list) or TAG not in tag_list:
        return None
    values: dict[str, str] = {}
    for t in tag_list:
        if isinstance(t, str) and t.startswith("voltool.") and "=" in t:
            key, _, value = t.removeprefix("voltool.").partition("=")
            values.setdefault(key, value)
    try:
        if not is_time(values["created"]):
            return None
        created = dt.datetime.fromisoformat(values["created"]).astimezone(dt.UTC)
        snapshot = RemoteSnapshot(
            restic_id=rid,
            id=values["id"],
            source=values["volume"],
            created=created,
            kind=values["kind"],
            digest=values["digest"],
            bytes=int(values["bytes"]),
            entries=int(values["entries"]),
            engine=values.get("engine", ""),
            name=values.get("name"),
            pinned="voltool.pinned" in tag_list,
            pending=PENDING in tag_list,
            pushed=(
                dt.datetime.fromisoformat(values["pushed"]).astimezone(dt.UTC)
                if is_time(values.get("pushed"))
                else None
            ),
        )
    except (KeyError, ValueError, OverflowError):
        return None
    if (
        not is_valid_id(snapshot.id)
        or not _HEX64.fullmatch(snapshot.digest)
        or not NAME_PATTERN.fullmatch(snapshot.source)
        or snapshot.kind not in KINDS
        or min(snapshot.bytes, snapshot.entries) < 0
        or (snapshot.name is not None and not NAME_PATTERN.fullmatch(snapshot.name))
    ):
        return None
    return snapshot


@dataclass
class _Session:
    """One command's view of a remote: its repository (with secrets) and the image."""

    rt: Runtime
    remote: Remote
    repo: restic.Repository
    image: str
    op: str

    @classmethod
    def open(cls, rt: Runtime, remote: Remote, op: str | None = None) -> _Session:
        image = agent_image.agent_image(rt)
        restic.restic_version(rt, image)
        repo = restic.Repository(remote, secrets(remote))
        return cls(rt, remote, repo, image, op or new_id())

    def run(
        self,
        args: list[str],
        what: str,
        mounts: list[Mount] | None = None,
        read_only: bool = False,
    ) -> bytes:
        result = restic.run(
            self.rt, self.image, self.repo, self.op, args, mounts=mounts, read_only=read_only
        )
        return restic.checked(result, self.repo, what).stdout

    def listing(self, volume: str | None = None) -> list[RemoteSnapshot]:
        """Every voltool snapshot of the repository (`volume`'s), oldest first, pending
        ones included (callers leave them out: `complete`)."""
        # One --tag with a comma: snapshots with both tags (two --tag options would be either).
        wanted = TAG if volume is None else f"{TAG},voltool.volume={volume}"
        args = ["snapshots", "--json", "--tag", wanted]
        out = self.run(args, f"listing remote {self.remote.name}", read_only=True)
        raw = restic.json_value(out, "listing")
        found = [s for s in (parse(r) for r in (raw if isinstance(raw, list) else [])) if s]
        return sorted(found, key=lambda s: (s.created, s.id))


def complete(listing: list[RemoteSnapshot]) -> list[RemoteSnapshot]:
    return [s for s in listing if not s.pending]


def init(rt: Runtime, remote: Remote) -> None:
    """Create the restic repository of `remote`; PreconditionFailed if there is one already."""
    s = _Session.open(rt, remote)
    result = restic.run(rt, s.image, s.repo, s.op, ["init"])
    if result.exit_code != 0:
        text = result.stderr.decode(errors="replace")
        if "already" in text and ("exists" in text or "initialized" in text):
            raise PreconditionFailed(f"remote {quoted(remote.name)} has a repository already")
        raise restic.failure(result, s.repo, f"initialising remote {remote.name}")


def snapshots(rt: Runtime, remote: Remote, volume: str | None = None) -> list[RemoteSnapshot]:
    """The voltool snapshots in `remote`'s repository, oldest first (whole ones only)."""
    if volume is not None:
        check_volume_name(volume)
    return complete(_Session.open(rt, remote).listing(volume))


@dataclass(frozen=True)
class Pushed:
    snapshot: Snapshot
    restic_id: str  # restic's short id of its snapshot
    skipped: bool  # it was there already
    files_new: int = 0
    files_changed: int = 0
    data_added: int = 0  # bytes added to the repository (restic's count, before compression)
    seconds: float = 0.0


@dataclass(frozen=True)
class PushResult:
    pushed: tuple[Pushed, ...]
    failed: tuple[str, ...]  # one line each: the snapshot and why


def pushable(rt: Runtime, refs: Iterable[str], every: bool) -> list[Snapshot]:
    """The snapshots `refs` (ids, id prefixes, or volume names: all of that volume's) or
    `every` one select: complete stored (format-2) ones, oldest first."""
    refs = list(refs)
    if every == bool(refs):
        raise UsageError("name the snapshots or volumes to push, or give --all")
    listed = catalog.list_snapshots(rt)
    chosen: dict[str, Snapshot] = {}
    if every:
        chosen = {s.id: s for s in listed}
    for ref in refs:
        by_volume = [s for s in listed if s.source == ref]
        if by_volume:
            chosen.update((s.id, s) for s in by_volume)
            continue
        if not re.fullmatch(r"[0-9a-f]+", ref.removeprefix("voltool-snap-").lower()):
            check_volume_name(ref)
            raise NotFound(f"volume {quoted(ref)} has no snapshot to push")
        s = catalog.resolve_all(rt, [ref])[0]
        chosen[s.id] = s
    found = sorted(chosen.values(), key=lambda s: (s.created, s.id))
    if refs:
        for s in found:
            if s.state != "complete":
                raise IntegrityError(f"snapshot {s.id} cannot be pushed: it is {s.state}")
            if not s.in_store:
                raise UsageError(
                    f"snapshot {s.id} is format 1: move it into its store first "
                    "(voltool migrate), then push it"
                )
    return [s for s in found if s.state == "complete" and s.in_store]


def push(
    rt: Runtime, remote: Remote, chosen: list[Snapshot], wait: float | None = 30
) -> PushResult:
    """Push each of `chosen` (oldest first) that the repository does not hold yet. One that
    fails does not stop the rest; a remote that cannot be opened stops them all.

    Each backup is tagged voltool.pending. The store's lock is held only to look before
    and after it (a delete renames a snapshot away under that lock first): one found
    there, complete and unchanged after its backup was read whole by restic, and only
    those are confirmed (their pending tag removed, in one helper at the end, which also
    lists the repository again: each must be listed whole, with its tree digest)."""
    session = _Session.open(rt, remote)
    engine_id = rt.engine.identity()
    there = {s.id: s for s in complete(session.listing())}
    read: list[Pushed] = []
    done: list[Pushed] = []
    failed: list[str] = []
    for snap in chosen:
        assert snap.info is not None
        found = there.get(snap.id)
        if found is not None:
            if found.digest != snap.info.tree_digest:
                failed.append(
                    f"{snap.id}: remote {quoted(remote.name)} holds it with another tree digest"
                )
            else:
                done.append(Pushed(snap, found.restic_id[:8], True))
            continue
        parent = _parent(there.values(), snap.source, engine_id)
        try:
            read.append(_push_one(session, snap, engine_id, parent, wait))
        except RemoteError:
            raise  # the repository itself: the next one would fail the same way
        except VoltoolError as e:
            failed.append(f"{snap.id}: {e}")
    if read:
        after = _finish(session, read)
        for p in read:
            got = after.get(p.snapshot.id)
            assert p.snapshot.info is not None
            if got is None or got.digest != p.snapshot.info.tree_digest:
                failed.append(f"{p.snapshot.id}: not listed whole on the remote after its push")
            else:
                done.append(replace(p, restic_id=got.restic_id[:8]))
    done.sort(key=lambda p: (p.snapshot.created, p.snapshot.id))
    return PushResult(tuple(done), tuple(failed))


def _parent(there: Iterable[RemoteSnapshot], source: str, engine_id: str) -> RemoteSnapshot | None:
    """restic's parent for a push of `source`: the newest whole snapshot of it this engine
    pushed (another machine's tree of the same name is no guide to what changed)."""
    mine = [s for s in there if s.source == source and s.engine == engine_id]
    return max(mine, key=lambda s: (s.created, s.id)) if mine else None


def _present(s: _Session, snap: Snapshot, wait: float | None) -> bool:
    """Whether `snap` is in its store, complete and as it was listed, under the store's lock
    (a snapshot is only deleted under it, renamed away first)."""
    rt = s.rt
    with volume_lock(rt, snap.volume, s.op, "push", wait):
        try:
            catalog.require(rt, snap)
        except NotFound:
            return False
        (again,) = catalog.with_metadata(rt, [snap])
    return (
        again.state == "complete"
        and again.info is not None
        and snap.info is not None
        and again.info.tree_digest == snap.info.tree_digest
    )


def _push_one(
    s: _Session,
    snap: Snapshot,
    engine_id: str,
    parent: RemoteSnapshot | None,
    wait: float | None,
) -> Pushed:
    """restic's backup of `snap`, still pending; IntegrityError (and the backup forgotten)
    if restic could not read it whole or it was deleted meanwhile."""
    rt = s.rt
    info, meta = snap.info, snap.meta or Meta()
    assert info is not None
    if not _present(s, snap, wait):
        raise NotFound(f"snapshot {snap.id} was deleted")
    args = ["--json", "--quiet", "--host", HOST, "--ignore-ctime"]
    args += ["--time", snap.created.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")]
    pushed_at = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    for t in [*tags(info, meta, engine_id), f"voltool.pushed={pushed_at}"]:
        args += ["--tag", t]
    if parent is not None:
        args += ["--parent", parent.restic_id]
    args += ["--", *_PUSHED]
    mounts = [Mount(snap.volume, format2.MOUNT, read_only=True)]
    cwd = f"{format2.MOUNT}/{format2.snapshot_dir(snap.id)}"
    rt.reporter.status(f"pushing {snap.id} of {snap.source} to {s.remote.name}")
    journal.hold_for_tests("push-started")
    began = time.monotonic()
    try:
        result = restic.run(rt, s.image, s.repo, s.op, args, mounts=mounts, cwd=cwd, mode="push")
    finally:
        rt.reporter.status(None)
    journal.hold_for_tests("push-read")
    summary = next(
        (ln for ln in restic.json_lines(result.stdout) if ln.get("message_type") == "summary"),
        None,
    )
    rid = str(summary.get("snapshot_id", "")) if summary else ""
    problem: VoltoolError | None = None
    if result.exit_code == _GONE:
        problem = NotFound(f"snapshot {snap.id} was deleted before restic read it")
    elif result.exit_code == 3:
        problem = IntegrityError(f"pushing {snap.id}: {restic.said(result, s.repo)}")
    elif result.exit_code != 0:
        problem = restic.failure(result, s.repo, f"pushing {snap.id}")
    elif summary is None or not rid:
        problem = RemoteError(f"pushing {snap.id}: restic said nothing of a snapshot")
    elif not _present(s, snap, wait):
        problem = IntegrityError(f"pushing {snap.id}: it was deleted while restic read it")
    if problem is not None:
        if rid:  # pending, and to stay so: not worth keeping
            with contextlib.suppress(VoltoolError):
                s.run(["forget", rid], "removing an unfinished push")
        raise problem
    assert summary is not None
    return Pushed(
        snap,
        rid,
        False,
        int(summary.get("files_new", 0)),
        int(summary.get("files_changed", 0)),
        int(summary.get("data_added", 0)),
        time.monotonic() - began,
    )


def _finish(s: _Session, read: list[Pushed]) -> dict[str, RemoteSnapshot]:
    """Confirm the backups `read` (their pending tag removed), and the repository's whole
    snapshots afterwards, by voltool id."""
    result = restic.run(s.rt, s.image, s.repo, s.op, [p.restic_id for p in read], mode="finish")
    if result.exit_code == 4:
        raise Busy(
            f"the repository of remote {quoted(s.remote.name)} stayed locked: the pushes are "
            "in it, not confirmed; push again"
        )
    out = restic.checked(result, s.repo, f"confirming the pushes to {s.remote.name}").stdout
    raw = restic.json_value(out, "listing")
    listing = [x for x in (parse(r) for r in (raw if isinstance(raw, list) else [])) if x]
    return {x.id: x for x in complete(listing)}


def find(listing: list[RemoteSnapshot], ref: str, remote: str) -> RemoteSnapshot:
    """The one snapshot of `listing` whose voltool id is or starts with `ref`."""
    key = ref.lower()
    if not key or any(c not in "0123456789abcdef" for c in key):
        raise UsageError(f"{quoted(ref)} is not a snapshot id or id prefix")
    if len(key) < MIN_PREFIX:
        raise UsageError(
            f"snapshot id prefix {quoted(ref)} is too short: give at least {MIN_PREFIX} digits"
        )
    matches = {s.id: s for s in listing if s.id.startswith(key)}
    if not matches:
        raise NotFound(f"remote {quoted(remote)} has no snapshot {quoted(ref)}")
    if len(matches) > 1:
        shown = [
            f"{m.id} (volume {m.source}, {m.created:%Y-%m-%d %H:%M})"
            for m in sorted(matches.values(), key=lambda m: m.id)
        ]
        raise AmbiguousReference(ref, shown)
    return next(iter(matches.values()))


def pull(
    rt: Runtime, remote: Remote, ref: str, volume: str | None = None, wait: float | None = 30
) -> Snapshot:
    """Bring snapshot `ref` of `remote` back as a new local snapshot of kind `pulled`, in the
    store of `volume` (default: the volume it was taken of); see the module for the checks.
    The store's lock is taken only once restic is done: snapshots go on meanwhile."""
    if volume is not None:
        check_volume_name(volume)
    session = _Session.open(rt, remote)
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


def _restore_size(s: _Session, wanted: RemoteSnapshot) -> tuple[int, int]:
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
    if count > wanted.entries + len(_PUSHED) + 1:
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


def _restore(s: _Session, wanted: RemoteSnapshot, temp: str) -> tuple[SnapshotInfo, Meta]:
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


@dataclass(frozen=True)
class PruneView:
    """What `prune --remote` plans with: this engine's whole snapshots on the remote, as local
    records (with the pin and name they have here, where they are here too), and what this
    engine's pushes cut short left (pending, their push begun over an hour ago)."""

    snapshots: list[Snapshot]
    by_id: dict[str, list[RemoteSnapshot]]  # voltool id -> its restic snapshots
    leftovers: list[RemoteSnapshot]


LEFTOVER_AFTER = dt.timedelta(hours=1)


def prune_view(rt: Runtime, remote: Remote, now: dt.datetime) -> PruneView:
    engine_id = rt.engine.identity()
    listing = _Session.open(rt, remote).listing()
    here = {s.id: s for s in catalog.list_snapshots(rt) if s.state == "complete"}
    by_id: dict[str, list[RemoteSnapshot]] = {}
    records: dict[str, Snapshot] = {}
    for r in complete(listing):
        if r.engine != engine_id:
            continue  # another machine's: its own prune decides
        by_id.setdefault(r.id, []).append(r)
        record = r.as_snapshot(remote.name)
        local = here.get(r.id)
        if local is not None:  # pinned or named here since it was pushed: that counts
            record = replace(record, meta=Meta(local.name, None, local.pinned or r.pinned))
        records.setdefault(r.id, record)
    return PruneView(list(records.values()), by_id, leftovers(listing, engine_id, now))


def leftovers(
    listing: list[RemoteSnapshot], engine_id: str, now: dt.datetime
) -> list[RemoteSnapshot]:
    """What this engine's pushes cut short left: pending, their push begun over an hour ago
    (a push in progress is pending until its end; another engine's is its own business)."""
    return [
        r
        for r in listing
        if r.pending
        and r.engine == engine_id
        and r.pushed is not None
        and now - r.pushed > LEFTOVER_AFTER
    ]


@dataclass(frozen=True)
class Forgotten:
    removed: tuple[str, ...]  # voltool ids
    leftovers: int  # pending restic snapshots removed


def forget(rt: Runtime, remote: Remote, view: PruneView, doomed: list[str]) -> Forgotten:
    """Remove the voltool snapshots `doomed` (every restic snapshot of each) and the view's
    leftovers from the repository (restic forget), then the data only they used (restic
    prune)."""
    restic_ids = [r.restic_id for sid in doomed for r in view.by_id.get(sid, [])]
    restic_ids += [r.restic_id for r in view.leftovers]
    if not restic_ids:
        return Forgotten((), 0)
    s = _Session.open(rt, remote)
    s.run(["forget", *restic_ids], f"forgetting on remote {remote.name}")
    s.run(["prune"], f"pruning remote {remote.name}")
    return Forgotten(tuple(doomed), len(view.leftovers))


def unlock(rt: Runtime, remote: Remote) -> None:
    """Remove every lock of the repository (restic unlock --remove-all)."""
    _Session.open(rt, remote).run(["unlock", "--remove-all"], f"unlocking remote {remote.name}")


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    said: str  # restic's last words: what it found wrong, or that all is well


def check(rt: Runtime, remote: Remote, subset: str | None = None) -> CheckResult:
    """restic's check of the repository (and, with `subset`, of that part of its data:
    `--read-data-subset`, as 10% or 1/5). RemoteError if it cannot be opened."""
    s = _Session.open(rt, remote)
    args = ["check"] + (["--read-data-subset", subset] if subset else [])
    result = restic.run(rt, s.image, s.repo, s.op, args)
    if result.exit_code == 0:
        return CheckResult(True, "no errors were found")
    error = restic.failure(result, s.repo, f"checking remote {remote.name}")
    if not isinstance(error, IntegrityError):
        raise error
    text = redact((result.stdout + b"\n" + result.stderr).decode(errors="replace"), s.repo.secrets)
    lines = [ln.strip() for ln in text.splitlines()]
    found = [ln for ln in lines if ln.lower().startswith(("error", "pack"))]
    return CheckResult(False, (found[0] if found else restic.said(result, s.repo))[:400])


def as_json(s: RemoteSnapshot) -> dict[str, object]:
    return {
        "id": s.id,
        "volume": s.source,
        "created": s.created.isoformat(),
        "kind": s.kind,
        "name": s.name,
        "pinned": s.pinned,
        "bytes": s.bytes,
        "entries": s.entries,
        "tree_digest": s.digest,
        "engine": s.engine,
        "restic_id": s.restic_id[:8],  # restic's short id, as its own commands show it
    }
