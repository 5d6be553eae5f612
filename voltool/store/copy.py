"""A new format-2 snapshot: the agent copies a tree into its source's store, next to it.

The copy runs in one helper of the agent image that mounts the tree's volume
read-only and the store: data never crosses voltool. Files unchanged since the
latest complete snapshot of the same volume are hard-linked from it (see
voltool/agent/copy.py for the rule). Order, each step durable before the next:
begun.json, data/ and manifest.jsonl (renamed into place when whole), meta.json,
snapshot.json by rename (the commit marker). The caller holds the locks of the
source and of the store, and has journaled the snapshot id before this runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from voltool import __version__, journal
from voltool.engine import agentrun
from voltool.engine.client import Mount
from voltool.errors import EngineError
from voltool.ids import creation_time
from voltool.runtime import Runtime
from voltool.sh import program
from voltool.store import catalog, format2
from voltool.store.catalog import Snapshot
from voltool.store.layout import DATA_DIR, MANIFEST, Meta, SnapshotInfo


@dataclass(frozen=True)
class Copied:
    """A committed format-2 snapshot, and what its copy cost."""

    snapshot: Snapshot
    summary: agentrun.Summary


def latest(rt: Runtime, store_volume: str, source: str) -> Snapshot | None:
    """The newest complete snapshot in the store, to link unchanged files from."""
    complete = [
        s
        for s in catalog.find(rt, source)
        if s.in_store
        and s.volume == store_volume
        and s.state == "complete"
        and s.info is not None
        and s.info.started_ns is not None
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
) -> Copied:
    """Copy the tree at `path` (/src, where `tree` mounts a volume read-only, or a
    directory in it) into snapshot `sid` of `source`'s store (which must exist), and
    commit it.

    A snapshot moved into the store (voltool.ops.migrate) keeps its `created` time and
    its `origin` (origin_id, origin_created of an import), and links unchanged files
    `by_content` (its source is a snapshot volume: see voltool/agent/copy.py)."""
    volume = format2.store_name(source)
    if created is None:
        created = creation_time()
    begun = format2.Begun(sid, source, created.isoformat(), kind, op, rt.owner.token())
    prev = latest(rt, volume, source)
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
    done = rt.engine.run(
        rt.image,
        [Mount(volume, format2.MOUNT)],
        rt.helper_labels(op),
        program("store-commit"),
        [sid, meta.to_json().decode(), info.to_json().decode()],
    )
    if done.exit_code != 0:
        raise EngineError(f"committing snapshot {sid} of {source} failed")
    snapshot = Snapshot(
        sid,
        volume,
        source,
        created,
        kind,
        rt.owner.token(),
        True,
        info,
        meta,
        format_label=str(format2.FORMAT),
        op=op,
        base=format2.snapshot_dir(sid),
    )
    return Copied(snapshot, summary)
