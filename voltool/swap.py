"""The steps that change a restore's target volume, each safe to run again: drop the
staging directory, remove a volume the restore created, swap the staged tree in,
keep the old data as a pre-restore snapshot, clean up.

voltool.ops.restore takes them in journal order; voltool.ops.recover finishes or
undoes an interrupted restore with the same steps. The shell programs they run are
voltool/sh/restore-*.sh.
"""

from __future__ import annotations

from voltool.engine import labels as L
from voltool.engine import quiesce
from voltool.engine.client import Mount
from voltool.errors import EngineError, NotFound, VoltoolError
from voltool.runtime import Runtime
from voltool.sh import program
from voltool.store import format1, format2, staging
from voltool.store.layout import Meta, Names
from voltool.store.manifest import ManifestEntry
from voltool.words import quoted


def drop_stage(rt: Runtime, op: str, target: str, names: Names, root_mtime: int | None) -> None:
    """Remove the staging directory: the target is then as it was before the restore."""
    args = [names.stage, "" if root_mtime is None else str(root_mtime)]
    _run(rt, op, target, "restore-drop", args, "remove the staging directory")


def remove_created(rt: Runtime, op: str, target: str, names: Names) -> str:
    """Undo the creation of `target` by restore `op`: remove the volume, but only if it
    carries `op`'s label and nothing but the staging directory was written into it.
    Returns what was done."""
    if created_by(rt, target) != op:
        raise VoltoolError(
            f"volume {quoted(target)} was not created by restore {op}: left as it is"
        )
    mounts = [Mount(target, "/v")]
    result = rt.engine.run(
        rt.image, mounts, rt.helper_labels(op), program("restore-drop-created"), [names.stage]
    )
    if result.exit_code != 0:
        drop_stage(rt, op, target, names, None)
        return (
            f"kept the volume {quoted(target)} that restore {op} created: something else was "
            "written into it; its staging directory is removed"
        )
    rt.engine.remove_volume(target)
    return f"removed the volume {quoted(target)} that restore {op} created"


def swap(
    rt: Runtime,
    op: str,
    target: str,
    names: Names,
    root: ManifestEntry,
    old_mtime: int | None,
    exact: bool = False,
) -> None:
    """Put the staged tree in place of the current one; safe to run again after any cut.

    `root` is the snapshot's root entry (the volume root gets its mode, owner
    and mtime); `old_mtime` is stamped on the old directory, so the pre-restore
    snapshot's root is the old root. `exact`: the agent staged the tree, and the
    staging directory carries the root's times to the nanosecond, which the root
    then gets (and keeps through `cleanup`).
    """
    args = [
        names.stage,
        names.old,
        names.mark,
        format(root.mode, "o"),
        f"{root.uid}:{root.gid}",
        str(root.mtime),
        "" if old_mtime is None else str(old_mtime),
        "exact" if exact else "",
    ]
    _run(rt, op, target, "restore-swap", args, "swap")


def save_old(
    rt: Runtime, op: str, target: str, names: Names, sid: str, restored: str, fmt: int = 1
) -> None:
    """Keep the old data as a pre-restore snapshot with id `sid`, in format `fmt` (2: into
    the target's store, linked against its latest snapshot where unchanged)."""
    meta = Meta(None, f"the data of {target} before snapshot {restored} was restored", False)
    if fmt == format2.FORMAT:
        staging.save(rt, op, target, f"/src/{names.old}", sid, meta)
        return
    format1.stream_volume(
        rt,
        op,
        sid,
        target,
        Mount(target, "/v", read_only=True),
        f"/v/{names.old}",
        names.old,
        format1.Commit("pre-restore", quiesce.Mode.STOP, meta),
        label=f"safety snapshot of {target}",
    )


def cleanup(rt: Runtime, op: str, target: str, names: Names, root_mtime: int) -> None:
    args = [names.old, names.mark, str(root_mtime)]
    _run(rt, op, target, "restore-cleanup", args, "remove the old data")


def _run(rt: Runtime, op: str, target: str, name: str, args: list[str], what: str) -> None:
    """Run program `name` of voltool.sh on the target mounted at /v."""
    result = rt.engine.run(
        rt.image, [Mount(target, "/v")], rt.helper_labels(op), program(name), args
    )
    if result.exit_code != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise EngineError(
            f"{what} in {quoted(target)} failed: {detail[-1] if detail else result.exit_code}"
        )


def created_by(rt: Runtime, volume: str) -> str | None:
    """The restore that created `volume` (its label), if any; None if it is gone too."""
    try:
        return rt.engine.volume(volume).labels.get(L.CREATED_BY)
    except NotFound:
        return None
