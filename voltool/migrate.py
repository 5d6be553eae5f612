"""Moving format-1 snapshot volumes into their sources' stores (format 2).

Each snapshot moves on its own, under the locks of its snapshot volume and of
the store (in name order), journaled as an operation of kind "migrate":

1. journal "begin" (the snapshot volume, the store, the id);
2. the agent copies the snapshot volume's data/ into the store, as a snapshot
   with the same id, kind, created time, origin and meta.json, linking files
   unchanged since the store's latest snapshot by content (store_copy.copy),
   and commits it;
3. the agent hashes the copy again and holds it to its own manifest; the
   copy's manifest, read as format 1, must have the format-1 snapshot's tree
   digest (paths, types, modes, owners, sizes, content hashes, link targets,
   device numbers and hard-link groups: everything but times);
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
import time
from collections.abc import Iterator
from dataclasses import dataclass

from voltool import agent_image, catalog, compression, keepers, store, store_copy, verify
from voltool import labels as L
from voltool.agent.entry import Entry
from voltool.catalog import Snapshot
from voltool.engine import Mount, NameConflict
from voltool.errors import Busy, IntegrityError, NotFound, UsageError, VoltoolError
from voltool.ids import new_id
from voltool.journal import Kind, Step
from voltool.layout import DATA_DIR, MANIFEST, Meta, manifest_bound
from voltool.locks import volume_lock
from voltool.manifest import Manifest, ManifestBuilder, ManifestEntry, diff, split_lines, summarize
from voltool.runtime import Runtime
from voltool.words import quoted

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
    target = store.store_name(old.source)
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
            new = _copy_and_check(rt, image, op, current)
            rt.journal.append(op, Step.CHECKED, snapshot=old.id)
            _remove_old(rt, old.volume)
        except BaseException as e:
            if _undo(rt, op, current, target):
                with contextlib.suppress(VoltoolError):
                    rt.journal.append(op, Step.FAILED, error=str(e) or type(e).__name__)
            raise
        rt.journal.append(op, Step.DONE)
    return Moved(current, new)


def _copy_and_check(rt: Runtime, image: str, op: str, old: Snapshot) -> Snapshot:
    info = old.info
    assert info is not None
    store.ensure_store(rt, old.source, op)
    tree = Mount(old.volume, "/src", read_only=True)
    copied = store_copy.copy(
        rt,
        image,
        op,
        old.id,
        old.source,
        tree,
        old.kind,
        info.quiesce,
        old.meta or Meta(),
        f"/src/{DATA_DIR}",
        created=old.created,
        origin=(info.origin_id, info.origin_created),
        by_content=True,
    )
    new = copied.snapshot
    report = verify.check_stored(rt, new, op)
    if not report.ok:
        raise IntegrityError(
            f"the copy of snapshot {old.id} does not match its own manifest: "
            f"{report.problem or report.found.counts}"
        )
    check_copy(rt, old, new)
    return new


def check_copy(rt: Runtime, old: Snapshot, new: Snapshot) -> None:
    """The copy's manifest, read as format 1, is the format-1 snapshot's, times aside.

    Both manifests are held in tables (voltool.spill), not on the heap.
    """
    from voltool.restore import read_manifest

    info = old.info
    assert info is not None
    got = _as_format_1(rt, new, info.entries)
    if len(got) == info.entries and got.digest() == info.tree_digest:
        return
    want = read_manifest(rt, old, info)
    found = summarize(diff(want, got), keep=1)
    first = f", first {quoted(found.first[0].path)}" if found.first else ""
    raise IntegrityError(
        f"the copy of snapshot {old.id} differs from it ({found.added} added, "
        f"{found.changed} changed, {found.removed} removed{first}): not moved"
    )


def _as_format_1(rt: Runtime, new: Snapshot, entries: int) -> Manifest:
    """The stored snapshot's manifest (the agent's format), as a format-1 manifest."""
    limit = manifest_bound(entries + 1)
    raw = catalog.read_file(rt, new.volume, new.path(MANIFEST), limit)
    chunks = compression.plain_or_gzip(raw, limit)
    builder = ManifestBuilder()
    for count, line in enumerate(split_lines(chunks)):
        if count > entries:
            raise IntegrityError(f"the copy of snapshot {new.id} has more entries than it")
        try:
            e = Entry.parse(line)
        except ValueError as err:
            raise IntegrityError(f"the copy's manifest does not read: {err}") from None
        entry = _entry(e)
        if e.link is None:
            builder.add(entry)
            continue
        link = e.link.decode("utf-8", "surrogateescape")
        try:
            got = builder.add_hardlink(entry.path, link, entry.mtime)
        except KeyError:
            raise IntegrityError(
                f"the copy's manifest: {quoted(entry.path)} links to no earlier file"
            ) from None
        fields = ("type", "mode", "uid", "gid", "size", "sha256")
        if any(getattr(got, f) != getattr(entry, f) for f in fields):
            raise IntegrityError(
                f"the copy's manifest: {quoted(entry.path)} differs from "
                "the file it is a hard link to"
            )
    return builder.build()


_TYPES = ("file", "dir", "symlink", "fifo", "char", "block")


def _entry(e: Entry) -> ManifestEntry:
    if e.type not in _TYPES:
        raise IntegrityError(f"the copy has a {e.type}, which format 1 cannot hold")
    return ManifestEntry(
        path=e.path.decode("utf-8", "surrogateescape"),
        type=e.type,
        mode=e.mode,
        uid=e.uid,
        gid=e.gid,
        size=e.size if e.type == "file" else 0,
        mtime=e.mtime_ns // 10**9,
        sha256=e.sha256,
        target=e.target.decode("utf-8", "surrogateescape") if e.target is not None else None,
        dev=f"{e.rdev[0]},{e.rdev[1]}" if e.rdev is not None else None,
    )


def _remove_old(rt: Runtime, volume: str, tries: int = 10) -> None:
    """Remove the snapshot volume and its keeper. A listing or verify by anyone mounts it
    for a moment (in use: NameConflict): tried again a few times before giving up."""
    for attempt in range(tries):
        try:
            keepers.remove_snapshot_volume(rt, volume)
            return
        except NameConflict:
            if attempt == tries - 1:
                raise Busy(f"{quoted(volume)} is in use by a container") from None
            time.sleep(0.5)


def _undo(rt: Runtime, op: str, old: Snapshot, target: str) -> bool:
    """After a failure, under the locks: remove the copy from the store while the
    snapshot volume is there (never otherwise). True if nothing is left to recover."""
    try:
        if not old_is_there(rt, old.volume, old.id):
            return False  # the copy is all there is: keep it; recover decides
        for s in stored_copies(rt, target, old.id):
            remove_copy(rt, s, op)
        for c in rt.engine.managed_containers(L.ROLE_HELPER, {L.OP: op}):
            rt.engine.remove_container(c.id)
        return True
    except VoltoolError as e:
        rt.reporter.warn(f"could not undo the move of {old.id}: {e}; run `voltool recover`")
        return False


def old_is_there(rt: Runtime, volume: str, sid: str) -> bool:
    """Whether the format-1 snapshot volume `volume` of snapshot `sid` still exists."""
    try:
        return rt.engine.volume(volume).labels.get(L.SNAPSHOT_ID) == sid
    except NotFound:
        return False


def stored_copies(rt: Runtime, target: str, sid: str) -> Iterator[Snapshot]:
    """Snapshot `sid`'s directory in the store `target`, if it is there (with metadata)."""
    try:
        rt.engine.volume(target)
    except NotFound:
        return
    source = store.stores(rt).get(target)
    if source is None:
        return
    for listed in store.read_stores(rt, {target: source}):
        if listed.id == sid:
            yield catalog.from_store(listed)


def remove_copy(rt: Runtime, copy: Snapshot, op: str) -> None:
    """Remove a snapshot's directory from its store (under the store's lock), and the
    store if that leaves it empty and no one mounts it (a listing by anyone mounts
    every store for a moment: an empty store left then is harmless)."""
    catalog.require(rt, copy)
    store.delete_dir(rt, copy.volume, copy.id, op)
    with contextlib.suppress(NameConflict):
        store.remove_if_empty(rt, copy.volume, op)
