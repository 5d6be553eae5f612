"""Moving format-1 snapshot volumes into their sources' stores (format 2).

Each snapshot moves on its own, under the locks of its snapshot volume and of
the store (in name order), journaled as an operation of kind "migrate":

1. journal "begin" (the snapshot volume, the store, the id);
2. the agent copies the snapshot volume's data/ into the store, as a snapshot
   with the same id, kind, created time, origin and meta.json, linking files
   unchanged since the store's latest snapshot by content (voltool.store.copy);
3. the agent hashes the copy again and holds it to its own manifest; the
   copy's manifest, read as format 1, must have the format-1 snapshot's tree
   digest (paths, types, modes, owners, sizes, content hashes, link targets,
   device numbers and hard-link groups: everything but times)
   (copy.copy_checked); only then is the copy committed;
4. journal "checked"; only then the snapshot volume is removed (with its
   keeper); journal "done".

A failure before the removal removes the copy from the store: the snapshot
volume stays as it was. A crash leaves the snapshot volume, or both; `voltool
recover` then removes the copy from the store while the snapshot volume is
there (recover.py, kind "migrate"). Never neither: the snapshot volume goes
only once its copy is committed and checked.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from voltool.engine import agent_image, keepers
from voltool.engine import labels as L
from voltool.engine.locks import volume_lock
from voltool.errors import IntegrityError, UsageError, VoltoolError
from voltool.ids import new_id
from voltool.journal import Kind, Step
from voltool.runtime import Runtime
from voltool.store import catalog, copy, format2
from voltool.store.catalog import Snapshot

KIND = Kind.MIGRATE


@dataclass(frozen=True)
class Moved:
    old: Snapshot  # the format-1 snapshot, as it was
    new: Snapshot  # the same snapshot in its store


def candidates(rt: Runtime, refs: list[str] | None) -> list[Snapshot]:
    """The format-1 snapshots to move, oldest first (each is linked against the store's
    latest, so oldest first costs least): those `refs` names, or (None) every complete one."""
    if refs is None:
        found = [s for s in catalog.list_snapshots(rt) if not s.in_store]
        return [s for s in found if s.state == "complete"]
    chosen = catalog.resolve_all(rt, refs)
    for s in chosen:
        if s.in_store:
            raise UsageError(f"snapshot {s.id} is in its store already")
        if s.state != "complete":
            raise IntegrityError(
                f"snapshot {s.id} is {s.state}: {s.problem or 'it cannot be moved'}"
            )
    return sorted(chosen, key=lambda s: (s.created, s.id))


def migrate(rt: Runtime, old: Snapshot, wait: float | None = 30) -> Moved:
    """Move one complete format-1 snapshot into its source's store (see the module)."""
    info = old.info
    assert info is not None and not old.in_store
    image = agent_image.agent_image(rt)
    target = format2.store_name(old.source)
    for v in (old.volume, target):
        rt.journal.refuse_pending(v)
    op = new_id()
    locked = sorted({old.volume, target})
    with contextlib.ExitStack() as locks:
        for v in locked:
            locks.enter_context(volume_lock(rt, v, op, KIND, wait))
        current = catalog.with_metadata(rt, [old])[0]
        catalog.require(rt, current)
        if current.info is None or current.problem:
            raise IntegrityError(f"snapshot {old.id} cannot be moved: {current.problem}")
        rt.journal.append(
            op,
            Step.BEGIN,
            kind=KIND,
            volumes=locked,
            snapshots={old.source: old.id},
            snapshot_volume=old.volume,
            store=target,
        )
        try:
            format2.ensure_store(rt, current.source, op)
            what = f"the copy of snapshot {old.id}"
            new = copy.copy_checked(rt, image, op, current, what=what)
            new = copy.commit_copy(rt, op, new)
            rt.journal.append(op, Step.CHECKED, snapshot=old.id)
            keepers.remove_when_unused(rt, old.volume)
        except BaseException as e:
            if _undo(rt, op, current, target):
                with contextlib.suppress(VoltoolError):
                    rt.journal.append(op, Step.FAILED, error=str(e) or type(e).__name__)
            raise
        rt.journal.append(op, Step.DONE)
    return Moved(current, new)


def _undo(rt: Runtime, op: str, old: Snapshot, target: str) -> bool:
    """After a failure, under the locks: remove the copy from the store while the
    snapshot volume is there (never otherwise). True if nothing is left to recover."""
    try:
        if not catalog.old_is_there(rt, old.volume, old.id):
            return False  # the copy is all there is: keep it; recover decides
        for s in catalog.stored_copies(rt, target, old.id):
            catalog.remove_copy(rt, s, op)
        for c in rt.engine.managed_containers(L.ROLE_HELPER, {L.OP: op}):
            rt.engine.remove_container(c.id)
        return True
    except VoltoolError as e:
        rt.reporter.warn(f"could not undo the move of {old.id}: {e}; run `voltool recover`")
        return False
