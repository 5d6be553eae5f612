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
from collections.abc import Iterator

from voltool import agentrun, catalog, compression, store, store_copy
from voltool.catalog import Snapshot
from voltool.engine import Mount
from voltool.errors import EngineError, IntegrityError
from voltool.ids import new_id
from voltool.layout import DATA_DIR, MANIFEST, Meta
from voltool.manifest import Change, ChangeSummary, ManifestEntry
from voltool.runtime import Runtime
from voltool.sh import program

_SPECIAL = ("block", "char", "fifo")
_MAX_LINE = 8 * 1024 * 1024  # the agent's bound on one manifest line


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
    """The snapshot's root entry, and the first device node or FIFO its data holds (type,
    path): looked for in the data, which is what a staging copy recreates, not in the
    manifest, which nothing holds to snapshot.json before the copy."""
    mounts = [Mount(snapshot.volume, store.MOUNT, read_only=True)]
    result = rt.engine.run(
        rt.image,
        mounts,
        rt.helper_labels(new_id()),
        program("store-peek"),
        [snapshot.base, str(_MAX_LINE)],
    )
    lines = result.stdout.split(b"\n")
    if result.exit_code != 0 or len(lines) < 2:
        raise IntegrityError(f"snapshot {snapshot.id}: its manifest or data cannot be read")
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
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"snapshot {snapshot.id}: its manifest has no root entry") from None
    special = None
    kind = lines[1].decode("ascii", "replace")
    if kind:
        if kind not in _SPECIAL:
            raise IntegrityError(f"snapshot {snapshot.id}: its data cannot be read")
        path = b"\n".join(lines[2:]).removesuffix(b"\n")
        special = (kind, path.decode("utf-8", "surrogateescape"))
    return root, special


def changes(
    rt: Runtime, snapshot: Snapshot, volume: str, keep: int = 20, since: bool = False
) -> ChangeSummary:
    """How `volume` and the snapshot differ (mtimes aside), with the first `keep` entries:
    what a restore of it would add, change and remove, or (`since`) what was added,
    changed and removed in the volume since the snapshot."""
    mounts = [
        Mount(volume, "/v", read_only=True),
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
    what = f"comparing snapshot {snapshot.id} with {volume}"
    if result.fatal or result.code != 0:
        raise EngineError(f"{what} failed: {result.fatal or result.code}")
    # "missing": in the snapshot only; "extra": in the volume only.
    kinds = (
        {"missing": "removed", "extra": "added"}
        if since
        else {"missing": "added", "extra": "removed"}
    )
    kinds["changed"] = "changed"
    try:
        found = json.loads(result.stdout)
        first = tuple(
            Change(_text(path), kinds[str(kind)], tuple(map(str, fields)))
            for path, kind, fields in found["first"]
        )
        counts = {kinds[k]: int(found[k]) for k in ("missing", "extra", "changed")}
    except (ValueError, KeyError, TypeError):
        raise EngineError(f"{what} gave no summary") from None
    return ChangeSummary(counts["added"], counts["changed"], counts["removed"], first)


def entries(rt: Runtime, snapshot: Snapshot) -> Iterator[ManifestEntry]:
    """The snapshot's manifest, streamed from its store (never held whole), as entries.

    The caller holds the snapshot's lock while it iterates."""
    limit = (snapshot.info.entries + 1) * _MAX_LINE if snapshot.info else 0
    pending = b""
    raw = catalog.read_file(rt, snapshot.volume, snapshot.path(MANIFEST), limit)
    for chunk in compression.plain_or_gzip(raw, limit):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield _entry(snapshot, line)
    if pending.strip():
        yield _entry(snapshot, pending)


def _entry(snapshot: Snapshot, line: bytes) -> ManifestEntry:
    """One line of a stored manifest (voltool/agent/entry.py), as `ls` and `cat` show it."""
    try:
        e = json.loads(line)
        rdev = e.get("rdev")
        return ManifestEntry(
            _text(e["path"]),
            str(e["type"]),
            int(e["mode"]),
            int(e["uid"]),
            int(e["gid"]),
            int(e.get("size", 0)),
            int(e["mtime_ns"]) // 10**9,
            e.get("sha256"),
            _text(e["target"]) if "target" in e else None,
            _text(e["link"]) if "link" in e else None,
            f"{rdev[0]},{rdev[1]}" if isinstance(rdev, list) and len(rdev) == 2 else None,
        )
    except (ValueError, KeyError, TypeError, IndexError):
        raise IntegrityError(f"snapshot {snapshot.id}: its manifest has a malformed line") from None


def stage(
    rt: Runtime,
    op: str,
    snapshot: Snapshot,
    target: str,
    stage_name: str,
    allow_special: bool = True,
) -> None:
    """Have the agent copy the snapshot's data into `target`'s staging directory, and hold
    what it copied to the snapshot: the same entries, and the same tree digest.

    `allow_special` False: a device node or FIFO in the data, or in what was copied,
    fails the staging (the plan's check, made again where the copy is made)."""
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
            [stage_name, snapshot.path(DATA_DIR), "special" if allow_special else "none"],
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
