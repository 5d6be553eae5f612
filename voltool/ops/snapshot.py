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
import sys
from dataclasses import dataclass

from voltool.engine import agentrun, quiesce
from voltool.engine.client import Mount
from voltool.engine.locks import volume_lock
from voltool.engine.quiesce import Mode
from voltool.errors import (
    UsageError,
    VoltoolError,
)
from voltool.ids import new_id
from voltool.journal import Kind, Step
from voltool.runtime import Runtime
from voltool.store import catalog, copy, format2
from voltool.store.catalog import Snapshot, abandon, check_name_free
from voltool.store.format1 import Commit, Received, stream_volume
from voltool.store.layout import Meta


@dataclass(frozen=True)
class SnapshotRequest:
    volumes: tuple[str, ...]
    name: str | None = None
    note: str | None = None
    quiesce: str = Mode.PAUSE
    kind: str = "manual"
    wait: float | None = None
    format: int = 1  # 2: into the volumes' stores, through the agent (voltool.store.copy)


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
        from voltool.engine import agent_image

        image = agent_image.agent_image(rt)  # built on first use, before anything is locked
        stores = {v: format2.store_name(v) for v in volumes}

    op = new_id()
    ids = {v: new_id() for v in volumes}
    commit = Commit(req.kind, req.quiesce, meta)
    staged: list[Received] = []
    copied: list[copy.Copied] = []
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
        resumed = True  # nothing is paused or stopped until the quiesce step
        try:
            for v in stores:
                format2.ensure_store(rt, v, op)
            users = quiesce.running_users(rt.engine, volumes)
            uses = {c.name: c.volumes for c in users}
            targets = quiesce.plan(users, req.quiesce)
            resumed = False
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
                        copied.append(copy.copy(rt, image, op, ids[v], v, tree, *args))
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
