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
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass

from voltool import catalog, journal, live, quiesce
from voltool import labels as L
from voltool.catalog import Snapshot
from voltool.engine import ContainerInfo, Mount
from voltool.errors import (
    Busy,
    EngineError,
    IntegrityError,
    NoSpace,
    NotFound,
    PreconditionFailed,
    UsageError,
    VoltoolError,
)
from voltool.ids import check_volume_name, new_id
from voltool.layout import (
    DATA_DIR,
    MANIFEST,
    Meta,
    Names,
    SnapshotInfo,
    check_manifest,
    manifest_bound,
)
from voltool.locks import volume_lock
from voltool.manifest import ChangeSummary, Manifest, ManifestEntry, diff, summarize
from voltool.runtime import Runtime
from voltool.signals import deferred_interrupts
from voltool.snapshot import Commit, fix_modes, stream_volume
from voltool.transfer import RootOverride, Transfer
from voltool.validate import PER_ENTRY_COST, EntryValidator, Limits

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
    manifest: Manifest
    target: str
    create: bool  # the target does not exist yet and will be created
    containers: tuple[ContainerInfo, ...]  # running containers to stop and start
    changes: ChangeSummary | None  # None when not computed
    needed: int  # bytes the target's filesystem must have free
    available: int | None
    target_mtime: int | None  # the target root's mtime before anything was staged

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
                f"volume {target!r} is a tmpfs volume: its data lives only while a container "
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
    manifest = read_manifest(rt, snapshot, info)
    if not opts.allow_special:  # staging would refuse it: a dry run must say so too
        special = next((e for e in manifest if e.type in ("char", "block", "fifo")), None)
        if special is not None:
            raise IntegrityError(
                f"snapshot {snapshot.id} holds a device node or FIFO ({special.type} "
                f"{special.path!r}): restoring it needs --allow-special"
            )
    containers: tuple[ContainerInfo, ...] = ()
    changes = None
    if not create:
        for c in rt.engine.containers_using(target):
            if c.status in ("paused", "restarting"):
                raise PreconditionFailed(
                    f"container {c.name} uses {target!r} and is {c.status}: "
                    "unpause or stop it before restoring"
                )
        containers = tuple(quiesce.running_users(rt.engine, [target]))
        if opts.summary:
            rt.reporter.status(f"comparing the snapshot with volume {target}")
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
        target,
        create,
        containers,
        changes,
        needed,
        available,
        target_mtime,
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
            f"not enough space to restore into {target!r}: {room.available // 2**20} MiB free, "
            f"{needed // 2**20} MiB needed ({what})"
        )
    if not together and store.available is not None and store.available < safety:
        raise NoSpace(
            f"not enough space for the pre-restore snapshot of {target!r} where snapshots are "
            f"kept: {store.available // 2**20} MiB free, {safety // 2**20} MiB needed"
        )
    return needed


def read_manifest(rt: Runtime, snapshot: Snapshot, info: SnapshotInfo) -> Manifest:
    """The snapshot's manifest, checked line by line and against snapshot.json."""
    chunks = catalog.read_file(rt, snapshot.volume, MANIFEST, manifest_bound(info.entries))
    manifest = Manifest.read(chunks, info.entries)
    check_manifest(manifest, info)
    return manifest


# -- execute ---------------------------------------------------------------


def execute(rt: Runtime, p: RestorePlan, opts: RestoreOptions) -> RestoreResult:
    """Carry out a plan: lock, journal, stage, stop, swap, start, keep the old data."""
    op = new_id()
    names = Names.for_op(op)
    root = p.manifest.root
    assert root is not None
    stopped: list[quiesce.Quiesced] = []
    times: dict[str, float] = {}
    clock = quiesce.Clock()
    with contextlib.ExitStack() as locks:
        journal.hold_for_tests("locking")
        # Locks first: one that cannot be had changes nothing and needs no record.
        for v in sorted({p.target, p.snapshot.volume}):
            locks.enter_context(volume_lock(rt, v, op, "restore", opts.wait))
        rt.journal.refuse_pending(p.target)  # the plan was made before the locks
        # Decide again, under the lock, from what exists now: the volume may have
        # been made (by another restore, by compose) since the plan was.
        create, old_mtime = _recheck_target(rt, p, opts)
        # A volume this restore creates holds nothing before it: no old data to keep.
        safety = new_id() if opts.safety_snapshot and not create else None
        rt.journal.append(
            op,
            "begin",
            kind="restore",
            volumes=[p.target],
            target=p.target,
            snapshot=p.snapshot.id,
            snapshot_volume=p.snapshot.volume,
            names={"stage": names.stage, "old": names.old, "mark": names.mark},
            root={"mode": root.mode, "uid": root.uid, "gid": root.gid, "mtime": root.mtime},
            old_mtime=old_mtime,
            offline=opts.offline,
            safety=safety,
            create=create,
            stop_timeout=rt.config.stop_timeout,
        )
        try:
            if create:
                rt.journal.append(op, "create")
                made = rt.engine.create_volume(p.target, {L.CREATED_BY: op})
                if made.labels.get(L.CREATED_BY) != op:
                    # The engine hands back a volume someone made a moment ago
                    # as if it were new: it is not ours, and holds their data.
                    raise Busy(
                        f"volume {p.target!r} was created by someone else while this "
                        "restore started; nothing was restored: run it again"
                    )
            if opts.offline:
                _stop(rt, op, p.target, times, stopped, clock)
            rt.journal.append(op, "stage")
            stage(rt, op, p, names, opts.allow_special)
            rt.journal.append(op, "staged")
            if not opts.offline:
                _stop(rt, op, p.target, times, stopped, clock)
            if opts.if_match:
                rt.journal.append(op, "check")
                current = live.manifest_of(rt, p.target, op, own=names).digest()
                if current != opts.if_match.lower():
                    raise PreconditionFailed(
                        f"volume {p.target!r} changed: its digest is {current}, "
                        f"not {opts.if_match}; nothing was restored"
                    )
        except BaseException as e:
            _roll_back(rt, op, p.target, names, old_mtime, stopped, e)
            raise
        swapped = False
        try:
            # From here on, only forward. The swap and its record are held
            # together against Ctrl-C: a swap cut in two would need recover.
            with deferred_interrupts():
                rt.journal.append(op, "swap")
                swap(rt, op, p.target, names, root, old_mtime)
                rt.journal.append(op, "swapped")
                swapped = True
                if not opts.offline:
                    _started(rt, op, stopped, times, clock)
            if safety:
                rt.journal.append(op, "save", safety=safety)
                save_old(rt, op, p.target, names, safety, p.snapshot.id)
                rt.journal.append(op, "saved")
            rt.journal.append(op, "cleanup")
            cleanup(rt, op, p.target, names, root.mtime)
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
        rt.journal.append(op, "done")
    downtime = times.get("started", 0.0) - times.get("stopped", 0.0)
    return RestoreResult(
        op,
        p.target,
        p.snapshot.id,
        safety,
        tuple(q.name for q in stopped),
        max(downtime, 0.0),
        tuple(clock.held(stopped)),
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
            raise NotFound(f"no volume named {p.target!r} (--create makes it)") from None
        return True, None
    if not p.create:
        return False, p.target_mtime
    rt.reporter.warn(f"volume {p.target!r} was created meanwhile: restoring into it as it is")
    return False, live.space(rt, p.target).root_mtime


def _stop(
    rt: Runtime,
    op: str,
    target: str,
    times: dict[str, float],
    stopped: list[quiesce.Quiesced],
    clock: quiesce.Clock,
) -> None:
    """Stop the running users of `target`; `stopped` lists them before any is touched,
    so that a failure or Ctrl-C half-way still starts every one of them again."""
    targets = quiesce.plan(quiesce.running_users(rt.engine, [target]), "stop")
    rt.journal.append(op, "stop", containers=[q.as_record() for q in targets])
    stopped.extend(targets)
    for q in targets:
        rt.reporter.note(f"stopping {q.name}")
    times["stopped"] = _now()
    quiesce.apply(
        rt.engine,
        targets,
        rt.config.stop_timeout,
        before_stop=lambda q: rt.journal.append(op, "stopping", container=q.id),
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
    rt.journal.append(op, "start")
    _start(rt, stopped, times, clock)
    rt.journal.append(op, "started")


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
    target: str,
    names: Names,
    root_mtime: int | None,
    stopped: list[quiesce.Quiesced],
    error: BaseException,
) -> None:
    """Before the swap: drop the staging directory (or the volume this restore made, if
    nothing else was written into it) and restart; the target is as it was.

    Best effort, never raising: if something stays, the op stays pending for recover.
    """
    failures = rt.engine.remove_helpers_of(op)
    try:
        if _created_by(rt, target) == op:
            remove_created(rt, op, target, names)
        else:
            drop_stage(rt, op, target, names, root_mtime)
    except VoltoolError as e:
        failures.append(str(e))
    failures += quiesce.resume(rt.engine, stopped)
    for f in failures:
        rt.reporter.warn(f"could not roll back fully ({f}); `voltool recover` will")
    if not failures:
        # The engine may be gone too: its error must not hide the one that matters.
        with contextlib.suppress(VoltoolError):
            rt.journal.append(op, "failed", error=str(error) or type(error).__name__)


def _created_by(rt: Runtime, volume: str) -> str | None:
    """The restore that created `volume` (its label), if any; None if it is gone too."""
    try:
        return rt.engine.volume(volume).labels.get(L.CREATED_BY)
    except NotFound:
        return None


# -- the steps, each usable by recover -------------------------------------


def stage(rt: Runtime, op: str, p: RestorePlan, names: Names, allow_special: bool) -> None:
    """Stream the snapshot's data into the target's staging directory, checking every entry."""
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


# Staging created and removed an entry at the top: put the root's mtime back too.
_DROP = 'cd /v && rm -rf -- "$1" && { [ -z "$2" ] || touch -d "@$2" /v 2>/dev/null || true; }'


def drop_stage(rt: Runtime, op: str, target: str, names: Names, root_mtime: int | None) -> None:
    """Remove the staging directory: the target is then as it was before the restore."""
    args = [names.stage, "" if root_mtime is None else str(root_mtime)]
    _run(rt, op, target, _DROP, args, "remove the staging directory")


# Exit 0 if the volume holds nothing once the staging directory is gone.
_DROP_AND_CHECK_EMPTY = 'cd /v && rm -rf -- "$1" && [ -z "$(ls -A /v)" ]'


def remove_created(rt: Runtime, op: str, target: str, names: Names) -> str:
    """Undo the creation of `target` by restore `op`: remove the volume, but only if it
    carries `op`'s label and nothing but the staging directory was written into it.
    Returns what was done."""
    if _created_by(rt, target) != op:
        raise VoltoolError(f"volume {target!r} was not created by restore {op}: left as it is")
    mounts = [Mount(target, "/v")]
    result = rt.engine.run(
        rt.image, mounts, rt.helper_labels(op), _DROP_AND_CHECK_EMPTY, [names.stage]
    )
    if result.exit_code != 0:
        drop_stage(rt, op, target, names, None)
        return (
            f"kept the volume {target!r} that restore {op} created: something else was "
            "written into it; its staging directory is removed"
        )
    rt.engine.remove_volume(target)
    return f"removed the volume {target!r} that restore {op} created"


# Idempotent: run it again after a cut at any point and it finishes the swap.
# It works in /v (VOLTOOL_ROOT, for tests that run it on a scratch directory).
# $1 stage, $2 old, $3 marker, $4 root mode (octal), $5 root uid:gid, $6 root mtime,
# $7 the old root's mtime (empty if unknown), for the old directory.
_SWAP = r"""
set -e
cd "${VOLTOOL_ROOT:-/v}"
S="$1"; O="$2"; M="$3"
# No marker and no staging directory: this swap finished (and was cleaned up)
# or never had anything to put in place. Either way, touch nothing.
if [ ! -e "$M" ] && [ ! -d "$S" ]; then exit 0; fi
# Move $1 into a new directory of its own under the old data: never onto anything.
keep() {
  i=0
  while [ -e "$O/.voltool-late-$i" ] || [ -L "$O/.voltool-late-$i" ]; do i=$((i + 1)); done
  mkdir "$O/.voltool-late-$i"
  mv -T -- "$1" "$O/.voltool-late-$i/$1"
}
if [ ! -e "$M" ]; then
  # Phase 1: the user's top-level entries into the old directory.
  if [ ! -d "$O" ]; then
    mkdir "$O.new" 2>/dev/null || true
    chown "$(stat -c %u:%g .)" "$O.new"
    chmod "$(stat -c %a .)" "$O.new"
    mv -T "$O.new" "$O"
  fi
  # In bulk first, into an empty old directory only (the first run, not a rerun):
  # one mv, not one per entry, so that downtime does not grow with the number
  # of entries. Only an empty destination is safe: busybox mv -n replaces a
  # dangling symlink. The loop below, the authority, deals with what is left.
  if [ -z "$(ls -A -- "$O")" ]; then
    find . -mindepth 1 -maxdepth 1 ! -name "$S" ! -name "$O" ! -name "$M" ! -name "$O.new" \
      -print0 | xargs -0 -r mv -n -t "$O" -- 2>/dev/null || true
  fi
  for e in * .[!.]* ..?*; do
    { [ -e "$e" ] || [ -L "$e" ]; } || continue
    case "$e" in "$S"|"$O"|"$M"|"$O.new") continue;; esac
    # Already there: a rerun after something wrote that name again. Keep both.
    if [ -e "$O/$e" ] || [ -L "$O/$e" ]; then keep "$e"; else mv -T -- "$e" "$O/$e"; fi
  done
  # A time busybox cannot set must not jam the swap: mtimes are cosmetic here.
  if [ -n "$7" ]; then touch -d "@$7" "$O" 2>/dev/null || true; fi
  sync -f .
  : > "$M"
  sync -f .
fi
# Phase 2: the staged entries into place.
if [ -d "$S" ]; then
  # In bulk only if the top holds nothing but voltool's own three (a name with a
  # newline counts twice: no bulk then either).
  if [ -d "$O" ] && [ -e "$M" ] && [ "$(ls -A | wc -l)" -eq 3 ]; then
    find "$S" -mindepth 1 -maxdepth 1 -print0 | xargs -0 -r mv -n -t . -- 2>/dev/null || true
  fi
  for e in "$S"/* "$S"/.[!.]* "$S"/..?*; do
    { [ -e "$e" ] || [ -L "$e" ]; } || continue
    n=${e#"$S"/}
    # Written by someone else since phase 1: kept with the old data, never lost.
    if [ -e "$n" ] || [ -L "$n" ]; then keep "$n"; fi
    mv -T -- "$e" "$n"
  done
  rmdir "$S"
fi
chown "$5" .
chmod "$4" .
touch -d "@$6" . 2>/dev/null || true
sync -f .
"""


def swap(
    rt: Runtime, op: str, target: str, names: Names, root: ManifestEntry, old_mtime: int | None
) -> None:
    """Put the staged tree in place of the current one; safe to run again after any cut.

    `root` is the snapshot's root entry (the volume root gets its mode, owner
    and mtime); `old_mtime` is stamped on the old directory, so the pre-restore
    snapshot's root is the old root.
    """
    args = [
        names.stage,
        names.old,
        names.mark,
        format(root.mode, "o"),
        f"{root.uid}:{root.gid}",
        str(root.mtime),
        "" if old_mtime is None else str(old_mtime),
    ]
    _run(rt, op, target, _SWAP, args, "swap")


def save_old(rt: Runtime, op: str, target: str, names: Names, sid: str, restored: str) -> None:
    """Keep the old data as a pre-restore snapshot with id `sid`."""
    meta = Meta(None, f"the data of {target} before snapshot {restored} was restored", False)
    stream_volume(
        rt,
        op,
        sid,
        target,
        Mount(target, "/v", read_only=True),
        f"/v/{names.old}",
        names.old,
        Commit("pre-restore", "stop", meta),
        label=f"safety snapshot of {target}",
    )


# Removing entries changes the root's mtime: set it again, last.
_CLEANUP = 'cd /v && rm -rf -- "$1" && rm -f -- "$2" && { touch -d "@$3" /v 2>/dev/null || true; }'


def cleanup(rt: Runtime, op: str, target: str, names: Names, root_mtime: int) -> None:
    args = [names.old, names.mark, str(root_mtime)]
    _run(rt, op, target, _CLEANUP, args, "remove the old data")


def _run(rt: Runtime, op: str, target: str, script: str, args: list[str], what: str) -> None:
    result = rt.engine.run(rt.image, [Mount(target, "/v")], rt.helper_labels(op), script, args)
    if result.exit_code != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise EngineError(
            f"{what} in {target!r} failed: {detail[-1] if detail else result.exit_code}"
        )
