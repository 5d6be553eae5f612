"""Finishing or undoing interrupted operations, and clearing what dead processes left.

`recover` is safe to run at any time and any number of times: it acts only on
operations whose process is provably gone, and on helpers, locks and
incomplete snapshot volumes whose creator is provably gone. It works from the
operation records in the engine alone (voltool.engine.records), so whoever reaches
the engine can run it.

Order, and why:
1. Containers first: every container an interrupted operation paused or
   stopped is brought back before anything else is tried, each on its own,
   under that operation's locks and from its records read again there (so a
   container a running operation holds is never started). Those of a restore
   cut inside its swap come back once the swap is finished, never onto half a
   tree; those of a restore with --offline once its hidden directories are gone.
2. Then each operation on its own, under its volumes' locks (taken over from
   the dead): one that cannot be finished is reported and stays pending,
   and the others are still recovered.
3. Then the leftovers that belong to no interrupted operation.

Records are data read back from the engine: see voltool.journal for what a
later record may and may not say.

Every step is planned from what is there now, as an `Action` whose words are
what `--dry-run` prints; run for real, each prints what it actually did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial

from voltool import restore_record, swap
from voltool.engine import keepers, quiesce, records
from voltool.engine import labels as L
from voltool.engine.client import ContainerInfo
from voltool.engine.locks import Holder, lock_holders, volume_lock
from voltool.errors import Busy, NotFound, VoltoolError
from voltool.ids import is_valid_id, new_id
from voltool.journal import Kind, Operation, Step
from voltool.owner import Owner
from voltool.restore_record import MemberRecord
from voltool.runtime import Runtime
from voltool.store import catalog, format2
from voltool.store.catalog import Snapshot
from voltool.store.layout import SNAPSHOT, Names
from voltool.words import quoted


@dataclass(frozen=True)
class Action:
    """One step of recovery: `what` is said before it is done; `run` may say what it did."""

    what: str
    run: Callable[[], str | None]


@dataclass(frozen=True)
class Plan:
    """What recovering one operation takes; `unrecoverable` says why it cannot be finished."""

    actions: list[Action]
    unrecoverable: str | None = None


@dataclass
class Report:
    done: list[str] = field(default_factory=list)  # what was done (or, dry, would be)
    failures: list[str] = field(default_factory=list)  # one line each


@dataclass(frozen=True)
class Frozen:
    """A container an interrupted operation paused or stopped and did not bring back."""

    op: Operation
    container: quiesce.Quiesced
    how: quiesce.Revival


@dataclass(frozen=True)
class Leftovers:
    interrupted: list[Operation]
    frozen: list[Frozen]  # containers still paused or stopped by them
    elsewhere: list[Frozen]  # ... by operations whose process cannot be checked from here
    helpers: list[ContainerInfo]  # helpers whose creator is gone, of no interrupted op
    locks: list[Holder]  # locks whose holder is gone, of no interrupted op
    incomplete: list[Snapshot]  # snapshot volumes without snapshot.json whose creator is gone
    keepers: list[ContainerInfo] = field(default_factory=list)  # keepers whose volume is gone
    records: list[ContainerInfo] = field(default_factory=list)  # records that do not read
    unprotected: list[Snapshot] = field(default_factory=list)  # snapshots without a keeper

    @property
    def empty(self) -> bool:
        return not (
            self.interrupted
            or self.helpers
            or self.locks
            or self.incomplete
            or self.keepers
            or self.records
            or self.unprotected
        )


def _gone(token: str) -> bool:
    owner = Owner.parse(token)
    return owner is None or not owner.is_alive()


@dataclass(frozen=True)
class Scope:
    """What `recover` may touch: everything, or what concerns some volumes only."""

    volumes: frozenset[str] | None = None  # None: everything

    def op(self, op: Operation) -> bool:
        if self.volumes is None:
            return True
        made = op.data.get("snapshots")  # an import's: filed under a source volume
        sources = set(made) if isinstance(made, dict) else set()
        return bool((set(op.volumes) | sources) & self.volumes)

    def snapshot(self, s: Snapshot) -> bool:
        return self.volumes is None or s.source in self.volumes

    def volume(self, name: str, snapshots: dict[str, Snapshot]) -> bool:
        """A volume in scope, or a snapshot volume of one."""
        if self.volumes is None or name in self.volumes:
            return True
        return name in snapshots and snapshots[name].source in self.volumes


EVERYTHING = Scope()


def find_leftovers(rt: Runtime, scope: Scope = EVERYTHING) -> Leftovers:
    """What dead processes (and older voltools) left. `rt.image` may be "" (doctor, with no
    usable helper image): snapshot metadata is then looked for through the keepers alone."""
    listed = keepers.keepers(rt)  # before the volumes: see keepers.coverage
    interrupted = [op for op in rt.journal.interrupted() if scope.op(op)]
    ours = {op.id for op in interrupted}
    claimed = {sid for op in interrupted for sid in _snapshot_ids(op)}
    found = catalog.find(rt)
    by_volume = {s.volume: s for s in found}
    helpers = [
        c
        for c in rt.engine.managed_containers(L.ROLE_HELPER)
        if _gone(c.labels.get(L.OWNER, ""))
        and c.labels.get(L.OP) not in ours
        and any(scope.volume(v, by_volume) for v in c.volumes or ("",))
    ]
    stale = [
        h
        for h in lock_holders(rt)
        if (h.owner is None or not h.owner.is_alive())
        and h.op not in ours
        and scope.volume(h.volume, by_volume)
    ]
    candidates = [s for s in found if _gone(s.owner) and s.id not in claimed and scope.snapshot(s)]
    # Only a snapshot.json that is provably absent makes a snapshot incomplete.
    # One that is there but does not read well (damaged, or from a newer
    # voltool) is never removed here.
    incomplete = [s for s in _commits(rt, candidates, listed) if not s.committed]
    mine = [s for s in found if s.id not in claimed and scope.snapshot(s)]
    orphans, unprotected = _unkept(rt, mine, listed)
    if scope.volumes is not None:
        orphans = []  # whose volume is gone cannot be told: only a recover of everything
    every = rt.journal.operations().values()
    claimed = _claimed(every, frozenset())
    frozen = [f for op in interrupted for f in _frozen(rt, op, claimed, early=False)]
    unchecked = [
        op
        for op in every
        if op.reached(Step.BEGIN)
        and not op.finished
        and scope.op(op)
        and op.owner is not None
        and not op.owner.checkable
    ]
    elsewhere = [f for op in unchecked for f in _frozen(rt, op, set(), early=False)]
    bad = [
        c
        for c in records.unreadable(rt.engine)
        if scope.volumes is None or set(c.labels.get(L.VOLUMES, "").split(",")) & scope.volumes
    ]
    return Leftovers(
        interrupted=interrupted,
        frozen=frozen,
        elsewhere=elsewhere,
        helpers=helpers,
        locks=stale,
        incomplete=incomplete,
        keepers=orphans,
        records=bad,
        unprotected=unprotected,
    )


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


def recover(
    rt: Runtime,
    dry_run: bool = False,
    scope: Scope = EVERYTHING,
    abandoned: frozenset[str] = frozenset(),
) -> Report:
    """Finish or roll back every interrupted operation in `scope`, then clear its leftovers.

    `abandoned`: ids of operations a person says are dead although their process
    cannot be checked from here (another host, another pid namespace).
    Never stops at the first failure: each operation and each leftover is
    handled on its own, and what failed is in the report's `failures`.
    """
    report = Report()
    every = rt.journal.operations()
    for oid in sorted(abandoned):
        owner = every[oid].owner if oid in every else None
        if owner is not None and owner.checkable and owner.is_alive():
            report.failures.append(
                f"operation {oid} is not abandoned: its process ({owner.describe()}) is alive"
            )
            abandoned = abandoned - {oid}
    ops = {k: op for k, op in every.items() if scope.op(op)}
    for op in ops.values():
        if op.finished or not op.reached(Step.BEGIN):
            # A finished operation whose records were not all removed, or
            # records with no operation: nothing to do but tidy them away.
            _run(rt, [_forget(rt, op)], dry_run, report)
    interrupted = [op for op in ops.values() if _dead(op, abandoned)]
    for op in interrupted:
        _revive_first(rt, op, dry_run, report, abandoned)
    for op in interrupted:
        _recover_one(rt, op, dry_run, report, abandoned)

    try:
        left = find_leftovers(rt, scope)
    except VoltoolError as e:
        report.failures.append(f"could not look for leftovers: {e}")
        return report
    for c in left.helpers:
        what = f"remove orphaned helper {c.short_id}"
        _run(rt, [Action(what, partial(rt.engine.remove_container, c.id))], dry_run, report)
    for h in left.locks:
        what = f"release stale lock on {quoted(h.volume)} ({h.describe()})"
        _run(
            rt, [Action(what, partial(rt.engine.remove_container, h.container_id))], dry_run, report
        )
    for s in left.incomplete:
        what = f"remove incomplete snapshot {s.id} of {quoted(s.source)}"
        _run(rt, [Action(what, partial(_remove_incomplete, rt, s))], dry_run, report)
    for c in left.records:
        what = f"remove operation record {c.short_id}, which does not read as one"
        _run(rt, [Action(what, partial(rt.engine.remove_container, c.id))], dry_run, report)
    for c in left.keepers:
        missing = quoted(c.labels.get(L.KEEPER_VOLUME, "?"))
        what = f"remove keeper {c.name} of the missing volume {missing}"
        _run(rt, [Action(what, partial(keepers.remove_orphan, rt, c))], dry_run, report)
    for s in left.unprotected:
        what = (
            f"protect snapshot {s.id} of {quoted(s.source)} from docker volume prune "
            "(add its keeper)"
        )
        _run(rt, [Action(what, partial(protect_snapshot, rt, s))], dry_run, report)
    return report


def protect_snapshot(rt: Runtime, s: Snapshot) -> str | None:
    """Give snapshot `s` its keeper, under its lock, if its volume is still there."""
    try:
        with volume_lock(rt, s.volume, new_id(), "recover", wait=30):
            catalog.require(rt, s)  # mounting a deleted volume would make an empty one
            keepers.protect(rt, s.volume, new_id())
    except (Busy, NotFound) as e:
        return f"left snapshot {s.id} unprotected for now: {e}"
    return None


def _run(rt: Runtime, actions: list[Action], dry_run: bool, report: Report) -> bool:
    """Do `actions` in order, stopping at the first that fails; False if one did."""
    for a in actions:
        if dry_run:
            report.done.append(a.what)
            continue
        try:
            said = a.run()
        except VoltoolError as e:
            report.failures.append(f"could not {a.what}: {e}")
            return False
        report.done.append(said or a.what)
    return True


def _dead(op: Operation, abandoned: frozenset[str] = frozenset()) -> bool:
    """Begun, unfinished, and its process provably gone (or said to be, by a person)."""
    if not op.reached(Step.BEGIN) or op.finished:
        return False
    return op.interrupted or op.id in abandoned


def _claimed(ops: Iterable[Operation], abandoned: frozenset[str]) -> set[str]:
    """Containers that operations still running hold paused or stopped: theirs to bring back
    (a container can be used by volumes of two operations)."""
    return {
        q.id
        for op in ops
        if op.reached(Step.BEGIN) and not op.finished and not _dead(op, abandoned)
        for q in _quiesced(op)
    }


@contextlib.contextmanager
def _holding(
    rt: Runtime, op: Operation, dry_run: bool, abandoned: frozenset[str]
) -> Iterator[tuple[Operation, set[str]] | None]:
    """`op`'s volume locks held (taken over from the dead), and `op` read again under them,
    with the containers operations still running hold; None if `op` is no longer recover's
    (another recover finished it meanwhile). A dry run takes no lock."""
    if dry_run:
        every = rt.journal.operations()
        yield op, _claimed(every.values(), abandoned)
        return
    with contextlib.ExitStack() as locks:
        for v in sorted(op.volumes):
            locks.enter_context(
                volume_lock(
                    rt,
                    v,
                    op.id,
                    "recover",
                    wait=30,
                    recovering=True,
                    take_over=op.id if op.id in abandoned else None,
                )
            )
        # Read again under the locks: another recover may have finished it (replaying
        # a finished swap would move the restored data away), and another operation
        # may have stopped its containers since.
        every = rt.journal.operations()
        fresh = every.get(op.id)
        if fresh is None or not _dead(fresh, abandoned):
            yield None
        else:
            yield fresh, _claimed(every.values(), abandoned)


def _revive_first(
    rt: Runtime, op: Operation, dry_run: bool, report: Report, abandoned: frozenset[str]
) -> None:
    """Bring back `op`'s containers, before any operation's own steps (see `_deferred`)."""
    try:
        with _holding(rt, op, dry_run, abandoned) as held:
            if held is None:
                return
            fresh, claimed = held
            revivals = [_revive(rt, f) for f in _frozen(rt, fresh, claimed, early=True)]
            if revivals and _run(rt, revivals, dry_run, report) and not dry_run:
                # Said once: a later recover must not wait again for stops long over.
                with contextlib.suppress(VoltoolError):
                    rt.journal.append(op.id, Step.REVIVED)
    except VoltoolError as e:
        report.failures.append(f"{op.kind} {op.id}: {e}")


def _recover_one(
    rt: Runtime, op: Operation, dry_run: bool, report: Report, abandoned: frozenset[str]
) -> None:
    planner = _PLANNERS.get(op.kind)
    if planner is None:
        report.failures.append(f"operation {op.id} of unknown kind {quoted(op.kind)} left as it is")
        return
    try:
        with _holding(rt, op, dry_run, abandoned) as held:
            if held is None:
                return
            op, claimed = held
            plan = planner(rt, op, claimed)
            if not _run(rt, plan.actions, dry_run, report):
                return  # stays pending: the next recover tries again
            if plan.unrecoverable:
                report.failures.append(f"{op.kind} {op.id}: {plan.unrecoverable}")
                end = Action(
                    f"mark operation {op.id} failed",
                    partial(rt.journal.append, op.id, Step.FAILED, error=plan.unrecoverable),
                )
            else:
                end = Action(
                    f"mark operation {op.id} recovered",
                    partial(rt.journal.append, op.id, Step.RECOVERED),
                )
            _run(rt, [end], dry_run, report)
    except VoltoolError as e:
        report.failures.append(f"{op.kind} {op.id}: {e}")
    except (KeyError, TypeError, ValueError) as e:
        # Records are data read back from the engine: one that does not read well
        # stops its own operation's recovery, never the others'.
        report.failures.append(f"{op.kind} {op.id}: its records do not read well ({e})")


# -- containers ------------------------------------------------------------


def _quiesced(op: Operation) -> list[quiesce.Quiesced]:
    """The containers `op` set out to pause or stop (recorded before it touched any)."""
    key = Step.QUIESCE if op.kind != Kind.RESTORE else Step.STOP
    found = []
    for recs in op.all_of(key, "containers"):
        for r in recs if isinstance(recs, list) else []:
            q = quiesce.Quiesced.from_record(r)
            if q is not None:
                found.append(q)
    return found


def _mid_swap(op: Operation) -> bool:
    return op.kind == Kind.RESTORE and op.reached(Step.SWAP) and not op.reached(Step.SWAPPED)


def _deferred(op: Operation) -> bool:
    """Containers a restore stopped that come back only once its own steps are done: inside
    its swap (never onto half a tree), or all along with --offline (never in front of its
    hidden directories)."""
    return op.kind == Kind.RESTORE and (_mid_swap(op) or op.data.get("offline") is True)


def _frozen(rt: Runtime, op: Operation, claimed: set[str], early: bool) -> list[Frozen]:
    """The containers of `op` that still wait to be brought back, and how. `early`: at the
    start of recover, before the operation's own steps (see `_deferred`)."""
    if op.reached(Step.RESUMED) or op.reached(Step.STARTED) or op.reached(Step.REVIVED):
        return []
    if early and _deferred(op):
        return []
    begun = {str(c) for c in op.all_of("stopping", "container")}
    found = []
    for q in _quiesced(op):
        if q.id in claimed:
            continue  # a running operation holds it too: it brings it back
        try:
            status: str | None = rt.engine.container(q.id).status
        except NotFound:
            status = None
        except VoltoolError:
            continue  # cannot be told: left as it is, never guessed at
        how = quiesce.revival(q, status, q.id in begun)
        if how is not None:
            found.append(Frozen(op, q, how))
    return found


def _revive(rt: Runtime, f: Frozen) -> Action:
    q, op = f.container, f.op
    whose = f"({op.kind} {op.id})"
    timeout = op.data.get("stop_timeout")
    if not (isinstance(timeout, int) and 0 <= timeout <= quiesce.MAX_STOP_TIMEOUT):
        timeout = rt.config.stop_timeout
    words = {
        quiesce.Revival.UNPAUSE: f"unpause container {q.name} {whose}",
        quiesce.Revival.START: f"start container {q.name} {whose}",
        quiesce.Revival.AWAIT_STOP_THEN_START: (
            f"wait for the stop of container {q.name} to end, then start it {whose}"
        ),
    }

    def run() -> str | None:
        instead = quiesce.revive(rt.engine, q, f.how, timeout)
        return f"{instead} {whose}" if instead else None

    return Action(words[f.how], run)


# -- operations ------------------------------------------------------------


def _forget(rt: Runtime, op: Operation) -> Action:
    return Action(
        f"remove the records of finished operation {op.id}", partial(rt.journal.store.forget, op.id)
    )


def _snapshot_ids(op: Operation) -> list[str]:
    """The ids of the snapshots `op` was making (a restore's pre-restore snapshot too)."""
    made = op.data.get("snapshots")
    members = op.data.get("members")
    safeties = (
        [m.get("safety") for m in members if isinstance(m, dict)]
        if isinstance(members, list)
        else []
    )
    ids = [*(made.values() if isinstance(made, dict) else []), op.data.get("safety"), *safeties]
    return [i for i in ids if isinstance(i, str) and is_valid_id(i)]


def _helper_removals(rt: Runtime, op: Operation) -> list[Action]:
    """Remove `op`'s helpers, and the locks it held on volumes other than its own (a
    restore locks its snapshot too); its own volumes' locks are recover's until it is done."""
    helpers = [
        Action(f"remove helper {c.short_id} of {op.id}", partial(rt.engine.remove_container, c.id))
        for c in rt.engine.managed_containers(L.ROLE_HELPER, {L.OP: op.id})
    ]
    locks = [
        Action(
            f"release stale lock on {quoted(h.volume)} ({h.describe()})",
            partial(rt.engine.remove_container, h.container_id),
        )
        for h in lock_holders(rt)
        if h.op == op.id and h.volume not in op.volumes and h.stale
    ]
    return helpers + locks


def _plan_snapshot(rt: Runtime, op: Operation, claimed: set[str]) -> Plan:
    """A snapshot never changes its source: what it quiesced is back already (see `recover`);
    drop what it did not commit."""
    actions = _helper_removals(rt, op)
    ids = _snapshot_ids(op)
    known = [s for s in catalog.find(rt) if s.id in ids]
    for s in catalog.with_metadata(rt, known):
        if not s.committed:
            actions.append(
                Action(
                    f"remove incomplete snapshot {s.id} of {quoted(s.source)}",
                    partial(_remove_incomplete, rt, s, s.volume in op.volumes),
                )
            )
    return Plan(actions)


def _remove_incomplete(rt: Runtime, s: Snapshot, locked: bool = False) -> None:
    """Remove a snapshot volume if, under its lock, it still has no snapshot.json.

    `locked`: the caller holds that lock already (an import's own snapshot volume).
    """
    with contextlib.ExitStack() as lock:
        if not locked:
            lock.enter_context(volume_lock(rt, s.volume, new_id(), "recover", wait=30))
        again = catalog.with_metadata(rt, [s])[0]
        if not again.committed:
            catalog.remove(rt, again, new_id())


def _plan_restore(rt: Runtime, op: Operation, claimed: set[str]) -> Plan:
    """Before "swap": roll every member back. From "swap" on: roll every member forward.
    Each step done is journaled. The containers it stopped come back before this (see
    `recover`), or, when they must wait for its steps (`_deferred`), once those are done."""
    names = Names.for_op(op.id)  # derived from the id, not read back from the records
    # The root is needed from the swap on only: a restore rolled back never reads it.
    members = restore_record.members(op.data, op.volumes, need_root=op.reached(Step.SWAP))
    actions = _helper_removals(rt, op)  # also stops a swap helper that is still running
    late = [_revive(rt, f) for f in _frozen(rt, op, claimed, early=False)] if _deferred(op) else []
    offline = op.data.get("offline") is True
    lost = []
    present = []
    for m in members:
        try:
            volume = rt.engine.volume(m.target)
        except NotFound:
            if not (not op.reached(Step.SWAP) and m.create):  # else: nothing made, nothing to undo
                lost.append(m.target)
            continue
        present.append((m, volume.labels.get(L.CREATED_BY) == op.id))
    gone = (
        f"its target volume {quoted(lost[0])} no longer exists; nothing is left to finish or undo"
        if len(lost) == 1
        else f"its target volumes {', '.join(map(repr, lost))} no longer exist; "
        "nothing is left to finish or undo there"
    )
    unrecoverable = gone if lost else None
    if not op.reached(Step.SWAP):
        began = set(op.all_of("stage", "member"))  # a group's: the members it began to stage
        for m, made in present:
            if "members" in op.data and m.target not in began and not made:
                continue
            actions.append(_undo(rt, op, m, names, made))
        return Plan(actions + late, unrecoverable)
    swaps = [
        Action(
            f"finish the swap of restore {op.id} in {quoted(m.target)}",
            partial(
                swap.swap,
                rt,
                op.id,
                m.target,
                names,
                m.root_entry,
                m.old_mtime,
                m.snapshot_volume.startswith(format2.STORE_PREFIX),  # staged by the agent
            ),
        )
        for m, _ in present
    ]
    if not op.reached(Step.SWAPPED) and swaps:
        # Every member's swap is run again (each is idempotent); "swapped" is said once,
        # after the last, as the restore itself does.
        last = swaps[-1]
        swaps[-1] = Action(last.what, _recorded(rt, op, Step.SWAPPED, last.run))
        actions += swaps
        if not offline:
            actions += late
    fmt = op.data.get("safety_format")
    for m, _ in present:
        actions += _keep_old(rt, op, m, names, fmt if fmt in (1, 2) else 1)
    for m, _ in present:
        actions.append(
            Action(
                f"remove the old data of restore {op.id} from {quoted(m.target)}",
                partial(swap.cleanup, rt, op.id, m.target, names, m.root_entry.mtime),
            )
        )
    return Plan(actions + (late if offline else []), unrecoverable)


def _undo(rt: Runtime, op: Operation, m: MemberRecord, names: Names, made: bool) -> Action:
    """Before the swap: the volume this restore created goes (if nothing else was written
    into it); in any other, the staging directory goes."""
    if made:
        what = f"remove the volume {quoted(m.target)} that restore {op.id} created"
        return Action(what, partial(swap.remove_created, rt, op.id, m.target, names))
    what = f"remove the staging directory of restore {op.id} from {quoted(m.target)}"
    return Action(what, partial(swap.drop_stage, rt, op.id, m.target, names, m.old_mtime))


def _keep_old(rt: Runtime, op: Operation, m: MemberRecord, names: Names, fmt: int) -> list[Action]:
    """Whatever the records say ("saved" included), the old data is removed only once a
    complete pre-restore snapshot of it is there to be seen."""
    if m.safety is None:
        return []
    existing = catalog.with_metadata(rt, [s for s in catalog.find(rt) if s.id == m.safety])
    # Only a complete one counts: a damaged one (a commit cut short) is this op's own
    # partial work, and the old data must not rest on it.
    if existing and existing[0].state == "complete":
        return []
    actions = []
    if existing:
        actions.append(
            Action(
                f"remove the partial pre-restore snapshot {m.safety}",
                partial(catalog.remove, rt, existing[0], op.id),
            )
        )
    actions.append(
        Action(
            f"keep the old data of {quoted(m.target)} as pre-restore snapshot {m.safety}",
            _recorded(
                rt,
                op,
                Step.SAVED,
                partial(swap.save_old, rt, op.id, m.target, names, m.safety, m.snapshot, fmt),
            ),
        )
    )
    return actions


def _recorded(
    rt: Runtime, op: Operation, step: Step, fn: Callable[[], object]
) -> Callable[[], None]:
    """`fn`, then journal `step` for `op`: a recover cut short resumes after what it did."""

    def run() -> None:
        fn()
        rt.journal.append(op.id, step)

    return run


def _plan_migrate(rt: Runtime, op: Operation, claimed: set[str]) -> Plan:
    """A move into a store cut short: while the snapshot volume is there, its copy in the
    store (complete or not) goes; once it is gone, the copy is the snapshot and stays."""
    actions = _helper_removals(rt, op)
    old, target = str(op.data["snapshot_volume"]), str(op.data["store"])
    if old not in op.volumes or target not in op.volumes:
        raise ValueError("its volumes are not the ones it locked")
    for sid in _snapshot_ids(op):
        there = catalog.old_is_there(rt, old, sid)
        for s in catalog.stored_copies(rt, target, sid):
            if there:
                what = f"remove the copy of snapshot {s.id} from {quoted(target)}: {old} stays"
            elif not s.committed:
                what = f"remove incomplete snapshot {s.id} of {quoted(s.source)}"
            else:
                continue
            actions.append(Action(what, partial(catalog.remove_copy, rt, s, op.id)))
    return Plan(actions)


def _plan_import(rt: Runtime, op: Operation, claimed: set[str]) -> Plan:
    """As a snapshot: drop what was not committed (a format-2 import's temporary snapshot
    volume never is). And the store it made, if it holds no snapshot: a format-2 import
    cut short before its copy began leaves the store as it found it."""
    plan = _plan_snapshot(rt, op, claimed)
    target = op.data.get("store")
    if not isinstance(target, str) or target not in op.volumes:
        return plan
    # Its temporary snapshot volume is never committed by the import; one that reads as
    # committed was made to (a pull's restic restore of a hostile tree can write beside
    # its target): it goes all the same.
    known = {s.id: s for s in catalog.find(rt) if not s.in_store and s.volume in op.volumes}
    for s in catalog.with_metadata(rt, [known[i] for i in _snapshot_ids(op) if i in known]):
        labels = rt.engine.volume(s.volume).labels
        if s.committed and labels.get(L.OP) == op.id and s.kind in ("import", "pulled"):
            what = f"remove the temporary volume {quoted(s.volume)} of import {op.id}"
            plan = Plan([*plan.actions, Action(what, partial(catalog.remove, rt, s, new_id()))])
    try:
        labels = rt.engine.volume(target).labels
    except NotFound:
        return plan
    if labels.get(L.ROLE) != L.ROLE_STORE or labels.get(L.OP) != op.id:
        return plan  # not the one this import made
    if any(s.volume == target for s in catalog.find(rt)):
        return plan  # its snapshot (removed above if incomplete) takes the store with it
    what = f"remove the empty store {quoted(target)} that import {op.id} made"
    return Plan([*plan.actions, Action(what, partial(_remove_empty_store, rt, target, op.id))])


def _remove_empty_store(rt: Runtime, target: str, op: str) -> str | None:
    if format2.remove_if_empty(rt, target, op):
        return None
    return f"left the store {quoted(target)}: it is not empty"


_PLANNERS: dict[str, Callable[[Runtime, Operation, set[str]], Plan]] = {
    Kind.SNAPSHOT: _plan_snapshot,
    Kind.MIGRATE: _plan_migrate,
    Kind.IMPORT: _plan_import,
    Kind.RESTORE: _plan_restore,
}
