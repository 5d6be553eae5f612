"""Finishing or undoing interrupted operations, and clearing what dead processes left.

`recover` is safe to run at any time and any number of times: it acts only on
operations whose process is provably gone, and on helpers, locks and
incomplete snapshot volumes whose creator is provably gone. Each operation
is handled under its volumes' locks, which it may take over from the dead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

from voltool import catalog, keepers, quiesce
from voltool import labels as L
from voltool.catalog import Snapshot
from voltool.engine import ContainerInfo
from voltool.errors import Busy, NotFound
from voltool.ids import is_valid_id, new_id, snapshot_volume_name
from voltool.journal import Operation
from voltool.layout import SNAPSHOT, Names
from voltool.locks import Holder, lock_holders, volume_lock
from voltool.manifest import ManifestEntry
from voltool.owner import Owner
from voltool.runtime import Runtime


@dataclass(frozen=True)
class Leftovers:
    interrupted: list[Operation]
    helpers: list[ContainerInfo]  # helpers whose creator is gone
    locks: list[Holder]  # locks whose holder is gone
    incomplete: list[Snapshot]  # snapshot volumes without snapshot.json whose creator is gone
    keepers: list[ContainerInfo] = field(default_factory=list)  # keepers whose volume is gone
    unprotected: list[Snapshot] = field(default_factory=list)  # snapshots without a keeper

    @property
    def empty(self) -> bool:
        return not (
            self.interrupted
            or self.helpers
            or self.locks
            or self.incomplete
            or self.keepers
            or self.unprotected
        )


def _gone(token: str) -> bool:
    owner = Owner.parse(token)
    return owner is None or not owner.is_alive()


def find_leftovers(rt: Runtime) -> Leftovers:
    """What dead processes (and older voltools) left. `rt.image` may be "" (doctor, with no
    usable helper image): snapshot metadata is then looked for through the keepers alone."""
    listed = keepers.keepers(rt)  # before the volumes: see keepers.coverage
    helpers = [
        c for c in rt.engine.managed_containers(L.ROLE_HELPER) if _gone(c.labels.get(L.OWNER, ""))
    ]
    stale = [h for h in lock_holders(rt) if h.owner is None or not h.owner.is_alive()]
    snapshots = catalog.find(rt)
    candidates = [s for s in snapshots if _gone(s.owner)]
    # Only a snapshot.json that is provably absent makes a snapshot incomplete.
    # One that is there but does not read well (damaged, or from a newer
    # voltool) is never removed here.
    incomplete = [s for s in _commits(rt, candidates, listed) if not s.committed]
    orphans, unprotected = _unkept(rt, snapshots, listed)
    return Leftovers(rt.journal.interrupted(), helpers, stale, incomplete, orphans, unprotected)


def _commits(rt: Runtime, snapshots: list[Snapshot], listed: list[ContainerInfo]) -> list[Snapshot]:
    """`snapshots` with `committed` known: read by a helper, else (no helper image) looked
    for through their keepers; one with neither is left out."""
    if rt.image:
        return catalog.with_metadata(rt, snapshots)
    by_volume = {c.labels.get(L.KEEPER_VOLUME): c for c in listed}
    found = []
    for s in snapshots:
        keeper = by_volume.get(s.volume)
        if keeper is not None:
            there = rt.engine.path_exists(keeper.id, f"{keepers.MOUNT}/{SNAPSHOT}")
            found.append(replace(s, committed=there))
    return found


def _unkept(
    rt: Runtime, snapshots: list[Snapshot], listed: list[ContainerInfo]
) -> tuple[list[ContainerInfo], list[Snapshot]]:
    """Keepers whose snapshot volume is gone; committed snapshots that have no keeper
    (made by an older voltool). One still being made is neither: its keeper comes next."""
    cover = keepers.coverage({s.volume for s in snapshots}, listed)
    bare = [s for s in snapshots if s.volume not in cover.protected]
    if not rt.image:
        return cover.orphans, bare  # whether they are complete cannot be told
    return cover.orphans, [s for s in catalog.with_metadata(rt, bare) if s.committed]


def recover(rt: Runtime, dry_run: bool = False) -> list[str]:
    """Finish or roll back every interrupted operation, then clear leftovers.

    Returns what was done, or with `dry_run` what would be done.
    """
    done: list[str] = []

    def act(what: str, fn: Callable[[], object]) -> None:
        if not dry_run:
            fn()
        done.append(what)

    for op in rt.journal.interrupted():
        handler = _HANDLERS.get(op.kind)
        if handler is None:
            rt.reporter.warn(f"operation {op.id} of unknown kind {op.kind!r} left as it is")
            continue
        with contextlib.ExitStack() as locks:
            if not dry_run:
                for v in sorted(op.volumes):
                    locks.enter_context(
                        volume_lock(rt, v, op.id, "recover", wait=30, recovering=True)
                    )
                # Read the op again under its locks: another recover may have
                # finished it meanwhile, and replaying a finished swap would
                # move the restored data away.
                fresh = rt.journal.operations().get(op.id)
                if fresh is None or not fresh.interrupted:
                    continue
                op = fresh
            handler(rt, op, act)
            act(
                f"mark operation {op.id} recovered",
                partial(rt.journal.append, op.id, "recovered"),
            )

    left = find_leftovers(rt)
    for c in left.helpers:
        act(f"remove orphaned helper {c.short_id}", partial(rt.engine.remove_container, c.id))
    for h in left.locks:
        act(
            f"release stale lock on {h.volume!r} ({h.describe()})",
            partial(rt.engine.remove_container, h.container_id),
        )
    for s in left.incomplete:
        act(
            f"remove incomplete snapshot {s.id} of {s.source!r}",
            partial(_remove_incomplete, rt, s),
        )
    for c in left.keepers:
        act(
            f"remove keeper {c.name} of the missing volume {c.labels.get(L.KEEPER_VOLUME, '?')!r}",
            partial(keepers.remove_orphan, rt, c),
        )
    for s in left.unprotected:
        act(
            f"protect snapshot {s.id} of {s.source!r} from docker volume prune (add its keeper)",
            partial(protect_snapshot, rt, s),
        )
    return done


def protect_snapshot(rt: Runtime, s: Snapshot) -> None:
    """Give snapshot `s` its keeper, under its lock, if its volume is still there."""
    try:
        with volume_lock(rt, s.volume, new_id(), "recover", wait=30):
            catalog.require(rt, s)  # mounting a deleted volume would make an empty one
            keepers.protect(rt, s.volume, new_id())
    except (Busy, NotFound) as e:
        rt.reporter.warn(f"snapshot {s.id} left unprotected for now: {e}")


def _remove_incomplete(rt: Runtime, s: Snapshot, locked: bool = False) -> None:
    """Remove a snapshot volume if, under its lock, it still has no snapshot.json.

    `locked`: the caller holds that lock already (an import's own snapshot volume).
    """
    with contextlib.ExitStack() as lock:
        if not locked:
            lock.enter_context(volume_lock(rt, s.volume, new_id(), "recover", wait=30))
        again = catalog.with_metadata(rt, [s])[0]
        if not again.committed:
            keepers.remove_snapshot_volume(rt, s.volume)


Act = Callable[[str, Callable[[], object]], None]


def _recover_snapshot(rt: Runtime, op: Operation, act: Act) -> None:
    """A snapshot never changes its source: resume what it quiesced, drop what it did not commit."""
    if op.reached("quiesce") and not op.reached("resumed"):
        targets = [quiesce.Quiesced.from_record(r) for r in op.data.get("containers", [])]
        for q in targets:
            verb = "unpause" if q.action == "pause" else "start"
            act(f"{verb} container {q.name} ({op.kind} {op.id})", partial(_resume_one, rt, q))
    _remove_helpers_of(rt, op, act)
    ids = [
        i
        for i in dict(op.data.get("snapshots", {})).values()
        if isinstance(i, str) and is_valid_id(i)
    ]
    known = {s.id: s for s in catalog.find(rt) if s.id in ids}
    for s in catalog.with_metadata(rt, list(known.values())):
        if not s.committed:
            act(
                f"remove incomplete snapshot {s.id} of {s.source!r}",
                partial(_remove_incomplete, rt, s, s.volume in op.volumes),
            )


def _resume_one(rt: Runtime, q: quiesce.Quiesced) -> None:
    for failure in quiesce.resume(rt.engine, [q]):
        rt.reporter.warn(f"could not resume {failure}")


def _remove_helpers_of(rt: Runtime, op: Operation, act: Act) -> None:
    for c in rt.engine.managed_containers(L.ROLE_HELPER):
        if c.labels.get(L.OP) == op.id:
            act(
                f"remove helper {c.short_id} of {op.id}",
                partial(rt.engine.remove_container, c.id),
            )


def _recover_restore(rt: Runtime, op: Operation, act: Act) -> None:
    """Before "swap": roll back. From "swap" on: roll forward. Each step done is journaled."""
    from voltool import restore

    d = op.data
    target = str(d.get("target", ""))
    names = Names.for_op(op.id)  # derived from the id, not read back from the journal
    stopped = [quiesce.Quiesced.from_record(r) for r in d.get("containers", [])]
    _remove_helpers_of(rt, op, act)  # also stops a swap helper that is still running
    try:
        rt.engine.volume(target)
    except NotFound:
        return  # nothing of it is left to finish or undo
    old_mtime = d.get("old_mtime")
    old_mtime = old_mtime if isinstance(old_mtime, int) else None
    if not op.reached("swap"):
        if op.reached("create"):
            act(
                f"remove the volume {target!r} that restore {op.id} created",
                partial(rt.engine.remove_volume, target),
            )
        else:
            act(
                f"remove the staging directory of restore {op.id} from {target!r}",
                partial(restore.drop_stage, rt, op.id, target, names, old_mtime),
            )
        for q in stopped:
            act(f"start container {q.name} (restore {op.id})", partial(_resume_one, rt, q))
        return
    root = d["root"]
    if not op.reached("swapped"):
        act(
            f"finish the swap of restore {op.id} in {target!r}",
            _recorded(
                rt,
                op,
                "swapped",
                partial(restore.swap, rt, op.id, target, names, _root_entry(root), old_mtime),
            ),
        )
    if not op.reached("started"):
        for q in stopped:
            act(f"start container {q.name} (restore {op.id})", partial(_resume_one, rt, q))
    safety = d.get("safety")
    if isinstance(safety, str) and is_valid_id(safety) and not op.reached("saved"):
        existing = catalog.with_metadata(rt, [s for s in catalog.find(rt) if s.id == safety])
        # Only a complete one counts: a damaged one (a commit cut short) is
        # this op's own partial work, and the old data must not rest on it.
        if not (existing and existing[0].state == "complete"):
            if existing:
                act(
                    f"remove the partial pre-restore snapshot {safety}",
                    partial(keepers.remove_snapshot_volume, rt, snapshot_volume_name(safety)),
                )
            act(
                f"keep the old data of {target!r} as pre-restore snapshot {safety}",
                _recorded(
                    rt,
                    op,
                    "saved",
                    partial(
                        restore.save_old, rt, op.id, target, names, safety, str(d.get("snapshot"))
                    ),
                ),
            )
    act(
        f"remove the old data of restore {op.id} from {target!r}",
        partial(restore.cleanup, rt, op.id, target, names, int(root["mtime"])),
    )


def _root_entry(root: dict[str, int]) -> ManifestEntry:
    """The snapshot's root entry, as the restore journaled it."""
    return ManifestEntry(
        ".", "dir", int(root["mode"]), int(root["uid"]), int(root["gid"]), 0, int(root["mtime"])
    )


def _recorded(
    rt: Runtime, op: Operation, step: str, fn: Callable[[], object]
) -> Callable[[], None]:
    """`fn`, then journal `step` for `op`: a recover cut short resumes after what it did."""

    def run() -> None:
        fn()
        rt.journal.append(op.id, step)

    return run


_HANDLERS: dict[str, Callable[[Runtime, Operation, Act], None]] = {
    "snapshot": _recover_snapshot,
    "import": _recover_snapshot,  # the same: drop what was not committed
    "restore": _recover_restore,
}
