"""A restore's steps for stored (format-2) snapshots, carried out by the agent next to the data.

Nothing of a stored snapshot is read into voltool but its manifest's first
line: the plan asks the agent what would change, the staging copy is made by
the agent from the store into the target, and held to the snapshot by its tree
digest (content, types, modes, owners, link targets, xattrs, hard-link groups
of what it wrote, read back); the old data is kept as a pre-restore snapshot
in the target's store, linked against its latest snapshot where unchanged.
"""

from __future__ import annotations

import base64
import json

from voltool import agentrun, store, store_copy
from voltool.catalog import Snapshot
from voltool.engine import Mount
from voltool.errors import EngineError, IntegrityError
from voltool.ids import new_id
from voltool.layout import DATA_DIR, MANIFEST, Meta
from voltool.manifest import Change, ChangeSummary, ManifestEntry
from voltool.runtime import Runtime
from voltool.sh import program

_SPECIAL = ("block", "char", "fifo")


def _image(rt: Runtime) -> str:
    from voltool import agent_image

    return agent_image.agent_image(rt)


def _text(packed: object) -> str:
    """A path as the agent spells it (text, or {"b64": ...}), as text."""
    if isinstance(packed, dict):
        raw = base64.b64decode(str(packed.get("b64", "")), validate=False)
        return raw.decode("utf-8", "surrogateescape")
    return str(packed)


def root_and_special(
    rt: Runtime, snapshot: Snapshot
) -> tuple[ManifestEntry, tuple[str, str] | None]:
    """The snapshot's root entry, and the first device node or FIFO it holds (type, path)."""
    mounts = [Mount(snapshot.volume, store.MOUNT, read_only=True)]
    result = rt.engine.run(
        rt.image,
        mounts,
        rt.helper_labels(new_id()),
        program("store-peek"),
        [snapshot.path(MANIFEST)],
    )
    lines = result.stdout.splitlines()
    if result.exit_code != 0 or not lines:
        raise IntegrityError(f"snapshot {snapshot.id}: its manifest cannot be read")
    try:
        first = json.loads(lines[0])
        root = ManifestEntry(
            ".",
            "dir",
            int(first["mode"]),
            int(first["uid"]),
            int(first["gid"]),
            0,
            int(first["mtime_ns"]) // 10**9,
        )
        if first.get("path") != "." or first.get("type") != "dir":
            raise ValueError("not the root")
        special = None
        if len(lines) > 1:
            entry = json.loads(lines[1])
            if entry.get("type") in _SPECIAL:
                special = (str(entry["type"]), _text(entry.get("path")))
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"snapshot {snapshot.id}: its manifest has no root entry") from None
    return root, special


def changes(rt: Runtime, snapshot: Snapshot, target: str, keep: int = 20) -> ChangeSummary:
    """What restoring `snapshot` would add, change and remove in `target` (mtimes aside)."""
    mounts = [
        Mount(target, "/v", read_only=True),
        Mount(snapshot.volume, store.MOUNT, read_only=True),
    ]
    manifest = f"{store.MOUNT}/{snapshot.path(MANIFEST)}"
    result = agentrun.run(
        rt,
        _image(rt),
        new_id(),
        mounts,
        ["/v", manifest, str(keep)],
        script=program("agent-changes"),
    )
    if result.fatal or result.code != 0:
        raise EngineError(
            f"comparing snapshot {snapshot.id} with {target} failed: {result.fatal or result.code}"
        )
    try:
        found = json.loads(result.stdout)
        first = tuple(
            Change(_text(path), str(kind), tuple(map(str, fields)))
            for path, kind, fields in found["first"]
        )
        return ChangeSummary(
            int(found["added"]), int(found["changed"]), int(found["removed"]), first
        )
    except (ValueError, KeyError, TypeError):
        raise EngineError(
            f"comparing snapshot {snapshot.id} with {target} gave no summary"
        ) from None


def stage(rt: Runtime, op: str, snapshot: Snapshot, target: str, stage_name: str) -> None:
    """Have the agent copy the snapshot's data into `target`'s staging directory, and hold
    what it copied to the snapshot: the same entries, and the same tree digest."""
    info = snapshot.info
    assert info is not None
    mounts = [
        Mount(snapshot.volume, "/snap", read_only=True),
        Mount(target, "/v"),
    ]
    rt.reporter.status(f"staging {target}")
    try:
        result = agentrun.run(
            rt,
            _image(rt),
            op,
            mounts,
            [stage_name, snapshot.path(DATA_DIR)],
            script=program("store-stage"),
        )
    finally:
        rt.reporter.status(None)
    summary = agentrun.checked(result, f"staging snapshot {snapshot.id} into {target}")
    if summary.digest != info.tree_digest or summary.entries != info.entries:
        raise IntegrityError(
            f"snapshot {snapshot.id} does not match its manifest: what was copied out of "
            "its store has another tree digest (the store was altered or damaged)"
        )


def save(rt: Runtime, op: str, target: str, path: str, sid: str, meta: Meta) -> None:
    """Keep the tree at `path` (in `target`, mounted at /src) as pre-restore snapshot `sid`
    in `target`'s store. The caller holds the store's lock."""
    store.ensure_store(rt, target, op)
    tree = Mount(target, "/src", read_only=True)
    store_copy.copy(rt, _image(rt), op, sid, target, tree, "pre-restore", "stop", meta, path)
