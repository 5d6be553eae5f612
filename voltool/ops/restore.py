"""Restoring a snapshot into a volume, so that an interruption at any instant loses nothing.

Invariants:
- Nothing outside the target volume is written, and nothing of the user's in it
  changes before the swap: the snapshot is staged into a hidden directory of
  the target (`.voltool-stage-<op>`, mode 0700), every entry checked by the
  validator and against the manifest. A corrupt or hostile snapshot fails there.
- Each step is journaled before it starts. Before "swap", an interrupted
  restore rolls back (drop the staging directory, restart the containers);
  from "swap" on it rolls forward (finish the swap, restart, keep the old data).
- The swap is a script of renames inside one filesystem, idempotent: cut off
  anywhere, running it again finishes it. Its first phase moves the user's
  top-level entries into `.voltool-old-<op>`, then creates the marker
  `.voltool-swap-<op>`; its second moves the staged entries into place. The
  marker tells a rerun which phase it is in.
- The old data is kept as a `pre-restore` snapshot before it is removed, so a
  restore can be undone by another restore.
- Downtime (containers stopped) covers the swap only, which costs renames,
  not copies: it does not grow with the volume's size. `--offline` stops them
  from before staging until the old data is kept and removed, for applications
  that must never see the hidden directories.

Steps, in journal order: begin, [create], [stop if offline], stage, staged,
[stop], [check], swap, swapped, start, started, [save, saved], cleanup, done
(with --offline, start and started come after cleanup).

Several volumes restored together (a group: `restore --project`) are one
operation: one lock set, one begin record listing each member (the same
fields a single restore's begin record has), a stage and staged record per
member, one stop of every container using any of them, one "swap" record
before the first member's swap and one "swapped" after the last, so that
recover rolls every member back or every member forward, never some of each.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass

from voltool import journal
from voltool.engine import labels as L
from voltool.engine import quiesce
from voltool.engine.client import ContainerInfo, Mount
from voltool.engine.locks import volume_lock
from voltool.errors import (
    Busy,
    IntegrityError,
    NoSpace,
    NotFound,
    PreconditionFailed,
    UsageError,
    VoltoolError,
)
from voltool.ids import check_volume_name, new_id
from voltool.journal import Kind, Step
from voltool.restore_record import MemberRecord
from voltool.runtime import Runtime
from voltool.signals import deferred_interrupts
from voltool.store import catalog, format2, staging
from voltool.store.catalog import Snapshot, read_manifest
from voltool.store.format1 import fix_modes
from voltool.store.layout import (
    DATA_DIR,
    Names,
    SnapshotInfo,
)
from voltool.store.manifest import ChangeSummary, Manifest, ManifestEntry, diff, summarize
from voltool.store.staging import check_settled
from voltool.swap import cleanup, created_by, drop_stage, remove_created, save_old, swap
from voltool.tar import live
from voltool.tar.transfer import RootOverride, Transfer
from voltool.tar.validate import PER_ENTRY_COST, EntryValidator, Limits
from voltool.words import quoted

# Slack on top of the content bytes: blocks rounded up, directories, inodes.
_FIXED_SLACK = 16 * 1024 * 1024


@dataclass(frozen=True)
class RestoreOptions:
    target: str | None = None  # default: the snapshot's source volume
    create: bool = False  # create the target if it does not exist
    if_match: str | None = None  # restore only if the target's digest is this
    offline: bool = False  # keep the containers stopped from before staging
    safety_snapshot: bool = True  # keep the old data as a pre-restore snapshot
    allow_special: bool = False  # accept device nodes and FIFOs from the snapshot
    wait: float | None = None  # seconds to wait for busy locks
    summary: bool = True  # compute the change summary (reads the whole target)


@dataclass(frozen=True)
class RestorePlan:
    """What a restore will do, found without changing anything."""

    snapshot: Snapshot
    info: SnapshotInfo
    manifest: Manifest | None  # None for a stored snapshot: it is not read into memory
    root: ManifestEntry  # the snapshot's root: the volume root gets its mode and owner
    target: str
    create: bool  # the target does not exist yet and will be created
    containers: tuple[ContainerInfo, ...]  # running containers to stop and start
    changes: ChangeSummary | None  # None when not computed
    needed: int  # bytes the target's filesystem must have free
    available: int | None
    target_mtime: int | None  # the target root's mtime before anything was staged
    device: str | None = None  # the target's filesystem (equal: one filesystem), if known

    def counts(self) -> dict[str, int] | None:
        return None if self.changes is None else self.changes.counts()


@dataclass(frozen=True)
class RestoreResult:
    op: str
    target: str
    snapshot: str
    safety_snapshot: str | None  # id of the pre-restore snapshot, if kept
    restarted: tuple[str, ...]  # names of the containers stopped and started again
    downtime: float  # seconds from the first stop to the last start
    held: tuple[quiesce.Held, ...] = ()  # each container stopped, and for how long


# -- plan ------------------------------------------------------------------


def plan(rt: Runtime, snapshot: Snapshot, opts: RestoreOptions) -> RestorePlan:
    """Pre-flight, all or nothing: every check a restore needs, with nothing changed."""
    info = snapshot.info
    if info is None or snapshot.problem:
        why = snapshot.problem or "it has no snapshot.json"
        raise IntegrityError(f"snapshot {snapshot.id} cannot be restored: {why}")
    if snapshot.kind == "import" and not opts.target:
        raise UsageError(
            f"snapshot {snapshot.id} was imported: name the volume to restore into with --to"
        )
    # The label is fixed when the volume is made; snapshot.json could be rewritten.
    target = check_volume_name(opts.target or snapshot.source)
    create = False
    try:
        volume = catalog.user_volume(rt, target)
    except NotFound:
        if not opts.create:
            raise catalog.no_such_volume(rt, target, " (--create makes it)") from None
        create = True
    else:
        if volume.in_memory:
            # Stopping its containers for the swap would unmount it, and with it both
            # the user's data and the staged copy.
            raise PreconditionFailed(
                f"volume {quoted(target)} is a tmpfs volume: its data lives only while a container "
                "runs with it, and a restore stops its containers; restore into another volume"
            )
    rt.journal.refuse_pending(target)
    try:
        return _plan(rt, snapshot, info, opts, target, create)
    finally:
        rt.reporter.status(None)


def _plan(
    rt: Runtime,
    snapshot: Snapshot,
    info: SnapshotInfo,
    opts: RestoreOptions,
    target: str,
    create: bool,
) -> RestorePlan:
    rt.reporter.status(f"reading the manifest of snapshot {snapshot.id}")
    manifest = None
    if snapshot.in_store:
        root, special = staging.root_and_special(rt, snapshot)
    else:
        manifest = read_manifest(rt, snapshot, info)
        assert manifest.root is not None  # check_manifest
        root = manifest.root
        found = next((e for e in manifest if e.type in ("char", "block", "fifo")), None)
        special = (found.type, found.path) if found else None
    if special is not None and not opts.allow_special:
        # Staging would refuse it: a dry run must say so too.
        raise IntegrityError(
            f"snapshot {snapshot.id} holds a device node or FIFO ({special[0]} "
            f"{quoted(special[1])}): restoring it needs --allow-special"
        )
    containers: tuple[ContainerInfo, ...] = ()
    changes = None
    if not create:
        for c in rt.engine.containers_using(target):
            if c.status in ("paused", "restarting"):
                raise PreconditionFailed(
                    f"container {c.name} uses {quoted(target)} and is {c.status}: "
                    "unpause or stop it before restoring"
                )
        containers = tuple(quiesce.running_users(rt.engine, [target]))
        if opts.summary:
            rt.reporter.status(f"comparing the snapshot with volume {target}")
            if manifest is None:
                changes = staging.changes(rt, snapshot, target)
            else:
                changes = summarize(diff(live.manifest_of(rt, target), manifest))
    rt.reporter.status(f"measuring the space in volume {target}")
    # Each filesystem is charged with what will be written on it: the staged copy on
    # the target's, the pre-restore snapshot on the one that holds snapshots.
    staged = info.bytes + info.entries * PER_ENTRY_COST + _FIXED_SLACK
    if create:
        (room,) = live.spaces(rt, snapshot.volume)  # a new volume: where volumes are made
        needed = charge(target, staged, 0, room, room)
    else:
        room, store = live.spaces(rt, target, snapshot.volume)
        safety = room.used + _FIXED_SLACK if opts.safety_snapshot else 0
        needed = charge(target, staged, safety, room, store)
    target_mtime = None if create else room.root_mtime
    available = room.available
    return RestorePlan(
        snapshot,
        info,
        manifest,
        root,
        target,
        create,
        containers,
        changes,
        needed,
        available,
        target_mtime,
        room.device,
    )


def charge(target: str, staged: int, safety: int, room: live.Space, store: live.Space) -> int:
    """Check that the target's filesystem (`room`) has room for the staged copy, and the
    snapshots' (`store`) for the pre-restore snapshot (`safety` bytes, 0 for none): both on
    one when they are one. Returns what the target's filesystem must have free."""
    together = room.shares_filesystem_with(store)
    needed = staged + safety if together else staged
    what = "a staged copy and the pre-restore snapshot" if together and safety else "a staged copy"
    if room.available is not None and room.available < needed:
        raise NoSpace(
            f"not enough space to restore into {quoted(target)}: "
            f"{room.available // 2**20} MiB free, "
            f"{needed // 2**20} MiB needed ({what})"
        )
    if not together and store.available is not None and store.available < safety:
        raise NoSpace(
            f"not enough space for the pre-restore snapshot of {quoted(target)} "
            "where snapshots are "
            f"kept: {store.available // 2**20} MiB free, {safety // 2**20} MiB needed"
        )
    return needed


def plan_group(rt: Runtime, snapshots: list[Snapshot], opts: RestoreOptions) -> list[RestorePlan]:
    """Pre-flight for restoring several snapshots together, each into its own source volume:
    every member's checks, and the space all of them need on each filesystem at once."""
    if opts.target or opts.create or opts.if_match:
        raise UsageError("--to, --create and --if-match restore one volume, not a group")
    sources = [s.source for s in snapshots]
    if len(set(sources)) != len(sources):
        raise UsageError("a group restore takes one snapshot per volume")
    plans = [plan(rt, s, opts) for s in snapshots]
    _charge_together(plans)
    return plans


def _charge_together(plans: list[RestorePlan]) -> None:
    """Members on one filesystem are staged at the same time: their needs add up."""
    by_device: dict[str | None, list[RestorePlan]] = {}
    for p in plans:
        by_device.setdefault(p.device, []).append(p)
    for device, some in by_device.items():
        known = [p.available for p in some if p.available is not None]
        if device is None or not known or len(some) < 2:
            continue
        needed = sum(p.needed for p in some)
        if min(known) < needed:
            names = ", ".join(p.target for p in some)
            raise NoSpace(
                f"not enough space to restore {names} together: {min(known) // 2**20} MiB "
                f"free, {needed // 2**20} MiB needed"
            )


# -- execute ---------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    """One volume of a restore, as decided under its lock."""

    plan: RestorePlan
    create: bool
    old_mtime: int | None
    safety: str | None  # the id its pre-restore snapshot will have

    @property
    def target(self) -> str:
        return self.plan.target

    def record(self) -> dict[str, object]:
        """What recover needs to finish or undo this member (voltool.restore_record)."""
        return MemberRecord(
            self.target,
            self.plan.snapshot.id,
            self.plan.snapshot.volume,
            self.plan.root,
            self.old_mtime,
            self.safety,
            self.create,
        ).to_json()


def execute(rt: Runtime, p: RestorePlan, opts: RestoreOptions) -> RestoreResult:
    """Carry out a plan: lock, journal, stage, stop, swap, start, keep the old data."""
    (result,) = execute_together(rt, [p], opts)
    return result


def execute_together(
    rt: Runtime, plans: list[RestorePlan], opts: RestoreOptions
) -> tuple[RestoreResult, ...]:
    """Carry out the plans of a group as one operation: every member is restored, or (if
    it fails before the swap) none is; the containers of all of them are stopped once."""
    op = new_id()
    names = Names.for_op(op)
    group = len(plans) > 1
    stopped: list[quiesce.Quiesced] = []
    staged: set[str] = set()  # the members whose staging began: theirs to drop
    times: dict[str, float] = {}
    clock = quiesce.Clock()
    targets = [p.target for p in plans]
    # The old data is kept in the format of what is restored, or of new snapshots; in
    # format 2, in the target's store, which is then written to, and so locked.
    fmt = format2.FORMAT if any(p.snapshot.in_store for p in plans) else rt.config.format
    stores = [format2.store_name(t) for t in targets] if fmt == format2.FORMAT else []
    with contextlib.ExitStack() as locks:
        journal.hold_for_tests("locking")
        # Locks first: one that cannot be had changes nothing and needs no record.
        for v in sorted({*targets, *stores, *(p.snapshot.volume for p in plans)}):
            locks.enter_context(volume_lock(rt, v, op, "restore", opts.wait))
        members = []
        for p in plans:
            rt.journal.refuse_pending(p.target)  # the plan was made before the locks
            # Decide again, under the lock, from what exists now: the volume may have
            # been made (by another restore, by compose) since the plan was.
            create, old_mtime = _recheck_target(rt, p, opts)
            # A volume this restore creates holds nothing before it: no old data to keep.
            safety = new_id() if opts.safety_snapshot and not create else None
            if safety and fmt == format2.FORMAT:
                # Where the old data will go must be the target's store, known before
                # anything is staged: after the swap, a name taken by another volume
                # would leave the restore pending.
                format2.ensure_store(rt, p.target, op)
            members.append(_Member(p, create, old_mtime, safety))
        # A single restore's begin record is its one member's record, as it always was.
        described = {"members": [m.record() for m in members]} if group else members[0].record()
        rt.journal.append(
            op,
            Step.BEGIN,
            kind=Kind.RESTORE,
            volumes=sorted({*targets, *stores}),
            safety_format=fmt,
            names={"stage": names.stage, "old": names.old, "mark": names.mark},
            offline=opts.offline,
            stop_timeout=rt.config.stop_timeout,
            **described,
        )
        try:
            for m in members:
                if m.create:
                    _create(rt, op, m.target)
            if opts.offline:
                _stop(rt, op, targets, times, stopped, clock)
            settled: dict[str, staging.Staged] = {}  # stored snapshots: target -> its copy
            for m in members:
                rt.journal.append(op, Step.STAGE, **_which(group, m))
                staged.add(m.target)
                when = stage(rt, op, m.plan, names, opts.allow_special)
                if when is not None:
                    settled[m.target] = when
                rt.journal.append(op, Step.STAGED, **_which(group, m))
            if not opts.offline:
                _stop(rt, op, targets, times, stopped, clock)
            for m in members:  # what ran meanwhile must not have changed a staged tree
                if m.target in settled:
                    check_settled(rt, op, m.plan.snapshot, m.target, names.stage, settled[m.target])
            if opts.if_match:
                (m,) = members  # plan_group refuses --if-match
                rt.journal.append(op, Step.CHECK)
                current = live.digest_of(rt, m.target, rt.config.format, op, own=names)
                if current != opts.if_match.lower():
                    raise PreconditionFailed(
                        f"volume {quoted(m.target)} changed: its digest is {current}, "
                        f"not {opts.if_match}; nothing was restored"
                    )
        except BaseException as e:
            # A single restore undoes its target whatever the step; a group only the
            # members it began to stage (the others' roots are left as they are).
            undo = [m for m in members if not group or m.target in staged or m.create]
            _roll_back(rt, op, undo, names, stopped, e)
            raise
        swapped = False
        try:
            # From here on, only forward. The swap and its record are held
            # together against Ctrl-C: a swap cut in two would need recover.
            with deferred_interrupts():
                rt.journal.append(op, Step.SWAP)
                for m in members:
                    exact = m.plan.snapshot.in_store  # staged by the agent: root times to the ns
                    swap(rt, op, m.target, names, m.plan.root, m.old_mtime, exact)
                    journal.hold_for_tests("member-swapped")
                rt.journal.append(op, Step.SWAPPED)
                swapped = True
                if not opts.offline:
                    _started(rt, op, stopped, times, clock)
            for m in members:
                if m.safety:
                    rt.journal.append(op, Step.SAVE, safety=m.safety, **_which(group, m))
                    save_old(rt, op, m.target, names, m.safety, m.plan.snapshot.id, fmt)
                    rt.journal.append(op, Step.SAVED, **_which(group, m))
            rt.journal.append(op, Step.CLEANUP)
            for m in members:
                cleanup(rt, op, m.target, names, m.plan.root.mtime)
            if opts.offline:
                # Kept down until the hidden directories are gone, as --offline promises.
                with deferred_interrupts():
                    _started(rt, op, stopped, times, clock)
        except BaseException:
            # Past the swap there is no going back, only forward. Containers
            # come back now only if the swap is complete: never onto half a tree;
            # with --offline, only once recover has removed the hidden directories.
            if swapped and not opts.offline:
                with contextlib.suppress(VoltoolError):
                    _started(rt, op, stopped, times, clock)
            kept = ", ".join(q.name for q in stopped) if opts.offline else ""
            rt.reporter.warn(
                "the restore was cut short after its swap began; "
                "run `voltool recover` to finish it (nothing is lost)"
                + (f"; {kept} stay stopped until it has (--offline)" if kept else "")
            )
            raise
        rt.journal.append(op, Step.DONE)
    downtime = max(times.get("started", 0.0) - times.get("stopped", 0.0), 0.0)
    restarted = tuple(q.name for q in stopped)
    held = tuple(clock.held(stopped))
    return tuple(
        RestoreResult(op, m.target, m.plan.snapshot.id, m.safety, restarted, downtime, held)
        for m in members
    )


def _which(group: bool, m: _Member) -> dict[str, str]:
    """What a step's record says of the member it is about (a group's records only)."""
    return {"member": m.target} if group else {}


def _create(rt: Runtime, op: str, target: str) -> None:
    """Create the target volume, labelled as this restore's."""
    rt.journal.append(op, Step.CREATE)
    made = rt.engine.create_volume(target, {L.CREATED_BY: op})
    if made.labels.get(L.CREATED_BY) != op:
        # The engine hands back a volume someone made a moment ago
        # as if it were new: it is not ours, and holds their data.
        raise Busy(
            f"volume {quoted(target)} was created by someone else while this "
            "restore started; nothing was restored: run it again"
        )


def _recheck_target(rt: Runtime, p: RestorePlan, opts: RestoreOptions) -> tuple[bool, int | None]:
    """Whether the restore creates its target, and the target root's mtime, decided now.

    Called under the target's lock. A volume that appeared since the plan is
    restored into like any other (its data kept as a pre-restore snapshot);
    one that vanished is made again only with --create.
    """
    try:
        catalog.user_volume(rt, p.target)
    except NotFound:
        if not opts.create:
            raise NotFound(f"no volume named {quoted(p.target)} (--create makes it)") from None
        return True, None
    if not p.create:
        return False, p.target_mtime
    rt.reporter.warn(f"volume {quoted(p.target)} was created meanwhile: restoring into it as it is")
    return False, live.space(rt, p.target).root_mtime


def _stop(
    rt: Runtime,
    op: str,
    volumes: list[str],
    times: dict[str, float],
    stopped: list[quiesce.Quiesced],
    clock: quiesce.Clock,
) -> None:
    """Stop the running users of `volumes`, each once; `stopped` lists them before any is
    touched, so that a failure or Ctrl-C half-way still starts every one of them again."""
    targets = quiesce.plan(quiesce.running_users(rt.engine, volumes), quiesce.Mode.STOP)
    rt.journal.append(op, Step.STOP, containers=[q.as_record() for q in targets])
    stopped.extend(targets)
    for q in targets:
        rt.reporter.note(f"stopping {q.name}")
    times["stopped"] = _now()
    quiesce.apply(
        rt.engine,
        targets,
        rt.config.stop_timeout,
        before_stop=lambda q: rt.journal.append(op, Step.STOPPING, container=q.id),
        clock=clock,
    )


def _started(
    rt: Runtime,
    op: str,
    stopped: list[quiesce.Quiesced],
    times: dict[str, float],
    clock: quiesce.Clock,
) -> None:
    """Start the stopped containers again, each step journaled."""
    rt.journal.append(op, Step.START)
    _start(rt, stopped, times, clock)
    rt.journal.append(op, Step.STARTED)


def _start(
    rt: Runtime, stopped: list[quiesce.Quiesced], times: dict[str, float], clock: quiesce.Clock
) -> None:
    failures = quiesce.resume(rt.engine, stopped, clock)
    times["started"] = _now()
    for f in failures:
        rt.reporter.warn(f"could not start {f}")


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


def _roll_back(
    rt: Runtime,
    op: str,
    members: list[_Member],
    names: Names,
    stopped: list[quiesce.Quiesced],
    error: BaseException,
) -> None:
    """Before the swap: drop each member's staging directory (or the volume this restore
    made, if nothing else was written into it) and restart; every target is as it was.

    Best effort, never raising: if something stays, the op stays pending for recover.
    """
    failures = rt.engine.remove_helpers_of(op)
    for m in members:
        try:
            if created_by(rt, m.target) == op:
                remove_created(rt, op, m.target, names)
            else:
                drop_stage(rt, op, m.target, names, m.old_mtime)
        except VoltoolError as e:
            failures.append(str(e))
    failures += quiesce.resume(rt.engine, stopped)
    for f in failures:
        rt.reporter.warn(f"could not roll back fully ({f}); `voltool recover` will")
    if not failures:
        # The engine may be gone too: its error must not hide the one that matters.
        with contextlib.suppress(VoltoolError):
            rt.journal.append(op, Step.FAILED, error=str(error) or type(error).__name__)


# -- the steps, each usable by recover -------------------------------------


def stage(
    rt: Runtime, op: str, p: RestorePlan, names: Names, allow_special: bool
) -> staging.Staged | None:
    """Stream the snapshot's data into the target's staging directory, checking every entry
    (a stored snapshot: have the agent copy it there, and check what it copied). Returns,
    for a stored snapshot, what staging.check_settled holds the staged copy to."""
    if p.manifest is None:
        return staging.stage(rt, op, p.snapshot, p.target, names.stage, p.root, allow_special)
    limits = Limits(max_entries=p.info.entries, max_bytes=p.info.bytes, allow_special=allow_special)
    labels = rt.helper_labels(op)
    target = Mount(p.target, "/v")
    snap = Mount(p.snapshot.volume, "/snap", read_only=True)
    with (
        rt.engine.helper(rt.image, [snap], labels) as src,
        rt.engine.helper(rt.image, [target], labels) as dst,
        contextlib.closing(rt.engine.get_archive(src, f"/snap/{DATA_DIR}")) as stream,
    ):
        transfer = Transfer(
            stream,
            EntryValidator(DATA_DIR, limits),
            names.stage,
            expect=p.manifest,
            root_override=RootOverride(0o700),
            on_bytes=journal.held_after(rt.reporter.advance, "staging-data"),
        )
        rt.reporter.begin(f"staging {p.target}", p.info.bytes)
        try:
            rt.engine.put_archive(dst, "/v", transfer)
        finally:
            rt.reporter.end()
    fix_modes(rt, op, target, f"/v/{names.stage}", p.manifest)
    return None
