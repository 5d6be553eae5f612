"""Pushing snapshots to a remote: each a restic snapshot of its directory in the store
(voltool.ops.remote says what it holds and how it is tagged).

Push is idempotent: a snapshot whose id the repository holds whole is skipped
(one held with another tree digest is an error). The previous snapshot of the
same volume this engine pushed is restic's parent, and a stored file is never
rewritten in place, so restic reads again only what changed (`--ignore-ctime`:
a stored file's ctime moves whenever a later snapshot links to it). restic
runs next to the data, in a helper that mounts the store read-only.

Confirmation: restic's snapshot is tagged `voltool.pending` as it is made
(voltool/sh/restic-run.sh). The store's lock is held only to look before and
after restic reads (a delete renames a snapshot away under that lock first):
a snapshot found there, complete and unchanged afterwards, was read whole, and
only then is its pending tag removed (in one helper at the end, which also
lists the repository again: each must be listed whole, with its tree digest).
A push cut short by a kill, a deletion or a read error is never taken for a
copy; `prune --remote` removes what it left.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from voltool import journal
from voltool.engine import restic
from voltool.engine.client import Mount
from voltool.engine.locks import volume_lock
from voltool.errors import (
    Busy,
    IntegrityError,
    NotFound,
    RemoteError,
    UsageError,
    VoltoolError,
)
from voltool.ids import check_volume_name
from voltool.ops.remote import (
    HOST,
    PUSHED,
    RemoteSnapshot,
    Session,
    complete,
    parse,
    tags,
)
from voltool.remotes import Remote
from voltool.runtime import Runtime
from voltool.store import catalog, format2
from voltool.store.catalog import Snapshot
from voltool.store.layout import Meta
from voltool.words import quoted

_GONE = 66  # restic-run.sh: the snapshot's directory is not there


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
    session = Session.open(rt, remote)
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


def _present(s: Session, snap: Snapshot, wait: float | None) -> bool:
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
    s: Session,
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
    args += ["--", *PUSHED]
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


def _finish(s: Session, read: list[Pushed]) -> dict[str, RemoteSnapshot]:
    """Confirm the backups `read` (their pending tag removed), and the repository's whole
    snapshots afterwards, by voltool id."""
    result = restic.run(s.rt, s.image, s.repo, s.op, [p.restic_id for p in read], mode="finish")
    if result.exit_code == 4:
        raise Busy(
            f"the repository of remote {quoted(s.remote.name)} stayed locked: the pushes are "
            "in it, not confirmed; push again (`voltool remote unlock` if no other restic "
            "uses it: a killed one leaves its lock)"
        )
    out = restic.checked(result, s.repo, f"confirming the pushes to {s.remote.name}").stdout
    raw = restic.json_value(out, "listing")
    listing = [x for x in (parse(r) for r in (raw if isinstance(raw, list) else [])) if x]
    return {x.id: x for x in complete(listing)}
