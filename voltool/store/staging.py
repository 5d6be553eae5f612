"""A restore's steps for stored (format-2) snapshots, carried out by the agent next to the data.

Nothing of a stored snapshot is read into voltool but its manifest's first
line: the plan asks the agent what would change, the staging copy is made by
the agent from the store into the target, and held to the snapshot by its tree
digest (content, types, modes, owners, link targets, xattrs, hard-link groups
of what it wrote), then read back whole and held to what was written (the
target's containers run meanwhile, and can reach into it); the old data is
kept as a pre-restore snapshot in the target's store, linked against its
latest snapshot where unchanged.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass

from voltool.engine import agentrun
from voltool.engine.client import Mount
from voltool.errors import EngineError, IntegrityError
from voltool.ids import new_id
from voltool.runtime import Runtime
from voltool.sh import program
from voltool.store import catalog, copy, format2
from voltool.store.catalog import Snapshot
from voltool.store.layout import DATA_DIR, MANIFEST, STORED_MAX_LINE, Meta
from voltool.store.manifest import Change, ChangeSummary, ManifestEntry, split_lines
from voltool.tar import compression
from voltool.words import quoted

_SPECIAL = ("block", "char", "fifo")


def _image(rt: Runtime) -> str:
    from voltool.engine import agent_image

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
    mounts = [Mount(snapshot.volume, format2.MOUNT, read_only=True)]
    result = rt.engine.run(
        rt.image,
        mounts,
        rt.helper_labels(new_id()),
        program("store-peek"),
        [snapshot.base, str(STORED_MAX_LINE)],
    )
    lines = result.stdout.split(b"\n")
    if result.exit_code != 0 or len(lines) < 2:
        raise IntegrityError(f"snapshot {snapshot.id}: its manifest or data cannot be read")
    root = _root_entry(lines[0])
    if root is None:
        raise IntegrityError(f"snapshot {snapshot.id}: its manifest has no root entry")
    special = None
    kind = lines[1].decode("ascii", "replace")
    if kind:
        if kind not in _SPECIAL:
            raise IntegrityError(f"snapshot {snapshot.id}: its data cannot be read")
        path = b"\n".join(lines[2:]).removesuffix(b"\n")
        special = (kind, path.decode("utf-8", "surrogateescape"))
    return root, special


# What a manifest line's numbers may be: anything else is a damaged or forged line.
_MAX_MODE = 0o7777
_MAX_ID = 2**32 - 2


def _root_entry(line: bytes) -> ManifestEntry | None:
    """The root entry a manifest line (the agent's) describes, or None if it is not one: a
    directory ".", with a mode and owner a directory can have (never trusted to chmod or
    chown a volume root with otherwise)."""
    try:
        first = json.loads(line)
        mode, uid, gid, mtime_ns = (first[k] for k in ("mode", "uid", "gid", "mtime_ns"))
        if first.get("path") != "." or first.get("type") != "dir":
            return None
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    numbers = (mode, uid, gid, mtime_ns)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        return None
    if not (0 <= mode <= _MAX_MODE and 0 <= uid <= _MAX_ID and 0 <= gid <= _MAX_ID):
        return None
    return ManifestEntry(".", "dir", mode, uid, gid, 0, mtime_ns // 10**9)


def changes(
    rt: Runtime, snapshot: Snapshot, volume: str, keep: int = 20, since: bool = False
) -> ChangeSummary:
    """How `volume` and the snapshot differ (mtimes aside), with the first `keep` entries:
    what a restore of it would add, change and remove, or (`since`) what was added,
    changed and removed in the volume since the snapshot."""
    mounts = [
        Mount(volume, "/v", read_only=True),
        Mount(snapshot.volume, format2.MOUNT, read_only=True),
    ]
    manifest = f"{format2.MOUNT}/{snapshot.path(MANIFEST)}"
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
    limit = (snapshot.info.entries + 1) * STORED_MAX_LINE if snapshot.info else 0
    raw = catalog.read_file(rt, snapshot.volume, snapshot.path(MANIFEST), limit)
    # Each line bounded as it comes: a forged one without end must not be gathered whole.
    for line in split_lines(compression.plain_or_gzip(raw, limit), STORED_MAX_LINE):
        yield _entry(snapshot, line)


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
    except (ValueError, KeyError, TypeError, IndexError, OverflowError, RecursionError):
        raise IntegrityError(f"snapshot {snapshot.id}: its manifest has a malformed line") from None


@dataclass(frozen=True)
class Staged:
    """What a staging copy said of itself, for `check_settled` to hold the staged tree to."""

    settled_ns: int  # the ctime of its last change
    root: str  # DEV:INO of the staging directory it made
    seal: str  # what it wrote, as a scan of it finds it (the agent's copy --seal)


def stage(
    rt: Runtime,
    op: str,
    snapshot: Snapshot,
    target: str,
    stage_name: str,
    root: ManifestEntry,
    allow_special: bool = True,
) -> Staged:
    """Have the agent copy the snapshot's data into `target`'s staging directory, and hold
    what it copied to the snapshot: the same entries, and the same tree digest, and a root
    (covered by that digest) with the mode, owner and mtime of `root`, the plan's, which
    the swap gives the volume root. The copy is read back once made (`copy --seal`): a
    change someone made to it meanwhile is an IntegrityError, nothing restored.

    `allow_special` False: a device node or FIFO in the data, or in what was copied,
    fails the staging (the plan's check, made again where the copy is made).

    Returns what `check_settled` holds the staged tree to."""
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
    if any(": seal: " in e for e in result.errors):
        raise IntegrityError(_written_into(snapshot, target, "while it was made"))
    if result.fatal and result.fatal.startswith("manifest: "):  # read for its link groups
        raise IntegrityError(
            f"snapshot {snapshot.id} cannot be restored: its manifest in the store is damaged "
            f"({result.fatal.removeprefix('manifest: ')})"
        )
    summary = agentrun.checked(result, f"staging snapshot {snapshot.id} into {target}")
    if summary.digest != info.tree_digest or summary.entries != info.entries:
        raise IntegrityError(
            f"snapshot {snapshot.id} does not match its manifest: what was copied out of "
            "its store has another tree digest (the store was altered or damaged)"
        )
    copied = _root_entry(result.stdout.split(b"\n", 1)[0])
    if copied is None or (copied.mode, copied.uid, copied.gid, copied.mtime) != (
        root.mode,
        root.uid,
        root.gid,
        root.mtime,
    ):
        raise IntegrityError(
            f"snapshot {snapshot.id} does not match its manifest: the root entry its manifest "
            "gives is not its data's (the store was altered or damaged)"
        )
    if not (summary.settled_ns and summary.root and summary.seal):
        raise EngineError(f"staging snapshot {snapshot.id}: the agent did not say how it ended")
    return Staged(summary.settled_ns, summary.root, summary.seal)


def check_settled(
    rt: Runtime, op: str, snapshot: Snapshot, target: str, stage_name: str, staged: Staged
) -> None:
    """Hold the staging directory to what `stage` left there, just before the swap: the
    containers that use `target` ran meanwhile, and one (a clean-up job deleting old
    files, or worse) may have changed the staged tree, or put another in its place.
    Reads metadata only (the directory's identity, every entry's ctime, which a write,
    chmod, rename or removal moves), so the containers stay stopped for a walk, not
    for a hash of the data; on a filesystem that never writes its pages back (tmpfs),
    where a write through a mapping made earlier moves no ctime, the data is read
    again too."""
    info = snapshot.info
    assert info is not None
    mounts = [Mount(target, "/v", read_only=True)]
    args = ["-", "settled", f"/v/{stage_name}", str(staged.settled_ns)]
    args += ["--root", staged.root, "--seal", staged.seal]
    result = agentrun.run(rt, _image(rt), op, mounts, args)
    summary = result.summary
    if result.code != 0 or summary is None or summary.entries != info.entries:
        said = [*result.warnings, *result.errors, *([result.fatal] if result.fatal else [])]
        first = f" ({said[0]})" if said else ""
        raise IntegrityError(_written_into(snapshot, target, f"after it was checked{first}"))


def _written_into(snapshot: Snapshot, target: str, when: str) -> str:
    return (
        f"the staged copy of snapshot {snapshot.id} in {quoted(target)} changed {when}: "
        "a container using the volume wrote into it; nothing was restored (restore with "
        "--offline to keep them stopped throughout)"
    )


def save(rt: Runtime, op: str, target: str, path: str, sid: str, meta: Meta) -> None:
    """Keep the tree at `path` (in `target`, mounted at /src) as pre-restore snapshot `sid`
    in `target`'s store. The caller holds the store's lock."""
    format2.ensure_store(rt, target, op)
    tree = Mount(target, "/src", read_only=True)
    copy.copy(rt, _image(rt), op, sid, target, tree, "pre-restore", "stop", meta, path)
