"""A new format-2 snapshot: the agent copies a tree into its source's store, next to it.

The copy runs in one helper of the agent image that mounts the tree's volume
read-only and the store: data never crosses voltool. Files unchanged since the
latest complete snapshot of the same volume are hard-linked from it (see
voltool/agent/copy.py for the rule). Order, each step durable before the next:
begun.json, data/ and manifest.jsonl (renamed into place when whole), meta.json,
snapshot.json by rename (the commit marker). The caller holds the locks of the
source and of the store, and has journaled the snapshot id before this runs.
A caller that must check the copy first (a format-1 snapshot moved or imported
into the store) commits it itself, once checked (`copy_checked`, `commit_copy`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from voltool import __version__, journal
from voltool.agent.entry import Entry
from voltool.engine import agentrun
from voltool.engine.client import Mount
from voltool.errors import EngineError, IntegrityError
from voltool.ids import creation_time
from voltool.runtime import Runtime
from voltool.sh import program
from voltool.store import catalog, checks, format2
from voltool.store.catalog import Snapshot
from voltool.store.layout import DATA_DIR, MANIFEST, Meta, SnapshotInfo, manifest_bound
from voltool.store.manifest import (
    Manifest,
    ManifestBuilder,
    ManifestEntry,
    diff,
    split_lines,
    summarize,
)
from voltool.tar import compression
from voltool.words import quoted


@dataclass(frozen=True)
class Copied:
    """A committed format-2 snapshot, and what its copy cost."""

    snapshot: Snapshot
    summary: agentrun.Summary


def latest(
    rt: Runtime, store_volume: str, source: str, by_content: bool = False
) -> Snapshot | None:
    """The newest complete snapshot in the store, to link unchanged files from. Linking by
    identity (not `by_content`), an import or a pull is passed over: its inodes and ctimes
    are a temporary volume's, which the source's never match, so linking from it would make
    the next snapshot of the volume a full copy."""
    complete = [
        s
        for s in catalog.find(rt, source)
        if s.in_store
        and s.volume == store_volume
        and s.state == "complete"
        and s.info is not None
        and s.info.started_ns is not None
        and (by_content or s.kind not in ("import", "pulled"))
    ]
    return complete[-1] if complete else None


def copy(
    rt: Runtime,
    image: str,
    op: str,
    sid: str,
    source: str,
    tree: Mount,
    kind: str,
    quiesce: str,
    meta: Meta,
    path: str = "/src",
    *,
    created: dt.datetime | None = None,
    origin: tuple[str | None, str | None] = (None, None),
    by_content: bool = False,
    commit: bool = True,
) -> Copied:
    """Copy the tree at `path` (/src, where `tree` mounts a volume read-only, or a
    directory in it) into snapshot `sid` of `source`'s store (which must exist), and
    commit it (with `commit=False`, the caller does, with `commit_copy`, once it has
    checked the copy: until then the snapshot is incomplete).

    A snapshot moved into the store (voltool.ops.migrate) keeps its `created` time and
    its `origin` (origin_id, origin_created of an import), and links unchanged files
    `by_content` (its source is a snapshot volume: see voltool/agent/copy.py)."""
    volume = format2.store_name(source)
    if created is None:
        created = creation_time()
    begun = format2.Begun(sid, source, created.isoformat(), kind, op, rt.owner.token())
    prev = latest(rt, volume, source, by_content)
    extra: list[str] = []
    if prev is not None:
        assert prev.info is not None and prev.info.started_ns is not None
        extra = [
            "--prev",
            f"{format2.MOUNT}/{prev.path(DATA_DIR)}",
            f"{format2.MOUNT}/{prev.path(MANIFEST)}",
            "--prev-started",
            str(prev.info.started_ns),
            *(["--prev-by-content"] if by_content else []),
        ]
    mounts = [tree, Mount(volume, format2.MOUNT)]
    rt.reporter.status(f"copying {source} into its store")
    try:
        args = [path, sid, begun.to_json().decode(), *extra]
        result = agentrun.run(rt, image, op, mounts, args, script=program("store-copy"))
    finally:
        rt.reporter.status(None)
    summary = agentrun.checked(result, f"the snapshot of {source}")
    journal.hold_for_tests("copied")  # copied, not committed: what a kill here leaves
    info = SnapshotInfo(
        format=format2.FORMAT,
        id=sid,
        source=source,
        created=created.isoformat(),
        kind=kind,
        entries=summary.entries,
        bytes=summary.content_bytes,
        tree_digest=summary.digest,
        quiesce=quiesce,
        voltool=__version__,
        started_ns=summary.started_ns,
        origin_id=origin[0],
        origin_created=origin[1],
    )
    snapshot = Snapshot(
        sid,
        volume,
        source,
        created,
        kind,
        rt.owner.token(),
        False,
        info,
        meta,
        format_label=str(format2.FORMAT),
        op=op,
        base=format2.snapshot_dir(sid),
    )
    if commit:
        snapshot = commit_copy(rt, op, snapshot)
    return Copied(snapshot, summary)


def commit_copy(rt: Runtime, op: str, snapshot: Snapshot) -> Snapshot:
    """Write a copied snapshot's meta.json, then, by rename, its snapshot.json: from then on
    it is complete (returned as such). The caller holds the store's lock."""
    assert snapshot.in_store and snapshot.info is not None and snapshot.meta is not None
    done = rt.engine.run(
        rt.image,
        [Mount(snapshot.volume, format2.MOUNT)],
        rt.helper_labels(op),
        program("store-commit"),
        [snapshot.id, snapshot.meta.to_json().decode(), snapshot.info.to_json().decode()],
    )
    if done.exit_code != 0:
        raise EngineError(f"committing snapshot {snapshot.id} of {snapshot.source} failed")
    return replace(snapshot, committed=True)


def copy_checked(
    rt: Runtime, image: str, op: str, old: Snapshot, *, what: str, refused: str = "not moved"
) -> Snapshot:
    """Copy the format-1 snapshot `old` (its volume's data/) into its source's store (which
    must exist) as snapshot `old.id`, with its kind, created time, origin and meta.json, and
    check the copy before anything commits it: the agent hashes it again and holds it to
    its own manifest, and that manifest, read as format 1, must be `old`'s
    (`check_against`). Returns the copy, still incomplete, for `commit_copy`; IntegrityError
    (naming it as `what`) if a check fails. `old` needs no snapshot.json on disk: its
    `info` says what it must hold."""
    info = old.info
    assert info is not None
    tree = Mount(old.volume, "/src", read_only=True)
    copied = copy(
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
        by_content=True,  # nobody writes to a snapshot volume: link unchanged files by content
        commit=False,
    )
    new = copied.snapshot
    report = checks.check_stored(rt, new, op)
    if not report.ok:
        raise IntegrityError(
            f"{what} does not match its own manifest: {report.problem or report.found.counts}"
        )
    check_against(rt, old, new, f"{what} differs from it ({{found}}): {refused}")
    return new


def check_against(rt: Runtime, old: Snapshot, new: Snapshot, fails: str) -> None:
    """The copy's manifest, read as format 1, is the format-1 snapshot's, times aside
    (paths, types, modes, owners, sizes, contents, link targets, device numbers and
    hard-link groups); otherwise IntegrityError, worded by `fails` (its {found}: the
    counts of what differs). `old` needs no snapshot.json on disk: its `info` says what
    its manifest must be.

    Both manifests are held in tables (voltool.store.spill), not on the heap.
    """
    from voltool.store.catalog import read_manifest

    info = old.info
    assert info is not None
    got = _as_format_1(rt, new, info.entries)
    if len(got) == info.entries and got.digest() == info.tree_digest:
        return
    want = read_manifest(rt, old, info)
    found = summarize(diff(want, got), keep=1)
    first = f", first {quoted(found.first[0].path)}" if found.first else ""
    counts = f"{found.added} added, {found.changed} changed, {found.removed} removed{first}"
    raise IntegrityError(fails.format(found=counts))


def _as_format_1(rt: Runtime, new: Snapshot, entries: int) -> Manifest:
    """The stored snapshot's manifest (the agent's format), as a format-1 manifest."""
    limit = manifest_bound(entries + 1)
    raw = catalog.read_file(rt, new.volume, new.path(MANIFEST), limit)
    chunks = compression.plain_or_gzip(raw, limit)  # gzip, or plain in older stores
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
